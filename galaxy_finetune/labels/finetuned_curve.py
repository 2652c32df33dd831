"""galaxy-label-curve: the fine-tuned model's own learning curve, collected from DVC experiments.

How many labels a target needs is a question about the model the user trains, not about a cheaper proxy. Each
point is one fine-tuning run on a nested class-balanced training budget, val and test fixed:

    dvc exp run --queue -S split.train_per_class=25   # and 50, 100, 200 ... (0: every training label)
    dvc queue start                                    # runs them one after another
    galaxy-label-curve                                 # -> metrics/finetuned_curve.csv, and the labels for labels.target

It reads every experiment of the workspace's baseline through `dvc.api.exp_show` (the test accuracy and its 95%
CI from metrics/metrics.json, the training labels from metrics/label_budget/summary.json, the budget from
params.yaml), writes one row per run to metrics/finetuned_curve.csv (the learning_curve plot draws it beside the
probe's curve), fits err(n) = a n^-b + c (labels/curve.py) when there are 3 budgets or more, and says how many
labels reach labels.target, marked extrapolated beyond the largest budget run.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from galaxy_finetune.core.cli import run_command
from galaxy_finetune.core.errors import PipelineError
from galaxy_finetune.core.files import atomic_path
from galaxy_finetune.core.params import load_params

CURVE_FILE = Path("metrics/finetuned_curve.csv")  # runs on their labels alone (train.semi none)
SEMI_CURVE_FILE = Path("metrics/finetuned_curve_semi.csv")  # runs that also learned from the unlabelled pool
COLUMNS = ["experiment", "per_class", "n_labels", "accuracy", "ci_low", "ci_high", "semi"]


def _value(row: dict, key: str, file: str):
    """A metric or param of one exp_show row: its bare name, or `file:name` where DVC had to tell files apart."""
    for name in (key, f"{file}:{key}"):
        if row.get(name) is not None:
            return row[name]
    return None


def curve_points(rows: list[dict]) -> pd.DataFrame:
    """One row per fine-tuning run in `rows` (dvc.api.exp_show's records) that has a budget, its training labels
    and a test accuracy; the workspace is left out (it repeats a commit or an experiment)."""
    points = []
    for row in rows:
        if row.get("rev") == "workspace":
            continue
        budget = _value(row, "split.train_per_class", "params.yaml")
        n = _value(row, "train_labels", "metrics/label_budget/summary.json")
        accuracy = _value(row, "accuracy", "metrics/metrics.json")
        if budget is None or n is None or accuracy is None:
            continue
        points.append({"experiment": row.get("Experiment") or row.get("rev"),
                       "per_class": int(budget) if budget else "all", "n_labels": int(n),
                       "accuracy": float(accuracy),
                       "ci_low": _value(row, "accuracy_ci95_low", "metrics/metrics.json"),
                       "ci_high": _value(row, "accuracy_ci95_high", "metrics/metrics.json"),
                       "semi": _value(row, "semi", "metrics/recipe.json") or "none"})
    frame = pd.DataFrame(points, columns=COLUMNS)
    return frame.drop_duplicates(["experiment"]).sort_values(["n_labels", "experiment"], kind="stable").reset_index(
        drop=True)


def labels_for_target(points: pd.DataFrame, target: float) -> dict:
    """The power law of the runs' test error against their labels (runs at one budget averaged) and the labels it
    says reach `target`."""
    from galaxy_finetune.labels.curve import fit_curve

    mean = points.groupby("n_labels", as_index=False)[["accuracy", "ci_low", "ci_high"]].mean()
    if len(mean) < 3:
        return {"power_law": None, "target": target, "labels_for_target": None,
                "note": f"{len(mean)} budget(s) run; the fit needs at least 3 (dvc exp run --queue -S "
                        f"split.train_per_class=N for more)"}
    return fit_curve(mean.fillna({"ci_low": mean["accuracy"], "ci_high": mean["accuracy"]}), "accuracy", target)


def describe(points: pd.DataFrame, fit: dict, what: str = "the fine-tuned model's test accuracy") -> str:
    """The command's line: each budget's accuracy, then the labels for the target (or why there is no number)."""
    runs = ", ".join(f"{r.n_labels} labels {r.accuracy:.1%}" for r in points.itertuples())
    target = fit["target"]
    if fit["labels_for_target"] is not None:
        more = " (extrapolated beyond the largest budget run)" if fit["extrapolated"] else ""
        return (f"galaxy-label-curve: {what}: {runs}; {target:.0%} needs about "
                f"{fit['labels_for_target']} labels{more}")
    return f"galaxy-label-curve: {what}: {runs}; {target:.0%}: {fit['note']}"


def curves(points: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The runs on labels alone, and those of each train.semi method (which also learned from the unlabelled pool):
    "N labels reach the target" is answered for the recipe the user runs."""
    return {str(method): group.reset_index(drop=True) for method, group in points.groupby("semi", sort=False)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", type=Path, default=Path("."), help="the DVC project (default: here)")
    parser.add_argument("--target", type=float, default=None, help="accuracy to reach (default: labels.target)")
    parser.add_argument("-o", "--out", type=Path, default=None, help=f"default: REPO/{CURVE_FILE}")
    args = parser.parse_args(argv)

    def body():
        import dvc.api


        target = args.target if args.target is not None else load_params(args.repo / "params.yaml").labels.target
        points = curve_points(dvc.api.exp_show(repo=str(args.repo)))
        if points.empty:
            raise PipelineError("no finished run with split.train_per_class, metrics/metrics.json and "
                                "metrics/label_budget/summary.json; run `dvc exp run --queue -S "
                                "split.train_per_class=N` for a few N, then `dvc queue start`")
        out = args.out or args.repo / CURVE_FILE
        alone = points[points["semi"] == "none"]
        with_pool = points[points["semi"] != "none"]
        lines = []
        for frame, path, what in ((alone, out, "the fine-tuned model's test accuracy on its labels alone"),
                                  (with_pool, out.with_name(SEMI_CURVE_FILE.name), None)):
            if frame.empty:
                continue
            with atomic_path(path) as tmp:
                frame.to_csv(tmp, index=False)
            for method, group in curves(frame).items():
                label = what or f"with the unlabelled pool (train.semi {method})"
                lines.append(describe(group, labels_for_target(group, target), label)
                             + f"; {len(group)} run(s) in {path}")
        print("\n".join(lines))

    run_command(body)


if __name__ == "__main__":
    main()
