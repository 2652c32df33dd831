"""Class probabilities for any number of galaxies, streamed: bounded memory, resumable, one file per rank.

`predict_to_csv` runs the fine-tuned classifier over a dataset (store rows for the predict stage, image
files for galaxy-classify) with a Lightning Trainer. A `BasePredictionWriter` appends each batch's rows
to a part file of its own process (`parts_dir/part-a<attempt>-r<rank>.csv`, flushed per batch), so
memory holds one batch and several GPUs each write their own shard. A killed run, started again with
the same model and inputs, reads which indices its parts already hold and predicts only the rest. At the
end the parts, each in ascending index order, are merged into the output CSV in input order (a k-way
merge of lines, never the whole table in memory), renamed into place, and the parts are removed.
"""
from __future__ import annotations

import hashlib
import heapq
import json
import shutil
import time
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from galaxy_finetune.core.accelerator import resolve_accelerator
from galaxy_finetune.core.errors import PipelineError
from galaxy_finetune.core.files import atomic_path, write_csv, write_json
from galaxy_finetune.core.layout import MODEL_WEIGHTS, TIMING
from galaxy_finetune.core.task import Task
from galaxy_finetune.data.loading import StoreGalaxies, make_loader, read_split
from galaxy_finetune.inference.shift import shift_scorer
from galaxy_finetune.training.model_io import eval_transform, load_finetuned, model_task

RUN = "run.json"  # in parts_dir: which model and inputs the parts belong to


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


class CsvPartWriter(BasePredictionWriter):
    """Appends each batch's predictions, prefixed by their input index, to this rank's part file."""

    def __init__(self, parts_dir: Path, galaxies: pd.DataFrame, task: Task, extra: list[str], scorer=None):
        super().__init__(write_interval="batch")
        self.parts_dir, self.galaxies, self.task, self.extra = Path(parts_dir), galaxies, task, extra
        self.labelled = task.labelled(galaxies)
        self.scorer = scorer  # per-batch columns computed from the batch's forward pass (inference.shift.ShiftScorer)
        self.file = self.skipped = None

    def on_predict_start(self, trainer, pl_module):
        attempt, rank = trainer.datamodule.attempt, trainer.global_rank
        self.file = open(self.parts_dir / f"part-a{attempt:04d}-r{rank:04d}.csv", "a", newline="")
        self.skipped = open(self.parts_dir / f"skipped-a{attempt:04d}-r{rank:04d}.csv", "a", newline="")

    def _skip_damaged(self, prediction, batch):
        """The batch's damaged images (ImageFiles' skip_damaged) listed and named in a warning; the rest of it."""
        if "ok" not in batch or bool(batch["ok"].all()):
            return prediction, batch, None
        damaged = pd.DataFrame(batch["damaged"], columns=["index", "reason"])
        damaged.insert(1, "id_str", self.galaxies["id_str"].to_numpy()[damaged["index"].to_numpy()])
        self.skipped.write(damaged.to_csv(header=False, index=False))
        self.skipped.flush()
        for reason in damaged["reason"]:
            warnings.warn(f"{reason}; skipped", DamagedImageWarning, stacklevel=2)
        keep = batch["ok"].cpu()
        return prediction[keep.to(prediction.device)], {**batch, "index": batch["index"][keep.to(batch["index"].device)]}, \
            keep.numpy()

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        prediction, batch, keep = self._skip_damaged(prediction, batch)
        if len(batch["index"]) == 0:
            return
        index = batch["index"].cpu().numpy()
        rows = self.galaxies.iloc[index]
        out = prediction.float().cpu().numpy().reshape(len(index), -1)
        columns = [index, rows["id_str"].to_numpy(), *self.task.prediction_columns(out, rows, self.labelled)]
        columns += [rows[name].to_numpy() for name in self.extra]
        columns += self._scores(keep)
        lines = pd.DataFrame({i: c for i, c in enumerate(columns)}).to_csv(header=False, index=False)
        self.file.write(lines)
        self.file.flush()

    def _scores(self, keep) -> list[np.ndarray]:
        """The scorer's columns of the batch's kept rows (`keep`: None, every row)."""
        if self.scorer is None:
            return []
        return [c if keep is None else c[keep] for c in self.scorer.columns()]

    def on_predict_end(self, trainer, pl_module):
        self.file.close()
        self.skipped.close()
        trainer.strategy.barrier()  # every rank's part is complete before rank zero merges


class PredictionData(L.LightningDataModule):
    """Exactly what prediction serves: one dataset's not-yet-predicted indices, through the eval view."""

    def __init__(self, dataset, done: np.ndarray, attempt: int, view, batch_size: int, workers: int = 0):
        """`done`: indices earlier attempts already predicted; `attempt`: this attempt's number (part names);
        `view`: the model's eval view (model_io.eval_transform)."""
        super().__init__()
        self.dataset, self.plan = dataset, (np.setdiff1d(np.arange(len(dataset)), done), attempt)
        self.view, self.batch_size, self.workers = view, batch_size, workers
        self.todo, self.attempt = None, attempt

    def setup(self, stage: str) -> None:
        # every rank takes rank zero's plan (a collective, so no rank writes before all have planned)
        self.todo, self.attempt = self.trainer.strategy.broadcast(self.plan, src=0)

    def predict_dataloader(self):
        return make_loader(torch.utils.data.Subset(self.dataset, self.todo.tolist()), self.batch_size, False,
                           self.workers)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        batch["image"] = self.view(batch["image"])
        return batch


def _part_files(parts_dir: Path, kind: str = "part") -> list[Path]:
    """This run's part files: predictions (`part`) or the damaged images skipped (`skipped`)."""
    return sorted(Path(parts_dir).glob(f"{kind}-a*-r*.csv"))


def done_indices(parts_dir: Path) -> tuple[np.ndarray, int]:
    """Indices the part files already hold, predicted or skipped as damaged (a torn last line of a killed run
    is cut off), and how many attempts wrote them."""
    done, attempts = [], 0
    for part in _part_files(parts_dir) + _part_files(parts_dir, "skipped"):
        attempts = max(attempts, int(part.name.split("-")[1][1:]))
        data = part.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(part, "r+b") as fh:
                fh.truncate(data.rfind(b"\n") + 1)
        if part.stat().st_size:
            done.append(pd.read_csv(part, header=None, usecols=[0]).iloc[:, 0].to_numpy())
    return (np.concatenate(done) if done else np.zeros(0, dtype=np.int64)), attempts


def skipped_images(parts_dir: Path, galaxies: pd.DataFrame) -> pd.DataFrame:
    """The damaged images the parts list (id_str, file when `galaxies` has it, reason), in input order."""
    frames = [pd.read_csv(p, header=None, names=["index", "id_str", "reason"], dtype={"id_str": str},
                          keep_default_na=False) for p in _part_files(parts_dir, "skipped") if p.stat().st_size]
    table = pd.concat(frames) if frames else pd.DataFrame({"index": [], "id_str": [], "reason": []})
    table = table.sort_values("index")
    if "file" in galaxies.columns:
        table.insert(2, "file", galaxies["file"].to_numpy()[table["index"].to_numpy(int)])
    return table.drop(columns="index").reset_index(drop=True)


def merge_parts(parts_dir: Path, out_path: Path, header: list[str], expected: int) -> None:
    """The parts, merged in index order with the index dropped, into `out_path` (atomically)."""
    files = [open(p) for p in _part_files(parts_dir)]
    try:
        streams = [((int(line.split(",", 1)[0]), line.split(",", 1)[1]) for line in f) for f in files]
        with atomic_path(out_path) as tmp, open(tmp, "w", newline="") as out:
            out.write(",".join(header) + "\n")
            count, last = 0, -1
            for index, rest in heapq.merge(*streams):
                if index == last:
                    raise RuntimeError(f"{parts_dir}: index {index} predicted twice")  # a bug, not bad input
                out.write(rest)
                count, last = count + 1, index
            if count != expected:
                raise RuntimeError(f"{parts_dir}: {count} predictions for {expected} galaxies")
    finally:
        for f in files:
            f.close()


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


def predict_to_csv(model, config: dict, model_dir: Path, dataset, galaxies: pd.DataFrame, out_path: Path,
                   parts_dir: Path, batch_size: int, accelerator: str = "auto", devices: int | str = 1,
                   workers: int = 0, extra: list[str] = (), progress: bool = True, scorer=None) -> dict:
    """Predictions for every galaxy of `dataset` (row i described by galaxies.iloc[i]: id_str, optional
    label, `extra` columns) written to `out_path`; resumes from `parts_dir` when it holds the same run.
    `scorer` (inference.shift.ShiftScorer) adds its columns (`scorer.names`) after `extra`."""
    parts_dir = Path(parts_dir)
    key = _run_key(model_dir, galaxies, str(out_path)) | {"scores": list(scorer.names) if scorer is not None else []}
    run_file = parts_dir / RUN
    if not run_file.is_file() or json.loads(run_file.read_text()) != key:
        shutil.rmtree(parts_dir, ignore_errors=True)
        parts_dir.mkdir(parents=True)
        write_json(run_file, key)
    done, attempts = done_indices(parts_dir)
    resumed = len(done)
    if resumed:
        print(f"predict: resuming, {resumed} of {len(galaxies)} galaxies already predicted in {parts_dir}")
    device, precision = resolve_accelerator(accelerator, "auto")
    data = PredictionData(dataset, done, attempts + 1, eval_transform(config), batch_size, workers)
    task = model_task(config)
    writer = CsvPartWriter(parts_dir, galaxies, task, list(extra), scorer)
    trainer = L.Trainer(accelerator=device, devices=devices, precision=precision, logger=False,
                        callbacks=[writer], enable_model_summary=False, enable_progress_bar=progress)
    start = time.perf_counter()
    if scorer is not None:
        scorer.attach(model)
    try:
        trainer.predict(model, datamodule=data, return_predictions=False)
    finally:
        if scorer is not None:
            scorer.detach()
    seconds = time.perf_counter() - start
    if not trainer.is_global_zero:
        return {}
    extra_names = list(extra) + (list(scorer.names) if scorer is not None else [])
    header = task.prediction_header(writer.labelled, extra_names)
    skipped = skipped_images(parts_dir, galaxies)
    listed = write_skipped(out_path, skipped)
    if len(skipped) == len(galaxies):
        shutil.rmtree(parts_dir)
        raise PipelineError(f"{out_path}: not written, none of the {len(galaxies)} image(s) could be decoded (e.g. "
                            f"{skipped['reason'].iloc[0]}); all are listed in {listed}")
    merge_parts(parts_dir, out_path, header, len(galaxies) - len(skipped))
    shutil.rmtree(parts_dir)
    return {"accelerator": device, "precision": precision, "galaxies": len(galaxies) - len(skipped),
            "resumed": resumed, "skipped": len(skipped), "skipped_list": str(listed) if len(skipped) else None,
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
            result = predict_to_csv(model, config, model_dir, dataset, frame, tmp / f"{name}.csv",
                                    Path(parts_root) / name, batch_size, accelerator, extra=["row"], scorer=scorer)
            timing.update(accelerator=result["accelerator"], precision=result["precision"])
            timing[f"{name}_images_per_s"] = result["images_per_s"]
        write_json(tmp / TIMING, timing)
    return timing
