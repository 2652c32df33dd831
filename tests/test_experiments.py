"""DVC's own engines for sweeps and sharing: the experiment queue and a (local-directory) remote."""
import json
import re
import subprocess
import time

import pytest

from galaxy_finetune.core.layout import CATALOG, MODEL_WEIGHTS
from tests.pipeline_repo import copy_repo, run


@pytest.fixture(scope="module")
def repo(pipeline_run, tmp_path_factory):
    """A copy of the session's first run, as the baseline of the experiments."""
    path, env, _ = pipeline_run
    return copy_repo(path, tmp_path_factory.mktemp("exp") / "repo"), env


def test_queued_sweep_runs_both_experiments(repo):
    path, env = repo
    for lr in ("0.002", "0.0005"):
        run(["dvc", "exp", "run", "--queue", "-S", f"scratch.lr={lr}", "-n", f"lr-{lr}"], path, env)
    # the queue's workers are daemons that outlive `dvc queue start`: give them no pipe of ours to hold open
    subprocess.run(["dvc", "queue", "start", "-j", "2"], cwd=path, env=env, check=True,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 900
    while time.time() < deadline:
        status = run(["dvc", "queue", "status"], path, env).stdout
        if not re.search(r"\b(Queued|Running)\b", status):
            break
        time.sleep(5)
    run(["dvc", "queue", "stop"], path, env, check=False)
    assert "Failed" not in status, run(["dvc", "queue", "logs", "lr-0.002"], path, env, check=False).stdout[-3000:]
    shown = json.loads(run(["dvc", "exp", "show", "--json"], path, env).stdout)
    experiments = {}
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            rev = exp["revs"][0]
            data = rev.get("data") or {}
            lr = data["params"]["params.yaml"]["data"]["scratch"]["lr"]
            metrics = data["metrics"]["metrics/metrics.json"]["data"]
            recipe = data["metrics"]["metrics/recipe.json"]["data"]
            experiments[exp.get("name") or rev.get("name")] = (lr, metrics["accuracy"], recipe["lr"])
    assert {"lr-0.002", "lr-0.0005"} <= set(experiments)
    assert experiments["lr-0.002"][0] == experiments["lr-0.002"][2] == 0.002
    assert experiments["lr-0.0005"][0] == experiments["lr-0.0005"][2] == 0.0005
    table = run(["dvc", "exp", "show", "--md"], path, env).stdout
    assert "lr-0.002" in table and "accuracy" in table
    diff = run(["dvc", "exp", "diff", "lr-0.002", "lr-0.0005"], path, env).stdout
    assert "scratch.lr" in diff


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


def test_exp_show_shows_the_recipe_that_ran_beside_the_params_that_were_set(repo):
    """On a random encoder `-S train.lr=3e-5` changes nothing: the recipe line and metrics/recipe.json say what ran."""
    path, env = repo
    proc = run(["dvc", "exp", "run", "--temp", "-S", "train.lr=3e-5", "-n", "ignored-lr"], path, env)
    out = proc.stdout + proc.stderr
    assert "so the from-scratch recipe (scratch.*): lr=0.001 epochs=2 steps=0 input_size=32" in out
    shown = json.loads(run(["dvc", "exp", "show", "--json"], path, env).stdout)
    revs = {(exp.get("name") or exp["revs"][0].get("name")): exp["revs"][0]["data"]
            for baseline in shown for exp in baseline.get("experiments") or []}
    data = revs["ignored-lr"]
    assert data["params"]["params.yaml"]["data"]["train"]["lr"] == 3e-5
    assert data["metrics"]["metrics/recipe.json"]["data"] == {
        "recipe": "scratch", "pretrained": False, "encoder": "random", "arch": "convnext_nano",
        "lr": 0.001, "epochs": 2, "steps": 0, "input_size": 32, "batch_size": 8, "patience": 2, "layer_decay": 1.0,
        "head_init": "random", "schedule": "constant", "batchnorm": "train"}
    row = next(line for line in run(["dvc", "exp", "show", "--md"], path, env).stdout.splitlines()
               if "ignored-lr" in line)
    assert "3e-05" in row and "0.001" in row  # the lr that was set and the lr that ran, side by side
