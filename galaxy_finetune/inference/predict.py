"""Class probabilities for any number of galaxies, streamed: bounded memory, resumable, across processes and nodes.

`predict_to_file` runs the fine-tuned classifier over a dataset (store rows for the predict stage, image
files for galaxy-classify) with a Lightning Trainer: one process, the GPUs of a node (`devices`, Lightning's
launcher), or every rank of a job started by torchrun or srun across nodes (`num_nodes`; Lightning detects the
cluster). A `BasePredictionWriter` appends each batch's rows to the part files of their blocks of input rows
(inference/parts.py: keyed by rows, not by rank), so memory holds one batch, each rank writes its own blocks,
and a run started again with the same arguments, on any number of ranks, predicts only what the parts lack. At
the end rank zero merges the parts into the output (CSV, or Parquet for .parquet) in input order, one block at a
time, renames it into place and removes the parts.

SIGTERM or SIGUSR1 (Preemption) finishes the batch in flight, keeps every part and exits with REQUEUE_STATUS
(75); a full disk names the file and the space it needs.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import threading
import time
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.plugins.environments import SLURMEnvironment

from galaxy_finetune.core.accelerator import resolve_accelerator
from galaxy_finetune.core.errors import REQUEUE_STATUS, PipelineError, Requeue, restore_handlers
from galaxy_finetune.core.files import atomic_path, write_csv, write_json
from galaxy_finetune.core.layout import MODEL_WEIGHTS, TIMING
from galaxy_finetune.core.task import Task
from galaxy_finetune.data.loading import StoreGalaxies, make_loader, read_split
from galaxy_finetune.inference.parts import RUN, Parts, merge
from galaxy_finetune.inference.shift import shift_scorer
from galaxy_finetune.training.model_io import eval_transform, load_finetuned, model_task

class DamagedImageWarning(UserWarning):
    """An image file could not be decoded: it is skipped, listed beside the predictions, and the rest go on."""


def readable_batches(loader, damaged: list):
    """The batches of `loader` (over ImageFiles with skip_damaged) holding at least one decoded image; each damaged
    file is named in a DamagedImageWarning and its (position, reason) appended to `damaged`."""
    for batch in loader:
        for _, reason in batch["damaged"]:
            warnings.warn(f"{reason}; skipped", DamagedImageWarning, stacklevel=3)
        damaged += batch["damaged"]
        if batch["ok"].any():
            yield batch


def skipped_path(out_path: Path) -> Path:
    """Where the damaged images a run skipped are listed: beside OUTPUT, `<stem>_skipped.csv`."""
    out_path = Path(out_path)
    return out_path.with_name(f"{out_path.stem}_skipped.csv")

def write_skipped(out_path: Path, skipped: pd.DataFrame) -> Path:
    """The damaged images a run skipped (id_str, file, reason) listed beside OUTPUT, or an earlier run's list of
    this output removed when none was skipped; returns the list's path."""
    listed = skipped_path(out_path)
    if len(skipped):
        write_csv(listed, skipped)
    elif listed.is_file():
        listed.unlink()  # a list from an earlier run of this output: nothing was skipped this time
    return listed


def damaged_table(galaxies: pd.DataFrame, damaged: list) -> pd.DataFrame:
    """write_skipped's table of the (position in `galaxies`, reason) pairs readable_batches collected."""
    rows = [i for i, _ in damaged]
    return pd.DataFrame({"id_str": galaxies["id_str"].to_numpy()[rows], "file": galaxies["file"].to_numpy()[rows],
                         "reason": [r for _, r in damaged]})


class Preemption:
    """SIGTERM or SIGUSR1 (a scheduler's notice before preemption or the time limit) asks the run to stop: the
    batch in flight is predicted and written, then `check` raises Requeue (exit status REQUEUE_STATUS). Installed
    over Lightning's own SIGTERM handler, which only logs during prediction (and broadcasts in a signal handler);
    a rank started by Lightning's subprocess launcher (`--devices N`) is sent the same signal."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self, what: str):
        self.what, self.received, self.launcher, self._before = what, None, None, {}

    def install(self, launcher=None) -> "Preemption":
        self.launcher = launcher if launcher is not None else self.launcher
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                previous = signal.signal(signum, self._handler)
                self._before.setdefault(signum, previous)
        return self

    def restore(self) -> None:
        restore_handlers(self._before)
        self._before = {}

    def _handler(self, signum, frame) -> None:
        if self.received is None and self.launcher is not None and getattr(self.launcher, "procs", None):
            self.launcher.kill(signum)  # the ranks this process started
        self.received = signal.Signals(signum).name

    def check(self) -> None:
        if self.received is not None:
            raise Requeue(f"stopped by {self.received}: {self.what}; rerun the same command to go on "
                          f"(exit status {REQUEUE_STATUS}: requeue)")


def _ignore_stop_signals(worker_id: int) -> None:
    """In a DataLoader worker: SIGTERM and SIGUSR1 sent to the whole job (SLURM signals every process of a step) are
    the main process's to act on; the worker keeps decoding until the main process shuts it down."""
    for signum in Preemption.SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


class CsvPartWriter(BasePredictionWriter):
    """Appends each batch's predictions, prefixed by their input index, to the part files of their blocks of input
    rows (inference/parts.py); with `project`, their PCA features first; then stops when a signal asked to."""

    def __init__(self, parts: Parts, galaxies: pd.DataFrame, task: Task, extra: list[str], scorer=None,
                 stop: Preemption | None = None, project=None):
        super().__init__(write_interval="batch")
        self.parts, self.galaxies, self.task, self.extra = parts, galaxies, task, extra
        self.labelled = task.labelled(galaxies)
        self.scorer = scorer  # per-batch columns computed from the batch's forward pass (inference.shift.ShiftScorer)
        self.project = project  # encoder features -> PCA features (--embeddings-out), from `scorer`'s hook
        self.stop, self.left = stop, 0

    def on_predict_start(self, trainer, pl_module):
        self.left = len(trainer.datamodule.mine)
        if self.stop is not None:
            self.stop.install(trainer.strategy.launcher)  # over the handler Lightning set for this run

    def _skip_damaged(self, prediction, batch):
        """The batch's damaged images (ImageFiles' skip_damaged) listed and named in a warning; the rest of it."""
        if "ok" not in batch or bool(batch["ok"].all()):
            return prediction, batch, None
        damaged = pd.DataFrame(batch["damaged"], columns=["index", "reason"])
        damaged.insert(1, "id_str", self.galaxies["id_str"].to_numpy()[damaged["index"].to_numpy()])
        self.parts.write("skipped", damaged["index"].to_numpy(np.int64),
                         lambda at: damaged.iloc[at].to_csv(header=False, index=False).encode(), self.left)
        for reason in damaged["reason"]:
            warnings.warn(f"{reason}; skipped", DamagedImageWarning, stacklevel=2)
        keep = batch["ok"].cpu()
        return prediction[keep.to(prediction.device)], {**batch, "index": batch["index"][keep.to(batch["index"].device)]}, \
            keep.numpy()

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        size = len(batch["index"])
        self.left -= size  # rows this process has still to write after this batch
        prediction, batch, keep = self._skip_damaged(prediction, batch)
        if len(batch["index"]):
            index = batch["index"].cpu().numpy()
            rows = self.galaxies.iloc[index]
            out = prediction.float().cpu().numpy().reshape(len(index), -1)
            columns = [index, rows["id_str"].to_numpy(), *self.task.prediction_columns(out, rows, self.labelled)]
            columns += [rows[name].to_numpy() for name in self.extra]
            columns += self._scores(keep)
            table = pd.DataFrame({i: c for i, c in enumerate(columns)})
            if self.project is not None:  # the features first: every row a part holds has its features
                features = self.scorer.features if keep is None else self.scorer.features[keep]
                pca = self.project(features)
                self.parts.write("emb", index, lambda at: self.parts.embedding_records(index[at], pca[at]), self.left)
            self.parts.write("part", index, lambda at: table.iloc[at].to_csv(header=False, index=False).encode(),
                             self.left)
        if self.stop is not None:
            self.stop.check()

    def _scores(self, keep) -> list[np.ndarray]:
        """The scorer's columns of the batch's kept rows (`keep`: None, every row)."""
        if self.scorer is None or not self.scorer.names:
            return []
        return [c if keep is None else c[keep] for c in self.scorer.columns()]


class PredictionData(L.LightningDataModule):
    """Exactly what prediction serves: this rank's share of the input rows the parts lack, through the eval view."""

    def __init__(self, dataset, parts: Parts, key: dict, view, batch_size: int, workers: int = 0):
        """`key`: which run the parts belong to (rank zero starts afresh when they hold another);
        `view`: the model's eval view (model_io.eval_transform)."""
        super().__init__()
        self.dataset, self.parts, self.key = dataset, parts, key
        self.view, self.batch_size, self.workers = view, batch_size, workers
        self.mine, self.resumed = None, 0

    def setup(self, stage: str) -> None:
        strategy = self.trainer.strategy
        plan = None
        if strategy.global_rank == 0:  # the others wait in the broadcast: no rank writes before the parts are ready
            self.parts.prepare(self.key)
            counts = self.parts.done_counts()
            self.resumed = int(counts.sum())
            if self.resumed:
                print(f"predict: resuming, {self.resumed} of {self.parts.n} galaxies already predicted in "
                      f"{self.parts.folder}")
            plan = self.parts.plan(strategy.world_size, counts)
        plan = strategy.broadcast(plan, src=0)
        self.mine = self.parts.todo(plan[strategy.global_rank])

    def predict_dataloader(self):
        return make_loader(torch.utils.data.Subset(self.dataset, self.mine.tolist()), self.batch_size, False,
                           self.workers, worker_init_fn=_ignore_stop_signals)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        batch["image"] = self.view(batch["image"])
        return batch


def skipped_images(parts: Parts, galaxies: pd.DataFrame) -> pd.DataFrame:
    """The damaged images the parts list (id_str, file when `galaxies` has it, reason), in input order."""
    frames = [pd.read_csv(p, header=None, names=["index", "id_str", "reason"], dtype={"id_str": str},
                          keep_default_na=False) for p in parts.files("skipped") if p.stat().st_size]
    table = pd.concat(frames) if frames else pd.DataFrame({"index": [], "id_str": [], "reason": []})
    table = table.sort_values("index")
    if "file" in galaxies.columns:
        table.insert(2, "file", galaxies["file"].to_numpy()[table["index"].to_numpy(int)])
    return table.drop(columns="index").reset_index(drop=True)


def _run_key(model_dir: Path | None, galaxies: pd.DataFrame, what: str) -> dict:
    """Which model (its weights file's path, size and mtime; None: a model never saved, never resumed) and
    which inputs a folder of parts belongs to."""
    digest = hashlib.sha256(pd.util.hash_pandas_object(galaxies, index=False).to_numpy().tobytes())
    key = {"inputs_sha256": digest.hexdigest(), "what": what}
    if model_dir is None:
        return key | {"model": None, "nonce": time.time_ns()}
    weights = Path(model_dir) / MODEL_WEIGHTS
    stat = weights.stat()
    return key | {"model": str(weights.resolve()), "model_size": stat.st_size, "model_mtime_ns": stat.st_mtime_ns}


class _Features:
    """The encoder's features of each batch, for --embeddings-out without the shift columns (a forward hook)."""
    names: list = []

    def __init__(self):
        self.features, self._handle = None, None

    def attach(self, model):
        self._handle = model.encoder.register_forward_hook(self._keep)

    def detach(self):
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _keep(self, module, inputs, output):
        self.features = output.detach().float().cpu().numpy()


def check_writable(out_path: Path, *more: Path | None) -> None:
    """Before any prediction: each output's folder (the nearest that exists) is a folder this process can write."""
    for path in (out_path, *more):
        if path is None:
            continue
        folder = Path(path).absolute().parent
        while not folder.exists():
            folder = folder.parent
        if not folder.is_dir():
            raise PipelineError(f"{folder}: not a folder, so {path} cannot be written there; choose another output")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PipelineError(f"{folder}: read-only, so {path} cannot be written there; choose an output in a "
                                "folder you can write")


def predict_to_file(model, config: dict, model_dir: Path, dataset, galaxies: pd.DataFrame, out_path: Path,
                    parts_dir: Path, batch_size: int, accelerator: str = "auto", devices: int | str = 1,
                    workers: int = 0, extra: list[str] = (), progress: bool = True, scorer=None, num_nodes: int = 1,
                    embeddings_out: Path | None = None, pca=None) -> dict:
    """Predictions for every galaxy of `dataset` (row i described by galaxies.iloc[i]: id_str, optional
    label, `extra` columns) written to `out_path` (CSV, or Parquet for .parquet); resumes from `parts_dir` when it
    holds the same run. `scorer` (inference.shift.ShiftScorer) adds its columns (`scorer.names`) after `extra`.
    `embeddings_out` with `pca` ((mean, components) of the embed stage): the float16 PCA features of the same rows,
    in the same order, as a .npy. Across processes (`devices` per node x `num_nodes`, started by Lightning, torchrun
    or srun) each rank predicts its share of blocks; rank zero merges and returns the summary (the others: {})."""
    parts_dir, out_path = Path(parts_dir), Path(out_path)
    check_writable(out_path, parts_dir / RUN, embeddings_out)
    hook = scorer
    project = None
    if embeddings_out is not None:
        mean, components = (np.asarray(a, np.float32) for a in pca)
        project = lambda f: (np.asarray(f, np.float32).astype(np.float16).astype(np.float32) - mean) @ components.T
        hook = scorer if scorer is not None else _Features()
    scorer_names = list(scorer.names) if scorer is not None else []
    key = _run_key(model_dir, galaxies, str(out_path)) | {"scores": scorer_names}
    parts = Parts(parts_dir, len(galaxies), len(components) if embeddings_out is not None else 0)
    device, precision = resolve_accelerator(accelerator, "auto")
    data = PredictionData(dataset, parts, key, eval_transform(config), batch_size, workers)
    task = model_task(config)
    stop = Preemption(f"the rows predicted so far are kept in {parts_dir}")
    writer = CsvPartWriter(parts, galaxies, task, list(extra), hook, stop, project)
    # under SLURM, SIGUSR1 is Preemption's (keep the parts, exit 75), not Lightning's auto-requeue (a training
    # checkpoint and `scontrol requeue` from inside the run)
    plugins = [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []
    trainer = L.Trainer(accelerator=device, devices=devices, num_nodes=num_nodes, precision=precision, logger=False,
                        callbacks=[writer], enable_model_summary=False, enable_progress_bar=progress,
                        use_distributed_sampler=False, plugins=plugins)
    start = time.perf_counter()
    if hook is not None:
        hook.attach(model)
    stop.install()
    try:
        trainer.predict(model, datamodule=data, return_predictions=False)
        stop.check()
        seconds = time.perf_counter() - start
        trainer.strategy.barrier()  # every rank's parts are complete before rank zero merges
        if not trainer.is_global_zero:
            return {}
        header = task.prediction_header(writer.labelled, list(extra) + scorer_names)
        skipped = skipped_images(parts, galaxies)
        listed = write_skipped(out_path, skipped)
        if len(skipped) == len(galaxies):
            shutil.rmtree(parts_dir)
            raise PipelineError(f"{out_path}: not written, none of the {len(galaxies)} image(s) could be decoded (e.g. "
                                f"{skipped['reason'].iloc[0]}); all are listed in {listed}")
        stop.what = f"every prediction is kept in {parts_dir}, {out_path} is not written yet"
        merge(parts, out_path, header, len(galaxies) - len(skipped), stop.check, embeddings_out)
    finally:
        stop.restore()
        if hook is not None:
            hook.detach()
    shutil.rmtree(parts_dir)
    resumed = data.resumed
    return {"accelerator": device, "precision": precision, "galaxies": len(galaxies) - len(skipped),
            "resumed": resumed, "skipped": len(skipped), "skipped_list": str(listed) if len(skipped) else None,
            "world_size": trainer.world_size,
            "images_per_s": round((len(galaxies) - resumed) / seconds, 1) if seconds else None}


def predict_splits(model_dir: Path, store_dir: Path, split_dir: Path, out_dir: Path, splits: list[str],
                   batch_size: int, accelerator: str = "auto", parts_root: Path = Path(".partial/predict"),
                   embeddings_dir: Path | None = None) -> dict:
    """data/predictions/<split>.csv (with each galaxy's store `row`, and with `embeddings_dir` each galaxy's
    distance from the training set: inference/shift.py) and timing.json for each split."""
    model, config = load_finetuned(model_dir)
    scorer = None
    if embeddings_dir is not None:
        scorer = shift_scorer(embeddings_dir, model_dir)
    timing = {}
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for name in splits:
            frame = read_split(split_dir, name)
            dataset = StoreGalaxies(store_dir, frame["row"], frame["label"])  # the images; targets come from frame
            result = predict_to_file(model, config, model_dir, dataset, frame, tmp / f"{name}.csv",
                                    Path(parts_root) / name, batch_size, accelerator, extra=["row"], scorer=scorer)
            timing.update(accelerator=result["accelerator"], precision=result["precision"])
            timing[f"{name}_images_per_s"] = result["images_per_s"]
        write_json(tmp / TIMING, timing)
    return timing
