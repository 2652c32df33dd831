"""Probabilities you can cut on: temperature scaling, accuracy against coverage, per-class purity thresholds.

Functions take (N, C) probability matrices and integer class indexes. The predictions CSVs hold probabilities,
not logits; log-probabilities are logits shifted by a per-row constant, which softmax ignores, so scaling
log p by 1/T is exactly temperature scaling (probabilities below PROB_FLOOR, which the CSV's 6 decimals round
to 0, are floored there). Scores before and after scaling come from one estimator, metrics.probability_scores.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax
from sklearn import metrics as skm

from galaxy_finetune.analysis.metrics import PROB_FLOOR, negative_log_likelihood, probability_scores

TEMPERATURE_RANGE = (0.05, 20.0)
PURITY_TARGETS = (0.95, 0.99)


def scale(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T): the temperature-scaled probabilities."""
    return np.exp(log_softmax(np.log(np.clip(probs, PROB_FLOOR, None)) / temperature, axis=1))


def fit_temperature(probs: np.ndarray, y_true: np.ndarray) -> float:
    """The temperature minimising the log loss of (probs, y_true) (searched on log T, bounded)."""
    low, high = np.log(TEMPERATURE_RANGE)
    found = minimize_scalar(lambda log_t: negative_log_likelihood(probs, y_true, float(np.exp(log_t))),
                            bounds=(low, high), method="bounded", options={"xatol": 1e-5})
    best = float(np.exp(found.x))
    # the bounded search never returns an end point: keep T = 1 if it was no worse
    if negative_log_likelihood(probs, y_true, best) > negative_log_likelihood(probs, y_true, 1.0):
        return 1.0
    return best


def temperature_scaling(val_probs: np.ndarray, val_true: np.ndarray, test_probs: np.ndarray, test_true: np.ndarray,
                        ece_bins: int) -> tuple[dict, np.ndarray]:
    """Fit T on val; return ({temperature, val/test scores before and after}, the scaled test probabilities)."""
    temperature = fit_temperature(val_probs, val_true)
    scaled_test = scale(test_probs, temperature)
    result = {"temperature": temperature}
    for split, probs, y_true, scaled in (("val", val_probs, val_true, scale(val_probs, temperature)),
                                         ("test", test_probs, test_true, scaled_test)):
        before, after = probability_scores(probs, y_true, ece_bins), probability_scores(scaled, y_true, ece_bins)
        result[split] = {f"{name}_{when}": value for when, scores in (("before", before), ("after", after))
                         for name, value in scores.items()}
    return result, scaled_test


def accuracy_coverage(confidence: np.ndarray, correct: np.ndarray, steps: int = 100) -> pd.DataFrame:
    """Keep the most confident share of galaxies: accuracy and confidence cut at coverage 1/steps .. 100%.

    Ties in confidence are broken by input order (stable sort), so the 100% row is the plain accuracy.
    """
    order = np.argsort(-confidence, kind="stable")
    hits = np.cumsum(correct[order])
    n = len(confidence)
    kept = np.unique(np.clip(np.ceil(np.arange(1, steps + 1) / steps * n).astype(int), 1, n))
    return pd.DataFrame({"coverage": np.round(kept / n, 6), "kept": kept,
                         "accuracy": np.round(hits[kept - 1] / kept, 6),
                         "min_confidence": np.round(confidence[order][kept - 1], 6)})


def purity_threshold(p_class: np.ndarray, is_class: np.ndarray, target: float) -> float | None:
    """The lowest cut t on p(class) whose selection {p >= t} reaches precision `target`; None if none does."""
    if not np.any(is_class):
        return None
    precision, _, cuts = skm.precision_recall_curve(is_class, p_class)  # cuts ascend; the last precision has none
    reaching = np.flatnonzero(precision[:-1] >= target)
    return float(cuts[reaching[0]]) if len(reaching) else None


def selection_quality(p_class: np.ndarray, is_class: np.ndarray, threshold: float | None) -> dict:
    """Precision, completeness and size of the selection {p >= threshold}."""
    if threshold is None:
        return {"precision": None, "completeness": None, "selected": 0}
    selected = p_class >= threshold
    n_selected, n_class = int(selected.sum()), int(is_class.sum())
    return {"precision": float(is_class[selected].mean()) if n_selected else None,
            "completeness": float((selected & is_class).sum() / n_class) if n_class else None,
            "selected": n_selected}


def purity_thresholds(val_probs: np.ndarray, val_true: np.ndarray, test_probs: np.ndarray, test_true: np.ndarray,
                      classes: list[str], targets=PURITY_TARGETS) -> dict:
    """Per class and target precision: the val threshold on p(class), and what it gives on test."""
    result = {}
    for c, name in enumerate(classes):
        result[name] = {}
        for target in targets:
            threshold = purity_threshold(val_probs[:, c], val_true == c, target)
            result[name][f"precision_{round(target * 100)}"] = {
                "threshold": threshold, "val": selection_quality(val_probs[:, c], val_true == c, threshold),
                "test": selection_quality(test_probs[:, c], test_true == c, threshold)}
    return result
