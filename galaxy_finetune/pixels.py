"""The pixels of catalog galaxies, by id: the one way analyse, embed and galaxy-similar read them.

Today the pixels come from the image files that data/raw/catalog.csv names in its `file` column; when the
memory-mapped store lands, only `galaxy_pixels` changes.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from galaxy_finetune.errors import PipelineError
from galaxy_finetune.images import decode_image
from galaxy_finetune.layout import CATALOG


@functools.lru_cache(maxsize=4)
def _catalog_files(catalog: Path, mtime_ns: int) -> pd.Series:
    return pd.read_csv(catalog, dtype={"id_str": str}, usecols=["id_str", "file"]).set_index("id_str")["file"]


def galaxy_pixels(raw_dir: str | Path, ids: Sequence[str]) -> np.ndarray:
    """(len(ids), S, S, 3) uint8 pixels of the catalog galaxies `ids` (all resized to the first one's size)."""
    catalog = Path(raw_dir) / CATALOG
    if not catalog.is_file():
        raise PipelineError(f"{catalog}: not found; run the fetch_data stage first")
    files = _catalog_files(catalog, catalog.stat().st_mtime_ns)
    missing = [galaxy for galaxy in ids if galaxy not in files.index]
    if missing:
        raise PipelineError(f"{catalog}: no galaxy {missing[0]!r} ({len(missing)} missing); the inputs come from "
                            f"different runs (rerun dvc repro)")
    if not len(ids):
        return np.zeros((0, 1, 1, 3), dtype=np.uint8)
    first = decode_image(Path(raw_dir) / files[ids[0]])
    size = max(first.shape[:2])
    images = [first if first.shape[:2] == (size, size) else decode_image(Path(raw_dir) / files[ids[0]], size)]
    images += [decode_image(Path(raw_dir) / files[galaxy], size) for galaxy in ids[1:]]
    return np.stack(images)
