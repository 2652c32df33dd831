import pytest

from galaxy_finetune.errors import PipelineError
from galaxy_finetune.fetch import fetch_data
from galaxy_finetune.files import read_json
from galaxy_finetune.params import Params


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setenv("GALAXY_FINETUNE_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-empty"))


def test_offline_falls_back_to_the_quickstart(tmp_path, capsys):
    params = Params.model_validate({"data": {"synthetic_n_per_class": 3, "synthetic_image_size": 32}})
    manifest = fetch_data(params, tmp_path / "raw", tmp_path / "encoder", cache=tmp_path / "cache")
    assert manifest["profile"] == "quickstart" and manifest["source"] == "synthetic"
    assert "galaxy_mnist_train_catalog.parquet" in manifest["reason"]
    assert "hf_hub:mwalmsley/zoobot-encoder-convnext_nano" in manifest["reason"]
    assert manifest["requested"] == {"source": "galaxy_mnist", "encoder": params.model.encoder}
    assert manifest["counts_per_class"] == {c: 3 for c in params.data.classes}
    assert manifest["encoder"]["source"] == "random" and manifest["encoder"]["arch"] == "convnext_nano"
    assert read_json(tmp_path / "raw" / "manifest.json") == manifest
    assert len(list((tmp_path / "raw" / "images").glob("*.png"))) == 12
    assert (tmp_path / "encoder" / "encoder.json").is_file()
    assert "OFFLINE QUICKSTART" in capsys.readouterr().err
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_offline_error_names_what_is_missing_and_writes_nothing(tmp_path):
    params = Params.model_validate({"fetch": {"offline": "error"}})
    with pytest.raises(PipelineError) as err:
        fetch_data(params, tmp_path / "raw", tmp_path / "encoder", cache=tmp_path / "cache")
    msg = str(err.value)
    assert "galaxy_mnist_train_catalog.parquet" in msg and "data.local_dir" in msg and "hf_hub:" in msg
    assert not (tmp_path / "raw").exists() and not (tmp_path / "encoder").exists()


def test_explicit_synthetic_and_random_is_the_full_profile(tmp_path):
    params = Params.model_validate({"data": {"source": "synthetic", "synthetic_n_per_class": 2,
                                             "synthetic_image_size": 32},
                                    "model": {"encoder": "random", "random_arch": "convnext_atto"}})
    manifest = fetch_data(params, tmp_path / "raw", tmp_path / "encoder", cache=tmp_path / "cache")
    assert manifest["profile"] == "full" and manifest["reason"] is None and manifest["n_images"] == 8
    assert manifest["encoder"]["arch"] == "convnext_atto"
    again = fetch_data(params, tmp_path / "raw", tmp_path / "encoder", cache=tmp_path / "cache")
    assert again["data_sha256"] == manifest["data_sha256"]  # same inputs, same bytes: DVC sees no change
