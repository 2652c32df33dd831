"""The recipe follows the encoder: the console line, metrics/recipe.json, and the ignored-override warning."""
import pytest
import yaml

from galaxy_finetune.learning import RunContext
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


def test_an_unchanged_lock_as_dvc_writes_it_warns_about_nothing(tmp_path):
    """dvc.lock writes 1e-05 without a decimal point (YAML 1.2); read as YAML 1.1 it would be a string and every
    run with a random init would warn that train.lr was overridden."""
    lock = tmp_path / "dvc.lock"
    lock.write_text("schema: '2.0'\nstages:\n  finetune_gpu:\n    params:\n      params.yaml:\n        train:\n"
                    "          lr: 1e-05\n          epochs: 30\n          layer_decay: 0.75\n")
    assert locked_params(lock)["train.lr"] == 1e-05
    assert ignored_overrides(Params(), False, locked_params(lock)) is None


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


@pytest.mark.parametrize("encoder", [RANDOM, HUB], ids=["random", "pretrained"])
def test_the_stage_picks_the_recipe_from_the_encoder_record(tmp_path, monkeypatch, capsys, encoder):
    """finetune_gpu reads models/encoder/encoder.json, trains with that recipe, writes metrics/recipe.json."""
    import argparse

    import pandas as pd

    from galaxy_finetune.files import read_json, write_json
    from stages import finetune_gpu as stage

    classes = ["a", "b"]
    write_json(tmp_path / "raw/manifest.json", {"classes": classes, "run_label": "test | test"})
    (tmp_path / "splits").mkdir()
    pd.DataFrame({"label": [0, 0, 1, 1]}).to_csv(tmp_path / "splits/train.csv", index=False)
    pd.DataFrame({"label": [0, 0, 0, 1]}).to_csv(tmp_path / "splits/val.csv", index=False)
    write_json(tmp_path / "encoder/encoder.json", encoder)
    before, params = Params(), Params.model_validate({"train": {"epochs": 7}, "scratch": {"epochs": 3}})
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump({"stages": {"finetune_gpu": {"params": {
        "params.yaml": {"train": before.train.model_dump(), "scratch": before.scratch.model_dump()}}}}}))
    seen = {}

    def fake_finetune(train, augment, run_label, recipe, classes, *paths):
        seen.update(train=train, recipe=recipe, learning=paths[-1])
        return {"epochs_run": 1, "wall_time_s": 1.0, "device": "cpu", "best_val_loss": 0.5, "best_epoch": 0,
                "learning_warning": "this run learned nothing: (as judged by learning.py)"}

    monkeypatch.setattr(stage, "finetune", fake_finetune)
    args = argparse.Namespace(raw_dir=tmp_path / "raw", store_dir=tmp_path / "store", splits_dir=tmp_path / "splits",
                              encoder_dir=tmp_path / "encoder", model_out=tmp_path / "model",
                              live_dir=tmp_path / "live", recipe=tmp_path / "metrics/recipe.json",
                              checkpoints=tmp_path / "ckpt", lock=tmp_path / "dvc.lock")
    stage.main(args, params)
    pretrained = encoder is HUB
    name, used = params.recipe(pretrained)
    assert seen["recipe"] == name == ("train" if pretrained else "scratch")
    assert seen["train"] == used and seen["train"].epochs == (7 if pretrained else 3)
    assert read_json(args.recipe) == recipe_record(name, used, encoder)
    learning = seen["learning"]
    assert learning.baseline.majority_rate == 0.75 and learning.run == RunContext(pretrained, name, used.lr, 4)
    out, err = capsys.readouterr()
    assert recipe_line(name, used, encoder) in out.splitlines()
    unused = "scratch" if pretrained else "train"
    used_group = "train" if pretrained else "scratch"
    assert err.splitlines() == [
        f"warning: {unused}.epochs={7 if unused == 'train' else 3} is not used: the encoder is "
        f"{'pretrained' if pretrained else 'a random init'}, so {used_group}.epochs={used.epochs} is",
        "warning: this run learned nothing: (as judged by learning.py)"]
