"""galaxy_finetune.sources on small files in the official formats, served from 127.0.0.1."""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tarfile
import uuid
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from galaxy_finetune import sources
from galaxy_finetune.classes import GALAXY_MNIST_CLASSES
from galaxy_finetune.download import ChecksumError, Unreachable
from galaxy_finetune.errors import PipelineError
from galaxy_finetune.sources import CATALOG_COLUMNS, RawData, Resource

N_CLASSES = len(GALAXY_MNIST_CLASSES)


@pytest.fixture(autouse=True)
def online(monkeypatch):
    """Downloads here come from 127.0.0.1 only: ignore an offline switch set in the environment."""
    monkeypatch.delenv("GALAXY_FINETUNE_OFFLINE", raising=False)


def md5_file(path: Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


# --- (a) the galaxy-datasets GalaxyMNIST release -----------------------------------------------------------

TRAIN_CAT, TEST_CAT, ARCHIVE = ("galaxy_mnist_train_catalog.parquet", "galaxy_mnist_test_catalog.parquet",
                                "galaxy_mnist_images.tar.gz")
QUERIES = ("rlkey=fc5knqscwk2h6r4z5d3156vzr&dl=0", "rlkey=y1ns24xw0tcyntodi61rv14fu&dl=0",
           "rlkey=gvlwx2rl3hqpo3gplb9zlqrz0")


def make_galaxy_mnist_release(folder: Path, n_train_per_class: int = 3, n_test_per_class: int = 2,
                              drop_image: str | None = None) -> dict:
    """The three release files in `folder`; returns their md5s and the expected rows keyed by id_str."""
    folder.mkdir(parents=True, exist_ok=True)
    build = folder / "_build"
    images = build / "images"
    images.mkdir(parents=True)
    rows, expected, k = {"train": [], "test": []}, {}, 0
    for split, n in (("train", n_train_per_class), ("test", n_test_per_class)):
        for label in range(N_CLASSES):
            for _ in range(n):
                id_str = f"J{100000 + k}.{k:02d}+{label}{k:04d}"
                filename = f"{uuid.UUID(int=k + 1)}.jpg"
                rng = np.random.default_rng(k)
                pixels = (rng.random((16, 16, 3)) * 255).astype(np.uint8)
                Image.fromarray(pixels).save(images / filename, quality=95)
                rows[split].append({"id_str": id_str, "label": label, "filename": filename})
                expected[id_str] = {"label": label, "split": split, "filename": filename,
                                    "bytes": (images / filename).read_bytes()}
                k += 1
    pd.DataFrame(rows["train"]).astype({"label": "int64"}).to_parquet(folder / TRAIN_CAT, index=False)
    pd.DataFrame(rows["test"]).astype({"label": "int64"}).to_parquet(folder / TEST_CAT, index=False)
    if drop_image:
        (images / drop_image).unlink()
    with tarfile.open(folder / ARCHIVE, "w:gz") as tar:
        tar.add(images, arcname="images")
    shutil.rmtree(build)
    return {"md5": {name: md5_file(folder / name) for name in (TRAIN_CAT, TEST_CAT, ARCHIVE)},
            "expected": expected}


def release_resources(base_url: str, md5: dict) -> tuple[Resource, ...]:
    return tuple(Resource(f"{base_url}/{name}?{query}", md5[name])
                 for name, query in zip((TRAIN_CAT, TEST_CAT, ARCHIVE), QUERIES))


@pytest.fixture
def served_release(http_server):
    base_url, folder = http_server
    release = make_galaxy_mnist_release(folder)
    return http_server, release, release_resources(base_url, release["md5"])


def test_resource_filename_drops_query():
    assert Resource("https://x.org/s/abc/galaxy_mnist_images.tar.gz?rlkey=q&dl=0", "m").filename == ARCHIVE
    assert Resource("https://x.org/s/abc/train_dataset.hdf5.gz", "m").filename == "train_dataset.hdf5.gz"
    assert [r.filename for r in sources.GALAXY_MNIST] == [TRAIN_CAT, TEST_CAT, ARCHIVE]
    assert [r.filename for r in sources.GALAXY_MNIST_64] == ["train_dataset.hdf5.gz", "test_dataset.hdf5.gz"]


def check_galaxy_mnist_catalog(raw: RawData, expected: dict) -> None:
    cat = raw.catalog
    assert set(cat.columns) == {"id_str", "label", "split", "src_path"}
    assert sorted(cat["id_str"]) == sorted(expected)
    assert len(cat) == len(expected)
    for row in cat.itertuples(index=False):
        exp = expected[row.id_str]
        assert row.label == exp["label"]
        assert row.split == exp["split"]
        src = Path(row.src_path)
        assert src.is_file() and src.name == exp["filename"]
        assert src.read_bytes() == exp["bytes"]
    assert list(cat["split"].unique()) == ["train", "test"]  # train rows first
    assert raw.classes == GALAXY_MNIST_CLASSES
    assert raw.images is None


def test_galaxy_mnist_downloads_and_builds_catalog(served_release, tmp_path):
    server, release, resources = served_release
    cache = tmp_path / "cache"
    raw = sources.galaxy_mnist(cache, resources=resources, timeout=5, retries=1)
    check_galaxy_mnist_catalog(raw, release["expected"])
    assert (raw.catalog["split"] == "train").sum() == 3 * N_CLASSES
    assert (raw.catalog["split"] == "test").sum() == 2 * N_CLASSES
    assert sorted(server.hits) == sorted(f"/{n}" for n in (TRAIN_CAT, TEST_CAT, ARCHIVE))
    md5 = release["md5"]
    # the cache holds the verified downloads and the unpacked images, nothing half-done
    assert sorted(os.listdir(cache)) == sorted([TRAIN_CAT, TEST_CAT, ARCHIVE, f"images-{md5[ARCHIVE]}"])
    for row in raw.catalog.itertuples(index=False):
        assert Path(row.src_path).parent == cache / f"images-{md5[ARCHIVE]}" / "images"
    record = raw.record["resources"]
    assert [r["file"] for r in record] == [TRAIN_CAT, TEST_CAT, ARCHIVE]
    assert [r["md5"] for r in record] == [md5[TRAIN_CAT], md5[TEST_CAT], md5[ARCHIVE]]
    assert [r["url"] for r in record] == [r.url for r in resources]
    assert [r["path"] for r in record] == [str(cache / n) for n in (TRAIN_CAT, TEST_CAT, ARCHIVE)]


def test_galaxy_mnist_write_raw(served_release, tmp_path):
    server, release, resources = served_release
    raw = sources.galaxy_mnist(tmp_path / "cache", resources=resources, timeout=5, retries=1)
    out = tmp_path / "raw"
    returned = sources.write_raw(raw, out)
    assert sorted(os.listdir(out)) == ["catalog.csv", "images"]
    csv = pd.read_csv(out / "catalog.csv", dtype={"id_str": str, "split": str})
    assert list(csv.columns) == CATALOG_COLUMNS == ["id_str", "label", "label_name", "split", "file"]
    assert list(returned.columns) == CATALOG_COLUMNS
    assert len(csv) == len(release["expected"])
    assert list(csv["id_str"]) == list(returned["id_str"])
    for row in csv.itertuples(index=False):
        exp = release["expected"][row.id_str]
        assert row.label == exp["label"]
        assert row.label_name == GALAXY_MNIST_CLASSES[exp["label"]]
        assert row.split == exp["split"]
        assert row.file == f"images/{row.id_str}.jpg"  # JPEG stays JPEG, named by id
        assert (out / row.file).read_bytes() == exp["bytes"]
    assert len(os.listdir(out / "images")) == len(release["expected"])
    assert dict(zip(csv["label"], csv["label_name"])) == dict(enumerate(GALAXY_MNIST_CLASSES))


def test_galaxy_mnist_second_call_uses_cache(served_release, tmp_path):
    server, release, resources = served_release
    cache = tmp_path / "cache"
    first = sources.galaxy_mnist(cache, resources=resources, timeout=5, retries=1)
    hits = server.hits
    assert len(hits) == 3
    marker = cache / f"images-{release['md5'][ARCHIVE]}" / "marker"
    marker.write_text("the unpacked folder is reused, not extracted again")
    second = sources.galaxy_mnist(cache, resources=resources, timeout=5, retries=1)
    assert server.hits == hits  # no new requests
    assert marker.exists()
    pd.testing.assert_frame_equal(first.catalog, second.catalog)


def test_galaxy_mnist_from_local_dir_needs_no_server(tmp_path, dead_url_base):
    local = tmp_path / "local"
    release = make_galaxy_mnist_release(local)
    resources = release_resources(dead_url_base, release["md5"])  # nothing listens there
    cache = tmp_path / "cache"
    raw = sources.galaxy_mnist(cache, local_dir=str(local), resources=resources, timeout=5, retries=1)
    check_galaxy_mnist_catalog(raw, release["expected"])
    assert [r["path"] for r in raw.record["resources"]] == [str(local / n) for n in (TRAIN_CAT, TEST_CAT, ARCHIVE)]
    assert os.listdir(cache) == [f"images-{release['md5'][ARCHIVE]}"]  # nothing copied or downloaded
    out = tmp_path / "raw"
    sources.write_raw(raw, out)
    assert len(pd.read_csv(out / "catalog.csv")) == len(release["expected"])


def test_galaxy_mnist_local_dir_counts_no_server_hits(served_release, tmp_path):
    server, release, resources = served_release
    local = tmp_path / "local"
    shutil.copytree(server.folder, local)
    raw = sources.galaxy_mnist(tmp_path / "cache", local_dir=str(local), resources=resources, timeout=5)
    check_galaxy_mnist_catalog(raw, release["expected"])
    assert server.hits == []


def test_galaxy_mnist_local_dir_partial_falls_back_to_download(served_release, tmp_path):
    server, release, resources = served_release
    local = tmp_path / "local"
    local.mkdir()
    shutil.copy(server.folder / TRAIN_CAT, local)
    shutil.copy(server.folder / TEST_CAT, local)
    raw = sources.galaxy_mnist(tmp_path / "cache", local_dir=str(local), resources=resources, timeout=5, retries=1)
    check_galaxy_mnist_catalog(raw, release["expected"])
    assert server.hits == [f"/{ARCHIVE}"]


def test_galaxy_mnist_local_file_with_wrong_md5_is_refused(served_release, tmp_path):
    server, release, resources = served_release
    local = tmp_path / "local"
    shutil.copytree(server.folder, local)
    bad = local / TEST_CAT
    bad.write_bytes(bad.read_bytes()[:-10])
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumError) as info:
        sources.galaxy_mnist(cache, local_dir=str(local), resources=resources, timeout=5, retries=1)
    msg = str(info.value)
    assert str(bad) in msg
    assert release["md5"][TEST_CAT] in msg and md5_file(bad) in msg
    assert f"remove it from {local}" in msg
    assert server.count(TEST_CAT) == 0  # not silently replaced by a download
    assert bad.exists()  # and not deleted


def test_galaxy_mnist_download_with_wrong_md5_is_refused(served_release, tmp_path):
    server, release, resources = served_release
    bad_md5 = dict(release["md5"], **{ARCHIVE: "0" * 32})
    resources = release_resources(server.base_url, bad_md5)
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumError) as info:
        sources.galaxy_mnist(cache, resources=resources, timeout=5, retries=1)
    assert ARCHIVE in str(info.value) and "0" * 32 in str(info.value)
    assert release["md5"][ARCHIVE] in str(info.value)
    assert sorted(os.listdir(cache)) == sorted([TRAIN_CAT, TEST_CAT])  # no archive, no temporary


def test_galaxy_mnist_server_down_and_no_local_copy_is_unreachable(tmp_path, dead_url_base):
    resources = release_resources(dead_url_base, {TRAIN_CAT: "0" * 32, TEST_CAT: "1" * 32, ARCHIVE: "2" * 32})
    with pytest.raises(Unreachable, match=f"{TRAIN_CAT}: could not download"):
        sources.galaxy_mnist(tmp_path / "cache", resources=resources, timeout=5, retries=1)


def test_galaxy_mnist_image_missing_from_archive(http_server, tmp_path):
    base_url, folder = http_server
    missing = f"{uuid.UUID(int=3)}.jpg"
    release = make_galaxy_mnist_release(folder, drop_image=missing)
    resources = release_resources(base_url, release["md5"])
    with pytest.raises(PipelineError) as info:
        sources.galaxy_mnist(tmp_path / "cache", resources=resources, timeout=5, retries=1)
    msg = str(info.value)
    assert ARCHIVE in msg and "1 image(s)" in msg and missing in msg


def test_galaxy_mnist_catalog_missing_column(http_server, tmp_path):
    base_url, folder = http_server
    release = make_galaxy_mnist_release(folder)
    pd.read_parquet(folder / TRAIN_CAT).drop(columns="filename").to_parquet(folder / TRAIN_CAT)
    md5 = dict(release["md5"], **{TRAIN_CAT: md5_file(folder / TRAIN_CAT)})
    with pytest.raises(PipelineError) as info:
        sources.galaxy_mnist(tmp_path / "cache", resources=release_resources(base_url, md5), timeout=5, retries=1)
    assert TRAIN_CAT in str(info.value) and "missing column(s) ['filename']" in str(info.value)


# --- (b) the 64 px HDF5 release ----------------------------------------------------------------------------

H5_NAMES = ("train_dataset.hdf5.gz", "test_dataset.hdf5.gz")


def write_h5(path: Path, **datasets) -> Path:
    with h5py.File(path, "w") as f:
        for key, value in datasets.items():
            f.create_dataset(key, data=value)
    return path


def make_hdf5_release(folder: Path, n_train: int = 8, n_test: int = 4) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for name, n in zip(H5_NAMES, (n_train, n_test)):
        images = rng.integers(0, 256, size=(n, 64, 64, 3), dtype=np.uint8)
        labels = (np.arange(n) % N_CLASSES).astype(np.uint8)
        h5 = write_h5(folder / name.removesuffix(".gz"), images=images, labels=labels)
        (folder / name).write_bytes(gzip.compress(h5.read_bytes()))
        h5.unlink()
        arrays[name] = (images, labels)
    return {"md5": {n: md5_file(folder / n) for n in H5_NAMES}, "arrays": arrays}


def test_galaxy_mnist_64_downloads_and_writes_pngs(http_server, tmp_path):
    base_url, folder = http_server
    release = make_hdf5_release(folder)
    resources = tuple(Resource(f"{base_url}/{n}", release["md5"][n]) for n in H5_NAMES)
    cache = tmp_path / "cache"
    raw = sources.galaxy_mnist_64(cache, resources=resources, timeout=5, retries=1)
    train_images, train_labels = release["arrays"][H5_NAMES[0]]
    test_images, test_labels = release["arrays"][H5_NAMES[1]]
    cat = raw.catalog
    assert list(cat["id_str"]) == [f"train_galaxy_{i}" for i in range(8)] + [f"test_galaxy_{i}" for i in range(4)]
    assert list(cat["split"]) == ["train"] * 8 + ["test"] * 4
    assert list(cat["label"]) == list(train_labels) + list(test_labels)
    assert cat["label"].dtype == np.int64
    assert raw.images.shape == (12, 64, 64, 3) and raw.images.dtype == np.uint8
    np.testing.assert_array_equal(raw.images, np.concatenate([train_images, test_images]))
    assert raw.classes == GALAXY_MNIST_CLASSES
    assert [r["file"] for r in raw.record["resources"]] == list(H5_NAMES)
    # the cache keeps the verified .gz and the decompressed HDF5, keyed by md5
    assert sorted(os.listdir(cache)) == sorted(list(H5_NAMES) + [
        f"train_dataset.hdf5.{release['md5'][H5_NAMES[0]]}", f"test_dataset.hdf5.{release['md5'][H5_NAMES[1]]}"])

    out = tmp_path / "raw"
    sources.write_raw(raw, out)
    csv = pd.read_csv(out / "catalog.csv")
    assert list(csv.columns) == CATALOG_COLUMNS
    assert list(csv["file"]) == [f"images/{i}.png" for i in cat["id_str"]]
    assert list(csv["label_name"]) == [GALAXY_MNIST_CLASSES[i] for i in cat["label"]]
    for i, row in enumerate(csv.itertuples(index=False)):
        with Image.open(out / row.file) as img:
            assert img.format == "PNG" and img.mode == "RGB"
            np.testing.assert_array_equal(np.asarray(img), raw.images[i])

    hits = http_server.hits
    assert sorted(hits) == sorted(f"/{n}" for n in H5_NAMES)
    h5_cached = cache / f"train_dataset.hdf5.{release['md5'][H5_NAMES[0]]}"
    before = h5_cached.stat().st_mtime_ns
    again = sources.galaxy_mnist_64(cache, resources=resources, timeout=5, retries=1)
    assert http_server.hits == hits  # second call: cache only
    assert h5_cached.stat().st_mtime_ns == before  # and no second decompression
    np.testing.assert_array_equal(again.images, raw.images)


def test_galaxy_mnist_64_from_local_dir(tmp_path, dead_url_base):
    local = tmp_path / "local"
    release = make_hdf5_release(local, n_train=4, n_test=4)
    resources = tuple(Resource(f"{dead_url_base}/{n}", release["md5"][n]) for n in H5_NAMES)
    raw = sources.galaxy_mnist_64(tmp_path / "cache", local_dir=str(local), resources=resources, timeout=5)
    assert len(raw.catalog) == 8
    np.testing.assert_array_equal(raw.images[:4], release["arrays"][H5_NAMES[0]][0])


def test_galaxy_mnist_64_corrupt_gz_is_a_pipeline_error(tmp_path, dead_url_base):
    local = tmp_path / "local"
    release = make_hdf5_release(local, n_train=4, n_test=4)
    broken = local / H5_NAMES[0]
    broken.write_bytes(broken.read_bytes()[:200])  # the md5 below matches this broken file
    md5 = dict(release["md5"], **{H5_NAMES[0]: md5_file(broken)})
    resources = tuple(Resource(f"{dead_url_base}/{n}", md5[n]) for n in H5_NAMES)
    cache = tmp_path / "cache"
    with pytest.raises(PipelineError, match=f"{H5_NAMES[0]}: cannot decompress"):
        sources.galaxy_mnist_64(cache, local_dir=str(local), resources=resources, timeout=5)
    assert os.listdir(cache) == []


def test_read_hdf5_ok(tmp_path):
    images = np.zeros((3, 8, 8, 3), np.uint8)
    path = write_h5(tmp_path / "ok.hdf5", images=images, labels=np.array([0, 3, 1], np.uint8))
    got_images, got_labels = sources.read_hdf5(path)
    np.testing.assert_array_equal(got_images, images)
    assert got_labels.dtype == np.int64 and list(got_labels) == [0, 3, 1]


@pytest.mark.parametrize("case, datasets, message", [
    ("missing-labels", {"images": np.zeros((2, 8, 8, 3), np.uint8)}, "missing HDF5 key(s) ['labels']"),
    ("missing-both", {"other": np.zeros(2)}, "missing HDF5 key(s) ['images', 'labels']"),
    ("grey-images", {"images": np.zeros((2, 8, 8), np.uint8), "labels": np.zeros(2, np.uint8)},
     "'images' must be (N, H, W, 3) uint8, got (2, 8, 8) uint8"),
    ("rgba-images", {"images": np.zeros((2, 8, 8, 4), np.uint8), "labels": np.zeros(2, np.uint8)},
     "'images' must be (N, H, W, 3) uint8, got (2, 8, 8, 4) uint8"),
    ("float-images", {"images": np.zeros((2, 8, 8, 3), np.float32), "labels": np.zeros(2, np.uint8)},
     "'images' must be (N, H, W, 3) uint8, got (2, 8, 8, 3) float32"),
    ("length-mismatch", {"images": np.zeros((3, 8, 8, 3), np.uint8), "labels": np.zeros(2, np.uint8)},
     "3 images but 'labels' has shape (2,)"),
    ("2d-labels", {"images": np.zeros((2, 8, 8, 3), np.uint8), "labels": np.zeros((2, 1), np.uint8)},
     "2 images but 'labels' has shape (2, 1)"),
    ("float-labels", {"images": np.zeros((2, 8, 8, 3), np.uint8), "labels": np.zeros(2, np.float32)},
     "'labels' must be integers, got float32"),
])
def test_read_hdf5_errors_name_the_file(tmp_path, case, datasets, message):
    path = write_h5(tmp_path / f"{case}.hdf5", **datasets)
    with pytest.raises(PipelineError) as info:
        sources.read_hdf5(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_read_hdf5_not_hdf5(tmp_path):
    path = tmp_path / "fake.hdf5"
    path.write_bytes(b"not an hdf5 file" * 10)
    with pytest.raises(PipelineError, match="not a readable HDF5 file") as info:
        sources.read_hdf5(path)
    assert str(info.value).startswith(f"{path}: ")


# --- (c) user_catalog() ------------------------------------------------------------------------------------

CLASSES = ["spiral", "elliptical", "merger"]


def save_image(path: Path, value: int, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path, format=fmt)
    return path


@pytest.fixture
def user_images(tmp_path):
    """Images under <tmp>/survey/imgs, one per class plus one extra, and the catalog folder."""
    root = tmp_path / "survey"
    save_image(root / "imgs" / "g1.png", 10)
    save_image(root / "imgs" / "g2.jpg", 20)
    save_image(root / "imgs" / "g3.PNG", 30, "PNG")
    save_image(root / "imgs" / "g4.png", 40)
    return root


def test_user_catalog_csv_with_class_names(user_images):
    path = user_images / "catalog.csv"
    pd.DataFrame({"file_loc": ["imgs/g1.png", "imgs/g2.jpg", "imgs/g3.PNG", "imgs/g4.png"],
                  "label": ["spiral", "elliptical", "merger", "spiral"]}).to_csv(path, index=False)
    raw = sources.user_catalog(path, CLASSES)
    cat = raw.catalog
    assert list(cat.columns) == ["id_str", "label", "split", "src_path"]
    assert list(cat["id_str"]) == ["g1", "g2", "g3", "g4"]  # default id: the file's stem
    assert list(cat["label"]) == [0, 1, 2, 0]
    assert list(cat["split"]) == [""] * 4
    assert list(cat["src_path"]) == [str(user_images / "imgs" / n) for n in ("g1.png", "g2.jpg", "g3.PNG", "g4.png")]
    assert raw.classes == tuple(CLASSES) and raw.images is None
    assert {k: raw.record[k] for k in ("catalog", "catalog_md5")} == {"catalog": str(path), "catalog_md5": md5_file(path)}
    sources.validate(raw)


def test_user_catalog_relative_paths_follow_the_catalog_not_the_cwd(user_images, tmp_path, monkeypatch):
    path = user_images / "catalog.csv"
    pd.DataFrame({"file_loc": ["imgs/g1.png", "imgs/g2.jpg", "imgs/g3.PNG"],
                  "label": ["spiral", "elliptical", "merger"]}).to_csv(path, index=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    raw = sources.user_catalog(str(path), CLASSES)
    assert all(Path(p).is_file() for p in raw.catalog["src_path"])


def test_user_catalog_parquet_with_int_labels_ids_splits_and_absolute_paths(user_images, tmp_path):
    path = tmp_path / "meta" / "cat.parquet"  # catalog in another folder: absolute file_loc
    path.parent.mkdir()
    pd.DataFrame({"file_loc": [str(user_images / "imgs" / n) for n in ("g1.png", "g2.jpg", "g3.PNG", "g4.png")],
                  "label": np.array([2, 1, 0, 1], dtype=np.int64),
                  "id_str": ["a", "b", "c", "d"],
                  "split": ["train", "train", "test", None]}).to_parquet(path, index=False)
    raw = sources.user_catalog(path, CLASSES)
    cat = raw.catalog
    assert list(cat["id_str"]) == ["a", "b", "c", "d"]
    assert list(cat["label"]) == [2, 1, 0, 1]
    assert list(cat["split"]) == ["train", "train", "test", ""]
    assert list(cat["src_path"]) == [str(user_images / "imgs" / n) for n in ("g1.png", "g2.jpg", "g3.PNG", "g4.png")]

    out = tmp_path / "raw"
    sources.write_raw(raw, out)
    csv = pd.read_csv(out / "catalog.csv", keep_default_na=False)
    assert list(csv.columns) == CATALOG_COLUMNS
    assert list(csv["file"]) == ["images/a.png", "images/b.jpg", "images/c.png", "images/d.png"]  # suffix lowered
    assert list(csv["label_name"]) == ["merger", "elliptical", "spiral", "elliptical"]
    assert list(csv["split"]) == ["train", "train", "test", ""]
    assert (out / "images" / "c.png").read_bytes() == (user_images / "imgs" / "g3.PNG").read_bytes()


def test_user_catalog_labels_as_digit_strings(user_images):
    path = user_images / "catalog.parquet"
    pd.DataFrame({"file_loc": ["imgs/g1.png", "imgs/g2.jpg", "imgs/g3.PNG"],
                  "label": ["2", "0", "spiral"]}).to_parquet(path, index=False)
    assert list(sources.user_catalog(path, CLASSES).catalog["label"]) == [2, 0, 0]


def _csv(folder: Path, **columns) -> Path:
    path = folder / "catalog.csv"
    pd.DataFrame(columns).to_csv(path, index=False)
    return path


def test_user_catalog_unknown_class_name(user_images):
    path = _csv(user_images, file_loc=["imgs/g1.png", "imgs/g2.jpg"], label=["spiral", "barred"])
    with pytest.raises(PipelineError) as info:
        sources.user_catalog(path, CLASSES)
    assert str(info.value) == f"{path}: row 1: unknown class 'barred'; data.classes is {CLASSES}"


@pytest.mark.parametrize("bad", [3, -1, 99])
def test_user_catalog_int_label_out_of_range(user_images, bad):
    path = _csv(user_images, file_loc=["imgs/g1.png", "imgs/g2.jpg", "imgs/g4.png"], label=[0, 1, bad])
    with pytest.raises(PipelineError) as info:
        sources.user_catalog(path, CLASSES)
    assert str(info.value) == f"{path}: row 2: label {bad} out of range 0..2"


@pytest.mark.parametrize("columns, missing", [
    ({"path": ["imgs/g1.png"], "label": ["spiral"]}, "['file_loc']"),
    ({"file_loc": ["imgs/g1.png"], "class": ["spiral"]}, "['label']"),
    ({"id_str": ["a"]}, "['file_loc', 'label']"),
])
def test_user_catalog_missing_column(user_images, columns, missing):
    path = _csv(user_images, **columns)
    with pytest.raises(PipelineError) as info:
        sources.user_catalog(path, CLASSES)
    assert str(info.value).startswith(f"{path}: missing column(s) {missing}")


def test_user_catalog_unreadable_image_names_the_row(user_images):
    (user_images / "imgs" / "broken.png").write_bytes(b"this is text, not a PNG")
    path = _csv(user_images, file_loc=["imgs/g1.png", "imgs/g2.jpg", "imgs/broken.png"],
                label=["spiral", "elliptical", "merger"])
    with pytest.raises(PipelineError) as info:
        sources.user_catalog(path, CLASSES)
    msg = str(info.value)
    assert msg.startswith(f"{path}: row 2: cannot read image {user_images / 'imgs' / 'broken.png'}")
    assert "UnidentifiedImageError" in msg


def test_user_catalog_missing_image_names_the_row(user_images):
    path = _csv(user_images, file_loc=["imgs/nope.png", "imgs/g2.jpg"], label=["spiral", "elliptical"])
    with pytest.raises(PipelineError) as info:
        sources.user_catalog(path, CLASSES)
    assert str(info.value).startswith(f"{path}: row 0: cannot read image {user_images / 'imgs' / 'nope.png'}")
    assert "FileNotFoundError" in str(info.value)


def test_user_catalog_missing_or_unreadable_catalog(tmp_path):
    with pytest.raises(PipelineError, match="data.catalog: .*nope.csv not found"):
        sources.user_catalog(tmp_path / "nope.csv", CLASSES)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 but not really")
    with pytest.raises(PipelineError) as info:
        sources.user_catalog(bad, CLASSES)
    assert str(info.value).startswith(f"{bad}: not a readable catalog")


# --- (d) validate() ----------------------------------------------------------------------------------------

def raw_from(ids, labels, splits=None, classes=("a", "b", "c")) -> RawData:
    splits = splits if splits is not None else [""] * len(ids)
    return RawData(pd.DataFrame({"id_str": ids, "label": np.array(labels, dtype=np.int64), "split": splits}),
                   tuple(classes), images=np.zeros((len(ids), 4, 4, 3), np.uint8))


def test_validate_accepts_a_good_catalog():
    sources.validate(raw_from(["x", "y", "z"], [0, 1, 2], ["train", "test", ""]))


def test_validate_duplicate_ids():
    with pytest.raises(PipelineError) as info:
        sources.validate(raw_from(["x", "y", "x", "y", "x"], [0, 1, 2, 0, 1]))
    assert "duplicate id_str 'x'" in str(info.value) and "(3 duplicates)" in str(info.value)


def test_validate_class_without_examples():
    with pytest.raises(PipelineError) as info:
        sources.validate(raw_from(["x", "y", "z"], [0, 0, 2]))
    assert "class(es) ['b'] have no examples" in str(info.value)


@pytest.mark.parametrize("bad", [3, -1])
def test_validate_label_out_of_range(bad):
    with pytest.raises(PipelineError) as info:
        sources.validate(raw_from(["x", "y", "z", "w"], [0, 1, 2, bad]))
    assert str(info.value) == f"catalog: label {bad} of 'w' out of range 0..2"


def test_validate_bad_split():
    sources.validate(raw_from(["x", "y", "z"], [0, 1, 2], ["train", "val", "test"]))
    with pytest.raises(PipelineError, match=r"split values \['validation'\] not understood; use train, val, test"):
        sources.validate(raw_from(["x", "y", "z"], [0, 1, 2], ["train", "validation", "test"]))


def test_user_catalog_in_galaxy_datasets_layout(user_images):
    """galaxy-datasets' own catalog as it is: id_str, file_loc, label plus other columns, split train/val/test."""
    path = user_images / "catalog.csv"
    pd.DataFrame({"id_str": ["J1", "J2", "J3", "J4"],
                  "file_loc": [str(user_images / "imgs" / n) for n in ("g1.png", "g2.jpg", "g3.PNG", "g4.png")],
                  "label": [0, 1, 2, 0], "smooth-or-featured_smooth": [12, 3, 0, 8], "ra": [1.0, 2.0, 3.0, 4.0],
                  "split": ["train", "val", "test", "train"]}).to_csv(path, index=False)
    raw = sources.user_catalog(path, CLASSES)
    sources.validate(raw)
    assert list(raw.catalog["id_str"]) == ["J1", "J2", "J3", "J4"]
    assert list(raw.catalog["split"]) == ["train", "val", "test", "train"]
    assert list(raw.catalog["label"]) == [0, 1, 2, 0]


def test_write_raw_validates_before_writing(tmp_path):
    out = tmp_path / "raw"
    with pytest.raises(PipelineError, match="duplicate id_str"):
        sources.write_raw(raw_from(["x", "x", "z"], [0, 1, 2]), out)
    assert not out.exists()


# --- (e) synthetic() ---------------------------------------------------------------------------------------

def test_synthetic_is_balanced_unique_and_deterministic(tmp_path):
    raw = sources.synthetic(n_per_class=3, image_size=16, seed=7)
    cat = raw.catalog
    assert len(cat) == 3 * N_CLASSES
    assert np.bincount(cat["label"], minlength=N_CLASSES).tolist() == [3] * N_CLASSES
    assert cat["id_str"].is_unique
    assert list(cat["id_str"]) == [f"synthetic_{i:06d}" for i in range(len(cat))]
    assert set(cat["split"]) == {""}
    assert raw.images.shape == (12, 16, 16, 3) and raw.images.dtype == np.uint8
    assert raw.classes == GALAXY_MNIST_CLASSES
    assert raw.record["seed"] == 7 and raw.record["n_per_class"] == 3 and raw.record["image_size"] == 16
    sources.validate(raw)
    again = sources.synthetic(n_per_class=3, image_size=16, seed=7)
    np.testing.assert_array_equal(again.images, raw.images)
    other = sources.synthetic(n_per_class=3, image_size=16, seed=8)
    assert not np.array_equal(other.images, raw.images)

    out = tmp_path / "raw"
    sources.write_raw(raw, out)
    csv = pd.read_csv(out / "catalog.csv")
    assert list(csv["file"]) == [f"images/synthetic_{i:06d}.png" for i in range(12)]
    with Image.open(out / csv["file"][5]) as img:
        np.testing.assert_array_equal(np.asarray(img), raw.images[5])


def test_constant_images_are_reported_not_dropped(tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8), (0, 0, 0)).save(tmp_path / "blank.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "ok.png")
    pd.DataFrame({"file_loc": ["blank.png", "ok.png"], "label": ["a", "b"]}).to_csv(tmp_path / "c.csv", index=False)
    raw = sources.user_catalog(tmp_path / "c.csv", ["a", "b"])
    assert raw.record["constant_images"] == ["blank"] and len(raw.catalog) == 2
    images = np.zeros((3, 4, 4, 3), np.uint8)
    images[1, 0, 0, 0] = 9
    assert sources.constant_images(images, ["x", "y", "z"]) == ["x", "z"]
