import pytest

from galaxy_finetune.errors import PipelineError
from galaxy_finetune.params import Params, load_params
from tests.pipeline_repo import ROOT


def test_project_params_validate():
    params = load_params(ROOT / "params.yaml")
    assert params.train.lr == 1e-5 and params.train.epochs == 30 and params.train.training_mode == "full"
    assert params.model.encoder == "hf_hub:mwalmsley/zoobot-encoder-convnext_nano"


def test_every_problem_reported_at_once(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  lr: -1\n  epochs: -2\n  lrr: 3\nsplit:\n  val_fraction: 0.6\n  test_fraction: 0.5\n"
                    "data:\n  source: nowhere\n")
    with pytest.raises(PipelineError) as err:
        load_params(path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(str(path))
    for expected in ("train.lr", "train.epochs", "train.lrr: unknown key", "split: val_fraction + test_fraction",
                     "data.source"):
        assert expected in msg


def test_wrong_type_and_bad_yaml(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  batch_size: many\n")
    with pytest.raises(PipelineError, match="train.batch_size"):
        load_params(path)
    path.write_text("train: [unclosed\n")
    with pytest.raises(PipelineError, match="not valid YAML"):
        load_params(path)
    with pytest.raises(PipelineError, match="not found"):
        load_params(tmp_path / "missing.yaml")


def test_catalog_source_needs_a_path():
    with pytest.raises(ValueError, match="data.catalog"):
        Params.model_validate({"data": {"source": "catalog"}})


def test_quickstart_recipe_replaces_training_keys_only_for_a_random_init():
    params = Params.model_validate({"train": {"lr": 2e-5, "dropout": 0.3, "weight_decay": 0.01},
                                    "quickstart": {"lr": 1e-3, "epochs": 4, "input_size": 48, "batch_size": 16,
                                                   "patience": 2, "layer_decay": 0.9}})
    assert params.effective_train(pretrained=True) == params.train  # pretrained weights: train: as written
    quick = params.effective_train(pretrained=False)
    assert (quick.lr, quick.epochs, quick.input_size, quick.batch_size, quick.patience, quick.layer_decay) == (
        1e-3, 4, 48, 16, 2, 0.9)
    # the rest of the recipe is train:'s
    assert (quick.dropout, quick.weight_decay, quick.training_mode, quick.seed) == (0.3, 0.01, "full", 42)
    assert params.train.lr == 2e-5 and params.train.epochs == 30  # train: itself is left alone


def test_store_params():
    store = load_params(ROOT / "params.yaml").store
    assert (store.image_size, store.threads, store.loader_workers) == ("auto", 0, "auto")
    assert Params.model_validate({"store": {"image_size": 16, "loader_workers": 0}}).store.image_size == 16
    for bad in ({"image_size": 8}, {"image_size": "big"}, {"threads": -1}, {"loader_workers": "many"},
                {"image_sise": 64}):
        with pytest.raises(ValueError, match="store"):
            Params.model_validate({"store": bad})
