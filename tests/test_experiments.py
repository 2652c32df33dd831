"""DVC's own engines for sweeps and sharing: the experiment queue and a (local-directory) remote.

The queue's two experiments (the session's `sweep`, tests/conftest.py) also carry the checks of what a params
change reruns: each experiment is a `dvc repro` of one change from the first run, and its queue log names the
stages that ran."""
import re

import pytest

from galaxy_finetune.core.layout import CATALOG, MODEL_WEIGHTS
from tests.pipeline_repo import copy_repo, in_dag_order, ran, run

# with pytest-xdist: the modules that share the session's tiny dvc repro (and its sweep) run on one worker
pytestmark = [pytest.mark.xdist_group("pipeline"), pytest.mark.slow]  # the tiny project's `dvc repro`


def test_queued_sweep_runs_both_experiments(sweep):
    path, env = sweep.repo, sweep.env
    assert {"lr-0.002", "analyse-seed-5"} <= set(sweep.experiments)
    params, metrics, recipe = sweep.experiments["lr-0.002"]
    assert params["scratch"]["lr"] == recipe["lr"] == 0.002 and 0 <= metrics["accuracy"] <= 1
    table = run(["dvc", "exp", "show", "--md", "--all-commits"], path, env).stdout
    assert "lr-0.002" in table and "accuracy" in table
    diff = run(["dvc", "exp", "diff", "lr-0.002", "analyse-seed-5"], path, env).stdout
    assert "scratch.lr" in diff and "train.lr" in diff


def test_remote_round_trip(sweep, tmp_path):
    path, env = copy_repo(sweep.repo, tmp_path / "repo"), sweep.env
    run(["dvc", "remote", "add", "-d", "shared", str(tmp_path / "remote")], path, env)
    run(["git", "commit", "-qam", "remote"], path, env)
    run(["dvc", "push"], path, env)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(path), str(clone)], tmp_path, env)
    run(["dvc", "pull"], clone, env)
    assert (clone / "models/finetuned" / MODEL_WEIGHTS).is_file()
    assert (clone / "data/raw" / CATALOG).is_file()
    out = run(["dvc", "repro"], clone, env).stdout
    assert re.findall(r"Running stage '(\w+)'", out) == ["fetch_data"]  # the network re-check only
    assert run(["dvc", "metrics", "show"], clone, env).stdout == run(["dvc", "metrics", "show"], path, env).stdout


def test_exp_show_shows_the_recipe_that_ran_beside_the_params_that_were_set(sweep):
    """On a random encoder `-S train.lr=3e-5` changes nothing: the recipe line and metrics/recipe.json say what ran
    (scratch.*, here with scratch.lr 0.002 set beside it)."""
    path, env = sweep.repo, sweep.env
    log = sweep.logs["lr-0.002"]
    assert "so the from-scratch recipe (scratch.*): lr=0.002 epochs=2 steps=0 input_size=32" in log
    params, _, recipe = sweep.experiments["lr-0.002"]
    assert params["train"]["lr"] == 3e-5
    assert recipe == {
        "recipe": "scratch", "pretrained": False, "encoder": "random", "arch": "convnext_nano",
        "lr": 0.002, "epochs": 2, "steps": 0, "input_size": 32, "batch_size": 8, "patience": 2, "layer_decay": 1.0,
        "head_init": "random", "schedule": "constant", "batchnorm": "train", "semi": "none", "semi_pool": 0}
    row = next(line for line in run(["dvc", "exp", "show", "--md", "--all-commits"], path, env).stdout.splitlines()
               if "lr-0.002" in line)
    assert "3e-05" in row  # the lr that was set is in the table; recipe.json (above) holds the lr that ran


def test_learning_rate_change_reruns_training_onwards_and_shows_in_metrics_diff(sweep, pipeline_two_runs):
    """(From test_pipeline.py: the sweep's lr experiment is that change, so it is not trained a second time.)"""
    log = sweep.logs["lr-0.002"]
    # no new store, no new split; the label budget's probe does not depend on the fine-tuning lr
    assert in_dag_order(ran(log), {"fetch_data", "finetune_gpu", "embed", "predict", "label_budget", "analyse"}), ran(log)
    repo, env = pipeline_two_runs  # the experiment applied and committed over the first run
    diff = run(["dvc", "metrics", "diff", "--all", "HEAD~1"], repo, env).stdout
    assert "provenance.lr" in diff and "0.001" in diff and "0.002" in diff


def test_analyse_param_change_reruns_only_analyse(sweep):
    """(From test_pipeline.py: the sweep's second experiment is that change.)"""
    log = sweep.logs["analyse-seed-5"]
    assert ran(log) == ["fetch_data", "analyse"], log[-3000:]
