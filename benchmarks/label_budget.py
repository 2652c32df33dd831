"""The label budget, measured on real galaxies with a really pretrained encoder (a benchmark, not a test).

On ../shared/real-galaxies/gz2_spiral (2,000 SDSS galaxies, spiral vs not, its own 600-galaxy test set) with the
shared ImageNet EfficientNet-Lite0 at 128 px, through the project's own code (fetch_data, store with row hashes,
split, labels/*):
1. frozen features of every galaxy (labels/features.py);
2. the learning curve: the linear probe on PCA-40 (the label_budget stage's learner) on nested class-balanced
   budgets x 3 seeds, with a 95% bootstrap CI, its power law and the labels it says reach 80% / 85%; and the probe
   on the raw features at two budgets (the proxy's own yardstick);
3. acquisition (entropy, margin, BALD with MC feature dropout) against random labelling on the train pool, 3 seeds,
   and the label saving at equal accuracy;
4. label issues: cleanlab on 5-fold out-of-fold probabilities of all 2,000; then 20 injected flips in train and how
   many of them cleanlab flags;
5. duplicates: exact (pixel hashes) and the frozen-feature cosine of distinct pairs against copies (JPEG q75
   re-encode, brightness x1.1, a 2-px shift), which sets labels.near_duplicate_cosine;
6. shift: the far share (farther from training than 90% of val) of GZ2 test galaxies and of the 470 GZ DECaLS ring
   galaxies (another survey), and of GZ2 test galaxies zoomed out x2 or under noise, for the project's score
   (raw-feature kNN cosine) and two others.

    python benchmarks/label_budget.py --out benchmarks/label_budget.json

It skips with a message when ../shared/real-galaxies is absent (CI and users do not have it).
"""
from __future__ import annotations

import argparse
import io
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
SHARED = ROOT.parent / "shared" / "real-galaxies"


def timed(clock: dict, name: str):
    class _T:
        def __enter__(self):
            self.start = time.perf_counter()

        def __exit__(self, *exc):
            clock[name] = round(time.perf_counter() - self.start, 1)
            print(f"label_budget benchmark: {name} {clock[name]} s", flush=True)
    return _T()


def copies_features(srcs: list[str], size: int, encoder_dir, config) -> dict[str, np.ndarray]:
    """Frozen features of each source image and of three kinds of copy of it."""
    import torch
    from PIL import Image

    from galaxy_finetune.data.augment import eval_view
    from galaxy_finetune.data.images import decode_image
    from galaxy_finetune.data.encoder import build_encoder

    def jpeg(pixels):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=75)
        return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))

    kinds = {"original": lambda p: p, "jpeg_q75": jpeg,
             "brightness_1.1": lambda p: np.clip(p.astype(float) * 1.1, 0, 255).astype(np.uint8),
             "shift_2px": lambda p: np.roll(p, 2, axis=1)}
    base = [decode_image(s, size) for s in srcs]
    encoder = build_encoder(encoder_dir).eval()
    out = {}
    with torch.inference_mode():
        for name, make in kinds.items():
            pixels = np.stack([make(np.asarray(p)) for p in base])
            images = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2)
            out[name] = encoder(eval_view(images, config["input_size"], config["eval_zoom"],
                                          config["normalisation"])).numpy()
    return out


def probs_head_correct(model_dir, test_features, test_y) -> np.ndarray:
    """Whether the saved model's head (dropout off) gets each test galaxy right, from its frozen features."""
    import torch

    from galaxy_finetune.training.model_io import load_finetuned

    model, _ = load_finetuned(model_dir)
    with torch.inference_mode():
        logits = model.head(torch.from_numpy(np.asarray(test_features, np.float32)))
    return logits.argmax(1).numpy() == test_y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input-size", type=int, default=128)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--per-class", type=int, nargs="+", default=[10, 25, 50, 100, 200, 400])
    parser.add_argument("--al-budget", type=int, default=400)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "label_budget.json")
    args = parser.parse_args()
    if not SHARED.is_dir():
        print(f"label_budget: skipped, {SHARED} is absent (the real galaxies are only on the developers' machines)")
        return
    import torch

    from benchmarks.harness import load, provenance
    from benchmarks.recipes import prepare
    from galaxy_finetune.core.cli import quiet_logs
    from galaxy_finetune.data.images import decode_image
    from galaxy_finetune.data.loading import read_split
    from galaxy_finetune.data.store import read_row_hashes
    from galaxy_finetune.core.neighbours import anomaly_scores
    from galaxy_finetune.labels.budget import pca_project
    from galaxy_finetune.labels.curve import fit_curve, learning_curve
    from galaxy_finetune.data.duplicates import exact_groups, near_pairs
    from galaxy_finetune.labels.features import frozen_features
    from galaxy_finetune.labels.issues import find_suspects, out_of_fold_probs
    from galaxy_finetune.inference.shift import FAR_QUANTILE, knn_distance
    from galaxy_finetune.labels.simulate import label_saving, simulate_active
    from galaxy_finetune.data.encoder import encoder_record
    from galaxy_finetune.training.probe import fit_linear_probe

    quiet_logs()
    torch.set_num_threads(2)
    result = provenance(catalog="gz2_spiral", encoder="imagenet-efficientnet-lite0", input_size=args.input_size)
    clock = result["wall_s"] = {}
    work = Path(tempfile.mkdtemp(prefix="label-budget-"))
    try:
        with timed(clock, "prepare (fetch_data, store, split)"):
            _, raw, enc, store, splits, size = prepare(work, "gz2_spiral", "imagenet", args.input_size)
        frames = {n: read_split(splits, n).assign(split=n) for n in ("train", "val", "test")}
        galaxies = pd.concat(frames.values(), ignore_index=True)
        config = {"input_size": size, "eval_zoom": 1.2, "normalisation": encoder_record(enc).get("normalisation")}
        with timed(clock, "frozen features (2,000 galaxies)"):
            features = frozen_features(enc, config, store, galaxies["row"], 64)
        split, y = galaxies["split"].to_numpy(), galaxies["label"].to_numpy(int)
        idx = {n: np.flatnonzero(split == n) for n in ("train", "val", "test")}
        x = pca_project(features[idx["train"]], features, 40)
        tr, va, te = idx["train"], idx["val"], idx["test"]

        with timed(clock, "learning curve (PCA-40 probe, 3 seeds)"):
            runs, curve = learning_curve(x[tr], y[tr], x[va], y[va], x[te], y[te], 2, args.per_class, args.seeds)
        result["learning_curve"] = curve.to_dict(orient="records")
        result["learning_curve_fit_s"] = runs.groupby(runs["per_class"].astype(str))["fit_s"].mean().round(3).to_dict()
        result["power_law"] = {f"{t:.2f}": fit_curve(curve, "accuracy", t) for t in (0.80, 0.85)}
        with timed(clock, "raw-feature probe at 50/class and all (the yardstick)"):
            raw_points = {}
            for budget in (50, "all"):
                rows = tr if budget == "all" else tr[np.sort(np.concatenate(
                    [np.random.default_rng(0).permutation(np.flatnonzero(y[tr] == c))[:50] for c in (0, 1)]))]
                probe = fit_linear_probe(features[rows], y[rows], features[va], y[va], 2)
                raw_points[str(budget)] = round(float(np.mean(probe.logits(features[te]).argmax(1) == y[te])), 4)
            result["raw_probe_accuracy"] = raw_points

        with timed(clock, "active learning vs random (4 strategies x 3 seeds)"):
            C = fit_linear_probe(x[tr], y[tr], x[va], y[va], 2).C
            rounds = simulate_active(x[tr], y[tr], x[te], y[te], 2, C, ["random", "entropy", "margin", "bald"],
                                     args.seeds, 10, 20, args.al_budget, passes=20)
        result["active_learning_C"] = C
        result["active_learning"] = label_saving(rounds).to_dict(orient="records")
        mean = rounds.groupby(["n_labels", "strategy"])["accuracy"].mean().unstack("strategy")
        result["active_learning_curve"] = mean.round(4).reset_index().to_dict(orient="records")

        with timed(clock, "label issues (5-fold OOF + cleanlab, 2,000 galaxies)"):
            probs = out_of_fold_probs(x, y, 2, 5)
            suspects = find_suspects(galaxies, probs, ["non_spiral", "spiral"])
        result["label_issues"] = {"flagged": len(suspects), "of": len(galaxies),
                                  "by_split": suspects["split"].value_counts().to_dict(),
                                  "oof_accuracy": round(float(np.mean(probs.argmax(1) == y)), 4)}
        with timed(clock, "label issues with 20 injected flips"):
            rng = np.random.default_rng(0)
            flipped = rng.choice(tr, 20, replace=False)
            noisy = y.copy()
            noisy[flipped] = 1 - noisy[flipped]
            found = find_suspects(galaxies.assign(label=noisy), out_of_fold_probs(x, noisy, 2, 5),
                                  ["non_spiral", "spiral"])
            ids = set(galaxies["id_str"].to_numpy()[flipped])
            result["injected_flips"] = {"flips": 20, "flagged_total": len(found),
                                        "flips_flagged": int(found["id_str"].isin(ids).sum()),
                                        "flips_in_top_50": int(found["id_str"].head(50).isin(ids).sum())}

        with timed(clock, "duplicates: hashes, pairwise cosine, copies"):
            hashes = read_row_hashes(store)
            groups = exact_groups(hashes)
            result["exact_duplicates"] = int((groups != np.arange(len(groups))).sum())
            pairs = near_pairs(features, 0.90)
            from galaxy_finetune.core.neighbours import unit_rows
            unit = unit_rows(features)
            sim = unit @ unit.T
            distinct = sim[np.triu_indices(len(sim), 1)]
            catalog = pd.read_csv(raw / "catalog.csv")
            sample = np.random.default_rng(1).choice(len(catalog), 100, replace=False)
            copies = copies_features(catalog["src"].to_numpy()[sample].tolist(), size, enc, config)
            orig = unit_rows(copies["original"])
            result["near_duplicates"] = {
                "distinct_pairs": int(len(distinct)), "distinct_max_cosine": round(float(distinct.max()), 4),
                "distinct_p99_9": round(float(np.percentile(distinct, 99.9)), 4),
                "distinct_pairs_at_or_above": {t: int((distinct >= float(t)).sum()) for t in
                                               ("0.95", "0.97", "0.98", "0.99", "0.995")},
                "pairs_above_0.90_listed": int(len(pairs)),
                "copies_min_cosine": {k: round(float((unit_rows(v) * orig).sum(1).min()), 4)
                                      for k, v in copies.items() if k != "original"},
                "copies_median_cosine": {k: round(float(np.median((unit_rows(v) * orig).sum(1))), 4)
                                         for k, v in copies.items() if k != "original"},
                "copies_share_at_or_above": {t: {k: round(float(np.mean((unit_rows(v) * orig).sum(1) >= float(t))), 3)
                                                 for k, v in copies.items() if k != "original"}
                                             for t in ("0.95", "0.97", "0.98", "0.99", "0.995")}}

        with timed(clock, "shift: GZ2 test and 470 GZ DECaLS rings"):
            rings = pd.read_csv(SHARED / "gz_decals_rings" / "catalog.csv")
            ring_pixels = np.stack([decode_image(SHARED / "gz_decals_rings" / f, size) for f in rings["file_loc"]])
            ring_features = []
            from galaxy_finetune.data.augment import eval_view
            from galaxy_finetune.data.encoder import build_encoder, encoder_record
            encoder = build_encoder(enc).eval()
            with torch.inference_mode():
                for s in range(0, len(ring_pixels), 64):
                    images = torch.from_numpy(ring_pixels[s:s + 64]).permute(0, 3, 1, 2)
                    ring_features.append(encoder(eval_view(images, size, 1.2, config["normalisation"])).numpy())
            # GZ2 test galaxies seen another way: zoomed out x2 (smaller in the frame), and under noise (sigma 25)
            test_pixels = np.stack([decode_image(f, size) for f in catalog["src"].to_numpy()[
                galaxies["row"].to_numpy()[te][:300]]]).astype(float)
            small = np.full_like(test_pixels, np.median(test_pixels[:, :4, :4]))
            half = size // 2
            small[:, half // 2:half // 2 + half, half // 2:half // 2 + half] = test_pixels[:, ::2, ::2]
            noisy = np.clip(test_pixels + np.random.default_rng(2).normal(0, 25, test_pixels.shape), 0, 255)
            altered = {}
            with torch.inference_mode():
                for name, pixels in (("gz2_test_zoomed_out_x2", small), ("gz2_test_noise_25", noisy)):
                    images = torch.from_numpy(pixels.astype(np.uint8)).permute(0, 3, 1, 2)
                    altered[name] = np.concatenate([encoder(eval_view(images[s:s + 64], size, 1.2,
                                                                      config["normalisation"])).numpy()
                                                    for s in range(0, len(images), 64)])
            from galaxy_finetune.inference.embeddings import fit_pca
            from galaxy_finetune.inference.shift import ShiftReference
            pca = fit_pca(features[tr], 40)
            proj = lambda f: pca.transform(np.asarray(f, np.float32))  # noqa: E731
            queries = {"val": features[va], "gz2_test": features[te], "decals_rings": np.concatenate(ring_features),
                       **altered}
            project = ShiftReference.build(pca.mean_, pca.components_, features[tr], features[va], 10, "")
            shift = {}
            for name, score in (("raw cosine kNN (the project's)", project.distances),
                                ("PCA-40 Euclidean kNN", lambda q: knn_distance(proj(features[tr]), proj(q), 10)),
                                ("PCA-40 cosine kNN (analyse's anomaly score)",
                                 lambda q: anomaly_scores(proj(features[tr]), proj(q), 10)[0])):
                vs = np.sort(score(features[va]))
                shares = {k: 1 - np.searchsorted(vs, score(q), side="right") / len(vs) for k, q in queries.items()}
                shift[name] = {k: {"far": round(float(np.mean(v < 1 - FAR_QUANTILE)), 3),
                                   "median_val_share_farther": round(float(np.median(v)), 3)}
                               for k, v in shares.items()}
            result["shift_far_share"] = shift
        with timed(clock, "galaxy-label-next on the 600 test galaxies (probe head, bald, 20 passes, --diverse)"):
            from galaxy_finetune.core.classes import read_classes
            from galaxy_finetune.core.params import AugmentParams, TrainParams
            from galaxy_finetune.data.store import read_record
            from galaxy_finetune.labels.next import main as label_next
            from galaxy_finetune.training.heads import build_classifier
            from galaxy_finetune.training.model_io import save_finetuned
            from galaxy_finetune.training.probe import load_into_head
            from galaxy_finetune.core.task import Task
            from galaxy_finetune.training.train import model_config

            train_params = TrainParams(input_size=size)
            model = build_classifier(build_encoder(enc), 2, train_params)
            load_into_head(model.head.linear, fit_linear_probe(features[tr], y[tr], features[va], y[va], 2))
            save_finetuned(work / "model", model, model_config(encoder_record(enc), read_record(store), train_params, AugmentParams(), {},
                                                               Task("classification", tuple(read_classes(raw)))))
            test_catalog = work / "unlabelled.csv"
            pd.DataFrame({"id_str": galaxies["id_str"].to_numpy()[te],
                          "file_loc": catalog["src"].to_numpy()[galaxies["row"].to_numpy()[te]]}).to_csv(
                test_catalog, index=False)
            start = time.perf_counter()
            label_next([str(work / "model"), str(test_catalog), "-k", "20", "--diverse", "--score", "bald",
                        "-o", str(work / "next.csv"), "--sheet", str(work / "next.png"), "--embeddings",
                        str(work / "none"), "--accelerator", "cpu"])
            picked = pd.read_csv(work / "next.csv", dtype={"id_str": str})
            truth = dict(zip(galaxies["id_str"], y))
            result["label_next"] = {"galaxies": int(len(te)), "k": 20, "seconds": round(time.perf_counter() - start, 1),
                                    "picked_share_misclassified_by_probe_head": round(float(np.mean(
                                        [int(r.pred_label == "spiral") != truth[r.id_str] for r in picked.itertuples()])), 3),
                                    "test_error_of_probe_head": round(1 - float(np.mean(
                                        probs_head_correct(work / "model", features[te], y[te]))), 3)}
        result["load_end"] = load()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    sys.exit(main())
