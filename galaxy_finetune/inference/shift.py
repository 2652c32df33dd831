"""Galaxies unlike the training set: a per-galaxy distance from training in the encoder's feature space.

The score is the kNN cosine distance of deep nearest-neighbour out-of-distribution detection: a galaxy's mean
cosine distance to its k nearest training galaxies, on the fine-tuned encoder's raw pooled features (data/embeddings;
not centred, not PCA-projected: a train-fitted PCA drops exactly the directions a new kind of image moves along,
and cosine on centred features calls a population displaced along a training direction close). The embed stage
writes the reference (data/embeddings/shift.npz): the features of at most MAX_REFERENCE training galaxies (a seeded
sample beyond), k, and the sorted scores of the validation galaxies against them, which calibrate the score:
`val_share_farther` is the share of validation galaxies farther from training than this galaxy (about uniform on
0-1 for galaxies like the training set, near 0 for galaxies outside it). A galaxy is "far" when fewer than
1 - FAR_QUANTILE (10%) of validation galaxies are farther, so about 10% of galaxies like the training set are far;
galaxy-classify warns when more than WARN_SHARE (half) of a run is. Scoring a batch costs one (batch x
MAX_REFERENCE x D) product, whatever the catalog's size. Measured on real galaxies (benchmarks/label_budget.py):
see docs/label-budget.md, "Galaxies unlike the training set".
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from galaxy_finetune.core.errors import PipelineError
from galaxy_finetune.core.files import require, sha256sum
from galaxy_finetune.core.layout import EMBED_PCA, EMBED_SHIFT, MODEL_WEIGHTS
from galaxy_finetune.core.neighbours import anomaly_scores

SHIFT_K = 10            # neighbours averaged (as analyse.anomaly_k's default)
MAX_REFERENCE = 20_000  # training galaxies the score compares with (bounds a batch's cost)
FAR_QUANTILE = 0.90     # "far": farther from training than 90% of the validation galaxies
WARN_SHARE = 0.5        # galaxy-classify warns when more than this share of a run is far
COLUMNS = ["train_distance", "val_share_farther"]


def knn_distance(reference: np.ndarray, queries: np.ndarray, k: int, batch: int = 1024) -> np.ndarray:
    """Mean Euclidean distance of each query row to its k nearest reference rows (exact; memory bounded by
    batch x len(reference))."""
    reference, queries = np.asarray(reference, np.float32), np.asarray(queries, np.float32)
    k = min(k, len(reference))
    ref_sq = (reference ** 2).sum(1)
    out = np.empty(len(queries))
    for start in range(0, len(queries), batch):
        q = queries[start:start + batch]
        sq = np.maximum((q ** 2).sum(1)[:, None] + ref_sq[None] - 2.0 * q @ reference.T, 0.0)
        nearest = np.partition(sq, k - 1, axis=1)[:, :k] if k < len(reference) else sq
        out[start:start + batch] = np.sqrt(nearest).mean(1)
    return out


def weights_sha256(model_dir: str | Path) -> str:
    return sha256sum(Path(model_dir) / MODEL_WEIGHTS)


@dataclass(frozen=True)
class ShiftReference:
    """What scores a galaxy's distance from training: the PCA projection, the reference rows, k and val's scores."""
    pca_mean: np.ndarray
    pca_components: np.ndarray
    reference: np.ndarray  # (R, D) raw encoder features of training galaxies
    val_scores: np.ndarray  # sorted
    k: int
    model_sha256: str

    @classmethod
    def build(cls, pca_mean, pca_components, train_features: np.ndarray, val_features: np.ndarray, k: int,
              model_sha256: str, seed: int = 0) -> "ShiftReference":
        rows = np.arange(len(train_features))
        if len(rows) > MAX_REFERENCE:
            rows = np.sort(np.random.default_rng(seed).choice(rows, MAX_REFERENCE, replace=False))
        reference = np.asarray(train_features, np.float32)[rows]
        val_scores = anomaly_scores(reference, np.asarray(val_features, np.float32), k)[0]
        return cls(np.asarray(pca_mean, np.float32), np.asarray(pca_components, np.float32), reference,
                   np.sort(val_scores).astype(np.float32), int(min(k, len(reference))), model_sha256)

    def save(self, embed_dir: Path) -> None:
        np.savez(Path(embed_dir) / EMBED_SHIFT, reference=self.reference.astype(np.float16), val_scores=self.val_scores,
                 k=np.int64(self.k), model_sha256=np.array(self.model_sha256))

    @classmethod
    def load(cls, embed_dir: str | Path) -> "ShiftReference":
        embed_dir = Path(embed_dir)
        path = require(embed_dir / EMBED_SHIFT, "embed")
        shift, pca = np.load(path, allow_pickle=False), np.load(embed_dir / EMBED_PCA, allow_pickle=False)
        return cls(pca["mean"], pca["components"], shift["reference"].astype(np.float32), shift["val_scores"], int(shift["k"]),
                   str(shift["model_sha256"]))

    @property
    def threshold(self) -> float:
        """The distance beyond which a galaxy is farther than FAR_QUANTILE of the validation galaxies."""
        return float(np.quantile(self.val_scores, FAR_QUANTILE)) if len(self.val_scores) else float("inf")

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Mean cosine distance of raw encoder features (B, D) to their k nearest reference galaxies."""
        return anomaly_scores(self.reference, np.asarray(features, np.float32), self.k)[0]

    def project(self, features: np.ndarray) -> np.ndarray:
        return (np.asarray(features, np.float32) - self.pca_mean) @ self.pca_components.T

    def share_farther(self, distances: np.ndarray) -> np.ndarray:
        """Share of validation galaxies farther from training than each distance."""
        n = len(self.val_scores)
        if not n:
            return np.ones(len(distances))
        return 1.0 - np.searchsorted(self.val_scores, distances, side="right") / n


class ShiftScorer:
    """Adds train_distance and val_share_farther to each batch of predictions from the features the encoder
    computed for that batch (a forward hook: no second pass)."""

    names = COLUMNS

    def __init__(self, reference: ShiftReference):
        self.reference, self._features, self._handle = reference, None, None

    def attach(self, model) -> "ShiftScorer":
        self._handle = model.encoder.register_forward_hook(self._keep)
        return self

    def detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _keep(self, module, inputs, output) -> None:
        self._features = output.detach().float().cpu().numpy()

    @property
    def features(self) -> np.ndarray:
        """The encoder's features of the last batch (B, D)."""
        return self._features

    def columns(self) -> list[np.ndarray]:
        """The batch's columns as text, in COLUMNS order."""
        distance = self.reference.distances(self._features)
        return [np.char.mod("%.6f", distance), np.char.mod("%.4f", self.reference.share_farther(distance))]


def shift_summary(share_farther: np.ndarray, distances: np.ndarray, reference: ShiftReference) -> dict:
    far = share_farther < 1.0 - FAR_QUANTILE
    return {"galaxies": int(len(far)), "k": reference.k, "far": int(far.sum()), "far_share": float(far.mean()) if len(far) else 0.0,
            "threshold": reference.threshold, "median_distance": float(np.median(distances)) if len(far) else None,
            "val_median_distance": float(np.median(reference.val_scores)) if len(reference.val_scores) else None}


def shift_warning(summary: dict, warn_share: float = WARN_SHARE) -> str | None:
    """One line when more than `warn_share` of a run's galaxies are far from the training set, else None."""
    if not summary["galaxies"] or summary["far_share"] <= warn_share:
        return None
    return (f"{summary['far']:,} of {summary['galaxies']:,} galaxies ({summary['far_share']:.0%}) lie farther from the "
            f"training set than {FAR_QUANTILE:.0%} of validation galaxies (expected about {1 - FAR_QUANTILE:.0%}; "
            f"mean cosine distance of the encoder's features to the {summary['k']} nearest training galaxies > "
            f"{summary['threshold']:.3f}; median {summary['median_distance']:.3f} vs {summary['val_median_distance']:.3f} "
            f"for validation): treat their predictions as extrapolation beyond what training saw")


def warn_if_shifted(predictions_csv: Path, reference: ShiftReference, warn_share: float = WARN_SHARE) -> dict:
    """Read the shift columns of a predictions CSV (or Parquet: .parquet, .pq) back (two columns), warn in one line
    when most galaxies are far, and return the summary."""
    import warnings

    import pandas as pd

    if Path(predictions_csv).suffix.lower() in (".parquet", ".pq"):
        table = pd.read_parquet(predictions_csv, columns=COLUMNS)
    else:
        table = pd.read_csv(predictions_csv, usecols=COLUMNS)
    summary = shift_summary(table["val_share_farther"].to_numpy(), table["train_distance"].to_numpy(), reference)
    line = shift_warning(summary, warn_share)
    if line:
        warnings.warn(line, stacklevel=2)
    return summary


def shift_scorer(embed_dir: str | Path, model_dir: str | Path) -> ShiftScorer:
    """The scorer of the model in `model_dir` against the reference in `embed_dir`; a PipelineError when the
    reference is missing or was computed with other weights (its features would not be this model's)."""
    reference = ShiftReference.load(embed_dir)
    if reference.model_sha256 != weights_sha256(model_dir):
        raise PipelineError(f"{Path(embed_dir) / EMBED_SHIFT}: computed with other weights than "
                            f"{Path(model_dir) / MODEL_WEIGHTS}; rerun the embed stage for this model")
    return ShiftScorer(reference)


def optional_scorer(embed_dir: str | Path | None, model_dir: str | Path) -> tuple[ShiftScorer | None, str | None]:
    """(scorer, None), or (None, why not) when `embed_dir` holds no reference for this model (galaxy-classify then
    writes its predictions without the shift columns)."""
    if embed_dir is None:
        return None, "no --embeddings given"
    try:
        return shift_scorer(embed_dir, model_dir), None
    except PipelineError as exc:
        return None, str(exc)
