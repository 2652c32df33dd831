"""Encoder features of store rows or pixels, through the fine-tuned model's own eval view (input size, central
zoom, normalisation: model.json), as the linear probe of the finetune stage sees them.

The label budget's probe (learning curve, acquisition simulation, labels.train_judge probe) must not stand on
features that have seen the labels, so it uses the starting encoder (models/encoder), and only when that encoder is
pretrained. Near duplicates need features that tell galaxies apart: the pretrained starting encoder's, or with a
random init the fine-tuned encoder's (labels/budget.py picks).
"""
from __future__ import annotations

import numpy as np
import torch

from galaxy_finetune.data.augment import eval_view
from galaxy_finetune.data.encoder import build_encoder
from galaxy_finetune.data.store import galaxy_pixels


@torch.inference_mode()
def pixel_features(encoder, config: dict, pixels: np.ndarray, batch_size: int,
                   device: torch.device = torch.device("cpu")) -> np.ndarray:
    """(B, D) float32 pooled features of (B, S, S, 3) uint8 pixels through the eval view of `config` and `encoder`."""
    out = []
    for start in range(0, len(pixels), batch_size):
        images = torch.from_numpy(np.ascontiguousarray(pixels[start:start + batch_size])).permute(0, 3, 1, 2)
        view = eval_view(images.to(device), config["input_size"], config["eval_zoom"], config.get("normalisation"))
        out.append(encoder(view).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, encoder.num_features), np.float32)


def store_features(encoder, config: dict, store_dir, rows, batch_size: int,
                   device: torch.device = torch.device("cpu")) -> np.ndarray:
    """(len(rows), D) float32 pooled features of store rows `rows`, `batch_size` galaxies' pixels in memory at a
    time."""
    rows = list(rows)
    out = [pixel_features(encoder, config, galaxy_pixels(store_dir, rows[start:start + batch_size]), batch_size,
                          device) for start in range(0, len(rows), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, encoder.num_features), np.float32)


def frozen_encoder(encoder_dir, device: torch.device = torch.device("cpu")):
    """The starting encoder (models/encoder), in eval mode on `device`."""
    return build_encoder(encoder_dir).to(device).eval()


def frozen_features(encoder_dir, config: dict, store_dir, rows, batch_size: int,
                    device: torch.device = torch.device("cpu")) -> np.ndarray:
    """(len(rows), D) float32 pooled features of store rows `rows` from the starting encoder."""
    return store_features(frozen_encoder(encoder_dir, device), config, store_dir, rows, batch_size, device)
