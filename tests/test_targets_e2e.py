"""Issue 17 end to end: `dvc repro` of the whole DAG with `train.task: votes` and with `train.task: regression`
on a tiny own catalog (synthetic galaxies as PNGs, vote counts and fractions that depend on their shapes),
offline with a random encoder; predict's columns, analyse's metrics.json keys and the other outputs."""
import json

import pandas as pd
import pytest

from tests.pipeline_repo import make_repo, repro_and_commit, run
from tests.vote_catalog import FRACTIONS, SCHEMA, write_vote_catalog
from galaxy_finetune.inference.shift import COLUMNS as SHIFT

ANSWERS = [c for answers in SCHEMA.values() for c in answers]


def _repo(tmp_path_factory, task: str, data: dict):
    root = tmp_path_factory.mktemp(task)
    catalog = write_vote_catalog(root / "galaxies", n_per_class=8, size=32)
    repo, env = make_repo(root / "repo", {
        "data": {"source": "catalog", "catalog": str(catalog), **data},
        "model": {"encoder": "random", "random_arch": "convnext_atto"},
        "train": {"task": task},
        "scratch": {"input_size": 32, "epochs": 1, "steps": 4, "batch_size": 8, "patience": 2}})
    return repo, env, repro_and_commit(repo, env, f"{task} run")


@pytest.fixture(scope="module")
def votes_repo(tmp_path_factory):
    return _repo(tmp_path_factory, "votes", {"schema": SCHEMA})


@pytest.fixture(scope="module")
def regression_repo(tmp_path_factory):
    return _repo(tmp_path_factory, "regression", {"label_cols": FRACTIONS})


def _common_outputs(repo):
    assert (repo / "metrics/coverage.csv").read_text() == "coverage,kept,accuracy,min_confidence\n"
    residuals = json.loads((repo / "metrics/residuals.json").read_text())
    assert residuals and {"true_label", "residual_bin", "residual"} <= set(residuals[0])
    assert (repo / "plots/predicted_vs_true.png").is_file() and (repo / "plots/largest_residuals.png").is_file()
    assert "largest" in (repo / "reports/errors.html").read_text()
    summary = (repo / "reports/summary.md").read_text()
    assert "classification-only" in summary and "constant prediction" in summary
    galaxies = pd.read_csv(repo / "data/embeddings/galaxies.csv", keep_default_na=False)
    assert (galaxies["label"] == -1).all()
    assert len(pd.read_csv(repo / "metrics/anomalies.csv"))
    budget = json.loads((repo / "metrics/label_budget/summary.json").read_text())
    assert budget["learner"] is None and "is for classification" in budget["note"]  # said, not failed


def test_votes_run_writes_fractions_concentrations_and_per_question_metrics(votes_repo):
    repo, env, _ = votes_repo
    catalog = pd.read_csv(repo / "data/raw/catalog.csv", keep_default_na=False)
    assert list(catalog.columns)[5:] == ANSWERS and (catalog["label"] == -1).all()
    model = json.loads((repo / "models/finetuned/model.json").read_text())
    assert model["task"]["kind"] == "votes" and model["task"]["questions"] == SCHEMA
    test = pd.read_csv(repo / "data/predictions/test.csv")
    assert list(test.columns) == (["id_str"] + [f"true_{a}" for a in ANSWERS] + [f"pred_{a}" for a in ANSWERS]
                                  + [f"{q}_concentration" for q in SCHEMA] + ["row", *SHIFT])
    for answers in SCHEMA.values():
        assert (test[[f"pred_{a}" for a in answers]].sum(1) - 1).abs().max() < 1e-4
    metrics = json.loads((repo / "metrics/metrics.json").read_text())
    for q in SCHEMA:
        assert {"mae", "mae_ci95_low", "mae_ci95_high", "rmse", "baseline_mae", "baseline_rmse"} <= set(
            metrics["per_question"][q])
        assert (repo / f"plots/agreement_confusion_{q}.png").is_file()
    assert set(metrics["per_answer"]) == set(ANSWERS) and "agreement" in metrics
    _common_outputs(repo)
    shown = run(["dvc", "metrics", "show", "--json"], repo, env).stdout
    assert '"per_question"' in shown and '"smooth-or-featured"' in shown
    # galaxy-classify on a folder of the same PNGs: no truth, the same prediction columns
    images = repo.parent / "galaxies"
    out = repo.parent / "classified.csv"
    run(["galaxy-classify", "models/finetuned", str(images), "-o", str(out), "--accelerator", "cpu"], repo, env)
    classified = pd.read_csv(out)
    assert [c for c in classified.columns if c.startswith("pred_")] == [f"pred_{a}" for a in ANSWERS]
    assert not any(c.startswith("true_") for c in classified.columns) and len(classified) == 32


def test_regression_run_writes_pred_columns_and_per_column_metrics(regression_repo):
    repo, env, output = regression_repo
    test = pd.read_csv(repo / "data/predictions/test.csv")
    assert list(test.columns) == ["id_str", *[f"true_{c}" for c in FRACTIONS], *[f"pred_{c}" for c in FRACTIONS],
                                  "row", *SHIFT]
    assert test[[f"pred_{c}" for c in FRACTIONS]].stack().between(0, 1).all()  # unit-interval targets: a sigmoid
    metrics = json.loads((repo / "metrics/metrics.json").read_text())
    assert set(metrics["per_column"]) == set(FRACTIONS) and metrics["task"] == "regression"
    for c in FRACTIONS:
        assert metrics["per_column"][c]["n"] == len(test)
        assert metrics["per_column"][c]["mae_ci95_low"] <= metrics["per_column"][c]["mae"]
    assert "val_rmse" in metrics and "regression" in output and "val RMSE" in output
    _common_outputs(repo)
    # galaxy-similar works on a run without classes (label_name empty)
    similar = repo.parent / "similar.csv"
    run(["galaxy-similar", str(test["id_str"].iloc[0]), "-k", "3", "-o", str(similar), "--sheet",
         str(repo.parent / "similar.png")], repo, env)
    neighbours = pd.read_csv(similar, keep_default_na=False)
    assert len(neighbours) >= 3 and (repo.parent / "similar.png").is_file()
