"""Synthetic GalaxyMNIST-shaped galaxies: the offline quickstart's stand-in for the real survey images.

Each class is drawn from a light profile that mimics what Galaxy Zoo volunteers see:

- smooth_round: Sersic bulge, axis ratio 0.75-1
- smooth_cigar: Sersic, elongated (axis ratio 0.22-0.5), no disk
- edge_on_disk: thin exponential disk (axis ratio 0.08-0.28), optional dust lane and bulge
- unbarred_spiral: face-on exponential disk with 2-3 logarithmic arms

All with random position angle, size, brightness and colour, then a Gaussian PSF and sky noise.
For train.task regression and votes, `synthetic_fractions` and `synthetic_votes` give each galaxy targets drawn
from its shape class (seeded), so those runs work offline too.
The axis-ratio ranges of smooth_cigar and edge_on_disk touch, so those two overlap a little, as they
do in the real data. Every image is seeded by (seed, index), so any subset is reproducible on its own.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from galaxy_finetune.core.classes import GALAXY_MNIST_CLASSES


def _sersic(r: np.ndarray, r_eff: float, n: float) -> np.ndarray:
    b_n = 2.0 * n - 1.0 / 3.0  # Ciotti & Bertin approximation, good for n > 0.5
    return np.exp(-b_n * ((r / r_eff) ** (1.0 / n) - 1.0))


def _frame(size: int, rng: np.random.Generator, axis_ratio: float):
    """Pixel grid rotated to a random position angle, centred within a pixel or two of the middle."""
    centre = (size - 1) / 2.0 + rng.normal(0.0, 1.0, size=2)
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    x, y = x - centre[0], y - centre[1]
    angle = rng.uniform(0.0, np.pi)
    major = x * np.cos(angle) + y * np.sin(angle)
    minor = -x * np.sin(angle) + y * np.cos(angle)
    radius = np.sqrt(major**2 + (minor / axis_ratio) ** 2) + 1e-3
    return major, minor, radius


def _colour(rng: np.random.Generator, red: bool) -> np.ndarray:
    """RGB weights: bulges and ellipticals are red, star-forming disks blue-ish (with scatter)."""
    base = np.array([1.0, 0.85, 0.65]) if red else np.array([0.8, 0.85, 1.0])
    return np.clip(base + rng.normal(0.0, 0.06, size=3), 0.3, 1.2)


def _components(label: int, size: int, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """Light profiles (H, W) with their RGB colours for one galaxy of class `label`."""
    scale = size / 64.0  # sizes are quoted for 64 px images
    r_eff = rng.uniform(4.0, 8.0) * scale
    if label == 0:  # smooth_round
        _, _, r = _frame(size, rng, rng.uniform(0.75, 1.0))
        return [(_sersic(r, r_eff * 1.6, rng.uniform(1.5, 3.5)), _colour(rng, red=True))]
    if label == 1:  # smooth_cigar
        _, _, r = _frame(size, rng, rng.uniform(0.22, 0.5))
        return [(_sersic(r, r_eff * 1.6, rng.uniform(1.0, 2.5)), _colour(rng, red=True))]
    if label == 2:  # edge_on_disk
        _, minor, r = _frame(size, rng, rng.uniform(0.08, 0.28))
        disk = _sersic(r, r_eff * 1.4, 1.0)
        if rng.random() < 0.5:  # dust lane along the major axis
            disk = disk * (1.0 - 0.6 * np.exp(-((minor / (0.6 * scale)) ** 2)))
        parts = [(disk, _colour(rng, red=False))]
        if rng.random() < 0.5:
            _, _, r_bulge = _frame(size, rng, rng.uniform(0.7, 1.0))
            parts.append((0.5 * _sersic(r_bulge, r_eff * 0.3, 4.0), _colour(rng, red=True)))
        return parts
    # unbarred_spiral
    major, minor, r = _frame(size, rng, rng.uniform(0.6, 1.0))
    n_arms = int(rng.integers(2, 4))
    pitch = np.deg2rad(rng.uniform(12.0, 30.0))
    phi = np.arctan2(minor, major)
    arms = 0.5 * (1.0 + np.cos(n_arms * (phi - np.log(r + 0.5) / np.tan(pitch)) + rng.uniform(0, 2 * np.pi)))
    disk = _sersic(r, r_eff * 1.5, 1.0) * (0.35 + 0.9 * arms**2)
    _, _, r_bulge = _frame(size, rng, rng.uniform(0.8, 1.0))
    bulge = 0.6 * _sersic(r_bulge, r_eff * 0.25, 3.0)
    return [(disk, _colour(rng, red=False)), (bulge, _colour(rng, red=True))]


def render_galaxy(label: int, seed: int, index: int, size: int = 64) -> np.ndarray:
    """One synthetic galaxy as an (size, size, 3) uint8 image, deterministic in (seed, index)."""
    rng = np.random.default_rng([seed, index])
    image = np.zeros((size, size, 3))
    for profile, colour in _components(label, size, rng):
        image += profile[..., None] * colour[None, None, :]
    image *= rng.uniform(0.5, 1.0) / max(image.max(), 1e-6)  # brightness
    psf_sigma = rng.uniform(0.7, 1.5) * size / 64.0
    image = gaussian_filter(image, sigma=(psf_sigma, psf_sigma, 0))
    image += rng.normal(0.0, rng.uniform(0.003, 0.012), size=image.shape)  # sky noise
    image = np.arcsinh(20.0 * np.clip(image, 0.0, None)) / np.arcsinh(20.0)  # survey-style asinh stretch
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def make_synthetic(n_per_class: int, seed: int, size: int = 64,
                   n_classes: int = len(GALAXY_MNIST_CLASSES)) -> tuple[np.ndarray, np.ndarray]:
    """A balanced set: images (N, size, size, 3) uint8 and labels (N,) int64, classes interleaved."""
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1, got {n_per_class}")
    labels = np.tile(np.arange(n_classes, dtype=np.int64), n_per_class)
    images = np.stack([render_galaxy(int(label), seed, i, size) for i, label in enumerate(labels)])
    return images, labels


def synthetic_votes(shapes: np.ndarray, questions: dict[str, tuple[str, ...]], seed: int) -> dict[str, np.ndarray]:
    """Volunteer vote counts (int64) for each answer column, drawn from each galaxy's shape class.

    Per question, every shape class has its own answer mix (seeded by (seed, question)); each galaxy scatters
    around its class's mix and gets up to 40 votes, all of them on the first question and a random share on the
    later ones (down the tree), some none at all, as in Galaxy Zoo."""
    shapes = np.asarray(shapes, dtype=np.int64)
    n_shapes = max(int(shapes.max(initial=0)) + 1, len(GALAXY_MNIST_CLASSES))
    out = {}
    for q, answers in enumerate(questions.values()):
        rng = np.random.default_rng([seed, 1, q])
        mix = rng.dirichlet(np.full(len(answers), 0.7), size=n_shapes)
        alpha = 20.0 * mix[shapes] + 0.1
        probs = rng.gamma(alpha)
        probs /= probs.sum(axis=1, keepdims=True)
        reach = np.ones(len(shapes)) if q == 0 else rng.uniform(-0.3, 1.0, size=len(shapes)).clip(0, 1)
        counts = rng.multinomial(np.round(40 * reach).astype(np.int64), probs)
        out.update({answer: counts[:, a].astype(np.int64) for a, answer in enumerate(answers)})
    return out


def synthetic_fractions(shapes: np.ndarray, label_cols: tuple[str, ...], seed: int) -> dict[str, np.ndarray]:
    """A value in [0, 1] for each target column (a stand-in vote fraction), drawn from each galaxy's shape class:
    per column every class has its own mean (seeded by (seed, column)), each galaxy scatters around it."""
    shapes = np.asarray(shapes, dtype=np.int64)
    n_shapes = max(int(shapes.max(initial=0)) + 1, len(GALAXY_MNIST_CLASSES))
    out = {}
    for c, col in enumerate(label_cols):
        rng = np.random.default_rng([seed, 2, c])
        means = rng.uniform(0.1, 0.9, size=n_shapes)
        out[col] = np.clip(means[shapes] + rng.normal(0.0, 0.08, size=len(shapes)), 0.0, 1.0)
    return out
