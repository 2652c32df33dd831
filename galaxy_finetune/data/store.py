"""The image store: every galaxy decoded once, at one resolution, into one memory-mapped file.

data/store/images.npy is an (N, S, S, 3) uint8 array in numpy's .npy format; row i holds the galaxy of
row i of data/raw/catalog.csv. Training, predict and the analysis read it by row through a read-only
memory map, so a process holds only the rows of its current batch: the operating system's page cache
keeps the hot part of the file, and memory stays flat however many galaxies the catalog has.
data/store/store.json records the size, the count, a sha256 of the pixels and the blank images;
data/store/row_hashes.npy a 16-byte hash of each row (identical images have equal hashes: the split stage keeps
them in one split).
"""
from __future__ import annotations

import hashlib
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from galaxy_finetune.core.errors import PipelineError
from galaxy_finetune.core.files import atomic_path, read_json, require, write_json
from galaxy_finetune.core.layout import STORE_IMAGES, STORE_RECORD, STORE_ROW_HASHES
from galaxy_finetune.core.params import FitsView
from galaxy_finetune.data.images import decode_image

CHUNK = 256  # galaxies decoded per step: bounds the memory of a build to CHUNK decoded images
HASH_BYTES = 16  # blake2b digest of each stored row (row_hashes.npy)


def row_hashes(chunk: np.ndarray) -> np.ndarray:
    """(B, 16) uint8 blake2b digests of each row (image) of a (B, ...) uint8 array: equal images, equal rows."""
    return np.frombuffer(b"".join(hashlib.blake2b(np.ascontiguousarray(row).tobytes(), digest_size=HASH_BYTES).digest()
                                  for row in chunk), dtype=np.uint8).reshape(len(chunk), HASH_BYTES)


def stored_size(requested: int | str, input_size: int, first_image: str | Path, fits: FitsView = FitsView()) -> int:
    """The side of the stored images: `requested`, or for 'auto' the training input size, capped at the
    first source image's own size (never upsample to store: the view upsamples on the fly if needed)."""
    if requested != "auto":
        return int(requested)
    height, width = decode_image(first_image, fits=fits).shape[:2]
    return min(input_size, max(height, width))


def build_store(catalog: pd.DataFrame, out_dir: Path, size: int, threads: int = 0, fits: FitsView = FitsView()) -> dict:
    """Decode every catalog row's `src` image to size x size into out_dir/images.npy; return the record.

    `fits`: how FITS cutouts become RGB (band order, asinh stretch); other formats ignore it.
    Writes into a temporary sibling renamed into place at the end: a killed build leaves no store behind.
    """
    threads = threads or min(8, os.cpu_count() or 1)
    n = len(catalog)
    sources = catalog["src"].tolist()
    ids = catalog["id_str"].tolist()
    digest, constant = hashlib.sha256(), []

    def decode(row: int) -> np.ndarray:
        try:
            return decode_image(sources[row], size, fits=fits)
        except PipelineError as exc:
            raise PipelineError(f"catalog row {row} (id {ids[row]!r}): {exc}; fix or remove the file, then rerun") from None

    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        images = np.lib.format.open_memmap(tmp / STORE_IMAGES, mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
        hashes = np.zeros((n, HASH_BYTES), dtype=np.uint8)
        with ThreadPoolExecutor(threads) as pool:  # PIL decodes and resizes with the GIL released
            for start in range(0, n, CHUNK):
                rows = range(start, min(start + CHUNK, n))
                chunk = np.stack(list(pool.map(decode, rows)))
                images[start:start + len(chunk)] = chunk
                digest.update(chunk.tobytes())
                hashes[start:start + len(chunk)] = row_hashes(chunk)  # the chunk is in memory already
                flat = chunk.reshape(len(chunk), -1)
                constant += [ids[start + i] for i in np.flatnonzero(flat.min(1) == flat.max(1))]
                if n > 10 * CHUNK and (start // CHUNK) % 40 == 0:
                    print(f"store: {start + len(chunk)}/{n} galaxies decoded", file=sys.stderr, flush=True)
        images.flush()
        del images
        np.save(tmp / STORE_ROW_HASHES, hashes)
        record = {"n_images": n, "image_size": size, "dtype": "uint8", "layout": "NHWC",
                  "fits_view": {"bands": list(fits.bands), "stretch": fits.stretch, "q": fits.q},
                  "pixels_sha256": digest.hexdigest(), "constant_images": constant}
        write_json(tmp / STORE_RECORD, record)
    if constant:
        print(f"warning: {len(constant)} image(s) have one value everywhere (blank cutouts?), e.g. "
              f"{', '.join(map(str, constant[:5]))}; kept, and listed in {out_dir / STORE_RECORD}", file=sys.stderr)
    return record


def open_images(store_dir: str | Path) -> np.ndarray:
    """The stored images as a read-only (N, S, S, 3) uint8 memory map (nothing is read until indexed)."""
    return np.load(require(Path(store_dir) / STORE_IMAGES, "store"), mmap_mode="r")


def read_rows(images: np.ndarray, rows: Sequence[int], where: str | Path) -> np.ndarray:
    """A copy of rows `rows` of an image array (the store's memory map, or one in memory), in the order asked
    and read front to back; a row the array lacks is a one-line error naming `where`. The one reader of store
    rows: training and predict batches, and the galaxies analyse, embed and galaxy-similar show."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) and (rows.min() < 0 or rows.max() >= len(images)):
        raise PipelineError(f"{where}: no row {rows.max() if rows.max() >= len(images) else rows.min()} in a store "
                            f"of {len(images)} galaxies; the store and the splits come from different runs "
                            f"(rerun dvc repro)")
    order = np.argsort(rows, kind="stable")
    pixels = np.empty((len(rows), *images.shape[1:]), dtype=images.dtype)
    pixels[order] = images[rows[order]]
    return pixels


def galaxy_pixels(store_dir: str | Path, rows: Sequence[int]) -> np.ndarray:
    """(len(rows), S, S, 3) uint8 pixels of the galaxies at store rows `rows` (a copy, in the order asked)."""
    return read_rows(open_images(store_dir), rows, store_dir)


def read_row_hashes(store_dir: str | Path) -> np.ndarray | None:
    """(N, 16) uint8 hashes of the stored rows, or None for a store built before they were written."""
    path = Path(store_dir) / STORE_ROW_HASHES
    return np.load(path) if path.is_file() else None


def read_record(store_dir: str | Path) -> dict:
    return read_json(require(Path(store_dir) / STORE_RECORD, "store"))
