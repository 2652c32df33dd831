"""analyse's figures (matplotlib/seaborn), one function per PNG, and FIGURES: the one list of them.

Every figure's title names the run (manifest run_label) and its footer the full provenance (data source and
hash, encoder source, device); both are also written into the PNG's Title/Description metadata. The footer
is grey for the real run (pretrained encoder on real data) and red otherwise.
Functions take plain arrays and tables; reading files is analyse.py's job.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from galaxy_finetune.core.gallery import CORRECT, WRONG, Stamp, galaxy_grid, save  # noqa: E402

METRIC_NAMES = {"acc": "accuracy", "loss": "loss (cross-entropy)"}


def class_colours(classes: list[str]) -> dict[str, tuple]:
    return dict(zip(classes, sns.color_palette("colorblind", len(classes))))


def confusion_matrix(counts: np.ndarray, classes: list[str], accuracy: float, path: Path, stamp: Stamp,
                     title: str) -> None:
    """Counts and row-normalised (recall) confusion side by side; true class on y, predicted on x."""
    rows = counts.sum(1, keepdims=True)
    normalised = np.divide(counts, rows, out=np.zeros(counts.shape, dtype=float), where=rows > 0)
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.6))
    for ax, data, fmt, label, panel in (
            (axes[0], counts, "d", "galaxies", "counts"),
            (axes[1], normalised, ".2f", "fraction of the true class", "row-normalised (recall on the diagonal)")):
        sns.heatmap(data, annot=True, fmt=fmt, cmap="Blues", xticklabels=classes, yticklabels=classes, ax=ax,
                    cbar_kws={"label": label}, square=True, vmin=0, vmax=1 if fmt != "d" else None)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(panel)
        ax.tick_params(axis="x", rotation=25)
        ax.tick_params(axis="y", rotation=0)
    save(fig, path, stamp, f"{title}: accuracy {accuracy:.1%}, n = {int(counts.sum())}")


def per_class_accuracy(per_class: dict, classes: list[str], accuracy: float, accuracy_ci: tuple[float, float],
                       path: Path, stamp: Stamp, title: str) -> None:
    """A bar per class (recall) with its 95% bootstrap interval; the overall accuracy and its interval behind."""
    colours = class_colours(classes)
    fig, ax = plt.subplots(figsize=(9, 5.4))
    ax.axhspan(*accuracy_ci, color="0.85", zorder=0, label="overall 95% CI")
    ax.axhline(accuracy, color="0.3", ls="--", lw=1, zorder=1, label=f"overall accuracy {accuracy:.1%}")
    weakest = min((c for c in classes if per_class[c]["accuracy"] is not None),
                  key=lambda c: per_class[c]["accuracy"], default=None)
    for x, name in enumerate(classes):
        row = per_class[name]
        if row["accuracy"] is None:
            ax.text(x, 0.02, "no test\ngalaxies", ha="center", va="bottom", fontsize=9, color="0.4")
            continue
        value, low, high = row["accuracy"], row["accuracy_ci95_low"], row["accuracy_ci95_high"]
        ax.bar(x, value, color=colours[name], edgecolor="black" if name == weakest else "none",
               linewidth=1.5, zorder=2, width=0.65)
        ax.errorbar(x, value, yerr=[[value - low], [high - value]], color="black", capsize=6, lw=1.2, zorder=3)
        ax.text(x, min(high + 0.02, 1.06), f"{value:.1%}\nn = {row['support']}", ha="center", va="bottom",
                fontsize=9)
    ax.set_xticks(range(len(classes)), classes)
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("accuracy (recall) on the test set")
    ax.set_xlabel("true class (outlined: weakest)")
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.legend(loc="lower right", fontsize=9, framealpha=0.9)
    save(fig, path, stamp, title)


def confidence_distribution(confidence: np.ndarray, correct: np.ndarray, n_classes: int, path: Path,
                            stamp: Stamp, title: str) -> None:
    """Histograms of the max class probability, correct vs wrong predictions."""
    frame = pd.DataFrame({"confidence": confidence,
                          "prediction": np.where(correct, f"correct (n = {int(correct.sum())})",
                                                 f"wrong (n = {int((~correct).sum())})")})
    order = sorted(frame["prediction"].unique(), key=lambda s: not s.startswith("correct"))
    palette = {name: CORRECT if name.startswith("correct") else WRONG for name in order}
    fig, ax = plt.subplots(figsize=(9, 5.2))
    sns.histplot(frame, x="confidence", hue="prediction", hue_order=order, palette=palette, ax=ax,
                 bins=np.linspace(1 / n_classes, 1, 25), element="step", alpha=0.35, stat="count")
    for name in order:
        median = frame.loc[frame["prediction"] == name, "confidence"].median()
        ax.axvline(median, color=palette[name], ls=":", lw=1.5)
        ax.text(median, ax.get_ylim()[1] * 0.97, f" median {median:.2f}", color=palette[name], va="top",
                ha="right" if name.startswith("wrong") else "left", fontsize=9)
    ax.set_xlabel("confidence = max class probability")
    ax.set_ylabel("test galaxies")
    ax.set_xlim(1 / n_classes - 0.02, 1.0)
    save(fig, path, stamp, title)


def residual_distribution(residual: np.ndarray, true_label: np.ndarray, classes: list[str], path: Path,
                          stamp: Stamp, title: str) -> None:
    """Per true class, the histogram of residual = 1 - p(true class): peaked at 0 when the model is sure and right."""
    colours = class_colours(classes)
    cols = min(len(classes), 4)
    rows = int(np.ceil(len(classes) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.6 * rows + 0.6), sharex=True, sharey=True,
                             squeeze=False)
    bins = np.linspace(0, 1, 21)
    for ax, name in zip(axes.flat, classes):
        values = residual[true_label == name]
        if len(values):
            ax.hist(values, bins=bins, weights=np.full(len(values), 100 / len(values)), color=colours[name],
                    edgecolor="white")
            median = float(np.median(values))
            ax.axvline(median, color="black", ls=":", lw=1.2)
            ax.text(0.97 if median < 0.5 else 0.03, 0.96,
                    f"n = {len(values)}\nmedian {median:.2f}\nresidual > 0.5: {np.mean(values > 0.5):.0%}",
                    transform=ax.transAxes, ha="right" if median < 0.5 else "left", va="top", fontsize=9,
                    bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"})
        else:
            ax.text(0.5, 0.5, "no test galaxies", transform=ax.transAxes, ha="center", color="0.4")
        ax.set_title(name)
        ax.set_xlim(0, 1)
        ax.set_xlabel("residual = 1 - p(true class)")
    for ax in axes[:, 0]:
        ax.set_ylabel("% of the class's galaxies")
    for ax in list(axes.flat)[len(classes):]:
        ax.set_visible(False)
    save(fig, path, stamp, title)


def top_galaxies(rows: pd.DataFrame, images: list[np.ndarray], probs: np.ndarray, classes: list[str], path: Path,
                 stamp: Stamp, title: str, k: int = 5) -> None:
    """Up to k galaxies: the image, its true (and predicted) class, and a bar of every class probability.

    `rows` holds id_str, true_label, pred_label, confidence; `probs` the rows' (len(rows), C) probabilities.
    """
    fig, axes = plt.subplots(2, k, figsize=(3.1 * k, 6.6), gridspec_kw={"height_ratios": [3, 1.7]}, squeeze=False)
    for col in range(k):
        image_ax, bar_ax = axes[0, col], axes[1, col]
        image_ax.set_xticks([])
        image_ax.set_yticks([])
        if col >= len(rows):
            image_ax.text(0.5, 0.5, "none" if col else "no such galaxies\nin the test set",
                          ha="center", va="center", color="0.4", transform=image_ax.transAxes)
            bar_ax.set_visible(False)
            continue
        row = rows.iloc[col]
        right = row["true_label"] == row["pred_label"]
        image_ax.imshow(images[col], cmap="gray" if images[col].ndim == 2 else None)
        label = (f"true: {row['true_label']}" if right else f"true: {row['true_label']}\npred: {row['pred_label']}")
        image_ax.set_title(f"#{col + 1} {row['id_str']}\n{label}", fontsize=9.5,
                           color="black" if right else WRONG)
        for spine in image_ax.spines.values():
            spine.set_edgecolor(CORRECT if right else WRONG)
            spine.set_linewidth(3)
        colours = ["0.7"] * len(classes)
        colours[classes.index(row["pred_label"])] = CORRECT if right else WRONG
        if not right:
            colours[classes.index(row["true_label"])] = CORRECT
        bar_ax.barh(range(len(classes)), probs[col], color=colours)
        for y, p in enumerate(probs[col]):
            inside = p > 0.75
            bar_ax.text(p - 0.02 if inside else p + 0.02, y, f"{p:.3f}", va="center", fontsize=8,
                        ha="right" if inside else "left", color="white" if inside else "black")
        bar_ax.set_xlim(0, 1)
        bar_ax.set_yticks(range(len(classes)), classes if col == 0 else [""] * len(classes), fontsize=8.5)
        bar_ax.invert_yaxis()
        bar_ax.set_xlabel("probability", fontsize=8.5)
        bar_ax.tick_params(axis="x", labelsize=8)
    save(fig, path, stamp, title)


def reliability_diagram(before: pd.DataFrame, after: pd.DataFrame, ece_before: float, ece_after: float,
                        temperature: float, path: Path, stamp: Stamp, title: str) -> None:
    """Accuracy vs mean confidence per confidence bin, as predicted and after temperature scaling (the diagonal
    is perfect calibration); the galaxies per bin below."""
    fig, (ax, count_ax) = plt.subplots(2, 1, figsize=(7.6, 7.6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    width = float(before["bin_high"].iloc[0] - before["bin_low"].iloc[0])
    centres = (before["bin_low"] + before["bin_high"]) / 2
    ax.plot([0, 1], [0, 1], ls="--", color="0.4", lw=1, label="perfect calibration")
    series = ((before, f"as predicted (ECE {ece_before:.3f})", "#4c72b0", -0.22),
              (after, f"temperature T = {temperature:.2f} (ECE {ece_after:.3f})", "#dd8452", 0.22))
    for bins, label, colour, shift in series:
        used = bins["count"] > 0
        ax.bar(centres[used] + shift * width, bins.loc[used, "accuracy"], width=width * 0.42, color=colour,
               alpha=0.9, label=f"accuracy in bin, {label}")
        ax.plot(centres[used] + shift * width, bins.loc[used, "confidence"], "_", color="black", ms=8, mew=2)
        count_ax.bar(centres + shift * width, bins["count"], width=width * 0.42, color=colour)
    ax.plot([], [], "_", color="black", ms=8, mew=2, label="mean confidence in bin")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"test set, {len(before)} bins; T fitted on the validation set", fontsize=10)
    ax.legend(loc="upper left", fontsize=8.5)
    count_ax.set_ylabel("galaxies")
    count_ax.set_xlabel("confidence = max class probability")
    save(fig, path, stamp, title)


def embedding_map(points: pd.DataFrame, classes: list[str], method: str, path: Path, stamp: Stamp,
                  title: str) -> None:
    """The test set in 2-D (columns x, y, true_label, correct): colour = true class, a red cross = a mistake."""
    colours = class_colours(classes)
    fig, ax = plt.subplots(figsize=(8.6, 7.4))
    for name in classes:
        rows = points[points["true_label"] == name]
        ax.scatter(rows["x"], rows["y"], s=14, color=colours[name], alpha=0.75, linewidths=0,
                   label=f"{name} (n = {len(rows)})")
    wrong = points[~points["correct"].astype(bool)]
    ax.scatter(wrong["x"], wrong["y"], s=46, marker="x", color=WRONG, linewidths=1.4,
               label=f"misclassified (n = {len(wrong)})")
    ax.set_xlabel(f"{method} 1")
    ax.set_ylabel(f"{method} 2")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=8.5, loc="best", framealpha=0.9, title="true class", title_fontsize=9)
    save(fig, path, stamp, title)


def training_curves(curves: dict[str, dict[str, pd.DataFrame]], path: Path, stamp: Stamp, title: str) -> None:
    """One panel per logged metric (loss, acc, ...), one line per series (train, val), against the step.

    `curves[metric][series]` is a frame with columns step and value; the best (lowest) validation loss
    is marked: that checkpoint is the model that was evaluated.
    """
    metrics = sorted(curves, key=lambda m: (m != "loss", m))
    fig, axes = plt.subplots(1, max(len(metrics), 1), figsize=(6.2 * max(len(metrics), 1), 4.8), squeeze=False)
    if not metrics:
        axes[0, 0].text(0.5, 0.5, "no training curves logged (metrics/training/plots/metrics)", ha="center",
                        va="center", transform=axes[0, 0].transAxes, color="0.4")
        axes[0, 0].set_axis_off()
    for ax, metric in zip(axes[0], metrics):
        for series, frame in sorted(curves[metric].items()):
            ax.plot(frame["step"], frame["value"], marker="o", ms=3, label=series)
            if metric == "loss" and "val" in series and len(frame):
                best = frame.loc[frame["value"].idxmin()]
                ax.plot(best["step"], best["value"], "*", ms=14, color="gold", mec="black", zorder=5,
                        label=f"best {series} ({best['value']:.3f}): the exported checkpoint")
        ax.set_xlabel("training step")
        ax.set_ylabel(METRIC_NAMES.get(metric, metric))
        ax.set_title(METRIC_NAMES.get(metric, metric))
        ax.legend(fontsize=8.5)
        ax.grid(alpha=0.3)
    save(fig, path, stamp, title)


# ---- the registry: every PNG analyse writes, its title (in the PNG and the report), and how it is drawn ----

@dataclass(frozen=True)
class FigureData:
    """Everything the figures show, already read and computed by analyse (test set unless named)."""

    classes: list[str]
    table: pd.DataFrame              # test predictions (id_str, true_label, pred_label, ...)
    probs: np.ndarray                # (N, C) validated test probabilities
    residual: np.ndarray             # 1 - p(true class), per test galaxy
    metrics: dict                    # compute_metrics' result (confusion, per_class, accuracy ...)
    confusion: np.ndarray            # (C, C) counts, true x predicted
    reliability_before: pd.DataFrame
    reliability_after: pd.DataFrame
    calibration: dict                # temperature_scaling's result
    top_correct: pd.DataFrame        # most_confident rows (with _row) and their images
    top_correct_images: list
    top_errors: pd.DataFrame
    top_errors_images: list
    curves: dict
    map_points: pd.DataFrame         # x, y, true_label, correct
    map_method: str
    unusual: pd.DataFrame            # the most unusual test galaxies (id_str, true_label, pred_label, anomaly_score)
    unusual_images: list = field(default_factory=list)


@dataclass(frozen=True)
class Figure:
    file: str
    title: str
    draw: Callable[[FigureData, Path, Stamp, str], None]


TOP_K = 5
GALLERY = 16  # unusual galaxies shown


def _top(d: FigureData, rows: pd.DataFrame, images: list, path: Path, stamp: Stamp, title: str) -> None:
    top_galaxies(rows, images, d.probs[rows["_row"].to_numpy()], d.classes, path, stamp, title, TOP_K)


def _unusual(d: FigureData, path: Path, stamp: Stamp, title: str) -> None:
    captions = [f"#{rank} {row.id_str} (score {row.anomaly_score:.3f})\n" + (
        row.true_label if row.true_label == row.pred_label else f"{row.true_label} -> {row.pred_label}")
        for rank, row in enumerate(d.unusual.itertuples(), start=1)]
    edges = [CORRECT if row.true_label == row.pred_label else WRONG for row in d.unusual.itertuples()]
    galaxy_grid(d.unusual_images, captions, edges, path, stamp, title)


FIGURES: tuple[Figure, ...] = (  # the reference write-up's order, then the additions
    Figure("confusion_matrix.png", "Test-set confusion matrix (counts and row-normalised)",
           lambda d, p, s, t: confusion_matrix(d.confusion, d.classes, d.metrics["accuracy"], p, s, t)),
    Figure("per_class_accuracy.png", "Per-class accuracy with 95% bootstrap intervals",
           lambda d, p, s, t: per_class_accuracy(d.metrics["per_class"], d.classes, d.metrics["accuracy"],
                                                 (d.metrics["accuracy_ci95_low"], d.metrics["accuracy_ci95_high"]),
                                                 p, s, t)),
    Figure("confidence_distribution.png", "Confidence of correct vs wrong predictions",
           lambda d, p, s, t: confidence_distribution(d.probs.max(1), (d.table["true_label"] == d.table["pred_label"])
                                                      .to_numpy(), len(d.classes), p, s, t)),
    Figure("residual_distribution.png", "Residual distribution by true galaxy class",
           lambda d, p, s, t: residual_distribution(d.residual, d.table["true_label"].to_numpy(), d.classes, p, s, t)),
    Figure("top_5_predictions.png", f"The {TOP_K} most confident correct predictions",
           lambda d, p, s, t: _top(d, d.top_correct, d.top_correct_images, p, s, t)),
    Figure("top_5_errors.png", f"The {TOP_K} most confident mistakes",
           lambda d, p, s, t: _top(d, d.top_errors, d.top_errors_images, p, s, t)),
    Figure("reliability_diagram.png", "Reliability diagram, before and after temperature scaling",
           lambda d, p, s, t: reliability_diagram(d.reliability_before, d.reliability_after,
                                                  d.calibration["test"]["ece_before"],
                                                  d.calibration["test"]["ece_after"],
                                                  d.calibration["temperature"], p, s, t)),
    Figure("training_curves.png", "Training curves (dvclive)",
           lambda d, p, s, t: training_curves(d.curves, p, s, t)),
    Figure("embedding_map.png", "Map of the test set's encoder features, mistakes marked",
           lambda d, p, s, t: embedding_map(d.map_points, d.classes, d.map_method, p, s, t)),
    Figure("unusual_galaxies.png", f"The {GALLERY} most unusual test galaxies (red frame: misclassified)",
           _unusual),
)
