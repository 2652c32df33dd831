"""Can a perceptual hash prove near copies of galaxies? imagededup's PHash, WHash and DHash (the hashes cleanvision's
near-duplicate check also uses, through imagehash) on real cut-outs: the Hamming distance of each kind of near copy
to its original, against the distance of each galaxy to its nearest DISTINCT galaxy (a benchmark, not a test).

On the first --n galaxies of ../shared/real-galaxies/<catalog> decoded at --size px as the store decodes them;
copies made from the 424-px source cut-out (JPEG q90, shifted 4 px, 10% brighter, re-cut 3% and 5% tighter), each
re-encoded as JPEG q90 and decoded the same way. A hash proves copies only if copies' distances stay below the
nearest distinct galaxies'. Needs `pip install imagededup` (not a project dependency; see docs/label-budget.md).

    python benchmarks/perceptual_hash.py --catalog gz2_spiral --n 600
"""
from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.label_noise import SHARED  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--catalog", default="gz2_spiral")
    parser.add_argument("--n", type=int, default=600)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    if not SHARED.is_dir():
        print(f"perceptual_hash: skipped, {SHARED} is absent")
        return
    try:
        from imagededup.methods import DHash, PHash, WHash
    except ImportError:
        print("perceptual_hash: skipped, imagededup is not installed (pip install imagededup)")
        return
    from PIL import Image

    from benchmarks.harness import provenance

    root = SHARED / args.catalog
    catalog = pd.read_csv(root / "catalog.csv", dtype={"id_str": str}).head(args.n)

    def jpeg(image):
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")

    def stored(image):
        return np.asarray(image.resize((args.size, args.size), Image.BILINEAR))

    originals, copies = [], {k: [] for k in ("jpeg_q90", "shift_4px", "brightness_1.1", "recut_3pct", "recut_5pct")}
    for name in catalog["file_loc"]:
        image = Image.open(root / name).convert("RGB")
        pixels, side = np.asarray(image), image.size[0]
        originals.append(stored(image))
        copies["jpeg_q90"].append(stored(jpeg(image)))
        copies["shift_4px"].append(stored(jpeg(Image.fromarray(np.roll(pixels, 4, axis=1)))))
        copies["brightness_1.1"].append(stored(jpeg(Image.fromarray(np.clip(pixels * 1.1, 0, 255).astype(np.uint8)))))
        for share, kind in ((0.03, "recut_3pct"), (0.05, "recut_5pct")):
            cut = round(side * share / 2)
            copies[kind].append(stored(jpeg(image.crop((cut, cut, side - cut, side - cut)))))
    result = provenance(catalog=args.catalog, galaxies=len(originals), size=args.size)
    for name, method in (("phash", PHash), ("whash", WHash), ("dhash", DHash)):
        hasher = method(verbose=False)

        def bits(image):
            return np.array([int(c, 16) for c in hasher.encode_image(image_array=image)], np.uint8)

        codes = np.unpackbits(np.stack([bits(o) for o in originals])[:, :, None], axis=2)[:, :, 4:].reshape(
            len(originals), -1)
        distance = (codes[:, None, :] != codes[None, :, :]).sum(-1)
        np.fill_diagonal(distance, codes.shape[1] + 1)
        nearest = distance.min(1)
        out = {"bits": int(codes.shape[1]),
               "nearest_distinct": {"min": int(nearest.min()), "p5": float(np.percentile(nearest, 5)),
                                    "median": float(np.median(nearest))}}
        for kind, made in copies.items():
            d = np.array([(np.unpackbits(bits(c)[:, None], axis=1)[:, 4:].ravel() != codes[i]).sum()
                          for i, c in enumerate(made)])
            out[kind] = {"median": float(np.median(d)), "p95": float(np.percentile(d, 95)), "max": int(d.max())}
        result[name] = out
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    sys.exit(main())
