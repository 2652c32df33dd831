"""Which image store: a numpy memory map, LitData or WebDataset shards, measured on the same galaxies.

For N synthetic 256 px JPEGs (the scale benchmark's cache) it builds each store and times what the
pipeline does with one:
  build        decode or pack every galaxy once (the store stage)
  bytes        on disk
  shuffled     a training epoch's access pattern: random batches of 64, images/s delivered as uint8
               arrays (memmap: rows by index; LitData: its own shuffle, chunks in random order and items
               within them; WebDataset: its shuffle buffer over sequential shards, the only order it offers)
  by index     the 16 galaxies the analysis or galaxy-similar asks for by row (random access)
Every reader is warmed once first (page cache), then timed; decoded JPEG bytes count as part of a read.

  pip install litdata webdataset   # benchmark-only extras, not in requirements.txt
  python benchmarks/store_choice.py --n 5000
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.harness import provenance  # noqa: E402
from benchmarks.scale import catalogs  # noqa: E402

BATCH = 64


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds else float("nan")


def memmap_store(files: list[str], out: Path) -> dict:
    from galaxy_finetune.data.store import build_store, open_images

    start = time.perf_counter()
    build_store(pd.DataFrame({"id_str": [Path(f).stem for f in files], "src": files}), out, 256, threads=2)
    built = time.perf_counter() - start
    images = open_images(out)
    n = len(files)
    rng = np.random.default_rng(0)

    def shuffled():
        order = rng.permutation(n)
        for i in range(0, n, BATCH):
            np.ascontiguousarray(images[np.sort(order[i:i + BATCH])])

    def by_index():
        for row in rng.choice(n, 16, replace=False):
            np.asarray(images[row])
    return {"build_s": built, "bytes": du(out), "read": (shuffled, by_index)}


def _litdata_item(path):
    return {"image": np.asarray(Image.open(path).convert("RGB")), "index": int(Path(path).stem[1:])}


def litdata_store(files: list[str], out: Path) -> dict:
    import litdata

    start = time.perf_counter()
    litdata.optimize(fn=_litdata_item, inputs=files, output_dir=str(out), chunk_bytes="64MB", num_workers=2,
                     mode="overwrite", verbose=False)
    built = time.perf_counter() - start
    dataset = litdata.StreamingDataset(str(out))
    n = len(dataset)
    rng = np.random.default_rng(0)

    def shuffled():  # LitData's own shuffle: chunks in random order, items shuffled within the chunks it holds
        batch = []
        for item in litdata.StreamingDataset(str(out), shuffle=True):
            batch.append(item["image"])
            if len(batch) == BATCH:
                np.stack(batch)
                batch = []

    def by_index():
        for row in rng.choice(n, 16, replace=False):
            dataset[int(row)]["image"]
    return {"build_s": built, "bytes": du(out), "read": (shuffled, by_index)}


def webdataset_store(files: list[str], out: Path) -> dict:
    import webdataset as wds

    out.mkdir(parents=True)
    start = time.perf_counter()
    with wds.ShardWriter(str(out / "shard-%05d.tar"), maxcount=1000, verbose=0) as sink:
        for path in files:  # JPEG bytes as they are: WebDataset's usual layout
            sink.write({"__key__": Path(path).stem, "jpg": Path(path).read_bytes()})
    built = time.perf_counter() - start
    shards = sorted(str(p) for p in out.glob("*.tar"))

    def shuffled():
        pipeline = wds.WebDataset(shards, shardshuffle=len(shards), empty_check=False).shuffle(1000)
        batch = []
        for sample in pipeline:
            batch.append(np.asarray(Image.open(io.BytesIO(sample["jpg"])).convert("RGB")))
            if len(batch) == BATCH:
                np.stack(batch)
                batch = []

    def by_index():  # no index: find 16 keys by streaming the shards
        wanted = {Path(files[i]).stem for i in np.random.default_rng(0).choice(len(files), 16, replace=False)}
        for sample in wds.WebDataset(shards, shardshuffle=False, empty_check=False):
            if sample["__key__"] in wanted:
                np.asarray(Image.open(io.BytesIO(sample["jpg"])).convert("RGB"))
                wanted.discard(sample["__key__"])
                if not wanted:
                    break
    return {"build_s": built, "bytes": du(out), "read": (shuffled, by_index)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache/galaxy-finetune/bench-scale")
    parser.add_argument("--work", type=Path, default=Path("/tmp/galaxy-finetune-store-choice"))
    args = parser.parse_args(argv)
    catalog = pd.read_csv(catalogs(args.cache, [args.n], os.cpu_count() or 1)[args.n])
    files = [str(args.cache / f) for f in catalog["file_loc"]]
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    rows = {}
    for name, build in (("numpy memmap (.npy)", memmap_store), ("LitData (uint8 arrays)", litdata_store),
                        ("WebDataset (JPEG shards)", webdataset_store)):
        store = build(files, args.work / name.split()[0].lower())
        shuffled, by_index = store.pop("read")
        shuffled()  # warm the page cache
        start = time.perf_counter()
        shuffled()
        store["shuffled_images_per_s"] = rate(args.n, time.perf_counter() - start)
        start = time.perf_counter()
        by_index()
        store["by_index_16_ms"] = (time.perf_counter() - start) * 1000
        rows[name] = store
        print(name, json.dumps(store), file=sys.stderr, flush=True)
    shutil.rmtree(args.work, ignore_errors=True)
    info = provenance(n=args.n)
    print(f"Store choice, N = {args.n:,} galaxies at 256 px ({info['date']}, commit {info['commit']}, "
          f"{info['machine']}, load {info['load_start']})\n")
    print("| store | build | on disk | shuffled batches of 64 | 16 galaxies by index |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['build_s']:.1f} s | {r['bytes'] / 1e6:.0f} MB | {r['shuffled_images_per_s']:,.0f} img/s | "
              f"{r['by_index_16_ms']:.1f} ms |")


if __name__ == "__main__":
    main()
