"""The GPU check: one prepared run, at most 8 minutes on an H200, of the numbers the pipeline promises on a GPU.

    bash benchmarks/gpu_wheels.sh                                # here: the wheels the GPU box lacks, into .whl/
    python3 benchmarks/gpu_check.py --out $OUT/gpu_check.json    # there (docs/gpu.md, "GPU check", has the line)
    python benchmarks/gpu_check.py --dry-run                     # CPU, a tiny store, seconds: what the test runs

Everything runs through the project's own code on a synthetic store of 8,000 galaxies: 224 px JPEGs rendered
by galaxy_finetune.data.synthetic (harness.write_galaxies) and decoded once by the store writer (build_store), then
GalaxyDataModule over the memory map, Zoobot's classifier (model_io.build_classifier), Lightning Trainers,
train.finetune, the predict stage's predict_splits and galaxy-classify. One runner per measurement, each
run() returning a dict (as in throughput.py, whose pieces it reuses):

- train:          images/s of a training step of the fine-tuning recipe (params.yaml train:, bf16-mixed,
                  channels_last, the DataModule with its GPU default of 4 loader workers) against a bare timm +
                  torch loop (throughput.BareStep) on in-memory tensors of the same shape, timed alone just
                  before and just after; the ratio is the figure that counts (target >= 0.9).
- data_path:      the same Trainer run at 0, 4 and 8 loader workers: images/s, the share of the wall time the
                  host spends between two steps (waiting for the next batch, copying it, launching its view;
                  meanwhile the GPU only works off what is already queued) and the GPU's sampled utilisation.
- epoch:          train.finetune itself, 2 epochs of 7,200 galaxies (+ 800 validation, checkpoints, export):
                  the steady epoch and the projected wall time of the write-up's 30 epochs (target <= 90 s).
- predict:        the predict stage (predict.predict_splits) over the 7,200 store rows, against a bare forward.
- classify:       galaxy-classify (classify.main) over a folder of 8,000 JPEGs with 16 decode workers, against
                  the same bare forward (target >= 5,000 images/s for both).
- train_compiled: `train` with torch.compile on both sides (run last: compiling takes longest).

The logger of the Trainer runs is Lightning's CSVLogger at the project's cadence (every 5 steps): dvclive is
not on the GPU box. Peak GPU memory is taken per runner; the device, driver and versions go in the JSON.

Time-boxed: fixed step counts; a runner that the budget left (--budget-s) cannot hold is skipped and says so;
a watchdog prints the table and writes the JSON at --hard-limit-s whatever still runs. The JSON is rewritten
after every runner, so a run killed from outside still leaves what it had measured. The table is printed last.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

START = time.perf_counter()  # the budget and the watchdog count from here (before torch's few seconds of import)

import torch  # noqa: E402

if not __package__:  # run as a script: import this checkout's packages, never an installed copy
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import (CLASSES, ROOT, GpuSampler, load, make_encoder_dir, median, now,  # noqa: E402
                                provenance, write_galaxies, write_splits, write_store)
from benchmarks.throughput import (BareStep, Bench, Runner, bare_infer_images_per_s,  # noqa: E402
                                   project_classifier, time_bare, timed_fit)

EPOCHS_PROJECTED = 30  # the write-up's run
TARGET_RATIO, TARGET_30_EPOCHS_S, TARGET_IMAGES_PER_S, TARGET_WAIT_SHARE = 0.9, 90.0, 5000.0, 0.05
GIB = 2**30


# ----------------------------------------------------------------------------------------------- shared setup

@dataclass
class Check(Bench):
    """throughput's Bench plus what the check adds: the recipe, the budget and where the model goes."""
    recipe: object = None  # galaxy_finetune.core.params.TrainParams of params.yaml, with this run's batch and size
    predict_batch: int = 256
    deadline: float = float("inf")  # perf_counter time after which no runner starts

    @cached_property
    def bare(self) -> BareStep:
        """The eager bare loop, built once: train and data_path time it, predict and classify reuse its model."""
        return BareStep(self.args.batch, self.args.size, self.device, arch=self.args.arch)

    @property
    def jpeg_dir(self) -> Path:
        return self.folder / "images"  # where write_galaxies put them

    @property
    def model_dir(self) -> Path:
        return self.folder / "model"

    @property
    def accelerator(self) -> str:
        return "gpu" if self.gpu else "cpu"


def prepare(args: argparse.Namespace, device: torch.device, folder: Path) -> Check:
    """The galaxies every runner reads: JPEGs, their store, the splits (90% train, 10% val) and an encoder."""
    params = args.params
    n_val = max(1, args.galaxies // 10)
    n_train = args.galaxies - n_val
    catalog = write_galaxies(folder, args.galaxies, args.size, procs=os.cpu_count() or 1)
    split_dir = write_splits(folder, catalog, n_train, n_val)
    store_dir = write_store(folder, catalog, args.size)
    encoder_dir = make_encoder_dir(folder, args.arch)
    # the timed window must fit in one epoch (the clocks go by batch index)
    args.steps = max(1, min(args.steps, n_train // args.batch - args.warmup - 1))
    # the write-up's recipe (train.recipe: writeup), whose 30 epochs the targets are about
    writeup = params.model_copy(update={"train": params.train.model_copy(update={"recipe": "writeup"})})
    recipe = writeup.recipe(True)[1].model_copy(update={"batch_size": args.batch, "input_size": args.size})
    return Check(args, device, folder, catalog, store_dir, split_dir, encoder_dir, n_train, n_val, recipe,
                 args.predict_batch or params.predict.batch_size)


def callback_types():
    """The two clocks below, made on first use (Lightning is imported late, after the data is written)."""
    from lightning.pytorch.callbacks import Callback

    class BetweenSteps(Callback):
        """Host seconds from the end of one training step to the start of the next: fetching the next batch
        from the loader, the copy to the device and launching its view (plus Lightning's loop in between).
        On a GPU it also samples the GPU's utilisation over the timed window only (batches first..last)."""

        def __init__(self, first: int, last: int, gpu: bool):
            self.seconds, self._end, self.first, self.last = [], None, first, last
            self.sampler = GpuSampler(period=0.1) if gpu else None

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if self._end is not None:
                self.seconds.append(time.perf_counter() - self._end)

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if self.sampler is not None and batch_idx == self.first:
                self.sampler.__enter__()
            elif self.sampler is not None and batch_idx == self.last:
                self.sampler.__exit__(None, None, None)
            self._end = time.perf_counter()

    class EpochClock(Callback):
        """Seconds of each training epoch with its validation and checkpoints (the device synced at both ends)."""

        def __init__(self, device):
            self.device, self.seconds, self._start = device, [], None

        def on_train_epoch_start(self, trainer, module):
            self._start = now(self.device)

        def on_train_epoch_end(self, trainer, module):
            self.seconds.append(now(self.device) - self._start)

    return BetweenSteps, EpochClock


def project_steps(b: Check, workers: int, compiled: bool = False) -> dict:
    """The project's training step (GalaxyDataModule -> Zoobot classifier -> Trainer) at `workers` loader
    workers: images/s, the host's share between steps and the GPU's utilisation."""
    from lightning.pytorch.loggers import CSVLogger

    from galaxy_finetune.data.loading import GalaxyDataModule
    from galaxy_finetune.core.params import AugmentParams

    args = b.args
    data = GalaxyDataModule(b.store_dir, b.split_dir, args.size, args.batch, AugmentParams(), workers)
    model = project_classifier(b.encoder_dir, b.device, compiled, b.recipe.lr, args.compile_backend)
    between = callback_types()[0](args.warmup, args.warmup + args.steps, b.gpu)  # timed_fit's window
    t0 = time.perf_counter()
    steps, utilisation, _ = timed_fit(b, model, data, [between], logger=CSVLogger(b.folder / "logs"))
    return {"workers": workers, "images_per_s": args.batch / median(steps),
            "between_steps_share": sum(between.seconds[args.warmup:]) / sum(steps),
            "gpu_utilisation": between.sampler.summary() if b.gpu else None,
            "gpu_utilisation_whole_fit": utilisation, "fit_s": time.perf_counter() - t0}


def trained_model(b: Check) -> Path:
    """The epoch runner's fine-tuned model; when that runner did not run, the untrained classifier saved the
    same way (speed does not depend on the weights)."""
    from galaxy_finetune.core.layout import MODEL_CONFIG
    from galaxy_finetune.training.model_io import save_finetuned
    from galaxy_finetune.core.params import AugmentParams
    from galaxy_finetune.core.task import Task
    from galaxy_finetune.data.encoder import encoder_record
    from galaxy_finetune.training.train import model_config

    if not (b.model_dir / MODEL_CONFIG).is_file():
        config = model_config(encoder_record(b.encoder_dir), {"image_size": b.args.size}, b.recipe, AugmentParams(),
                              {"note": "untrained: saved by gpu_check because the epoch runner did not run"},
                              Task("classification", tuple(CLASSES)))
        save_finetuned(b.model_dir, project_classifier(b.encoder_dir), config)
    return b.model_dir


def bare_forward(b: Check, images: int) -> float:
    """Images/s of the bare model's forward pass at the predict batch, on one in-memory batch."""
    return bare_infer_images_per_s(b.bare, b.predict_batch, b.args.size, min(30, images // b.predict_batch))


# ----------------------------------------------------------------------------------------------- runners

class Train(Runner):
    """The fine-tuning recipe's step against the bare loop, timed alone just before and just after it."""
    name, compiled, needs_s = "train", False, 30

    def run(self) -> dict:
        from galaxy_finetune.core.accelerator import loader_workers

        b, args = self.bench, self.bench.args
        bare = (BareStep(args.batch, args.size, b.device, True, args.compile_backend, args.arch) if self.compiled
                else b.bare)
        t0 = time.perf_counter()
        alone = time_bare(bare, args.warmup, args.steps)
        bare_first_s = time.perf_counter() - t0  # with torch.compile, the compile is in here
        project = project_steps(b, loader_workers("auto", b.accelerator), self.compiled)
        alone += time_bare(bare, 1, args.steps)  # again after, so a change of pace shows
        project_ips, bare_ips = project.pop("images_per_s"), args.batch / median(alone)
        return {"project_images_per_s": project_ips, "bare_images_per_s": bare_ips,
                "ratio_project_vs_bare": project_ips / bare_ips, **project, "batch": args.batch,
                "bare_warmup_s": bare_first_s, "compile": args.compile_backend if self.compiled else None}


class TrainCompiled(Train):
    """`train` with the encoder (project) and the whole model (bare) under torch.compile."""
    name, compiled, needs_s = "train_compiled", True, 150


class DataPath(Runner):
    """The project's step at each loader worker count: does the GPU ever wait for data?"""
    name, needs_s = "data_path", 45

    def run(self) -> dict:
        b, args = self.bench, self.bench.args
        bare_ips = args.batch / median(time_bare(b.bare, args.warmup, args.steps))
        out = {"bare_images_per_s": bare_ips}
        for workers in args.workers:
            project = project_steps(b, workers)
            out[f"workers_{workers}"] = {**project, "ratio_project_vs_bare": project["images_per_s"] / bare_ips}
        return out


class Epoch(Runner):
    """train.finetune itself for a few epochs: the steady epoch, and the projected 30-epoch run."""
    name, needs_s = "epoch", 45

    def run(self) -> dict:
        from galaxy_finetune.core.files import write_json
        from galaxy_finetune.core.layout import SOURCE
        from galaxy_finetune.core.params import AugmentParams
        from galaxy_finetune.core.task import Task
        from galaxy_finetune.training.train import FinetuneJob, finetune

        b, args = self.bench, self.bench.args
        train = b.recipe.model_copy(update={"epochs": args.epochs, "patience": args.epochs + 1, "devices": 1,
                                            "accelerator": b.accelerator, "resume": "never"})
        clock = callback_types()[1](b.device)
        with b.sampler() as sampler:
            t0 = time.perf_counter()
            manifest = {"run_label": "gpu_check: synthetic galaxies, random encoder"}
            # the classes and the task, as fetch_data records them for training (data/raw/source.json)
            write_json(b.folder / SOURCE, {"classes": list(CLASSES),
                                           "task": Task("classification", tuple(CLASSES)).record()})
            job = FinetuneJob(b.folder, b.store_dir, b.split_dir, b.encoder_dir, b.model_dir, None,
                              b.folder / "checkpoints")
            run = finetune(train, AugmentParams(), "writeup", manifest, job, callbacks=[clock])
            wall = time.perf_counter() - t0
        epoch_s = clock.seconds[-1]  # the last epoch: workers, kernels and caches are warm
        return {"epoch_s": epoch_s, "first_epoch_s": clock.seconds[0], "epochs": len(clock.seconds),
                "train_images": b.n_train, "val_images": b.n_val, "batch": train.batch_size,
                "finetune_wall_s": wall, "fit_wall_s": run["wall_time_s"],
                f"projected_{EPOCHS_PROJECTED}_epochs_s": wall + (EPOCHS_PROJECTED - len(clock.seconds)) * epoch_s,
                "epoch_images_per_s": (b.n_train + b.n_val) / epoch_s, "precision": run["precision"],
                "gpu_utilisation_whole_run": sampler.summary() if b.gpu else None}


class Predict(Runner):
    """The predict stage over the training split's store rows, against the bare forward pass."""
    name, needs_s = "predict", 25

    def run(self) -> dict:
        from galaxy_finetune.inference.predict import predict_splits

        b = self.bench
        model_dir = trained_model(b)

        def predict(split: str, out: str) -> tuple[dict, float]:
            t0 = time.perf_counter()
            timing = predict_splits(model_dir, b.store_dir, b.split_dir, b.folder / out, [split], b.predict_batch,
                                    b.accelerator, b.folder / "predict.parts")
            return timing, time.perf_counter() - t0

        predict("val", "predictions-warmup")  # first kernels, page cache
        timing, wall = predict("train", "predictions")
        return {"project_images_per_s": timing["train_images_per_s"], "bare_images_per_s": bare_forward(b, b.n_train),
                "images": b.n_train, "batch": b.predict_batch, "wall_s": wall, "workers": 0,
                "precision": timing["precision"]}


class Classify(Runner):
    """galaxy-classify over the folder of JPEGs with the decode workers, against the bare forward pass."""
    name, needs_s = "classify", 30

    def run(self) -> dict:
        import pandas as pd

        from galaxy_finetune.inference.classify import main as classify

        b, args = self.bench, self.bench.args
        model_dir = trained_model(b)
        files = sorted(b.jpeg_dir.iterdir())
        warmup = b.folder / "classify-warmup.csv"
        pd.DataFrame({"file_loc": [str(f) for f in files[:2 * b.predict_batch]]}).to_csv(warmup, index=False)

        def run(images: Path, out: str) -> tuple[float, float]:
            """(images/s that galaxy-classify reports, wall seconds of the whole command)."""
            argv = [str(model_dir), str(images), "-o", str(b.folder / out), "--batch-size", str(b.predict_batch),
                    "--workers", str(args.decode_workers), "--accelerator", b.accelerator]
            printed = io.StringIO()
            t0 = time.perf_counter()
            try:
                with contextlib.redirect_stdout(printed):
                    classify(argv)
            except SystemExit as exc:  # its one-line error is on stderr already
                raise RuntimeError(f"galaxy-classify exited with status {exc.code}") from None
            wall = time.perf_counter() - t0
            found = re.search(r"\(([\d.]+) images/s on", printed.getvalue())
            if not found:
                raise RuntimeError(f"galaxy-classify printed no rate: {printed.getvalue()!r}")
            return float(found.group(1)), wall

        run(warmup, "classify-warmup.csv")
        ips, wall = run(b.jpeg_dir, "classify.csv")
        return {"project_images_per_s": ips, "bare_images_per_s": bare_forward(b, len(files)),
                "images": len(files), "command_wall_s": wall, "command_images_per_s": len(files) / wall,
                "decode_workers": args.decode_workers, "batch": b.predict_batch, "image_px": args.size}


RUNNERS = [Train, DataPath, Epoch, Predict, Classify, TrainCompiled]  # compile last: it takes longest


# ----------------------------------------------------------------------------------------------- device and report

def device_info(device: torch.device) -> dict:
    """The GPU's name, memory and driver; torch, CUDA, cuDNN and library versions; CPUs and shared memory."""
    from importlib.metadata import PackageNotFoundError, version

    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "cpus": os.cpu_count(),
            "cudnn_benchmark": torch.backends.cudnn.benchmark}
    for package in ("lightning", "timm", "zoobot", "pydantic"):
        try:
            info[package] = version(package)
        except PackageNotFoundError:
            info[package] = None
    if os.path.isdir("/dev/shm"):  # DataLoader workers hand batches over through it
        info["dev_shm_gib"] = round(shutil.disk_usage("/dev/shm").total / GIB, 1)
    if device.type != "cuda":
        info["device"] = f"cpu ({platform.processor() or platform.machine()})"
        return info
    props = torch.cuda.get_device_properties(0)
    info.update(device=torch.cuda.get_device_name(0), gpu_memory_gib=round(props.total_memory / GIB, 1),
                capability=f"{props.major}.{props.minor}", cudnn=torch.backends.cudnn.version())
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader", "-i", "0"],
                             capture_output=True, text=True, timeout=20)
        info["driver"] = smi.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        info["driver"] = None
    if not info["driver"]:
        version_code = torch._C._cuda_getDriverVersion()  # e.g. 13000: the CUDA version the driver supports
        info["driver"] = f"supports CUDA {version_code // 1000}.{version_code % 1000 // 10}"
    return info


def _rate(x) -> str:
    return f"{x:,.0f}" if isinstance(x, (int, float)) else "-"


def table_rows(results: dict, peak_gpu_gib: float | None, gpu: bool) -> list[tuple[str, ...]]:
    """(measurement, project, bare, ratio, target, met?) for each measurement that ran."""
    rows = []

    def met(ok: bool) -> str:
        return ("yes" if ok else "NO") if gpu else "(cpu)"

    def ratio_row(label: str, r: dict):
        rows.append((label, _rate(r["project_images_per_s"]), _rate(r["bare_images_per_s"]),
                     f"{r['ratio_project_vs_bare']:.3f}x", f">= {TARGET_RATIO}x bare",
                     met(r["ratio_project_vs_bare"] >= TARGET_RATIO)))

    def rate_row(label: str, r: dict):
        rows.append((label, _rate(r["project_images_per_s"]), _rate(r["bare_images_per_s"]),
                     f"{r['project_images_per_s'] / r['bare_images_per_s']:.3f}x", f">= {TARGET_IMAGES_PER_S:,.0f}/s",
                     met(r["project_images_per_s"] >= TARGET_IMAGES_PER_S)))

    def failed(name: str, label: str) -> bool:
        r = results.get(name)
        if r is None:
            return True
        if "error" in r or "skipped" in r:
            rows.append((label, "-", "-", "-", "-", "error" if "error" in r else "skipped"))
            return True
        return False

    if not failed("train", "train img/s, eager"):
        r = results["train"]
        ratio_row(f"train img/s, eager (batch {r['batch']}, {r['workers']} workers)", r)
    if not failed("train_compiled", "train img/s, torch.compile"):
        ratio_row("train img/s, torch.compile", results["train_compiled"])
    if not failed("data_path", "data path"):
        r = results["data_path"]
        for key, w in ((k, v) for k, v in r.items() if k.startswith("workers_")):
            busy = (w["gpu_utilisation"] or {}).get("mean_pct")
            rows.append((f"  {w['workers']} workers: host between steps {w['between_steps_share']:.1%}"
                         + (f", GPU busy {busy:.0f}%" if busy is not None else ""),
                         _rate(w["images_per_s"]), _rate(r["bare_images_per_s"]), f"{w['ratio_project_vs_bare']:.3f}x",
                         f"between < {TARGET_WAIT_SHARE:.0%}", met(w["between_steps_share"] < TARGET_WAIT_SHARE)))
    if not failed("epoch", "epoch"):
        r = results["epoch"]
        projected = r[f"projected_{EPOCHS_PROJECTED}_epochs_s"]
        rows.append((f"1 epoch, {r['train_images']:,} train + {r['val_images']:,} val (s)", f"{r['epoch_s']:.1f}",
                     "-", "-", "-", "-"))
        rows.append((f"{EPOCHS_PROJECTED} epochs projected (s)", f"{projected:.0f}", "-", "-",
                     f"<= {TARGET_30_EPOCHS_S:.0f} s", met(projected <= TARGET_30_EPOCHS_S)))
    if not failed("predict", "predict img/s"):
        rate_row("predict img/s (store rows)", results["predict"])
    if not failed("classify", "galaxy-classify img/s"):
        r = results["classify"]
        rate_row(f"galaxy-classify img/s (JPEGs, {r['decode_workers']} workers)", r)
    if peak_gpu_gib:
        rows.append(("peak GPU memory (GiB)", f"{peak_gpu_gib:.1f}", "-", "-", "-", "-"))
    return rows


def format_table(rows: list[tuple[str, ...]], info: dict) -> str:
    header = ("measurement", "project", "bare", "ratio", "target", "met?")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in [header, *rows]]
    device = info.get("device", {})
    lines.append(f"{device.get('device')} | driver {device.get('driver', '-')} | torch {device.get('torch')} | "
                 f"CUDA {device.get('cuda')} | {device.get('cpus')} CPUs | {info.get('date')} | "
                 f"{info.get('wall_s', 0):.0f} s{' | DRY RUN' if info.get('dry_run') else ''}")
    return "\n".join(lines)


class Report:
    """The results so far: rewritten to the JSON after every runner; printed once, as the last output."""

    def __init__(self, path: Path, info: dict, gpu: bool):
        self.path, self.info, self.gpu, self.results = path, info, gpu, {}
        self.lock, self.closed = threading.Lock(), False

    def _data(self) -> dict:
        info = {**self.info, "wall_s": round(time.perf_counter() - START, 1), "load_end": load()}
        results = {k: dict(v) for k, v in list(self.results.items())}
        gpu = [r["peak_gpu_memory_gib"] for r in results.values() if r.get("peak_gpu_memory_gib")]
        host = [r["host_peak_rss_gib"] for r in results.values() if r.get("host_peak_rss_gib")]
        memory = {"peak_gpu_gib": max(gpu) if gpu else None, "host_peak_rss_gib": max(host) if host else None}
        return {"info": info, **results, "memory": memory,
                "table": [list(r) for r in table_rows(results, memory["peak_gpu_gib"], self.gpu)]}

    def write(self, **extra) -> dict:
        data = {**self._data(), **extra}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
        tmp.replace(self.path)
        return data

    def close(self, **extra) -> bool:
        """Write the JSON and print the table, once (the watchdog and the main thread may both try)."""
        with self.lock:
            if self.closed:
                return False
            self.closed = True
            data = self.write(**extra)
        print(f"\nwrote {self.path}\n", flush=True)
        print(format_table([tuple(r) for r in data["table"]], data["info"]), flush=True)
        return True


def watchdog(report: Report, seconds: float) -> threading.Timer:
    """At `seconds` after the start, report what is done and end the process (exit status 3)."""
    def fire():
        if report.close(complete=False, timed_out=f"stopped by the watchdog at {seconds:.0f} s"):
            os._exit(3)

    timer = threading.Timer(max(1.0, seconds - (time.perf_counter() - START)), fire)
    timer.daemon = True
    timer.start()
    return timer


def run_all(bench: Check, report: Report, names: list[str]) -> None:
    """Each runner in turn, unless the budget left cannot hold it; an error is recorded and the rest go on."""
    for cls in RUNNERS:
        if cls.name not in names:
            continue
        left = bench.deadline - time.perf_counter()
        needs = 0 if bench.args.dry_run else cls.needs_s
        if left < needs:
            report.results[cls.name] = {"skipped": f"{left:.0f} s of the budget left; it needs about {needs} s"}
        else:
            if bench.gpu:
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            try:
                result = cls(bench).run()
            except Exception as exc:  # noqa: BLE001  (one broken measurement must not cost the others)
                result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
            result["seconds"] = round(time.perf_counter() - t0, 1)
            if bench.gpu:
                result["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / GIB, 2)
            result["host_peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
            report.results[cls.name] = result
        shown = {k: v for k, v in report.results[cls.name].items() if k != "traceback"}
        print(f"{cls.name}: {json.dumps(shown, default=str)}", flush=True)
        report.write(complete=False)


# ----------------------------------------------------------------------------------------------- options

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="the JSON (default ./gpu_check.json)")
    p.add_argument("--dry-run", action="store_true",
                   help="CPU, one torch thread, 64 galaxies at 64 px, timm's tiny test_convnext, 2 timed steps, "
                        "torch.compile with the 'eager' backend (it only traces): every code path in seconds")
    p.add_argument("--arch", help="timm architecture of the encoder and the bare loop (default convnext_nano)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--galaxies", type=int, help="galaxies in the synthetic store (default 8000: 7200 train, 800 val)")
    p.add_argument("--size", type=int, help="pixels per side, stored and fed to the model (default params.yaml's 224)")
    p.add_argument("--batch", type=int, help="training batch (default params.yaml's train.batch_size)")
    p.add_argument("--predict-batch", type=int, help="predict/classify batch (default params.yaml's predict.batch_size)")
    p.add_argument("--steps", type=int, help="timed training steps per run (default 100)")
    p.add_argument("--warmup", type=int, help="untimed steps first (default 10)")
    p.add_argument("--epochs", type=int, default=2, help="epochs of the finetune run (default 2; the last is timed)")
    p.add_argument("--workers", help="loader worker counts of the data path runner (default 0,4,8)")
    p.add_argument("--decode-workers", type=int, help="galaxy-classify's decode workers (default: CPUs, at most 16)")
    p.add_argument("--compile-backend", help="torch.compile backend (default inductor; the dry run: eager)")
    p.add_argument("--skip", nargs="*", default=[], choices=[cls.name for cls in RUNNERS])
    p.add_argument("--budget-s", type=float, default=420.0,
                   help="no runner starts that would end past this many seconds from the start (default 420)")
    p.add_argument("--hard-limit-s", type=float, default=470.0,
                   help="the watchdog reports and exits at this many seconds from the start (default 470)")
    args = p.parse_args(argv)
    from galaxy_finetune.core.params import load_params

    params = load_params(ROOT / "params.yaml")
    small = args.dry_run
    defaults = {"galaxies": 64 if small else 8000, "size": 64 if small else params.train.input_size,
                "batch": 8 if small else params.train.batch_size, "predict_batch": 16 if small else None,
                "steps": 2 if small else 100, "warmup": 1 if small else 10, "workers": "0,1" if small else "0,4,8",
                "decode_workers": 2 if small else min(16, os.cpu_count() or 1),
                "compile_backend": "eager" if small else "inductor",
                "arch": "test_convnext" if small else params.model.random_arch}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.workers = [int(w) for w in str(args.workers).split(",")]
    args.params = params
    if small:
        args.device = "cpu" if args.device == "auto" else args.device
        torch.set_num_threads(1)  # on a small shared CPU, threads that wait for each other cost 10-100x
    return args


def main(argv=None) -> int:
    from galaxy_finetune.core.cli import quiet_logs

    args = parse_args(argv)
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    quiet_logs()  # one line per distinct warning, no Lightning banners
    info = provenance(command="python3 " + " ".join(["benchmarks/gpu_check.py", *(sys.argv[1:] if argv is None
                                                                                    else argv)]),
                      dry_run=args.dry_run, galaxies=args.galaxies, size=args.size, batch=args.batch,
                      steps=args.steps, warmup=args.warmup, workers=args.workers, decode_workers=args.decode_workers,
                      arch=args.arch, compile_backend=args.compile_backend, budget_s=args.budget_s, hard_limit_s=args.hard_limit_s,
                      logger="CSVLogger every 5 steps (stands in for dvclive, not on the GPU box)")
    info["device"] = device_info(device)
    print(json.dumps(info), flush=True)
    report = Report(args.out, info, device.type == "cuda")
    timer = watchdog(report, args.hard_limit_s)
    folder = Path(tempfile.mkdtemp(prefix="galaxy-gpu-check-"))
    try:
        t0 = time.perf_counter()
        bench = prepare(args, device, folder)  # before CUDA is used: write_galaxies forks its renderers
        bench.deadline = START + args.budget_s
        report.results["prepare"] = {"seconds": round(time.perf_counter() - t0, 1), "galaxies": args.galaxies,
                                     "train": bench.n_train, "val": bench.n_val, "px": args.size,
                                     "timed_steps": args.steps}
        print(f"prepare: {json.dumps(report.results['prepare'])}", flush=True)
        run_all(bench, report, [cls.name for cls in RUNNERS if cls.name not in args.skip])
    finally:
        timer.cancel()
        shutil.rmtree(folder, ignore_errors=True)
    errors = [name for name, r in report.results.items() if "error" in r]
    report.close(complete=True, errors=errors)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
