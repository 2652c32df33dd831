"""Cost against catalog size: what grows with N and what does not (a benchmark, not a test).

For N galaxies (default 2,000 / 20,000 / 100,000 synthetic 256 px JPEGs, drawn once into a cache outside
the repo) it makes a throwaway copy of the project with `data.source: catalog`, a random encoder and
the from-scratch recipe at 64 px input for 1 epoch, stores the images at 256 px, and measures through the
real commands:

  fetch + store   `dvc repro store` on a fresh repo: the catalog read, the fingerprint, every image decoded
  no-change       `dvc repro` of the whole DAG when nothing changed (median of 3)
  train           `dvc repro finetune_gpu`: 1 epoch at 64 px; peak private memory, images/s
  classify        `galaxy-classify` on all N images (a catalog of their files); peak private memory, images/s
  disk            bytes inside the project (du counts a hardlinked file once) / one copy of the stored pixels

Peak private memory is RssAnon summed over the process tree (dvc, the stage, DataLoader workers), sampled
every 0.1 s from /proc/<pid>/status: the page cache of the memory-mapped store is not counted, every
decoded copy is. Baselines in the same run, at the smallest N: training on the store vs the same batches
from an in-memory array (the pre-store path), and classify vs a bare forward pass of the same model.

  python benchmarks/scale.py                      # the three sizes, table to stdout and --out (markdown)
  python benchmarks/scale.py --sizes 2000 --keep  # one size, keep the repo under --work
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.harness import load, provenance  # noqa: E402
from tests.pipeline_repo import make_repo, run  # noqa: E402

SIZE = 256  # source and stored pixels per side
BASE = 1000  # distinct rendered galaxies; the rest are rotated, flipped, re-exposed and re-noised copies


# ------------------------------------------------------------------------------------------ the catalogs

def _draw(job) -> None:
    """Galaxies start..stop: a rendered base galaxy, rotated, flipped, re-exposed, with a shifted slice of a
    noise bank (drawing fresh Gaussian noise per image would cost more than the JPEG encode)."""
    folder, start, stop = job
    from PIL import Image

    from galaxy_finetune.data.synthetic import render_galaxy

    noise = np.random.default_rng(start).normal(0, 4, (2 * SIZE, 2 * SIZE, 3)).astype(np.float32)
    base = {}
    for i in range(start, stop):
        label, b = i % 4, (i // 4) % (BASE // 4) * 4 + i % 4  # BASE distinct galaxies, labels kept
        if b not in base:
            base[b] = render_galaxy(label, 0, b, SIZE).astype(np.float32)
        rng = np.random.default_rng(i)
        img = np.rot90(base[b], k=int(rng.integers(4)))
        img = img[:, ::-1] if rng.integers(2) else img
        dy, dx = rng.integers(SIZE, size=2)
        img = img * rng.uniform(0.8, 1.2) + noise[dy:dy + SIZE, dx:dx + SIZE]
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"g{i:06d}.jpg", quality=90)


def catalogs(cache: Path, sizes: list[int], procs: int) -> dict[int, Path]:
    """catalog_<N>.csv (file_loc, label) over the first N of max(sizes) JPEGs, drawn once into `cache`."""
    images = cache / "images"
    images.mkdir(parents=True, exist_ok=True)
    n_max = max(sizes)
    have = len(os.listdir(images))
    if have < n_max:
        start = time.perf_counter()
        bounds = np.linspace(have, n_max, procs + 1).astype(int)  # one job per process: the base renders once
        with Pool(procs) as pool:
            pool.map(_draw, [(images, a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a])
        print(f"drew {n_max - have} JPEGs in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    out = {}
    for n in sizes:
        path = cache / f"catalog_{n}.csv"
        if not path.is_file():
            pd.DataFrame({"file_loc": [f"images/g{i:06d}.jpg" for i in range(n)],
                          "label": np.arange(n) % 4}).to_csv(path, index=False)
        out[n] = path
    return out


# ------------------------------------------------------------------------------------------ measuring

def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(entry))
    return kids


def private_kb(root: int) -> int:
    """RssAnon (kB) summed over `root` and all its descendants right now."""
    kids, todo, total = _children(), [root], 0
    while todo:
        pid = todo.pop()
        todo += kids.get(pid, [])
        try:
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith("RssAnon:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def measured(cmd: list[str], cwd: Path, env: dict, limit_s: float | None = None) -> dict:
    """Run `cmd`, sampling the process tree's private memory; wall seconds, peak GB and output. With
    `limit_s`, the run is stopped (SIGKILL to the tree) after that long: a bounded sample of a long job."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    peak, output = [0], []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True)
    reader.start()
    start = time.perf_counter()
    while proc.poll() is None:
        peak[0] = max(peak[0], private_kb(proc.pid))
        if limit_s is not None and time.perf_counter() - start > limit_s:
            os.killpg(proc.pid, 9)
            proc.wait()
            break
        time.sleep(0.1)
    wall = time.perf_counter() - start
    reader.join(timeout=10)
    text = "".join(output)
    if proc.returncode and limit_s is None:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{text[-3000:]}")
    return {"wall_s": wall, "peak_gb": peak[0] / 2**20, "output": text}


def train_probe(repo: Path, steps: int) -> None:
    """In a subprocess of its own (so its memory is sampled alone): `steps` training steps of the
    from-scratch recipe over the repo's store and splits, as finetune_gpu runs them; prints images/s."""
    import lightning as L

    from galaxy_finetune.data.loading import GalaxyDataModule
    from galaxy_finetune.data.encoder import build_encoder
    from galaxy_finetune.training.heads import build_classifier
    from galaxy_finetune.core.params import load_params

    params = load_params(repo / "params.yaml")
    _, train = params.recipe(False)
    times = []

    class Clock(L.Callback):
        def on_train_batch_end(self, *args):
            times.append(time.perf_counter())

    L.seed_everything(0, verbose=False)
    data = GalaxyDataModule(repo / "data/store", repo / "data/splits", train.input_size, train.batch_size,
                            params.augment)
    model = build_classifier(build_encoder(repo / "models/encoder"), 4, train)
    L.Trainer(max_steps=steps, limit_val_batches=0, accelerator="cpu", logger=False, enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False, callbacks=[Clock()]).fit(model, datamodule=data)
    warm = times[3:]
    print(json.dumps({"train_images_per_s": train.batch_size * (len(warm) - 1) / (warm[-1] - warm[0]),
                      "train_split": len(data.dataset("train"))}))


def bounded_size(n: int, catalog: Path, work: Path, model_dir: Path, steps: int, classify_s: float) -> dict:
    """The same measurements at any N, each bounded in time: fetch + store, the no-change rerun of the
    stages whose cost could grow with N (fetch_data's check, store, split), `steps` training steps, and
    `classify_s` seconds of galaxy-classify over all N (stopped after that: memory and pace, not the end)."""
    shutil.rmtree(work / f"b{n}", ignore_errors=True)
    (work / f"b{n}").mkdir(parents=True)
    repo, env = make_repo(work / f"b{n}" / "repo", {
        "data": {"source": "catalog", "catalog": str(catalog)}, "model": {"encoder": "random"},
        "scratch": {"input_size": 64, "epochs": 1, "batch_size": 64, "patience": 1},
        "store": {"image_size": SIZE}, "split": {"val_fraction": 0.1, "test_fraction": 0.2}})
    row = {"N": n}
    fetch = measured(["dvc", "repro", "store"], repo, env)
    row.update(fetch_store_s=fetch["wall_s"], fetch_store_peak_gb=fetch["peak_gb"])
    run(["dvc", "repro", "split"], repo, env)
    noop = [measured(["dvc", "repro", "split"], repo, env)["wall_s"] for _ in range(3)]
    row.update(noop_prefix_s=statistics.median(noop), noop_prefix_all_s=[round(t, 2) for t in noop])
    probe = measured([sys.executable, str(Path(__file__).resolve()), "--train-probe", str(repo), "--steps", str(steps)],
                     ROOT, env)
    row.update(train_peak_gb=probe["peak_gb"], train_steps=steps,
               **json.loads(probe["output"].strip().splitlines()[-1]))
    out_csv = work / f"b{n}" / "classified.csv"
    classify = measured([sys.executable, "-m", "galaxy_finetune.inference.classify", str(model_dir), str(catalog), "-o",
                         str(out_csv), "--accelerator", "cpu"], work / f"b{n}", env, limit_s=classify_s)
    if out_csv.is_file():  # finished within the limit: the parts are merged into the output
        done = len(pd.read_csv(out_csv, usecols=["id_str"]))
    else:  # stopped: count the rows its parts hold
        done = sum(len(p.read_text().splitlines()) for p in Path(f"{out_csv}.parts").glob("part-*.csv"))
    row.update(classify_peak_gb=classify["peak_gb"], classify_images=done, classify_s=classify["wall_s"],
               classify_images_per_s=done / classify["wall_s"])
    pixels = n * SIZE * SIZE * 3
    row.update(project_disk_gb=du_bytes(repo) / 1e9, store_pixels_gb=pixels / 1e9, disk_ratio=du_bytes(repo) / pixels,
               store_links=os.stat(repo / "data/store/images.npy").st_nlink)
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def du_bytes(path: Path) -> int:
    """Bytes on disk under `path`, each hardlinked file counted once (du's own rule)."""
    return int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True).stdout.split()[0])


def measure_size(n: int, catalog: Path, work: Path, keep: bool) -> dict:
    shutil.rmtree(work / str(n), ignore_errors=True)
    (work / str(n)).mkdir(parents=True)
    repo, env = make_repo(work / str(n) / "repo", {
        "data": {"source": "catalog", "catalog": str(catalog)},
        "model": {"encoder": "random"},
        "scratch": {"input_size": 64, "epochs": 1, "batch_size": 64, "patience": 1},
        "store": {"image_size": SIZE},
        "split": {"val_fraction": 0.1, "test_fraction": 0.2},
        "analyse": {"bootstrap_samples": 50},
        "predict": {"batch_size": 256}})
    row = {"N": n}
    fetch = measured(["dvc", "repro", "store"], repo, env)
    row.update(fetch_store_s=fetch["wall_s"], fetch_store_peak_gb=fetch["peak_gb"])
    train = measured(["dvc", "repro", "finetune_gpu"], repo, env)  # runs split first (seconds)
    config = json.loads((repo / "models/finetuned/model.json").read_text())["run"]
    row.update(train_peak_gb=train["peak_gb"], train_images_per_s=config["train_images_per_s"],
               train_images=config["train_images"])
    rest = measured(["dvc", "repro"], repo, env)
    row["predict_analyse_s"] = rest["wall_s"]
    noop = [measured(["dvc", "repro"], repo, env)["wall_s"] for _ in range(3)]
    row["noop_repro_s"] = statistics.median(noop)
    row["noop_repro_all_s"] = [round(t, 2) for t in noop]
    out_csv = work / str(n) / "classified.csv"
    classify = measured([sys.executable, "-m", "galaxy_finetune.inference.classify", str(repo / "models/finetuned"),
                         str(catalog), "-o", str(out_csv), "--accelerator", "cpu"], work / str(n), env)
    assert len(pd.read_csv(out_csv, usecols=["id_str"])) == n
    row.update(classify_peak_gb=classify["peak_gb"], classify_images_per_s=n / classify["wall_s"])
    pixels = n * SIZE * SIZE * 3
    row.update(project_disk_gb=du_bytes(repo) / 1e9, store_pixels_gb=pixels / 1e9,
               disk_ratio=du_bytes(repo) / pixels)
    row["store_links"] = os.stat(repo / "data/store/images.npy").st_nlink
    if not keep:
        shutil.rmtree(work / str(n))
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


# ------------------------------------------------------------------------------------------ baselines

def baselines(repo: Path, steps: int) -> dict:
    """At one N, in this process: training steps/s from the store vs from an in-memory array of the same
    pixels (the pre-store path), and classify's model on random batches (a bare forward pass)."""
    import lightning as L
    import torch

    from galaxy_finetune.data.augment import eval_view
    from galaxy_finetune.data.loading import GalaxyDataModule, StoreGalaxies, read_split
    from galaxy_finetune.data.encoder import build_encoder
    from galaxy_finetune.training.heads import build_classifier
    from galaxy_finetune.training.model_io import load_finetuned
    from galaxy_finetune.core.params import AugmentParams, load_params
    from galaxy_finetune.data.store import open_images

    params = load_params(repo / "params.yaml")
    _, train = params.recipe(False)

    class InMemory(GalaxyDataModule):
        def dataset(self, name):
            if name not in self.datasets:
                frame = read_split(self.split_dir, name)
                self.datasets[name] = StoreGalaxies(np.array(open_images(self.store_dir)), frame["row"], frame["label"])
            return self.datasets[name]

    class Clock(L.Callback):
        def __init__(self):
            self.times = []

        def on_train_batch_end(self, *args):
            self.times.append(time.perf_counter())

    speeds = {}
    for name, cls in (("store", GalaxyDataModule), ("in_memory", InMemory), ("store_again", GalaxyDataModule)):
        L.seed_everything(0, verbose=False)
        data = cls(repo / "data/store", repo / "data/splits", train.input_size, train.batch_size, AugmentParams())
        model = build_classifier(build_encoder(repo / "models/encoder"), 4, train)
        clock = Clock()
        trainer = L.Trainer(max_steps=steps, limit_val_batches=0, accelerator="cpu", logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            callbacks=[clock])
        trainer.fit(model, datamodule=data)
        warm = clock.times[3:]  # the first steps carry start-up costs
        speeds[name] = train.batch_size * (len(warm) - 1) / (warm[-1] - warm[0])
    model, config = load_finetuned(repo / "models/finetuned")
    batch = torch.randint(0, 256, (256, 3, config["store_size"], config["store_size"]), dtype=torch.uint8)
    with torch.inference_mode():
        model(eval_view(batch, config["input_size"], config["eval_zoom"]))
        start = time.perf_counter()
        for _ in range(8):
            model(eval_view(batch, config["input_size"], config["eval_zoom"]))
    forward = 8 * 256 / (time.perf_counter() - start)
    return {"train_store_images_per_s": (speeds["store"] + speeds["store_again"]) / 2,
            "train_in_memory_images_per_s": speeds["in_memory"], "bare_forward_images_per_s": forward}


# ------------------------------------------------------------------------------------------ report

def table(rows: list[dict], noop_key: str = "noop_repro_s", noop_label: str = "`dvc repro`") -> str:
    """The markdown table of rows; the no-change column is the full DAG's or (bounded) `dvc repro split`'s."""
    lines = [f"| N | fetch + store build | no-change {noop_label} | train peak private mem | train img/s "
             "| classify peak private mem | classify img/s | disk in project / stored pixels |", "|" + "---|" * 8]
    for r in rows:
        lines.append(f"| {r['N']:,} | {r['fetch_store_s']:.1f} s | {r[noop_key]:.2f} s | "
                     f"{r['train_peak_gb']:.2f} GB | {r['train_images_per_s']:.1f} | {r['classify_peak_gb']:.2f} GB | "
                     f"{r['classify_images_per_s']:.1f} | {r['project_disk_gb']:.2f} / {r['store_pixels_gb']:.2f} GB "
                     f"= {r['disk_ratio']:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000, 100000])
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache/galaxy-finetune/bench-scale")
    parser.add_argument("--work", type=Path, default=Path("/tmp/galaxy-finetune-scale"))
    parser.add_argument("--baseline-steps", type=int, default=25)
    parser.add_argument("--keep", action="store_true", help="keep each size's repo")
    parser.add_argument("--out", type=Path, default=None, help="also write the report (markdown) here")
    parser.add_argument("--bounded", type=Path, metavar="MODEL_DIR", default=None,
                        help="the bounded protocol at every size (classify with this fine-tuned model)")
    parser.add_argument("--steps", type=int, default=60, help="bounded: training steps per size")
    parser.add_argument("--classify-s", type=float, default=150, help="bounded: seconds of classify per size")
    parser.add_argument("--train-probe", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.train_probe:
        return train_probe(args.train_probe, args.steps)
    if args.bounded:
        paths = catalogs(args.cache, args.sizes, os.cpu_count() or 1)
        info = provenance(sizes=args.sizes, stored_px=SIZE, protocol="bounded")
        rows = [bounded_size(n, paths[n], args.work, args.bounded, args.steps, args.classify_s)
                for n in sorted(args.sizes)]
        info["load_end"] = load()
        report = "\n".join([f"Scale benchmark, bounded protocol ({info['date']}, commit {info['commit']}, "
                            f"{info['machine']}, load {info['load_start']} -> {info['load_end']})", "",
                            table(rows, "noop_prefix_s", "`dvc repro split`"), "", "```json", json.dumps({"info": info, "rows": rows}, indent=1),
                            "```"])
        print(report)
        if args.out:
            args.out.write_text(report + "\n")
        if not args.keep:
            for n in args.sizes:
                shutil.rmtree(args.work / f"b{n}", ignore_errors=True)
        return
    info = provenance(sizes=args.sizes, stored_px=SIZE)
    paths = catalogs(args.cache, args.sizes, os.cpu_count() or 1)
    rows = []
    smallest = min(args.sizes)
    for n in sorted(args.sizes):
        rows.append(measure_size(n, paths[n], args.work, keep=args.keep or n == smallest))
        if n == smallest:
            info["baselines_at_N"] = n
            info.update(baselines(args.work / str(n) / "repo", args.baseline_steps))
            if not args.keep:
                shutil.rmtree(args.work / str(n))
    info["load_end"] = load()
    ratio_train = info["train_store_images_per_s"] / info["train_in_memory_images_per_s"]
    ratio_classify = rows[0]["classify_images_per_s"] / info["bare_forward_images_per_s"]
    report = "\n".join([
        f"Scale benchmark ({info['date']}, commit {info['commit']}, {info['machine']}, load {info['load_start']} -> "
        f"{info['load_end']}); {SIZE} px JPEGs stored at {SIZE} px, random ConvNeXt-Nano, 64 px input, CPU",
        "", table(rows), "",
        f"Baselines at N = {smallest:,}, same run: training from the store {info['train_store_images_per_s']:.1f} img/s vs "
        f"from an in-memory array {info['train_in_memory_images_per_s']:.1f} img/s (ratio {ratio_train:.3f}); "
        f"classify {rows[0]['classify_images_per_s']:.1f} img/s vs a bare forward pass "
        f"{info['bare_forward_images_per_s']:.1f} img/s (ratio {ratio_classify:.3f}).",
        "", "```json", json.dumps({"info": info, "rows": rows}, indent=1, default=str), "```"])
    print(report)
    if args.out:
        args.out.write_text(report + "\n")


if __name__ == "__main__":
    main()
