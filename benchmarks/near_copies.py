"""Near copies injected into real catalogs at 0.5%, 2% and 10%: found by the finder before and after "candidates,
then proof" (a benchmark, not a test).

On ../shared/real-galaxies/gz2_spiral (2,000 SDSS galaxies) and gz_decals_rings (470 DECaLS galaxies), with the
shared ImageNet EfficientNet-Lite0 at 128 px (label_noise.py's encoder and input size):
1. near copies of random galaxies under new ids, made from the 424-px source cut-outs as a catalog gets them and
   written as JPEG files: re-encoded (quality 90), shifted by 4 px, 10% brighter, re-cut 4% tighter (the central
   96% of the field), and re-encoded into another split (a leak); the kinds take turns;
2. one store built from the originals and every copy with the store stage's own build_store (224 px, what the
   pipeline stores with label_noise.py's overrides; --store-size), the
   starting encoder's features of every row (the label_budget stage's pixel_features);
3. for each share (copies = share x catalog, nested), the finder run directly on the galaxies and copies of that
   share, as the label_budget stage runs it (its 150-galaxy copy sample through the encoder, its calibration rows):
   before, the replaced rule (features only: a cosine 98% of three kinds of measured copies reach, refused when
   more than 2% of the galaxies have a neighbour that close; kept here to compare), and after,
   data/duplicates.find_near_copies (features propose, the stored pixels prove);
4. per share and kind: copies found, and the other pairs reported (every one is a pair of distinct catalog
   galaxies: neither catalog holds a near copy of its own that we know of).
The whole pipeline per share (training included) is too slow on 2 cores; the finder's inputs are what the stage
gives it.

    python benchmarks/near_copies.py --out benchmarks/near_copies.json

It skips with a message when ../shared/real-galaxies is absent (CI and users do not have it).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.label_noise import ENCODER, SHARED  # noqa: E402  (the same shared encoder and catalogs)

CATALOGS = {"gz2_spiral": SHARED / "gz2_spiral" / "catalog.csv", "gz_decals_rings": SHARED / "gz_decals_rings" / "catalog.csv"}
KINDS = ["jpeg_q90", "shift_4px", "brightness_1.1", "zoom_recut_4pct", "cross_split"]
SHARES = [0.005, 0.02, 0.10]


def catalog_with_copies(name: str, folder: Path, n_copies: int, seed: int) -> tuple[pd.DataFrame, list[tuple]]:
    """The catalog (id_str, src, split) followed by `n_copies` near copies written as JPEG files under new ids;
    the (original id, copy id, kind) of each, in the order they were added."""
    from PIL import Image

    path = CATALOGS[name]
    catalog = pd.read_csv(path, dtype={"id_str": str})
    catalog["src"] = [str(path.parent / f) for f in catalog["file_loc"]]
    rng = np.random.default_rng(seed)
    if "split" not in catalog:  # the rings carry no split: a seeded 70/15/15
        catalog["split"] = rng.choice(["train", "val", "test"], len(catalog), p=[0.7, 0.15, 0.15])
    catalog = catalog[["id_str", "src", "split"]]
    folder.mkdir(parents=True)
    rows, copies = [], []
    for k, i in enumerate(rng.choice(len(catalog), n_copies, replace=False)):
        kind = KINDS[k % len(KINDS)]
        image = Image.open(catalog.at[i, "src"]).convert("RGB")
        pixels = np.asarray(image)
        side = pixels.shape[0]
        if kind == "shift_4px":
            image = Image.fromarray(np.roll(pixels, 4, axis=1))
        elif kind == "brightness_1.1":
            image = Image.fromarray(np.clip(pixels.astype(np.float32) * 1.1, 0, 255).astype(np.uint8))
        elif kind == "zoom_recut_4pct":
            cut = round(side * 0.02)
            image = image.crop((cut, cut, side - cut, side - cut))
        split = catalog.at[i, "split"]
        if kind == "cross_split":
            split = {"train": "test", "val": "train", "test": "train"}[split]
        copy_id = f"copy{k:03d}_{catalog.at[i, 'id_str']}"
        target = folder / f"{copy_id}.jpg"
        image.save(target, format="JPEG", quality=90)
        copies.append((catalog.at[i, "id_str"], copy_id, kind))
        rows.append({"id_str": copy_id, "src": str(target), "split": split})
    return pd.concat([catalog, pd.DataFrame(rows)], ignore_index=True), copies


def previous_finder(features: np.ndarray, cosines: dict) -> tuple[dict, pd.DataFrame]:
    """The rule this replaced (data/duplicates.py before issue 35): the cosine 98% of the jpeg, shift and
    brightness copies reach; no pairs, and a refusal, when more than 2% of the galaxies have a neighbour that close."""
    from galaxy_finetune.data.duplicates import near_pairs
    from galaxy_finetune.core.neighbours import unit_rows

    pooled = np.concatenate([v for k, v in cosines.items() if not k.startswith("zoom")])
    threshold = float(np.quantile(pooled, 0.02))
    unit = unit_rows(features)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    share = float(np.mean(sim.max(1) >= threshold))
    record = {"threshold": round(threshold, 4), "galaxies_with_a_neighbour_that_close": round(share, 4)}
    if share > 0.02:
        record["why"] = f"cannot be judged: {share:.0%} of the galaxies have a neighbour that close"
        return record, pd.DataFrame({"i": [], "j": []}, dtype=int)
    record["why"] = None
    return record, near_pairs(features, threshold)


def score(pairs: pd.DataFrame, ids: np.ndarray, split: np.ndarray, copies: list[tuple]) -> dict:
    """Copies found (overall and per kind), leaks named across splits, and the other pairs reported."""
    found = {frozenset((ids[i], ids[j])): (split[i], split[j]) for i, j in zip(pairs["i"], pairs["j"])}
    truth = {frozenset((a, b)): kind for a, b, kind in copies}
    by_kind = {k: {"copies": sum(v == k for v in truth.values()),
                   "found": sum(v == k and t in found for t, v in truth.items())} for k in KINDS}
    leaks = [t for t, v in truth.items() if v == "cross_split" and t in found]
    others = [sorted(t) for t in found if t not in truth]
    return {"copies": len(truth), "found": sum(t in found for t in truth), "by_kind": by_kind,
            "cross_split_found_reported_across_splits": sum(found[t][0] != found[t][1] for t in leaks),
            "other_pairs": len(others), "other_pairs_ids": others[:10]}


def run_catalog(name: str, work: Path, args, encoder, config) -> dict:
    from galaxy_finetune.data.duplicates import PROOF_SAMPLE, find_near_copies, near_copies
    from galaxy_finetune.data.store import build_store, open_images
    from galaxy_finetune.labels.budget import COPY_SAMPLE
    from galaxy_finetune.labels.features import pixel_features
    from galaxy_finetune.core.neighbours import unit_rows

    n_catalog = len(pd.read_csv(CATALOGS[name]))
    counts = {share: int(round(share * n_catalog)) for share in SHARES}
    catalog, copies = catalog_with_copies(name, work / f"{name}_copies", max(counts.values()), args.seed)
    start = time.perf_counter()
    build_store(catalog, work / f"{name}_store", args.store_size)
    images = open_images(work / f"{name}_store")
    features = pixel_features(encoder, config, np.asarray(images), 64)
    out = {"galaxies": n_catalog, "store_and_features_s": round(time.perf_counter() - start, 1), "shares": {}}
    for share, n in counts.items():
        keep = np.arange(n_catalog + n)  # the catalog and the first n copies (nested shares)
        ids, split, f = catalog["id_str"].to_numpy()[keep], catalog["split"].to_numpy()[keep], features[keep]
        rng = np.random.default_rng(0)  # the stage's copy sample and calibration rows (labels/budget.py)
        sample = np.sort(rng.choice(len(keep), min(COPY_SAMPLE, len(keep)), replace=False))
        originals = unit_rows(f[sample])
        cosines = {kind: (unit_rows(pixel_features(encoder, config, made, 64)) * originals).sum(1)
                   for kind, made in near_copies(np.asarray(images[keep[sample]])).items()}
        calibration = np.sort(np.random.default_rng(1).choice(len(keep), min(PROOF_SAMPLE, len(keep)), replace=False))
        clock = time.perf_counter()
        before_record, before = previous_finder(f, cosines)
        before_s = time.perf_counter() - clock
        clock = time.perf_counter()
        record, after = find_near_copies(f, cosines, lambda at: np.asarray(images[keep[at]]), calibration,
                                         "the shared encoder's features")
        after_s = time.perf_counter() - clock
        out["shares"][f"{share:.1%}"] = {
            "copies": n, "galaxies": len(keep),
            "before": {**score(before, ids, split, copies[:n]), "record": before_record, "wall_s": round(before_s, 1)},
            "after": {**score(after, ids, split, copies[:n]), "wall_s": round(after_s, 1),
                      "record": {k: v for k, v in record.items() if k != "proof"}}}
        print(f"near_copies: {name} {share:.1%}: before {out['shares'][f'{share:.1%}']['before']['found']}/{n} found, "
              f"{out['shares'][f'{share:.1%}']['before']['other_pairs']} other; after "
              f"{out['shares'][f'{share:.1%}']['after']['found']}/{n} found, "
              f"{out['shares'][f'{share:.1%}']['after']['other_pairs']} other ({after_s:.0f} s)", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input-size", type=int, default=128)
    parser.add_argument("--store-size", type=int, default=224,
                        help="the stored side: 224 is what the pipeline stores under label_noise.py's overrides (the largest recipe input size, params.largest_input_size)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--catalogs", nargs="*", default=list(CATALOGS))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "near_copies.json")
    args = parser.parse_args()
    if not SHARED.is_dir():
        print(f"near_copies: skipped, {SHARED} is absent (the real galaxies are only on the developers' machines)")
        return
    import torch

    from benchmarks.harness import load, provenance
    from galaxy_finetune.data.encoder import encoder_record, resolve_encoder
    from galaxy_finetune.labels.features import frozen_encoder

    result = provenance(encoder="imagenet-efficientnet-lite0", input_size=args.input_size, store_size=args.store_size,
                        seed=args.seed,
                        shares=SHARES, kinds=KINDS)
    work = Path(tempfile.mkdtemp(prefix="near-copies-"))
    start = time.perf_counter()
    try:
        resolve_encoder(str(ENCODER), work / "encoder")
        encoder = frozen_encoder(work / "encoder")
        config = {"input_size": args.input_size, "eval_zoom": 1.2,
                  "normalisation": encoder_record(work / "encoder").get("normalisation")}
        with torch.inference_mode():
            for name in args.catalogs:
                result[name] = run_catalog(name, work, args, encoder, config)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["wall_s"] = round(time.perf_counter() - start, 1)
    result["load_end"] = load()
    args.out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in CATALOGS}, indent=1, default=str))


if __name__ == "__main__":
    sys.exit(main())
