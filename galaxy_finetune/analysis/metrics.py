"""analyse's numbers: scikit-learn metrics over the predictions CSV, plus calibration and a seeded bootstrap.

Every function takes plain arrays (integer class indexes, an (N, C) probability matrix) so each can be checked
against a hand-computed case; `compute_metrics` assembles them into the JSON that `dvc metrics diff` reads.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from galaxy_finetune.core.errors import PipelineError
from galaxy_finetune.core.stats import bootstrap_interval, log_loss

SUM_TOLERANCE = 1e-3  # the CSV stores 6 decimals per probability; a real mismatch is far larger
BASE_COLUMNS = ("id_str", "true_label", "pred_label")
DERIVED_COLUMNS = ("p_true", "confidence")  # written by predict; recomputed here from the p_<class> columns
PROB_FLOOR = 5e-7  # half the CSV's last decimal: a probability written as 0 was below it


def check_predictions(table: pd.DataFrame, classes: list[str], name: str = "predictions") -> np.ndarray:
    """Validate a predictions table against `classes`; return its (N, C) probability matrix.

    Raises PipelineError (one line, naming `name`) for a missing column, a probability column of an unknown
    class, an unknown class name, probabilities that are negative or do not sum to 1, or a pred_label that
    is not the most probable class.
    """
    prob_cols = [f"p_{c}" for c in classes]
    missing = [c for c in (*BASE_COLUMNS, *prob_cols) if c not in table.columns]
    if missing:
        raise PipelineError(f"{name}: missing column(s) {missing}; rerun the predict stage")
    extra = [c for c in table.columns if c.startswith("p_") and c not in prob_cols and c not in DERIVED_COLUMNS]
    if extra:
        raise PipelineError(f"{name}: probability column(s) {extra} of unknown class(es); the model's classes "
                            f"are {classes}")
    if table.empty:
        raise PipelineError(f"{name}: no rows")
    for col in ("true_label", "pred_label"):
        values = table[col].fillna("<missing>").astype(str)
        unknown = sorted(set(values) - set(classes))
        if unknown:
            raise PipelineError(f"{name}: {col} has unknown class name(s) {unknown[:5]}; expected one of {classes}")
    try:
        probs = table[prob_cols].to_numpy(dtype=float)
    except (TypeError, ValueError):
        raise PipelineError(f"{name}: probability columns {prob_cols} are not all numbers") from None
    sums = probs.sum(1)
    bad = np.flatnonzero(~np.isfinite(sums) | (np.abs(sums - 1) > SUM_TOLERANCE) | (probs < 0).any(1))
    if len(bad):
        first = bad[0]
        raise PipelineError(f"{name}: probabilities of row {first + 1} (id {table['id_str'].iloc[first]}) sum to "
                            f"{sums[first]:.4f}, not 1 ({len(bad)} such row(s))")
    index = {c: i for i, c in enumerate(classes)}
    pred = table["pred_label"].map(index).to_numpy()
    behind = np.flatnonzero(probs[np.arange(len(probs)), pred] < probs.max(1) - SUM_TOLERANCE)
    if len(behind):
        first = behind[0]
        raise PipelineError(f"{name}: pred_label of row {first + 1} (id {table['id_str'].iloc[first]}) is not its "
                            f"most probable class ({len(behind)} such row(s))")
    return probs


def validated_probabilities(table: pd.DataFrame, classes: list[str], name: str = "predictions") -> np.ndarray:
    """check_predictions, then each row renormalised to sum to 1 (the CSV's 6 decimals leave rows ~1e-6 off)."""
    probs = check_predictions(table, classes, name)
    return probs / probs.sum(1, keepdims=True)


def class_indexes(labels: pd.Series, classes: list[str]) -> np.ndarray:
    return labels.map({c: i for i, c in enumerate(classes)}).to_numpy(dtype=int)


def bin_index(confidence: np.ndarray, bins: int) -> np.ndarray:
    """Equal-width confidence bins (lo, hi]; a confidence of exactly 0 falls in the first."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    return np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> pd.DataFrame:
    """Per confidence bin: its edges, count, mean confidence and accuracy (NaN where empty)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = bin_index(confidence, bins)
    rows = []
    for b in range(bins):
        mask = which == b
        rows.append({"bin_low": edges[b], "bin_high": edges[b + 1], "count": int(mask.sum()),
                     "confidence": float(confidence[mask].mean()) if mask.any() else np.nan,
                     "accuracy": float(correct[mask].mean()) if mask.any() else np.nan})
    return pd.DataFrame(rows)


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """ECE: sum over bins of (share of samples) * |accuracy - mean confidence|."""
    table = reliability(confidence, correct, bins)
    used = table[table["count"] > 0]
    return float(np.sum(used["count"] / len(confidence) * np.abs(used["accuracy"] - used["confidence"])))


def negative_log_likelihood(probs: np.ndarray, y_true: np.ndarray, temperature: float = 1.0) -> float:
    """The log loss (core.stats.log_loss): mean -log p(true class), probabilities floored at PROB_FLOOR (the CSV
    rounds smaller ones to 0), after temperature scaling by `temperature` (1: none)."""
    return log_loss(y_true, logits=np.log(np.clip(probs, PROB_FLOOR, None)) / temperature)


def probability_scores(probs: np.ndarray, y_true: np.ndarray, ece_bins: int = 15) -> dict:
    """Log loss (negative_log_likelihood), multi-class Brier (0-2) and ECE of (probs, y_true): the one estimator
    of each, for the headline numbers and for calibration's before and after."""
    labels = list(range(probs.shape[1]))
    correct = probs.argmax(1) == y_true
    return {"log_loss": negative_log_likelihood(probs, y_true),
            "brier": float(skm.brier_score_loss(y_true, probs, labels=labels, scale_by_half=False)),
            "ece": expected_calibration_error(probs.max(1), correct, ece_bins)}


def bootstrap_ci(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int, samples: int, seed: int,
                 level: float = 0.95) -> dict:
    """Percentile bootstrap (core.stats.bootstrap_interval: resampling galaxies, seeded) of overall accuracy and of
    each class's recall.

    Returns {"accuracy": (low, high), "per_class": [(low, high) | (nan, nan) for a class never in y_true]}.
    """
    n = len(y_true)
    accuracy = bootstrap_interval(lambda idx: (y_true[idx] == y_pred[idx]).mean(1), n, samples, seed, level)

    def recall(c: int):
        def per_resample(idx: np.ndarray) -> np.ndarray:
            t, p = y_true[idx], y_pred[idx]
            in_class = t == c
            counts = in_class.sum(1)
            with np.errstate(invalid="ignore", divide="ignore"):
                recalls = ((t == p) & in_class).sum(1) / counts
            return recalls[counts > 0]  # a resample that drew none of a rare class says nothing about it
        return per_resample

    return {"accuracy": accuracy,
            "per_class": [bootstrap_interval(recall(c), n, samples, seed, level) for c in range(n_classes)]}


def top_confusions(confusion: np.ndarray, classes: list[str], k: int = 5) -> list[dict]:
    """The k largest off-diagonal cells, largest first (ties by class order), each with its reverse count."""
    n = len(classes)
    cells = [(int(confusion[i, j]), i, j) for i in range(n) for j in range(n) if i != j and confusion[i, j] > 0]
    cells.sort(key=lambda cell: (-cell[0], cell[1], cell[2]))
    return [{"true": classes[i], "pred": classes[j], "count": count, "reverse": int(confusion[j, i])}
            for count, i, j in cells[:k]]


def confusion_text(item: dict) -> str:
    """'smooth_cigar -> edge_on_disk: 150 (reverse: 18)'."""
    return f"{item['true']} -> {item['pred']}: {item['count']} (reverse: {item['reverse']})"


def residual_bin(residual: np.ndarray, bins: int = 10) -> list[str]:
    """Each residual's bin as a label that sorts as text: '[0.0,0.1)', ..., '[0.9,1.0]'."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.floor(np.asarray(residual) * bins).astype(int), 0, bins - 1)
    labels = [f"[{edges[b]:.1f},{edges[b + 1]:.1f}{']' if b == bins - 1 else ')'}" for b in range(bins)]
    return [labels[b] for b in which]


def residuals(table: pd.DataFrame, probs: np.ndarray, classes: list[str], bins: int = 10) -> pd.DataFrame:
    """Per galaxy: id, true and predicted class, residual = 1 - p(true class) (the reference's 'residual') and
    its bin (for DVC's heatmap templates, which count rows per (x, y) pair)."""
    y_true = class_indexes(table["true_label"], classes)
    residual = np.round(1.0 - probs[np.arange(len(probs)), y_true], 6)
    return pd.DataFrame({"id_str": table["id_str"].astype(str).values,
                         "true_label": table["true_label"].values,
                         "pred_label": table["pred_label"].values,
                         "residual": residual,
                         "residual_bin": residual_bin(residual, bins)})


def most_confident(table: pd.DataFrame, probs: np.ndarray, correct: bool, k: int = 5) -> pd.DataFrame:
    """The k most confident correct (or wrong) rows, by max probability, ties by id_str; with `confidence`."""
    rows = table.assign(confidence=probs.max(1), _row=np.arange(len(table)))
    rows = rows[(rows["true_label"] == rows["pred_label"]) == correct]
    return rows.sort_values(["confidence", "id_str"], ascending=[False, True], kind="stable").head(k)


def compute_metrics(table: pd.DataFrame, probs: np.ndarray, classes: list[str], bootstrap_samples: int = 1000,
                    seed: int = 0, ece_bins: int = 15) -> dict:
    """Every headline number, as a JSON-ready dict whose nested keys `dvc metrics diff` shows as `a.b.c`.

    accuracy (+ 95% bootstrap CI), balanced accuracy and macro F1 over the classes present in the labels or
    predictions; per class: recall ("accuracy", + CI), precision, F1, support (recall and its CI are null for
    a class with no test galaxy); log-loss, multi-class Brier score (sum over classes, range 0-2) and ECE
    (probability_scores, as calibration reports them before and after temperature scaling);
    confusion counts keyed true class -> predicted class; the top confusions by rank.
    `probs` is the table's probability matrix from validated_probabilities.
    """
    labels = list(range(len(classes)))
    y_true = class_indexes(table["true_label"], classes)
    y_pred = class_indexes(table["pred_label"], classes)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    confusion = skm.confusion_matrix(y_true, y_pred, labels=labels)
    ci = bootstrap_ci(y_true, y_pred, len(classes), bootstrap_samples, seed)
    correct = y_true == y_pred
    present = sorted(set(y_true) | set(y_pred))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "y_pred contains classes not in y_true": intended, they are left out
        balanced = skm.balanced_accuracy_score(y_true, y_pred)
    per_class = {}
    for i, name in enumerate(classes):
        seen = bool(support[i])
        per_class[name] = {
            "accuracy": float(recall[i]) if seen else None,
            "accuracy_ci95_low": ci["per_class"][i][0] if seen else None,
            "accuracy_ci95_high": ci["per_class"][i][1] if seen else None,
            "precision": float(precision[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
    return {
        "n": int(len(table)),
        "accuracy": float(correct.mean()),
        "accuracy_ci95_low": ci["accuracy"][0],
        "accuracy_ci95_high": ci["accuracy"][1],
        "balanced_accuracy": float(balanced),
        "macro_f1": float(skm.f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        **probability_scores(probs, y_true, ece_bins),
        "per_class": per_class,
        "confusion": {t: {p: int(confusion[i, j]) for j, p in enumerate(classes)} for i, t in enumerate(classes)},
        "top_confusions": {str(rank): confusion_text(item)
                           for rank, item in enumerate(top_confusions(confusion, classes), start=1)},
    }


def confusion_array(metrics: dict, classes: list[str]) -> np.ndarray:
    """The confusion counts of a metrics dict as a (true, pred) array in class order."""
    return np.array([[metrics["confusion"][t][p] for p in classes] for t in classes], dtype=int)


def bootstrap_mean_ci(per_galaxy: np.ndarray, samples: int, seed: int, level: float = 0.95,
                      transform=None) -> tuple[float, float]:
    """Percentile bootstrap (core.stats.bootstrap_interval, as bootstrap_ci) of the mean of a per-galaxy value,
    `transform`ed after averaging (np.sqrt turns per-galaxy squared errors into an RMSE interval)."""
    values = np.asarray(per_galaxy, dtype=float)
    mean = transform or (lambda means: means)
    return bootstrap_interval(lambda idx: mean(values[idx].mean(1)), len(values), samples, seed, level)
