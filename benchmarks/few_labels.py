"""Few labels, many galaxies: semi-supervised fine-tuning against labels alone, on real galaxies (a benchmark).

On the shared GZ2 galaxies (spiral vs non-spiral, ../shared/real-galaxies) with the shared ImageNet EfficientNet-Lite0,
for each budget of N labels per class (split.train_per_class: the other training galaxies become the unlabelled
pool, their labels held back), all in one run and on the same val and test galaxies:

  probe        a logistic regression on the frozen encoder's features of the N labelled galaxies per class
  lpft         the default recipe on the labels alone (train.semi none)
  fixmatch     the same recipe, train.semi fixmatch
  ema_teacher  the same recipe, train.semi ema_teacher

and, with --ood, the same semi-supervised runs with a pool that also holds galaxies outside the label set: the 470
GZ DECaLS galaxies of ../shared/real-galaxies/gz_decals_rings (another survey, ring galaxies among them), with the
guard (train.semi_guard) on and off. Test accuracy with a 95% bootstrap interval over the test galaxies; every row
is appended to --out as it finishes (JSON lines, --resume skips rows already there).

    python benchmarks/few_labels.py --budgets 10 --steps 150 --out benchmarks/few_labels.jsonl
    python benchmarks/few_labels.py --budgets 5 25 50 --ood --resume --out benchmarks/few_labels.jsonl

Skips with a message when ../shared/real-galaxies is absent.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.recipes import ENCODER, SHARED, bootstrap_ci, features, test_accuracy_of_model  # noqa: E402

CLASSES = ["non_spiral", "spiral"]
METHODS = ("probe", "lpft", "fixmatch", "ema_teacher")


def catalog(work: Path, ood: bool) -> Path:
    """The GZ2 catalog with absolute file_loc; with `ood`, the DECaLS rings appended with empty labels."""
    gz2 = pd.read_csv(SHARED / "gz2_spiral" / "catalog.csv", dtype={"id_str": str})
    gz2["file_loc"] = [str(SHARED / "gz2_spiral" / p) for p in gz2["file_loc"]]
    frames = [gz2[["id_str", "file_loc", "label", "split"]]]
    if ood:
        rings = pd.read_csv(SHARED / "gz_decals_rings" / "catalog.csv", dtype={"id_str": str})
        frames.append(pd.DataFrame({"id_str": [f"decals_{i}" for i in rings["id_str"]] if "id_str" in rings
                                    else [f"decals_{i}" for i in range(len(rings))],
                                    "file_loc": [str(SHARED / "gz_decals_rings" / p) for p in rings["file_loc"]],
                                    "label": "", "split": ""}))
    path = work / ("catalog_ood.csv" if ood else "catalog.csv")
    pd.concat(frames, ignore_index=True).to_csv(path, index=False)
    return path


def prepare(work: Path, ood: bool, input_size: int):
    """fetch_data and store through the library; returns (params, raw, encoder, store, catalog frame)."""
    from galaxy_finetune.core.params import Params
    from galaxy_finetune.data.fetch import fetch_data
    from galaxy_finetune.data.split import read_catalog
    from galaxy_finetune.data.store import build_store

    params = Params.model_validate({"data": {"source": "catalog", "catalog": str(catalog(work, ood)),
                                             "classes": CLASSES},
                                    "fetch": {"offline": "error"}, "model": {"encoder": str(ENCODER)}})
    raw, enc, store = work / "raw", work / "encoder", work / "store"
    fetch_data(params, raw, enc, cache=work / "cache")
    frame = read_catalog(raw)
    build_store(frame, store, input_size, threads=2)
    return params, raw, enc, store, frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budgets", type=int, nargs="+", default=[5, 10, 25, 50], help="labels per class")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--ood", action="store_true", help="also the pool with galaxies outside the label set")
    parser.add_argument("--input-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=150, help="train.steps of every fine-tuning run")
    parser.add_argument("--set", nargs="*", default=[], help="train.* overrides for every run: key=value")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "few_labels.jsonl")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    if not SHARED.is_dir():
        print(f"few_labels: skipped, {SHARED} is absent (the real galaxies are only on the developers' machines)")
        return
    import yaml

    from galaxy_finetune.core.cli import quiet_logs
    from galaxy_finetune.core.layout import POOL
    from galaxy_finetune.core.params import TrainParams
    from galaxy_finetune.data.encoder import encoder_record
    from galaxy_finetune.data.loading import read_split
    from galaxy_finetune.data.split import split_catalog, write_splits
    from galaxy_finetune.training.probe import fit_linear_probe
    from galaxy_finetune.training.train import FinetuneJob, finetune

    quiet_logs()
    done = set()
    if args.resume and args.out.is_file():
        done = {(r["pool"], r["budget"], r["method"], r.get("guard")) for r in map(json.loads, args.out.open())}
    extra = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    for pool_kind in (["gz2"] + (["gz2+decals"] if args.ood else [])):
        ood = pool_kind != "gz2"
        work = Path(tempfile.mkdtemp(prefix=f"few-labels-{pool_kind}-"))
        try:
            params, raw, enc, store, frame = prepare(work, ood, args.input_size)
            manifest = json.loads((raw / "manifest.json").read_text())
            normalisation = encoder_record(enc).get("normalisation")
            for budget in args.budgets:
                splits_dir = work / f"splits-{budget}"
                write_splits(split_catalog(frame, 0.1, 0.2, 42, train_per_class=budget), splits_dir)
                train, val, test = (read_split(splits_dir, n) for n in ("train", "val", "test"))
                pool = read_split(splits_dir, POOL)
                feats = None
                runs = [(m, None) for m in args.methods if not (ood and m in ("probe", "lpft"))]
                if ood:  # the guard on and off, for the semi-supervised methods only
                    runs = [(m, g) for m, _ in runs for g in (True, False)]
                for method, guard in runs:
                    if (pool_kind, budget, method, guard) in done:
                        continue
                    start = time.perf_counter()
                    row = {"pool": pool_kind, "budget": budget, "method": method, "guard": guard,
                           "n_train": len(train), "n_pool": len(pool), "n_val": len(val), "n_test": len(test),
                           "input_size": args.input_size}
                    if method == "probe":
                        feats = feats or {n: features(enc, store, f, args.input_size, normalisation)
                                          for n, f in (("train", train), ("val", val), ("test", test))}
                        probe = fit_linear_probe(feats["train"], train["label"].to_numpy(), feats["val"],
                                                 val["label"].to_numpy(), len(CLASSES))
                        correct = probe.logits(feats["test"]).argmax(1) == test["label"].to_numpy()
                        row.update(steps=0)
                    else:
                        semi = {} if method == "lpft" else {"semi": method}
                        if guard is not None:
                            semi["semi_guard"] = guard
                        tp = TrainParams.model_validate({**params.train.model_dump(), "input_size": args.input_size,
                                                         "steps": args.steps, "resume": "never", "accelerator": "cpu",
                                                         **semi, **extra})
                        job = FinetuneJob(raw, store, splits_dir, enc, work / "model", None, work / "ckpt")
                        run = finetune(tp, params.augment, "train", manifest, job)
                        correct = test_accuracy_of_model(work / "model", store, splits_dir, work)
                        row.update(steps=run["steps_run"], kept=run["kept"], best_step=run["best_step"],
                                   val_accuracy=run["val_accuracy"], semi=run["semi"],
                                   probe_val_accuracy=run["linear_probe"]["val_accuracy"],
                                   train_s=run["wall_time_s"], overrides=extra)
                    low, high = bootstrap_ci(correct.astype(float))
                    row.update(accuracy=round(float(correct.mean()), 4), ci=[round(low, 4), round(high, 4)],
                               wall_s=round(time.perf_counter() - start, 1), load_1min=round(os.getloadavg()[0], 1))
                    print(json.dumps(row), flush=True)
                    with args.out.open("a") as fh:
                        fh.write(json.dumps(row) + "\n")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    print_table(args.out)


def print_table(path: Path) -> None:
    rows = [json.loads(line) for line in path.open()]
    print("| pool | labels/class | method | guard | test accuracy (95% CI) | pool used | steps | wall s (load) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r["pool"], r["budget"], METHODS.index(r["method"]))):
        kept = " (kept probe)" if r.get("kept") == "linear_probe" else ""
        semi = r.get("semi") or {}
        used = f"{semi['used_share']:.0%}" if "used_share" in semi else ""
        guard = "" if r.get("guard") is None else ("on" if r["guard"] else "off")
        print(f"| {r['pool']} ({r['n_pool']}) | {r['budget']} | {r['method']}{kept} | {guard} | {r['accuracy']:.1%} "
              f"({r['ci'][0]:.1%}-{r['ci'][1]:.1%}) | {used} | {r['steps']} | {r['wall_s']} ({r['load_1min']}) |")


if __name__ == "__main__":
    sys.exit(main())
