"""The fast data path trains on what a simple reference implementation would: speed must not change the data.

Fast path: galaxy_finetune.data.store (every image decoded once into a memory-mapped images.npy),
galaxy_finetune.data.loading (split rows read from the store, whole-batch indexing) and galaxy_finetune.data.augment
(one grid_sample per batch on the device). Reference: PIL decode of each source file per image, the
default collate, and torchvision v2 transforms per image, as galaxy-datasets' default/minimal views do
(RandomAffine, Resize, flips; RandomErasing is left out on purpose, see galaxy_finetune/data/augment.py).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision.transforms.v2 as T
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torch.utils.data import default_collate
from torchvision.transforms import InterpolationMode

from galaxy_finetune.data.augment import eval_view, train_view
from galaxy_finetune.core.accelerator import loader_workers
from galaxy_finetune.data.loading import GalaxyDataModule, StoreGalaxies
from galaxy_finetune.core.params import AugmentParams
from galaxy_finetune.data.store import build_store, stored_size
from galaxy_finetune.data.synthetic import render_galaxy

BILINEAR = InterpolationMode.BILINEAR


def _galaxies(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    labels = np.arange(n) % 4
    return np.stack([render_galaxy(int(label), seed, i, size) for i, label in enumerate(labels)]), labels


def _write(folder, images: np.ndarray, fmt: str = "jpg", offset: int = 0) -> list[str]:
    """Source files under folder/src; returns their absolute paths (a catalog's `src`)."""
    (folder / "src").mkdir(exist_ok=True)
    paths = []
    for i, img in enumerate(images):
        path = folder / "src" / f"g{offset + i:04d}.{fmt}"
        Image.fromarray(img).save(path, **({"quality": 90} if fmt == "jpg" else {}))
        paths.append(str(path))
    return paths


def _store(folder, paths: list, size: int) -> Path:
    """build_store over source files, as the store stage runs it on catalog.csv."""
    catalog = pd.DataFrame({"id_str": [Path(p).stem for p in paths], "src": [str(p) for p in paths]})
    build_store(catalog, folder / "store", size, threads=2)
    return folder / "store"


def _pil_decode(path) -> torch.Tensor:
    """The reference decode: one PIL image at a time, RGB, channel-first uint8."""
    with Image.open(path) as img:
        return torch.from_numpy(np.asarray(img.convert("RGB")).copy()).permute(2, 0, 1)


class PerImageDataset(Dataset):
    """The simple reference: decode the source file in __getitem__, collate per image."""

    def __init__(self, frame: pd.DataFrame):
        self.paths, self.labels = list(frame["src"]), frame["label"].tolist()

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return {"image": _pil_decode(self.paths[i]), "label": torch.tensor(self.labels[i]), "index": torch.tensor(i)}


@pytest.fixture(scope="module")
def split_folder(tmp_path_factory):
    """A store of JPEG and PNG galaxies and train/val split CSVs whose `row`s are scattered through it,
    so a batch is only right if every split row is read from its own store row."""
    folder = tmp_path_factory.mktemp("data")
    images, labels = _galaxies(40, 32)
    paths = _write(folder, images[:30], "jpg") + _write(folder, images[30:], "png", offset=30)
    store = _store(folder, paths, 32)
    catalog = pd.DataFrame({"id_str": [f"g{i:04d}" for i in range(40)], "label": labels, "row": range(40),
                            "src": paths})
    order = np.random.default_rng(3).permutation(40)
    train, val = (catalog.iloc[order[:28]].reset_index(drop=True), catalog.iloc[order[28:]].reset_index(drop=True))
    (folder / "splits").mkdir()
    train.drop(columns="src").to_csv(folder / "splits" / "train.csv", index=False)  # id_str, label, row
    val.drop(columns="src").to_csv(folder / "splits" / "val.csv", index=False)
    return SimpleNamespace(store=store, splits=folder / "splits", train=train, val=val)


# ------------------------------------------------------------------------------------------ samples and labels

def test_store_round_trip_equals_per_image_pil(tmp_path):
    images, _ = _galaxies(12, 24)
    paths = _write(tmp_path, images[:6], "jpg") + _write(tmp_path, images[6:], "png", offset=6)
    grey, palette = tmp_path / "src" / "grey.png", tmp_path / "src" / "palette.png"
    Image.fromarray(images[0][..., 0]).save(grey)  # a single-channel file becomes RGB, as PIL's convert does
    Image.fromarray(images[1]).convert("P").save(palette)  # so does a palette file
    paths += [str(grey), str(palette)]
    store = _store(tmp_path, paths, 24)
    fast = StoreGalaxies(store, range(len(paths))).__getitems__(list(range(len(paths))))["image"]
    assert fast.dtype == torch.uint8 and fast.shape == (14, 3, 24, 24)
    assert torch.equal(fast, torch.stack([_pil_decode(p) for p in paths]))
    assert torch.equal(fast[6:12], torch.from_numpy(images[6:]).permute(0, 3, 1, 2))  # PNG is lossless
    # any rows, in any order: each is the galaxy of its own source file
    rows = [13, 2, 7, 7, 0]
    batch = StoreGalaxies(store, rows, [1, 2, 3, 0, 1]).__getitems__([0, 1, 2, 3, 4])
    assert torch.equal(batch["image"], torch.stack([_pil_decode(paths[r]) for r in rows]))
    assert batch["label"].tolist() == [1, 2, 3, 0, 1] and batch["index"].tolist() == [0, 1, 2, 3, 4]


def test_mixed_sizes_are_resized_like_pil(tmp_path):
    small, _ = _galaxies(2, 32, seed=1)
    big, _ = _galaxies(1, 48)
    paths = _write(tmp_path, small[:1], "png") + _write(tmp_path, big, "png", offset=1)
    size = stored_size("auto", 224, paths[0])  # the first image's size: never upsampled to store
    assert size == 32
    fast = StoreGalaxies(_store(tmp_path, paths, size), [0, 1]).__getitems__([0, 1])["image"]
    expected = np.asarray(Image.open(paths[1]).convert("RGB").resize((32, 32), Image.BILINEAR))
    assert fast.shape == (2, 3, 32, 32)
    assert torch.equal(fast[0], _pil_decode(paths[0]))
    assert torch.equal(fast[1], torch.from_numpy(expected.copy()).permute(2, 0, 1))


def test_training_batches_equal_the_per_image_reference(split_folder):
    """Same sampler seed -> the very same batches, image for image and label for label."""
    data = GalaxyDataModule(split_folder.store, split_folder.splits, 32, batch_size=8, augment=AugmentParams())
    data.setup("fit")
    train = split_folder.train
    reference = DataLoader(PerImageDataset(train), batch_size=8, shuffle=True, collate_fn=default_collate)
    torch.manual_seed(7)
    fast_batches = list(data.train_dataloader())
    torch.manual_seed(7)
    ref_batches = list(reference)
    assert len(fast_batches) == len(ref_batches) == 4
    for fast, ref in zip(fast_batches, ref_batches):
        assert fast["image"].dtype == torch.uint8
        assert torch.equal(fast["image"], ref["image"])
        assert torch.equal(fast["label"], ref["label"])
        assert torch.equal(fast["index"], ref["index"])
    # every galaxy exactly once per epoch, with its own label
    seen = {hashlib.sha1(img.numpy().tobytes()).hexdigest(): int(lab)
            for b in fast_batches for img, lab in zip(b["image"], b["label"])}
    truth = {hashlib.sha1(_pil_decode(f).numpy().tobytes()).hexdigest(): int(lab)
             for f, lab in zip(train["src"], train["label"])}
    assert seen == truth and sum(len(b["label"]) for b in fast_batches) == len(train)


def test_eval_batches_keep_split_order_and_get_the_eval_view(split_folder):
    val = split_folder.val
    aug = AugmentParams()
    data = GalaxyDataModule(split_folder.store, split_folder.splits, 32, batch_size=5, augment=aug)
    data.setup("validate")
    raw_batches = list(data.val_dataloader())
    assert [len(b["label"]) for b in raw_batches] == [5, 5, 2]  # not shuffled, last partial batch kept
    assert torch.equal(torch.cat([b["index"] for b in raw_batches]), torch.arange(12))
    data.trainer = SimpleNamespace(training=False)  # what Lightning's trainer says during validation
    batches = [data.on_after_batch_transfer(dict(b), 0) for b in raw_batches]
    images = torch.cat([b["image"] for b in batches])
    assert torch.equal(torch.cat([b["label"] for b in batches]), torch.tensor(val["label"].to_numpy()))
    view = T.Compose([T.RandomAffine(degrees=0, scale=(aug.eval_zoom, aug.eval_zoom), interpolation=BILINEAR),
                      T.ToDtype(torch.float32, scale=True)])
    expected = torch.stack([view(_pil_decode(f)) for f in val["src"]])
    assert images.shape == expected.shape == (12, 3, 32, 32)
    assert (images - expected).abs().max() <= 1.5 / 255


def test_loader_workers_read_the_same_batches(split_folder):
    """A DataLoader worker reopens the store from its path; its batches are the main process's."""
    args = (split_folder.store, split_folder.splits, 32, 5, AugmentParams())
    in_process = list(GalaxyDataModule(*args).val_dataloader())
    in_worker = list(GalaxyDataModule(*args, workers=1).val_dataloader())
    assert len(in_worker) == len(in_process) == 3
    for a, b in zip(in_worker, in_process):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_loader_workers_auto():
    assert loader_workers("auto", "gpu") == 4 and loader_workers("auto", "cpu") == 0
    assert loader_workers(2, "cpu") == 2 and loader_workers("3", "gpu") == 3


# ------------------------------------------------------------------------------------------ eval view

@pytest.mark.parametrize("source, size, max_tol, mean_tol", [
    (64, 64, 1.0 / 255, 0.5 / 255),   # GalaxyMNIST 224 -> 224 and the quickstart 64 -> 64: one interpolation each
    (64, 96, 0.08, 0.01),             # resizing: torchvision interpolates twice (affine, then Resize), we once
    (128, 64, 0.08, 0.01),            # downsizing: Resize antialiases, a single grid_sample does not
])
def test_eval_view_matches_torchvision_center_zoom_and_resize(source, size, max_tol, mean_tol):
    images = torch.from_numpy(_galaxies(4, source)[0]).permute(0, 3, 1, 2).contiguous()
    zoom = 1.2
    reference = T.Compose([T.RandomAffine(degrees=0, scale=(zoom, zoom), interpolation=BILINEAR),
                           T.Resize(size, interpolation=BILINEAR, antialias=True), T.CenterCrop(size),
                           T.ToDtype(torch.float32, scale=True)])
    expected = torch.stack([reference(img) for img in images])
    out = eval_view(images, size, zoom)
    diff = (out - expected).abs()
    assert out.shape == expected.shape
    assert diff.max() <= max_tol and diff.mean() <= mean_tol
    assert abs(out.sum() / expected.sum() - 1) < 0.02  # same total light


# ------------------------------------------------------------------------------------------ train view statistics

VIEWS = 500  # augmented views per galaxy


def _moments(views: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per view: pixel mean/std, and the light-weighted centroid, size and ellipticity of the galaxy."""
    light = (views.mean(1) - 0.15).clamp(min=0)  # above the sky, so the moments describe the galaxy
    _, h, w = light.shape
    yy, xx = torch.meshgrid(torch.arange(h) - (h - 1) / 2, torch.arange(w) - (w - 1) / 2, indexing="ij")
    flux = light.sum((1, 2))
    cx, cy = (light * xx).sum((1, 2)) / flux, (light * yy).sum((1, 2)) / flux
    dx, dy = xx - cx[:, None, None], yy - cy[:, None, None]
    ixx, iyy = (light * dx * dx).sum((1, 2)) / flux, (light * dy * dy).sum((1, 2)) / flux
    ixy = (light * dx * dy).sum((1, 2)) / flux
    r2 = ixx + iyy
    e1, e2 = (ixx - iyy) / r2, 2 * ixy / r2
    return {"pixel_mean": views.mean((1, 2, 3)), "pixel_std": views.std((1, 2, 3)), "flux": flux,
            "centroid_x": cx, "centroid_y": cy, "size": r2.sqrt(), "e1": e1, "e2": e2,
            "ellipticity": (e1**2 + e2**2).sqrt()}


def _torchvision_views(image: torch.Tensor, aug: AugmentParams, n: int, seed: int) -> torch.Tensor:
    """galaxy-datasets' default view with the project's augment params, per image, without RandomErasing."""
    view = T.Compose([
        T.RandomAffine(degrees=aug.rotation_deg, translate=(aug.translate, aug.translate),
                       scale=(aug.scale_min, aug.scale_max), shear=(0, aug.shear_deg, 0, aug.shear_deg),
                       interpolation=BILINEAR),
        T.RandomHorizontalFlip(0.5 if aug.flip else 0.0), T.RandomVerticalFlip(0.5 if aug.flip else 0.0),
        T.ToDtype(torch.float32, scale=True)])
    torch.manual_seed(seed)
    return torch.stack([view(image) for _ in range(n)])


@pytest.fixture(scope="module")
def view_stats():
    """Moments of VIEWS views of one galaxy per class, from the fast path and from torchvision."""
    aug = AugmentParams()
    size = 64
    images = torch.from_numpy(_galaxies(4, size)[0]).permute(0, 3, 1, 2).contiguous()
    generator = torch.Generator().manual_seed(0)
    stats = []
    for k, image in enumerate(images):
        fast = train_view(image[None].expand(VIEWS, -1, -1, -1).contiguous(), size, aug, generator=generator)
        stats.append((_moments(fast), _moments(_torchvision_views(image, aug, VIEWS, seed=k))))
    return stats


def _same_distribution(stats, names):
    problems = []
    for k, (fast, ref) in enumerate(stats):
        for name in names:
            f, r = fast[name], ref[name]
            se = ((f.var() + r.var()) / VIEWS).sqrt()
            if (f.mean() - r.mean()).abs() > 4 * se + 1e-4:
                problems.append(f"galaxy {k} {name}: mean {f.mean():.4f} vs torchvision {r.mean():.4f}")
            ratio = f.std() / r.std()
            if not 0.82 < ratio < 1.22:
                problems.append(f"galaxy {k} {name}: spread {f.std():.4f} vs torchvision {r.std():.4f}")
    return problems


def test_train_view_intensity_statistics_match_torchvision(view_stats):
    assert not _same_distribution(view_stats, ["pixel_mean", "pixel_std", "flux"])


def test_train_view_position_statistics_match_torchvision(view_stats):
    assert not _same_distribution(view_stats, ["centroid_x", "centroid_y"])


def test_train_view_shape_statistics_match_torchvision(view_stats):
    assert not _same_distribution(view_stats, ["size", "e1", "e2", "ellipticity"])
