"""data/embeddings/, the embed stage's output: reading and writing it (numpy and pandas only, no torch).

galaxies.csv (id_str, split, label, label_name, row: the store row; row i of the arrays), features.npy
((N, D) float16 pooled encoder features), pca.npz (mean, components, explained_variance_ratio, fitted on the
train rows), pca_features.npy ((N, K) float32, every row projected), embed.json (counts, dimensions, speed).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from galaxy_finetune.core.errors import PipelineError
from galaxy_finetune.core.files import atomic_path, read_table, require, write_json
from galaxy_finetune.core.layout import EMBED_FEATURES, EMBED_GALAXIES, EMBED_PCA, EMBED_PCA_FEATURES, EMBED_RECORD
from galaxy_finetune.inference.shift import SHIFT_K, ShiftReference

SPLITS = ("train", "val", "test")


def fit_pca(train_features: np.ndarray, n_components: int, seed: int = 0):
    """sklearn PCA of the training features (n_components capped by the training set's rank)."""
    from sklearn.decomposition import PCA

    n = min(n_components, len(train_features), train_features.shape[1])
    if n < 2:
        raise PipelineError(f"embed: {len(train_features)} training galaxies, need at least 2 for a PCA")
    return PCA(n_components=n, svd_solver="full", random_state=seed).fit(train_features.astype(np.float32))


def write_embeddings(out_dir: Path, galaxies: pd.DataFrame, features: np.ndarray, pca_components: int,
                     extra: dict | None = None, model_sha256: str | None = None) -> dict:
    """Write galaxies.csv, the float16 features, a PCA fitted on the train rows and its projection of every row
    (all or nothing); return the record written to embed.json. With `model_sha256` (the weights the features
    came from), also shift.npz: the reference of the shift score (inference/shift.py), calibrated on val."""
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
        if model_sha256 is not None:
            split = galaxies["split"].to_numpy()
            shift = ShiftReference.build(pca.mean_, pca.components_, features16[split == "train"],
                                         features16[split == "val"], SHIFT_K, model_sha256)
            shift.save(tmp)
            record["shift"] = {"k": shift.k, "reference_galaxies": len(shift.reference),
                               "far_threshold": round(shift.threshold, 6)}
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
    path = require(embed_dir / EMBED_GALAXIES, "embed")
    mode = "r" if mmap else None
    pca = np.load(embed_dir / EMBED_PCA)
    embeddings = Embeddings(read_table(path),
                            np.load(embed_dir / EMBED_FEATURES, mmap_mode=mode),
                            np.load(embed_dir / EMBED_PCA_FEATURES), pca["mean"], pca["components"])
    if not len(embeddings.galaxies) == len(embeddings.features) == len(embeddings.pca_features):
        raise PipelineError(f"{embed_dir}: galaxies, features and PCA features disagree in length; rerun embed")
    return embeddings

