"""Which galaxy to label next: acquisition scores (higher = more worth a label) and a spread-out pick.

- entropy: H[p] of the predicted class probabilities;
- margin: 1 - (p_top1 - p_top2), so a near tie scores near 1;
- bald: the mutual information H[mean_t p_t] - mean_t H[p_t] over T Monte-Carlo dropout passes: high where the
  passes disagree (the model's own uncertainty), not merely where each pass is unsure.

MC dropout runs through the HEAD's dropout only: the encoder stays in eval mode (no drop-path, no BatchNorm
updates) and runs once per batch; the T passes reuse its features (`mc_head_probs`).
"""
from __future__ import annotations

import numpy as np
import torch
from galaxy_finetune.core.neighbours import unit_rows

SCORES = ("entropy", "margin", "bald")


def entropy(probs: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(probs, np.float64), 1e-12, 1.0)
    return -(p * np.log(p)).sum(-1)


def margin(probs: np.ndarray) -> np.ndarray:
    top = np.sort(np.asarray(probs, np.float64), axis=-1)
    return 1.0 - (top[..., -1] - top[..., -2])


def bald(mc_probs: np.ndarray) -> np.ndarray:
    """Mutual information of (T, N, C) Monte-Carlo probabilities: H[mean p] - mean H[p] (>= 0)."""
    mc_probs = np.asarray(mc_probs, np.float64)
    return np.maximum(entropy(mc_probs.mean(0)) - entropy(mc_probs).mean(0), 0.0)


def score(name: str, probs: np.ndarray, mc_probs: np.ndarray | None = None) -> np.ndarray:
    """Acquisition score `name` of (N, C) probabilities (bald needs the (T, N, C) MC passes)."""
    if name == "entropy":
        return entropy(probs)
    if name == "margin":
        return margin(probs)
    if name == "bald":
        if mc_probs is None:
            raise ValueError("bald needs Monte-Carlo dropout passes")
        return bald(mc_probs)
    raise ValueError(f"unknown acquisition score {name!r}; one of {SCORES}")


@torch.inference_mode()
def mc_head_probs(model, features: torch.Tensor, passes: int, seed: int = 0) -> torch.Tensor:
    """(T, B, C) softmax probabilities of `passes` passes of the classifier's head over encoder `features` (B, D)
    with the head's dropout on and everything else in eval mode; the model is back in eval mode afterwards."""
    model.eval()
    model.head.dropout.train()  # Zoobot's LinearHead: dropout -> linear; only this module samples
    try:
        with torch.random.fork_rng(devices=[features.device] if features.device.type == "cuda" else []):
            torch.manual_seed(seed)  # reproducible passes, without touching the caller's random state
            return torch.stack([torch.softmax(model.head(features).float(), dim=-1) for _ in range(passes)])
    finally:
        model.eval()


def k_center_greedy(features: np.ndarray, k: int, first: int = 0) -> np.ndarray:
    """k row indexes spread out in cosine distance: start at `first`, then repeatedly the row farthest from
    every row already picked (Gonzalez's greedy k-center)."""
    unit = unit_rows(features)
    k = min(k, len(unit))
    picked = [first]
    distance = 1.0 - unit @ unit[first]
    for _ in range(k - 1):
        nxt = int(np.argmax(distance))
        picked.append(nxt)
        distance = np.minimum(distance, 1.0 - unit @ unit[nxt])
    return np.asarray(picked)


def pick(scores: np.ndarray, k: int, features: np.ndarray | None = None, pool_factor: int = 5) -> np.ndarray:
    """Indexes of the k galaxies to label, best first: the top k by score, or with `features` the top
    k * pool_factor by score spread out by k-center greedy (starting from the best), then ordered by score,
    so the k are not near-copies of one another."""
    order = np.lexsort((np.arange(len(scores)), -np.asarray(scores)))  # best first, ties by input order
    if features is None or k >= len(scores):
        return order[:k]
    pool = order[:max(k, k * pool_factor)]
    chosen = pool[k_center_greedy(np.asarray(features)[pool], k)]
    return chosen[np.lexsort((chosen, -np.asarray(scores)[chosen]))]
