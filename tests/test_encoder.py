import json

import pytest
import timm
import torch

from galaxy_finetune.data import encoder as enc
from galaxy_finetune.data.download import Unreachable
from galaxy_finetune.core.errors import PipelineError
from galaxy_finetune.core.layout import ENCODER_RECORD, ENCODER_WEIGHTS

ARCH = "convnext_atto"  # the smallest ConvNeXt: same code path as convnext_nano, a quarter of the size


def _weights(tmp_path, arch=ARCH):
    model = timm.create_model(arch, num_classes=0)
    timm.models.save_for_hf(model, tmp_path / "export", safe_serialization=True)
    return model, tmp_path / "export"


def _fake_hf_cache(monkeypatch, cache, repo_id, export_dir, revision="0123456789abcdef0123456789abcdef01234567"):
    """The Hugging Face hub cache layout (models--org--name/refs, snapshots) as an online run leaves it."""
    from huggingface_hub import constants

    repo_dir = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (snapshot / name).write_bytes((export_dir / name).read_bytes())
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(revision)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return revision


def test_hf_hub_encoder_from_cache(tmp_path, monkeypatch):
    model, export = _weights(tmp_path)
    revision = _fake_hf_cache(monkeypatch, tmp_path / "hf", "someone/tiny-encoder", export)
    record = enc.resolve_encoder("hf_hub:someone/tiny-encoder", tmp_path / "out")
    assert record["arch"] == ARCH and record["revision"] == revision and len(record["sha256"]) == 64
    assert json.loads((tmp_path / "out" / ENCODER_RECORD).read_text()) == record
    built = enc.build_encoder(tmp_path / "out")
    for key, value in model.state_dict().items():
        assert torch.equal(built.state_dict()[key], value), key
    assert built.num_classes == 0


def test_hf_hub_not_cached_and_offline_is_unreachable(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(Unreachable, match="hf_hub:someone/absent is not in the Hugging Face cache"):
        enc.resolve_encoder("hf_hub:someone/absent", tmp_path / "out")


def test_local_safetensors_with_config(tmp_path):
    model, export = _weights(tmp_path)
    record = enc.resolve_encoder(str(export / "model.safetensors"), tmp_path / "out", random_arch="convnext_nano")
    assert record["arch"] == ARCH  # read from the config.json beside the weights
    assert torch.equal(enc.build_encoder(tmp_path / "out").stem[0].weight, model.stem[0].weight)


def test_weights_that_do_not_fit_the_architecture(tmp_path):
    _, export = _weights(tmp_path)
    (export / "config.json").unlink()
    with pytest.raises(PipelineError, match="cannot load into timm convnext_nano"):
        enc.resolve_encoder(str(export / "model.safetensors"), tmp_path / "out", random_arch="convnext_nano")


def test_random_encoder_is_seeded(tmp_path):
    record = enc.resolve_encoder("random", tmp_path / "a", random_arch=ARCH, seed=3)
    assert record["source"] == "random" and not (tmp_path / "a" / ENCODER_WEIGHTS).exists()
    enc.resolve_encoder("random", tmp_path / "b", random_arch=ARCH, seed=3)
    enc.resolve_encoder("random", tmp_path / "c", random_arch=ARCH, seed=4)
    a, b, c = (enc.build_encoder(tmp_path / x).stem[0].weight for x in "abc")
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_bad_specs(tmp_path):
    with pytest.raises(PipelineError, match="not found"):
        enc.resolve_encoder(str(tmp_path / "nope.safetensors"), tmp_path / "out")
    with pytest.raises(PipelineError, match="not understood"):
        enc.resolve_encoder("resnet50.pth", tmp_path / "out")


def test_pickled_weights_are_never_loaded(tmp_path):
    """A .safetensors file that is really a pickle (which could run code) is refused by safetensors."""
    import pickle

    bad = tmp_path / "evil.safetensors"
    bad.write_bytes(pickle.dumps({"stem.0.weight": "x"}))
    with pytest.raises(PipelineError, match="cannot load"):
        enc.resolve_encoder(str(bad), tmp_path / "out", random_arch=ARCH)


def test_input_normalisation_comes_from_the_timm_config_except_for_zoobot():
    from galaxy_finetune.data.encoder import input_normalisation
    from galaxy_finetune.core.errors import PipelineError

    imagenet = {"pretrained_cfg": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}
    assert input_normalisation(imagenet, "timm/some-model") == {"mean": [0.485, 0.456, 0.406],
                                                                 "std": [0.229, 0.224, 0.225]}
    # Zoobot's encoders were trained on [0, 1] pixels, whatever their hub config says
    assert input_normalisation(imagenet, "mwalmsley/zoobot-encoder-convnext_nano") is None
    assert input_normalisation({}, "x.safetensors") is None and input_normalisation({"pretrained_cfg": {}}, "x") is None
    with pytest.raises(PipelineError, match="std > 0"):
        input_normalisation({"pretrained_cfg": {"mean": [0.5] * 3, "std": [0, 1, 1]}}, "x.safetensors")
