"""galaxy-datasets' datasets by name (data.source: gz2, tidal, demo_rings, ...), through the library's own code.

Each public dataset is a function `galaxy_datasets.shared.<name>.<name>(root, train, download)`. It names its files
(URL, md5) for `download_utils.DatasetDownloader` and reads a folder laid out its way: the train and test catalog
parquets at the root, the images under root/images. Here:

1. `library_resources` reads that file list from the library itself, downloading nothing (no URL is copied here);
2. `official_root` gets each file through `sources.obtain` (data.local_dir first, md5 memo, retries, the offline
   switch: `Unreachable`), unpacks the archive with `download.extract_tar` (no links, nothing escaping), and lays the
   library's folder out in the cache, keyed by the files' md5s (links to the files, not copies);
3. `read_official` reads that folder with the library's function (download=False), for train and test, and
   keeps each galaxy's id (`sources.catalog_ids`), image file and the task's labels or targets.

The internal datasets (core.classes.LIBRARY_INTERNAL) are one line: their URLs are internal to the Zoobot team.
"""
from __future__ import annotations

import hashlib
import importlib
import os
import re
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd

from galaxy_finetune.core.classes import (DATASET_CLASSES, GALAXY_MNIST_CLASSES, LIBRARY_INTERNAL, LIBRARY_PUBLIC,
                                          VOTE_SCHEMAS, internal_dataset)
from galaxy_finetune.core.errors import PipelineError
from galaxy_finetune.core.task import Task
from galaxy_finetune.data.download import extract_tar, known_md5
from galaxy_finetune.data.sources import RawData, Resource, catalog_ids, obtain

PUBLIC, INTERNAL = LIBRARY_PUBLIC, LIBRARY_INTERNAL
SCHEMAS = VOTE_SCHEMAS                                                  # vote datasets -> Zoobot schema name
CLASSES = {name: DATASET_CLASSES[name] for name in PUBLIC if name in DATASET_CLASSES}  # classification datasets
UNVERIFIED = "unverified (no md5 published)"


def check_public(name: str) -> None:
    """One line unless `name` is a public galaxy-datasets dataset."""
    if name in INTERNAL:
        raise PipelineError(internal_dataset(name))
    if name not in PUBLIC:
        raise PipelineError(f"{name!r} is not a public galaxy-datasets dataset; use one of {', '.join(PUBLIC)}")


def loader(name: str):
    """The library's function for `name`, imported from its own module (galaxy_datasets.pytorch prints warnings;
    demo_gz_candels is not re-exported by galaxy_datasets.shared)."""
    check_public(name)
    return getattr(importlib.import_module(f"galaxy_datasets.shared.{name}"), name)


class _Listed(Exception):
    """Raised by the stand-in downloader once the library has handed it the file list."""

    def __init__(self, resources):
        super().__init__("resources listed")
        self.resources = resources


class _ListingDownloader:
    """Takes DatasetDownloader's place while the library's function runs: keeps the list, creates nothing."""

    def __init__(self, root, resources, *args, **kwargs):
        raise _Listed(resources)


def library_resources(name: str) -> tuple[Resource, ...]:
    """The files galaxy-datasets lists for `name` (train catalog, test catalog, images archive), as Resources.

    Every public function builds `download_utils.DatasetDownloader(root, resources, ...)` before touching a file;
    for the length of one call that class is a stand-in that records `resources` and stops the call there. No
    folder is made, no file read, no socket opened."""
    from galaxy_datasets.shared import download_utils

    function = loader(name)
    with mock.patch.object(download_utils, "DatasetDownloader", _ListingDownloader):
        try:
            function(os.path.join(os.sep, "nonexistent", "galaxy-datasets", name), True, False)
        except _Listed as listed:
            return tuple(Resource(url, md5) for url, md5 in listed.resources)
    raise PipelineError(f"galaxy_datasets.shared.{name}: listed no files (galaxy-datasets is not 0.0.25?)")


def _split_files(name: str, resources: tuple[Resource, ...]) -> tuple[Resource, Resource, Resource]:
    """(train catalog, test catalog, image archive) among a dataset's resources."""
    named = {r.filename: r for r in resources}
    train = [r for f, r in named.items() if f.endswith("_train_catalog.parquet")]
    test = [r for f, r in named.items() if f.endswith("_test_catalog.parquet")]
    archive = [r for f, r in named.items() if f.endswith((".tar.gz", ".tgz", ".tar.xz", ".tar"))]
    if not (len(train) == len(test) == len(archive) == 1 and len(resources) == 3):
        raise PipelineError(f"galaxy-datasets {name}: expected a train and a test catalog parquet and an image "
                            f"archive, got {sorted(named)}")
    return train[0], test[0], archive[0]


def _link(link: Path, target: Path) -> None:
    """`link` -> `target`, replaced atomically when it points elsewhere (a file moved in data.local_dir)."""
    target = str(Path(target).absolute())
    if link.is_symlink() and os.readlink(link) == target:
        return
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def official_root(name: str, cache_dir: Path, local_dir: str = "", timeout: float = 60, retries: int = 3,
                  resources: tuple[Resource, ...] | None = None) -> tuple[Path, Path, list[dict]]:
    """The library's layout for `name` in `cache_dir`: (root, the archive's path, what came from where).

    root-<key>/ holds links to the two catalogs and images/ -> the unpacked archive's images (images-<md5>/, reused
    by every root with that archive); key: the files' md5s. A file with no published md5 (gz_hubble's images) is
    taken as it comes and its md5 computed and recorded as unverified."""
    resources = tuple(resources) if resources else library_resources(name)
    train, test, archive = _split_files(name, resources)
    cache_dir = Path(cache_dir).absolute()
    cache_dir.mkdir(parents=True, exist_ok=True)
    paths = {r: obtain(r, cache_dir, local_dir, timeout, retries) for r in resources}
    md5 = {r: r.md5 or known_md5(paths[r], cache_dir / ".verified") for r in resources}
    unpacked = cache_dir / f"images-{md5[archive]}"
    if not unpacked.is_dir():
        extract_tar(paths[archive], unpacked)
    # archives hold images/<...>; tolerate one without that top folder
    images = unpacked / "images" if (unpacked / "images").is_dir() else unpacked
    key = hashlib.sha256(" ".join(md5[r] for r in (train, test, archive)).encode()).hexdigest()[:16]
    root = cache_dir / f"root-{key}"
    root.mkdir(exist_ok=True)
    for r in (train, test):
        _link(root / r.filename, paths[r])
    _link(root / "images", images)
    record = [{"file": r.filename, "url": r.url, "md5": md5[r], "path": str(paths[r]),
               **({} if r.md5 else {"check": UNVERIFIED})} for r in resources]
    return root, paths[archive], record


def _read_split(name: str, root: Path, train: bool, where: Path) -> tuple[pd.DataFrame, list[str]]:
    """The library's (catalog, label_cols) for one split, its errors as one line naming the catalog file."""
    try:
        return loader(name)(str(root), train, False)
    except KeyError as exc:
        missing = exc.args[0] if exc.args else exc
    except Exception as exc:  # pyarrow and pandas raise many types for a bad or incomplete file
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        field = re.search(r"No match for FieldRef\.Name\((.*?)\)", text)
        if not field:
            raise PipelineError(f"{where}: galaxy_datasets.shared.{name} cannot read it ({text}); replace the file "
                                f"or delete it and retry") from None
        missing = field.group(1)
    raise PipelineError(f"{where}: missing column(s) [{str(missing)!r}] that galaxy_datasets.shared.{name} "
                        f"reads") from None


def _plain(value):
    """A numpy scalar as the Python number it holds, for messages (2.5, not np.float64(2.5))."""
    return value.item() if isinstance(value, np.generic) else value


def targets(frame: pd.DataFrame, task: Task, where: str | Path) -> pd.DataFrame:
    """A regression or votes task's target columns of `frame`, checked (Task.target_values), named as in the source.

    votes: every answer's count, a question nobody was asked (NaN) counts 0, each a whole number >= 0 (int64);
    regression: each value a number in [0, 1] (galaxy-datasets' regression targets are vote fractions)."""
    missing = task.missing_targets(frame.columns)
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise PipelineError(f"{where}: no {task.kind} column(s) {missing[:3]}{more} (named by {task.targets_param}); "
                            f"its columns include {[c for c in frame.columns if c not in ('file_loc',)][:8]}")
    out = {}
    for col in task.label_cols:
        values, bad, need = task.target_values(frame[col].to_numpy(), unit_interval=True)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise PipelineError(f"{where}: column {col!r}, row {row}: {_plain(frame[col].iloc[row])!r} is not {need} "
                                f"({int(bad.sum())} such value(s))")
        out[col] = values
    return pd.DataFrame(out, index=frame.index).astype({c: task.target_dtype for c in task.label_cols})


def read_official(name: str, root: Path, task: Task, origin: str | Path = "") -> RawData:
    """`name`'s galaxies from a folder in the library's layout (see `official_root`), read by the library's own
    function for train and test, train rows first.

    catalog: id_str, label, split, src (the image's real path), then for regression/votes the task's target
    columns (label -1). Classification: the dataset's classes (CLASSES) from the library's label column.
    `origin` names the archive in the message about missing images."""
    check_public(name)
    task.check_source(name, name in CLASSES)
    root = Path(root).absolute()
    images = str(root / "images")
    real_images = os.path.realpath(images)
    parts = []
    for split, train in (("train", True), ("test", False)):
        link = next(root.glob(f"*_{split}_catalog.parquet"), root / f"{name}_{split}_catalog.parquet")
        where = Path(os.path.realpath(link))  # messages name the file as the user has it (data.local_dir, cache)
        frame, label_cols = _read_split(name, root, train, where)
        src = [real_images + f[len(images):] if f.startswith(images) else f for f in frame["file_loc"].astype(str)]
        part = pd.DataFrame({"id_str": catalog_ids(frame, src), "label": -1, "split": split, "src": src})
        if task.by_class:
            part["label"] = _class_labels(frame, label_cols[0], CLASSES[name], where)
        else:
            part = pd.concat([part, targets(frame, task, where).set_axis(part.index)], axis=1)
        parts.append(part)
    catalog = pd.concat(parts, ignore_index=True)
    absent = [p for p in catalog["src"] if not os.path.isfile(p)]
    if absent:
        origin = origin or images
        raise PipelineError(f"{origin}: {len(absent)} image(s) named in the catalogs are missing, e.g. "
                            f"{os.path.basename(absent[0])}; delete {real_images} and the archive, then retry")
    return RawData(catalog, CLASSES[name] if task.by_class else (), record={"dataset": f"galaxy-datasets {name}"})


def _class_labels(frame: pd.DataFrame, column: str, classes: tuple[str, ...], where: Path) -> np.ndarray:
    if column not in frame.columns:
        raise PipelineError(f"{where}: missing column(s) [{column!r}] (the labels)")
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = ~values.isin(range(len(classes)))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise PipelineError(f"{where}: {column} {_plain(frame[column].iloc[row])!r} in row {row} is not a class "
                            f"0..{len(classes) - 1} ({', '.join(classes)})")
    return values.astype(np.int64).to_numpy()


def dataset(name: str, task: Task, cache_dir: Path, local_dir: str = "", timeout: float = 60, retries: int = 3,
            resources: tuple[Resource, ...] | None = None) -> RawData:
    """A public galaxy-datasets dataset as RawData: its files had (see `official_root`), read by the library.

    `resources` replaces the library's list (tests serve or place fabricated files). Raises Unreachable when a
    file is neither in `local_dir`, nor cached, nor downloadable (the offline stand-in then applies)."""
    check_public(name)
    root, archive, record = official_root(name, cache_dir, local_dir, timeout, retries, resources)
    raw = read_official(name, root, task, origin=archive)
    raw.record = {**raw.record, "root": str(root), "resources": record}
    return raw


def galaxy_mnist(cache_dir: Path, local_dir: str = "", timeout: float = 60, retries: int = 3,
                 resources: tuple[Resource, ...] | None = None) -> RawData:
    """The galaxy-datasets GalaxyMNIST release (224 px JPEGs, 8000 train / 2000 test), through
    galaxy_finetune.data.zoo: the library's own file list (or `resources`) and reader."""
    return dataset("galaxy_mnist", Task("classification", GALAXY_MNIST_CLASSES), cache_dir, local_dir, timeout,
                       retries, resources)
