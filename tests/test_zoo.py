"""galaxy_finetune.data.zoo: galaxy-datasets' datasets by name, on fabricated files in the library's own layout.

Nothing here reaches the network: the official files are fabricated with the names the library lists, put in
data.local_dir, and passed as `resources` with their real md5s (URLs pointing at a port nobody listens on).
"""
from __future__ import annotations

import hashlib
import os
import socket
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from galaxy_finetune.core.errors import PipelineError
from galaxy_finetune.core.files import read_json
from galaxy_finetune.core.layout import CATALOG, SOURCE
from galaxy_finetune.core.params import Params, load_params
from galaxy_finetune.core.task import Task, named_schema_questions
from galaxy_finetune.data import sources, zoo
from galaxy_finetune.data.download import Unreachable
from galaxy_finetune.data.fetch import fetch_data, run_task
from galaxy_finetune.data.sources import CATALOG_COLUMNS, Resource

GZ2_QUESTIONS = named_schema_questions("gz2_ortho_schema")
GZ2_COLS = [c for answers in GZ2_QUESTIONS.values() for c in answers]
VOTES = Task("votes", questions=GZ2_QUESTIONS)


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No download may happen, and no pretrained weights are looked for."""
    from huggingface_hub import constants

    monkeypatch.setenv("GALAXY_FINETUNE_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-empty"))


def md5_of(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def fabricate(folder: Path, name: str, rows: dict[str, list[dict]], subfolder: bool) -> tuple[Resource, ...]:
    """`name`'s three official files in `folder` (catalogs named as the library lists them, a tar.gz of images/...),
    each row's image drawn; returns the library's resources with these files' md5s and a dead URL."""
    folder.mkdir(parents=True, exist_ok=True)
    train, test, archive = zoo._split_files(name, zoo.library_resources(name))
    build = folder / "_build"
    rng = np.random.default_rng(0)
    for split, resource in (("train", train), ("test", test)):
        for row in rows[split]:
            path = build / "images" / (row["subfolder"] if subfolder else "") / row["filename"]
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(path)
        pd.DataFrame(rows[split]).to_parquet(folder / resource.filename, index=False)
    with tarfile.open(folder / archive.filename, "w:gz") as tar:
        tar.add(build / "images", arcname="images")
    for path in sorted(build.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    build.rmdir()
    return tuple(Resource(f"http://127.0.0.1:9/{r.filename}", md5_of(folder / r.filename))
                 for r in (train, test, archive))


def gz2_rows(n_train: int = 4, n_test: int = 2, drop: str | None = None) -> dict[str, list[dict]]:
    """gz2 catalog rows: id_str, subfolder, filename and every answer's count, the later questions' NaN for some
    galaxies (nobody was asked)."""
    rows, k = {"train": [], "test": []}, 0
    for split, n in (("train", n_train), ("test", n_test)):
        for _ in range(n):
            counts = {c: float(k + i) for i, c in enumerate(GZ2_COLS)}
            if k % 2:
                counts.update({c: np.nan for c in GZ2_COLS[5:]})
            row = {"id_str": f"58772298{k:04d}", "subfolder": "587722", "filename": f"58772298{k:04d}.jpg", **counts}
            if drop:
                row.pop(drop)
            rows[split].append(row)
            k += 1
    return rows


def demo_rings_rows() -> dict[str, list[dict]]:
    return {split: [{"id_str": f"{split}_{i}", "subfolder": "313982", "filename": f"313982_{split}{i}.jpg",
                     "ring": i % 2} for i in range(n)] for split, n in (("train", 4), ("test", 2))}


def _params(tmp_path, **data) -> Params:
    train = {"task": data.pop("task")} if "task" in data else {}
    return Params.model_validate({"data": {"synthetic_n_per_class": 3, "synthetic_image_size": 32, **data},
                                  "train": train, "model": {"encoder": "random"}})


def _fetch(params, tmp_path):
    return fetch_data(params, tmp_path / "raw", tmp_path / "encoder", cache=tmp_path / "cache")


# --- the library's own file lists -------------------------------------------------------------------------

def test_gz2_resources_are_the_librarys_three_files_and_listing_touches_nothing(monkeypatch):
    def no(*args, **kwargs):
        raise AssertionError("listing the resources must not open a socket or read a file")

    monkeypatch.setattr(socket.socket, "connect", no)
    monkeypatch.setattr(pd, "read_parquet", no)
    resources = zoo.library_resources("gz2")
    assert [r.filename for r in resources] == ["gz2_train_catalog.parquet", "gz2_test_catalog.parquet",
                                               "images_gz2.tar.gz"]
    assert all(r.url.startswith("https://") and len(r.md5) == 32 for r in resources)
    assert not os.path.exists(os.path.join(os.sep, "nonexistent"))


@pytest.mark.parametrize("name", zoo.PUBLIC)
def test_every_public_dataset_lists_two_catalogs_and_an_archive(name):
    train, _, archive = zoo._split_files(name, zoo.library_resources(name))
    assert train.filename.endswith("_train_catalog.parquet") and archive.filename.endswith(".tar.gz")
    assert (archive.md5 is None) == (name == "gz_hubble")  # the one file published without an md5


@pytest.mark.parametrize("name", zoo.INTERNAL)
def test_an_internal_dataset_is_one_line(name, tmp_path):
    for call in (lambda: zoo.library_resources(name), lambda: zoo.dataset(name, VOTES, tmp_path)):
        with pytest.raises(PipelineError) as err:
            call()
        msg = str(err.value)
        assert "\n" not in msg and msg.startswith(name) and "internal to the Zoobot team" in msg
        assert "data.source: catalog" in msg
    path = tmp_path / "params.yaml"
    path.write_text(f"data:\n  source: {name}\n")
    with pytest.raises(PipelineError, match="internal to the Zoobot team") as err:
        load_params(path)
    assert "\n" not in str(err.value) and f"data.source: {name}:" in str(err.value)


def test_an_unknown_source_is_one_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("data:\n  source: gz3\n")
    with pytest.raises(PipelineError, match=r"data.source: 'gz3' is not a source; use one of gz2, ") as err:
        load_params(path)
    assert "\n" not in str(err.value)


# --- gz2: vote counts ---------------------------------------------------------------------------------------

def test_gz2_from_local_files_keeps_every_answer_count(tmp_path):
    local = tmp_path / "local"
    resources = fabricate(local, "gz2", gz2_rows(), subfolder=True)
    cache = tmp_path / "cache"
    raw = zoo.dataset("gz2", VOTES, cache, str(local), timeout=1, retries=1, resources=resources)
    cat = raw.catalog
    assert list(cat.columns) == ["id_str", "label", "split", "src", *GZ2_COLS]
    assert list(cat["split"]) == ["train"] * 4 + ["test"] * 2 and (cat["label"] == -1).all() and raw.classes == ()
    assert list(cat["id_str"]) == [f"58772298{k:04d}" for k in range(6)]
    counts = cat[GZ2_COLS]
    assert (counts.dtypes == np.int64).all() and (counts >= 0).all().all()
    assert counts.iloc[1, 5:].eq(0).all() and counts.iloc[2, 5] == 2 + 5  # NaN (not asked) -> 0, others kept
    unpacked = cache / f"images-{resources[2].md5}" / "images" / "587722"
    assert all(Path(p).parent == unpacked and Path(p).is_file() for p in cat["src"])  # the real files, no links
    # the library's own layout, as links: catalogs at the root, images/ -> the unpacked archive
    root = Path(raw.record["root"])
    assert sorted(os.listdir(root)) == ["gz2_test_catalog.parquet", "gz2_train_catalog.parquet", "images"]
    assert os.readlink(root / "gz2_train_catalog.parquet") == str(local / "gz2_train_catalog.parquet")
    assert [r["md5"] for r in raw.record["resources"]] == [r.md5 for r in resources]
    catalog = sources.canonical_catalog(raw, VOTES)
    assert list(catalog.columns) == CATALOG_COLUMNS + GZ2_COLS and (catalog["label_name"] == "").all()


def test_gz2_votes_through_fetch_data_write_the_counts_and_the_task(tmp_path, monkeypatch):
    local = tmp_path / "local"
    resources = fabricate(local, "gz2", gz2_rows(), subfolder=True)
    monkeypatch.setattr(zoo, "library_resources", lambda name: resources)
    manifest = _fetch(_params(tmp_path, source="gz2", task="votes", local_dir=str(local)), tmp_path)
    assert not manifest["data"]["substituted"] and manifest["task"] == "votes"
    catalog = pd.read_csv(tmp_path / "raw" / CATALOG)
    assert list(catalog.columns) == CATALOG_COLUMNS + GZ2_COLS and len(catalog) == 6
    assert (catalog["label"] == -1).all() and catalog["label_name"].isna().all()
    source = read_json(tmp_path / "raw" / SOURCE)
    assert source["source"] == "gz2" and source["schema"] == "gz2_ortho_schema" and source["classes"] == []
    assert source["task"]["kind"] == "votes" and source["task"]["label_cols"] == GZ2_COLS
    assert source["task"]["questions"] == {q: list(a) for q, a in GZ2_QUESTIONS.items()}


def test_a_missing_vote_column_is_one_line_naming_it(tmp_path):
    local = tmp_path / "local"
    missing = GZ2_COLS[7]
    resources = fabricate(local, "gz2", gz2_rows(drop=missing), subfolder=True)
    with pytest.raises(PipelineError) as err:
        zoo.dataset("gz2", VOTES, tmp_path / "cache", str(local), resources=resources)
    msg = str(err.value)
    assert "\n" not in msg and missing in msg and "gz2_train_catalog.parquet" in msg and "data.schema" in msg


def test_a_negative_or_fractional_count_is_one_line(tmp_path):
    local = tmp_path / "local"
    rows = gz2_rows()
    rows["test"][1][GZ2_COLS[2]] = 2.5
    resources = fabricate(local, "gz2", rows, subfolder=True)
    with pytest.raises(PipelineError, match=rf"gz2_test_catalog.parquet: column '{GZ2_COLS[2]}', row 1: 2.5 is not "
                                            r"a whole vote count >= 0"):
        zoo.dataset("gz2", VOTES, tmp_path / "cache", str(local), resources=resources)


def test_a_wrong_schema_name_is_one_line_naming_it(tmp_path):
    with pytest.raises(PipelineError) as err:
        _fetch(_params(tmp_path, source="gz2", task="votes", schema="gz3_ortho_schema"), tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and "'gz3_ortho_schema' is not a Zoobot schema" in msg and "gz2_ortho_schema" in msg
    assert not (tmp_path / "raw").exists()


def test_gz2_regression_keeps_the_named_columns_checked_in_the_unit_interval(tmp_path):
    local = tmp_path / "local"
    rows = gz2_rows()
    for split in rows.values():
        for i, row in enumerate(split):
            row["smooth_fraction"] = i / 10
    resources = fabricate(local, "gz2", rows, subfolder=True)
    task = Task("regression", label_cols=("smooth_fraction",))
    raw = zoo.dataset("gz2", task, tmp_path / "cache", str(local), resources=resources)
    assert list(raw.catalog.columns) == ["id_str", "label", "split", "src", "smooth_fraction"]
    assert list(raw.catalog["smooth_fraction"]) == [0, 0.1, 0.2, 0.3, 0, 0.1]
    rows["train"][2]["smooth_fraction"] = 1.5
    resources = fabricate(tmp_path / "bad", "gz2", rows, subfolder=True)
    with pytest.raises(PipelineError, match=r"column 'smooth_fraction', row 2: 1.5 is not a number in \[0, 1\]"):
        zoo.dataset("gz2", task, tmp_path / "cache2", str(tmp_path / "bad"), resources=resources)


def test_classification_of_a_vote_dataset_is_one_line(tmp_path):
    with pytest.raises(ValueError, match="data.source gz2 gives vote counts, not classes: use train.task votes"):
        _params(tmp_path, source="gz2")
    with pytest.raises(PipelineError, match="gives vote counts"):
        zoo.read_official("gz2", tmp_path, Task("classification", ("a", "b")))


# --- classification datasets ------------------------------------------------------------------------------

def test_demo_rings_gives_its_own_classes_by_default(tmp_path, monkeypatch):
    local = tmp_path / "local"
    resources = fabricate(local, "demo_rings", demo_rings_rows(), subfolder=True)
    raw = zoo.dataset("demo_rings", Task("classification"), tmp_path / "c", str(local), resources=resources)
    assert raw.classes == ("not_ring", "ring") and list(raw.catalog["label"]) == [0, 1, 0, 1, 0, 1]
    assert list(raw.catalog.columns) == ["id_str", "label", "split", "src"]
    # through fetch_data, data.classes left at [] is the dataset's own classes
    monkeypatch.setattr(zoo, "library_resources", lambda name: resources)
    params = _params(tmp_path, source="demo_rings", local_dir=str(local))
    assert params.data.classes == ["not_ring", "ring"]
    _fetch(params, tmp_path)
    catalog = pd.read_csv(tmp_path / "raw" / CATALOG)
    assert list(catalog["label_name"]) == ["not_ring", "ring"] * 3
    assert read_json(tmp_path / "raw" / SOURCE)["task"]["classes"] == ["not_ring", "ring"]


def test_galaxy_mnist_classes_on_demo_rings_are_one_helpful_line(tmp_path, monkeypatch):
    local = tmp_path / "local"
    resources = fabricate(local, "demo_rings", demo_rings_rows(), subfolder=True)
    monkeypatch.setattr(zoo, "library_resources", lambda name: resources)
    params = _params(tmp_path, source="demo_rings", local_dir=str(local), classes=["smooth_round", "smooth_cigar"])
    with pytest.raises(PipelineError, match=r"not among galaxy-datasets demo_rings's classes \['not_ring', 'ring'\]; "
                                            r"use those names \(any subset, in any order\), or \[\] for all of them"):
        _fetch(params, tmp_path)


def test_tidal_read_by_the_librarys_own_function(tmp_path):
    root = tmp_path / "tidal"
    for split, n in (("train", 4), ("test", 2)):
        rows = [{"filename": f"W{split}{i}_color.jpg", "coarse_tidal_label": i % 2, "finegrained_tidal_label": i}
                for i in range(n)]
        for row in rows:
            (root / "images").mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8)).save(root / "images" / row["filename"])
        pd.DataFrame(rows).to_parquet(root / f"tidal_{split}_catalog.parquet")
    raw = zoo.read_official("tidal", root, Task("classification"))
    assert raw.classes == ("not_tidal", "tidal")
    assert list(raw.catalog["id_str"])[:2] == ["Wtrain0_color.jpg", "Wtrain1_color.jpg"]  # the library's id
    assert list(raw.catalog["label"]) == [0, 1, 0, 1, 0, 1]
    pd.DataFrame([{"filename": "Wtrain0_color.jpg", "coarse_tidal_label": 3}]).to_parquet(
        root / "tidal_train_catalog.parquet")
    with pytest.raises(PipelineError, match=r"tidal_train_catalog.parquet: coarse_tidal_label 3 in row 0 is not a "
                                            r"class 0..1 \(not_tidal, tidal\)"):
        zoo.read_official("tidal", root, Task("classification"))


# --- files: unverifiable, bad, unreachable ----------------------------------------------------------------

def test_gz_hubble_images_without_a_published_md5_are_recorded_unverified(tmp_path):
    from galaxy_datasets.shared.label_metadata import hubble_ortho_label_cols

    rows = {split: [{"filename": f"{split}{i}.jpg", "ra": 1.0, "dec": 2.0, **{c: i for c in hubble_ortho_label_cols}}
                    for i in range(n)] for split, n in (("train", 3), ("test", 2))}
    local = tmp_path / "local"
    resources = fabricate(local, "gz_hubble", rows, subfolder=False)
    resources = resources[:2] + (Resource(resources[2].url, None),)
    task = Task("votes", questions=named_schema_questions("gz_hubble_ortho_schema"))
    raw = zoo.dataset("gz_hubble", task, tmp_path / "cache", str(local), resources=resources)
    images = raw.record["resources"][2]
    assert images["check"] == "unverified (no md5 published)" and images["md5"] == md5_of(local / images["file"])
    assert "check" not in raw.record["resources"][0]
    assert list(raw.catalog["id_str"]) == ["train0", "train1", "train2", "test0", "test1"]  # from the file names


def test_a_corrupt_catalog_is_one_line_naming_it(tmp_path):
    local = tmp_path / "local"
    resources = fabricate(local, "gz2", gz2_rows(), subfolder=True)
    (local / "gz2_test_catalog.parquet").write_bytes(b"not a parquet file")
    resources = resources[:1] + (Resource(resources[1].url, md5_of(local / "gz2_test_catalog.parquet")),) + resources[2:]
    with pytest.raises(PipelineError) as err:
        zoo.dataset("gz2", VOTES, tmp_path / "cache", str(local), resources=resources)
    msg = str(err.value)
    assert "\n" not in msg and "gz2_test_catalog.parquet: galaxy_datasets.shared.gz2 cannot read it" in msg


def test_a_local_file_with_the_wrong_md5_is_refused(tmp_path):
    local = tmp_path / "local"
    resources = fabricate(local, "gz2", gz2_rows(), subfolder=True)
    resources = (Resource(resources[0].url, "0" * 32),) + resources[1:]
    with pytest.raises(PipelineError, match="gz2_train_catalog.parquet: md5 .* but expected 0{32}"):
        zoo.dataset("gz2", VOTES, tmp_path / "cache", str(local), resources=resources)


def test_no_local_files_offline_is_unreachable(tmp_path):
    with pytest.raises(Unreachable, match="gz2_train_catalog.parquet"):
        zoo.dataset("gz2", VOTES, tmp_path / "cache")  # the library's own list, GALAXY_FINETUNE_OFFLINE set


# --- the offline stand-in ----------------------------------------------------------------------------------

def test_offline_gz2_votes_fall_back_to_labelled_synthetic_vote_counts(tmp_path, capsys):
    params = _params(tmp_path, source="gz2", task="votes", synthetic_n_per_class=6)
    manifest = _fetch(params, tmp_path)
    assert manifest["data"]["substituted"] and manifest["source"] == "synthetic"
    assert manifest["run_label"].startswith("SYNTHETIC stand-in for galaxy-datasets gz2, 24 galaxies")
    assert "synthetic vote counts over gz2_ortho_schema" in manifest["substitutions"][0]
    assert "OFFLINE STAND-IN" in capsys.readouterr().err
    catalog = pd.read_csv(tmp_path / "raw" / CATALOG)
    assert list(catalog.columns) == CATALOG_COLUMNS + GZ2_COLS and (catalog["label"] == -1).all()
    counts = catalog[GZ2_COLS]
    assert (counts.dtypes == np.int64).all() and (counts >= 0).all().all()
    assert (counts[list(GZ2_QUESTIONS["smooth-or-featured-gz2"])].sum(axis=1) == 40).all()  # the first question
    # the votes follow the galaxies' shapes: the first answer's share differs between shape classes
    shapes = np.tile(np.arange(4), 6)
    share = counts[GZ2_COLS[0]] / 40
    means = [share[shapes == s].mean() for s in range(4)]
    assert max(means) - min(means) > 0.2
    task = read_json(tmp_path / "raw" / SOURCE)["task"]
    assert task["kind"] == "votes" and task["label_cols"] == GZ2_COLS
    for path in (tmp_path / "raw", tmp_path / "cache"):
        os.rename(path, path.with_name(f"{path.name}-first"))
    _fetch(params, tmp_path)  # drawn again from scratch: the same galaxies, the same votes
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "raw" / CATALOG).drop(columns="src"),
                                  catalog.drop(columns="src"))


def test_offline_regression_and_demo_rings_stand_ins(tmp_path):
    params = _params(tmp_path, source="gz2", task="regression", label_cols=["smooth_fraction", "bar_fraction"])
    _fetch(params, tmp_path)
    catalog = pd.read_csv(tmp_path / "raw" / CATALOG)
    assert list(catalog.columns) == CATALOG_COLUMNS + ["smooth_fraction", "bar_fraction"]
    assert catalog[["smooth_fraction", "bar_fraction"]].stack().between(0, 1).all()
    rings = tmp_path / "rings"
    rings.mkdir()
    manifest = _fetch(_params(rings, source="demo_rings"), rings)
    assert manifest["data"]["substituted"] and manifest["data"]["shapes"] == {"not_ring": "smooth_round",
                                                                              "ring": "smooth_cigar"}
    assert manifest["counts_per_class"] == {"not_ring": 3, "ring": 3}


def test_run_task_per_train_task(tmp_path):
    assert run_task(_params(tmp_path, source="synthetic", classes=["edge_on_disk", "smooth_round"])) == Task(
        "classification", ("edge_on_disk", "smooth_round"))
    assert run_task(_params(tmp_path, source="gz_candels", task="votes")).questions == named_schema_questions(
        "gz_candels_ortho_schema")
    own = _params(tmp_path, source="catalog", catalog="c.csv", task="votes", schema={"bar": ["bar_yes", "bar_no"]})
    assert run_task(own) == Task("votes", questions={"bar": ("bar_yes", "bar_no")})
    with pytest.raises(ValueError, match="data.schema auto: catalog has no Zoobot schema"):
        _params(tmp_path, source="catalog", catalog="c.csv", task="votes")
    with pytest.raises(ValueError, match="train.task regression: set data.label_cols"):
        _params(tmp_path, source="gz2", task="regression")
    with pytest.raises(PipelineError, match="data.label_cols: leave it empty for train.task votes"):
        run_task(_params(tmp_path, source="gz2", task="votes", label_cols=["x"]))
