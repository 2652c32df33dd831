"""galaxy_finetune.analysis.figures: every PNG is written atomically with the run label and provenance, and draws
the numbers and galaxies it was given (read back from the matplotlib figure that was saved)."""
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from galaxy_finetune.analysis import figures
from galaxy_finetune.core import gallery
from galaxy_finetune.core.classes import GALAXY_MNIST_CLASSES
from galaxy_finetune.analysis.metrics import reliability

CLASSES = list(GALAXY_MNIST_CLASSES)
LABEL = "synthetic stand-in, 2000 galaxies | no pretraining: random convnext_nano"
STAMP = figures.Stamp(LABEL, "data: synthetic (sha256 0123456789) | encoder: random (convnext_nano) | device: cpu",
                      warn=True)


def check_png(path, title_part):
    assert path.is_file() and path.stat().st_size > 5000
    with Image.open(path) as image:
        assert image.size[0] > 400 and image.size[1] > 300
        assert image.info["Title"].endswith(f"[{LABEL}]") and title_part in image.info["Title"]
        assert image.info["Description"] == STAMP.footer
        pixels = np.asarray(image.convert("L"))
    assert pixels.std() > 5  # something was drawn
    assert not list(path.parent.glob(".*.tmp"))  # written atomically, no leftovers


@pytest.fixture
def drawn(monkeypatch):
    """The matplotlib figures figures.save wrote, in order: their artists are what the PNGs show."""
    saved, save = [], figures.save

    def recording(fig, path, stamp, title):
        saved.append(fig)
        save(fig, path, stamp, title)

    monkeypatch.setattr(figures, "save", recording)  # analyse's figures
    monkeypatch.setattr(gallery, "save", recording)  # the galaxy grids (core/gallery.py)
    return saved


def texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


@pytest.fixture
def sample():
    rng = np.random.default_rng(0)
    n = 200
    true = rng.integers(0, 4, n)
    probs = rng.dirichlet(np.ones(4) * 0.5, n)
    probs[np.arange(n), true] += 1.0
    probs /= probs.sum(1, keepdims=True)
    return true, probs


def test_confusion_matrix(tmp_path, drawn):
    counts = np.array([[90, 5, 5, 0], [2, 40, 150, 8], [1, 18, 80, 1], [0, 0, 3, 97]])
    figures.confusion_matrix(counts, CLASSES, 0.61, tmp_path / "confusion_matrix.png", STAMP, "Confusion matrix")
    check_png(tmp_path / "confusion_matrix.png", "Confusion matrix: accuracy 61.0%, n = 500")
    count_ax, recall_ax = drawn[0].axes[:2]
    np.testing.assert_array_equal(np.asarray(count_ax.collections[0].get_array()).reshape(4, 4), counts)
    assert texts(count_ax) == [str(c) for c in counts.ravel()]  # every cell annotated with its count
    recall = np.asarray(recall_ax.collections[0].get_array()).reshape(4, 4)
    np.testing.assert_allclose(recall, counts / counts.sum(1, keepdims=True))
    assert [x.get_text() for x in count_ax.get_yticklabels()] == CLASSES


def test_per_class_accuracy_with_a_class_without_galaxies(tmp_path, drawn):
    per_class = {c: {"accuracy": a, "accuracy_ci95_low": a and a - 0.05, "accuracy_ci95_high": a and min(a + 0.05, 1),
                     "support": 10 if a is not None else 0} for c, a in zip(CLASSES, [0.9, 0.5, None, 1.0])}
    figures.per_class_accuracy(per_class, CLASSES, 0.8, (0.75, 0.85), tmp_path / "p.png", STAMP, "Per-class accuracy")
    check_png(tmp_path / "p.png", "Per-class accuracy")
    ax = drawn[0].axes[0]
    assert [round(float(b.get_height()), 6) for b in ax.patches][-3:] == [0.9, 0.5, 1.0]  # the classes with galaxies
    assert texts(ax) == ["90.0%\nn = 10", "50.0%\nn = 10", "no test\ngalaxies", "100.0%\nn = 10"]


def test_confidence_and_residual_distributions(tmp_path, sample, drawn):
    true, probs = sample
    correct = probs.argmax(1) == true
    figures.confidence_distribution(probs.max(1), correct, 4, tmp_path / "c.png", STAMP, "Confidence")
    check_png(tmp_path / "c.png", "Confidence")
    labels = np.array(CLASSES)[true]
    labels[labels == "edge_on_disk"] = "smooth_round"  # one class with no galaxies still draws
    figures.residual_distribution(1 - probs[np.arange(len(true)), true], labels, CLASSES, tmp_path / "r.png", STAMP,
                                  "Residual distribution")
    check_png(tmp_path / "r.png", "Residual distribution")
    medians = [float(line.get_xdata()[0]) for line in drawn[0].axes[0].lines]
    assert medians == pytest.approx([np.median(probs.max(1)[correct])] + ([np.median(probs.max(1)[~correct])]
                                                                          if (~correct).any() else []))
    panels = {ax.get_title(): ax for ax in drawn[1].axes if ax.get_title()}
    assert set(panels) == set(CLASSES)
    assert sum(p.get_height() for p in panels["edge_on_disk"].patches) == 0  # the class without galaxies: empty
    assert sum(p.get_height() for p in panels["smooth_round"].patches) == pytest.approx(100)  # % of the class


def test_reliability_diagram_before_and_after(tmp_path, sample, drawn):
    true, probs = sample
    correct = probs.argmax(1) == true
    before = reliability(probs.max(1), correct, 15)
    after = reliability(probs.max(1) ** 1.5, correct, 15)
    figures.reliability_diagram(before, after, 0.05, 0.02, 1.7, tmp_path / "rel.png", STAMP, "Reliability")
    check_png(tmp_path / "rel.png", "Reliability")
    lines = {line.get_label(): line for line in drawn[0].axes[0].lines}
    np.testing.assert_allclose(lines["perfect calibration"].get_ydata(), lines["perfect calibration"].get_xdata())
    assert "T = 1.70" in " ".join(t for ax in drawn[0].axes for t in texts(ax) + [ax.get_title()] +
                                  [x.get_text() for x in (ax.get_legend().get_texts() if ax.get_legend() else [])])


def test_embedding_map_and_galaxy_grid(tmp_path, sample, drawn):
    true, probs = sample
    rng = np.random.default_rng(2)
    points = pd.DataFrame({"x": rng.normal(size=len(true)), "y": rng.normal(size=len(true)),
                           "true_label": np.array(CLASSES)[true], "correct": probs.argmax(1) == true})
    figures.embedding_map(points, CLASSES, "pca", tmp_path / "map.png", STAMP, "Map")
    check_png(tmp_path / "map.png", "Map")
    images = [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(6)]
    figures.galaxy_grid(images, [f"g{i}" for i in range(6)], [figures.CORRECT] * 6, tmp_path / "grid.png", STAMP,
                        "Unusual")
    check_png(tmp_path / "grid.png", "Unusual")
    counts = {c.get_label(): len(c.get_offsets()) for c in drawn[0].axes[0].collections}
    assert {c: counts[f"{c} (n = {n})"] for c, n in points["true_label"].value_counts().items()} == \
        points["true_label"].value_counts().to_dict()  # every galaxy drawn once, in its class
    shown = [im.get_array() for ax in drawn[1].axes for im in ax.images]
    assert len(shown) == 6 and all(np.array_equal(a, b) for a, b in zip(shown, images))
    assert [ax.get_title() for ax in drawn[1].axes if ax.images] == [f"g{i}" for i in range(6)]


@pytest.mark.parametrize("n_rows", [5, 2, 0])
def test_top_galaxies(tmp_path, n_rows, drawn):
    rng = np.random.default_rng(1)
    rows = pd.DataFrame({"id_str": [f"g{i}" for i in range(n_rows)], "true_label": ["smooth_cigar"] * n_rows,
                         "pred_label": ["edge_on_disk"] * n_rows, "confidence": [0.9] * n_rows})
    images = [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) if i % 2 else rng.integers(0, 255, (32, 32),
                                                                                            dtype=np.uint8)
              for i in range(n_rows)]
    probs = np.tile([0.02, 0.08, 0.9, 0.0], (n_rows, 1))
    figures.top_galaxies(rows, images, probs, CLASSES, tmp_path / "top.png", STAMP, "The 5 most confident mistakes")
    check_png(tmp_path / "top.png", "most confident mistakes")
    panels = [ax for ax in drawn[0].axes if ax.images]
    assert len(panels) == n_rows
    for i, ax in enumerate(panels):
        assert ax.get_title().startswith(f"#{i + 1} g{i}\ntrue: smooth_cigar\npred: edge_on_disk")
        shown = np.asarray(ax.images[0].get_array())
        assert np.array_equal(shown if images[i].ndim == 3 else shown[..., 0] if shown.ndim == 3 else shown,
                              images[i])


def test_training_curves(tmp_path, drawn):
    step = np.arange(1, 6) * 10
    curves = {"loss": {"finetuning/train": pd.DataFrame({"step": step, "value": [1.4, 1.1, 0.9, 0.8, 0.7]}),
                       "finetuning/val": pd.DataFrame({"step": step, "value": [1.3, 1.0, 0.95, 0.97, 0.99]})},
              "acc": {"finetuning/val": pd.DataFrame({"step": step, "value": [0.3, 0.5, 0.6, 0.6, 0.62]})}}
    figures.training_curves(curves, tmp_path / "t.png", STAMP, "Training curves")
    check_png(tmp_path / "t.png", "Training curves")
    plotted = [(line.get_label(), list(line.get_ydata())) for ax in drawn[0].axes for line in ax.lines]
    for metric, series in curves.items():  # every series, under its own name
        for name, frame in series.items():
            assert (name, frame["value"].tolist()) in plotted, (metric, name)
    figures.training_curves({}, tmp_path / "empty.png", STAMP, "Training curves")
    check_png(tmp_path / "empty.png", "Training curves")


def footer_pixels(tmp_path, stamp: figures.Stamp) -> np.ndarray:
    """(n, 3) RGB pixels of the footer text: where the figure differs from the same figure without a footer."""
    blank = figures.Stamp(stamp.label, " ", stamp.warn)
    images = []
    for name, which in (("with.png", stamp), ("without.png", blank)):
        figures.confusion_matrix(np.eye(4, dtype=int) * 5, CLASSES, 1.0, tmp_path / name, which, "Confusion matrix")
        with Image.open(tmp_path / name) as image:
            images.append(np.asarray(image.convert("RGB")).astype(int))
    changed = np.abs(images[0] - images[1]).sum(2) > 0
    ink = images[0][changed]
    return ink[ink.min(1) < 200]  # leave out the faintest anti-aliased edges


@pytest.mark.parametrize("warn", [False, True])
def test_footer_is_grey_for_the_real_run_and_red_otherwise_and_title_names_the_run(tmp_path, warn):
    label = "GalaxyMNIST, 10000 galaxies | pretrained: hf_hub:mwalmsley/zoobot-encoder-convnext_nano"
    stamp = figures.Stamp(label, "data: galaxy_mnist (sha256 0123456789) | encoder: hf_hub", warn=warn)
    ink = footer_pixels(tmp_path, stamp)
    with Image.open(tmp_path / "with.png") as image:
        assert image.info["Title"] == f"Confusion matrix: accuracy 100.0%, n = 20  [{label}]"
        assert image.info["Description"] == stamp.footer
    assert len(ink) > 100  # the footer's text
    darkest = ink[ink.sum(1).argmin()]
    reddish = (ink[:, 0] - ink[:, 1] > 20) & (ink[:, 0] - ink[:, 2] > 20)
    if warn:  # red, as figures.WRONG (#c92a2a), anti-aliased edges included
        assert reddish.mean() > 0.9
        assert abs(darkest[0] - 0xC9) < 30 and abs(darkest[1] - 0x2A) < 30
    else:  # neutral grey r = g = b, as matplotlib's "0.35"
        assert not reddish.any()
        assert (np.abs(ink - ink.mean(1, keepdims=True)).max(1) <= 2).all()
        assert abs(int(darkest[0]) - round(0.35 * 255)) < 15
