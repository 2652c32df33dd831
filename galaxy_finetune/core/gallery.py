"""What every picture of galaxies shares, whichever stage draws it: the provenance stamp and the one atomic PNG
writer of figures (`save`), a captioned grid of galaxies, and a galaxy's thumbnail for HTML pages.

analysis/figures.py draws analyse's figures with these; galaxy-similar and galaxy-label-next draw their grids,
and the errors pages their thumbnails.
"""
from __future__ import annotations

import io
import textwrap
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from galaxy_finetune.core.files import atomic_path  # noqa: E402

CORRECT, WRONG = "#2b8a3e", "#c92a2a"
FOOTER_GREY = "0.35"
DPI = 100
THUMBNAIL = 96  # pixels per side


@dataclass(frozen=True)
class Stamp:
    """What every figure carries: the run label in its title, the provenance line in its footer.

    `warn`: not the real run (no pretrained encoder, or substituted data), so the footer is red.
    """

    label: str
    footer: str
    warn: bool

    def title(self, text: str) -> str:
        return f"{text}  [{self.label}]"


def save(fig, path: Path, stamp: Stamp | None, title: str) -> None:
    """Title (with the run label on a second line), footer and PNG metadata, then an atomic write."""
    if stamp is None:
        fig.suptitle(title, fontsize=13)
        fig.tight_layout()
    else:
        lines = [title, *textwrap.wrap(stamp.label, int(fig.get_figwidth() * 11))]  # the run label fits the width
        fig.suptitle("\n".join(lines), fontsize=12)
        colour = WRONG if stamp.warn else FOOTER_GREY  # a stand-in run's figure must not pass for the real one
        fig.text(0.5, 0.008, stamp.footer, ha="center", va="bottom", fontsize=7.5, color=colour, wrap=True)
        fig.tight_layout(rect=(0, 0.045, 1, 1 - 0.1 * len(lines) / fig.get_figheight()))
    metadata = {"Title": title if stamp is None else stamp.title(title)}
    if stamp is not None:
        metadata["Description"] = stamp.footer
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png", metadata=metadata)
    plt.close(fig)


def galaxy_grid(images: list[np.ndarray], captions: list[str], edges: list[str], path: Path, stamp: Stamp | None,
                title: str, cols: int = 4) -> None:
    """Images in a grid, each with a caption (two lines at most) and a coloured frame."""
    rows = max(1, int(np.ceil(len(images) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 3.3 * rows + 1.0), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= len(images):
            ax.set_axis_off()
            if not images and i == 0:
                ax.text(0.5, 0.5, "no galaxies", ha="center", va="center", color="0.4", transform=ax.transAxes)
            continue
        ax.imshow(images[i], cmap="gray" if images[i].ndim == 2 else None)
        ax.set_title(captions[i], fontsize=8.5)
        for spine in ax.spines.values():
            spine.set_edgecolor(edges[i])
            spine.set_linewidth(3)
    save(fig, path, stamp, title)


def thumbnail_png(pixels: np.ndarray, size: int = THUMBNAIL) -> bytes:
    """A size x size PNG of one galaxy's (H, W, 3) uint8 pixels."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).resize((size, size), Image.BILINEAR).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
