"""galaxy_finetune.figures: every PNG is written, non-empty, and carries the profile and provenance."""
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from galaxy_finetune import figures
from galaxy_finetune.classes import GALAXY_MNIST_CLASSES
from galaxy_finetune.metrics import reliability

CLASSES = list(GALAXY_MNIST_CLASSES)
STAMP = figures.Stamp("quickstart", "profile: quickstart | data: synthetic (sha256 0123456789) | "
                                    "encoder: random (convnext_nano) | device: cpu")


def check_png(path, title_part):
    assert path.is_file() and path.stat().st_size > 5000
    with Image.open(path) as image:
        assert image.size[0] > 400 and image.size[1] > 300
        assert "quickstart profile" in image.info["Title"] and title_part in image.info["Title"]
        assert image.info["Description"] == STAMP.footer
        pixels = np.asarray(image.convert("L"))
    assert pixels.std() > 5  # something was drawn
    assert not list(path.parent.glob(".*.tmp"))  # written atomically, no leftovers


@pytest.fixture
def sample():
    rng = np.random.default_rng(0)
    n = 200
    true = rng.integers(0, 4, n)
    probs = rng.dirichlet(np.ones(4) * 0.5, n)
    probs[np.arange(n), true] += 1.0
    probs /= probs.sum(1, keepdims=True)
    return true, probs


def test_confusion_matrix(tmp_path):
    counts = np.array([[90, 5, 5, 0], [2, 40, 150, 8], [1, 18, 80, 1], [0, 0, 3, 97]])
    figures.confusion_matrix(counts, CLASSES, tmp_path / "confusion_matrix.png", STAMP, 0.61)
    check_png(tmp_path / "confusion_matrix.png", "confusion matrix")


def test_per_class_accuracy_with_a_class_without_galaxies(tmp_path):
    per_class = {c: {"accuracy": a, "accuracy_ci95_low": a and a - 0.05, "accuracy_ci95_high": a and min(a + 0.05, 1),
                     "support": 10 if a is not None else 0} for c, a in zip(CLASSES, [0.9, 0.5, None, 1.0])}
    figures.per_class_accuracy(per_class, CLASSES, 0.8, (0.75, 0.85), tmp_path / "p.png", STAMP)
    check_png(tmp_path / "p.png", "Per-class accuracy")


def test_confidence_and_residual_distributions(tmp_path, sample):
    true, probs = sample
    correct = probs.argmax(1) == true
    figures.confidence_distribution(probs.max(1), correct, 4, tmp_path / "c.png", STAMP)
    check_png(tmp_path / "c.png", "Confidence")
    labels = np.array(CLASSES)[true]
    labels[labels == "edge_on_disk"] = "smooth_round"  # one class with no galaxies still draws
    figures.residual_distribution(1 - probs[np.arange(len(true)), true], labels, CLASSES, tmp_path / "r.png", STAMP)
    check_png(tmp_path / "r.png", "Residual distribution")


def test_reliability_diagram(tmp_path, sample):
    true, probs = sample
    correct = probs.argmax(1) == true
    figures.reliability_diagram(reliability(probs.max(1), correct, 15), 0.05, tmp_path / "rel.png", STAMP)
    check_png(tmp_path / "rel.png", "Reliability")


@pytest.mark.parametrize("n_rows", [5, 2, 0])
def test_top_galaxies(tmp_path, n_rows):
    rng = np.random.default_rng(1)
    rows = pd.DataFrame({"id_str": [f"g{i}" for i in range(n_rows)], "true_label": ["smooth_cigar"] * n_rows,
                         "pred_label": ["edge_on_disk"] * n_rows, "confidence": [0.9] * n_rows})
    images = [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) if i % 2 else rng.integers(0, 255, (32, 32),
                                                                                            dtype=np.uint8)
              for i in range(n_rows)]
    probs = np.tile([0.02, 0.08, 0.9, 0.0], (n_rows, 1))
    figures.top_galaxies(rows, images, probs, CLASSES, tmp_path / "top.png", STAMP, "The 5 most confident mistakes")
    check_png(tmp_path / "top.png", "most confident mistakes")


def test_training_curves(tmp_path):
    step = np.arange(1, 6) * 10
    curves = {"loss": {"finetuning/train": pd.DataFrame({"step": step, "value": [1.4, 1.1, 0.9, 0.8, 0.7]}),
                       "finetuning/val": pd.DataFrame({"step": step, "value": [1.3, 1.0, 0.95, 0.97, 0.99]})},
              "acc": {"finetuning/val": pd.DataFrame({"step": step, "value": [0.3, 0.5, 0.6, 0.6, 0.62]})}}
    figures.training_curves(curves, tmp_path / "t.png", STAMP)
    check_png(tmp_path / "t.png", "Training curves")
    figures.training_curves({}, tmp_path / "empty.png", STAMP)
    check_png(tmp_path / "empty.png", "Training curves")


def test_full_profile_footer_is_grey_and_title_says_full(tmp_path):
    stamp = figures.Stamp("full", "profile: full | data: galaxy_mnist")
    figures.confusion_matrix(np.eye(4, dtype=int) * 5, CLASSES, tmp_path / "cm.png", stamp, 1.0)
    with Image.open(tmp_path / "cm.png") as image:
        assert "[full profile]" in image.info["Title"]
