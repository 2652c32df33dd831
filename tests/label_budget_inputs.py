"""Tiny label-budget inputs: 160 galaxies of 4 classes (80 train, 40 val, 40 test) whose features separate the
classes, the judges a real run has (the fine-tuned model's predictions of val and test, training dynamics of
train), measured near copies, the stored pixels, and chosen labels made wrong."""
from __future__ import annotations

import numpy as np
import pandas as pd

from galaxy_finetune.core.params import LabelsParams
from galaxy_finetune.labels.budget import Evidence, label_budget
from galaxy_finetune.labels.issues import Judged

CLASSES = ["smooth_round", "smooth_cigar", "edge_on_disk", "unbarred_spiral"]
N = 160
SPLIT = np.array(["train"] * 80 + ["val"] * 40 + ["test"] * 40)
PARAMS = LabelsParams(per_class=[3, 6, 12], seeds=2, al_start_per_class=2, al_batch=8, al_budget=40, mc_passes=4,
                      pca_components=8)


def galaxies_and_truth(wrong: dict[int, str] | None = None, seed: int = 4):
    """(galaxies, features, truth): galaxy i's given label is its true class, except for the indices of `wrong`."""
    rng = np.random.default_rng(seed)
    truth = np.arange(N) % 4
    given = truth.copy()
    for i in wrong or {}:
        given[i] = (truth[i] + 2) % 4
    features = rng.normal(0, 0.5, (N, 12)) + 3.0 * np.eye(12)[truth * 3]
    galaxies = pd.DataFrame({"id_str": [f"x{i:03d}" for i in range(N)], "split": SPLIT, "label": given,
                             "row": np.arange(N)})
    return galaxies, features, truth


def confident_probs(truth: np.ndarray, seed: int, accuracy: float = 0.97, sure: np.ndarray | None = None) -> np.ndarray:
    """Probabilities of a model that knows the true class of `accuracy` of the galaxies (and of every `sure` one)."""
    rng = np.random.default_rng(seed)
    knows = (rng.random(len(truth)) < accuracy) | (np.zeros(len(truth), bool) if sure is None else sure)
    guess = np.where(knows, truth, (truth + rng.integers(1, 4, len(truth))) % 4)
    probs = rng.dirichlet(np.ones(4), len(truth)) * 0.2
    probs[np.arange(len(truth)), guess] += 0.8
    probs = probs / probs.sum(1, keepdims=True)
    if sure is not None:  # as confident as the model gets
        probs[sure] = np.eye(4)[truth[sure]] * 0.96 + 0.01
    return probs


def evidence(galaxies: pd.DataFrame, truth: np.ndarray, pretrained: bool = True, accuracy: float = 0.97) -> Evidence:
    """The judges of a real run: 97% right, and right about the galaxies whose label was made wrong."""
    held = (galaxies["split"] != "train").to_numpy()
    wrong = galaxies["label"].to_numpy() != truth
    judged = [Judged("finetuned", galaxies[held].reset_index(drop=True),
                     confident_probs(truth[held], 1, accuracy, wrong[held])),
              Judged("dynamics", galaxies[~held].reset_index(drop=True),
                     confident_probs(truth[~held], 2, accuracy, wrong[~held]))]
    rng = np.random.default_rng(3)
    copies = {"jpeg_q90": 1 - rng.uniform(0, 0.002, 100), "shift_1px": 1 - rng.uniform(0, 0.01, 100)}
    pixels = sky_galaxies(len(galaxies), 48)
    return Evidence(pretrained, "test features", judged, None, 0.95, copies, pixels=lambda at: pixels[at])


def budget_inputs(out_dir, wrong: dict[int, str] | None = None, pretrained: bool = True, **labels) -> dict:
    """label_budget() on galaxies_and_truth(wrong); `labels`: LabelsParams values other than PARAMS'."""
    galaxies, features, truth = galaxies_and_truth(wrong)
    return label_budget(galaxies, features, CLASSES, PARAMS.model_copy(update=labels), out_dir,
                        evidence(galaxies, truth, pretrained), None, bootstrap_samples=50)


def sky_galaxies(n: int, size: int = 32, seed: int = 0, shapes: np.ndarray | None = None) -> np.ndarray:
    """(n, size, size, 3) uint8 galaxies on a noisy sky, as survey cut-outs are: an elliptical light profile of
    random size, elongation, angle and brightness (or the (n, 4) `shapes` given: radius, axis ratio, angle,
    peak), a sky level and Gaussian noise of its own for each galaxy."""
    rng = np.random.default_rng(seed)
    if shapes is None:
        shapes = np.column_stack([rng.uniform(0.1, 0.25, n) * size, rng.uniform(0.3, 1.0, n),
                                  rng.uniform(0, np.pi, n), rng.uniform(120, 200, n)])
    y, x = np.mgrid[0:size, 0:size] - (size - 1) / 2
    images = []
    for radius, ratio, angle, peak in shapes:
        major = x * np.cos(angle) + y * np.sin(angle)
        minor = (-x * np.sin(angle) + y * np.cos(angle)) / ratio
        light = peak * np.exp(-np.sqrt(major ** 2 + minor ** 2) / radius)
        image = light[..., None] * np.array([1.0, 0.9, 0.8]) + 25 + rng.normal(0, 6, (size, size, 3))
        images.append(np.clip(image, 0, 255).astype(np.uint8))
    return np.stack(images)
