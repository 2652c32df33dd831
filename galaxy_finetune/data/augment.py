"""Views of a whole batch, computed on the batch's device (GPU when training there).

One affine warp per image does the work of galaxy-datasets' default view (RandomAffine with
rotation, translation, zoom and shear, then resize and flips) in a single grid_sample, so no
per-image Python or PIL work sits in the training loop. Random erasing is not applied.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from galaxy_finetune.core.params import AugmentParams


def to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 in [0, 1], as the Zoobot encoders were trained (no mean/std norm)."""
    return images.float().div_(255.0)


def _warp(images: torch.Tensor, theta: torch.Tensor, size: int, normalisation: dict | None,
          photometric=None) -> torch.Tensor:
    grid = F.affine_grid(theta, [images.shape[0], images.shape[1], size, size], align_corners=False)
    out = F.grid_sample(to_unit_float(images), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if photometric is not None:  # on [0, 1] pixels, before the encoder's normalisation
        out = photometric(out)
    if normalisation is not None:  # the encoder's own mean/std (encoder.input_normalisation); None: [0, 1] pixels
        mean = torch.tensor(normalisation["mean"], device=out.device).view(1, -1, 1, 1)
        std = torch.tensor(normalisation["std"], device=out.device).view(1, -1, 1, 1)
        out = (out - mean) / std
    return out.contiguous(memory_format=torch.channels_last)


def eval_view(images: torch.Tensor, size: int, zoom: float, normalisation: dict | None = None) -> torch.Tensor:
    """Deterministic view for val/test/predict: central zoom, resized to size x size, then normalised."""
    theta = torch.zeros(images.shape[0], 2, 3, device=images.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / zoom
    return _warp(images, theta, size, normalisation)


def random_affine(n: int, aug: AugmentParams, device, generator: torch.Generator | None = None) -> torch.Tensor:
    """(n, 2, 3) affine matrices mapping output to input coordinates (affine_grid's convention)."""
    def uniform(low, high):
        return torch.rand(n, device=device, generator=generator) * (high - low) + low

    angle = uniform(-aug.rotation_deg, aug.rotation_deg) * (math.pi / 180)
    zoom = uniform(aug.scale_min, aug.scale_max)
    shear_x = torch.tan(uniform(0.0, aug.shear_deg) * (math.pi / 180))
    shear_y = torch.tan(uniform(0.0, aug.shear_deg) * (math.pi / 180))
    # normalised coordinates span 2 units per image side, so a translation fraction t moves 2t
    shift = torch.stack([uniform(-aug.translate, aug.translate), uniform(-aug.translate, aug.translate)], 1) * 2
    cos, sin = torch.cos(angle), torch.sin(angle)
    # torchvision's RandomAffine maps input to output by zoom * R(angle) @ shear, shear (area-preserving) being
    # [[1, -tan sx], [-tan sy, 1 + tan sx tan sy]], then shifts the output; affine_grid wants the inverse map
    inv_rotation = torch.stack([torch.stack([cos, sin], 1), torch.stack([-sin, cos], 1)], 1)
    inv_shear = torch.stack([torch.stack([1 + shear_x * shear_y, shear_x], 1),
                             torch.stack([shear_y, torch.ones_like(shear_y)], 1)], 1)
    linear = inv_shear @ inv_rotation / zoom[:, None, None]
    offset = -(linear @ shift[:, :, None])  # the shift is in output coordinates, as torchvision's
    if aug.flip:
        signs = torch.where(torch.rand(n, 2, device=device, generator=generator) < 0.5, -1.0, 1.0)
        linear = linear * signs[:, None, :]  # mirror the output x and/or y axis (flips after the warp)
    return torch.cat([linear, offset], dim=2)


def train_view(images: torch.Tensor, size: int, aug: AugmentParams, generator: torch.Generator | None = None,
               normalisation: dict | None = None) -> torch.Tensor:
    """Random rotation, flips, zoom-in, shear and shift of each image, resized to size x size, then normalised."""
    return _warp(images, random_affine(images.shape[0], aug, images.device, generator), size, normalisation)


def distort(pixels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The strong view's photometric part, per image on [0, 1] pixels (FixMatch's RandAugment + Cutout, restricted to
    what a telescope could do to a galaxy): exposure x0.6-1.4, contrast (a gamma of 0.7-1.4), Gaussian noise of up to
    5% of the range, and one square of a quarter to half the side blanked out."""
    n, _, h, w = pixels.shape
    device = pixels.device

    def uniform(low, high, *shape):
        return torch.rand(n, *shape, device=device, generator=generator) * (high - low) + low

    out = pixels.clamp(0, 1) ** uniform(0.7, 1.4, 1, 1, 1) * uniform(0.6, 1.4, 1, 1, 1)
    out = out + torch.randn(out.shape, device=device, generator=generator) * uniform(0.0, 0.05, 1, 1, 1)
    side = (uniform(0.25, 0.5) * min(h, w)).long()
    top = (torch.rand(n, device=device, generator=generator) * (h - side)).long()
    left = (torch.rand(n, device=device, generator=generator) * (w - side)).long()
    rows, cols = torch.arange(h, device=device), torch.arange(w, device=device)
    inside_rows = (rows[None] >= top[:, None]) & (rows[None] < (top + side)[:, None])
    inside_cols = (cols[None] >= left[:, None]) & (cols[None] < (left + side)[:, None])
    hole = inside_rows[:, :, None] & inside_cols[:, None, :]
    return out.clamp(0, 1).masked_fill(hole[:, None], 0.0)


def strong_view(images: torch.Tensor, size: int, aug: AugmentParams, generator: torch.Generator | None = None,
                normalisation: dict | None = None) -> torch.Tensor:
    """The train view's own random warp, then `distort`: the strong view semi-supervised training asks the model
    to agree on with the weak (train) view of the same unlabelled galaxy."""
    return _warp(images, random_affine(images.shape[0], aug, images.device, generator), size, normalisation,
                 lambda pixels: distort(pixels, generator))
