"""The shared numbers: the one log loss and the one seeded percentile bootstrap, for every layer above.

training (the probe's val loss), labels (the judges' C, the learning curve's CIs) and analysis (the headline log
loss, temperature scaling, the metrics' CIs) all use these, so the same inputs give the same number everywhere.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.special import log_softmax

EPS = float(np.finfo(float).eps)  # scikit-learn's log_loss clips probabilities at the float eps


def log_loss(y_true, probs=None, *, logits=None, floor: float = EPS, labels=None) -> float:
    """The log loss (mean cross-entropy, natural log): mean over rows of -log softmax(logits)[row, true class].

    Give `probs`, (N, C) probabilities, floored at `floor` (scikit-learn's clip at the float eps by default) and
    renormalised; or `logits`, (N, C) logits or log-probabilities (softmax ignores a per-row constant, so log p / T
    is p temperature-scaled by T). Computed in log space, so a sharpened or confident logit never underflows.
    `labels`: the classes of the columns, in sorted order, as scikit-learn's `log_loss(labels=)` (default 0..C-1);
    `y_true` holds class values, one of `labels` each.
    """
    if logits is None:
        logits = np.log(np.clip(np.asarray(probs, dtype=float), floor, None))
    log_p = log_softmax(np.asarray(logits, dtype=float), axis=1)
    y_true = np.asarray(y_true)
    if labels is None:
        column = y_true.astype(int)
    else:
        classes = np.unique(labels)
        if len(classes) != log_p.shape[1]:
            raise ValueError(f"{len(classes)} labels for {log_p.shape[1]} columns")
        column = np.clip(np.searchsorted(classes, y_true), 0, len(classes) - 1)
        if not np.array_equal(classes[column], y_true):
            raise ValueError(f"y_true has values not in labels {classes.tolist()}")
    return float(-log_p[np.arange(len(column)), column].mean())


def bootstrap_interval(statistic: Callable[[np.ndarray], np.ndarray], n_rows: int, samples: int, seed: int,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of a statistic over resampled rows (seeded: the same draws for the same seed).

    `statistic(idx)` gets idx, a (samples, n_rows) array of row indexes drawn with replacement by
    np.random.default_rng(seed), and returns the statistic of each resample (1-D; it may leave out resamples
    that say nothing, e.g. ones that drew no galaxy of a class). Returns its (1 - level) / 2 and (1 + level) / 2
    percentiles; (nan, nan) when there are no rows or no values.
    """
    if not n_rows:
        return (float("nan"), float("nan"))
    idx = np.random.default_rng(seed).integers(0, n_rows, size=(samples, n_rows))
    values = np.asarray(statistic(idx))
    if not values.size:
        return (float("nan"), float("nan"))
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    return float(np.percentile(values, lo)), float(np.percentile(values, hi))
