"""DVC's own engines for sweeps and sharing: the experiment queue and a (local-directory) remote."""
import json
import re
import subprocess
import time

import pytest

from galaxy_finetune.core.layout import CATALOG, MODEL_WEIGHTS
from tests.pipeline_repo import copy_repo, run

# with pytest-xdist: the DVC queue's experiments on a worker of their own
pytestmark = pytest.mark.xdist_group("experiments")


@pytest.fixture(scope="module")
def repo(pipeline_run, tmp_path_factory):
    """A copy of the session's first run, as the baseline of the experiments."""
    path, env, _ = pipeline_run
    return copy_repo(path, tmp_path_factory.mktemp("exp") / "repo"), env


@pytest.fixture(scope="module")
def sweep(repo):
    """Two queued experiments run by DVC's queue workers: scratch.lr 0.002 (what the random encoder's recipe
    trains with) and train.lr 3e-5 (ignored on a random encoder: the recipe says so). Returns
    {name: (params, metrics, recipe)} from `dvc exp show --json`."""
    path, env = repo
    for name, setting in (("lr-0.002", "scratch.lr=0.002"), ("ignored-lr", "train.lr=3e-5")):
        run(["dvc", "exp", "run", "--queue", "-S", setting, "-n", name], path, env)
    # the queue's workers are daemons that outlive `dvc queue start`: give them no pipe of ours to hold open
    subprocess.run(["dvc", "queue", "start", "-j", "2"], cwd=path, env=env, check=True,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 900
    while time.time() < deadline:
        status = run(["dvc", "queue", "status"], path, env).stdout
        if not re.search(r"\b(Queued|Running)\b", status):
            break
        time.sleep(2)
    run(["dvc", "queue", "stop"], path, env, check=False)
    assert "Failed" not in status, run(["dvc", "queue", "logs", "lr-0.002"], path, env, check=False).stdout[-3000:]
    shown = json.loads(run(["dvc", "exp", "show", "--json"], path, env).stdout)
    experiments = {}
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            rev = exp["revs"][0]
            data = rev.get("data") or {}
            experiments[exp.get("name") or rev.get("name")] = (
                data["params"]["params.yaml"]["data"], data["metrics"]["metrics/metrics.json"]["data"],
                data["metrics"]["metrics/recipe.json"]["data"])
    return experiments


def test_queued_sweep_runs_both_experiments(repo, sweep):
    path, env = repo
    assert {"lr-0.002", "ignored-lr"} <= set(sweep)
    params, metrics, recipe = sweep["lr-0.002"]
    assert params["scratch"]["lr"] == recipe["lr"] == 0.002 and 0 <= metrics["accuracy"] <= 1
    table = run(["dvc", "exp", "show", "--md", "--all-commits"], path, env).stdout
    assert "lr-0.002" in table and "accuracy" in table
    diff = run(["dvc", "exp", "diff", "lr-0.002", "ignored-lr"], path, env).stdout
    assert "scratch.lr" in diff and "train.lr" in diff


def test_remote_round_trip(repo, tmp_path):
    path, env = repo
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


def test_exp_show_shows_the_recipe_that_ran_beside_the_params_that_were_set(repo, sweep):
    """On a random encoder `-S train.lr=3e-5` changes nothing: the recipe line and metrics/recipe.json say what ran."""
    path, env = repo
    log = run(["dvc", "queue", "logs", "ignored-lr"], path, env).stdout
    assert "so the from-scratch recipe (scratch.*): lr=0.001 epochs=2 steps=0 input_size=32" in log
    params, _, recipe = sweep["ignored-lr"]
    assert params["train"]["lr"] == 3e-5
    assert recipe == {
        "recipe": "scratch", "pretrained": False, "encoder": "random", "arch": "convnext_nano",
        "lr": 0.001, "epochs": 2, "steps": 0, "input_size": 32, "batch_size": 8, "patience": 2, "layer_decay": 1.0,
        "head_init": "random", "schedule": "constant", "batchnorm": "train"}
    row = next(line for line in run(["dvc", "exp", "show", "--md", "--all-commits"], path, env).stdout.splitlines()
               if "ignored-lr" in line)
    assert "3e-05" in row  # the lr that was set is in the table; recipe.json (above) holds the lr that ran
