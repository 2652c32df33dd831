"""embed: the fine-tuned encoder's pooled features for every galaxy of train/val/test, and a PCA fitted on train.

The images come from the store (data/store) and go through exactly the predict stage's eval view (central zoom,
resize to the model's input size); one batch of pixels is in memory at a time. The output folder's format
(data/embeddings/) lives in embeddings.py.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from galaxy_finetune.core.accelerator import torch_device
from galaxy_finetune.data.loading import read_split
from galaxy_finetune.data.store import galaxy_pixels
from galaxy_finetune.inference.embeddings import SPLITS, write_embeddings
from galaxy_finetune.inference.shift import weights_sha256
from galaxy_finetune.training.model_io import eval_transform, load_finetuned


@torch.inference_mode()
def encoder_features(model, pixels: np.ndarray, view, device: torch.device) -> np.ndarray:
    """(B, D) float32 pooled features of (B, S, S, 3) uint8 pixels through `view` (the model's eval view,
    model_io.eval_transform) and the encoder."""
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        features = model.encoder(view(images))
    return features.float().cpu().numpy()


def embed_galaxies(model, config: dict, store_dir: Path, rows: list[int], batch_size: int,
                   device: torch.device) -> np.ndarray:
    """(len(rows), D) float32 encoder features of store rows `rows`, `batch_size` galaxies' pixels in memory
    at a time."""
    model = model.to(device).eval()
    view = eval_transform(config)
    batches = [encoder_features(model, galaxy_pixels(store_dir, rows[start:start + batch_size]), view, device)
               for start in range(0, len(rows), batch_size)]
    return np.concatenate(batches) if batches else np.zeros((0, model.encoder.num_features), np.float32)


def embed_splits(model_dir: Path, store_dir: Path, split_dir: Path, out_dir: Path, batch_size: int,
                 pca_components: int, accelerator: str = "auto") -> dict:
    """Features of every galaxy of the splits, and their PCA, written to `out_dir` (all or nothing)."""
    model, config = load_finetuned(model_dir)
    frames = []
    for split in SPLITS:
        frame = read_split(split_dir, split)
        frames.append(pd.DataFrame({"id_str": frame["id_str"], "split": split, "label": frame["label"],
                                    "label_name": frame["label_name"], "row": frame["row"]}))
    galaxies = pd.concat(frames, ignore_index=True)
    device = torch_device(accelerator)
    start = time.perf_counter()
    features = embed_galaxies(model, config, store_dir, galaxies["row"].tolist(), batch_size, device)
    seconds = time.perf_counter() - start

    return write_embeddings(out_dir, galaxies, features, pca_components,
                            {"accelerator": device.type, "images_per_s": round(len(galaxies) / seconds, 1),
                             "seconds": round(seconds, 2)}, model_sha256=weights_sha256(model_dir))
