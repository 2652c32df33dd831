"""The recipe follows the encoder: the console line, metrics/recipe.json, and the ignored-override warning."""
import yaml

from galaxy_finetune.params import Params
from galaxy_finetune.recipe import (ignored_overrides, is_pretrained, locked_params, recipe_line,
                                    recipe_record)

RANDOM = {"source": "random", "arch": "convnext_nano", "seed": 42, "sha256": None}
HUB = {"source": "hf_hub:mwalmsley/zoobot-encoder-convnext_nano", "arch": "convnext_nano", "sha256": "ab"}


def last_run(params: Params) -> dict:
    """What dvc.lock records for finetune_gpu after a run with `params` (its params: train, scratch, augment)."""
    return {f"{group}.{k}": v for group in ("train", "scratch", "augment")
            for k, v in getattr(params, group).model_dump().items()}


def test_pretrained_follows_the_encoder_record():
    assert not is_pretrained(RANDOM) and is_pretrained(HUB)
    assert not is_pretrained({**HUB, "pretrained": False})  # an explicit flag (manifest["encoder"]) wins


def test_override_of_the_unused_recipe_is_named_with_the_key_used_instead():
    before = Params()
    after = Params.model_validate({"train": {"lr": 3e-5}})  # dvc exp run -S train.lr=3e-5
    assert ignored_overrides(after, False, last_run(before)) == (
        "train.lr=3e-05 is not used: the encoder is a random init, so scratch.lr=0.001 is")
    assert ignored_overrides(after, True, last_run(before)) is None  # pretrained: train.lr is the one used


def test_override_of_scratch_with_a_pretrained_encoder_and_several_keys():
    before = Params()
    after = Params.model_validate({"scratch": {"lr": 1e-2, "epochs": 20}})
    assert ignored_overrides(after, True, last_run(before)) == (
        "scratch.lr=0.01, scratch.epochs=20 are not used: the encoder is pretrained, so train.lr=1e-05, "
        "train.epochs=30 are")
    assert ignored_overrides(after, False, last_run(before)) is None


def test_no_warning_without_a_change_or_without_a_previous_run():
    params = Params()
    assert ignored_overrides(params, False, last_run(params)) is None  # the two recipes differ by design
    assert ignored_overrides(Params.model_validate({"train": {"lr": 3e-5}}), False, {}) is None
    # a change of a key that is not a recipe key (used by both) is no override of an unused recipe
    assert ignored_overrides(Params.model_validate({"train": {"dropout": 0.1}}), False, last_run(params)) is None


def test_locked_params_reads_groups_and_dotted_keys(tmp_path):
    lock = tmp_path / "dvc.lock"
    lock.write_text(yaml.safe_dump({"schema": "2.0", "stages": {
        "split": {"params": {"params.yaml": {"split": {"seed": 1}}}},
        "finetune_gpu": {"cmd": "python x", "params": {"params.yaml": {
            "train": {"lr": 1e-05, "epochs": 30}, "scratch.lr": 0.001}}}}}))
    assert locked_params(lock) == {"train.lr": 1e-05, "train.epochs": 30, "scratch.lr": 0.001}
    assert locked_params(lock, "predict") == {}
    assert locked_params(tmp_path / "absent.lock") == {}


def test_recipe_record_and_line_carry_the_effective_values():
    name, train = Params().recipe(False)
    assert recipe_record(name, train, RANDOM) == {
        "recipe": "scratch", "pretrained": False, "encoder": "random", "arch": "convnext_nano",
        "lr": 0.001, "epochs": 10, "input_size": 64, "batch_size": 64, "patience": 3, "layer_decay": 1.0}
    assert recipe_line(name, train, RANDOM) == (
        "finetune_gpu: the encoder is a random init (convnext_nano, no pretraining), so the from-scratch recipe "
        "(scratch.*): lr=0.001 epochs=10 input_size=64 batch_size=64 patience=3 layer_decay=1.0")
    name, train = Params().recipe(True)
    assert recipe_record(name, train, HUB)["lr"] == 1e-05 and recipe_record(name, train, HUB)["recipe"] == "train"
    assert "the fine-tuning recipe (train.*): lr=1e-05 epochs=30 input_size=224" in recipe_line(name, train, HUB)
