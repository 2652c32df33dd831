"""Training/predict throughput of the project's data path against two baselines, on CPU (and GPU if present).

    python benchmarks/throughput.py                         # CPU defaults: 224 px, batch 16, 12 timed steps
    python benchmarks/throughput.py --size 64 --batch 64    # a quicker CPU run
    python benchmarks/throughput.py --full-run              # GPU: GalaxyMNIST-sized 30-epoch run (10k images)
    python benchmarks/throughput.py --json out.json         # also write every number as JSON

What is timed (warm-up steps excluded, per-step medians so a busy shared machine skews less):

- bare:      timm convnext_nano(num_classes=4), forward + backward + AdamW step on float tensors already
             in memory (on the device, channels_last and bf16 autocast on GPU). The ceiling.
- project:   galaxy_finetune.data.GalaxyDataModule (JPEGs decoded once into a uint8 tensor, whole-batch
             indexing, train_view on the device in on_after_batch_transfer) feeding Zoobot's
             FinetuneableZoobotClassifier (galaxy_finetune.train.build_classifier) through a Lightning
             Trainer, with the project's precision/channels_last choices and its dvclive logger.
             The headline ratio divides by the bare loop run alone, just before and just after the project
             run. On CPU a bare step also runs between every two project steps (in a callback, outside the
             project's timed interval) for a per-step pairing under the same load; those interleaved bare
             steps come out up to ~10% slower at 224 px, so that ratio flatters the project and is secondary.
             On GPU the device is synced only at the ends of the timed window (the host queues ahead).
- reference: galaxy-datasets' CatalogDataModule with its default transforms (per-image PIL decode,
             RandomAffine, Resize, flips, 5x RandomErasing in its default 4 DataLoader workers) feeding the
             same classifier through the same Trainer: the reference run's path.
- data path: each path's loader alone (no model): images/s it can feed, i.e. the ceiling it puts on a
             fast accelerator.
- predict:   galaxy_finetune.predict.predict_frames (the predict stage's path) vs a bare no_grad forward.

Images: synthetic galaxies (galaxy_finetune.synthetic, 64 px) upscaled to --source-size and written as
JPEGs to a temp folder, so every path decodes the same files.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["smooth_round", "smooth_cigar", "edge_on_disk", "unbarred_spiral"]


# ----------------------------------------------------------------------------------------------- helpers

def load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "galaxy_finetune"], cwd=ROOT, capture_output=True,
                               text=True).stdout.strip()
        return out.stdout.strip() + ("+dirty(galaxy_finetune)" if dirty else "")
    except OSError:
        return "unknown"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def now(device: torch.device) -> float:
    sync(device)
    return time.perf_counter()


def median(xs):
    return statistics.median(xs) if xs else float("nan")


class GpuSampler:
    """GPU utilisation (%), sampled every `period` s in a background thread (NVML via torch, else nvidia-smi)."""

    def __init__(self, period: float = 0.2):
        self.period, self.samples, self._stop = period, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _read(self):
        try:
            return float(torch.cuda.utilization())
        except Exception:
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                  "-i", "0"], capture_output=True, text=True)
            return float(out.stdout.strip().splitlines()[0])

    def _run(self):
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
        return {"mean_pct": round(float(np.mean(s)), 1) if s else None,
                "median_pct": round(float(np.median(s)), 1) if s else None, "samples": len(s)}


# ----------------------------------------------------------------------------------------------- data

def _render(job):
    """Render one galaxy at 64 px, upscale it (bicubic) to the source size and save it as a JPEG."""
    from PIL import Image
    from galaxy_finetune.synthetic import render_galaxy
    label, seed, index, source_size, path = job
    img = Image.fromarray(render_galaxy(label, seed, index, 64))
    if source_size != 64:
        img = img.resize((source_size, source_size), Image.BICUBIC)
    img.save(path, quality=90)


def write_galaxies(folder: Path, n: int, source_size: int, seed: int = 0, procs: int = 1) -> pd.DataFrame:
    """n synthetic galaxies rendered at 64 px, upscaled to source_size, saved as JPEGs under folder/images."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rels = [f"images/{i:06d}.jpg" for i in range(n)]
    jobs = [(i % len(CLASSES), seed, i, source_size, folder / rel) for i, rel in enumerate(rels)]
    if procs > 1:
        import multiprocessing as mp
        with mp.get_context("fork").Pool(procs) as pool:
            pool.map(_render, jobs, chunksize=32)
    else:
        for job in jobs:
            _render(job)
    return pd.DataFrame({"id_str": [f"g{i:06d}" for i in range(n)], "file": rels,
                         "file_loc": [str(folder / rel) for rel in rels], "label": [i % len(CLASSES) for i in range(n)],
                         "label_name": [CLASSES[i % len(CLASSES)] for i in range(n)]})


def write_splits(folder: Path, catalog: pd.DataFrame, n_train: int, n_val: int) -> Path:
    split_dir = folder / "splits"
    split_dir.mkdir(exist_ok=True)
    parts = {"train": catalog.iloc[:n_train], "val": catalog.iloc[n_train:n_train + n_val],
             "test": catalog.iloc[n_train + n_val:]}
    for name, frame in parts.items():
        frame[["id_str", "file", "label", "label_name"]].to_csv(split_dir / f"{name}.csv", index=False)
    return split_dir


# ----------------------------------------------------------------------------------------------- models

def make_encoder_dir(folder: Path) -> Path:
    from galaxy_finetune.encoder import resolve_encoder
    enc = folder / "encoder"
    resolve_encoder("random", enc, "convnext_nano", 42)
    return enc


def project_classifier(encoder_dir: Path, lr: float = 1e-5):
    from galaxy_finetune.encoder import build_encoder
    from galaxy_finetune.params import TrainParams
    from galaxy_finetune.train import build_classifier
    return build_classifier(build_encoder(encoder_dir), len(CLASSES), TrainParams(lr=lr))


class BareStep:
    """timm convnext_nano + AdamW on pre-made tensors: forward, cross-entropy, backward, step."""

    def __init__(self, batch: int, size: int, device: torch.device, compile_model: bool = False):
        import timm
        torch.manual_seed(0)
        self.device = device
        self.model = timm.create_model("convnext_nano", num_classes=len(CLASSES)).to(device)
        if device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-5, weight_decay=0.05)
        self.x = torch.rand(batch, 3, size, size, device=device)
        if device.type == "cuda":
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        self.y = torch.randint(0, len(CLASSES), (batch,), device=device)
        self.forward = torch.compile(self.model) if compile_model else self.model

    def step(self):
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            loss = torch.nn.functional.cross_entropy(self.forward(self.x), self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    @torch.no_grad()
    def infer(self, x: torch.Tensor):
        self.model.eval()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            out = self.forward(x).float().softmax(1)
        self.model.train()
        return out


def model_split(bare: BareStep, steps: int) -> dict:
    """Median seconds of forward (+ loss), backward and the AdamW step of the bare loop (synced each phase)."""
    phases = {"forward": [], "backward": [], "optimizer": []}
    for _ in range(steps):
        t0 = now(bare.device)
        with torch.autocast(bare.device.type, dtype=torch.bfloat16, enabled=bare.device.type == "cuda"):
            loss = torch.nn.functional.cross_entropy(bare.forward(bare.x), bare.y)
        t1 = now(bare.device)
        bare.opt.zero_grad(set_to_none=True)
        loss.backward()
        t2 = now(bare.device)
        bare.opt.step()
        t3 = now(bare.device)
        for name, dt in zip(phases, (t1 - t0, t2 - t1, t3 - t2)):
            phases[name].append(dt)
    total = sum(median(v) for v in phases.values())
    return {name: {"ms": 1e3 * median(v), "share": median(v) / total} for name, v in phases.items()}


def time_bare(bare: BareStep, warmup: int, steps: int) -> list[float]:
    for _ in range(warmup):
        bare.step()
    if bare.device.type == "cuda":  # no sync per step: the host queues ahead, as in a real loop
        t0 = now(bare.device)
        for _ in range(steps):
            bare.step()
        return [(now(bare.device) - t0) / steps] * steps
    times = []
    for _ in range(steps):
        t0 = now(bare.device)
        bare.step()
        times.append(now(bare.device) - t0)
    return times


# ----------------------------------------------------------------------------------------------- trainer runs

def step_clock_class():
    from lightning.pytorch.callbacks import Callback

    class StepClock(Callback):
        """Seconds between consecutive on_train_batch_end calls; optionally a bare step in between (not counted)."""

        def __init__(self, device, bare: BareStep | None = None, sync_at=None):
            # sync_at: None syncs the device at every step; else only at these batch indexes (on a GPU a sync
            # per step would stop the host queueing work ahead; the sum between two syncs stays exact)
            self.device, self.bare, self.sync_at = device, bare, sync_at
            self.times, self.bare_times, self._t = [], [], None

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if self.sync_at is None or batch_idx in self.sync_at:
                sync(self.device)
            t = time.perf_counter()
            if self._t is not None:
                self.times.append(t - self._t)
            if self.bare is not None:
                self.bare.step()
                t2 = now(self.device)
                self.bare_times.append(t2 - t)
                t = t2
            self._t = t

    return StepClock


def trainer_for(device: torch.device, max_steps: int, callbacks, logger=False, **kw):
    import lightning as L
    return L.Trainer(accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
                     precision="bf16-mixed" if device.type == "cuda" else "32", max_steps=max_steps,
                     limit_val_batches=0, num_sanity_val_steps=0, logger=logger, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks, **kw)


class PhaseTimer:
    """Seconds spent in the project's data path inside a training run: batch indexing and the device view."""

    def __init__(self, device):
        self.device, self.fetch, self.view = device, [], []

    def wrap(self, data):
        dataset = data.datasets["train"]
        fetch = type(dataset).__getitems__.__get__(dataset)

        def timed_fetch(indices):
            t0 = time.perf_counter()
            out = fetch(indices)
            self.fetch.append(time.perf_counter() - t0)
            return out

        dataset.__getitems__ = timed_fetch  # the DataLoader's fetcher looks the method up on the instance
        hook = data.on_after_batch_transfer

        def timed_view(batch, dataloader_idx):
            t0 = now(self.device)
            out = hook(batch, dataloader_idx)
            if data.trainer is not None and data.trainer.training:
                self.view.append(now(self.device) - t0)
            return out

        data.on_after_batch_transfer = timed_view


def run_project(args, device, folder, split_dir, encoder_dir, interleave: BareStep | None):
    from dvclive.lightning import DVCLiveLogger
    from galaxy_finetune.data import GalaxyDataModule
    from galaxy_finetune.params import AugmentParams

    data = GalaxyDataModule(split_dir, folder, args.size, args.batch, AugmentParams())
    t0 = time.perf_counter()
    data.setup("fit")
    decode_s = time.perf_counter() - t0
    n_decoded = len(data.datasets["train"]) + len(data.datasets["val"])
    phases = PhaseTimer(device)
    if device.type == "cpu":  # on a GPU the timers would need a sync per step; data_path gives the view's cost
        phases.wrap(data)
    model = prepared_classifier(encoder_dir, device, args.compile)
    w, total = args.warmup, args.warmup + args.steps + 1
    gpu = device.type == "cuda"
    clock = step_clock_class()(device, interleave, sync_at={w, total - 1} if gpu else None)
    logger = DVCLiveLogger(dir=str(folder / "live"), save_dvc_exp=False, dvcyaml=None)
    trainer = trainer_for(device, total, [clock], logger=logger, log_every_n_steps=5)
    with GpuSampler() if gpu else _Null() as sampler:
        trainer.fit(model, datamodule=data)
    steps = clock.times[w:]
    if gpu:  # only the total between the two syncs is exact
        steps = [sum(steps) / len(steps)] * len(steps)
    return {"step_s": steps, "bare_s": clock.bare_times[w:], "fetch_s": phases.fetch[w + 1:],
            "view_s": phases.view[w + 1:], "decode_once_s": decode_s, "decoded_images": n_decoded,
            "gpu_utilisation": sampler.summary() if gpu else None}


def prepared_classifier(encoder_dir, device, compile_encoder: bool):
    """The project's classifier as both training paths use it: channels_last on GPU, optionally compiled."""
    model = project_classifier(encoder_dir)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    if compile_encoder:
        model.encoder = torch.compile(model.encoder)
    return model


def reference_datamodule(args, catalog: pd.DataFrame, n_train: int, n_val: int, batch: int):
    from galaxy_datasets.pytorch.galaxy_datamodule import CatalogDataModule
    from galaxy_datasets.transforms import default_view_config, get_galaxy_transform, minimal_view_config

    train_t = test_t = None  # None: the module's own defaults (output_size 224)
    if args.size != 224:
        train_cfg, test_cfg = default_view_config(), minimal_view_config()
        train_cfg.output_size = test_cfg.output_size = args.size
        train_t, test_t = get_galaxy_transform(train_cfg), get_galaxy_transform(test_cfg)
    cat = catalog[["id_str", "file_loc", "label"]]
    return CatalogDataModule(label_cols=["label"], train_transform=train_t, test_transform=test_t,
                             train_catalog=cat.iloc[:n_train], val_catalog=cat.iloc[n_train:n_train + n_val],
                             batch_size=batch, num_workers=args.ref_workers)


def run_reference(args, device, catalog, n_train, n_val, encoder_dir):
    dm = reference_datamodule(args, catalog, n_train, n_val, args.batch)
    model = prepared_classifier(encoder_dir, device, args.compile)
    w, total = args.warmup, args.warmup + args.steps + 1
    gpu = device.type == "cuda"
    clock = step_clock_class()(device, None, sync_at={w, total - 1} if gpu else None)
    trainer = trainer_for(device, total, [clock])
    with GpuSampler() if gpu else _Null() as sampler:
        trainer.fit(model, datamodule=dm)
    steps = clock.times[w:]
    if gpu:
        steps = [sum(steps) / len(steps)] * len(steps)
    return {"step_s": steps, "gpu_utilisation": sampler.summary() if gpu else None}


# ----------------------------------------------------------------------------------------------- data path only

def data_path_project(args, device, folder, split_dir, epochs: int) -> dict:
    from galaxy_finetune.augment import train_view
    from galaxy_finetune.data import GalaxyDataModule
    from galaxy_finetune.params import AugmentParams

    aug = AugmentParams()
    data = GalaxyDataModule(split_dir, folder, args.size, args.batch, aug)
    data.setup("fit")
    loader = data.train_dataloader()
    host_n, t0 = 0, time.perf_counter()
    for batch in loader:  # the host's share when the view runs on an accelerator: index (+ pin on CUDA)
        host_n += len(batch["label"])
    host_s = time.perf_counter() - t0
    n, t0 = 0, None
    for _ in range(epochs):
        for batch in loader:
            view = train_view(batch["image"].to(device, non_blocking=True), args.size, aug)
            if t0 is None:  # the first batch warms up (thread pools, kernels): count from the second
                t0 = now(device)
                continue
            n += len(view)
    seconds = now(device) - t0
    return {"images": n, "seconds": seconds, "images_per_s": n / seconds,
            "host_index_only_images_per_s": host_n / host_s}


def data_path_reference(args, device, catalog, n_train, n_val, epochs: int) -> dict:
    dm = reference_datamodule(args, catalog, n_train, n_val, args.batch)
    dm.setup("fit")
    loader = dm.train_dataloader()
    n, t0, first = 0, None, None
    start = time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            batch["image"].to(device, non_blocking=True)
            if t0 is None:  # exclude worker start-up: count from the first batch on
                first, t0 = time.perf_counter() - start, now(device)
                continue
            n += len(batch["image"])
    seconds = now(device) - t0
    del loader
    return {"images": n, "seconds": seconds, "images_per_s": n / seconds, "first_batch_s": first,
            "workers": args.ref_workers}


# ----------------------------------------------------------------------------------------------- predict

def run_predict(args, device, folder, catalog, encoder_dir, bare_infer: BareStep) -> dict:
    from galaxy_finetune.predict import predict_frames

    model = project_classifier(encoder_dir).eval()
    frame = catalog.iloc[:args.predict_images][["id_str", "file", "label"]].reset_index(drop=True)
    config = {"eval_zoom": 1.2, "input_size": args.size, "classes": CLASSES}
    acc = "gpu" if device.type == "cuda" else "cpu"
    _, timing = predict_frames(model, config, {"warmup": frame.iloc[:args.predict_batch]}, folder,
                               args.predict_batch, acc)
    _, timing = predict_frames(model, config, {"test": frame}, folder, args.predict_batch, acc)
    x = torch.rand(args.predict_batch, 3, args.size, args.size, device=device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    bare_infer.infer(x)
    times = []
    for _ in range(max(2, args.predict_images // args.predict_batch)):
        t0 = now(device)
        bare_infer.infer(x)
        times.append(now(device) - t0)
    bare_ips = args.predict_batch / median(times)
    return {"project_images_per_s": timing["test_images_per_s"], "bare_images_per_s": round(bare_ips, 1),
            "images": len(frame), "batch": args.predict_batch,
            "ratio_project_vs_bare": round(timing["test_images_per_s"] / bare_ips, 3)}


# ----------------------------------------------------------------------------------------------- full run

def run_full(args, device, folder) -> dict:
    """A GalaxyMNIST-sized run through galaxy_finetune.train.finetune itself: 30 epochs with validation."""
    from galaxy_finetune.params import AugmentParams, TrainParams
    from galaxy_finetune.train import finetune

    n = args.full_images
    n_train, n_val = int(n * 0.7), int(n * 0.1)
    full = folder / "full"
    t0 = time.perf_counter()
    catalog = write_galaxies(full, n, args.source_size, seed=1, procs=os.cpu_count() or 1)
    write_splits(full, catalog, n_train, n_val)
    (full / "manifest.json").write_text(json.dumps({"profile": "benchmark"}))
    prep_s = time.perf_counter() - t0
    encoder_dir = make_encoder_dir(full)
    train = TrainParams(epochs=args.full_epochs, patience=args.full_epochs + 1, batch_size=args.batch,
                        input_size=args.size, accelerator="gpu" if device.type == "cuda" else "cpu",
                        devices=1, resume="never")
    with GpuSampler() if device.type == "cuda" else _Null() as sampler:
        t0 = time.perf_counter()
        run = finetune(train, AugmentParams(), "benchmark", CLASSES, full / "splits", full, encoder_dir,
                       full / "model", full / "live", full / "checkpoints")
        wall = time.perf_counter() - t0
    return {"images": n, "train": n_train, "val": n_val, "epochs": run["epochs_run"],
            "finetune_wall_s": round(wall, 1), "fit_wall_s": run["wall_time_s"],
            "train_images_per_s": run["train_images_per_s"], "data_prep_s (not counted)": round(prep_s, 1),
            "gpu_utilisation": sampler.summary() if device.type == "cuda" else None, "batch": args.batch}


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# ----------------------------------------------------------------------------------------------- main

def main(argv=None) -> dict:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--size", type=int, default=224, help="model input size (default 224)")
    p.add_argument("--source-size", type=int, help="JPEG size on disk (default: --size; GalaxyMNIST is 224)")
    p.add_argument("--batch", type=int, help="training batch (default 16 on CPU, 256 on GPU)")
    p.add_argument("--steps", type=int, help="timed steps per path (default 12 on CPU, 50 on GPU)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    p.add_argument("--ref-workers", type=int, default=4, help="reference DataLoader workers (its default: 4)")
    p.add_argument("--predict-images", type=int, help="images for predict (default 64 on CPU, 4096 on GPU)")
    p.add_argument("--predict-batch", type=int, help="predict batch (default 32 on CPU, 256 on GPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile the bare model and both encoders")
    p.add_argument("--skip", nargs="*", default=[], choices=["reference", "predict", "datapath", "interleave"],
                   help="leave out parts")
    p.add_argument("--full-run", action="store_true", help="also the GalaxyMNIST-sized finetune run (default on GPU)")
    p.add_argument("--no-full-run", action="store_true")
    p.add_argument("--full-images", type=int, default=10_000)
    p.add_argument("--full-epochs", type=int, default=30)
    p.add_argument("--json", type=Path, help="also write every number here")
    args = p.parse_args(argv)

    device = torch.device("cuda" if (args.device == "cuda" or (args.device == "auto" and cuda)) else "cpu")
    gpu = device.type == "cuda"
    args.source_size = args.source_size or args.size
    args.batch = args.batch or (256 if gpu else 16)
    args.steps = args.steps or (50 if gpu else 12)
    args.predict_images = args.predict_images or (4096 if gpu else 64)
    args.predict_batch = args.predict_batch or (256 if gpu else 32)
    full_run = (args.full_run or gpu) and not args.no_full_run
    if gpu:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    import lightning  # noqa: F401  (sets its loggers up; quieten them afterwards)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "zoobot", ""):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")

    info = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "commit": commit(),
            "command": "python " + " ".join([Path(sys.argv[0]).name if argv is None else "throughput.py",
                                             *(sys.argv[1:] if argv is None else argv)]),
            "device": torch.cuda.get_device_name(0) if gpu else f"cpu {platform.processor() or platform.machine()}",
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "size": args.size, "source_size": args.source_size, "batch": args.batch, "steps": args.steps,
            "warmup": args.warmup, "precision": "bf16-mixed, channels_last" if gpu else "fp32",
            "compile": args.compile, "load_start": load()}
    print(json.dumps(info), flush=True)
    out = {"info": info}
    folder = Path(tempfile.mkdtemp(prefix="galaxy-throughput-"))
    try:
        n_train = args.batch * (args.warmup + args.steps + 2)
        n_val = args.batch
        n_all = n_train + n_val + max(args.predict_images, args.batch)
        t0 = time.perf_counter()
        catalog = write_galaxies(folder, n_all, args.source_size, procs=os.cpu_count() or 1)
        split_dir = write_splits(folder, catalog, n_train, n_val)
        encoder_dir = make_encoder_dir(folder)
        print(f"wrote {n_all} JPEGs ({args.source_size} px) in {time.perf_counter() - t0:.1f} s", flush=True)

        # --- data path alone: what each loader can feed
        if "datapath" not in args.skip:
            dp = {"project": data_path_project(args, device, folder, split_dir, epochs=3), "load": load()}
            if "reference" not in args.skip:
                dp["reference"] = data_path_reference(args, device, catalog, n_train, n_val, epochs=2)
                dp["speedup_project_vs_reference"] = dp["project"]["images_per_s"] / dp["reference"]["images_per_s"]
            out["data_path"] = dp
            print("data path:", json.dumps(dp, default=float), flush=True)

        # --- training step: bare (alone, then interleaved with the project on CPU), project, reference
        bare = BareStep(args.batch, args.size, device, args.compile)
        interleave = not gpu and "interleave" not in args.skip
        load_before = load()
        n_alone = args.steps if gpu else max(3, args.steps // 3)
        bare_alone = time_bare(bare, args.warmup, n_alone)
        proj = run_project(args, device, folder, split_dir, encoder_dir, bare if interleave else None)
        bare_alone += time_bare(bare, 1, n_alone)  # again after, so a load change shows
        if not interleave:
            proj["bare_s"] = bare_alone
        step = {"bare_alone_s": bare_alone, **{k: v for k, v in proj.items()}, "load_before": load_before,
                "load_after_project": load()}
        if "reference" not in args.skip:
            ref = run_reference(args, device, catalog, n_train, n_val, encoder_dir)
            step["reference_s"], step["reference_gpu_utilisation"] = ref["step_s"], ref["gpu_utilisation"]
            step["load_after_reference"] = load()
        out["train_step_raw"] = step
        b = args.batch
        summary = {
            # headline: the bare loop run alone (before and after the project run); the bare steps run
            # between project steps come out ~10% slower on CPU, which would flatter the project
            "bare_images_per_s": b / median(bare_alone),
            "bare_interleaved_images_per_s": b / median(proj["bare_s"]),
            "project_images_per_s": b / median(proj["step_s"]),
            "ratio_project_vs_bare": median(bare_alone) / median(proj["step_s"]),
            "ratio_project_vs_bare_interleaved": median(proj["bare_s"]) / median(proj["step_s"]),
            "data_fetch_ms_per_step": 1e3 * median(proj["fetch_s"]),
            "device_view_ms_per_step": 1e3 * median(proj["view_s"]),
            "decode_once_images_per_s": proj["decoded_images"] / proj["decode_once_s"],
        }
        if interleave:
            pairs = [bs / ps for bs, ps in zip(proj["bare_s"], proj["step_s"])]
            summary["ratio_project_vs_bare_paired_median"] = median(pairs)
            paired = proj["bare_s"][:len(proj["step_s"])]
            summary["ratio_project_vs_bare_sum"] = sum(paired) / sum(proj["step_s"][:len(paired)])
        step_s = median(proj["step_s"])
        if gpu and "data_path" in out:  # the data path alone, per batch (index + H2D + view, synced once)
            data_s = b / out["data_path"]["project"]["images_per_s"]
            summary["data_fetch_ms_per_step"] = float("nan")
            summary["device_view_ms_per_step"] = 1e3 * data_s
        else:
            data_s = median(proj["fetch_s"]) + median(proj["view_s"])
        if gpu:
            summary["gpu_utilisation_project"] = proj["gpu_utilisation"]
        model_s = median(bare_alone)
        summary["share_of_step"] = {"model fwd+bwd+AdamW (bare step alone)": model_s / step_s,
                                    "data path (index + view)": data_s / step_s,
                                    "rest: Lightning/zoobot/logging (+ noise)": 1 - (model_s + data_s) / step_s}
        if "reference_s" in step:
            summary["reference_images_per_s"] = b / median(step["reference_s"])
            summary["speedup_project_vs_reference"] = median(step["reference_s"]) / step_s
            summary["ratio_reference_vs_bare"] = median(bare_alone) / median(step["reference_s"])
            if gpu:
                summary["gpu_utilisation_reference"] = step["reference_gpu_utilisation"]
        summary["model_split"] = model_split(bare, 3 if not gpu else 10)
        out["train_step"] = summary
        print("train step:", json.dumps(summary, indent=1, default=float), flush=True)

        if "predict" not in args.skip:
            out["predict"] = {**run_predict(args, device, folder, catalog, encoder_dir, bare), "load": load()}
            print("predict:", json.dumps(out["predict"]), flush=True)
        del bare
        if full_run:
            out["full_run"] = {**run_full(args, device, folder), "load": load()}
            print("full run:", json.dumps(out["full_run"]), flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    out["info"]["load_end"] = load()
    report(out, gpu)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=float) + "\n")
    return out


def report(out: dict, gpu: bool) -> None:
    s, info = out.get("train_step", {}), out["info"]
    lines = [f"\n== {info['device']} | {info['size']} px | batch {info['batch']} | {info['precision']} | "
             f"load {info['load_start']} -> {info['load_end']}"]
    if s:
        lines.append(f"bare timm loop      {s['bare_images_per_s']:8.1f} img/s (alone, before + after the project run; "
                     f"{s['bare_interleaved_images_per_s']:.1f} img/s interleaved)")
        lines.append(f"project path        {s['project_images_per_s']:8.1f} img/s  "
                     f"= {s['ratio_project_vs_bare']:.3f}x bare (target >= 0.9)"
                     + (f"; vs interleaved bare {s['ratio_project_vs_bare_interleaved']:.3f}x, "
                        f"paired median {s['ratio_project_vs_bare_paired_median']:.3f}x"
                        if "ratio_project_vs_bare_paired_median" in s else ""))
        if "reference_images_per_s" in s:
            lines.append(f"reference path      {s['reference_images_per_s']:8.1f} img/s  "
                         f"-> project is {s['speedup_project_vs_reference']:.2f}x the reference")
    if "data_path" in out:
        dp = out["data_path"]
        lines.append(f"data path alone     project {dp['project']['images_per_s']:.0f} img/s "
                     f"(host side, index only: {dp['project']['host_index_only_images_per_s']:.0f} img/s)"
                     + (f", reference {dp['reference']['images_per_s']:.0f} img/s "
                        f"({dp['speedup_project_vs_reference']:.1f}x)" if "reference" in dp else ""))
    if "predict" in out:
        pr = out["predict"]
        lines.append(f"predict             project {pr['project_images_per_s']} img/s, bare {pr['bare_images_per_s']} "
                     f"img/s ({pr['ratio_project_vs_bare']:.2f}x, {pr['images']} images)")
    if "full_run" in out:
        fr = out["full_run"]
        lines.append(f"full run            {fr['epochs']} epochs x {fr['train']} train in {fr['fit_wall_s']} s "
                     f"({fr['train_images_per_s']} img/s), GPU util {fr['gpu_utilisation']}")
    if gpu and s:
        lines.append(f"GPU target >= 4000 img/s: {'met' if s['project_images_per_s'] >= 4000 else 'NOT met'}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
