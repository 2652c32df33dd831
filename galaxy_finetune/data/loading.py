"""Galaxies read by row from the image store; a batch is one slice of a memory map, viewed on the device.

Neither training nor prediction holds the catalog's pixels in memory: a dataset knows the store's path
and its rows, opens the memory map lazily in whichever process reads it (the main process or a
DataLoader worker), and hands out whole batches as one uint8 tensor. The train and eval views are
computed after the batch reaches its device (see augment.py).
"""
from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch

from galaxy_finetune.core.errors import PipelineError
from galaxy_finetune.core.files import read_table, require
from galaxy_finetune.core.layout import POOL
from galaxy_finetune.core.params import AugmentParams, FitsView
from galaxy_finetune.data.augment import eval_view, strong_view, train_view
from galaxy_finetune.data.images import decode_image
from galaxy_finetune.data.store import open_images, read_rows


def read_split(split_dir: Path, name: str) -> pd.DataFrame:
    return read_table(require(Path(split_dir) / f"{name}.csv", "split"))


class StoreGalaxies(torch.utils.data.Dataset):
    """Rows of an (N, S, S, 3) uint8 image array: the store's memory map (opened lazily, per process), or
    any array already in memory. Items are dicts with image (3, S, S) uint8, label and index.

    With `targets` ((N, K) floats, a regression or votes task's columns): regression batches carry them as
    `label` (B, K) float32; votes batches (`target_keys`: Zoobot's schema.label_cols, one per column) carry
    one (B,) count tensor per key, as Zoobot's tree head reads them, and label stays the class (-1)."""

    def __init__(self, images: str | Path | np.ndarray, rows, labels=None, targets=None, target_keys=()):
        self._path = None if isinstance(images, np.ndarray) else Path(images)
        self._images = images if isinstance(images, np.ndarray) else None
        self.rows = np.array(rows, dtype=np.int64)
        self.labels = torch.tensor(np.full(len(self.rows), -1) if labels is None else np.array(labels), dtype=torch.long)
        self.targets = None if targets is None else torch.as_tensor(np.asarray(targets, dtype=np.float32))
        self.target_keys = list(target_keys)

    @property
    def images(self) -> np.ndarray:
        if self._images is None:
            self._images = open_images(self._path)
        return self._images

    def __getstate__(self):  # a DataLoader worker reopens the map instead of receiving a pickled copy
        state = dict(self.__dict__)
        if self._path is not None:
            state["_images"] = None
        return state

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        return self.__getitems__([i])

    def __getitems__(self, indices):
        index = np.asarray(indices, dtype=np.int64)
        pixels = read_rows(self.images, self.rows[index], self._path or "images")  # one read of the batch's rows
        batch = {"image": torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous(),
                 "label": self.labels[index], "index": torch.from_numpy(index)}
        if self.targets is not None:
            targets = self.targets[index]
            if self.target_keys:
                batch.update({key: targets[:, i] for i, key in enumerate(self.target_keys)})
            else:
                batch["label"] = targets
        return batch


class ImageFiles(torch.utils.data.Dataset):
    """Image files decoded at `size` x `size` as they are read (for galaxy-classify on new galaxies):
    paths are kept as one bytes array, so a million of them cost ~100 MB and no copy-on-write in workers.

    `skip_damaged`: a file that cannot be decoded (truncated, empty, not really an image) does not stop the
    batch: its pixels are black, its `ok` entry False and its one-line reason is in the batch's `damaged`
    list (index, message); the batch's other images are decoded as usual. Without it, it is a PipelineError."""

    def __init__(self, paths, size: int, fits: FitsView = FitsView(), skip_damaged: bool = False):
        self.paths = np.asarray([str(p).encode() for p in paths])
        self.size, self.fits, self.skip_damaged = size, fits, skip_damaged

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):
        return self.__getitems__([i])

    def _decode(self, i: int, damaged: list) -> np.ndarray:
        try:
            return decode_image(self.paths[i].decode(), self.size, fits=self.fits)
        except PipelineError as exc:
            if not self.skip_damaged:
                raise
            damaged.append((int(i), str(exc)))
            return np.zeros((self.size, self.size, 3), np.uint8)

    def __getitems__(self, indices):
        damaged: list[tuple[int, str]] = []
        pixels = np.stack([self._decode(i, damaged) for i in indices])
        bad = {i for i, _ in damaged}
        return {"image": torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous(),
                "index": torch.as_tensor(np.asarray(indices, dtype=np.int64)),
                "ok": torch.as_tensor([int(i) not in bad for i in indices], dtype=torch.bool), "damaged": damaged}


def galaxies_of(store_dir: str | Path, frame: pd.DataFrame, task=None) -> StoreGalaxies:
    """The store rows of a split's frame, with what `task` learns from (core.task.Task; None: classification)."""
    if task is None or task.by_class:
        return StoreGalaxies(store_dir, frame["row"], frame["label"])
    missing = task.missing_targets(frame.columns)
    if missing:
        raise PipelineError(f"splits: no {task.kind} column(s) {missing}; rerun dvc repro (fetch_data and split)")
    keys = task.schema_keys() if task.questions else ()  # the votes head reads its counts by the schema's keys
    return StoreGalaxies(store_dir, frame["row"], frame["label"], frame[list(task.label_cols)].to_numpy(float), keys)


def pool_size(split_dir: Path) -> int:
    """How many galaxies the unlabelled pool holds (data/splits/unlabelled.csv; 0 where there is none)."""
    path = Path(split_dir) / f"{POOL}.csv"
    if not path.is_file():
        return 0
    with open(path) as f:
        return max(sum(1 for _ in f) - 1, 0)


def labelled_part(batch: dict) -> dict:
    """The labelled galaxies of a training batch: all of it, or its "labelled" part when the unlabelled pool rides
    along (GalaxyDataModule with pool_ratio)."""
    return batch.get("labelled", batch)


def _as_batch(batch):
    return batch  # __getitems__ already returns the whole batch


def make_loader(dataset, batch_size: int, shuffle: bool, workers: int,
                worker_init_fn=None) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=_as_batch, num_workers=workers,
        persistent_workers=workers > 0, pin_memory=torch.cuda.is_available(), worker_init_fn=worker_init_fn)


class GalaxyDataModule(L.LightningDataModule):
    """Training data: train/val rows of data/splits/ read from the store; views computed on the device.

    `pool_ratio` > 0 serves the unlabelled pool (data/splits/unlabelled.csv) beside each training batch: a training
    batch is {"labelled": batch, "unlabelled": pool_ratio times as many pool galaxies}, the pool galaxies drawn at
    random with replacement (so a step costs the same whatever the pool's size: it is sampled, never scanned), each
    seen as a weak view (`weak`: the train view) and a strong one (`strong`: augment.strong_view)."""

    def __init__(self, store_dir: str | Path, split_dir: str | Path, input_size: int, batch_size: int,
                 augment: AugmentParams, workers: int = 0, normalisation: dict | None = None, task=None,
                 pool_ratio: int = 0):
        super().__init__()
        self.task = task  # core.task.Task: what the batches carry besides the images (None: classification)
        self.store_dir, self.split_dir = Path(store_dir), Path(split_dir)
        self.input_size, self.batch_size, self.augment, self.workers = input_size, batch_size, augment, workers
        self.normalisation = normalisation  # the encoder's mean/std (encoder.input_normalisation); None: [0, 1]
        self.pool_ratio = pool_ratio
        self.datasets: dict[str, StoreGalaxies] = {}

    def dataset(self, name: str) -> StoreGalaxies:
        if name not in self.datasets:
            if name == POOL:  # no truth to carry; absent from splits written before the pool existed
                path = self.split_dir / f"{POOL}.csv"
                rows = read_table(path)["row"] if path.is_file() else []
                self.datasets[name] = StoreGalaxies(self.store_dir, rows)
            else:
                self.datasets[name] = galaxies_of(self.store_dir, read_split(self.split_dir, name), self.task)
        return self.datasets[name]

    def setup(self, stage: str) -> None:
        for name in {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(stage, ()):
            self.dataset(name)

    def train_dataloader(self):
        labelled = make_loader(self.dataset("train"), self.batch_size, True, self.workers)
        if not self.pool_ratio:
            return labelled
        from lightning.pytorch.utilities import CombinedLoader

        pool = self.dataset(POOL)
        size = self.batch_size * self.pool_ratio
        sampler = torch.utils.data.RandomSampler(pool, replacement=True, num_samples=len(labelled) * size)
        unlabelled = torch.utils.data.DataLoader(pool, batch_size=size, sampler=sampler, collate_fn=_as_batch,
                                                 num_workers=self.workers, persistent_workers=self.workers > 0,
                                                 pin_memory=torch.cuda.is_available())
        return CombinedLoader({"labelled": labelled, "unlabelled": unlabelled}, mode="min_size")

    def val_dataloader(self):
        return make_loader(self.dataset("val"), self.batch_size, False, self.workers)

    def test_dataloader(self):
        return make_loader(self.dataset("test"), self.batch_size, False, self.workers)

    def eval_view(self, images: torch.Tensor) -> torch.Tensor:
        return eval_view(images, self.input_size, self.augment.eval_zoom, self.normalisation)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if self.trainer is not None and self.trainer.training:
            labelled = labelled_part(batch)
            labelled["image"] = train_view(labelled["image"], self.input_size, self.augment,
                                           normalisation=self.normalisation)
            if "unlabelled" in batch:
                pool = batch["unlabelled"]
                images = pool.pop("image")
                pool["weak"] = train_view(images, self.input_size, self.augment, normalisation=self.normalisation)
                pool["strong"] = strong_view(images, self.input_size, self.augment, normalisation=self.normalisation)
        else:
            batch["image"] = self.eval_view(batch["image"])
        return batch
