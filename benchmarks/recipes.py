"""Which fine-tuning recipe, measured on real galaxies with a really pretrained encoder (a benchmark, not a test).

For each catalog (../shared/real-galaxies: GZ2 spiral vs non-spiral with its given test split, GZ DECaLS rings
vs not; and a synthetic catalog), each encoder (the shared ImageNet EfficientNet-Lite0, and a random init of
the same architecture) and each label budget (N labelled training galaxies per class, nested subsets of one
shuffled train split; val and test the same throughout), it runs:
- probe: a logistic regression on the frozen encoder's pooled features (galaxy_finetune.training.probe), the baseline;
- lpft: the default recipe (train.*), through the project's own finetune();
- writeup: the write-up's recipe (writeup.*: lr 1e-5, 30 epochs, random head);
- scratch: the from-scratch recipe (scratch.*), for the random init;
and prints one table: test accuracy with a 95% bootstrap CI, optimizer steps, wall time. Every row is appended
to --out as it finishes (a JSON line), so a long run can be stopped and resumed with --resume.

    python benchmarks/recipes.py --input-size 128 --out benchmarks/recipes.jsonl

It skips with a message when ../shared/real-galaxies is absent (CI and users do not have it).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "real-galaxies"
ENCODER = SHARED / "encoders" / "imagenet-efficientnet-lite0" / "model.safetensors"
CATALOGS = {"gz2_spiral": ["non_spiral", "spiral"], "gz_decals_rings": ["not_ring", "ring"]}


def bootstrap_ci(correct: np.ndarray, samples: int = 1000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = correct[rng.integers(0, len(correct), (samples, len(correct)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def prepare(workdir: Path, catalog: str, encoder: str, input_size: int):
    """fetch_data, store and split for one catalog, through the library; returns (params, paths)."""
    from galaxy_finetune.data.fetch import fetch_data
    from galaxy_finetune.core.params import Params
    from galaxy_finetune.data.split import read_catalog, split_catalog, write_splits
    from galaxy_finetune.data.store import build_store

    if catalog == "synthetic":
        data = {"source": "synthetic", "synthetic_n_per_class": 300, "synthetic_image_size": 64,
                "classes": ["smooth_round", "smooth_cigar", "edge_on_disk", "unbarred_spiral"]}
    else:
        data = {"source": "catalog", "catalog": str(SHARED / catalog / "catalog.csv"), "classes": CATALOGS[catalog]}
    params = Params.model_validate({"data": data, "fetch": {"offline": "error"},
                                    "model": {"encoder": str(ENCODER) if encoder == "imagenet" else "random",
                                              "random_arch": "tf_efficientnet_lite0"}})
    raw, enc, store, splits = (workdir / n for n in ("raw", "encoder", "store", "splits"))
    fetch_data(params, raw, enc, cache=workdir / "cache")
    cat = read_catalog(raw)
    size = min(input_size, 64) if catalog == "synthetic" else input_size
    build_store(cat, store, size, threads=2)
    write_splits(split_catalog(cat, 0.1, 0.2, 42), splits)
    return params, raw, enc, store, splits, size


def nested_subset(train: pd.DataFrame, per_class: int | None, seed: int = 0) -> pd.DataFrame:
    """The first `per_class` galaxies of each class in one seeded shuffle: smaller budgets are subsets of larger."""
    order = train.sample(frac=1.0, random_state=seed)
    if per_class is None:
        return order.sort_values("id_str")
    return order.groupby("label", sort=False).head(per_class).sort_values("id_str")


def test_accuracy_of_model(model_dir: Path, store: Path, splits: Path, work: Path) -> np.ndarray:
    """Per test galaxy, whether the exported model's prediction is right: the predict stage's own code."""
    from galaxy_finetune.inference.predict import predict_splits

    predict_splits(model_dir, store, splits, work / "predictions", ["test"], 128, "cpu", parts_root=work / "parts")
    table = pd.read_csv(work / "predictions/test.csv", keep_default_na=False)
    return (table["true_label"] == table["pred_label"]).to_numpy()


def features(encoder_dir: Path, store: Path, frame: pd.DataFrame, size: int, normalisation) -> np.ndarray:
    from galaxy_finetune.data.augment import eval_view
    from galaxy_finetune.data.encoder import build_encoder
    from galaxy_finetune.training.probe import pooled_features
    from galaxy_finetune.data.store import open_images

    images, rows = open_images(store), frame["row"].to_numpy()
    batches = (torch.from_numpy(np.ascontiguousarray(images[rows[i:i + 128]])).permute(0, 3, 1, 2)
               for i in range(0, len(rows), 128))
    return pooled_features(build_encoder(encoder_dir), batches, lambda b: eval_view(b, size, 1.2, normalisation))


def applies(recipe: str, encoder: str) -> bool:
    """The probe runs on every encoder; scratch only on the random init, lpft and writeup only on pretrained."""
    return recipe == "probe" or (recipe == "scratch") == (encoder == "random")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--catalogs", nargs="+", default=["gz2_spiral", "gz_decals_rings", "synthetic"])
    parser.add_argument("--encoders", nargs="+", default=["imagenet", "random"])
    parser.add_argument("--sizes", nargs="+", default=["all", "150", "50"], help="labels per class, or all")
    parser.add_argument("--recipes", nargs="+", default=["probe", "lpft", "writeup", "scratch"])
    parser.add_argument("--input-size", type=int, default=128, help="pixels fed to the model (store size too)")
    parser.add_argument("--steps", type=int, default=None, help="override train.steps of lpft")
    parser.add_argument("--set", nargs="*", default=[], help="extra recipe overrides: key=value (yaml values)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "recipes.jsonl")
    parser.add_argument("--resume", action="store_true", help="skip rows already in --out")
    parser.add_argument("--no-normalisation", action="store_true",
                        help="feed [0, 1] pixels, ignoring the encoder's mean/std (to measure what they add)")
    args = parser.parse_args()
    if not SHARED.is_dir():
        print(f"recipes: skipped, {SHARED} is absent (the real galaxies are only on the developers' machines)")
        return
    import yaml

    from galaxy_finetune.core.classes import read_classes
    from galaxy_finetune.core.cli import quiet_logs
    from galaxy_finetune.data.loading import read_split
    from galaxy_finetune.data.encoder import encoder_record
    from galaxy_finetune.core.params import TrainParams
    from galaxy_finetune.training.probe import fit_linear_probe
    from galaxy_finetune.training.train import FinetuneJob, finetune

    quiet_logs()
    done = set()
    if args.resume and args.out.is_file():
        done = {(r["catalog"], r["encoder"], r["size"], r["recipe"]) for r in map(json.loads, args.out.open())}
    extra = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    for catalog in args.catalogs:
        for encoder in args.encoders:
            work = Path(tempfile.mkdtemp(prefix=f"recipes-{catalog}-{encoder}-"))
            try:
                params, raw, enc, store, splits, size = prepare(work, catalog, encoder, args.input_size)
                manifest = json.loads((raw / "manifest.json").read_text())
                if args.no_normalisation:
                    record = encoder_record(enc)
                    (enc / "encoder.json").write_text(json.dumps({**record, "normalisation": None}))
                normalisation = encoder_record(enc).get("normalisation")
                full, val, test = (read_split(splits, n) for n in ("train", "val", "test"))
                n_classes = len(read_classes(raw))
                feats = {n: features(enc, store, f, size, normalisation) for n, f in
                         (("train", full), ("val", val), ("test", test))} if "probe" in args.recipes else {}
                for size_name in args.sizes:
                    per_class = None if size_name == "all" else int(size_name)
                    train = nested_subset(full, per_class)
                    if per_class is not None and train["label"].value_counts().min() < per_class:
                        continue  # fewer than that in some class: "all" covers it
                    for recipe in args.recipes:
                        key = (catalog, encoder, size_name, recipe)
                        if key in done or not applies(recipe, encoder):
                            continue
                        start = time.perf_counter()
                        row = {"catalog": catalog, "encoder": encoder, "size": size_name, "recipe": recipe,
                               "n_train": len(train), "n_val": len(val), "n_test": len(test), "input_size": size}
                        if recipe == "probe":
                            pick = full.index.get_indexer(train.index)
                            probe = fit_linear_probe(feats["train"][pick], train["label"].to_numpy(), feats["val"],
                                                     val["label"].to_numpy(), n_classes)
                            correct = probe.logits(feats["test"]).argmax(1) == test["label"].to_numpy()
                            row.update(steps=0, C=probe.C)
                        else:
                            sub = work / f"splits-{size_name}"
                            sub.mkdir(exist_ok=True)
                            train.to_csv(sub / "train.csv", index=False)
                            shutil.copy(splits / "val.csv", sub / "val.csv")
                            shutil.copy(splits / "test.csv", sub / "test.csv")
                            chosen = params.model_copy(update={"train": params.train.model_copy(
                                update={"recipe": "writeup" if recipe == "writeup" else "lpft"})})
                            name, tp = chosen.recipe(encoder == "imagenet")
                            # every recipe sees the same pixels, but the from-scratch recipe keeps its own (smaller) input
                            overrides = {"input_size": min(size, tp.input_size) if recipe == "scratch" else size,
                                         "resume": "never", **extra}
                            if recipe == "lpft" and args.steps is not None:
                                overrides["steps"] = args.steps
                            tp = TrainParams.model_validate({**tp.model_dump(), **overrides})
                            job = FinetuneJob(raw, store, sub, enc, work / "model", None, work / "ckpt")
                            run = finetune(tp, params.augment, name, manifest, job)
                            correct = test_accuracy_of_model(work / "model", store, sub, work)
                            row.update(input_size=tp.input_size, steps=run["steps_run"], epochs=run["epochs_run"],
                                       kept=run["kept"],
                                       probe_val_accuracy=run["linear_probe"]["val_accuracy"],
                                       val_accuracy=run["val_accuracy"], best_step=run["best_step"],
                                       lr=tp.lr, batch_size=tp.batch_size, val_curve=run["val_curve"],
                                       overrides={k: v for k, v in overrides.items() if k != "resume"})
                        low, high = bootstrap_ci(correct.astype(float))
                        row.update(accuracy=round(float(correct.mean()), 4), ci=[round(low, 4), round(high, 4)],
                                   wall_s=round(time.perf_counter() - start, 1),
                                   load_1min=round(os.getloadavg()[0], 1), normalisation=normalisation is not None)
                        print(json.dumps(row), flush=True)
                        with args.out.open("a") as fh:
                            fh.write(json.dumps(row) + "\n")
            finally:
                shutil.rmtree(work, ignore_errors=True)
    print_table(args.out)


def print_table(path: Path) -> None:
    rows = [json.loads(line) for line in path.open()]
    print("| catalog | encoder | labels/class | n train | recipe | test accuracy (95% CI) | steps | wall s | load |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        kept = " (kept probe)" if r.get("kept") == "linear_probe" else ""
        norm = "" if r.get("normalisation", True) or r["encoder"] == "random" else ", [0, 1] pixels"
        print(f"| {r['catalog']} | {r['encoder']}{norm} | {r['size']} | {r['n_train']} | {r['recipe']}{kept} | "
              f"{r['accuracy']:.1%} ({r['ci'][0]:.1%}-{r['ci'][1]:.1%}) | {r['steps']} | {r['wall_s']} | "
              f"{r.get('load_1min', '')} |")


if __name__ == "__main__":
    sys.exit(main())
