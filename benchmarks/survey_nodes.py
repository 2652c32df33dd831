"""Benchmark: galaxy-classify over several "nodes" through torchrun, against one process, in the same run.

A tiny fine-tuned model (a random ConvNeXt-Atto fine-tuned one epoch on 24 synthetic galaxies, at --size px) and
--images synthetic galaxies (benchmarks/harness.write_galaxies, JPEG at --size px). Then the same galaxy-classify
command (CPU, gloo, --workers 0):
- one process: one torchrun launch, --nnodes 1, with one torch thread, then with --threads-one (default 2: every
  core of this machine);
- two "nodes": two torchrun launches on 127.0.0.1, --nnodes 2 --node-rank 0/1, one process each with one torch
  thread each (OMP_NUM_THREADS=1), so the two use the same two cores as the one process.
Reports each run's wall time (start to merged output, torch start-up included) and the images/s rank zero prints
(the galaxies of the whole run over rank zero's own prediction time: the job's rate when the ranks' shares take
as long), their ratios, and checks that the outputs are equal galaxy for galaxy. Prints JSON lines.

    flock /tmp/galaxy-heavy.lock python benchmarks/survey_nodes.py [--images 2000] [--size 64]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.harness import load, provenance, write_galaxies  # noqa: E402


def tiny_model(root: Path, size: int) -> Path:
    from galaxy_finetune.core.params import AugmentParams, Params
    from galaxy_finetune.training.train import FinetuneJob, finetune
    from tests.tiny import prepare

    params = Params.model_validate({
        "data": {"source": "synthetic", "synthetic_n_per_class": 6, "synthetic_image_size": size},
        "model": {"encoder": "random", "random_arch": "convnext_atto"},
        "train": {"lr": 1e-3, "batch_size": 8, "input_size": size, "epochs": 1, "steps": 0, "accelerator": "cpu"}})
    paths = prepare(root, params)
    finetune(params.train, AugmentParams(), "train", paths.manifest,
             FinetuneJob(paths.raw, paths.store, paths.splits, paths.encoder, root / "model", root / "live",
                         root / "ckpt"))
    return root / "model"


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def classify(model: Path, images: Path, out: Path, nodes: int, threads: int, batch: int) -> dict:
    port = _port()
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nodes), "--node-rank",
                               str(rank), "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port",
                               str(port), "-m", "galaxy_finetune.inference.classify", str(model), str(images), "-o",
                               str(out), "--accelerator", "cpu", "--workers", "0", "--batch-size", str(batch),
                               "--num-nodes", str(nodes), "--devices", "1"],
                              env=env, cwd=out.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for rank in range(nodes)]
    outs = [p.communicate() for p in procs]
    wall = time.perf_counter() - start
    if any(p.returncode for p in procs):
        raise SystemExit("\n".join(o[1][-3000:] for o in outs))
    rate = re.search(r"\(([\d.]+) images/s", outs[0][0])
    return {"wall_s": round(wall, 1), "images_per_s_rank0": float(rate.group(1)) if rate else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads-one", type=int, default=2)
    args = parser.parse_args()
    import pandas as pd

    from galaxy_finetune.core.files import read_table

    print(json.dumps(provenance(benchmark="survey_nodes", images=args.images, size=args.size, batch=args.batch)))
    with tempfile.TemporaryDirectory(dir=ROOT / "benchmarks") as tmp:
        tmp = Path(tmp)
        model = tiny_model(tmp / "model_run", args.size)
        write_galaxies(tmp / "survey", args.images, args.size, procs=2)
        single = classify(model, tmp / "survey/images", tmp / "single.csv", 1, 1, args.batch)
        print(json.dumps({"run": "1 process, 1 thread", **single, "load": load()}))
        one = classify(model, tmp / "survey/images", tmp / "one.csv", 1, args.threads_one, args.batch)
        print(json.dumps({"run": f"1 process, {args.threads_one} threads", **one, "load": load()}))
        two = classify(model, tmp / "survey/images", tmp / "two.csv", 2, 1, args.batch)
        print(json.dumps({"run": "2 torchrun nodes x 1 process, 1 thread each", **two, "load": load()}))
        for other in ("one.csv", "two.csv"):
            pd.testing.assert_frame_equal(read_table(tmp / "single.csv"), read_table(tmp / other), atol=1e-5)
        print(json.dumps({"same_output": True,
                          "wall_ratio_two_nodes_vs_one_thread": round(single["wall_s"] / two["wall_s"], 2),
                          "wall_ratio_two_nodes_vs_two_threads": round(one["wall_s"] / two["wall_s"], 2),
                          "throughput_ratio_two_nodes_vs_one_thread": round(
                              two["images_per_s_rank0"] / single["images_per_s_rank0"], 2),
                          "throughput_ratio_two_nodes_vs_two_threads": round(
                              two["images_per_s_rank0"] / one["images_per_s_rank0"], 2), "load": load()}))


if __name__ == "__main__":
    main()
