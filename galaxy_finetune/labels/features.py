"""Frozen pretrained encoder features of store rows: what the label-budget analyses stand on.

They must not have seen the labels (a learning curve, an active-learning simulation and out-of-fold label checks
would all be flattered by fine-tuned features), so they come from the starting encoder (models/encoder), through
the fine-tuned model's own eval view (input size, central zoom, normalisation: model.json), as the linear probe of
the finetune stage sees them.
"""
from __future__ import annotations

import numpy as np
import torch

from galaxy_finetune.data.augment import eval_view
from galaxy_finetune.data.store import galaxy_pixels
from galaxy_finetune.training.encoder import build_encoder


@torch.inference_mode()
def frozen_features(encoder_dir, config: dict, store_dir, rows, batch_size: int,
                    device: torch.device = torch.device("cpu")) -> np.ndarray:
    """(len(rows), D) float32 pooled features of store rows `rows` from the pretrained encoder, `batch_size`
    galaxies' pixels in memory at a time."""
    encoder = build_encoder(encoder_dir).to(device).eval()
    rows = list(rows)
    out = []
    for start in range(0, len(rows), batch_size):
        pixels = galaxy_pixels(store_dir, rows[start:start + batch_size])
        images = torch.from_numpy(pixels).permute(0, 3, 1, 2).to(device)
        view = eval_view(images, config["input_size"], config["eval_zoom"], config.get("normalisation"))
        out.append(encoder(view).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, encoder.num_features), np.float32)
