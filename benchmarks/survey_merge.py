"""Benchmark: galaxy-classify's merge of its part files into the output, CSV vs Parquet, at 10^5 and 10^6 rows.

Writes synthetic parts in the exact format the prediction writer appends (inference/parts.py: blocks of input rows,
`index,id_str,pred_label,p_<4 classes>,confidence,file` lines), then, each in a fresh process (so its peak memory
is its own), merges them with `inference.parts.merge` into CSV and into Parquet. Baseline in the same run: copying
the same part bytes into one file (`shutil.copyfileobj`), the floor of any merge. Then reads each output back:
the whole table (pandas: `read_table` for CSV, `read_parquet`) and one column (`confidence`). Prints one JSON line
per case.

    flock /tmp/galaxy-heavy.lock python benchmarks/survey_merge.py [--rows 100000 1000000]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.harness import CLASSES, load, provenance  # noqa: E402

HEADER = ["id_str", "pred_label", *[f"p_{c}" for c in CLASSES], "confidence", "file"]


def write_parts(folder: Path, n: int, seed: int = 0) -> None:
    """The part files a run over `n` galaxies leaves (every block complete), as the writer formats them."""
    from galaxy_finetune.inference.parts import Parts

    parts = Parts(folder, n)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for block in range(parts.blocks):
        index = parts.rows(block)
        probs = rng.dirichlet(np.ones(len(CLASSES)), len(index))
        table = pd.DataFrame({"index": index, "id_str": [f"J{i:09d}" for i in index],
                              "pred_label": np.asarray(CLASSES)[probs.argmax(1)],
                              **{f"p_{c}": np.char.mod("%.6f", probs[:, j]) for j, c in enumerate(CLASSES)},
                              "confidence": np.char.mod("%.6f", probs.max(1)),
                              "file": [f"/scratch/survey/cutouts/J{i:09d}.fits.gz" for i in index]})
        parts.write("part", index, lambda at: table.iloc[at].to_csv(header=False, index=False).encode(), 0)


def merge_case(parts_dir: Path, out: Path, n: int) -> dict:
    """One merge in this process: seconds and peak memory above what the imports took."""
    from galaxy_finetune.inference.parts import Parts, merge

    import pyarrow.csv  # noqa: F401  (imported before the baseline, as the CSV merge never imports it)
    import pyarrow.parquet  # noqa: F401

    before = peak_rss_mb()
    start = time.perf_counter()
    merge(Parts(parts_dir, n), out, HEADER, n)
    seconds = time.perf_counter() - start
    peak = peak_rss_mb()
    return {"merge_s": round(seconds, 2), "peak_rss_mb": round(peak, 1), "peak_rss_above_imports_mb": round(peak - before, 1)}


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: fresh at exec, unlike ru_maxrss, which keeps the parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def copy_case(parts_dir: Path, out: Path) -> dict:
    start = time.perf_counter()
    with open(out, "wb") as dst:
        for part in sorted(parts_dir.glob("part-*.csv")):
            with open(part, "rb") as src:
                shutil.copyfileobj(src, dst, 1 << 20)
    return {"copy_s": round(time.perf_counter() - start, 2)}


def read_case(out: Path) -> dict:
    from galaxy_finetune.core.files import read_table

    start = time.perf_counter()
    whole = pd.read_parquet(out) if out.suffix == ".parquet" else read_table(out)
    whole_s = time.perf_counter() - start
    start = time.perf_counter()
    one = pd.read_parquet(out, columns=["confidence"]) if out.suffix == ".parquet" else \
        pd.read_csv(out, usecols=["confidence"])
    one_s = time.perf_counter() - start
    assert len(whole) == len(one)
    return {"read_all_s": round(whole_s, 2), "read_one_column_s": round(one_s, 2), "rows_read": len(whole)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--case", nargs=4, metavar=("PARTS", "OUT", "N", "WHAT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:  # a child: one merge (or the copy), its own peak memory
        parts_dir, out, n, what = Path(args.case[0]), Path(args.case[1]), int(args.case[2]), args.case[3]
        print(json.dumps(copy_case(parts_dir, out) if what == "copy" else merge_case(parts_dir, out, n)))
        return
    print(json.dumps(provenance(benchmark="survey_merge")))
    for n in args.rows:
        with tempfile.TemporaryDirectory(dir=ROOT / "benchmarks") as tmp:
            tmp = Path(tmp)
            start = time.perf_counter()
            write_parts(tmp / "parts", n)
            parts_mb = sum(p.stat().st_size for p in (tmp / "parts").glob("part-*.csv")) / 1e6
            print(json.dumps({"rows": n, "parts": len(list((tmp / "parts").glob("part-*.csv"))),
                              "parts_mb": round(parts_mb, 1), "parts_written_s": round(time.perf_counter() - start, 1)}))
            results = {}
            for what, out in (("copy", tmp / "copy.csv"), ("csv", tmp / "out.csv"), ("parquet", tmp / "out.parquet")):
                child = subprocess.run([sys.executable, __file__, "--case", str(tmp / "parts"), str(out), str(n), what],
                                       capture_output=True, text=True, check=True)
                row = json.loads(child.stdout.strip().splitlines()[-1])
                if what != "copy":
                    row |= read_case(out) | {"size_mb": round(out.stat().st_size / 1e6, 1)}
                results[what] = row
                print(json.dumps({"rows": n, "output": what, **row, "load": load()}))
            print(json.dumps({"rows": n, "csv_merge_vs_copy": round(results["csv"]["merge_s"] / results["copy"]["copy_s"], 2),
                              "parquet_merge_vs_csv_merge": round(results["parquet"]["merge_s"] / results["csv"]["merge_s"], 2),
                              "parquet_size_vs_csv": round(results["parquet"]["size_mb"] / results["csv"]["size_mb"], 3),
                              "parquet_read_all_vs_csv": round(results["parquet"]["read_all_s"] / results["csv"]["read_all_s"], 3),
                              "parquet_read_one_column_vs_csv": round(
                                  results["parquet"]["read_one_column_s"] / results["csv"]["read_one_column_s"], 3),
                              "load": load()}))


if __name__ == "__main__":
    main()
