"""Galaxies in memory: decoded once into a uint8 tensor, batched by index, viewed on the device."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch

from galaxy_finetune.augment import eval_view, train_view
from galaxy_finetune.errors import PipelineError
from galaxy_finetune.images import decode_image
from galaxy_finetune.params import AugmentParams


def load_images(files: list[Path], threads: int = 4) -> torch.Tensor:
    """Decode image files into one (N, 3, H, W) uint8 tensor (resized to the first image's size if mixed)."""
    if not files:
        return torch.zeros(0, 3, 1, 1, dtype=torch.uint8)
    first = decode_image(files[0], None)
    size = max(first.shape[:2])
    if first.shape[:2] != (size, size):
        first = decode_image(files[0], size)
    with ThreadPoolExecutor(threads) as pool:  # PIL decodes with the GIL released
        arrays = [first, *pool.map(lambda f: decode_image(f, size), files[1:])]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def read_split(split_dir: Path, name: str) -> pd.DataFrame:
    path = Path(split_dir) / f"{name}.csv"
    if not path.is_file():
        raise PipelineError(f"{path}: not found; run the split stage first (dvc repro split)")
    return pd.read_csv(path, dtype={"id_str": str})


class InMemoryGalaxies(torch.utils.data.Dataset):
    """Images and labels already in memory; a whole batch is one tensor index (no per-image collate)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return {"image": self.images[i], "label": self.labels[i]}

    def __getitems__(self, indices):
        index = torch.as_tensor(indices)
        return {"image": self.images[index], "label": self.labels[index]}


def _as_batch(batch):
    return batch


class GalaxyDataModule(L.LightningDataModule):
    """train/val/test splits from data/splits/, images from data/raw/; views computed on the device."""

    def __init__(self, split_dir: str | Path, raw_dir: str | Path, input_size: int, batch_size: int,
                 augment: AugmentParams, eval_batch_size: int | None = None):
        super().__init__()
        self.split_dir, self.raw_dir = Path(split_dir), Path(raw_dir)
        self.input_size, self.batch_size = input_size, batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.augment = augment
        self.predict_split = "test"  # which split predict_dataloader serves
        self.datasets: dict[str, InMemoryGalaxies] = {}
        self.frames: dict[str, pd.DataFrame] = {}

    def load(self, name: str) -> InMemoryGalaxies:
        """The split `name` from split_dir, decoded once."""
        if name not in self.datasets:
            self.add(name, read_split(self.split_dir, name))
        return self.datasets[name]

    def add(self, name: str, frame: pd.DataFrame) -> InMemoryGalaxies:
        """Galaxies of `frame` (file relative to raw_dir or absolute; label optional) under `name`."""
        images = load_images([self.raw_dir / f for f in frame["file"]])
        label = frame["label"].to_numpy() if "label" in frame.columns else np.full(len(frame), -1)
        self.frames[name], self.datasets[name] = frame, InMemoryGalaxies(images, torch.tensor(label, dtype=torch.long))
        return self.datasets[name]

    def setup(self, stage: str) -> None:
        names = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",),
                 "predict": (self.predict_split,)}[stage]
        for name in names:
            if name not in self.datasets:
                self.load(name)

    def _loader(self, name: str, train: bool) -> torch.utils.data.DataLoader:
        # num_workers=0: a batch is a single tensor index, cheaper than shipping it between processes
        return torch.utils.data.DataLoader(
            self.datasets[name], batch_size=self.batch_size if train else self.eval_batch_size, shuffle=train,
            collate_fn=_as_batch, pin_memory=torch.cuda.is_available())

    def train_dataloader(self):
        return self._loader("train", train=True)

    def val_dataloader(self):
        return self._loader("val", train=False)

    def test_dataloader(self):
        return self._loader("test", train=False)

    def predict_dataloader(self):
        return self._loader(self.predict_split, train=False)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        training = self.trainer is not None and self.trainer.training
        if training:
            batch["image"] = train_view(batch["image"], self.input_size, self.augment)
        else:
            batch["image"] = eval_view(batch["image"], self.input_size, self.augment.eval_zoom)
        return batch
