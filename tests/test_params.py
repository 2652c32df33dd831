import pytest

from galaxy_finetune.core.errors import PipelineError
from galaxy_finetune.core.params import FitsView
from galaxy_finetune.core.params import RECIPE_KEYS, Params, ScratchParams, TrainParams, WriteupParams, load_params
from tests.pipeline_repo import ROOT


def test_project_params_validate():
    params = load_params(ROOT / "params.yaml")
    # params.yaml spells out the schema's defaults for the three recipes: the docs and the code cannot drift
    assert (params.train, params.writeup, params.scratch) == (Params().train, Params().writeup, Params().scratch)
    assert params.recipe(True)[1].lr == 1e-4 and params.writeup.lr == 1e-5 and params.writeup.epochs == 30
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


def test_recipe_follows_the_encoder():
    params = Params.model_validate({"train": {"lr": 2e-5, "dropout": 0.3, "epochs": 30},
                                    "scratch": {"lr": 1e-3, "epochs": 4}})
    name, train = params.recipe(pretrained=True)
    assert name == "train" and train == params.train
    name, scratch = params.recipe(pretrained=False)
    assert name == "scratch"
    assert (scratch.lr, scratch.epochs, scratch.dropout) == (1e-3, 4, 0.3)  # dropout is not a recipe key
    assert {k: getattr(scratch, k) for k in RECIPE_KEYS} == params.scratch.model_dump()


def test_recipe_groups_hold_exactly_the_recipe_keys_and_the_project_values():
    assert tuple(ScratchParams.model_fields) == tuple(WriteupParams.model_fields) == RECIPE_KEYS
    assert set(RECIPE_KEYS) <= set(TrainParams.model_fields)
    params = load_params(ROOT / "params.yaml")
    assert params.scratch.model_dump() == {"lr": 1e-3, "epochs": 10, "steps": 0, "input_size": 64, "batch_size": 64,
                                           "patience": 3, "layer_decay": 1.0, "head_init": "random",
                                           "schedule": "constant", "batchnorm": "train"}
    assert params.writeup.model_dump() == {"lr": 1e-5, "epochs": 30, "steps": 0, "input_size": 224,
                                           "batch_size": 64, "patience": 5, "layer_decay": 0.75,
                                           "head_init": "random", "schedule": "constant", "batchnorm": "frozen"}


def test_fits_params_become_the_decoder_view():
    params = Params.model_validate({"data": {"fits_bands": [0, 1, 2], "fits_stretch": 0.5, "fits_q": 3}})
    assert params.data.fits_view() == FitsView((0, 1, 2), 0.5, 3.0)
    assert Params().data.fits_view() == FitsView()  # the schema defaults are the decoder's defaults
    with pytest.raises(ValueError, match="fits_bands"):
        Params.model_validate({"data": {"fits_bands": [0, 1, 1]}})
def test_store_params():
    store = load_params(ROOT / "params.yaml").store
    assert (store.image_size, store.threads, store.loader_workers) == ("auto", 0, "auto")
    assert Params.model_validate({"store": {"image_size": 16, "loader_workers": 0}}).store.image_size == 16
    for bad in ({"image_size": 8}, {"image_size": "big"}, {"threads": -1}, {"loader_workers": "many"},
                {"image_sise": 64}):
        with pytest.raises(ValueError, match="store"):
            Params.model_validate({"store": bad})
