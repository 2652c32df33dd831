"""Cosine nearest neighbours on the PCA features: exact (CosineIndex), approximate over a survey (SurveyIndex,
FAISS), and the anomaly score built on them.

An exact query is one matrix-vector product against the unit-normalised features and an argpartition:
16-24 ms median for 100,000 galaxies x 40 components on a shared, loaded 2-core machine, 3-4x faster than
scikit-learn's brute-force NearestNeighbors with the same answers (benchmarks/similarity.py, RESULTS.md).
Its cost grows linearly with the catalog, so a survey's embeddings (galaxy-classify --embeddings-out) are
searched through a FAISS inverted-file index over the unit rows (IndexIVFFlat, inner product = cosine): built
once, saved beside the embeddings, rebuilt only when they change. How many lists a query visits (nprobe) is
chosen by measurement at build time, on the survey itself: the fewest that find TARGET_RECALL of the exact
top 10 for a sample of its rows. Exact search stays for catalogs below EXACT_MAX rows and is the yardstick
(benchmarks/survey_index.py, RESULTS.md).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def unit_rows(features: np.ndarray) -> np.ndarray:
    """float32 rows scaled to unit length (a zero row stays zero)."""
    features = np.asarray(features, dtype=np.float32)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, np.finfo(np.float32).tiny)


class CosineIndex:
    """Exact k-nearest neighbours by cosine similarity over a fixed set of feature rows."""

    def __init__(self, features: np.ndarray):
        self.unit = np.ascontiguousarray(unit_rows(features))

    def __len__(self) -> int:
        return len(self.unit)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, row indexes) of the k most similar rows per query, most similar first."""
        queries = unit_rows(np.atleast_2d(queries))
        k = min(k, len(self.unit))
        similarity = queries @ self.unit.T
        if k < len(self.unit):
            top = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        else:
            top = np.broadcast_to(np.arange(len(self.unit)), similarity.shape).copy()
        top_sim = np.take_along_axis(similarity, top, axis=1)
        order = np.lexsort((top, -top_sim), axis=1)  # most similar first, ties by row
        return np.take_along_axis(top_sim, order, axis=1), np.take_along_axis(top, order, axis=1)


def anomaly_scores(reference: np.ndarray, queries: np.ndarray, k: int, batch: int = 4096) -> tuple[np.ndarray,
                                                                                                     np.ndarray]:
    """Mean cosine distance of each query to its k nearest reference rows, and the nearest reference row."""
    index = CosineIndex(reference)
    scores, nearest = np.empty(len(queries)), np.empty(len(queries), dtype=int)
    for start in range(0, len(queries), batch):  # memory bounded by batch x len(reference)
        sim, rows = index.search(queries[start:start + batch], k)
        scores[start:start + batch] = (1.0 - sim).mean(1)
        nearest[start:start + batch] = rows[:, 0]
    return scores, nearest


EXACT_MAX = 100_000      # rows below which a survey is searched exactly (no build step, nothing to tune)
IVF_LISTS_PER_SQRT = 4   # IndexIVFFlat's lists: 4 sqrt(N) (FAISS's guideline), at least 1
TARGET_RECALL = 0.95     # nprobe: the fewest lists per query (1, 2, 4, ...) whose recall@10 against exact search,
CALIBRATION_QUERIES = 200  # measured at build time on this many of the survey's own rows, reaches this
ADD_ROWS = 1_000_000     # rows normalised and added (or searched exactly) at a time: memory bounded by one block
TRAIN_ROWS_PER_LIST = 64 # k-means training sample: this many rows per list (a seeded sample of the survey)


def ivf_lists(n: int) -> int:
    return max(1, int(round(IVF_LISTS_PER_SQRT * np.sqrt(n))))


def exact_top(features: np.ndarray, queries: np.ndarray, k: int, block: int = 100_000) -> np.ndarray:
    """Row indexes of the k rows of `features` (any length, read `block` rows at a time: memory bounded by
    queries x block) most cosine-similar to each query, most similar first: exact search, the yardstick of an
    index."""
    queries = unit_rows(queries)
    best_sim = np.full((len(queries), 0), -np.inf, np.float32)
    best_row = np.zeros((len(queries), 0), np.int64)
    for start in range(0, len(features), block):
        sim = queries @ unit_rows(features[start:start + block]).T
        rows = np.broadcast_to(np.arange(start, start + sim.shape[1]), sim.shape)
        sim, rows = np.concatenate([best_sim, sim], 1), np.concatenate([best_row, rows], 1)
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k] if sim.shape[1] > k else np.argsort(-sim, axis=1)
        best_sim, best_row = np.take_along_axis(sim, top, 1), np.take_along_axis(rows, top, 1)
    order = np.argsort(-best_sim, axis=1, kind="stable")
    return np.take_along_axis(best_row, order, 1)


def recall_at(found, truth) -> float:
    """Share of the true neighbours found (a row -1: none found), averaged over queries."""
    shares = [len({int(x) for x in f if x >= 0} & {int(x) for x in t}) / len(t) for f, t in zip(found, truth) if len(t)]
    return float(np.mean(shares)) if shares else 1.0


class SurveyIndex:
    """Approximate cosine k-NN over a survey's (N, K) features (a .npy, float16 or float32, memory-mapped): a
    FAISS IndexIVFFlat on the unit rows, saved as `<features>.faiss` with `<features>.faiss.json` (which features
    it indexes: size and mtime; its lists and the nprobe calibrated at build time, with the recall@10 measured),
    or exact search (CosineIndex) below EXACT_MAX rows or when asked (`exact=True`)."""

    def __init__(self, features_path: str | Path, exact: bool | None = None, probes: int | None = None):
        self.path = Path(features_path)
        self.features = np.load(self.path, mmap_mode="r")
        self.exact = len(self.features) < EXACT_MAX if exact is None else exact
        self.built, self.record = False, {}
        if self.exact:
            self.index = CosineIndex(self.features)
            return
        self.index = self._load() or self._build()
        self.index.nprobe = probes or self.record["nprobe"]

    def __len__(self) -> int:
        return len(self.features)

    @property
    def index_path(self) -> Path:
        return self.path.with_name(self.path.name + ".faiss")

    @property
    def record_path(self) -> Path:
        return self.path.with_name(self.path.name + ".faiss.json")

    def _source(self) -> dict:
        stat = self.path.stat()
        return {"features": self.path.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                "rows": len(self.features), "dim": int(self.features.shape[1]), "kind": "IndexIVFFlat",
                "metric": "inner product of unit rows (cosine)", "lists": ivf_lists(len(self.features))}

    def _load(self):
        import faiss

        try:
            record = json.loads(self.record_path.read_text())
            if {k: record.get(k) for k in self._source()} != self._source():
                return None
            index = faiss.read_index(str(self.index_path))
        except (OSError, ValueError, RuntimeError):
            return None  # none yet, another survey's, or damaged: built again
        self.record = record
        return index

    def _build(self):
        import faiss

        from galaxy_finetune.core.files import atomic_path, write_json

        n, dim = self.features.shape
        lists = ivf_lists(n)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        sample = np.sort(rng.choice(n, min(n, TRAIN_ROWS_PER_LIST * lists), replace=False))
        index.train(unit_rows(self.features[sample]))
        for start in range(0, n, ADD_ROWS):
            index.add(unit_rows(self.features[start:start + ADD_ROWS]))
        nprobe, recall = self.calibrate(index, rng)
        with atomic_path(self.index_path) as tmp:
            faiss.write_index(index, str(tmp))
        self.record = self._source() | {"nprobe": nprobe, "calibration": {
            "queries": min(n, CALIBRATION_QUERIES), "recall_at_10": round(recall, 4), "target": TARGET_RECALL}}
        write_json(self.record_path, self.record)
        self.built = True
        return index

    def calibrate(self, index, rng) -> tuple[int, float]:
        """The fewest lists per query (doubling from 1) whose recall@10 against exact search, on a seeded sample of
        the survey's own rows (each row's neighbours other than itself), reaches TARGET_RECALL; and that recall."""
        n = len(self.features)
        rows = np.sort(rng.choice(n, min(n, CALIBRATION_QUERIES), replace=False))
        queries = np.asarray(self.features[rows], np.float32)
        k = min(10, n - 1)
        truth = [t[t != r][:k] for t, r in zip(exact_top(self.features, queries, k + 1), rows)]
        nprobe = 1
        while True:
            index.nprobe = nprobe
            found = index.search(unit_rows(queries), k + 1)[1]
            recall = recall_at([f[f != r][:k] for f, r in zip(found, rows)], truth)
            if recall >= TARGET_RECALL or nprobe >= index.nlist:
                return nprobe, recall
            nprobe = min(index.nlist, nprobe * 2)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, row indexes) of the k most similar rows per query, most similar first (an approximate
        search may find fewer: row -1)."""
        if self.exact:
            return self.index.search(queries, k)
        return self.index.search(unit_rows(np.atleast_2d(queries)), min(k, len(self.features)))
