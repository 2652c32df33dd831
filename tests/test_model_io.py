"""The fine-tuned model's files (training/model_io.py): safetensors + model.json round-trip to the same model,
inputs made as in training from model.json alone, and unusable files named in one line."""
import json

import numpy as np
import pytest
import torch

from galaxy_finetune.core.errors import PipelineError
from galaxy_finetune.core.layout import MODEL_CONFIG, MODEL_WEIGHTS
from galaxy_finetune.data.augment import eval_view
from galaxy_finetune.core.params import FitsView
from galaxy_finetune.training.model_io import eval_transform, fits_view, load_finetuned, save_finetuned

# with pytest-xdist: the modules of the session's one tiny trained model run on one worker
pytestmark = pytest.mark.xdist_group("tiny_model")


def test_save_then_load_gives_the_same_model(tiny_model, tmp_path):
    model, config = load_finetuned(tiny_model.model)
    assert not model.training  # loaded for inference
    save_finetuned(tmp_path / "copy", model, config)
    again, config_again = load_finetuned(tmp_path / "copy")
    assert config_again == config
    x = torch.rand(3, 3, config["input_size"], config["input_size"])
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x), rtol=0, atol=0)
    assert sorted(p.name for p in (tmp_path / "copy").iterdir()) == sorted([MODEL_CONFIG, MODEL_WEIGHTS])


def test_the_eval_view_is_built_from_model_json(tiny_model):
    _, config = load_finetuned(tiny_model.model)
    pixels = torch.randint(0, 256, (2, 3, config["store_size"], config["store_size"]), dtype=torch.uint8)
    expected = eval_view(pixels, config["input_size"], config["eval_zoom"], config.get("normalisation"))
    torch.testing.assert_close(eval_transform(config)(pixels), expected, rtol=0, atol=0)
    normalised = dict(config, normalisation={"mean": [0.5] * 3, "std": [0.25] * 3}, eval_zoom=1.0)
    plain = eval_view(pixels, config["input_size"], 1.0)
    torch.testing.assert_close(eval_transform(normalised)(pixels), (plain - 0.5) / 0.25)


def test_the_fits_view_of_training_is_the_one_inference_uses():
    config = {"fits_view": {"bands": [0, 2, 1], "stretch": 0.7, "q": 9.0}}
    assert fits_view(config) == FitsView((0, 2, 1), 0.7, 9.0)
    assert fits_view({}) == FitsView()  # a model from before the view was recorded: the defaults


def test_missing_or_unusable_files_are_one_line(tiny_model, tmp_path):
    with pytest.raises(PipelineError, match=r"model.json: not found; run the finetune_gpu stage first"):
        load_finetuned(tmp_path / "nothing")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / MODEL_CONFIG).write_text((tiny_model.model / MODEL_CONFIG).read_text())
    (broken / MODEL_WEIGHTS).write_bytes(b"not safetensors")
    with pytest.raises(PipelineError, match=r"model.safetensors: cannot load .*; rerun finetune_gpu"):
        load_finetuned(broken)
    other = json.loads((tiny_model.model / MODEL_CONFIG).read_text())
    other["classes"] = other["classes"] + ["extra"]  # weights for 4 classes, a config for 5
    (broken / MODEL_CONFIG).write_text(json.dumps(other))
    (broken / MODEL_WEIGHTS).write_bytes((tiny_model.model / MODEL_WEIGHTS).read_bytes())
    with pytest.raises(PipelineError, match="cannot load"):
        load_finetuned(broken)
    assert np.isfinite(load_finetuned(tiny_model.model)[0].head.linear.weight.detach().numpy()).all()
