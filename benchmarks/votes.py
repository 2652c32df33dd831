"""Regression of real Galaxy Zoo DECaLS vote fractions with a really pretrained encoder (a benchmark, not a test).

The 470 GZ DECaLS galaxies of ../shared/real-galaxies/gz_decals_rings carry three volunteer vote fractions
(featured_fraction, not_edge_on_fraction, no_spiral_fraction). This runs `train.task: regression` on them through
the library (fetch_data, store, split, the lpft recipe's finetune, predict) with the shared ImageNet
EfficientNet-Lite0 encoder, and prints per column the test MAE with a 95% bootstrap CI beside the constant
prediction's (the train split's mean), and the same for the RMSE.

    python benchmarks/votes.py --input-size 128 --steps 100

It skips with a message when ../shared/real-galaxies is absent (CI and users do not have it); nothing is copied
into the project (the work folder is a temporary directory).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "real-galaxies"
ENCODER = SHARED / "encoders" / "imagenet-efficientnet-lite0" / "model.safetensors"
CATALOG = SHARED / "gz_decals_rings" / "catalog.csv"
COLUMNS = ["featured_fraction", "not_edge_on_fraction", "no_spiral_fraction"]


def run(workdir: Path, input_size: int, steps: int, batch_size: int, samples: int = 1000) -> dict:
    """The whole measurement in `workdir`; returns per column {mae, ci, baseline_mae, rmse, baseline_rmse} and
    the run's record."""
    sys.path.insert(0, str(ROOT))
    from galaxy_finetune.analysis.metrics import bootstrap_mean_ci
    from galaxy_finetune.core.params import Params
    from galaxy_finetune.core.task import read_task
    from galaxy_finetune.data.fetch import fetch_data
    from galaxy_finetune.data.split import read_catalog, split_catalog, write_splits
    from galaxy_finetune.data.store import build_store
    from galaxy_finetune.inference.predict import predict_splits
    from galaxy_finetune.training.train import FinetuneJob, run_finetune

    params = Params.model_validate({
        "data": {"source": "catalog", "catalog": str(CATALOG), "label_cols": COLUMNS},
        "fetch": {"offline": "error"}, "model": {"encoder": str(ENCODER)},
        "train": {"task": "regression", "steps": steps, "input_size": input_size, "batch_size": batch_size,
                  "accelerator": "cpu"}})
    raw, enc, store, splits = (workdir / n for n in ("raw", "encoder", "store", "splits"))
    fetch_data(params, raw, enc, cache=workdir / "cache")
    catalog = read_catalog(raw)
    build_store(catalog, store, input_size, threads=2)
    write_splits(split_catalog(catalog, 0.1, 0.2, 42, read_task(raw)), splits)
    job = FinetuneJob(raw, store, splits, enc, workdir / "model", None, workdir / "checkpoints")
    start = time.perf_counter()
    record = run_finetune(params, job)
    predict_splits(workdir / "model", store, splits, workdir / "predictions", ["test"], 64, "cpu",
                   workdir / "parts")
    wall = time.perf_counter() - start
    test = pd.read_csv(workdir / "predictions" / "test.csv")
    train = pd.read_csv(splits / "train.csv")
    out = {"n_test": len(test), "n_train": len(train), "wall_s": round(wall, 1), "kept": record["kept"],
           "steps_run": record["steps_run"], "val_rmse": record["val_rmse"],
           "probe_val_rmse": record["linear_probe"]["val_rmse"], "columns": {}}
    for col in COLUMNS:
        truth, pred = test[f"true_{col}"].to_numpy(), test[f"pred_{col}"].to_numpy()
        base = np.full_like(truth, train[col].mean())
        err, base_err = np.abs(pred - truth), np.abs(base - truth)
        out["columns"][col] = {
            "mae": float(err.mean()), "mae_ci": bootstrap_mean_ci(err, samples, 0),
            "baseline_mae": float(base_err.mean()), "baseline_mae_ci": bootstrap_mean_ci(base_err, samples, 0),
            "rmse": float(np.sqrt((err ** 2).mean())), "baseline_rmse": float(np.sqrt((base_err ** 2).mean()))}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", type=Path, default=None, help="also write the result as JSON here")
    args = parser.parse_args()
    if not CATALOG.is_file() or not ENCODER.is_file():
        print(f"skipped: {SHARED} is absent (the shared real galaxies are only on the development machines)")
        return
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="votes-bench-") as tmp:
        result = run(Path(tmp), args.input_size, args.steps, args.batch_size)
    result.update(load_start=[round(x, 2) for x in load], load_end=[round(x, 2) for x in os.getloadavg()],
                  input_size=args.input_size, steps=args.steps, batch_size=args.batch_size)
    print(f"\nGZ DECaLS vote fractions, regression, ImageNet EfficientNet-Lite0, {args.input_size} px, "
          f"{result['steps_run']} steps (kept: {result['kept']}), test n = {result['n_test']}, "
          f"train n = {result['n_train']}, {result['wall_s']} s (load {result['load_start']} -> {result['load_end']})")
    print("| column | test MAE (95% CI) | constant (train mean) MAE (95% CI) | RMSE | constant RMSE |")
    print("|---|---|---|---|---|")
    for col, c in result["columns"].items():
        print(f"| {col} | {c['mae']:.4f} ({c['mae_ci'][0]:.4f}-{c['mae_ci'][1]:.4f}) | {c['baseline_mae']:.4f} "
              f"({c['baseline_mae_ci'][0]:.4f}-{c['baseline_mae_ci'][1]:.4f}) | {c['rmse']:.4f} | "
              f"{c['baseline_rmse']:.4f} |")
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
