"""galaxy-label-curve: the fine-tuned model's learning curve from DVC experiments, and the labels for a target."""
import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from galaxy_finetune.labels.curve import PowerLaw
from galaxy_finetune.labels.finetuned_curve import curve_points, describe, labels_for_target, main

LAW = PowerLaw(0.9, 0.5, 0.05)  # the runs' test error against their labels


def rows(budgets, prefixed=False):
    out = [{"rev": "workspace", "Experiment": None, "split.train_per_class": 400.0, "train_labels": 1600.0,
            "accuracy": 0.99}]
    for k, per_class in enumerate(budgets):
        n = per_class * 4
        acc = "metrics/metrics.json:accuracy" if prefixed else "accuracy"
        out.append({"rev": f"r{k}", "Experiment": f"exp-{per_class}", "split.train_per_class": float(per_class),
                    "train_labels": float(n), acc: float(1 - LAW.error(n)), "accuracy_ci95_low": None})
    out.append({"rev": "r9", "Experiment": "regression-run", "split.train_per_class": 0.0, "train_labels": None})
    return out


def test_points_come_from_runs_with_a_budget_labels_and_an_accuracy():
    points = curve_points(rows([25, 100, 50], prefixed=True))
    assert points["experiment"].tolist() == ["exp-25", "exp-50", "exp-100"]  # by labels; workspace left out
    assert points["n_labels"].tolist() == [100, 200, 400]


def test_three_budgets_give_the_labels_for_the_target_and_fewer_say_why():
    points = curve_points(rows([10, 25, 50, 100, 200]))
    fit = labels_for_target(points, 0.92)  # 900 labels, beyond the largest run's 800
    assert fit["labels_for_target"] == pytest.approx(LAW.labels_for(0.92), rel=0.05)
    assert fit["extrapolated"] and "extrapolated" in describe(points, fit)
    assert not labels_for_target(points, 0.90)["extrapolated"]  # 324 labels
    few = labels_for_target(points.head(2), 0.90)
    assert few["labels_for_target"] is None and "at least 3" in describe(points.head(2), few)


@pytest.mark.slow  # real `dvc exp run`s
def test_galaxy_label_curve_collects_real_dvc_experiments(tmp_path, capsys):
    repo = tmp_path / "repo"
    (repo / "metrics/label_budget").mkdir(parents=True)
    (repo / "params.yaml").write_text(yaml.safe_dump({"split": {"train_per_class": 0}, "labels": {"target": 0.9}}))
    (repo / "run.py").write_text(
        "import json, yaml\n"
        "n = yaml.safe_load(open('params.yaml'))['split']['train_per_class'] * 4 or 2000\n"
        f"acc = 1 - ({LAW.a} * n ** -{LAW.b} + {LAW.c})\n"
        "json.dump({'accuracy': acc, 'accuracy_ci95_low': acc - 0.02, 'accuracy_ci95_high': acc + 0.02},"
        " open('metrics/metrics.json', 'w'))\n"
        "json.dump({'train_labels': n, 'metric': 'accuracy'}, open('metrics/label_budget/summary.json', 'w'))\n")
    stage = {"cmd": f"{sys.executable} run.py", "deps": ["run.py"], "params": ["split.train_per_class"],
             "metrics": [{"metrics/metrics.json": {"cache": False}},
                         {"metrics/label_budget/summary.json": {"cache": False}}]}
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"run": stage}}))
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    dvc = [sys.executable, "-m", "dvc"]
    for cmd in (["git", "init", "-q"], dvc + ["init", "-q"], dvc + ["repro", "-q"], ["git", "add", "-A"],
                ["git", "commit", "-qm", "base"], *[dvc + ["exp", "run", "-q", "-S", f"split.train_per_class={n}"]
                                                     for n in (25, 50, 100)]):
        subprocess.run(cmd, cwd=repo, env=env, check=True, capture_output=True)
    main(["--repo", str(repo)])
    line = capsys.readouterr().out
    points = pd.read_csv(repo / "metrics/finetuned_curve.csv")
    assert sorted(points["n_labels"]) == [100, 200, 400, 2000]  # three experiments and the baseline commit
    assert "90% needs about" in line and "4 run(s)" in line
    assert json.loads((repo / "metrics/metrics.json").read_text())  # the workspace is left as it was


def test_issue34_runs_with_the_unlabelled_pool_get_their_own_curve_and_their_own_answer(tmp_path, capsys,
                                                                                        monkeypatch):
    """Runs with train.semi (metrics/recipe.json's semi) are a curve apart from the runs on labels alone, each with
    its own "N labels reach the target"; the labels-alone curve stays in metrics/finetuned_curve.csv."""
    import dvc.api

    runs = rows([10, 25, 50, 100])
    better = rows([10, 25, 50])[1:-1]
    for row in better:  # the same budgets with the pool: a fifth less error
        row.update(Experiment=f"{row['Experiment']}-fixmatch", rev=row["rev"] + "s", semi="fixmatch",
                   accuracy=1 - LAW.error(row["train_labels"]) * 0.8)
    monkeypatch.setattr(dvc.api, "exp_show", lambda repo: runs + better)
    (tmp_path / "params.yaml").write_text("labels:\n  target: 0.9\n")
    main(["--repo", str(tmp_path)])
    lines = capsys.readouterr().out.strip().splitlines()
    alone = pd.read_csv(tmp_path / "metrics/finetuned_curve.csv")
    pool = pd.read_csv(tmp_path / "metrics/finetuned_curve_semi.csv")
    assert set(alone["semi"]) == {"none"} and len(alone) == 4
    assert set(pool["semi"]) == {"fixmatch"} and len(pool) == 3
    assert lines[0].startswith("galaxy-label-curve: the fine-tuned model's test accuracy on its labels alone: 40 labels")
    assert lines[1].startswith("galaxy-label-curve: with the unlabelled pool (train.semi fixmatch): 40 labels")
    needed = [int(line.split("needs about ")[1].split(" labels")[0]) for line in lines]
    assert needed[1] < needed[0]  # fewer labels reach the target with the pool
