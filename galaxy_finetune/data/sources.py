"""Dataset sources, each turned into one canonical form in data/raw/.

data/raw/catalog.csv has one row per galaxy: id_str, label (int), label_name, split (train/val/test, or
empty where the source has no canonical split) and src, the absolute path of its image file. Nothing is
copied or decoded here: the store stage decodes each src once into data/store/. Sources that come as
arrays (the 64 px HDF5 release, the synthetic galaxies) are written once as PNGs into the download cache.
An id is data, never a file name: any string but an empty one or one with control characters is kept as is.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from galaxy_finetune.core.classes import GALAXY_MNIST_CLASSES
from galaxy_finetune.core.errors import PipelineError
from galaxy_finetune.core.files import atomic_path
from galaxy_finetune.core.task import UNLABELLED, Task, numbers
from galaxy_finetune.data.download import check_md5, download, gunzip, md5sum

CATALOG_COLUMNS = ["id_str", "label", "label_name", "split", "src"]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".fits", ".fit", ".fits.gz", ".fit.gz")  # any case


@dataclass(frozen=True)
class Resource:
    url: str
    md5: str | None  # None: nothing published to check against (galaxy-datasets' gz_hubble images)

    @property
    def filename(self) -> str:
        return self.url.split("?")[0].rsplit("/", 1)[-1]


# The original 64 px HDF5 release (github.com/mwalmsley/galaxy_mnist).
GALAXY_MNIST_64 = (
    Resource("https://dl.dropboxusercontent.com/s/5a14de0o7slyif9/train_dataset.hdf5.gz",
             "e408ae294e9b975482dc1abffeb373a6"),
    Resource("https://dl.dropboxusercontent.com/s/5rza12nn24cwd2k/test_dataset.hdf5.gz",
             "7a940e4cea64a8b7cb60339098f74490"),
)


@dataclass
class RawData:
    """A source's galaxies before they are written out: a catalog plus either files or arrays."""
    catalog: pd.DataFrame            # id_str, label, split, src (absolute path of the image file)
    classes: tuple[str, ...]
    record: dict = field(default_factory=dict)  # what was fetched from where, for the manifest


def obtain(resource: Resource, cache_dir: Path, local_dir: str, timeout: float, retries: int) -> Path:
    """A verified copy of `resource`: from `local_dir` if the user put it there, else the download cache."""
    if local_dir:
        local = Path(local_dir) / resource.filename
        if local.is_file() and resource.md5 is None:
            return local  # unverifiable: galaxy_finetune.data.zoo records its md5 as unverified
        if local.is_file():
            check_md5(local, resource.md5, hint=f"replace it with the official file or remove it from {local_dir}",
                      memo_dir=cache_dir / ".verified")
            return local
    return download(resource.url, cache_dir / resource.filename, resource.md5, timeout, retries)


def _resource_record(resources, paths) -> list[dict]:
    return [{"file": r.filename, "url": r.url, "md5": r.md5, "path": str(p)} for r, p in zip(resources, paths)]


def read_hdf5(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W, 3) uint8 and labels (N,) from a GalaxyMNIST HDF5 file, with its shape checked."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            missing = {"images", "labels"} - set(f.keys())
            if missing:
                raise PipelineError(f"{path}: missing HDF5 key(s) {sorted(missing)}; expected 'images' and 'labels'")
            images, labels = f["images"][:], f["labels"][:]
    except OSError as exc:
        raise PipelineError(f"{path}: not a readable HDF5 file ({exc})") from None
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise PipelineError(f"{path}: 'images' must be (N, H, W, 3) uint8, got {images.shape} {images.dtype}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise PipelineError(f"{path}: {len(images)} images but 'labels' has shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise PipelineError(f"{path}: 'labels' must be integers, got {labels.dtype}")
    return images, labels.astype(np.int64)


def galaxy_mnist_64(cache_dir: Path, local_dir: str = "", timeout: float = 60, retries: int = 3,
                    resources: tuple[Resource, ...] = GALAXY_MNIST_64) -> RawData:
    """The original 64 px GalaxyMNIST release: gzipped HDF5 files with images and labels."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    paths = [obtain(r, cache_dir, local_dir, timeout, retries) for r in resources]
    images, frames = [], []
    for gz_path, resource, split in zip(paths, resources, ("train", "test")):
        h5_path = cache_dir / f"{resource.filename.removesuffix('.gz')}.{resource.md5}"
        if not h5_path.is_file():
            gunzip(gz_path, h5_path)
        split_images, labels = read_hdf5(h5_path)
        images.append(split_images)
        frames.append(pd.DataFrame({"id_str": [f"{split}_galaxy_{i}" for i in range(len(labels))],
                                    "label": labels, "split": split}))
    catalog = pd.concat(frames, ignore_index=True)
    folder = cache_dir / f"pngs-{'-'.join(r.md5[:8] for r in resources)}"
    catalog["src"] = [str(folder / f"{i}.png") for i in catalog["id_str"]]
    if not (folder / "complete").is_file():
        write_pngs(np.concatenate(images), catalog["id_str"], folder)
    return RawData(catalog, GALAXY_MNIST_CLASSES, record={"resources": _resource_record(resources, paths)})


def write_pngs(images: np.ndarray, names, folder: Path) -> None:
    """Array galaxies as <name>.png files in a cache folder (names are ours, never user ids)."""
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        for image, name in zip(images, names):
            Image.fromarray(image).save(tmp / f"{name}.png", compress_level=1)
        (tmp / "complete").touch()


def read_catalog_file(path: Path, required: set[str], param: str) -> tuple[pd.DataFrame, list[str]]:
    """A CSV/parquet catalog with its required columns, and its file_loc paths made absolute (relative ones
    against the catalog's folder). Plain strings, not Path objects: at 10^5 rows on every fetch that matters."""
    if not path.is_file():
        raise PipelineError(f"{param}: {path} not found; point it at a CSV or parquet catalog")
    try:
        # ids and splits are text as written: 007 stays 007, NA stays NA (an empty id is refused later)
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(
            path, dtype={"id_str": str, "split": str}, keep_default_na=False, na_values={"label": [""]})
    except Exception as exc:
        raise PipelineError(f"{path}: not a readable catalog ({exc})") from None
    missing = required - set(frame.columns)
    if missing:
        raise PipelineError(f"{path}: missing column(s) {sorted(missing)}; need {' and '.join(sorted(required))}")
    if frame.empty:
        raise PipelineError(f"{path}: the catalog holds no galaxies (a header and no rows); add one row per galaxy")
    base = os.path.abspath(path.parent)
    files = [os.path.normpath(os.path.join(base, p)) for p in frame["file_loc"].astype(str)]  # join keeps absolute p
    return frame, files


def id_from_file(path: str) -> str:
    """A galaxy's id when its catalog gives none: the file's name without its image suffix (both parts of
    .fits.gz), or without its last suffix if it has no image suffix."""
    name = os.path.basename(path)
    suffix = next((s for s in IMAGE_SUFFIXES if name.lower().endswith(s)), os.path.splitext(name)[1])
    return name[:len(name) - len(suffix)]


def catalog_ids(frame: pd.DataFrame, files: list[str]) -> list[str]:
    """The ids of a catalog's galaxies: its id_str column as written, else each file's id_from_file."""
    return frame["id_str"].astype(str).tolist() if "id_str" in frame.columns else [id_from_file(p) for p in files]


def user_catalog(path: str | Path, classes: list[str], task: Task | None = None) -> RawData:
    """Bring your own galaxies: a CSV/parquet with file_loc and, for classification, a label (class name or
    integer) column; for regression the `task.label_cols` columns (numbers), for votes every answer's count column.

    Optional columns: id_str (default: the file's name without its image suffix) and split (train/val/test, galaxy-datasets' layout;
    other columns are ignored). Relative file_loc
    paths are taken relative to the catalog's folder.
    """
    path = Path(path)
    task = task or Task("classification", tuple(classes))
    if not task.by_class:
        return _target_catalog(path, task)
    frame, src = read_catalog_file(path, {"file_loc", "label"}, "data.catalog")
    record = {"catalog": str(path), "catalog_md5": md5sum(path)}
    numbered = False  # classes named by their number ("0", "2", "5"): a label is its class's name, not its index
    if not classes:
        classes = catalog_classes(frame["label"], path)
        record["classes_from_catalog"] = list(classes)
        numbered = classes[0].isdigit()
    classes = list(classes)
    labels = []
    for row, value in enumerate(frame["label"]):
        if _empty(value):
            labels.append(UNLABELLED)  # a galaxy nobody labelled: data for semi-supervised training (train.semi)
            continue
        if numbered:
            labels.append(classes.index(str(int(float(value)))))
        elif isinstance(value, str) and not value.lstrip("-").isdigit():
            if value not in classes:
                raise PipelineError(f"{path}: row {row}: unknown class {value!r}; data.classes is {classes}")
            labels.append(classes.index(value))
        else:
            labels.append(int(value))
            if not 0 <= labels[-1] < len(classes):
                raise PipelineError(f"{path}: row {row}: label {value} out of range 0..{len(classes) - 1}")
    split = frame["split"].fillna("").astype(str) if "split" in frame.columns else ""
    # each file's existence is checked by the one stat source_fingerprint makes; decoding is the store's
    catalog = pd.DataFrame({"id_str": catalog_ids(frame, src), "label": labels, "split": split, "src": src})
    return RawData(catalog, tuple(classes), record=record)


def image_files(source: Path, param: str) -> list[tuple[str, str]]:
    """(id_str, absolute file) of a folder's images (sorted by name; ids as galaxy-classify names them) or of a
    catalog's rows (its id_str, else each file's name); `param` names the source in a message."""
    if source.is_dir():
        root = os.path.abspath(source)
        with os.scandir(root) as entries:
            names = sorted(e.name for e in entries if e.name.lower().endswith(IMAGE_SUFFIXES) and e.is_file())
        if not names:
            raise PipelineError(f"{source}: no {'/'.join(IMAGE_SUFFIXES)} images in this folder")
        return [(id_from_file(n), os.path.join(root, n)) for n in names]
    table, files = read_catalog_file(source, {"file_loc"}, param)
    return list(zip(catalog_ids(table, files), files))


def add_unlabelled(raw: RawData, where: str | Path, task: Task) -> RawData:
    """`raw` with data.unlabelled's galaxies appended as unlabelled ones: a folder's images (ids from their file
    names, as galaxy-classify names them) or a catalog's file_loc rows (its id_str, else the file names)."""
    path = Path(where)
    ids, src = zip(*image_files(path, "data.unlabelled"))
    rows = pd.DataFrame({"id_str": list(ids), "label": UNLABELLED, "split": "", "src": list(src),
                         **{c: np.nan for c in task.label_cols}})
    return RawData(pd.concat([raw.catalog, rows], ignore_index=True), raw.classes,
                   record={**raw.record, "unlabelled": str(path), "n_unlabelled_added": len(rows)})


def _empty(value) -> bool:
    """An empty label cell (NaN, or blank text): the galaxy is unlabelled."""
    return (isinstance(value, str) and not value.strip()) or (not isinstance(value, str) and pd.isna(value))


def _is_index(value) -> bool:
    """A label given as a class index (an integer, or its digits as text) rather than a class name."""
    if isinstance(value, str):
        return value.lstrip("-").isdigit()
    return isinstance(value, (int, np.integer)) or (isinstance(value, (float, np.floating)) and float(value).is_integer())


def catalog_classes(labels: pd.Series, path: Path) -> list[str]:
    """An own catalog's classes when data.classes is empty, read from its label column: the names it holds,
    sorted (GalaxyMNIST's names in GalaxyMNIST's order); integer labels 0..3 are GalaxyMNIST's classes, as they
    always were; other integer labels are classes named by their number ("0", "1", ... in numeric order)."""
    labels = labels[~labels.map(_empty).to_numpy(bool)]  # unlabelled galaxies name no class
    if labels.empty:
        raise PipelineError(f"{path}: no galaxy has a label; label some (galaxy-label), or list the classes in "
                            f"data.classes")
    index = labels.map(_is_index).to_numpy(bool)
    if index.any() and not index.all():
        at = int(np.flatnonzero(index)[0]) if not index[0] else int(np.flatnonzero(~index)[0])
        row = labels.index[at]  # the catalog's row, unlabelled rows counted
        raise PipelineError(f"{path}: row {row}: label {labels.iloc[at]!r} mixes class numbers and class names in "
                            f"one column; use names throughout, or list the classes in data.classes")
    if index.all():
        numbers = sorted({int(float(v)) for v in labels})
        if numbers == list(range(len(GALAXY_MNIST_CLASSES))):
            return list(GALAXY_MNIST_CLASSES)
        if numbers[0] < 0:
            raise PipelineError(f"{path}: label {numbers[0]} is negative; class numbers start at 0")
        return [str(n) for n in numbers]
    names = set(labels.astype(str))
    if names <= set(GALAXY_MNIST_CLASSES):
        return [c for c in GALAXY_MNIST_CLASSES if c in names]
    if len(names) < 2:
        raise PipelineError(f"{path}: every galaxy has label {next(iter(names))!r}; a classifier needs at least 2 "
                            f"classes")
    return sorted(names)


def _target_catalog(path: Path, task: Task) -> RawData:
    """An own catalog for regression or votes: its target columns as floats beside id_str, split and src
    (label -1: no class)."""
    frame, src = read_catalog_file(path, {"file_loc"}, "data.catalog")
    missing = task.missing_targets(frame.columns)
    if missing:
        raise PipelineError(f"{path}: missing {task.kind} column(s) {missing} named by {task.targets_param}; the catalog has "
                            f"{[c for c in frame.columns if c not in ('file_loc', 'id_str', 'split')]}")
    split = frame["split"].fillna("").astype(str) if "split" in frame.columns else ""
    catalog = pd.DataFrame({"id_str": catalog_ids(frame, src), "label": -1, "split": split, "src": src})
    columns = {}
    for col in task.label_cols:  # numbers or empty here; validate() checks each against the task
        values, text = numbers(frame[col])
        if text.any():
            row = int(np.flatnonzero(text)[0])
            raise PipelineError(f"{path}: column {col!r}, row {row}: {frame[col].iloc[row]!r} is not a number")
        columns[col] = values
    unlabelled = np.all([np.isnan(v) for v in columns.values()], axis=0)  # every target empty: nobody labelled it
    for col, values in columns.items():
        catalog[col] = np.where(unlabelled, np.nan, task.target_values(values)[0])
    return RawData(catalog, (), record={"catalog": str(path), "catalog_md5": md5sum(path)})


def synthetic(n_per_class: int, image_size: int, seed: int, cache_dir: Path) -> RawData:
    """The built-in synthetic galaxies (see galaxy_finetune.data.synthetic), drawn once as PNGs into `cache_dir`,
    keyed by the parameters and the generator's own source."""
    from galaxy_finetune.data import synthetic as generator
    record = {"generator": "galaxy_finetune.data.synthetic", "n_per_class": n_per_class, "image_size": image_size,
              "seed": seed}
    ids = [f"synthetic_{i:06d}" for i in range(n_per_class * len(GALAXY_MNIST_CLASSES))]
    code = hashlib.sha256(Path(generator.__file__).read_bytes()).hexdigest()[:12]
    folder = Path(cache_dir) / f"synthetic-{n_per_class}-{image_size}-{seed}-{code}"
    labels_file = folder / "labels.npy"
    if not labels_file.is_file():
        images, labels = generator.make_synthetic(n_per_class, seed, image_size)
        write_pngs(images, ids, folder)
        np.save(labels_file, labels)
    catalog = pd.DataFrame({"id_str": ids, "label": np.load(labels_file), "split": "",
                            "src": [str(folder / f"{i}.png") for i in ids]})
    return RawData(catalog, GALAXY_MNIST_CLASSES, record=record)


def select_classes(raw: RawData, classes: list[str], dataset: str) -> RawData:
    """A built-in dataset's galaxies of the classes `data.classes` names, labelled in that order.

    data.classes may drop classes or reorder them; a name the dataset does not have is one line."""
    unknown = [c for c in classes if c not in raw.classes]
    if unknown:
        raise PipelineError(f"data.classes: {unknown} not among {dataset}'s classes {list(raw.classes)}; "
                            f"use those names (any subset, in any order), or [] for all of them")
    if list(classes) == list(raw.classes):
        return raw
    relabel = np.full(len(raw.classes), -1)
    relabel[[raw.classes.index(c) for c in classes]] = np.arange(len(classes))
    labels = relabel[raw.catalog["label"].to_numpy()]
    catalog = raw.catalog.assign(label=labels)[labels >= 0].reset_index(drop=True)
    return RawData(catalog, tuple(classes), record={**raw.record, "classes_of_source": list(raw.classes)})


def validate(raw: RawData, task: Task | None = None) -> None:
    """Catalog checks every source shares: usable unique ids; for classification labels in range and every
    class present, for regression and votes every target a finite number (vote counts whole and >= 0)."""
    cat, n = raw.catalog, len(raw.classes)
    task = task or Task("classification", tuple(raw.classes))
    ids = cat["id_str"].astype(str)
    empty = cat["id_str"].isna().to_numpy() | (ids.str.strip() == "").to_numpy()
    if empty.any():
        raise PipelineError(f"catalog: row {int(np.flatnonzero(empty)[0])} has an empty id_str; give every galaxy an id")
    control = ids.str.contains(r"[\x00-\x1f\x7f]", regex=True)
    if control.any():
        row = int(np.flatnonzero(control)[0])
        raise PipelineError(f"catalog: row {row}: id_str {ids.iloc[row]!r} holds a control character "
                            f"(NUL, newline, tab...); use printable ids")
    dupes = ids[ids.duplicated()]
    if len(dupes):
        raise PipelineError(f"catalog: duplicate id_str {dupes.iloc[0]!r} ({len(dupes)} duplicates); ids must be unique")
    if task.by_class:
        bad = cat[((cat["label"] < 0) & (cat["label"] != UNLABELLED)) | (cat["label"] >= n)]
        if len(bad):
            raise PipelineError(f"catalog: label {bad['label'].iloc[0]} of {bad['id_str'].iloc[0]!r} out of range 0..{n - 1}")
        counts = np.bincount(cat["label"][cat["label"] >= 0], minlength=n)
        empty_classes = [raw.classes[i] for i in range(n) if counts[i] == 0]
        if empty_classes:
            raise PipelineError(f"catalog: class(es) {empty_classes} have no examples; add some or remove them from data.classes")
    else:
        validate_targets(cat, task)
    bad_split = set(cat["split"]) - {"train", "val", "test", ""}
    if bad_split:
        raise PipelineError(f"catalog: split values {sorted(bad_split)} not understood; use train, val, test or "
                            f"leave empty")


def validate_targets(cat: pd.DataFrame, task: Task) -> None:
    """One line naming the first target column with a missing or bad value (regression: a finite number;
    votes: a whole count >= 0), its row and id."""
    for col in task.label_cols:
        if col not in cat.columns:
            raise PipelineError(f"catalog: no column {col!r} ({task.kind} target)")
    labelled = ~task.unlabelled(cat)  # a row with every target empty is an unlabelled galaxy
    for col in task.label_cols:
        _, bad, need = task.target_values(pd.to_numeric(cat[col], errors="coerce"))
        bad &= labelled
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise PipelineError(f"catalog: column {col!r}, row {row} (id {cat['id_str'].iloc[row]!r}): "
                                f"{cat[col].iloc[row]!r} is not {need}")


def canonical_catalog(raw: RawData, task: Task | None = None) -> pd.DataFrame:
    """The catalog.csv frame: id_str, label, label_name, split, src, validated; for a regression or votes task
    label -1 and label_name empty, then the task's target columns as the source names them."""
    task = task or Task("classification", tuple(raw.classes))
    validate(raw, task)
    catalog = raw.catalog.assign(id_str=raw.catalog["id_str"].astype(str),
                                 src=[p if os.path.isabs(p) else os.path.abspath(p) for p in map(str, raw.catalog["src"])],
                                 label=raw.catalog["label"] if task.by_class else -1,
                                 label_name=[raw.classes[i] if i >= 0 else "" for i in raw.catalog["label"]]
                                 if task.by_class else "")
    return catalog[CATALOG_COLUMNS + task.catalog_columns()].reset_index(drop=True)


def source_fingerprint(catalog: pd.DataFrame, record: dict) -> str:
    """sha256 of what the store would be built from: the catalog rows, each source file's size and
    mtime, and the source record (resource md5s, catalog md5, generator settings). A stat per file:
    milliseconds per thousand galaxies, so the always-rerun fetch stays cheap at survey scale."""
    digest = hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode())
    digest.update(pd.util.hash_pandas_object(catalog, index=True).to_numpy().tobytes())
    stats = np.zeros((len(catalog), 2), dtype=np.int64)
    for row, src in enumerate(catalog["src"]):  # one stat per file, which is also the check that it is there
        try:
            st = os.stat(src)
        except OSError:
            where = record.get("record", {}).get("catalog", "catalog")
            raise PipelineError(f"{where}: row {row}: image {src} not found; fix file_loc or remove the row") from None
        stats[row] = st.st_size, st.st_mtime_ns
    digest.update(stats.tobytes())
    return digest.hexdigest()
