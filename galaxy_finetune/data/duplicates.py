"""Duplicate galaxies: identical pixels in the store (exact), and near copies in encoder features (near).

Exact: the store stage hashes every decoded row (blake2b, 16 bytes) while the chunk is in memory, into
data/store/row_hashes.npy; the split stage groups rows with equal hashes and keeps each group in one split, so a
galaxy copied under a second id never sits in train and test at once. Near: pairs of galaxies whose encoder
features have cosine similarity at or above a threshold MEASURED on the run's own galaxies: a sample of them is
copied three ways a catalog's near copies arise (re-encoded as JPEG, shifted by about 1% of the side, 10%
brighter), and the threshold is the cosine that 98% of those copies reach with their originals. When more than
2% of the galaxies then have a neighbour that close, the features cannot tell galaxies apart from copies and the
stage says so instead of listing pairs. Pairs are reported (a warning and a CSV), nothing is moved.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from galaxy_finetune.core.neighbours import unit_rows

SHOWN = 5  # groups named in one warning line; the rest are counted (all are in the CSV)


def exact_groups(hashes: np.ndarray) -> np.ndarray:
    """For each row, the first row with the same hash (its group's representative; itself when unique)."""
    hashes = np.ascontiguousarray(hashes, dtype=np.uint8)
    keys = hashes.view(f"V{hashes.shape[1]}").ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return first[inverse.ravel()]


def pairs_frame(catalog: pd.DataFrame, group: np.ndarray, where: dict[int, str]) -> pd.DataFrame:
    """One row per duplicate (id_a: the group's first galaxy, id_b: another), with their catalog split marks and
    the split both landed in."""
    rows = []
    for b in np.flatnonzero(group != np.arange(len(group))):
        a = int(group[b])
        rows.append({"id_a": catalog["id_str"].iat[a], "id_b": catalog["id_str"].iat[b], "kind": "identical pixels",
                     "label_a": catalog["label_name"].iat[a], "label_b": catalog["label_name"].iat[b],
                     "marked_a": catalog["split"].iat[a] if "split" in catalog else "",
                     "marked_b": catalog["split"].iat[b] if "split" in catalog else "",
                     "split": where.get(a, ""), "similarity": 1.0})
    return pd.DataFrame(rows, columns=["id_a", "id_b", "kind", "label_a", "label_b", "marked_a", "marked_b", "split",
                                       "similarity"])


def exact_warning(pairs: pd.DataFrame, csv_path) -> str | None:
    """One line naming the duplicate ids and where they went, or None when there are none."""
    if not len(pairs):
        return None
    described = []
    for p in pairs.head(SHOWN).itertuples():
        marks = f"; the catalog marked them {p.marked_a or 'unmarked'}/{p.marked_b or 'unmarked'}" if (
            p.marked_a != p.marked_b) else ""
        labels = f", labels {p.label_a}/{p.label_b} disagree" if p.label_a != p.label_b else ""
        described.append(f"{p.id_a!r} and {p.id_b!r} (both in {p.split}{marks}{labels})")
    more = f"; {len(pairs) - SHOWN} more" if len(pairs) > SHOWN else ""
    return (f"{len(pairs)} galax{'y is a copy' if len(pairs) == 1 else 'ies are copies'} of another with identical "
            f"pixels: {'; '.join(described)}{more}; each group is kept in one split so none leaks into test; "
            f"listed in {csv_path}")


def near_pairs(features: np.ndarray, threshold: float, batch: int = 2048) -> pd.DataFrame:
    """(i, j, similarity) of row pairs i < j whose cosine similarity is >= threshold, most similar first (memory
    bounded by batch x N)."""
    unit = unit_rows(features)
    found = []
    for start in range(0, len(unit), batch):
        sim = unit[start:start + batch] @ unit.T
        i, j = np.nonzero(sim >= threshold)
        i = i + start
        keep = j > i
        found.append(np.stack([i[keep], j[keep], sim[i[keep] - start, j[keep]]], axis=1))
    pairs = np.concatenate(found) if found else np.zeros((0, 3))
    frame = pd.DataFrame({"i": pairs[:, 0].astype(int), "j": pairs[:, 1].astype(int),
                          "similarity": np.round(pairs[:, 2], 5)})
    return frame.sort_values(["similarity", "i", "j"], ascending=[False, True, True], kind="stable").reset_index(
        drop=True)


def near_warning(pairs: pd.DataFrame, threshold: float, csv_path) -> str | None:
    """One line for near-identical pairs (`pairs`: id_a, split_a, id_b, split_b, similarity), or None."""
    if not len(pairs):
        return None
    named = "; ".join(f"{p.id_a!r} ({p.split_a}) and {p.id_b!r} ({p.split_b}), cosine {p.similarity:.4f}"
                      for p in pairs.head(SHOWN).itertuples())
    across = int((pairs["split_a"] != pairs["split_b"]).sum())
    more = f"; {len(pairs) - SHOWN} more" if len(pairs) > SHOWN else ""
    return (f"{len(pairs)} pair(s) of galaxies look near-identical (encoder cosine >= {threshold}), {across} across "
            f"splits: {named}{more}; check them for re-encoded copies; listed in {csv_path}")


COPY_QUANTILE = 0.02  # the threshold: the cosine 98% of the measured copies reach with their originals
MAX_NEAR_SHARE = 0.02  # more galaxies than this with a neighbour above the threshold: features cannot judge


def near_copies(pixels: np.ndarray) -> dict[str, np.ndarray]:
    """Near copies of (B, S, S, 3) uint8 galaxies, as a catalog's copies arise: re-encoded (JPEG quality 90),
    shifted by about 1% of the side (at least a pixel), and 10% brighter."""
    import io

    from PIL import Image

    def jpeg(image):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=90)
        return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))

    shift = max(1, round(pixels.shape[1] / 100))
    return {"jpeg_q90": np.stack([jpeg(p) for p in pixels]),
            f"shift_{shift}px": np.roll(pixels, shift, axis=2),
            "brightness_1.1": np.clip(pixels.astype(np.float32) * 1.1, 0, 255).astype(np.uint8)}


def nearest_neighbour_cosine(features: np.ndarray, batch: int = 2048) -> np.ndarray:
    """Each row's largest cosine similarity to another row (memory bounded by batch x N)."""
    unit = unit_rows(features)
    out = np.empty(len(unit), np.float32)
    for start in range(0, len(unit), batch):
        sim = unit[start:start + batch] @ unit.T
        sim[np.arange(len(sim)), np.arange(start, start + len(sim))] = -np.inf
        out[start:start + batch] = sim.max(1)
    return out


def calibrate_near(copy_cosines: dict[str, np.ndarray], neighbour_cosines: np.ndarray, features: str,
                   fixed: float | None = None) -> dict:
    """The near-duplicate threshold and what it stands on: the cosine COPY_QUANTILE of the copies fall below (or
    `fixed`, labels.near_duplicate_cosine set by hand), the share of galaxies with a neighbour at least that close,
    and whether the features can judge near copies at all (`threshold` None, with `why`, when they cannot)."""
    pooled = np.concatenate(list(copy_cosines.values()))
    measured = float(np.quantile(pooled, COPY_QUANTILE))
    threshold = measured if fixed is None else float(fixed)
    share = float(np.mean(neighbour_cosines >= threshold))
    record = {"features": features, "threshold": round(threshold, 4), "measured_threshold": round(measured, 4),
              "set_by_hand": fixed is not None, "copies": int(len(pooled)),
              "copies_found": {k: round(float(np.mean(v >= threshold)), 3) for k, v in copy_cosines.items()},
              "copy_cosine_median": {k: round(float(np.median(v)), 4) for k, v in copy_cosines.items()},
              "galaxies_with_a_neighbour_that_close": round(share, 4),
              "neighbour_cosine_p99": round(float(np.quantile(neighbour_cosines, 0.99)), 4), "why": None}
    if fixed is None and share > MAX_NEAR_SHARE:
        record.update(threshold=None, why=(
            f"near duplicates cannot be judged on {features}: {share:.0%} of the galaxies have a neighbour as close "
            f"as 98% of their own near copies (cosine {measured:.4f}), so copies and distinct galaxies look alike"))
    return record
