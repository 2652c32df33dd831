"""Training/predict throughput of the project's data path against two baselines, on CPU (and GPU if present).

    python benchmarks/throughput.py                         # CPU defaults: 224 px, batch 16, 12 timed steps
    python benchmarks/throughput.py --size 64 --batch 64    # a quicker CPU run
    python benchmarks/throughput.py --full-run              # GPU: GalaxyMNIST-sized 30-epoch run (10k images)
    python benchmarks/throughput.py --skip reference full   # leave runners out (names below)
    python benchmarks/throughput.py --json out.json         # also write every number as JSON

One runner per measurement; each run() returns a dict, and report() puts them in one table (the shape of
timm's benchmark.py). What is timed (warm-up steps excluded, per-step medians so a busy shared machine
skews less):

- datapath:  each path's loader alone (no model): images/s it can feed, i.e. the ceiling it puts on a
             fast accelerator (the project's, and the reference's unless `reference` is skipped).
- train:     bare: timm convnext_nano(num_classes=4), forward + backward + AdamW step on float tensors already
             in memory (on the device, channels_last and bf16 autocast on GPU). The ceiling.
             project: galaxy_finetune.data.loading.GalaxyDataModule (JPEGs decoded once into a uint8 tensor,
             whole-batch indexing, train_view on the device in on_after_batch_transfer) feeding Zoobot's
             FinetuneableZoobotClassifier (galaxy_finetune.training.model_io.build_classifier) through a Lightning
             Trainer, with the project's precision/channels_last choices and its dvclive logger.
             The headline ratio divides by the bare loop run alone, just before and just after the project
             run. On CPU a bare step also runs between every two project steps (in a callback, outside the
             project's timed interval) for a per-step pairing under the same load; those interleaved bare
             steps come out up to ~10% slower at 224 px, so that ratio flatters the project and is secondary
             (`--skip interleave` leaves them out). On GPU the device is synced only at the ends of the timed
             window (the host queues ahead).
- reference: galaxy-datasets' CatalogDataModule with its default transforms (per-image PIL decode,
             RandomAffine, Resize, flips, 5x RandomErasing in its default 4 DataLoader workers) feeding the
             same classifier through the same Trainer: the reference run's path.
- predict:   galaxy_finetune.inference.predict.predict_frames (the predict stage's path) vs a bare no_grad forward.
- full:      a GalaxyMNIST-sized run through galaxy_finetune.training.train.finetune itself (default on GPU only).

Images: synthetic galaxies (galaxy_finetune.data.synthetic, 64 px) upscaled to --source-size and written as
JPEGs to a temp folder, so every path decodes the same files.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd
import torch

if not __package__:  # run as a script: import this checkout's packages, never an installed copy
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import (CLASSES, GpuSampler, load, make_encoder_dir, median, now, provenance,  # noqa: E402
                                sync, write_galaxies, write_splits, write_store)


# ----------------------------------------------------------------------------------------------- models

class BareStep:
    """timm convnext_nano (or `arch`) + AdamW on pre-made tensors: forward, cross-entropy, backward, step."""

    def __init__(self, batch: int, size: int, device: torch.device, compile_model: bool = False,
                 backend: str = "inductor", arch: str = "convnext_nano"):
        import timm
        torch.manual_seed(0)
        self.device = device
        self.model = timm.create_model(arch, num_classes=len(CLASSES)).to(device)
        if device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-5, weight_decay=0.05)
        self.x = torch.rand(batch, 3, size, size, device=device)
        if device.type == "cuda":
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        self.y = torch.randint(0, len(CLASSES), (batch,), device=device)
        self.forward = torch.compile(self.model, backend=backend) if compile_model else self.model

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


def bare_infer_images_per_s(bare: BareStep, batch: int, size: int, batches: int) -> float:
    """Images/s of the bare model's no_grad forward (softmax included) on one in-memory batch, after one warm-up."""
    x = torch.rand(batch, 3, size, size, device=bare.device)
    if bare.device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    bare.infer(x)
    times = []
    for _ in range(max(2, batches)):
        t0 = now(bare.device)
        bare.infer(x)
        times.append(now(bare.device) - t0)
    return batch / median(times)


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


def project_classifier(encoder_dir: Path, device: torch.device | None = None, compile_encoder: bool = False,
                       lr: float = 1e-5, backend: str = "inductor"):
    """The project's classifier as the training paths use it: channels_last on GPU, optionally compiled
    (`backend`: torch.compile's; "eager" only traces, for a quick CPU check of the compiled path)."""
    from galaxy_finetune.data.encoder import build_encoder
    from galaxy_finetune.training.classifier import build_classifier
    from galaxy_finetune.core.params import TrainParams

    model = build_classifier(build_encoder(encoder_dir), len(CLASSES), TrainParams(lr=lr))
    if device is not None and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    if compile_encoder:  # in place (nn.Module.compile): parameter names, and so Zoobot's layer decay, stay as they are
        model.encoder.compile(backend=backend)
    return model


# ----------------------------------------------------------------------------------------------- instruments

def step_clock(device, bare: BareStep | None = None, sync_at=None):
    """A callback timing the seconds between consecutive training steps (see StepClock)."""
    from lightning.pytorch.callbacks import Callback

    class StepClock(Callback):
        """Seconds between consecutive on_train_batch_end calls; optionally a bare step in between (not counted).

        sync_at: None syncs the device at every step; else only at these batch indexes (on a GPU a sync per
        step would stop the host queueing work ahead; the sum between two syncs stays exact)."""

        def __init__(self):
            self.times, self.bare_times, self._t = [], [], None

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if sync_at is None or batch_idx in sync_at:
                sync(device)
            t = time.perf_counter()
            if self._t is not None:
                self.times.append(t - self._t)
            if bare is not None:
                bare.step()
                t2 = now(device)
                self.bare_times.append(t2 - t)
                t = t2
            self._t = t

    return StepClock()


def trainer_for(device: torch.device, max_steps: int, callbacks, logger=False, **kw):
    import lightning as L
    return L.Trainer(accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
                     precision="bf16-mixed" if device.type == "cuda" else "32", max_steps=max_steps,
                     limit_val_batches=0, num_sanity_val_steps=0, logger=logger, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks, **kw)


def timed_fit(bench: Bench, model, data, callbacks=(), interleave: BareStep | None = None, logger=False):
    """Fit `model` on `data` for warmup + steps + 1 steps; (seconds of each timed step, GPU utilisation or None).

    On a GPU the device is synced only at the two ends of the timed window (the host queues ahead, as in a
    real run), so each step gets the window's mean; `interleave` runs a bare step between project steps
    (outside the timed interval; see step_clock), its times left in the clock's bare_times."""
    args = bench.args
    w, total = args.warmup, args.warmup + args.steps + 1
    clock = step_clock(bench.device, interleave, sync_at={w, total - 1} if bench.gpu else None)
    trainer = trainer_for(bench.device, total, [clock, *callbacks], logger=logger, log_every_n_steps=5)
    with bench.sampler() as sampler:
        trainer.fit(model, datamodule=data)
    steps = clock.times[w:]
    if bench.gpu:  # only the total between the two syncs is exact
        steps = [sum(steps) / len(steps)] * len(steps)
    return steps, (sampler.summary() if bench.gpu else None), clock.bare_times[w:]


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


# ----------------------------------------------------------------------------------------------- the shared setup

@dataclass
class Bench:
    """What every runner measures on: the options, the device, and the galaxies written once for all of them."""
    args: argparse.Namespace
    device: torch.device
    folder: Path
    catalog: pd.DataFrame = field(repr=False)
    store_dir: Path
    split_dir: Path
    encoder_dir: Path
    n_train: int
    n_val: int

    @property
    def gpu(self) -> bool:
        return self.device.type == "cuda"

    @cached_property
    def bare(self) -> BareStep:
        """The bare loop, built once: the train runner times it, predict reuses its model for inference."""
        return BareStep(self.args.batch, self.args.size, self.device, self.args.compile)

    def sampler(self):
        """GPU utilisation while a block runs (nothing on CPU)."""
        return GpuSampler() if self.gpu else nullcontext()


def prepare(args: argparse.Namespace, device: torch.device, folder: Path) -> Bench:
    """Write the galaxies every runner reads (JPEGs, splits, a random encoder) into `folder`."""
    n_train = args.batch * (args.warmup + args.steps + 2)
    n_val = args.batch
    n_all = n_train + n_val + max(args.predict_images, args.batch)
    t0 = time.perf_counter()
    catalog = write_galaxies(folder, n_all, args.source_size, procs=os.cpu_count() or 1)
    split_dir = write_splits(folder, catalog, n_train, n_val)
    store_dir = write_store(folder, catalog, args.source_size)
    encoder_dir = make_encoder_dir(folder)
    print(f"wrote {n_all} JPEGs ({args.source_size} px) and their store in {time.perf_counter() - t0:.1f} s",
          flush=True)
    return Bench(args, device, folder, catalog, store_dir, split_dir, encoder_dir, n_train, n_val)


# ----------------------------------------------------------------------------------------------- runners

class Runner:
    """One measurement on a Bench; run() returns its numbers as a dict."""
    name = ""

    def __init__(self, bench: Bench):
        self.bench = bench


class DataPath(Runner):
    """Each path's loader alone, no model: the images/s it can feed."""
    name = "datapath"

    def run(self) -> dict:
        out = {"project": self.project(epochs=3)}
        if "reference" not in self.bench.args.skip:
            out["reference"] = self.reference(epochs=2)
            out["speedup_project_vs_reference"] = out["project"]["images_per_s"] / out["reference"]["images_per_s"]
        return out

    def project(self, epochs: int) -> dict:
        from galaxy_finetune.data.augment import train_view
        from galaxy_finetune.data.loading import GalaxyDataModule
        from galaxy_finetune.core.params import AugmentParams

        b, args, aug = self.bench, self.bench.args, AugmentParams()
        data = GalaxyDataModule(b.store_dir, b.split_dir, args.size, args.batch, aug)
        data.setup("fit")
        loader = data.train_dataloader()
        host_n, t0 = 0, time.perf_counter()
        for batch in loader:  # the host's share when the view runs on an accelerator: index (+ pin on CUDA)
            host_n += len(batch["label"])
        host_s = time.perf_counter() - t0
        n, t0 = 0, None
        for _ in range(epochs):
            for batch in loader:
                view = train_view(batch["image"].to(b.device, non_blocking=True), args.size, aug)
                if t0 is None:  # the first batch warms up (thread pools, kernels): count from the second
                    t0 = now(b.device)
                    continue
                n += len(view)
        seconds = now(b.device) - t0
        return {"images": n, "seconds": seconds, "images_per_s": n / seconds,
                "host_index_only_images_per_s": host_n / host_s}

    def reference(self, epochs: int) -> dict:
        b, args = self.bench, self.bench.args
        dm = reference_datamodule(args, b.catalog, b.n_train, b.n_val, args.batch)
        dm.setup("fit")
        loader = dm.train_dataloader()
        n, t0, first = 0, None, None
        start = time.perf_counter()
        for _ in range(epochs):
            for batch in loader:
                batch["image"].to(b.device, non_blocking=True)
                if t0 is None:  # exclude worker start-up: count from the first batch on
                    first, t0 = time.perf_counter() - start, now(b.device)
                    continue
                n += len(batch["image"])
        seconds = now(b.device) - t0
        del loader
        return {"images": n, "seconds": seconds, "images_per_s": n / seconds, "first_batch_s": first,
                "workers": args.ref_workers}


class TrainStep(Runner):
    """The project's training step against the bare loop run alone just before and just after it."""
    name = "train"

    def run(self) -> dict:
        b, args = self.bench, self.bench.args
        interleave = not b.gpu and "interleave" not in args.skip
        load_before = load()
        n_alone = args.steps if b.gpu else max(3, args.steps // 3)
        bare_alone = time_bare(b.bare, args.warmup, n_alone)
        proj = self.project(b.bare if interleave else None)
        bare_alone += time_bare(b.bare, 1, n_alone)  # again after, so a load change shows
        bare_between = proj["bare_s"] if interleave else bare_alone
        batch, step_s = args.batch, median(proj["step_s"])
        out = {
            # headline: the bare loop run alone (before and after the project run); the bare steps run
            # between project steps come out ~10% slower on CPU, which would flatter the project
            "bare_images_per_s": batch / median(bare_alone),
            "bare_interleaved_images_per_s": batch / median(bare_between),
            "project_images_per_s": batch / step_s,
            "ratio_project_vs_bare": median(bare_alone) / step_s,
            "ratio_project_vs_bare_interleaved": median(bare_between) / step_s,
            "data_fetch_ms_per_step": 1e3 * median(proj["fetch_s"]),
            "device_view_ms_per_step": 1e3 * median(proj["view_s"]),
            "decode_once_images_per_s": proj["decoded_images"] / proj["decode_once_s"],
        }
        if interleave:
            out["ratio_project_vs_bare_paired_median"] = median([bs / ps for bs, ps in zip(proj["bare_s"],
                                                                                         proj["step_s"])])
            paired = proj["bare_s"][:len(proj["step_s"])]
            out["ratio_project_vs_bare_sum"] = sum(paired) / sum(proj["step_s"][:len(paired)])
        if b.gpu:
            out["gpu_utilisation_project"] = proj["gpu_utilisation"]
        out["model_split"] = model_split(b.bare, 10 if b.gpu else 3)
        out["raw"] = {"bare_alone_s": bare_alone, **proj, "load_before": load_before}
        return out

    def project(self, interleave: BareStep | None) -> dict:
        """Per-step seconds of the project's Trainer run (and of the interleaved bare steps, on CPU)."""
        from dvclive.lightning import DVCLiveLogger

        from galaxy_finetune.data.loading import GalaxyDataModule
        from galaxy_finetune.core.params import AugmentParams

        b, args = self.bench, self.bench.args
        data = GalaxyDataModule(b.store_dir, b.split_dir, args.size, args.batch, AugmentParams())
        t0 = time.perf_counter()
        data.setup("fit")
        decode_s = time.perf_counter() - t0  # the store was decoded once in prepare(): this is opening it
        n_decoded = len(data.dataset("train")) + len(data.dataset("val"))
        phases = PhaseTimer(b.device)
        if not b.gpu:  # on a GPU the timers would need a sync per step; the datapath runner gives the view's cost
            phases.wrap(data)
        model = project_classifier(b.encoder_dir, b.device, args.compile)
        logger = DVCLiveLogger(dir=str(b.folder / "live"), save_dvc_exp=False, dvcyaml=None)
        steps, utilisation, bare_s = timed_fit(b, model, data, interleave=interleave, logger=logger)
        w = args.warmup
        return {"step_s": steps, "bare_s": bare_s, "fetch_s": phases.fetch[w + 1:],
                "view_s": phases.view[w + 1:], "decode_once_s": decode_s, "decoded_images": n_decoded,
                "gpu_utilisation": utilisation}


class ReferenceStep(Runner):
    """galaxy-datasets' CatalogDataModule feeding the same classifier through the same Trainer."""
    name = "reference"

    def run(self) -> dict:
        b, args = self.bench, self.bench.args
        dm = reference_datamodule(args, b.catalog, b.n_train, b.n_val, args.batch)
        model = project_classifier(b.encoder_dir, b.device, args.compile)
        steps, utilisation, _ = timed_fit(b, model, dm)
        return {"reference_images_per_s": args.batch / median(steps), "step_s": steps,
                "gpu_utilisation": utilisation}


class Predict(Runner):
    """The predict stage's path (predict_frames) against a bare no_grad forward of the same size."""
    name = "predict"

    def run(self) -> dict:
        from galaxy_finetune.data.loading import StoreGalaxies
        from galaxy_finetune.inference.predict import predict_to_file

        b, args = self.bench, self.bench.args
        model = project_classifier(b.encoder_dir).eval()
        frame = b.catalog.iloc[:args.predict_images][["id_str", "label"]].reset_index(drop=True)
        config = {"eval_zoom": 1.2, "input_size": args.size, "classes": CLASSES}
        accelerator = "gpu" if b.gpu else "cpu"

        def streamed(galaxies, name):  # the predict stage's path: store rows -> writer -> CSV
            dataset = StoreGalaxies(b.store_dir, galaxies.index, galaxies["label"])
            return predict_to_file(model, config, None, dataset, galaxies, b.folder / f"{name}.csv",
                                  b.folder / f"{name}.parts", args.predict_batch, accelerator, progress=False)
        streamed(frame.iloc[:args.predict_batch], "warmup")
        timing = {"test_images_per_s": streamed(frame, "test")["images_per_s"]}
        bare_ips = bare_infer_images_per_s(b.bare, args.predict_batch, args.size,
                                           args.predict_images // args.predict_batch)
        return {"project_images_per_s": timing["test_images_per_s"], "bare_images_per_s": round(bare_ips, 1),
                "images": len(frame), "batch": args.predict_batch,
                "ratio_project_vs_bare": round(timing["test_images_per_s"] / bare_ips, 3)}


class FullRun(Runner):
    """A GalaxyMNIST-sized run through galaxy_finetune.training.train.finetune itself: epochs with validation."""
    name = "full"

    def run(self) -> dict:
        from galaxy_finetune.core.params import AugmentParams, TrainParams
        from galaxy_finetune.training.train import FinetuneJob, finetune

        b, args = self.bench, self.bench.args
        n = args.full_images
        n_train, n_val = int(n * 0.7), int(n * 0.1)
        full = b.folder / "full"
        t0 = time.perf_counter()
        catalog = write_galaxies(full, n, args.source_size, seed=1, procs=os.cpu_count() or 1)
        write_splits(full, catalog, n_train, n_val)
        write_store(full, catalog, args.source_size)
        prep_s = time.perf_counter() - t0
        encoder_dir = make_encoder_dir(full)
        train = TrainParams(epochs=args.full_epochs, steps=0, patience=args.full_epochs + 1, batch_size=args.batch,
                            input_size=args.size, lr=1e-5, head_init="random", schedule="constant",
                            accelerator="gpu" if b.gpu else "cpu", devices=1, resume="never")  # the write-up's
        with b.sampler() as sampler:
            t0 = time.perf_counter()
            job = FinetuneJob(full, full / "store", full / "splits", encoder_dir, full / "model", full / "live",
                              full / "checkpoints")
            run = finetune(train, AugmentParams(), "writeup", {"classes": CLASSES, "run_label": "benchmark"}, job)
            wall = time.perf_counter() - t0
        return {"images": n, "train": n_train, "val": n_val, "epochs": run["epochs_run"],
                "finetune_wall_s": round(wall, 1), "fit_wall_s": run["wall_time_s"],
                "train_images_per_s": run["train_images_per_s"], "data_prep_s (not counted)": round(prep_s, 1),
                "gpu_utilisation": sampler.summary() if b.gpu else None, "batch": args.batch}


RUNNERS = {cls.name: cls for cls in (DataPath, TrainStep, ReferenceStep, Predict, FullRun)}


# ----------------------------------------------------------------------------------------------- picking and reporting

def pick_runners(args: argparse.Namespace, gpu: bool) -> list[str]:
    """The runners to run, in order: all but those skipped; `full` only on GPU or with --full-run."""
    full = (args.full_run or gpu) and not args.no_full_run
    return [name for name in RUNNERS if name not in args.skip and (name != "full" or full)]


def run_benchmarks(bench: Bench, names: list[str]) -> dict:
    """Each named runner's dict (plus the load average when it ended), printed as it finishes."""
    results = {}
    for name in names:
        results[name] = {**RUNNERS[name](bench).run(), "load": load()}
        shown = {k: v for k, v in results[name].items() if k != "raw"}
        print(f"{name}:", json.dumps(shown, default=float), flush=True)
    return results


def compare(results: dict, batch: int, gpu: bool) -> dict:
    """Numbers that need two runners: the project against the reference, and where a project step's time goes."""
    out = {}
    train, reference, datapath = results.get("train"), results.get("reference"), results.get("datapath")
    if train and reference:
        step_s, ref_s = batch / train["project_images_per_s"], batch / reference["reference_images_per_s"]
        out["speedup_project_vs_reference"] = ref_s / step_s
        out["ratio_reference_vs_bare"] = (batch / train["bare_images_per_s"]) / ref_s
    if train:
        step_s, model_s = batch / train["project_images_per_s"], batch / train["bare_images_per_s"]
        if not gpu:
            data_s = (train["data_fetch_ms_per_step"] + train["device_view_ms_per_step"]) / 1e3
        elif datapath:  # the data path alone, per batch (index + H2D + view, synced once)
            data_s = batch / datapath["project"]["images_per_s"]
        else:
            return out
        out["share_of_step"] = {"model fwd+bwd+AdamW (bare step alone)": model_s / step_s,
                                "data path (index + view)": data_s / step_s,
                                "rest: Lightning/zoobot/logging (+ noise)": 1 - (model_s + data_s) / step_s}
    return out


def report(info: dict, results: dict, comparison: dict, gpu: bool) -> str:
    """One line per measurement, the way RESULTS.md quotes them."""
    lines = [f"\n== {info['device']} | {info['size']} px | batch {info['batch']} | {info['precision']} | "
             f"load {info['load_start']} -> {info['load_end']}"]
    if "train" in results:
        s = results["train"]
        lines.append(f"bare timm loop      {s['bare_images_per_s']:8.1f} img/s (alone, before + after the project run; "
                     f"{s['bare_interleaved_images_per_s']:.1f} img/s interleaved)")
        lines.append(f"project path        {s['project_images_per_s']:8.1f} img/s  "
                     f"= {s['ratio_project_vs_bare']:.3f}x bare (target >= 0.9)"
                     + (f"; vs interleaved bare {s['ratio_project_vs_bare_interleaved']:.3f}x, "
                        f"paired median {s['ratio_project_vs_bare_paired_median']:.3f}x"
                        if "ratio_project_vs_bare_paired_median" in s else ""))
    if "reference" in results:
        r = results["reference"]
        lines.append(f"reference path      {r['reference_images_per_s']:8.1f} img/s"
                     + (f"  -> project is {comparison['speedup_project_vs_reference']:.2f}x the reference"
                        if "speedup_project_vs_reference" in comparison else ""))
    if "share_of_step" in comparison:
        lines.append("share of a step     " + ", ".join(f"{k} {v:.1%}" for k, v in comparison["share_of_step"].items()))
    if "datapath" in results:
        dp = results["datapath"]
        lines.append(f"data path alone     project {dp['project']['images_per_s']:.0f} img/s "
                     f"(host side, index only: {dp['project']['host_index_only_images_per_s']:.0f} img/s)"
                     + (f", reference {dp['reference']['images_per_s']:.0f} img/s "
                        f"({dp['speedup_project_vs_reference']:.1f}x)" if "reference" in dp else ""))
    if "predict" in results:
        pr = results["predict"]
        lines.append(f"predict             project {pr['project_images_per_s']} img/s, bare {pr['bare_images_per_s']} "
                     f"img/s ({pr['ratio_project_vs_bare']:.2f}x, {pr['images']} images)")
    if "full" in results:
        fr = results["full"]
        lines.append(f"full run            {fr['epochs']} epochs x {fr['train']} train in {fr['fit_wall_s']} s "
                     f"({fr['train_images_per_s']} img/s), GPU util {fr['gpu_utilisation']}")
    if gpu and "train" in results:
        met = results["train"]["project_images_per_s"] >= 4000
        lines.append(f"GPU target >= 4000 img/s: {'met' if met else 'NOT met'}")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
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
    p.add_argument("--skip", nargs="*", default=[], choices=[*RUNNERS, "interleave"],
                   help="leave out runners (reference also leaves out the reference data path), or the "
                        "interleaved bare steps")
    p.add_argument("--full-run", action="store_true", help="also the GalaxyMNIST-sized finetune run (default on GPU)")
    p.add_argument("--no-full-run", action="store_true")
    p.add_argument("--full-images", type=int, default=10_000)
    p.add_argument("--full-epochs", type=int, default=30)
    p.add_argument("--json", type=Path, help="also write every number here")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if (args.device == "cuda" or (args.device == "auto" and cuda)) else "cpu")
    gpu = device.type == "cuda"
    args.source_size = args.source_size or args.size
    args.batch = args.batch or (256 if gpu else 16)
    args.steps = args.steps or (50 if gpu else 12)
    args.predict_images = args.predict_images or (4096 if gpu else 64)
    args.predict_batch = args.predict_batch or (256 if gpu else 32)
    if gpu:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    import lightning  # noqa: F401  (sets its loggers up; quieten them afterwards)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "zoobot", ""):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")

    info = provenance(
        command="python " + " ".join([Path(sys.argv[0]).name if argv is None else "throughput.py",
                                      *(sys.argv[1:] if argv is None else argv)]),
        device=torch.cuda.get_device_name(0) if gpu else f"cpu {platform.processor() or platform.machine()}",
        torch_threads=torch.get_num_threads(), torch=torch.__version__, size=args.size,
        source_size=args.source_size, batch=args.batch, steps=args.steps, warmup=args.warmup,
        precision="bf16-mixed, channels_last" if gpu else "fp32", compile=args.compile)
    print(json.dumps(info), flush=True)
    names = pick_runners(args, gpu)
    folder = Path(tempfile.mkdtemp(prefix="galaxy-throughput-"))
    try:
        results = run_benchmarks(prepare(args, device, folder), names)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    info["load_end"] = load()
    comparison = compare(results, args.batch, gpu)
    print(report(info, results, comparison, gpu))
    out = {"info": info, **results, "compare": comparison}
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=float) + "\n")
    return out


if __name__ == "__main__":
    main()
