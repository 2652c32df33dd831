"""The label_budget stage's work: from frozen features of every labelled galaxy to metrics/label_budget/.

- learning_curve.csv (+ learning_curve_runs.csv): the metric on the test split against labels per class, nested
  class-balanced budgets of the train split, val and test fixed, with a 95% bootstrap CI, and the power law;
- active_learning.csv (every round) and active_learning_mean.csv (seed means, one column per strategy);
- label_issues.csv: cleanlab's flagged labels among train, val and test, most suspect first;
- near_duplicates.csv: pairs of galaxies with near-identical frozen features;
- summary.json (a DVC metric): the fit, labels for labels.target, the label saving of each acquisition score,
  counts, wall times; report.md: the same as tables.
The learner is the linear probe on a PCA of frozen pretrained features: a lower bound of fine-tuning.
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from galaxy_finetune.core.files import atomic_path, read_table, write_json
from galaxy_finetune.core.layout import SPLIT_DUPLICATES
from galaxy_finetune.core.params import LabelsParams
from galaxy_finetune.labels.curve import fit_curve, learning_curve
from galaxy_finetune.labels.duplicates import near_pairs, near_warning
from galaxy_finetune.labels.issues import find_suspects, issues_record, out_of_fold_probs
from galaxy_finetune.labels.simulate import label_saving, simulate_active
from galaxy_finetune.training.probe import fit_linear_probe

LEARNER = "linear probe on a PCA of the starting encoder's frozen features (a lower bound of fine-tuning)"


def pca_project(train: np.ndarray, everything: np.ndarray, components: int) -> np.ndarray:
    """`everything` projected on a PCA fitted on `train` (unsupervised: no label is used)."""
    from galaxy_finetune.inference.embeddings import fit_pca

    return fit_pca(train, components).transform(everything.astype(np.float32)).astype(np.float32)


def budget_sample(galaxies: pd.DataFrame, limit: int, seed: int = 0) -> pd.DataFrame:
    """At most `limit` of the labelled galaxies (0: all), each (split, class) keeping its share: what bounds the
    stage's cost (the encoder pass, the pairwise near-duplicate search) whatever the catalog's size."""
    from galaxy_finetune.training.probe import stratified_sample

    if not limit or len(galaxies) <= limit:
        return galaxies
    key = pd.factorize(galaxies["split"].astype(str) + "/" + galaxies["label"].astype(str))[0]
    return galaxies.iloc[stratified_sample(key, limit, seed)].reset_index(drop=True)


def label_budget(galaxies: pd.DataFrame, features: np.ndarray, classes: list[str], params: LabelsParams,
                 out_dir: Path, splits_dir: Path | None = None, bootstrap_samples: int = 1000,
                 n_labelled: int | None = None) -> dict:
    """Every label-budget output for `galaxies` (id_str, split, label, row; row i of `features`, frozen encoder
    features) into `out_dir` (all or nothing); returns the summary."""
    clock = {}
    split = galaxies["split"].to_numpy()
    idx = {name: np.flatnonzero(split == name) for name in ("train", "val", "test")}
    y = galaxies["label"].to_numpy(int)
    n_classes = len(classes)
    start = time.perf_counter()
    x = pca_project(features[idx["train"]], features, params.pca_components)
    clock["pca_s"] = time.perf_counter() - start

    start = time.perf_counter()
    runs, curve = learning_curve(x[idx["train"]], y[idx["train"]], x[idx["val"]], y[idx["val"]], x[idx["test"]],
                                 y[idx["test"]], n_classes, params.per_class, params.seeds, params.metric,
                                 bootstrap_samples)
    fit = fit_curve(curve, params.metric, params.target)
    clock["learning_curve_s"] = time.perf_counter() - start

    start = time.perf_counter()
    C = fit_linear_probe(x[idx["train"]], y[idx["train"]], x[idx["val"]], y[idx["val"]], n_classes).C
    strategies = ["random", *params.acquisition]
    start_per_class = min(params.al_start_per_class, int(np.bincount(y[idx["train"]], minlength=n_classes).min()))
    rounds = simulate_active(x[idx["train"]], y[idx["train"]], x[idx["test"]], y[idx["test"]], n_classes, C,
                             strategies, params.seeds, start_per_class, params.al_batch, params.al_budget,
                             passes=params.mc_passes)
    saving = label_saving(rounds)
    mean = rounds.groupby(["n_labels", "strategy"])["accuracy"].mean().unstack("strategy")[strategies]
    mean = mean.round(4).reset_index()
    clock["active_learning_s"] = time.perf_counter() - start

    start = time.perf_counter()
    labelled = galaxies.reset_index(drop=True)
    probs = out_of_fold_probs(x, y, n_classes, params.issue_folds)
    suspects = find_suspects(labelled, probs, classes)
    clock["label_issues_s"] = time.perf_counter() - start

    start = time.perf_counter()
    pairs = near_pairs(features, params.near_duplicate_cosine)
    near = pd.DataFrame({"id_a": galaxies["id_str"].to_numpy()[pairs["i"]], "split_a": split[pairs["i"]],
                         "id_b": galaxies["id_str"].to_numpy()[pairs["j"]], "split_b": split[pairs["j"]],
                         "similarity": pairs["similarity"]})
    clock["near_duplicates_s"] = time.perf_counter() - start
    exact = 0
    if splits_dir is not None and (Path(splits_dir) / SPLIT_DUPLICATES).is_file():
        exact = len(read_table(Path(splits_dir) / SPLIT_DUPLICATES))

    summary = {
        "learner": LEARNER, "metric": params.metric,
        # the galaxies it used, of the labelled ones (labels.max_galaxies bounds the cost at survey scale)
        "galaxies": {"used": int(len(galaxies)), "labelled": int(n_labelled or len(galaxies))},
        "n_train": int(len(idx["train"])),
        "n_val": int(len(idx["val"])), "n_test": int(len(idx["test"])),
        "curve": {str(r.per_class): getattr(r, params.metric) for r in curve.itertuples()},
        **fit,
        # null, not NaN (not JSON), where a strategy never reached random's accuracy
        "active_learning": {r.strategy: {"final_accuracy": r.final_accuracy,
                                         "label_saving": None if pd.isna(r.label_saving) else r.label_saving,
                                         "labels_to_match_random": (None if pd.isna(r.labels_to_match_random)
                                                                    else r.labels_to_match_random)}
                            for r in saving.itertuples()},
        "active_learning_budget": int(rounds["n_labels"].max()),
        "label_issues": issues_record(suspects, len(labelled)),
        "duplicates": {"exact": int(exact), "near": int(len(near)),
                       "near_threshold_cosine": params.near_duplicate_cosine},
        "wall_s": {k: round(v, 2) for k, v in clock.items()},
    }
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        curve.to_csv(tmp / "learning_curve.csv", index=False)
        runs.to_csv(tmp / "learning_curve_runs.csv", index=False)
        rounds.to_csv(tmp / "active_learning.csv", index=False)
        mean.to_csv(tmp / "active_learning_mean.csv", index=False)
        suspects.to_csv(tmp / "label_issues.csv", index=False)
        near.to_csv(tmp / "near_duplicates.csv", index=False)
        write_json(tmp / "summary.json", summary)
        (tmp / "report.md").write_text(report_markdown(summary, curve, saving))
    line = near_warning(near, params.near_duplicate_cosine, Path(out_dir) / "near_duplicates.csv")
    if line:
        warnings.warn(line)
    return summary


def report_markdown(summary: dict, curve: pd.DataFrame, saving: pd.DataFrame) -> str:
    metric = summary["metric"]
    lines = ["# The label budget", "", f"Learner: {summary['learner']}. Test {metric} with a 95% bootstrap CI over "
             f"the {summary['n_test']} test galaxies, averaged over the seeds' nested budgets.", "",
             f"| labels per class | labels | {metric} | 95% CI | seed spread (sd) |", "|---|---|---|---|---|"]
    lines += [f"| {r.per_class} | {r.n_labels} | {getattr(r, metric):.1%} | {r.ci_low:.1%}-{r.ci_high:.1%} | "
              f"{r.seed_std:.3f} |" for r in curve.itertuples()]
    law = summary.get("power_law")
    lines += ["", f"Power law: error = {law['a']:.3g} n^-{law['b']:.3g} + {law['c']:.3g}" if law else
              f"Power law: {summary.get('note')}"]
    if law:
        need = summary["labels_for_target"]
        lines += [f"Labels (in all) to reach {summary['target']:.1%}: "
                  + (f"{need}{' (extrapolated)' if summary['extrapolated'] else ''}" if need else summary["note"])]
    lines += ["", "| strategy | final accuracy | labels to match random at the budget | label saving |",
              "|---|---|---|---|"]
    never = "never (it did not reach random's accuracy)"
    lines += [f"| {r.strategy} | {r.final_accuracy:.1%} | "
              f"{never if pd.isna(r.labels_to_match_random) else f'{r.labels_to_match_random:g}'} | "
              f"{'-' if pd.isna(r.label_saving) else f'{r.label_saving:.1%}'} |" for r in saving.itertuples()]
    issues, dup = summary["label_issues"], summary["duplicates"]
    lines += ["", f"Label issues flagged: {issues['n_flagged']} of {issues['n_labelled']}. Duplicates: {dup['exact']} "
              f"identical-pixel, {dup['near']} near-identical (cosine >= {dup['near_threshold_cosine']}).", ""]
    return "\n".join(lines)


def not_applicable(task_kind: str, out_dir: Path) -> dict:
    """metrics/label_budget/ for a regression or votes run: the label budget's learner, acquisition scores and
    label checks are per class, so the folder says so (summary.json, report.md) and holds an empty
    label_issues.csv, the file analyse reads."""
    from galaxy_finetune.labels.issues import ISSUE_COLUMNS

    note = (f"the label budget (learning curve, acquisition, label checks) is for classification; this run's "
            f"train.task is {task_kind}")
    summary = {"learner": None, "task": task_kind, "note": note}
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        pd.DataFrame(columns=ISSUE_COLUMNS).to_csv(tmp / "label_issues.csv", index=False)
        write_json(tmp / "summary.json", summary)
        (tmp / "report.md").write_text(f"# The label budget\n\nNot computed: {note}.\n")
    return summary
