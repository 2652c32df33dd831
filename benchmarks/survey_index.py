"""Benchmark: similarity search over a survey's PCA features, approximate (FAISS) against exact, at 10^5 and 10^6 rows.

Synthetic features shaped like the embed stage's PCA features (40 dimensions, variance falling as 1/component, 50
clusters; or `--kind isotropic`, Gaussian noise, the hardest case for any index), stored float16 as galaxy-classify
--embeddings-out writes them. Held-out queries from the same distribution, one at a time. In the same run:
- exact: `CosineIndex` (the yardstick: its top 10 defines recall@10), ms per query;
- `SurveyIndex` (what galaxy-similar --survey builds: IndexIVFFlat, 4 sqrt(N) lists, inner product on unit rows,
  nprobe calibrated at build time on 200 of the survey's rows to recall@10 >= 0.95): build time (calibration
  included), index size, memory the build added, then for several `nprobe` (and the calibrated one) ms per
  held-out query and recall@10;
- FAISS IndexHNSWFlat (M 32, efConstruction 40) for comparison: build time, then per efSearch ms and recall@10.
Prints one JSON line per measurement.

    flock /tmp/galaxy-heavy.lock python benchmarks/survey_index.py [--rows 100000 1000000] [--queries 200]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.harness import load, provenance  # noqa: E402


def features(n: int, dim: int, kind: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scale = 1.0 / np.sqrt(np.arange(1, dim + 1))
    if kind == "isotropic":
        return rng.normal(size=(n, dim)).astype(np.float16)
    centres = np.random.default_rng(1234).normal(size=(50, dim)) * scale  # the same clusters for survey and queries
    return (centres[rng.integers(0, 50, n)] + 0.5 * rng.normal(size=(n, dim)) * scale).astype(np.float16)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def timed_queries(search, queries: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    rows, times = [], []
    for q in queries[:5]:
        search(q[None], k)  # warm-up
    for q in queries:
        start = time.perf_counter()
        rows.append(search(q[None], k)[1][0])
        times.append((time.perf_counter() - start) * 1000)
    return np.array(rows), float(np.median(times))


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, truth)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=40)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--kind", choices=["clustered", "isotropic"], default="clustered")
    parser.add_argument("--probes", type=int, nargs="+", default=[4, 16, 64, 256])
    parser.add_argument("--ef", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--no-hnsw", action="store_true")
    args = parser.parse_args()
    import faiss

    from galaxy_finetune.core.neighbours import CosineIndex, SurveyIndex, unit_rows

    print(json.dumps(provenance(benchmark="survey_index", kind=args.kind, dim=args.dim, queries=args.queries,
                                faiss=faiss.__version__, faiss_threads=faiss.omp_get_max_threads())))
    for n in args.rows:
        with tempfile.TemporaryDirectory(dir=ROOT / "benchmarks") as tmp:
            path = Path(tmp) / "pca.npy"
            np.save(path, features(n, args.dim, args.kind, seed=0))
            queries = features(args.queries, args.dim, args.kind, seed=1).astype(np.float32)
            survey = np.load(path, mmap_mode="r")
            exact = CosineIndex(survey)
            truth, exact_ms = timed_queries(exact.search, queries, args.k)
            print(json.dumps({"rows": n, "search": "exact (CosineIndex)", "ms_per_query": round(exact_ms, 3),
                              "recall_at_10": 1.0, "load": load()}))
            del exact
            before = rss_mb()
            start = time.perf_counter()
            ivf = SurveyIndex(path, exact=False)
            build_s = time.perf_counter() - start
            calibrated = ivf.record["nprobe"]
            built = {"rows": n, "search": "SurveyIndex IVFFlat", "lists": ivf.index.nlist, "calibrated_nprobe":
                     calibrated, "calibration": ivf.record["calibration"], "build_s": round(build_s, 2),
                     "index_mb": round(ivf.index_path.stat().st_size / 1e6, 1),
                     "rss_added_mb": round(rss_mb() - before, 1), "load": load()}
            print(json.dumps(built))
            for probes in sorted(set(args.probes) | {calibrated}):
                ivf.index.nprobe = probes
                found, ms = timed_queries(ivf.search, queries, args.k)
                print(json.dumps({"rows": n, "search": "SurveyIndex IVFFlat", "nprobe": probes,
                                  "calibrated": probes == calibrated, "ms_per_query": round(ms, 3),
                                  "recall_at_10": round(recall(found, truth), 4),
                                  "speedup_vs_exact": round(exact_ms / ms, 1), "load": load()}))
            del ivf
            if args.no_hnsw:
                continue
            before = rss_mb()
            start = time.perf_counter()
            hnsw = faiss.IndexHNSWFlat(args.dim, 32, faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efConstruction = 40
            for s in range(0, n, 1_000_000):
                hnsw.add(unit_rows(survey[s:s + 1_000_000]))
            print(json.dumps({"rows": n, "search": "IndexHNSWFlat M32 efC40", "build_s": round(time.perf_counter() - start, 2),
                              "rss_added_mb": round(rss_mb() - before, 1), "load": load()}))
            for ef in args.ef:
                hnsw.hnsw.efSearch = ef
                found, ms = timed_queries(lambda q, k: hnsw.search(unit_rows(q), k), queries, args.k)
                print(json.dumps({"rows": n, "search": "IndexHNSWFlat M32 efC40", "efSearch": ef,
                                  "ms_per_query": round(ms, 3), "recall_at_10": round(recall(found, truth), 4),
                                  "speedup_vs_exact": round(exact_ms / ms, 1), "load": load()}))
            del hnsw


if __name__ == "__main__":
    main()
