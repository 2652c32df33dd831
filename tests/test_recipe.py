"""The recipe follows the encoder and train.recipe: the console line, metrics/recipe.json, the stage's one call."""
import pytest

from galaxy_finetune.core.params import Params
from galaxy_finetune.training.recipe import is_pretrained, recipe_line, recipe_record

RANDOM = {"source": "random", "arch": "convnext_nano", "seed": 42, "sha256": None}
HUB = {"source": "hf_hub:mwalmsley/zoobot-encoder-convnext_nano", "arch": "convnext_nano", "sha256": "ab"}


def test_pretrained_follows_the_encoder_record():
    assert not is_pretrained(RANDOM) and is_pretrained(HUB)
    assert not is_pretrained({**HUB, "pretrained": False})  # an explicit flag (manifest["encoder"]) wins


def test_three_recipes_by_encoder_and_switch():
    params = Params()
    name, train = params.recipe(True)
    assert name == "train" and (train.lr, train.steps, train.head_init, train.schedule) == (
        1e-4, 500, "linear_probe", "cosine")
    name, train = Params.model_validate({"train": {"recipe": "writeup"}}).recipe(True)
    assert name == "writeup" and (train.lr, train.epochs, train.steps, train.batch_size, train.head_init,
                                  train.schedule) == (1e-5, 30, 0, 64, "random", "constant")
    # the switch picks the write-up's values, whatever train.* says; a random init always trains from scratch
    name, train = Params.model_validate({"train": {"recipe": "writeup", "lr": 3e-4}}).recipe(True)
    assert train.lr == 1e-5
    name, train = Params.model_validate({"train": {"recipe": "writeup"}}).recipe(False)
    assert name == "scratch" and train.lr == 1e-3
    assert Params.model_validate({"writeup": {"input_size": 288}}).largest_input_size() == 288


def test_a_recipe_group_refuses_unknown_keys():
    from galaxy_finetune.core.errors import PipelineError
    from galaxy_finetune.core.params import load_params

    with pytest.raises(PipelineError, match="writeup.lrr: unknown key"):
        import tempfile
        from pathlib import Path
        path = Path(tempfile.mkdtemp()) / "params.yaml"
        path.write_text("writeup:\n  lrr: 1e-5\n")
        load_params(path)


def test_recipe_record_and_line_carry_the_effective_values():
    name, train = Params().recipe(False)
    assert recipe_record(name, train, RANDOM) == {
        "recipe": "scratch", "pretrained": False, "encoder": "random", "arch": "convnext_nano",
        "lr": 0.001, "epochs": 10, "steps": 0, "input_size": 64, "batch_size": 64, "patience": 3,
        "layer_decay": 1.0, "head_init": "random", "schedule": "constant", "batchnorm": "train",
        "semi": "none", "semi_threshold": None, "semi_pool": 0, "semi_used_share": None}
    semi = {"method": "fixmatch", "threshold": "adaptive", "pool": 1240, "used_share": 0.31, "pool_draws": 6400}
    assert {k: v for k, v in recipe_record(name, train, RANDOM, semi).items() if k.startswith("semi")} == {
        "semi": "fixmatch", "semi_threshold": "adaptive", "semi_pool": 1240, "semi_used_share": 0.31}
    assert recipe_line(name, train, RANDOM) == (
        "finetune_gpu: the encoder is a random init (convnext_nano, no pretraining), so the from-scratch recipe "
        "(scratch.*): lr=0.001 epochs=10 steps=0 input_size=64 batch_size=64 patience=3 layer_decay=1.0 "
        "head_init=random schedule=constant batchnorm=train")
    name, train = Params().recipe(True)
    assert recipe_record(name, train, HUB)["lr"] == 1e-4 and recipe_record(name, train, HUB)["recipe"] == "train"
    assert "the fine-tuning (lpft) recipe (train.*): lr=0.0001 epochs=30 steps=500" in recipe_line(name, train, HUB)
    name, train = Params.model_validate({"train": {"recipe": "writeup"}}).recipe(True)
    assert "the write-up recipe (writeup.*): lr=1e-05 epochs=30 steps=0" in recipe_line(name, train, HUB)


@pytest.mark.parametrize("encoder,recipe", [(RANDOM, "lpft"), (HUB, "lpft"), (HUB, "writeup")],
                         ids=["random", "pretrained", "pretrained-writeup"])
def test_the_stage_picks_the_recipe_from_the_encoder_record(tmp_path, monkeypatch, capsys, encoder, recipe):
    """finetune_gpu reads models/encoder/encoder.json, trains with that recipe, writes metrics/recipe.json."""
    import argparse

    from galaxy_finetune.training import train as training
    from galaxy_finetune.core.files import read_json, write_json
    from stages import finetune_gpu as stage

    write_json(tmp_path / "raw/manifest.json", {"run_label": "test | test"})
    write_json(tmp_path / "encoder/encoder.json", encoder)
    params = Params.model_validate({"train": {"epochs": 7, "recipe": recipe}, "writeup": {"epochs": 5},
                                    "scratch": {"epochs": 3}})
    seen = {}

    def fake_finetune(train, augment, name, manifest, job, workers):
        seen.update(train=train, recipe=name, manifest=manifest, job=job)
        return {"epochs_run": 1, "steps_run": 4, "wall_time_s": 1.0, "device": "cpu", "best_val_loss": 0.5,
                "best_step": 2, "val_accuracy": 0.75, "kept": "fine_tuned",
                "linear_probe": {"val_accuracy": 0.5, "val_loss": 0.7},
                "learning_warning": "this run learned nothing: (as judged by learning.py)"}

    monkeypatch.setattr(training, "finetune", fake_finetune)
    args = argparse.Namespace(raw_dir=tmp_path / "raw", store_dir=tmp_path / "store", splits_dir=tmp_path / "splits",
                              encoder_dir=tmp_path / "encoder", model_out=tmp_path / "model",
                              live_dir=tmp_path / "live", recipe=tmp_path / "metrics/recipe.json",
                              checkpoints=tmp_path / "ckpt")
    stage.main(args, params)
    name, used = params.recipe(is_pretrained(encoder))
    assert seen["recipe"] == name == {"random": "scratch", "lpft": "train", "writeup": "writeup"}[
        "random" if encoder is RANDOM else recipe]
    assert seen["train"] == used and seen["train"].epochs == {"scratch": 3, "train": 7, "writeup": 5}[name]
    assert seen["manifest"]["run_label"] == "test | test" and seen["job"].model_out == tmp_path / "model"
    assert read_json(args.recipe) == recipe_record(name, used, encoder)  # labels alone: semi none
    out, err = capsys.readouterr()
    assert recipe_line(name, used, encoder) in out.splitlines()
    assert "val accuracy 75.0% vs the linear probe's 50.0%" in out
    assert err.splitlines() == ["warning: this run learned nothing: (as judged by learning.py)"]
