"""analyse's figures (matplotlib/seaborn); each carries the provenance line in its footer."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from galaxy_finetune.files import atomic_path  # noqa: E402


def save(fig, path: Path, footer: str) -> None:
    fig.text(0.5, 0.005, footer, ha="center", va="bottom", fontsize=7, color="0.35", wrap=True)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def confusion_matrix(metrics: dict, classes: list[str], path: Path, footer: str, title: str) -> None:
    """Counts and row-normalised (recall) confusion side by side."""
    counts = np.array([[metrics["confusion"][t][p] for p in classes] for t in classes])
    rows = counts.sum(1, keepdims=True)
    normalised = np.divide(counts, rows, out=np.zeros(counts.shape, dtype=float), where=rows > 0)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2))
    for ax, data, fmt, label in ((axes[0], counts, "d", "count"), (axes[1], normalised, ".2f", "fraction of true class")):
        sns.heatmap(data, annot=True, fmt=fmt, cmap="Blues", xticklabels=classes, yticklabels=classes, ax=ax,
                    cbar_kws={"label": label}, square=True)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.tick_params(axis="x", rotation=30)
        ax.tick_params(axis="y", rotation=0)
    axes[0].set_title("counts")
    axes[1].set_title("row-normalised (recall)")
    fig.suptitle(title)
    save(fig, path, footer)
