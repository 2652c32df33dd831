"""galaxy_finetune.data.sources on small files in the official formats, served from 127.0.0.1.

A source hands over a catalog whose `src` column is the absolute path of each galaxy's image file;
canonical_catalog() turns it into catalog.csv's frame. Nothing is copied into data/raw/ and nothing is
decoded here: the array sources write their PNGs once into the download cache, and the store stage
decodes every src (unreadable and blank images are reported there; see also tests/test_store.py).
"""
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

from galaxy_finetune.data import sources, zoo
from galaxy_finetune.core.classes import GALAXY_MNIST_CLASSES
from galaxy_finetune.data.download import ChecksumError, Unreachable
from galaxy_finetune.core.errors import PipelineError
from galaxy_finetune.core.files import write_csv
from galaxy_finetune.data.sources import CATALOG_COLUMNS, RawData, Resource
from galaxy_finetune.data.split import read_catalog
from galaxy_finetune.data.store import build_store, open_images

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
    assert [r.filename for r in zoo.library_resources("galaxy_mnist")] == [TRAIN_CAT, TEST_CAT, ARCHIVE]
    assert [r.filename for r in sources.GALAXY_MNIST_64] == ["train_dataset.hdf5.gz", "test_dataset.hdf5.gz"]



def tree(root: Path) -> dict[str, int]:
    """Every file under `root` with its mtime: whatever a step writes or rewrites shows as a difference."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in Path(root).rglob("*") if p.is_file()}


def png_pixels(path) -> np.ndarray:
    with Image.open(path) as img:
        assert img.format == "PNG" and img.mode == "RGB"
        return np.asarray(img)


def test_raw_data_holds_files_not_pixels():
    """A source hands over paths, never an array of every galaxy: the fetch stays small at survey scale."""
    assert list(RawData.__dataclass_fields__) == ["catalog", "classes", "record"]
    assert CATALOG_COLUMNS == ["id_str", "label", "label_name", "split", "src"]


def check_galaxy_mnist_catalog(raw: RawData, expected: dict) -> None:
    cat = raw.catalog
    assert set(cat.columns) == {"id_str", "label", "split", "src"}
    assert sorted(cat["id_str"]) == sorted(expected)
    assert len(cat) == len(expected)
    for row in cat.itertuples(index=False):
        exp = expected[row.id_str]
        assert row.label == exp["label"]
        assert row.split == exp["split"]
        src = Path(row.src)
        assert src.is_absolute() and src.is_file() and src.name == exp["filename"]
        assert src.read_bytes() == exp["bytes"]
    assert list(cat["split"].unique()) == ["train", "test"]  # train rows first
    assert raw.classes == GALAXY_MNIST_CLASSES


def test_galaxy_mnist_downloads_and_builds_catalog(served_release, tmp_path):
    server, release, resources = served_release
    cache = tmp_path / "cache"
    raw = zoo.galaxy_mnist(cache, resources=resources, timeout=5, retries=1)
    check_galaxy_mnist_catalog(raw, release["expected"])
    assert (raw.catalog["split"] == "train").sum() == 3 * N_CLASSES
    assert (raw.catalog["split"] == "test").sum() == 2 * N_CLASSES
    assert sorted(server.hits) == sorted(f"/{n}" for n in (TRAIN_CAT, TEST_CAT, ARCHIVE))
    md5 = release["md5"]
    # the cache holds the verified downloads, the unpacked images and the library's layout of links to them
    root = raw.record["root"]
    assert sorted(os.listdir(cache)) == sorted([TRAIN_CAT, TEST_CAT, ARCHIVE, f"images-{md5[ARCHIVE]}",
                                                Path(root).name])
    assert sorted(os.listdir(root)) == sorted([TRAIN_CAT, TEST_CAT, "images"])
    assert all(os.path.islink(os.path.join(root, n)) for n in os.listdir(root))
    for row in raw.catalog.itertuples(index=False):
        assert Path(row.src).parent == cache / f"images-{md5[ARCHIVE]}" / "images"
    record = raw.record["resources"]
    assert [r["file"] for r in record] == [TRAIN_CAT, TEST_CAT, ARCHIVE]
    assert [r["md5"] for r in record] == [md5[TRAIN_CAT], md5[TEST_CAT], md5[ARCHIVE]]
    assert [r["url"] for r in record] == [r.url for r in resources]
    assert [r["path"] for r in record] == [str(cache / n) for n in (TRAIN_CAT, TEST_CAT, ARCHIVE)]


def test_galaxy_mnist_canonical_catalog_points_into_the_cache_and_copies_nothing(served_release, tmp_path):
    server, release, resources = served_release
    cache = tmp_path / "cache"
    raw = zoo.galaxy_mnist(cache, resources=resources, timeout=5, retries=1)
    before = tree(tmp_path)
    catalog = sources.canonical_catalog(raw)
    assert tree(tmp_path) == before  # nothing copied, renamed or decoded
    assert list(catalog.columns) == CATALOG_COLUMNS
    assert list(catalog.index) == list(range(len(release["expected"])))
    assert list(catalog["id_str"]) == list(raw.catalog["id_str"])  # source order kept: row i is store row i
    unpacked = cache / f"images-{release['md5'][ARCHIVE]}" / "images"
    for row in catalog.itertuples(index=False):
        exp = release["expected"][row.id_str]
        assert row.label == exp["label"]
        assert row.label_name == GALAXY_MNIST_CLASSES[exp["label"]]
        assert row.split == exp["split"]
        assert row.src == str(unpacked / exp["filename"])  # the release's own JPEG, where it was unpacked
        assert Path(row.src).read_bytes() == exp["bytes"]
    assert dict(zip(catalog["label"], catalog["label_name"])) == dict(enumerate(GALAXY_MNIST_CLASSES))
    # catalog.csv as fetch_data writes it reads back unchanged, row for row, through the split stage's reader
    write_csv(tmp_path / "raw" / "catalog.csv", catalog)
    back = read_catalog(tmp_path / "raw")
    assert list(back.columns) == CATALOG_COLUMNS + ["row"]
    assert back[CATALOG_COLUMNS].astype(str).values.tolist() == catalog.astype(str).values.tolist()
    assert list(back["row"]) == list(range(len(catalog)))


def test_galaxy_mnist_second_call_uses_cache(served_release, tmp_path):
    server, release, resources = served_release
    cache = tmp_path / "cache"
    first = zoo.galaxy_mnist(cache, resources=resources, timeout=5, retries=1)
    hits = server.hits
    assert len(hits) == 3
    marker = cache / f"images-{release['md5'][ARCHIVE]}" / "marker"
    marker.write_text("the unpacked folder is reused, not extracted again")
    second = zoo.galaxy_mnist(cache, resources=resources, timeout=5, retries=1)
    assert server.hits == hits  # no new requests
    assert marker.exists()
    pd.testing.assert_frame_equal(first.catalog, second.catalog)



def test_galaxy_mnist_from_local_dir_needs_no_server(tmp_path, dead_url_base):
    local = tmp_path / "local"
    release = make_galaxy_mnist_release(local)
    resources = release_resources(dead_url_base, release["md5"])  # nothing listens there
    cache = tmp_path / "cache"
    local_before = tree(local)
    raw = zoo.galaxy_mnist(cache, local_dir=str(local), resources=resources, timeout=5, retries=1)
    check_galaxy_mnist_catalog(raw, release["expected"])
    assert [r["path"] for r in raw.record["resources"]] == [str(local / n) for n in (TRAIN_CAT, TEST_CAT, ARCHIVE)]
    assert tree(local) == local_before  # the user's folder is only read
    # nothing copied or downloaded: the unpacked images, the md5 memos of the three verified local files, and
    # the library's layout as links to them
    assert sorted(os.listdir(cache)) == [".verified", f"images-{release['md5'][ARCHIVE]}", Path(raw.record["root"]).name]
    assert os.readlink(Path(raw.record["root"]) / TRAIN_CAT) == str(local / TRAIN_CAT)
    memos = list((cache / ".verified").iterdir())
    assert len(memos) == 3 and all(m.suffix == ".md5" and m.stat().st_size < 1000 for m in memos)
    catalog = sources.canonical_catalog(raw)
    assert len(catalog) == len(release["expected"])
    assert all(Path(p).is_relative_to(cache / f"images-{release['md5'][ARCHIVE]}") for p in catalog["src"])


def test_galaxy_mnist_local_dir_counts_no_server_hits(served_release, tmp_path):
    server, release, resources = served_release
    local = tmp_path / "local"
    shutil.copytree(server.folder, local)
    raw = zoo.galaxy_mnist(tmp_path / "cache", local_dir=str(local), resources=resources, timeout=5)
    check_galaxy_mnist_catalog(raw, release["expected"])
    assert server.hits == []


def test_galaxy_mnist_local_dir_partial_falls_back_to_download(served_release, tmp_path):
    server, release, resources = served_release
    local = tmp_path / "local"
    local.mkdir()
    shutil.copy(server.folder / TRAIN_CAT, local)
    shutil.copy(server.folder / TEST_CAT, local)
    raw = zoo.galaxy_mnist(tmp_path / "cache", local_dir=str(local), resources=resources, timeout=5, retries=1)
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
        zoo.galaxy_mnist(cache, local_dir=str(local), resources=resources, timeout=5, retries=1)
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
        zoo.galaxy_mnist(cache, resources=resources, timeout=5, retries=1)
    assert ARCHIVE in str(info.value) and "0" * 32 in str(info.value)
    assert release["md5"][ARCHIVE] in str(info.value)
    assert sorted(os.listdir(cache)) == sorted([TRAIN_CAT, TEST_CAT])  # no archive, no temporary, no layout


def test_galaxy_mnist_server_down_and_no_local_copy_is_unreachable(tmp_path, dead_url_base):
    resources = release_resources(dead_url_base, {TRAIN_CAT: "0" * 32, TEST_CAT: "1" * 32, ARCHIVE: "2" * 32})
    with pytest.raises(Unreachable, match=f"{TRAIN_CAT}: could not download"):
        zoo.galaxy_mnist(tmp_path / "cache", resources=resources, timeout=5, retries=1)


def test_galaxy_mnist_image_missing_from_archive(http_server, tmp_path):
    base_url, folder = http_server
    missing = f"{uuid.UUID(int=3)}.jpg"
    release = make_galaxy_mnist_release(folder, drop_image=missing)
    resources = release_resources(base_url, release["md5"])
    with pytest.raises(PipelineError) as info:
        zoo.galaxy_mnist(tmp_path / "cache", resources=resources, timeout=5, retries=1)
    msg = str(info.value)
    assert ARCHIVE in msg and "1 image(s)" in msg and missing in msg


def test_galaxy_mnist_catalog_missing_column(http_server, tmp_path):
    base_url, folder = http_server
    release = make_galaxy_mnist_release(folder)
    pd.read_parquet(folder / TRAIN_CAT).drop(columns="filename").to_parquet(folder / TRAIN_CAT)
    md5 = dict(release["md5"], **{TRAIN_CAT: md5_file(folder / TRAIN_CAT)})
    with pytest.raises(PipelineError) as info:
        zoo.galaxy_mnist(tmp_path / "cache", resources=release_resources(base_url, md5), timeout=5, retries=1)
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


def test_galaxy_mnist_64_downloads_and_writes_its_pngs_once_into_the_cache(http_server, tmp_path):
    base_url, folder = http_server
    release = make_hdf5_release(folder)
    md5 = release["md5"]
    resources = tuple(Resource(f"{base_url}/{n}", md5[n]) for n in H5_NAMES)
    cache = tmp_path / "cache"
    raw = sources.galaxy_mnist_64(cache, resources=resources, timeout=5, retries=1)
    train_images, train_labels = release["arrays"][H5_NAMES[0]]
    test_images, test_labels = release["arrays"][H5_NAMES[1]]
    cat = raw.catalog
    assert list(cat["id_str"]) == [f"train_galaxy_{i}" for i in range(8)] + [f"test_galaxy_{i}" for i in range(4)]
    assert list(cat["split"]) == ["train"] * 8 + ["test"] * 4
    assert list(cat["label"]) == list(train_labels) + list(test_labels)
    assert cat["label"].dtype == np.int64
    assert raw.classes == GALAXY_MNIST_CLASSES
    assert [r["file"] for r in raw.record["resources"]] == list(H5_NAMES)
    # the cache keeps the verified .gz, the decompressed HDF5 (keyed by md5) and the PNGs (keyed by both md5s)
    pngs = cache / f"pngs-{md5[H5_NAMES[0]][:8]}-{md5[H5_NAMES[1]][:8]}"
    assert sorted(os.listdir(cache)) == sorted(list(H5_NAMES) + [
        f"train_dataset.hdf5.{md5[H5_NAMES[0]]}", f"test_dataset.hdf5.{md5[H5_NAMES[1]]}", pngs.name])
    assert list(cat["src"]) == [str(pngs / f"{i}.png") for i in cat["id_str"]]
    assert sorted(os.listdir(pngs)) == sorted([f"{i}.png" for i in cat["id_str"]] + ["complete"])
    arrays = np.concatenate([train_images, test_images])
    for i, src in enumerate(cat["src"]):
        np.testing.assert_array_equal(png_pixels(src), arrays[i])  # lossless: the HDF5 pixels exactly

    catalog = sources.canonical_catalog(raw)
    assert list(catalog.columns) == CATALOG_COLUMNS
    assert list(catalog["src"]) == list(cat["src"])
    assert list(catalog["label_name"]) == [GALAXY_MNIST_CLASSES[i] for i in cat["label"]]
    # and the store decodes them back to the release's arrays, row for row
    build_store(catalog, tmp_path / "store", 64, threads=1)
    np.testing.assert_array_equal(open_images(tmp_path / "store"), arrays)

    hits = http_server.hits
    assert sorted(hits) == sorted(f"/{n}" for n in H5_NAMES)
    written = {k: v for k, v in tree(cache).items() if not k.startswith(".verified")}
    again = sources.galaxy_mnist_64(cache, resources=resources, timeout=5, retries=1)
    assert http_server.hits == hits  # second call: cache only
    # no second decompression and no PNG written again (.verified only gains the md5 memos of the .gz files)
    assert {k: v for k, v in tree(cache).items() if not k.startswith(".verified")} == written
    pd.testing.assert_frame_equal(again.catalog, raw.catalog)


def test_galaxy_mnist_64_from_local_dir_and_a_half_written_png_folder(tmp_path, dead_url_base):
    local = tmp_path / "local"
    release = make_hdf5_release(local, n_train=4, n_test=4)
    md5 = release["md5"]
    resources = tuple(Resource(f"{dead_url_base}/{n}", md5[n]) for n in H5_NAMES)
    cache = tmp_path / "cache"
    # a folder left without its completion mark (a killed run, an older version) is written again
    stale = cache / f"pngs-{md5[H5_NAMES[0]][:8]}-{md5[H5_NAMES[1]][:8]}"
    stale.mkdir(parents=True)
    (stale / "train_galaxy_0.png").write_bytes(b"half a PNG")
    raw = sources.galaxy_mnist_64(cache, local_dir=str(local), resources=resources, timeout=5)
    assert len(raw.catalog) == 8
    assert all(Path(p).parent == stale for p in raw.catalog["src"])
    assert (stale / "complete").is_file()
    train = release["arrays"][H5_NAMES[0]][0]
    for i, src in enumerate(raw.catalog["src"][:4]):
        np.testing.assert_array_equal(png_pixels(src), train[i])


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
    # no HDF5, no PNG folder, no temporary: only the md5 memos of the (matching) local files
    assert [n for n in os.listdir(cache) if n != ".verified"] == []


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
    assert list(cat.columns) == ["id_str", "label", "split", "src"]
    assert list(cat["id_str"]) == ["g1", "g2", "g3", "g4"]  # default id: the file name without its image suffix
    assert list(cat["label"]) == [0, 1, 2, 0]
    assert list(cat["split"]) == [""] * 4
    assert list(cat["src"]) == [str(user_images / "imgs" / n) for n in ("g1.png", "g2.jpg", "g3.PNG", "g4.png")]
    assert raw.classes == tuple(CLASSES)
    # what the catalog was, nothing about pixels (blank images are the store's to report)
    assert raw.record == {"catalog": str(path), "catalog_md5": md5_file(path)}
    sources.validate(raw)


def test_user_catalog_relative_paths_follow_the_catalog_not_the_cwd(user_images, tmp_path, monkeypatch):
    path = user_images / "catalog.csv"
    pd.DataFrame({"file_loc": ["imgs/g1.png", "imgs/g2.jpg", "imgs/g3.PNG"],
                  "label": ["spiral", "elliptical", "merger"]}).to_csv(path, index=False)
    expected = [str(user_images / "imgs" / n) for n in ("g1.png", "g2.jpg", "g3.PNG")]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    raw = sources.user_catalog(str(path), CLASSES)
    assert list(raw.catalog["src"]) == expected
    # a catalog named relative to the cwd still gives absolute srcs: the store stage finds them from anywhere
    monkeypatch.chdir(tmp_path)
    raw = sources.user_catalog(os.path.relpath(path, tmp_path), CLASSES)
    monkeypatch.chdir(elsewhere)
    assert list(raw.catalog["src"]) == expected and all(Path(p).is_file() for p in raw.catalog["src"])


def test_user_catalog_parquet_with_int_labels_ids_splits_and_absolute_paths(user_images, tmp_path):
    path = tmp_path / "meta" / "cat.parquet"  # catalog in another folder: absolute file_loc
    path.parent.mkdir()
    files = [str(user_images / "imgs" / n) for n in ("g1.png", "g2.jpg", "g3.PNG", "g4.png")]
    pd.DataFrame({"file_loc": files,
                  "label": np.array([2, 1, 0, 1], dtype=np.int64),
                  "id_str": ["a", "b", "c", "d"],
                  "split": ["train", "train", "test", None]}).to_parquet(path, index=False)
    raw = sources.user_catalog(path, CLASSES)
    cat = raw.catalog
    assert list(cat["id_str"]) == ["a", "b", "c", "d"]
    assert list(cat["label"]) == [2, 1, 0, 1]
    assert list(cat["split"]) == ["train", "train", "test", ""]
    assert list(cat["src"]) == files

    before = tree(tmp_path)
    catalog = sources.canonical_catalog(raw)
    assert tree(tmp_path) == before  # nothing copied: the store reads the user's own files
    assert list(catalog.columns) == CATALOG_COLUMNS
    assert list(catalog["id_str"]) == ["a", "b", "c", "d"]  # ids never become file names
    assert list(catalog["src"]) == files  # g3.PNG as the user named it
    assert list(catalog["label_name"]) == ["merger", "elliptical", "spiral", "elliptical"]
    assert list(catalog["split"]) == ["train", "train", "test", ""]


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


def test_user_catalog_without_data_classes_reads_its_own_class_names_sorted(user_images):
    """Issue 27: a catalog labelled round/cigar/edge/spiral needs no class list; the names it holds, sorted."""
    path = _csv(user_images, file_loc=["imgs/g1.png", "imgs/g2.jpg", "imgs/g3.PNG", "imgs/g4.png"],
                label=["round", "edge", "spiral", "cigar"])
    raw = sources.user_catalog(path, [])
    assert raw.classes == ("cigar", "edge", "round", "spiral")
    assert list(raw.catalog["label"]) == [2, 1, 3, 0]
    assert raw.record["classes_from_catalog"] == ["cigar", "edge", "round", "spiral"]
    sources.validate(raw)
    # named explicitly, the catalog's names keep the given order and the record says nothing was read
    raw = sources.user_catalog(path, ["spiral", "round", "edge", "cigar"])
    assert list(raw.catalog["label"]) == [1, 2, 0, 3] and "classes_from_catalog" not in raw.record


@pytest.mark.parametrize("labels, classes", [
    (["unbarred_spiral", "smooth_round", "edge_on_disk", "smooth_cigar"], list(GALAXY_MNIST_CLASSES)),
    (["edge_on_disk", "smooth_round", "edge_on_disk", "smooth_round"], ["smooth_round", "edge_on_disk"]),
    ([3, 0, 1, 2], list(GALAXY_MNIST_CLASSES)),  # GalaxyMNIST's integer labels, as they always were
], ids=["galaxy-mnist-names", "some-galaxy-mnist-names", "galaxy-mnist-numbers"])
def test_user_catalog_of_galaxy_mnist_labels_keeps_galaxy_mnists_order(user_images, labels, classes):
    path = _csv(user_images, file_loc=["imgs/g1.png", "imgs/g2.jpg", "imgs/g3.PNG", "imgs/g4.png"], label=labels)
    raw = sources.user_catalog(path, [])
    assert list(raw.classes) == classes
    assert [raw.classes[i] for i in raw.catalog["label"]] == [classes[v] if isinstance(v, int) else v for v in labels]


def test_user_catalog_of_ten_class_numbers_names_each_class_by_its_number(user_images):
    """All of Galaxy10 DECaLS as integers 0..9: ten classes "0".."9" in numeric order, label i = class i."""
    for i in range(10):
        save_image(user_images / "ten" / f"t{i}.png", 10 * i)
    labels = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    path = _csv(user_images, file_loc=[f"ten/t{i}.png" for i in range(10)], label=labels)
    raw = sources.user_catalog(path, [])
    assert raw.classes == tuple(str(i) for i in range(10))
    assert list(raw.catalog["label"]) == labels
    # numbers with gaps are names, not indexes: 0, 2, 5 are classes "0", "2", "5"
    path = _csv(user_images, file_loc=["imgs/g1.png", "imgs/g2.jpg", "imgs/g3.PNG"], label=[5, 0, 2])
    raw = sources.user_catalog(path, [])
    assert raw.classes == ("0", "2", "5") and list(raw.catalog["label"]) == [2, 0, 1]


@pytest.mark.parametrize("labels, message", [
    (["spiral", "3", "edge"], "row 1: label '3' mixes class numbers and class names in one column; use names "
                              "throughout, or list the classes in data.classes"),
    (["spiral", "spiral", "spiral"], "every galaxy has label 'spiral'; a classifier needs at least 2 classes"),
    (["", "", ""], "no galaxy has a label; label some (galaxy-label), or list the classes in data.classes"),
    ([1, -2, 0], "label -2 is negative; class numbers start at 0"),
    (["spiral", "", "3"], "row 2: label '3' mixes class numbers and class names in one column; use names "
                          "throughout, or list the classes in data.classes"),
], ids=["mixed", "one-class", "none-labelled", "negative", "mixed-after-an-empty-row"])
def test_user_catalog_classes_it_cannot_read_are_one_line(user_images, labels, message):
    path = _csv(user_images, file_loc=["imgs/g1.png", "imgs/g2.jpg", "imgs/g3.PNG"], label=labels)
    with pytest.raises(PipelineError) as info:
        sources.user_catalog(path, [])
    assert str(info.value) == f"{path}: {message}"


@pytest.mark.parametrize("classes", [CLASSES, []], ids=["data.classes", "read-from-the-catalog"])
def test_issue34_an_empty_label_is_an_unlabelled_galaxy_kept_in_the_catalog(user_images, classes):
    path = _csv(user_images, file_loc=["imgs/g1.png", "imgs/g2.jpg", "imgs/g3.PNG", "imgs/g4.png", "imgs/g5.jpg"],
                label=["spiral", "", "merger", "  ", "elliptical"])
    raw = sources.user_catalog(path, classes)
    assert set(raw.classes) == set(CLASSES)
    assert list(raw.catalog["label"] == -1) == [False, True, False, True, False]
    catalog = sources.canonical_catalog(raw)
    assert list(catalog["label_name"]) == ["spiral", "", "merger", "", "elliptical"]


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


def test_user_catalog_csv_ids_are_kept_as_written(user_images):
    path = _csv(user_images, file_loc=["imgs/g1.png", "imgs/g2.jpg", "imgs/g3.PNG", "imgs/g4.png"],
                label=["spiral", "elliptical", "merger", "spiral"], id_str=["007", "1.10", "NA", "12"])
    assert list(sources.user_catalog(path, CLASSES).catalog["id_str"]) == ["007", "1.10", "NA", "12"]


def test_user_catalog_only_stats_files_and_the_store_names_an_unreadable_ones_row(user_images, tmp_path):
    """Every fetch runs user_catalog, so it only checks each file exists; the store decodes each file once
    and names the row and id, which are the user's catalog row and id (the canonical catalog keeps the order).
    Here the file is text; tests/test_store.py covers the same message and the no-leftovers part directly."""
    broken = user_images / "imgs" / "broken.png"
    broken.write_bytes(b"this is text, not a PNG")
    path = _csv(user_images, file_loc=["imgs/g1.png", "imgs/g2.jpg", "imgs/broken.png"],
                label=["spiral", "elliptical", "merger"])
    raw = sources.user_catalog(path, CLASSES)
    assert list(raw.catalog["src"])[2] == str(broken)
    with pytest.raises(PipelineError) as info:
        build_store(sources.canonical_catalog(raw), tmp_path / "store", 8, threads=1)
    msg = str(info.value)
    assert msg.startswith(f"catalog row 2 (id 'broken'): {broken}: cannot decode image (UnidentifiedImageError")
    assert "\n" not in msg and not (tmp_path / "store").exists()


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_user_image_is_refused_by_the_store(user_images, tmp_path, suffix):
    """A cut-off file opens (its header is whole) and then fails on its pixel data: the store must read every
    pixel, not just the header, so a truncated galaxy never trains as a half-grey image."""
    cut = user_images / "imgs" / f"cut{suffix}"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(cut)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    path = _csv(user_images, file_loc=["imgs/g1.png", "imgs/g2.jpg", f"imgs/cut{suffix}"],
                label=["spiral", "elliptical", "merger"])
    catalog = sources.canonical_catalog(sources.user_catalog(path, CLASSES))
    with pytest.raises(PipelineError) as info:
        build_store(catalog, tmp_path / "store", 8, threads=1)
    assert str(info.value).startswith(f"catalog row 2 (id 'cut'): {cut}: cannot decode image (OSError")
    assert not (tmp_path / "store").exists()


def test_user_catalog_missing_image_names_the_row(user_images):
    """The one stat per file that the fingerprint makes is also the check that the file is there."""
    path = _csv(user_images, file_loc=["imgs/g1.png", "imgs/nope.png"], label=["spiral", "elliptical"])
    raw = sources.user_catalog(path, CLASSES)
    with pytest.raises(PipelineError) as info:
        sources.source_fingerprint(raw.catalog, {"record": raw.record})
    assert str(info.value) == (f"{path}: row 1: image {user_images / 'imgs' / 'nope.png'} not found; "
                               f"fix file_loc or remove the row")


def test_blank_user_images_are_kept_by_the_catalog_and_reported_by_the_store(tmp_path, capsys):
    Image.new("RGB", (8, 8), (0, 0, 0)).save(tmp_path / "blank.png")
    almost = np.zeros((8, 8, 3), np.uint8)
    almost[0, 0, 0] = 9  # one channel of one pixel differs: not blank
    Image.fromarray(almost).save(tmp_path / "almost.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "ok.png")
    pd.DataFrame({"file_loc": ["blank.png", "almost.png", "ok.png"], "label": ["a", "b", "a"]}).to_csv(
        tmp_path / "c.csv", index=False)
    raw = sources.user_catalog(tmp_path / "c.csv", ["a", "b"])
    assert list(raw.catalog["id_str"]) == ["blank", "almost", "ok"]  # kept, not dropped
    record = build_store(sources.canonical_catalog(raw), tmp_path / "store", 8, threads=1)
    assert record["constant_images"] == ["blank"] and record["n_images"] == 3
    assert open_images(tmp_path / "store").shape == (3, 8, 8, 3)
    assert "1 image(s) have one value everywhere" in capsys.readouterr().err


def test_user_catalog_missing_or_unreadable_catalog(tmp_path):
    with pytest.raises(PipelineError, match="data.catalog: .*nope.csv not found"):
        sources.user_catalog(tmp_path / "nope.csv", CLASSES)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 but not really")
    with pytest.raises(PipelineError) as info:
        sources.user_catalog(bad, CLASSES)
    assert str(info.value).startswith(f"{bad}: not a readable catalog")


# --- (d) validate() ----------------------------------------------------------------------------------------

# --- (d) validate(), canonical_catalog() and source_fingerprint() -----------------------------------------

def raw_from(ids, labels, splits=None, classes=("a", "b", "c"), src=None) -> RawData:
    splits = splits if splits is not None else [""] * len(ids)
    src = src if src is not None else [f"/survey/{i}.png" for i in range(len(ids))]
    return RawData(pd.DataFrame({"id_str": pd.Series(ids, dtype=object), "label": np.array(labels, dtype=np.int64),
                                 "split": splits, "src": src}), tuple(classes))


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


@pytest.mark.parametrize("bad", [3, -2])  # -1 is an unlabelled galaxy
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


@pytest.mark.parametrize("bad_id", ["", "   "])
def test_validate_refuses_an_empty_id(bad_id):
    with pytest.raises(PipelineError) as info:
        sources.validate(raw_from(["x", bad_id, "z"], [0, 1, 2]))
    assert str(info.value) == "catalog: row 1 has an empty id_str; give every galaxy an id"


@pytest.mark.parametrize("missing", [None, np.nan])
def test_validate_refuses_a_missing_id(missing):
    with pytest.raises(PipelineError, match="row 1 has an empty id_str"):
        sources.validate(raw_from(["x", missing, "z"], [0, 1, 2]))


@pytest.mark.parametrize("bad_id", ["a\x00b", "a\nb", "a\rb", "a\tb", "a\x1bb", "a\x7fb"])
def test_validate_refuses_control_characters_in_one_line(bad_id):
    with pytest.raises(PipelineError) as info:
        sources.validate(raw_from(["x", "y", bad_id], [0, 1, 2]))
    msg = str(info.value)
    assert msg.startswith(f"catalog: row 2: id_str {bad_id!r} holds a control character")
    assert "\n" not in msg and "\r" not in msg and "\x00" not in msg  # the id is shown escaped


def test_ids_are_data_kept_verbatim_however_they_look():
    """Nothing is named after an id any more, so path-like, unicode and very long ids are all fine."""
    ids = ["../../escape", "/abs/path", "a/b\\c", " padded ", "galaxie_été_銀河", "x" * 5000, ".", "0", "nan"]
    raw = raw_from(ids, np.arange(len(ids)) % 3)
    sources.validate(raw)
    assert list(sources.canonical_catalog(raw)["id_str"]) == ids


@pytest.mark.parametrize("ids, labels, splits, message", [
    (["x", "x", "z"], [0, 1, 2], None, "duplicate id_str"),
    (["x", "y", "z"], [0, 1, 5], None, "out of range"),
    (["x", "y", "z"], [0, 0, 0], None, "have no examples"),
    (["x", "y\n", "z"], [0, 1, 2], None, "control character"),
    (["x", "y", "z"], [0, 1, 2], ["train", "valid", ""], "not understood"),
])
def test_canonical_catalog_validates(ids, labels, splits, message):
    """Whatever fetch_data writes as catalog.csv has passed validate()."""
    with pytest.raises(PipelineError, match=message):
        sources.canonical_catalog(raw_from(ids, labels, splits))


def test_canonical_catalog_columns_order_types_and_absolute_src(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    frame = pd.DataFrame({"split": ["", "test", "train"], "src": ["imgs/g7.png", "/abs/g1.jpg", "../up/g2.PNG"],
                          "label": np.array([2, 0, 1]), "id_str": [7, 1, 2], "filename": ["x", "y", "z"]},
                         index=[10, 3, 5])
    catalog = sources.canonical_catalog(RawData(frame, ("a", "b", "c")))
    assert list(catalog.columns) == CATALOG_COLUMNS  # in this order, extra source columns dropped
    assert list(catalog.index) == [0, 1, 2]
    assert list(catalog["id_str"]) == ["7", "1", "2"]  # ids are strings
    assert list(catalog["src"]) == [str(tmp_path / "imgs/g7.png"), "/abs/g1.jpg", str(tmp_path.parent / "up/g2.PNG")]
    assert list(catalog["label"]) == [2, 0, 1] and list(catalog["label_name"]) == ["c", "a", "b"]
    assert list(catalog["split"]) == ["", "test", "train"]


def test_source_fingerprint_sees_rows_files_and_record(tmp_path):
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(tmp_path / f"g{i}.png")
    catalog = sources.canonical_catalog(raw_from(["x", "y", "z"], [0, 1, 2],
                                                 src=[str(tmp_path / f"g{i}.png") for i in range(3)]))
    record = {"catalog": "c.csv", "catalog_md5": "0" * 32}
    first = sources.source_fingerprint(catalog, record)
    assert len(first) == 64 and first == sources.source_fingerprint(catalog.copy(), dict(record))
    for path in catalog["src"]:
        np.asarray(Image.open(path))  # reading the sources (as the store does) changes nothing
    assert sources.source_fingerprint(catalog, record) == first
    assert sources.source_fingerprint(catalog, {**record, "catalog_md5": "1" * 32}) != first
    assert sources.source_fingerprint(catalog.iloc[::-1].reset_index(drop=True), record) != first  # row order
    assert sources.source_fingerprint(catalog.assign(label=[1, 1, 2]), record) != first
    touched = Path(catalog["src"][1])
    stat = touched.stat()
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # same path, new pixels
    assert sources.source_fingerprint(catalog, record) != first


# --- (e) synthetic() ---------------------------------------------------------------------------------------

def test_synthetic_is_balanced_unique_deterministic_and_drawn_once(tmp_path):
    from galaxy_finetune.data.synthetic import make_synthetic

    cache = tmp_path / "cache"
    raw = sources.synthetic(n_per_class=3, image_size=16, seed=7, cache_dir=cache)
    cat = raw.catalog
    assert len(cat) == 3 * N_CLASSES
    assert np.bincount(cat["label"], minlength=N_CLASSES).tolist() == [3] * N_CLASSES
    assert cat["id_str"].is_unique
    assert list(cat["id_str"]) == [f"synthetic_{i:06d}" for i in range(len(cat))]
    assert set(cat["split"]) == {""}
    assert raw.classes == GALAXY_MNIST_CLASSES
    assert raw.record["seed"] == 7 and raw.record["n_per_class"] == 3 and raw.record["image_size"] == 16
    sources.validate(raw)
    (folder,) = cache.iterdir()  # one folder per parameter set (and generator version)
    assert folder.name.startswith("synthetic-3-16-7-")
    assert list(cat["src"]) == [str(folder / f"{i}.png") for i in cat["id_str"]]
    images, labels = make_synthetic(3, 7, 16)
    pixels = np.stack([png_pixels(p) for p in cat["src"]])
    np.testing.assert_array_equal(pixels, images)  # the generator's galaxies, pixel for pixel
    assert list(cat["label"]) == list(labels)

    drawn = tree(cache)
    again = sources.synthetic(n_per_class=3, image_size=16, seed=7, cache_dir=cache)
    pd.testing.assert_frame_equal(again.catalog, cat)
    assert tree(cache) == drawn  # drawn once, then reused
    fresh = sources.synthetic(n_per_class=3, image_size=16, seed=7, cache_dir=tmp_path / "elsewhere")
    np.testing.assert_array_equal(np.stack([png_pixels(p) for p in fresh.catalog["src"]]), pixels)  # deterministic
    other = sources.synthetic(n_per_class=3, image_size=16, seed=8, cache_dir=cache)
    assert Path(other.catalog["src"][0]).parent != folder
    assert not np.array_equal(np.stack([png_pixels(p) for p in other.catalog["src"]]), pixels)

    catalog = sources.canonical_catalog(raw)
    assert list(catalog.columns) == CATALOG_COLUMNS
    assert list(catalog["src"]) == list(cat["src"])
    assert list(catalog["label_name"]) == [GALAXY_MNIST_CLASSES[i] for i in labels]


def test_synthetic_in_a_relative_cache_gives_absolute_srcs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    catalog = sources.canonical_catalog(sources.synthetic(n_per_class=1, image_size=16, seed=0, cache_dir=Path("c")))
    monkeypatch.chdir(tmp_path.parent)
    assert all(Path(p).is_absolute() and Path(p).is_relative_to(tmp_path / "c") and Path(p).is_file()
               for p in catalog["src"])
