"""Benchmark: one galaxy-similar query over N embeddings x D PCA components (default 100,000 x 40).

Compares the two exact cosine searches the issue names, on the same random unit vectors:
- matmul: galaxy_finetune.core.neighbours.CosineIndex (normalised rows, one matrix-vector product, argpartition)
- sklearn: NearestNeighbors(metric="cosine", algorithm="brute").kneighbors
and checks that they return the same neighbours. Prints one JSON line per runner (median and p95 ms per
query after loading, load/build time) and writes nothing.

    python benchmarks/similarity.py [--n 100000] [--dim 40] [--k 8] [--queries 200]
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


class MatmulRunner:
    name = "matmul (CosineIndex)"

    def __init__(self, features: np.ndarray, k: int):
        from galaxy_finetune.core.neighbours import CosineIndex

        start = time.perf_counter()
        self.index = CosineIndex(features)
        self.build_s = time.perf_counter() - start
        self.k = k

    def query(self, vector: np.ndarray) -> np.ndarray:
        return self.index.search(vector, self.k)[1][0]


class SklearnRunner:
    name = "sklearn NearestNeighbors (brute, cosine)"

    def __init__(self, features: np.ndarray, k: int):
        from sklearn.neighbors import NearestNeighbors

        start = time.perf_counter()
        self.index = NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute").fit(features)
        self.build_s = time.perf_counter() - start

    def query(self, vector: np.ndarray) -> np.ndarray:
        return self.index.kneighbors(vector[None], return_distance=False)[0]


def run(runner, queries: np.ndarray, warmup: int = 5) -> dict:
    """Per-query wall times (ms) of `runner` over `queries`, after `warmup` untimed queries."""
    for vector in queries[:warmup]:
        runner.query(vector)
    times, answers = [], []
    for vector in queries:
        start = time.perf_counter()
        answers.append(runner.query(vector))
        times.append((time.perf_counter() - start) * 1000)
    return {"runner": runner.name, "build_s": round(runner.build_s, 3), "median_ms": round(float(np.median(times)), 3),
            "p95_ms": round(float(np.percentile(times, 95)), 3), "max_ms": round(float(np.max(times)), 3),
            "queries": len(queries), "answers": answers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=40)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    features = rng.normal(size=(args.n, args.dim)).astype(np.float32)
    queries = features[rng.choice(args.n, args.queries, replace=False)] + rng.normal(
        scale=0.1, size=(args.queries, args.dim)).astype(np.float32)
    load = os.getloadavg()
    results = [run(runner(features, args.k), queries) for runner in (MatmulRunner, SklearnRunner)]
    same = np.mean([set(a) == set(b) for a, b in zip(results[0]["answers"], results[1]["answers"])])
    for result in results:
        result.pop("answers")
        print(json.dumps({**result, "n": args.n, "dim": args.dim, "k": args.k, "same_neighbours": float(same),
                          "load_before": [round(x, 2) for x in load],
                          "load_after": [round(x, 2) for x in os.getloadavg()]}))


if __name__ == "__main__":
    main()
