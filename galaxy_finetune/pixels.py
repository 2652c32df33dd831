"""The pixels of catalog galaxies, by store row: the one way analyse, embed and galaxy-similar read them."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from galaxy_finetune.errors import PipelineError
from galaxy_finetune.store import open_images


def galaxy_pixels(store_dir: str | Path, rows: Sequence[int]) -> np.ndarray:
    """(len(rows), S, S, 3) uint8 pixels of the galaxies at store rows `rows` (a copy, in the order asked)."""
    images = open_images(store_dir)
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) and (rows.min() < 0 or rows.max() >= len(images)):
        raise PipelineError(f"{store_dir}: no row {rows.max() if rows.max() >= len(images) else rows.min()} in a store "
                            f"of {len(images)} galaxies; the store and the splits come from different runs "
                            f"(rerun dvc repro)")
    order = np.argsort(rows, kind="stable")  # read the memory map front to back
    pixels = np.empty((len(rows), *images.shape[1:]), dtype=np.uint8)
    pixels[order] = images[rows[order]]
    return pixels
