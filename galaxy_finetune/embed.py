"""embed: the fine-tuned encoder's pooled features for every galaxy of train/val/test, and a PCA fitted on train.

The images come from the store (data/store) and go through exactly the predict stage's eval view (central zoom,
resize to the model's input size); one batch of pixels is in memory at a time. Outputs (data/embeddings/, names
in layout.py): galaxies.csv (id_str, split, label, label_name, row: the store row; row i of the arrays),
features.npy ((N, D) float16),
pca.npz (mean, components, explained_variance_ratio), pca_features.npy ((N, K) float32), embed.json.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from galaxy_finetune.augment import eval_view
from galaxy_finetune.errors import PipelineError
from galaxy_finetune.files import atomic_path, read_json, write_json
from galaxy_finetune.layout import (EMBED_FEATURES, EMBED_GALAXIES, EMBED_PCA, EMBED_PCA_FEATURES,
                                    EMBED_RECORD)
from galaxy_finetune.pixels import galaxy_pixels

try:  # the model file format is moving out of the trainer (issue 11)
    from galaxy_finetune.model_io import load_finetuned
except ImportError:  # pragma: no cover - until model_io.py lands
    from galaxy_finetune.train import load_finetuned

SPLITS = ("train", "val", "test")


def torch_device(accelerator: str = "auto") -> torch.device:
    if accelerator == "gpu" and not torch.cuda.is_available():
        raise PipelineError("train.accelerator: 'gpu' but no CUDA GPU is visible; use auto or cpu")
    return torch.device("cuda" if torch.cuda.is_available() and accelerator != "cpu" else "cpu")


@torch.inference_mode()
def encoder_features(model, pixels: np.ndarray, input_size: int, eval_zoom: float,
                     device: torch.device) -> np.ndarray:
    """(B, D) float32 pooled features of (B, S, S, 3) uint8 pixels through the eval view and the encoder."""
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        features = model.encoder(eval_view(images, input_size, eval_zoom))
    return features.float().cpu().numpy()


def embed_galaxies(model, config: dict, store_dir: Path, rows: list[int], batch_size: int,
                   device: torch.device) -> np.ndarray:
    """(len(rows), D) float32 encoder features of store rows `rows`, `batch_size` galaxies' pixels in memory
    at a time."""
    model = model.to(device).eval()
    batches = [encoder_features(model, galaxy_pixels(store_dir, rows[start:start + batch_size]), config["input_size"],
                                config["eval_zoom"], device) for start in range(0, len(rows), batch_size)]
    return np.concatenate(batches) if batches else np.zeros((0, model.encoder.num_features), np.float32)


def fit_pca(train_features: np.ndarray, n_components: int, seed: int = 0):
    """sklearn PCA of the training features (n_components capped by the training set's rank)."""
    from sklearn.decomposition import PCA

    n = min(n_components, len(train_features), train_features.shape[1])
    if n < 2:
        raise PipelineError(f"embed: {len(train_features)} training galaxies, need at least 2 for a PCA")
    return PCA(n_components=n, svd_solver="full", random_state=seed).fit(train_features.astype(np.float32))


def embed_splits(model_dir: Path, store_dir: Path, split_dir: Path, out_dir: Path, batch_size: int,
                 pca_components: int, accelerator: str = "auto") -> dict:
    """Features of every galaxy of the splits, and their PCA, written to `out_dir` (all or nothing)."""
    model, config = load_finetuned(model_dir)
    frames = []
    for split in SPLITS:
        path = Path(split_dir) / f"{split}.csv"
        if not path.is_file():
            raise PipelineError(f"{path}: not found; run the split stage first")
        frame = pd.read_csv(path, dtype={"id_str": str})
        frames.append(pd.DataFrame({"id_str": frame["id_str"], "split": split, "label": frame["label"],
                                    "label_name": frame["label_name"], "row": frame["row"]}))
    galaxies = pd.concat(frames, ignore_index=True)
    device = torch_device(accelerator)
    start = time.perf_counter()
    features = embed_galaxies(model, config, store_dir, galaxies["row"].tolist(), batch_size, device)
    seconds = time.perf_counter() - start
    return write_embeddings(out_dir, galaxies, features, pca_components,
                            {"device": device.type, "images_per_s": round(len(galaxies) / seconds, 1),
                             "seconds": round(seconds, 2)})


def write_embeddings(out_dir: Path, galaxies: pd.DataFrame, features: np.ndarray, pca_components: int,
                     extra: dict | None = None) -> dict:
    """Write galaxies.csv, the float16 features, a PCA fitted on the train rows and its projection of every row
    (all or nothing); return the record written to embed.json."""
    features16 = np.asarray(features).astype(np.float16)
    train = features16[(galaxies["split"] == "train").to_numpy()].astype(np.float32)
    pca = fit_pca(train, pca_components)
    projected = pca.transform(features16.astype(np.float32)).astype(np.float32)
    record = {"galaxies": len(galaxies), **{f"{s}_galaxies": int((galaxies["split"] == s).sum()) for s in SPLITS},
              "feature_dim": int(features16.shape[1]), "pca_components": int(pca.n_components_),
              "pca_explained_variance": round(float(pca.explained_variance_ratio_.sum()), 4), **(extra or {})}
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        galaxies.to_csv(tmp / EMBED_GALAXIES, index=False)
        np.save(tmp / EMBED_FEATURES, features16)
        np.save(tmp / EMBED_PCA_FEATURES, projected)
        np.savez(tmp / EMBED_PCA, mean=pca.mean_.astype(np.float32), components=pca.components_.astype(np.float32),
                 explained_variance_ratio=pca.explained_variance_ratio_.astype(np.float32))
        write_json(tmp / EMBED_RECORD, record)
    return record


@dataclass(frozen=True)
class Embeddings:
    """data/embeddings/ read back: galaxies (row i of the arrays), features, PCA features and projection."""

    galaxies: pd.DataFrame
    features: np.ndarray
    pca_features: np.ndarray
    pca_mean: np.ndarray
    pca_components: np.ndarray

    def project(self, features: np.ndarray) -> np.ndarray:
        """Encoder features -> PCA features (the train-fitted projection)."""
        return (np.asarray(features, np.float32) - self.pca_mean) @ self.pca_components.T

    def split(self, name: str) -> np.ndarray:
        """Row indexes of the galaxies of split `name`."""
        return np.flatnonzero((self.galaxies["split"] == name).to_numpy())


def read_embeddings(embed_dir: Path, mmap: bool = False) -> Embeddings:
    embed_dir = Path(embed_dir)
    path = embed_dir / EMBED_GALAXIES
    if not path.is_file():
        raise PipelineError(f"{path}: not found; run the embed stage first (dvc repro embed)")
    mode = "r" if mmap else None
    pca = np.load(embed_dir / EMBED_PCA)
    embeddings = Embeddings(pd.read_csv(path, dtype={"id_str": str}),
                            np.load(embed_dir / EMBED_FEATURES, mmap_mode=mode),
                            np.load(embed_dir / EMBED_PCA_FEATURES), pca["mean"], pca["components"])
    if not len(embeddings.galaxies) == len(embeddings.features) == len(embeddings.pca_features):
        raise PipelineError(f"{embed_dir}: galaxies, features and PCA features disagree in length; rerun embed")
    return embeddings


def embed_record(embed_dir: Path) -> dict:
    return read_json(Path(embed_dir) / EMBED_RECORD)
