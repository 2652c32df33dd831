"""train.task regression and votes, in-process and tiny: own catalogs with targets, the regressor and tree heads,
model.json's task, predict's columns. That the runs learn vote fractions from the galaxies' shapes is checked on
the end-to-end runs of test_targets_e2e.py (each configuration trains once)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from galaxy_finetune.core.errors import PipelineError
from galaxy_finetune.core.params import Params, TrainParams
from galaxy_finetune.core.task import Task, vote_fractions
from galaxy_finetune.data import sources
from galaxy_finetune.data.fetch import run_task
from galaxy_finetune.data.split import split_catalog
from galaxy_finetune.training.model_io import build_model, load_finetuned, model_task, save_finetuned
from vote_catalog import FRACTIONS, SCHEMA, write_vote_catalog

VOTES = Task("votes", questions={q: tuple(a) for q, a in SCHEMA.items()})


def tiny_encoder(dim: int = 8) -> torch.nn.Module:
    encoder = torch.nn.Sequential(torch.nn.Conv2d(3, dim, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    encoder.num_features = dim
    return encoder


def catalog_params(path, task: str, **data) -> Params:
    return Params.model_validate({"data": {"source": "catalog", "catalog": str(path), **data},
                                  "model": {"encoder": "random"}, "train": {"task": task}})


# ---- own catalogs with targets ----

def test_vote_catalog_keeps_counts_after_the_catalog_columns(tmp_path):
    path = write_vote_catalog(tmp_path / "cat", 2)
    task = run_task(catalog_params(path, "votes", schema=SCHEMA))
    frame = sources.canonical_catalog(sources.user_catalog(path, [], task), task)
    assert list(frame.columns) == sources.CATALOG_COLUMNS + [c for a in SCHEMA.values() for c in a]
    assert (frame["label"] == -1).all() and (frame["label_name"] == "").all()
    assert frame["smooth-or-featured_smooth"].dtype == float


def test_a_missing_vote_column_is_one_line_naming_it(tmp_path):
    path = write_vote_catalog(tmp_path / "cat", 1)
    pd.read_csv(path).drop(columns=["edge-on_no"]).to_csv(path, index=False)
    task = run_task(catalog_params(path, "votes", schema=SCHEMA))
    with pytest.raises(PipelineError) as err:
        sources.user_catalog(path, [], task)
    assert "edge-on_no" in str(err.value) and "\n" not in str(err.value)


def test_a_wrong_schema_name_is_one_line_naming_it(tmp_path):
    path = write_vote_catalog(tmp_path / "cat", 1)
    with pytest.raises(PipelineError) as err:
        run_task(catalog_params(path, "votes", schema="gz9_schema"))
    assert "gz9_schema" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("bad, message", [(-3, "not a whole vote count"), (2.5, "not a whole vote count"),
                                          ("lots", "not a number")])
def test_a_bad_vote_count_names_column_and_row(tmp_path, bad, message):
    path = write_vote_catalog(tmp_path / "cat", 1)
    frame = pd.read_csv(path).astype({"edge-on_yes": object})
    frame.loc[2, "edge-on_yes"] = bad
    frame.to_csv(path, index=False)
    task = run_task(catalog_params(path, "votes", schema=SCHEMA))
    with pytest.raises(PipelineError, match=f"'edge-on_yes', row 2.*{message}") as err:
        sources.canonical_catalog(sources.user_catalog(path, [], task), task)
    assert "\n" not in str(err.value)


def test_regression_needs_numbers_in_every_label_col(tmp_path):
    path = write_vote_catalog(tmp_path / "cat", 1)
    frame = pd.read_csv(path).astype({"featured_fraction": object})
    frame.loc[1, "featured_fraction"] = ""
    frame.to_csv(path, index=False)
    task = run_task(catalog_params(path, "regression", label_cols=FRACTIONS))
    with pytest.raises(PipelineError, match="'featured_fraction', row 1.*not a finite number"):
        sources.canonical_catalog(sources.user_catalog(path, [], task), task)
    with pytest.raises(PipelineError, match=r"missing regression column\(s\) \['nope'\]"):
        sources.user_catalog(path, [], Task("regression", label_cols=("nope",)))


@pytest.mark.parametrize("value", ["", "nan", "NaN"])
def test_an_empty_or_nan_regression_target_stops_fetch_data_naming_column_and_row(tmp_path, value):
    """Issue 27 keeps it: the user's catalog row and the column, on one line, whether the cell is empty or `nan`."""
    path = write_vote_catalog(tmp_path / "cat", 1)
    frame = pd.read_csv(path).astype({"featured_fraction": object})
    frame.loc[2, "featured_fraction"] = value
    frame.to_csv(path, index=False)
    task = run_task(catalog_params(path, "regression", label_cols=FRACTIONS))
    with pytest.raises(PipelineError) as err:
        sources.canonical_catalog(sources.user_catalog(path, [], task), task)
    message = str(err.value)  # empty: "... not a finite number"; nan: "'nan' is not a number"
    assert "'featured_fraction', row 2" in message and "not a" in message and "number" in message
    assert "\n" not in message


def test_regression_and_votes_split_without_classes(tmp_path):
    path = write_vote_catalog(tmp_path / "cat", 5)
    task = run_task(catalog_params(path, "votes", schema=SCHEMA))
    frame = sources.canonical_catalog(sources.user_catalog(path, [], task), task).assign(row=range(20))
    splits = split_catalog(frame, 0.2, 0.3, 0, task)
    assert sum(map(len, splits.values())) == 20 and len(splits["test"]) == 6
    assert "smooth-or-featured_smooth" in splits["train"].columns


# ---- heads ----

def test_tree_head_fractions_sum_to_one_per_question_and_the_loss_is_float32():
    model = build_model(tiny_encoder(), VOTES, TrainParams())
    batch = {"image": torch.rand(5, 3, 16, 16)}
    batch.update({key: torch.randint(0, 10, (5,)).float() for key in VOTES.schema_keys()})
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, _, loss = model.run_step_through_model(batch)
    assert loss.dtype == torch.float32 and loss.shape == (5, 2)
    concentrations = model.predict_step(batch, 0).detach().float().numpy()
    fractions, totals = VOTES.vote_outputs(concentrations)
    assert fractions.shape == (5, 4) and totals.shape == (5, 2)
    np.testing.assert_allclose(fractions[:, :2].sum(1), 1, rtol=1e-5)
    np.testing.assert_allclose(fractions[:, 2:].sum(1), 1, rtol=1e-5)
    assert (totals > 2).all()  # each concentration is in (1, 101)


def test_regressor_with_one_column_and_a_batch_of_one_keeps_b_k():
    model = build_model(tiny_encoder(), Task("regression", label_cols=("f",)), TrainParams(), unit_interval=True)
    batch = {"image": torch.rand(1, 3, 16, 16), "label": torch.rand(1, 1)}
    out = model.training_step(batch, 0)
    assert out["predictions"].shape == (1, 1) and out["loss"].ndim == 0
    three = build_model(tiny_encoder(), Task("regression", label_cols=("a", "b", "c")), TrainParams())
    assert three.predict_step({"image": torch.rand(2, 3, 16, 16)}, 0).shape == (2, 3)


def test_an_old_model_json_without_task_loads_as_classification(tmp_path):
    import timm

    encoder = timm.create_model("test_convnext", pretrained=False, num_classes=0)
    model = build_model(encoder, Task("classification", ("a", "b")), TrainParams())
    config = {"arch": "test_convnext", "classes": ["a", "b"], "training_mode": "full", "dropout": 0.5,
              "input_size": 16, "eval_zoom": 1.0}
    save_finetuned(tmp_path / "m", model, config)
    assert "task" not in json.loads((tmp_path / "m/model.json").read_text())
    loaded, config = load_finetuned(tmp_path / "m")
    assert model_task(config) == Task("classification", ("a", "b"))
    assert loaded.predict_step({"image": torch.rand(2, 3, 32, 32)}, 0).shape == (2, 2)
    model_task_votes = {**config, "task": VOTES.record()}
    assert model_task(model_task_votes) == VOTES


def test_predict_columns_per_task():
    assert Task("regression", label_cols=("a", "b")).prediction_header(True, ["row"]) == [
        "id_str", "true_a", "true_b", "pred_a", "pred_b", "row"]
    header = VOTES.prediction_header(False, [])
    assert header[-2:] == ["smooth-or-featured_concentration", "edge-on_concentration"]
    assert "pred_edge-on_yes" in header and not any(h.startswith("true_") for h in header)
    fractions = vote_fractions(np.array([[3, 1, 0, 0], [0, 0, 2, 2]]), VOTES)
    np.testing.assert_allclose(fractions[0], [0.75, 0.25, np.nan, np.nan])
    np.testing.assert_allclose(fractions[1], [np.nan, np.nan, 0.5, 0.5])


def test_regression_without_label_cols_is_one_line(tmp_path):
    with pytest.raises((PipelineError, ValueError), match="set data.label_cols"):
        run_task(catalog_params(tmp_path / "c.csv", "regression"))
