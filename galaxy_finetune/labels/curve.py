"""How many labels: a learning curve over nested class-balanced budgets, and the power law fitted to it.

The learner is the linear probe (training/probe.py: a logistic regression, its strength picked on val) on frozen
pretrained encoder features. It is a cheap proxy and a LOWER BOUND of fine-tuning: lpft starts from this probe and
only keeps fine-tuned weights that beat it on val (measured on GZ2: +2.5 points at 50 labels per class, +4.3 with
all). The fine-tuned curve is `dvc exp run --queue -S split.train_per_class=N` per budget (see docs/label-budget.md).

The test error of the curve is fitted as err(n) = a * n^-b + c (n: labels in all, c: the floor the learner tends
to), which says how many labels reach a target accuracy, or that the target lies below the fitted floor.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from galaxy_finetune.core.stats import bootstrap_interval
from galaxy_finetune.data.subsets import nested_subsets
from galaxy_finetune.training.probe import fit_linear_probe

METRICS = ("accuracy", "balanced_accuracy")


def metric_per_resample(y_true: np.ndarray, y_pred: np.ndarray, metric: str, n_classes: int) -> np.ndarray:
    """`metric` of each row of (R, n) arrays of labels and predictions (R resamples, or R=1)."""
    correct = y_true == y_pred
    if metric == "accuracy":
        return correct.mean(axis=-1)
    recalls = []
    for c in range(n_classes):
        in_class = y_true == c
        with np.errstate(invalid="ignore", divide="ignore"):
            recalls.append((correct & in_class).sum(-1) / in_class.sum(-1))
    return np.nanmean(np.stack(recalls), axis=0)


def bootstrap_mean_metric(y_true: np.ndarray, predictions: list[np.ndarray], metric: str, n_classes: int,
                          samples: int, seed: int, level: float = 0.95) -> tuple[float, float, float]:
    """(value, low, high): `metric` averaged over the seeds' `predictions` of one test set, with a percentile
    bootstrap over the test galaxies (core.stats.bootstrap_interval: the same resamples for every seed)."""
    value = float(np.mean([metric_per_resample(y_true[None], p[None], metric, n_classes)[0] for p in predictions]))
    low, high = bootstrap_interval(
        lambda idx: np.mean([metric_per_resample(y_true[idx], p[idx], metric, n_classes) for p in predictions], axis=0),
        len(y_true), samples, seed, level)
    return value, low, high


def learning_curve(train_x, train_y, val_x, val_y, test_x, test_y, n_classes: int, per_class: list[int],
                   seeds: int, metric: str = "accuracy", bootstrap_samples: int = 1000,
                   bootstrap_seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, curve). runs: one row per budget and seed (per_class, n_labels, seed, metric, C, fit_s); curve: one
    row per budget (per_class, n_labels, metric averaged over seeds, its 95% bootstrap CI over the test galaxies,
    the seeds' spread). Budgets are nested per seed ("all" is the whole train split, the same for every seed)."""
    train_y, test_y = np.asarray(train_y, int), np.asarray(test_y, int)
    runs, curve, predictions = [], [], {}
    for seed in range(seeds):
        for budget, rows in nested_subsets(train_y, per_class, seed).items():
            if budget == "all" and seed > 0:  # the same fit whatever the seed
                runs.append({**runs[[r["per_class"] for r in runs].index("all")], "seed": seed})
                continue
            start = time.perf_counter()
            probe = fit_linear_probe(train_x[rows], train_y[rows], val_x, val_y, n_classes, seed)
            pred = probe.logits(test_x).argmax(1)
            predictions.setdefault(budget, []).append(pred)
            runs.append({"per_class": budget, "n_labels": len(rows), "seed": seed,
                         metric: float(metric_per_resample(test_y[None], pred[None], metric, n_classes)[0]),
                         "C": probe.C, "fit_s": round(time.perf_counter() - start, 3)})
    runs = pd.DataFrame(runs)
    for budget, preds in predictions.items():
        value, low, high = bootstrap_mean_metric(test_y, preds, metric, n_classes, bootstrap_samples, bootstrap_seed)
        seeds_here = runs[runs["per_class"].astype(str) == str(budget)]
        curve.append({"per_class": budget, "n_labels": int(seeds_here["n_labels"].iloc[0]), metric: round(value, 4),
                      "ci_low": round(low, 4), "ci_high": round(high, 4),
                      "seed_std": round(float(seeds_here[metric].std(ddof=0)), 4), "seeds": len(preds)})
    return runs, pd.DataFrame(curve).sort_values("n_labels", kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class PowerLaw:
    """Test error err(n) = a * n^-b + c of a learner trained on n labels."""
    a: float
    b: float
    c: float

    def error(self, n) -> np.ndarray:
        return self.a * np.asarray(n, float) ** -self.b + self.c

    def labels_for(self, target: float) -> float | None:
        """Labels (in all) at which the fitted curve reaches `target` (the metric, e.g. 0.85); None when the
        target lies at or below the fitted error floor c (no number of labels reaches it with this learner)."""
        gap = (1.0 - target) - self.c
        if gap <= 0:
            return None
        return float((self.a / gap) ** (1.0 / self.b))

    def record(self) -> dict:
        return {"a": round(self.a, 6), "b": round(self.b, 6), "c": round(self.c, 6)}


def fit_power_law(n_labels, error, sigma=None) -> PowerLaw:
    """Least-squares fit of err = a n^-b + c (a > 0, 0 < b < 2, 0 <= c < min(err)); `sigma`: each point's
    uncertainty (e.g. half its CI width), so the noisy small budgets weigh less."""
    from scipy.optimize import curve_fit

    n, err = np.asarray(n_labels, float), np.asarray(error, float)
    if len(n) < 3:
        raise ValueError(f"a power law needs at least 3 budgets, got {len(n)}")
    floor = max(float(err.min()) - 1e-9, 1e-9)
    b0, c0 = 0.5, 0.5 * floor
    a0 = max((err[0] - c0) * n[0] ** b0, 1e-6)
    sigma = None if sigma is None else np.maximum(np.asarray(sigma, float), 1e-4)
    (a, b, c), _ = curve_fit(lambda x, a, b, c: a * x ** -b + c, n, err, p0=(a0, b0, c0), sigma=sigma,
                             bounds=([1e-12, 1e-3, 0.0], [np.inf, 2.0, floor]), maxfev=20000)
    return PowerLaw(float(a), float(b), float(c))


def fit_curve(curve: pd.DataFrame, metric: str, target: float) -> dict:
    """The power law of a learning curve (one row per budget) and the labels it says reach `target`."""
    sigma = (curve["ci_high"] - curve["ci_low"]) / (2 * 1.96)
    try:
        law = fit_power_law(curve["n_labels"], 1.0 - curve[metric], sigma)
    except (ValueError, RuntimeError) as exc:
        return {"power_law": None, "target": target, "labels_for_target": None, "note": f"no fit: {exc}"}
    need = law.labels_for(target)
    n_classes_note = None if need is not None else (f"unreachable with this learner: fitted floor "
                                                    f"{1 - law.c:.1%} < target {target:.1%}")
    return {"power_law": law.record(), "target": target,
            "labels_for_target": None if need is None else int(np.ceil(need)),
            "extrapolated": bool(need is not None and need > curve["n_labels"].max()),
            "note": n_classes_note}
