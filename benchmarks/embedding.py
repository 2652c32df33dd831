"""Benchmark: the embed stage's pass (pixels -> eval view -> ConvNeXt-Nano encoder -> pooled features).

Writes N random galaxies into a temporary store (data/store/images.npy, as the store stage does), builds the
project's classifier around a randomly initialised encoder (no download; the speed does not depend on the
weights), then times galaxy_finetune.inference.embed.embed_galaxies (the stage's loop) and, apart, the pixel reading alone
(rows read in a shuffled order, as the splits are). Prints one JSON
line per runner and writes nothing else.

    python benchmarks/embedding.py [--n 512] [--image-size 64] [--input-size 64] [--batch 256]
    python benchmarks/embedding.py --n 128 --image-size 224 --input-size 224 --batch 64
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def write_store(store_dir: Path, n: int, size: int) -> list[int]:
    """A store of n random galaxies; returns the rows in a shuffled order."""
    from galaxy_finetune.core.layout import STORE_IMAGES

    rng = np.random.default_rng(0)
    store_dir.mkdir(parents=True)
    images = np.lib.format.open_memmap(store_dir / STORE_IMAGES, mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
    for start in range(0, n, 1024):
        images[start:start + 1024] = rng.integers(0, 255, images[start:start + 1024].shape, dtype=np.uint8)
    images.flush()
    return rng.permutation(n).tolist()


class PixelsRunner:
    """galaxy_pixels alone: rows read from the store's memory map, one batch at a time."""

    name = "pixels (galaxy_pixels)"

    def run(self, store_dir: Path, rows: list[int], batch: int, **_) -> dict:
        from galaxy_finetune.data.store import galaxy_pixels

        start = time.perf_counter()
        for i in range(0, len(rows), batch):
            galaxy_pixels(store_dir, rows[i:i + batch])
        seconds = time.perf_counter() - start
        return {"runner": self.name, "seconds": round(seconds, 3), "images_per_s": round(len(rows) / seconds, 1)}


class EmbedRunner:
    """embed_galaxies: the embed stage's loop (pixels, eval view, encoder), after one warm-up batch."""

    name = "embed pass (embed_galaxies)"

    def run(self, store_dir: Path, rows: list[int], batch: int, input_size: int, device: torch.device) -> dict:
        import timm

        from galaxy_finetune.inference.embed import embed_galaxies
        from galaxy_finetune.core.params import TrainParams
        from galaxy_finetune.training.heads import build_classifier

        model = build_classifier(timm.create_model("convnext_nano", pretrained=False, num_classes=0), 4,
                                 TrainParams()).eval()
        config = {"input_size": input_size, "eval_zoom": 1.2}
        embed_galaxies(model, config, store_dir, rows[:batch], batch, device)  # warm-up
        start = time.perf_counter()
        features = embed_galaxies(model, config, store_dir, rows, batch, device)
        seconds = time.perf_counter() - start
        return {"runner": self.name, "seconds": round(seconds, 3), "images_per_s": round(len(rows) / seconds, 1),
                "features": list(features.shape), "peak_rss_mb": peak_rss_mb()}


def peak_rss_mb() -> float:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--accelerator", choices=["auto", "cpu", "gpu"], default="auto")
    args = parser.parse_args()
    from galaxy_finetune.inference.embed import torch_device

    device = torch_device(args.accelerator)
    with tempfile.TemporaryDirectory() as tmp:
        store_dir = Path(tmp) / "store"
        rows = write_store(store_dir, args.n, args.image_size)
        load = os.getloadavg()
        for runner in (PixelsRunner(), EmbedRunner()):
            result = runner.run(store_dir, rows, args.batch, input_size=args.input_size, device=device)
            print(json.dumps({**result, "n": args.n, "image_size": args.image_size, "input_size": args.input_size,
                              "batch": args.batch, "device": device.type, "torch_threads": torch.get_num_threads(),
                              "load_before": [round(x, 2) for x in load],
                              "load_after": [round(x, 2) for x in os.getloadavg()]}))


if __name__ == "__main__":
    main()
