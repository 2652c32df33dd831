"""End to end, on the tiny two-commit pipeline run (`pipeline_two_runs`, tests/conftest.py): embeddings, galaxy-similar, anomalies,
calibration, selective prediction and the mistakes page, all read from what `dvc repro` wrote."""
import html.parser
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from galaxy_finetune.analysis.calibration import negative_log_likelihood
from galaxy_finetune.core.classes import GALAXY_MNIST_CLASSES
from galaxy_finetune.inference.embeddings import read_embeddings
from galaxy_finetune.core.neighbours import CosineIndex
from galaxy_finetune.inference.similar import SimilaritySearch, embed_image
from galaxy_finetune.inference.similar import main as similar_main
from tests.pipeline_repo import run

# with pytest-xdist: the modules that share the session's tiny dvc repro run on one worker
pytestmark = [pytest.mark.xdist_group("pipeline"), pytest.mark.slow]  # the tiny project's `dvc repro`

CLASSES = list(GALAXY_MNIST_CLASSES)
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def repo(pipeline_two_runs):
    return pipeline_two_runs


def read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"id_str": str})


def test_embeddings_cover_every_split_galaxy_in_order_as_float16(repo):
    repo, env = repo
    emb = read_embeddings(repo / "data/embeddings")
    splits = [read_csv(repo / f"data/splits/{s}.csv").assign(split=s) for s in ("train", "val", "test")]
    expected = pd.concat(splits, ignore_index=True)
    assert emb.galaxies["id_str"].tolist() == expected["id_str"].tolist()
    assert emb.galaxies["split"].tolist() == expected["split"].tolist()
    assert emb.galaxies["label_name"].tolist() == expected["label_name"].tolist()
    assert emb.galaxies["row"].tolist() == expected["row"].tolist()  # each galaxy's store row
    assert emb.features.dtype == np.float16 and emb.features.shape == (len(expected), 640)  # ConvNeXt-Nano pooled
    n_train = len(splits[0])
    assert emb.pca_features.shape == (len(expected), min(40, n_train))
    assert np.isfinite(emb.features.astype(np.float32)).all() and emb.features.astype(np.float32).std() > 0
    # the PCA is the train-fitted projection of the stored features
    assert emb.project(emb.features.astype(np.float32)) == pytest.approx(emb.pca_features, abs=1e-3)
    assert "changed" not in run(["dvc", "status", "embed"], repo, env).stdout


def test_every_galaxy_is_its_own_nearest_neighbour(repo):
    repo, _ = repo
    emb = read_embeddings(repo / "data/embeddings")
    _, rows = CosineIndex(emb.pca_features).search(emb.pca_features, 1)
    assert (rows[:, 0] == np.arange(len(emb.galaxies))).all()


def test_a_duplicated_image_is_its_own_neighbours_neighbour(repo, tmp_path):
    repo, _ = repo
    emb = read_embeddings(repo / "data/embeddings")
    catalog = read_csv(repo / "data/raw/catalog.csv").set_index("id_str")
    original = emb.galaxies["id_str"].iloc[emb.split("test")[0]]
    source = Path(catalog.loc[original, "src"])
    copy = tmp_path / f"copy{source.suffix}"
    shutil.copy(source, copy)
    _, query = embed_image(copy, repo / "models/finetuned", emb, accelerator="cpu")
    index = CosineIndex(np.vstack([emb.pca_features, query]))  # the copy joins the catalog as the last row
    copy_row, original_row = len(emb.galaxies), int(np.flatnonzero(emb.galaxies["id_str"] == original)[0])
    sim, rows = index.search(query, 2)
    assert set(rows[0]) == {copy_row, original_row} and sim[0][1] > 0.999
    _, rows = index.search(emb.pca_features[original_row], 2)
    assert set(rows[0]) == {copy_row, original_row}


def test_galaxy_similar_by_id_and_by_image(repo, tmp_path, monkeypatch):
    repo, env = repo
    emb = read_embeddings(repo / "data/embeddings")
    query = emb.galaxies["id_str"].iloc[0]
    proc = subprocess.run([sys.executable, "-m", "galaxy_finetune.inference.similar", query, "-k", "5", "-o",
                           str(tmp_path / "s.csv"), "--sheet", str(tmp_path / "s.png")], cwd=repo, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    table = read_csv(tmp_path / "s.csv")
    assert table["rank"].tolist() == [1, 2, 3, 4, 5] and query not in set(table["id_str"])
    assert table["similarity"].is_monotonic_decreasing
    expected = SimilaritySearch(emb).like_galaxy(query, 5)
    assert table["id_str"].tolist() == expected["id_str"].tolist()
    with Image.open(tmp_path / "s.png") as sheet:
        assert sheet.size[0] > 600 and "most like" in sheet.info["Title"]
    image = read_csv(repo / "data/raw/catalog.csv").set_index("id_str").loc[query, "src"]
    # by image: galaxy-similar in this process (the command line itself ran just above), in the repo as a user runs it
    monkeypatch.chdir(repo)
    similar_main([str(image), "-k", "3", "-o", str(tmp_path / "i.csv"), "--sheet", str(tmp_path / "i.png"),
                  "--accelerator", "cpu"])
    assert read_csv(tmp_path / "i.csv")["id_str"].iloc[0] == query  # the file's own galaxy comes first
    proc = subprocess.run([sys.executable, "-m", "galaxy_finetune.inference.similar", "no-such-galaxy"], cwd=repo, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.startswith("error: no-such-galaxy: neither a galaxy id")


def test_anomalies_rank_every_test_galaxy_against_train(repo):
    repo, _ = repo
    anomalies = read_csv(repo / "metrics/anomalies.csv")
    test = read_csv(repo / "data/predictions/test.csv")
    train = set(read_csv(repo / "data/splits/train.csv")["id_str"])
    assert sorted(anomalies["id_str"]) == sorted(test["id_str"])
    assert anomalies["anomaly_score"].is_monotonic_decreasing
    assert set(anomalies["nearest_train_id"]) <= train
    metrics = json.loads((repo / "metrics/metrics.json").read_text())
    assert metrics["anomalies"]["most_unusual"] == anomalies["id_str"].head(3).tolist()


def test_temperature_lowers_the_validation_log_loss(repo):
    repo, _ = repo
    calibration = json.loads((repo / "metrics/metrics.json").read_text())["calibration"]
    val = read_csv(repo / "data/predictions/val.csv")
    probs = val[[f"p_{c}" for c in CLASSES]].to_numpy()
    probs /= probs.sum(1, keepdims=True)
    y = val["true_label"].map({c: i for i, c in enumerate(CLASSES)}).to_numpy()
    before, after = negative_log_likelihood(probs, y), negative_log_likelihood(probs, y, calibration["temperature"])
    assert calibration["val"]["log_loss_before"] == pytest.approx(before, rel=1e-6)
    assert calibration["val"]["log_loss_after"] == pytest.approx(after, rel=1e-6)
    assert after < before and calibration["temperature"] != 1.0


def test_full_coverage_is_the_accuracy(repo):
    repo, _ = repo
    coverage = pd.read_csv(repo / "metrics/coverage.csv")
    test = read_csv(repo / "data/predictions/test.csv")
    metrics = json.loads((repo / "metrics/metrics.json").read_text())
    assert coverage["coverage"].iloc[-1] == 1.0 and coverage["kept"].iloc[-1] == len(test)
    assert coverage["accuracy"].iloc[-1] == pytest.approx((test["true_label"] == test["pred_label"]).mean(), abs=1e-6)
    assert coverage["accuracy"].iloc[-1] == pytest.approx(metrics["accuracy"], abs=1e-6)
    for name in CLASSES:
        for target in ("precision_95", "precision_99"):
            cut = metrics["selective"]["thresholds"][name][target]
            assert set(cut) == {"threshold", "val", "test"}


class MistakeCards(html.parser.HTMLParser):
    """The mistake cards (data-id, data-true, data-pred) and the cell headings, in page order, with every src/href
    up to the section of labels that look wrong; that section's cards (data-id) in `suspects`."""

    def __init__(self):
        super().__init__()
        self.cards, self.cells, self.links, self.suspects, self.in_suspects = [], [], [], [], False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "h2" and attrs.get("id") == "suspect-labels":
            self.in_suspects = True
        if self.in_suspects:
            if tag == "div" and attrs.get("class") == "mistake suspect":
                self.suspects.append(attrs["data-id"])
            return
        if tag == "div" and attrs.get("class") == "mistake":
            self.cards.append((attrs["data-id"], attrs["data-true"], attrs["data-pred"]))
        if tag == "h2":
            self.cells.append((attrs["data-true"], attrs["data-pred"]))
        self.links += [attrs[key] for key in ("src", "href") if key in attrs]


def test_errors_page_lists_exactly_the_mistakes_largest_cell_first(repo):
    repo, _ = repo
    page = (repo / "reports/errors.html").read_text()
    parser = MistakeCards()
    parser.feed(page)
    test = read_csv(repo / "data/predictions/test.csv")
    wrong = test[test["true_label"] != test["pred_label"]]
    assert sorted(parser.cards) == sorted(zip(wrong["id_str"], wrong["true_label"], wrong["pred_label"]))
    sizes = [sum(1 for card in parser.cards if card[1:] == cell) for cell in parser.cells]
    assert sizes == sorted(sizes, reverse=True) and sum(sizes) == len(wrong)
    images = [link for link in parser.links if not link.startswith("#")]
    assert len(images) == len(wrong) and all(link.startswith("data:image/png;base64,") for link in images)
    assert "<script" not in page and "http" not in page  # offline and self-contained
    flagged = read_csv(repo / "metrics/label_budget/label_issues.csv")
    assert parser.suspects == flagged["id_str"].head(60).tolist()  # the labels that look wrong, most suspect first
    assert "](errors.html)" in (repo / "reports/summary.md").read_text()


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no /usr/bin/chromium (apt-get install chromium)")
def test_errors_page_renders_in_headless_chromium(repo, tmp_path):
    repo, _ = repo
    page = (repo / "reports/errors.html").as_uri()
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
             "--disable-background-networking", "--proxy-server=127.0.0.1:9", f"--user-data-dir={tmp_path / 'p'}"]
    dom = subprocess.run([*flags, "--dump-dom", page], capture_output=True, text=True, timeout=120).stdout
    test = read_csv(repo / "data/predictions/test.csv")
    n_wrong = int((test["true_label"] != test["pred_label"]).sum())
    assert dom.count('class="mistake"') == n_wrong and "Every test-set mistake" in dom
    shot = tmp_path / "shot.png"
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1200,900", page], capture_output=True,
                   timeout=120)
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("L"))
    assert pixels.shape == (900, 1200) and (pixels < 128).mean() > 0.005  # text and thumbnails were drawn
