"""Near copies: the features propose pairs, the stored pixels prove them, and the proof's own calibration, not the
catalog's share of copies, decides whether near copies can be judged (tiny synthetic cut-outs, offline)."""
import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from galaxy_finetune.data.duplicates import (PROOF_MIN, calibrate_proof, copy_score, find_near_copies, look_alikes,
                                             near_copies)
from tests.label_budget_inputs import sky_galaxies

SIDE = 48
KINDS = ["jpeg", "shift", "brightness", "zoom", "cross_split"]


def jpeg(image: np.ndarray, quality: int = 85) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def copy_of(image: np.ndarray, kind: str) -> np.ndarray:
    """A copy as a catalog gets one (made here, apart from the stage's own near_copies)."""
    if kind in ("jpeg", "cross_split"):
        return jpeg(image)
    if kind == "shift":
        return np.roll(image, (2, -1), axis=(0, 1))
    if kind == "brightness":
        return np.clip(image * 1.15, 0, 255).astype(np.uint8)
    cut = 1  # a re-cut 4% tighter, back to the same side
    return np.asarray(Image.fromarray(image[cut:-cut, cut:-cut]).resize((SIDE, SIDE), Image.BILINEAR))


def catalog_with_copies(n_copies: int, share: float, seed: int = 0):
    """Galaxies (pixels, features, splits) of which `share` are copies, `n_copies` of them, cycling through KINDS;
    also four pairs of distinct twins (the same shape, each with its own sky: features all but identical).
    Returns (pixels, features, split, copies: [(original, copy, kind)], twins: [(a, b)])."""
    rng = np.random.default_rng(seed)
    n_originals = int(round(n_copies / share)) - n_copies
    shapes = np.column_stack([rng.uniform(0.1, 0.25, n_originals) * SIDE, rng.uniform(0.3, 1.0, n_originals),
                              rng.uniform(0, np.pi, n_originals), rng.uniform(120, 200, n_originals)])
    twins = [(0, 1), (2, 3), (4, 5), (6, 7)]
    for a, b in twins:
        shapes[b] = shapes[a]
    pixels = list(sky_galaxies(n_originals, SIDE, seed, shapes))
    features = list(np.column_stack([shapes / shapes.std(0), rng.normal(0, 0.02, (n_originals, 4))]))
    for a, b in twins:
        features[b] = features[a] + rng.normal(0, 1e-4, 8)
    split = list(rng.choice(["train", "val", "test"], n_originals, p=[0.6, 0.2, 0.2]))
    copies = []
    for k, original in enumerate(rng.choice(np.arange(8, n_originals), n_copies, replace=False)):
        kind = KINDS[k % len(KINDS)]
        copies.append((int(original), len(pixels), kind))
        pixels.append(copy_of(pixels[original], kind))
        features.append(features[original] + rng.normal(0, 0.003, 8))
        split.append({"train": "test", "val": "train", "test": "train"}[split[original]] if kind == "cross_split"
                     else split[original])
    return np.stack(pixels), np.stack(features), np.array(split), copies, twins


def copy_cosines(rng_seed: int = 1) -> dict:
    """What the stage measures with the encoder: its own copies' cosines with their originals."""
    rng = np.random.default_rng(rng_seed)
    return {"jpeg_q90": 1 - rng.uniform(0, 2e-3, 150), "zoom_recut_4pct": 1 - rng.uniform(0, 4e-3, 150)}


@pytest.mark.parametrize("share,n_copies", [(0.02, 5), (0.10, 10), (0.20, 20)])
def test_every_kind_of_copy_is_proved_and_distinct_twins_are_not_at_any_share(share, n_copies):
    pixels, features, split, copies, twins = catalog_with_copies(n_copies, share)
    record, pairs = find_near_copies(features, copy_cosines(), lambda at: pixels[at], np.arange(60), "test features")
    assert record["why"] is None and record["threshold"] is not None
    found = {(int(i), int(j)) for i, j in zip(pairs["i"], pairs["j"])}
    assert found == {(a, b) for a, b, _ in copies}  # every copy of every kind, nothing else
    assert (pairs["proof"] >= PROOF_MIN).all()
    proposed = set(zip(*record_candidates(features, record)))
    assert set(twins) <= proposed  # the features could not tell the twins apart: the pixels did
    across = [(a, b) for a, b, kind in copies if kind == "cross_split"]
    assert across and all(split[a] != split[b] for a, b in across)


def record_candidates(features, record):
    from galaxy_finetune.data.duplicates import candidate_pairs

    frame = candidate_pairs(features, record["threshold"])
    return frame["i"].tolist(), frame["j"].tolist()


def test_two_distinct_galaxies_of_one_shape_fail_the_proof_and_a_copy_passes():
    shape = np.array([[6.0, 0.6, 1.0, 180.0]] * 2)
    a, b = sky_galaxies(2, SIDE, seed=3, shapes=shape)  # one light profile, two skies
    assert copy_score(a, b) < PROOF_MIN
    for kind in KINDS:
        assert copy_score(a, copy_of(a, kind)) >= PROOF_MIN, kind


def test_identical_pixels_are_left_to_the_exact_duplicates():
    pixels, features, _, copies, _ = catalog_with_copies(5, 0.05)
    pixels = np.concatenate([pixels, pixels[20:21]])
    features = np.concatenate([features, features[20:21]])
    record, pairs = find_near_copies(features, copy_cosines(), lambda at: pixels[at], np.arange(60), "f")
    assert record["identical_pixels"] == 1 and (20, len(pixels) - 1) not in set(zip(pairs["i"], pairs["j"]))
    assert len(pairs) == len(copies)


def test_the_refusal_names_what_failed_and_comes_only_from_the_calibration():
    rng = np.random.default_rng(4)
    y, x = np.mgrid[0:SIDE, 0:SIDE] - (SIDE - 1) / 2
    smooth = np.stack([np.repeat((150 * np.exp(-np.hypot(x, y / r) / 5))[..., None], 3, 2).astype(np.uint8)
                       for r in rng.uniform(0.4, 1.0, 60)])
    record = calibrate_proof(smooth)
    assert record["passed"]["rotated_180"] > 0.5 and record["passed"]["mirrored"] > 0.5
    assert record["why"].startswith("near duplicates cannot be judged on these images: the pixel proof failed its "
                                    "calibration on 60 of the run's galaxies")
    assert "galaxies rotated 180 pass it as their own copies" in record["why"] and "mirrored" in record["why"]
    features = rng.normal(0, 1, (60, 8))
    refused, pairs = find_near_copies(features, copy_cosines(), lambda at: smooth[at], np.arange(60), "f")
    assert refused["threshold"] is None and pairs.empty and refused["why"] == record["why"]
    noisy = calibrate_proof(sky_galaxies(60, SIDE, seed=4))
    assert noisy["why"] is None and min(noisy["passed"][k] for k in near_copies(smooth[:1])) >= 0.9


def test_synthetic_copies_and_look_alikes_are_what_they_say():
    pixels = np.random.default_rng(2).integers(0, 200, (3, 100, 100, 3), dtype=np.uint8)
    copies = near_copies(pixels)
    assert set(copies) == {"jpeg_q90", "shift_1px", "brightness_1.1", "zoom_recut_4pct"}
    assert np.array_equal(copies["shift_1px"][:, :, 1:], pixels[:, :, :-1])
    assert all(c.shape == pixels.shape and c.dtype == np.uint8 for c in copies.values())
    alike = look_alikes(pixels)
    assert np.array_equal(alike["mirrored"][:, :, ::-1], pixels)
    assert np.array_equal(alike["rotated_180"][:, ::-1, ::-1], pixels)


def test_the_stage_writes_the_proof_column_and_one_warning_line(tmp_path):
    from galaxy_finetune.labels.budget import label_budget
    from tests.label_budget_inputs import CLASSES, PARAMS, evidence, galaxies_and_truth

    galaxies, features, truth = galaxies_and_truth()
    proof = evidence(galaxies, truth)
    pixels = sky_galaxies(len(galaxies), SIDE)
    pixels[150] = copy_of(pixels[3], "jpeg")  # x150 (test) is a re-encoded copy of x003 (train)
    features[150] = features[3] + 1e-4
    proof.pixels = lambda at: pixels[at]
    with pytest.warns(UserWarning) as caught:
        summary = label_budget(galaxies, features, CLASSES, PARAMS, tmp_path / "lb", proof, None, bootstrap_samples=20)
    near = pd.read_csv(tmp_path / "lb/near_duplicates.csv")
    assert list(near.columns) == ["id_a", "split_a", "id_b", "split_b", "similarity", "proof"]
    assert near[["id_a", "id_b", "split_a", "split_b"]].values.tolist() == [["x003", "x150", "train", "test"]]
    assert summary["duplicates"]["near"] == 1 and summary["duplicates"]["near_calibration"]["why"] is None
    lines = [str(w.message) for w in caught if "near copies" in str(w.message)]
    assert len(lines) == 1 and "1 across splits (a leak)" in lines[0] and "\n" not in lines[0]
