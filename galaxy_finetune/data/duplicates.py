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

from typing import Callable

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
    """One line for near copies (`pairs`: id_a, split_a, id_b, split_b, similarity, proof), or None."""
    if not len(pairs):
        return None
    named = "; ".join(f"{p.id_a!r} ({p.split_a}) and {p.id_b!r} ({p.split_b}), cosine {p.similarity:.4f}, pixels "
                      f"{p.proof:.2f}" for p in pairs.head(SHOWN).itertuples())
    across = int((pairs["split_a"] != pairs["split_b"]).sum())
    more = f"; {len(pairs) - SHOWN} more" if len(pairs) > SHOWN else ""
    return (f"{len(pairs)} pair(s) of galaxies are near copies (encoder cosine >= {threshold} proposed them, their "
            f"stored pixels match: correlation >= {PROOF_MIN} after alignment), {across} across splits (a leak): "
            f"{named}{more}; check them; listed in {csv_path}")


# --- near copies: features propose, the stored pixels prove -------------------------------------------------------
CANDIDATE_QUANTILE = 0.01  # candidates: pairs at a cosine at least 99% of the measured copies reach
CANDIDATES_PER_GALAXY = 3  # and among each galaxy's most similar few (bounds the proofs to 3 per galaxy)
PROOF_SIDE = 128  # the proof compares pixels at most this many a side (a larger store is averaged down)
PROOF_SHIFT = 0.03  # shifts up to this share of the side are searched (and at least PROOF_SHIFT_PX pixels)
PROOF_SHIFT_PX = 3
PROOF_ZOOM = 0.06  # zooms up to this share (in steps of PROOF_ZOOM / 4) are searched
PROOF_MIN = 0.6  # a candidate is a copy when its pixels' fine-scale correlation reaches this
COPIES_MUST_PASS = 0.9  # calibration: each kind of synthetic copy, at least this share passes the proof
LOOK_ALIKES_MAY_PASS = 0.02  # calibration: pairs distinct by construction, at most this share passes
PROOF_SAMPLE = 60  # galaxies copied and mirrored to calibrate the proof


def near_copies(pixels: np.ndarray) -> dict[str, np.ndarray]:
    """Near copies of (B, S, S, 3) uint8 galaxies, as a catalog's copies arise: re-encoded (JPEG quality 90),
    shifted by about 1% of the side (at least a pixel), 10% brighter, and re-cut 4% tighter (the central 96% of the
    field resized back to S: a cut-out requested at a slightly different zoom)."""
    import io

    from PIL import Image

    def jpeg(image):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=90)
        return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))

    side = pixels.shape[1]
    shift = max(1, round(side / 100))
    cut = max(1, round(side * 0.02))

    def recut(image):
        return np.asarray(Image.fromarray(image[cut:side - cut, cut:side - cut]).resize((side, side), Image.BILINEAR))

    return {"jpeg_q90": np.stack([jpeg(p) for p in pixels]),
            f"shift_{shift}px": np.roll(pixels, shift, axis=2),
            "brightness_1.1": np.clip(pixels.astype(np.float32) * 1.1, 0, 255).astype(np.uint8),
            "zoom_recut_4pct": np.stack([recut(p) for p in pixels])}


def look_alikes(pixels: np.ndarray) -> dict[str, np.ndarray]:
    """Galaxies distinct from (B, S, S, 3) `pixels` by construction, yet as alike as two galaxies get: each one
    mirrored, and turned half a turn (the same light profile, size, colour and brightness; other pixels). No copy
    in a catalog can make these pass the proof."""
    return {"mirrored": np.ascontiguousarray(pixels[:, :, ::-1]),
            "rotated_180": np.ascontiguousarray(pixels[:, ::-1, ::-1])}


def _grey(images: np.ndarray) -> np.ndarray:
    """(B, S, S, 3) images as (B, S, S) float32 channel means, averaged down to at most PROOF_SIDE a side."""
    from PIL import Image

    grey = np.asarray(images, dtype=np.float32).mean(-1)
    if grey.shape[1] > PROOF_SIDE:
        grey = np.stack([np.asarray(Image.fromarray(g, mode="F").resize((PROOF_SIDE, PROOF_SIDE), Image.BOX))
                         for g in grey])
    return grey


def _fine(grey: np.ndarray) -> np.ndarray:
    """The fine-scale part of each (B, S, S) image (its 0.5-px Gaussian blur minus its 1.5-px one: noise and small
    structure, without the finest grain a JPEG re-encoding drops), in units of its median absolute deviation and
    clipped at 3, so the bright core weighs no more than the sky around it."""
    from scipy.ndimage import gaussian_filter

    fine = gaussian_filter(grey, (0, 0.5, 0.5)) - gaussian_filter(grey, (0, 1.5, 1.5))  # sigma 0: images apart
    centre = np.median(fine, axis=(1, 2), keepdims=True)
    spread = 1.4826 * np.median(np.abs(fine - centre), axis=(1, 2), keepdims=True)
    return np.clip(fine / np.maximum(spread, 1e-3), -3.0, 3.0)


def _zoomed(grey: np.ndarray, scale: float) -> np.ndarray:
    """Each (B, S, S) image magnified by `scale` about its centre (bilinear; the edge repeats)."""
    from scipy.ndimage import affine_transform

    centre = (grey.shape[1] - 1) / 2
    return affine_transform(grey, np.array([1.0, 1 / scale, 1 / scale]),
                            offset=(0.0, centre - centre / scale, centre - centre / scale), order=1, mode="nearest")


def copy_score(a: np.ndarray, b: np.ndarray) -> float:
    """How surely galaxy image `b` is a copy of `a` ((S, S, 3) uint8 each): copy_score_pairs of one pair."""
    return float(copy_score_pairs(a[None], b[None])[0])


def copy_score_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How surely each galaxy image in `b` is a copy of the one beside it in `a` ((B, S, S, 3) uint8 each): the
    largest normalised cross-correlation of their fine-scale pixels (noise, small structure) over shifts up to
    PROOF_SHIFT of the side (at least PROOF_SHIFT_PX pixels) and zooms up to PROOF_ZOOM. A re-encoded, shifted,
    brightened or re-cut copy keeps its original's noise (measured at a 128-px store: 0.77 and above for copies of
    real GZ2 and DECaLS cut-outs made in the store, below 0.25 for a galaxy against its own mirror image or half
    turn; docs/label-budget.md). The pairs are scored together, one array operation per zoom for all of them."""
    from numpy.lib.stride_tricks import sliding_window_view

    ga, gb = _grey(a), _grey(b)
    n = ga.shape[1]
    shift = max(PROOF_SHIFT_PX, round(n * PROOF_SHIFT))
    margin = shift + int(np.ceil(n * PROOF_ZOOM / 2)) + 1
    if n - 2 * margin < 8:
        margin = shift = max(0, (n - 8) // 2)
    template = _fine(ga)[:, margin:n - margin, margin:n - margin]
    template = template - template.mean(axis=(1, 2), keepdims=True)
    template /= np.maximum(np.sqrt((template ** 2).sum(axis=(1, 2), keepdims=True)), 1e-9)
    k = template.shape[1]
    best = np.full(len(ga), -1.0)
    steps = np.linspace(-PROOF_ZOOM, PROOF_ZOOM, 9)
    for step in steps[np.argsort(np.abs(steps), kind="stable")]:
        fine = _fine(_zoomed(gb, 1 + step) if step else gb)
        window = fine[:, margin - shift:n - margin + shift, margin - shift:n - margin + shift]
        views = sliding_window_view(window, (k, k), axis=(1, 2))
        product = np.einsum("bijkl,bkl->bij", views, template)
        total = np.einsum("bijkl->bij", views)
        squares = np.einsum("bijkl->bij", sliding_window_view(window ** 2, (k, k), axis=(1, 2)))
        spread = np.sqrt(np.maximum(squares - total ** 2 / (k * k), 1e-9))
        best = np.maximum(best, (product / spread).max(axis=(1, 2)))
    return best


def copy_scores(read: Callable[[np.ndarray], np.ndarray], pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """copy_score of each (i, j) row of `pairs`, reading galaxies' pixels with `read(indices)`, and whether the two
    have identical pixels (exact duplicates: the split stage's, not near copies)."""
    scores, same = np.zeros(len(pairs), np.float32), np.zeros(len(pairs), bool)
    for start in range(0, len(pairs), 256):  # a few hundred galaxies' pixels in memory at once
        chunk = pairs[start:start + 256]
        rows, where = np.unique(chunk.ravel(), return_inverse=True)
        pixels = read(rows)
        pair = where.reshape(-1, 2)
        a, b = pixels[pair[:, 0]], pixels[pair[:, 1]]
        equal = (a == b).reshape(len(a), -1).all(axis=1)
        same[start:start + len(chunk)] = equal
        scores[start:start + len(chunk)] = 1.0  # identical pixels: no proof needed
        if not equal.all():
            scores[start:start + len(chunk)][~equal] = copy_score_pairs(a[~equal], b[~equal])
    return scores, same


def candidate_pairs(features: np.ndarray, threshold: float, per_galaxy: int = CANDIDATES_PER_GALAXY,
                    batch: int = 2048) -> pd.DataFrame:
    """(i, j, similarity) of row pairs i < j where j is among i's `per_galaxy` most similar rows (or i among j's)
    at a cosine >= threshold, most similar first."""
    unit = unit_rows(features)
    found = []
    for start in range(0, len(unit), batch):
        sim = unit[start:start + batch] @ unit.T
        rows = np.arange(len(sim))
        sim[rows, rows + start] = -np.inf
        top = np.argsort(-sim, axis=1, kind="stable")[:, :per_galaxy]
        close = sim[rows[:, None], top]
        i, slot = np.nonzero(close >= threshold)
        found.append(np.stack([i + start, top[i, slot], close[i, slot]], axis=1))
    pairs = np.concatenate(found) if found else np.zeros((0, 3))
    frame = pd.DataFrame({"i": np.minimum(pairs[:, 0], pairs[:, 1]).astype(int),
                          "j": np.maximum(pairs[:, 0], pairs[:, 1]).astype(int),
                          "similarity": np.round(pairs[:, 2], 5)}).drop_duplicates(["i", "j"])
    return frame.sort_values(["similarity", "i", "j"], ascending=[False, True, True], kind="stable").reset_index(
        drop=True)


def calibrate_proof(pixels: np.ndarray) -> dict:
    """Whether the pixel proof works on these (B, S, S, 3) galaxies: their synthetic near copies (near_copies) must
    pass it and their look-alikes (distinct by construction) must fail it. Neither is drawn from pairs of the
    catalog, so however many copies the catalog holds, they cannot sway it. `why` names what failed (None: none)."""
    scored = {}
    for family in (near_copies(pixels), look_alikes(pixels)):
        for kind, made in family.items():
            scored[kind] = copy_score_pairs(pixels, made)
    copies = [k for k in scored if k not in ("mirrored", "rotated_180")]
    passed = {k: round(float(np.mean(v >= PROOF_MIN)), 3) for k, v in scored.items()}
    failed = [f"{passed[k]:.0%} of {k} copies pass it (at least {COPIES_MUST_PASS:.0%} must)" for k in copies
              if passed[k] < COPIES_MUST_PASS]
    failed += [f"{passed[k]:.0%} of the galaxies {k.replace('_', ' ')} pass it as their own copies (at most "
               f"{LOOK_ALIKES_MAY_PASS:.0%} may)" for k in ("mirrored", "rotated_180") if passed[k] > LOOK_ALIKES_MAY_PASS]
    return {"proof": f"fine-scale pixel correlation >= {PROOF_MIN} over shifts up to {PROOF_SHIFT:.0%} of the side (at "
                     f"least {PROOF_SHIFT_PX} px) "
                     f"and zooms up to {PROOF_ZOOM:.0%}",
            "proof_min": PROOF_MIN, "calibration_galaxies": int(len(pixels)), "passed": passed,
            "score_median": {k: round(float(np.median(v)), 3) for k, v in scored.items()},
            "why": None if not failed else (
                f"near duplicates cannot be judged on these images: the pixel proof failed its calibration on "
                f"{len(pixels)} of the run's galaxies: {'; '.join(failed)}")}


def find_near_copies(features: np.ndarray, copy_cosines: dict[str, np.ndarray], read: Callable | None,
                     calibration: np.ndarray, features_name: str, fixed: float | None = None
                     ) -> tuple[dict, pd.DataFrame]:
    """Near copies among the galaxies of `features`' rows: candidate pairs from the features (candidate_pairs, at
    the cosine 99% of the measured copies `copy_cosines` reach, or `fixed`: labels.near_duplicate_cosine), each
    confirmed or rejected by copy_score on the pixels `read(indices)` returns, once the proof passes its calibration
    on the rows `calibration`. Returns the record (`threshold` None with `why` when the proof failed) and the
    confirmed pairs (i, j, similarity, proof); identical pixels are left to the exact duplicates."""
    pooled = np.concatenate(list(copy_cosines.values()))
    measured = float(np.quantile(pooled, CANDIDATE_QUANTILE))
    threshold = measured if fixed is None else float(fixed)
    record = {"features": features_name, "threshold": round(threshold, 4), "measured_threshold": round(measured, 4),
              "set_by_hand": fixed is not None, "copies": int(len(pooled)),
              "copies_proposed": {k: round(float(np.mean(v >= threshold)), 3) for k, v in copy_cosines.items()},
              "copy_cosine_median": {k: round(float(np.median(v)), 4) for k, v in copy_cosines.items()}}
    empty = pd.DataFrame({"i": [], "j": [], "similarity": [], "proof": []}).astype({"i": int, "j": int})
    if read is None:
        record.update(threshold=None, why="near duplicates cannot be judged: no stored pixels to prove pairs on")
        return record, empty
    record.update(calibrate_proof(read(np.asarray(calibration))))
    if record["why"] is not None:
        record["threshold"] = None
        return record, empty
    candidates = candidate_pairs(features, threshold)
    scores, same = copy_scores(read, candidates[["i", "j"]].to_numpy())
    candidates["proof"] = np.round(scores, 3)
    keep = (scores >= PROOF_MIN) & ~same
    record.update(candidates=int(len(candidates)), confirmed=int(keep.sum()), identical_pixels=int(same.sum()),
                  rejected=int((~keep & ~same).sum()))
    return record, candidates[keep].reset_index(drop=True)
