"""What the benchmarks share: provenance of a run, clocks, GPU sampling, and the synthetic galaxies they time.

torch is imported only by the helpers that need it, so benchmarks/pipeline.py (which times `dvc repro`
in a subprocess) stays light.
"""
from __future__ import annotations

import os
import platform
import statistics
import subprocess
import threading
import time
from pathlib import Path

import pandas as pd

from galaxy_finetune.core.classes import GALAXY_MNIST_CLASSES

ROOT = Path(__file__).resolve().parents[1]
CLASSES = list(GALAXY_MNIST_CLASSES)


# ----------------------------------------------------------------------------------------------- provenance

def load() -> str:
    """The 1/5/15-minute load averages: other work on a shared machine skews every number."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def commit() -> str:
    """HEAD's short hash, marked when galaxy_finetune/ has uncommitted edits."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "galaxy_finetune"], cwd=ROOT, capture_output=True,
                               text=True).stdout.strip()
        return head.stdout.strip() + ("+dirty(galaxy_finetune)" if dirty else "")
    except OSError:
        return "unknown"


def provenance(**extra) -> dict:
    """When, on what code and machine, under which load a benchmark ran; `extra` is added as given."""
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "commit": commit(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cpus", "python": platform.python_version(),
            "load_start": load(), **extra}


# ----------------------------------------------------------------------------------------------- clocks

def median(xs) -> float:
    return statistics.median(xs) if xs else float("nan")


def sync(device) -> None:
    """Wait for the device's queued work (a no-op on CPU)."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def now(device) -> float:
    """perf_counter after the device has finished its queued work."""
    sync(device)
    return time.perf_counter()


class GpuSampler:
    """GPU utilisation (%), sampled every `period` s in a background thread (NVML via torch, else nvidia-smi)."""

    def __init__(self, period: float = 0.2):
        self.period, self.samples, self._stop = period, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _read(self) -> float:
        import torch

        try:
            return float(torch.cuda.utilization())
        except Exception:
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                  "-i", "0"], capture_output=True, text=True)
            return float(out.stdout.strip().splitlines()[0])

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                self.samples.append(self._read())
            except Exception:
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)

    def summary(self) -> dict:
        s = self.samples
        return {"mean_pct": round(statistics.fmean(s), 1) if s else None,
                "median_pct": round(statistics.median(s), 1) if s else None, "samples": len(s)}


# ----------------------------------------------------------------------------------------------- data

def _render(job) -> None:
    """Render one galaxy at 64 px, upscale it (bicubic) to the source size and save it as a JPEG."""
    from PIL import Image

    from galaxy_finetune.data.synthetic import render_galaxy

    label, seed, index, source_size, path = job
    img = Image.fromarray(render_galaxy(label, seed, index, 64))
    if source_size != 64:
        img = img.resize((source_size, source_size), Image.BICUBIC)
    img.save(path, quality=90)


def write_galaxies(folder: Path, n: int, source_size: int, seed: int = 0, procs: int = 1) -> pd.DataFrame:
    """n synthetic galaxies rendered at 64 px, upscaled to source_size, saved as JPEGs under folder/images.

    Returns the catalog: id_str, file (relative to folder), file_loc (absolute), label, label_name."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rels = [f"images/{i:06d}.jpg" for i in range(n)]
    labels = [i % len(CLASSES) for i in range(n)]
    jobs = [(label, seed, i, source_size, folder / rel) for i, (label, rel) in enumerate(zip(labels, rels))]
    if procs > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(procs) as pool:
            pool.map(_render, jobs, chunksize=32)
    else:
        for job in jobs:
            _render(job)
    return pd.DataFrame({"id_str": [f"g{i:06d}" for i in range(n)], "file": rels,
                         "file_loc": [str(folder / rel) for rel in rels], "label": labels,
                         "label_name": [CLASSES[label] for label in labels]})


def write_splits(folder: Path, catalog: pd.DataFrame, n_train: int, n_val: int) -> Path:
    """The first n_train rows as train, the next n_val as val, the rest as test, in folder/splits/."""
    split_dir = folder / "splits"
    split_dir.mkdir(exist_ok=True)
    parts = {"train": catalog.iloc[:n_train], "val": catalog.iloc[n_train:n_train + n_val],
             "test": catalog.iloc[n_train + n_val:]}
    for name, frame in parts.items():
        frame.assign(row=frame.index)[["id_str", "label", "label_name", "row"]].to_csv(split_dir / f"{name}.csv",
                                                                                      index=False)
    return split_dir


def write_store(folder: Path, catalog: pd.DataFrame, size: int) -> Path:
    """The galaxies decoded once into folder/store (the store stage's images.npy), row i = catalog row i."""
    from galaxy_finetune.data.store import build_store

    build_store(catalog.assign(src=catalog["file_loc"]), folder / "store", size)
    return folder / "store"


def make_encoder_dir(folder: Path, arch: str = "convnext_nano") -> Path:
    """A seeded random encoder in folder/encoder, as fetch_data writes it."""
    from galaxy_finetune.data.encoder import resolve_encoder

    encoder_dir = folder / "encoder"
    resolve_encoder("random", encoder_dir, arch, 42)
    return encoder_dir
