"""Issue 10 end to end: an own catalog of FITS cutouts (one-band and three-band, plain and gzipped) through every
dvc.yaml stage command (in one process: tests/stage_runner.py), offline with the default (Hugging Face) encoder:
the catalog is used, only the weights stand in.

Issue 15: the catalog's ids include text a CSV reader would take for a missing value or a number (NA, nan,
None, null, N/A, 007...); every table the run writes must carry them as written."""
import csv
import html.parser
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from galaxy_finetune.data.images import decode_image
from galaxy_finetune.inference.classify import main as classify_main
from galaxy_finetune.inference.similar import main as similar_main
from galaxy_finetune.core.params import Params
from tests.pipeline_repo import make_repo, repro_and_commit

pytestmark = pytest.mark.slow  # an own FITS catalog's whole DAG, and the CLIs

CLASSES = ["round", "elongated"]
# not the defaults (bands [2, 1, 0], stretch 0.3, q 3): galaxy-classify and galaxy-similar must decode new FITS
# files with the view the store used, which model.json records
FITS_VIEW = {"fits_bands": [0, 1, 2], "fits_stretch": 0.4, "fits_q": 4.0}
# the canonical test set (rows 0-7, four per class) holds the ids of the review; more such ids train
TEST_IDS = ["NA", "nan", "None", "null", "N/A", "007", "J0006+0000", "J0007+0000"]
OTHER_IDS = {8: "NaN", 9: "NULL", 10: "n/a", 11: "#N/A", 12: "1.0", 13: "0042"}
IDS = TEST_IDS + [OTHER_IDS.get(i, f"J{i:04d}+0000") for i in range(len(TEST_IDS), 40)]


def _cutout(rng, label: int, bands: int, size: int = 32) -> np.ndarray:
    """A galaxy on sky noise in arbitrary flux units: round (class 0) or elongated (class 1)."""
    y, x = np.mgrid[:size, :size] - size / 2
    axis = 1.0 if label == 0 else 3.0
    angle = rng.uniform(0, np.pi)
    u, v = x * np.cos(angle) + y * np.sin(angle), -x * np.sin(angle) + y * np.cos(angle)
    light = rng.uniform(50, 150) * np.exp(-np.hypot(u, v * axis) / 3)
    planes = [light * w + rng.normal(0, 1, light.shape) for w in (0.6, 1.0, 1.3)[:bands]]
    return np.stack(planes) if bands == 3 else planes[0]


@pytest.fixture(scope="module")
def fits_repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("fits")
    folder, rng, rows = root / "cutouts", np.random.default_rng(0), []
    folder.mkdir()
    for i in range(40):
        label, bands = i % 2, 1 if i % 4 < 2 else 3
        name = f"g{i:02d}.fits" + (".gz" if bands == 3 else "")
        fits.PrimaryHDU(_cutout(rng, label, bands).astype(np.float32)).writeto(folder / name)
        rows.append({"id_str": IDS[i], "file_loc": name, "label": CLASSES[label],
                     "split": "test" if IDS[i] in TEST_IDS else ""})
    pd.DataFrame(rows).to_csv(folder / "catalog.csv", index=False)
    repo, env = make_repo(root / "repo", {
        "data": {"source": "catalog", "catalog": str(folder / "catalog.csv"), "classes": CLASSES, **FITS_VIEW},
        "scratch": {"input_size": 32, "epochs": 2, "batch_size": 8, "patience": 2}})
    return repo, env, repro_and_commit(repo, env, "fits run", in_one_process=True), folder


def test_the_own_catalog_is_used_and_only_the_weights_stand_in(fits_repo):
    repo, _, output, _ = fits_repo
    manifest = json.loads((repo / "data/raw/manifest.json").read_text())
    assert manifest["run_label"] == "own catalog, 40 galaxies | no pretraining: random ConvNeXt-Nano"
    assert manifest["source"] == "catalog" and not manifest["data"]["substituted"]
    assert len(manifest["substitutions"]) == 1 and "hf_hub:" in manifest["substitutions"][0]
    recipe = json.loads((repo / "metrics/recipe.json").read_text())
    assert recipe["recipe"] == "scratch" and recipe["pretrained"] is False and recipe["input_size"] == 32
    assert "the from-scratch recipe (scratch.*)" in output
    metrics = json.loads((repo / "metrics/metrics.json").read_text())
    assert metrics["provenance"]["run_label"] == manifest["run_label"]
    assert not re.search(r"\bfull\b", (repo / "reports/summary.md").read_text().split("## ")[0])


def test_one_and_three_band_cutouts_are_stored_as_decode_image_renders_them(fits_repo):
    repo, _, _, folder = fits_repo
    store = np.load(repo / "data/store/images.npy", mmap_mode="r")
    catalog = pd.read_csv(repo / "data/raw/catalog.csv")
    assert store.shape == (40, 32, 32, 3)
    view = Params.model_validate({"data": FITS_VIEW}).data.fits_view()
    assert view != Params.model_validate({}).data.fits_view()
    for row in (0, 2):  # a one-band .fits, a three-band .fits.gz
        np.testing.assert_array_equal(store[row], decode_image(catalog["src"][row], 32, fits=view))
    one_band, three_band = store[0].astype(int), store[2].astype(int)
    assert (one_band[..., 0] == one_band[..., 1]).all() and (one_band[..., 1] == one_band[..., 2]).all()
    assert (three_band[..., 0] != three_band[..., 2]).any()  # a colour composite, not grey
    assert one_band.max() > 200 and np.median(one_band) < 60  # a bright core on a dark sky: the stretch worked


def test_the_figures_show_the_fits_galaxies(fits_repo, tmp_path, monkeypatch):
    """analyse, rerun in-process on the run's own inputs: each galaxy panel of the top-5 figures and of the
    unusual galaxies is the stored (FITS-decoded) pixels of the galaxy its caption names."""
    from galaxy_finetune.analysis import figures
    from galaxy_finetune.analysis.analyse import analyse
    from galaxy_finetune.analysis.common import Inputs, Outputs
    from galaxy_finetune.core.params import AnalyseParams

    repo = fits_repo[0]
    from galaxy_finetune.core import gallery

    drawn, save = {}, gallery.save
    recording = lambda fig, path, stamp, title: (drawn.__setitem__(Path(path).name, fig), save(fig, path, stamp, title))
    monkeypatch.setattr(figures, "save", recording)  # analyse's figures
    monkeypatch.setattr(gallery, "save", recording)  # the galaxy grids
    inputs = Inputs(repo / "data/predictions/test.csv", repo / "data/predictions/val.csv", None, repo / "data/raw",
                    repo / "data/store", repo / "models/finetuned", repo / "metrics/training", repo / "data/embeddings")
    out = Outputs(*(tmp_path / n for n in ("m.json", "r.json", "c.csv", "map.csv", "a.csv", "plots", "s.md", "e.html")))
    analyse(inputs, AnalyseParams(bootstrap_samples=20), out)
    store = np.load(repo / "data/store/images.npy", mmap_mode="r")
    row_of = dict(zip(column(repo / "data/raw/catalog.csv", "id_str"), range(len(IDS))))
    checked = 0
    for name in ("top_5_predictions.png", "top_5_errors.png", "unusual_galaxies.png"):
        for ax in drawn[name].axes:
            if ax.images:
                galaxy = re.match(r"#\d+ (\S+)", ax.get_title()).group(1)
                np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), store[row_of[galaxy]])
                checked += 1
    test = as_written(repo / "data/predictions/test.csv")
    mistakes = sum(row["true_label"] != row["pred_label"] for row in test)
    # the most confident correct predictions, the most confident mistakes, the most unusual test galaxies
    assert checked == min(5, len(test) - mistakes) + min(5, mistakes) + min(figures.GALLERY, len(test))
    assert (out.plots / "top_5_errors.png").is_file()


def as_written(path) -> list[dict]:
    """The rows of a CSV as plain text (the csv module reinterprets nothing)."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def column(path, name: str) -> list[str]:
    return [row[name] for row in as_written(path)]


class MistakeIds(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "div" and attrs.get("class") == "mistake":
            self.ids.append(attrs["data-id"])


def test_ids_are_carried_as_written_through_every_table(fits_repo):
    repo = fits_repo[0]
    assert column(repo / "data/raw/catalog.csv", "id_str") == IDS
    splits = {s: column(repo / f"data/splits/{s}.csv", "id_str") for s in ("train", "val", "test")}
    assert sorted(splits["test"]) == sorted(TEST_IDS) and sorted(sum(splits.values(), [])) == sorted(IDS)
    assert column(repo / "data/embeddings/galaxies.csv", "id_str") == sum(splits.values(), [])
    for split in ("test", "val"):
        predictions = as_written(repo / f"data/predictions/{split}.csv")
        assert [row["id_str"] for row in predictions] == splits[split]
        assert all(IDS[int(row["row"])] == row["id_str"] for row in predictions)  # each id with its own galaxy
    assert sorted(column(repo / "metrics/anomalies.csv", "id_str")) == sorted(TEST_IDS)
    assert set(column(repo / "metrics/anomalies.csv", "nearest_train_id")) <= set(splits["train"])
    assert sorted(column(repo / "metrics/embedding_map.csv", "id_str")) == sorted(TEST_IDS)
    residuals = json.loads((repo / "metrics/residuals.json").read_text())
    assert sorted(row["id_str"] for row in residuals) == sorted(TEST_IDS)
    metrics = json.loads((repo / "metrics/metrics.json").read_text())
    assert set(metrics["anomalies"]["most_unusual"]) <= set(TEST_IDS)
    page = MistakeIds()
    page.feed((repo / "reports/errors.html").read_text())
    wrong = [row["id_str"] for row in as_written(repo / "data/predictions/test.csv")
             if row["true_label"] != row["pred_label"]]
    assert sorted(page.ids) == sorted(wrong)


@pytest.mark.parametrize("query", ["NA", "null", "0042"])
def test_galaxy_similar_finds_a_galaxy_by_an_id_a_reader_could_misread(fits_repo, tmp_path, monkeypatch, query):
    """galaxy-similar in this process (the command line runs in test_explore_e2e.py), in the run's folder."""
    monkeypatch.chdir(fits_repo[0])
    similar_main([query, "-k", "3", "-o", str(tmp_path / "s.csv"), "--sheet", str(tmp_path / "s.png")])
    found = column(tmp_path / "s.csv", "id_str")
    assert len(found) == 3 and query not in found and set(found) <= set(IDS)


def test_galaxy_classify_and_similar_decode_new_fits_files_as_the_store_did(fits_repo, tmp_path, monkeypatch):
    """model.json carries the store's FITS view: galaxy-classify on the test galaxies' own FITS files gives the
    predict stage's probabilities, and galaxy-similar finds each file's own galaxy, at similarity 1 (both commands
    in this process, in the run's folder; their command lines run in test_targets_e2e.py)."""
    repo, _, _, folder = fits_repo
    monkeypatch.chdir(repo)
    config = json.loads((repo / "models/finetuned/model.json").read_text())
    assert config["fits_view"] == {"bands": FITS_VIEW["fits_bands"], "stretch": FITS_VIEW["fits_stretch"],
                                   "q": FITS_VIEW["fits_q"]}
    rows = [row for row in as_written(folder / "catalog.csv") if row["id_str"] in TEST_IDS]
    pd.DataFrame({"id_str": [r["id_str"] for r in rows], "file_loc": [r["file_loc"] for r in rows]}).to_csv(
        folder / "new.csv", index=False)
    classify_main(["models/finetuned", str(folder / "new.csv"), "-o", str(tmp_path / "new.csv"), "--accelerator", "cpu"])
    new = pd.read_csv(tmp_path / "new.csv", keep_default_na=False).set_index("id_str")
    stage = pd.read_csv(repo / "data/predictions/test.csv", keep_default_na=False).set_index("id_str")
    probs = [f"p_{c}" for c in CLASSES]
    np.testing.assert_allclose(new.loc[stage.index, probs].to_numpy(), stage[probs].to_numpy(), atol=2e-6)
    query = folder / rows[0]["file_loc"]
    similar_main([str(query), "-k", "1", "-o", str(tmp_path / "s.csv"), "--sheet", str(tmp_path / "s.png")])
    found = as_written(tmp_path / "s.csv")[0]
    assert found["id_str"] == rows[0]["id_str"] and float(found["similarity"]) > 0.999
