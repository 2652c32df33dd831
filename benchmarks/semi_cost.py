"""What semi-supervised training costs per step, and that the pool's size does not change it (a benchmark).

One run of each, back to back in one process on the same store and the same labelled galaxies: the lpft recipe on
labels alone (the baseline), then train.semi fixmatch and ema_teacher at semi_ratio 1 and 2, each with a pool of
1,000 and of 1,000,000 galaxies (the pool's rows point into a small store, repeated: what is measured is the drawing
of a batch from the pool, which must not scan it). Each run trains --steps steps; the median time of the steps after
the first five (start-up) is its pace, printed as seconds per step and as a ratio to the baseline's.

    python benchmarks/semi_cost.py                   # the shared EfficientNet-Lite0 at 128 px, if present
    python benchmarks/semi_cost.py --encoder random  # a random ConvNeXt-Atto at 64 px, anywhere
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.recipes import ENCODER  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--encoder", default="shared", choices=["shared", "random"])
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    import lightning as L

    from galaxy_finetune.core.cli import quiet_logs
    from galaxy_finetune.core.layout import POOL
    from galaxy_finetune.core.params import Params, TrainParams
    from galaxy_finetune.data.split import read_catalog, split_catalog, write_splits
    from galaxy_finetune.training.train import FinetuneJob, finetune
    from tests.tiny import prepare

    quiet_logs()
    shared = args.encoder == "shared" and ENCODER.is_file()
    size = 128 if shared else 64
    params = Params.model_validate({
        "data": {"source": "synthetic", "synthetic_n_per_class": 250, "synthetic_image_size": size},
        "model": {"encoder": str(ENCODER) if shared else "random", "random_arch": "convnext_atto"},
        "train": {"input_size": size}, "scratch": {"input_size": size}, "writeup": {"input_size": size}})
    work = Path(tempfile.mkdtemp(prefix="semi-cost-"))
    paths = prepare(work, params, 0.1, 0.2)
    splits = split_catalog(read_catalog(paths.raw), 0.1, 0.2, 0, train_per_class=25)
    write_splits(splits, paths.splits)
    held = splits[POOL]
    rng = np.random.default_rng(0)

    class Clock(L.Callback):
        def __init__(self):
            self.ends = []

        def on_train_batch_end(self, *a):
            self.ends.append(time.perf_counter())

    rows = []
    runs = [("lpft", None, 0, 0)] + [(m, r, n, 0) for m in ("fixmatch", "ema_teacher") for r in (1, 2)
                                     for n in (1_000, 1_000_000)]
    for method, ratio, pool_size, _ in runs:
        if pool_size:
            pool = held.iloc[rng.integers(0, len(held), pool_size)].assign(id_str=[f"p{i}" for i in range(pool_size)])
            pool.to_csv(paths.splits / f"{POOL}.csv", index=False)
        name, train = params.recipe(shared)
        semi = {} if method == "lpft" else {"semi": method, "semi_ratio": ratio}
        train = TrainParams.model_validate({**train.model_dump(), "steps": args.steps, "patience": 10 ** 6,
                                            "resume": "never", "accelerator": "cpu", "input_size": size, **semi})
        clock = Clock()
        job = FinetuneJob(paths.raw, paths.store, paths.splits, paths.encoder, work / "model", None, work / "ckpt")
        start = time.perf_counter()
        finetune(train, params.augment, name, paths.manifest, job, callbacks=[clock])
        steps = np.diff(clock.ends)[4:]
        rows.append({"method": method, "semi_ratio": ratio, "pool": pool_size, "s_per_step": statistics.median(steps),
                     "wall_s": round(time.perf_counter() - start, 1), "load_1min": round(os.getloadavg()[0], 2)})
        print(json.dumps(rows[-1]), flush=True)
    base = rows[0]["s_per_step"]
    print(f"| method | semi_ratio | pool | s/step | x labels alone | load |  ({'shared EfficientNet-Lite0' if shared else 'random ConvNeXt-Atto'}, {size} px, batch {train.batch_size}, CPU)")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['semi_ratio'] or ''} | {r['pool']:,} | {r['s_per_step']:.3f} | "
              f"{r['s_per_step'] / base:.2f} | {r['load_1min']} |")
    if args.out:
        args.out.write_text(json.dumps({"encoder": "shared" if shared else "random", "input_size": size,
                                        "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
