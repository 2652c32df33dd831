"""analyse's numbers: scikit-learn metrics over the predictions CSV, plus calibration and a bootstrap."""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from galaxy_finetune.errors import PipelineError


def check_predictions(table: pd.DataFrame, classes: list[str], name: str = "predictions") -> np.ndarray:
    """Validate a predictions table; return its (N, C) probability matrix."""
    needed = ["id_str", "true_label", "pred_label"] + [f"p_{c}" for c in classes]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise PipelineError(f"{name}: missing column(s) {missing}; rerun the predict stage")
    if table.empty:
        raise PipelineError(f"{name}: no rows")
    for col in ("true_label", "pred_label"):
        unknown = sorted(set(table[col]) - set(classes))
        if unknown:
            raise PipelineError(f"{name}: {col} has unknown class(es) {unknown}; expected {classes}")
    probs = table[[f"p_{c}" for c in classes]].to_numpy(dtype=float)
    sums = probs.sum(1)
    bad = np.flatnonzero(~np.isfinite(sums) | (np.abs(sums - 1) > 1e-3) | (probs < 0).any(1))
    if len(bad):
        raise PipelineError(f"{name}: probabilities of row {bad[0]} (id {table['id_str'].iloc[bad[0]]}) sum to "
                            f"{sums[bad[0]]:.4f}, not 1 ({len(bad)} such rows)")
    return probs


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """ECE: bin by confidence, weight |accuracy - mean confidence| by the bin's share of samples."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(ece)


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> pd.DataFrame:
    """Per confidence bin: mean confidence, accuracy and count (the reliability diagram's data)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    rows = []
    for b in range(bins):
        mask = which == b
        rows.append({"bin_low": edges[b], "bin_high": edges[b + 1], "count": int(mask.sum()),
                     "confidence": float(confidence[mask].mean()) if mask.any() else np.nan,
                     "accuracy": float(correct[mask].mean()) if mask.any() else np.nan})
    return pd.DataFrame(rows)


def bootstrap_ci(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int, samples: int, seed: int,
                 level: float = 0.95) -> dict:
    """Percentile bootstrap of overall accuracy and per-class recall, resampling galaxies."""
    rng = np.random.default_rng(seed)
    n = len(y_true)
    idx = rng.integers(0, n, size=(samples, n))
    t, p = y_true[idx], y_pred[idx]
    correct = t == p
    acc = correct.mean(1)
    per_class = np.full((samples, n_classes), np.nan)
    for c in range(n_classes):
        in_class = t == c
        with np.errstate(invalid="ignore", divide="ignore"):
            per_class[:, c] = (correct & in_class).sum(1) / in_class.sum(1)
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    return {"accuracy": (float(np.percentile(acc, lo)), float(np.percentile(acc, hi))),
            "per_class": [(float(np.nanpercentile(per_class[:, c], lo)), float(np.nanpercentile(per_class[:, c], hi)))
                          if np.isfinite(per_class[:, c]).any() else (np.nan, np.nan) for c in range(n_classes)]}


def compute_metrics(table: pd.DataFrame, classes: list[str], bootstrap_samples: int = 1000, seed: int = 0,
                    ece_bins: int = 15) -> dict:
    """Every headline number of the analysis, as a JSON-ready dict with flat-enough keys for dvc metrics diff."""
    probs = check_predictions(table, classes)
    index = {c: i for i, c in enumerate(classes)}
    y_true = table["true_label"].map(index).to_numpy()
    y_pred = table["pred_label"].map(index).to_numpy()
    labels = list(range(len(classes)))
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    confusion = skm.confusion_matrix(y_true, y_pred, labels=labels)
    ci = bootstrap_ci(y_true, y_pred, len(classes), bootstrap_samples, seed)
    confidence = probs.max(1)
    correct = y_true == y_pred
    onehot = np.eye(len(classes))[y_true]
    off_diagonal = [(int(confusion[i, j]), classes[i], classes[j]) for i in labels for j in labels if i != j]
    off_diagonal.sort(key=lambda x: (-x[0], x[1], x[2]))
    return {
        "n": int(len(table)),
        "accuracy": float(correct.mean()),
        "accuracy_ci95_low": ci["accuracy"][0],
        "accuracy_ci95_high": ci["accuracy"][1],
        "balanced_accuracy": float(np.mean([recall[i] for i in labels if support[i] > 0])),
        "macro_f1": float(np.mean(f1)),
        # renormalise: the CSV stores 6 decimals, so rows sum to 1 only within ~1e-6
        "log_loss": float(skm.log_loss(y_true, probs / probs.sum(1, keepdims=True), labels=labels)),
        "brier": float(np.mean(np.sum((probs - onehot) ** 2, axis=1))),
        "ece": expected_calibration_error(confidence, correct, ece_bins),
        "per_class": {c: {"accuracy": float(recall[i]) if support[i] else None,
                          "accuracy_ci95_low": ci["per_class"][i][0] if support[i] else None,
                          "accuracy_ci95_high": ci["per_class"][i][1] if support[i] else None,
                          "precision": float(precision[i]), "f1": float(f1[i]), "support": int(support[i])}
                      for i, c in enumerate(classes)},
        "confusion": {t: {p: int(confusion[i, j]) for j, p in enumerate(classes)} for i, t in enumerate(classes)},
        "top_confusions": [f"{t} -> {p}: {n}" for n, t, p in off_diagonal[:5] if n > 0],
    }
