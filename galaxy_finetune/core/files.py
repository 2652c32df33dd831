"""The one place that writes outputs (always to a temporary sibling, then renamed into place) and reads back
the tables the stages exchange.

A stage killed halfway, or one that fails on bad input, leaves no half-written file or folder behind. A file an
earlier stage writes is checked by `require`, the one "not found; run the X stage first" message, and the JSON
records by `read_stage_json` (model.json by `read_model_config`).
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from galaxy_finetune.core.errors import PipelineError
from galaxy_finetune.core.layout import MODEL_CONFIG


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it over `path` (file or folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)) / path.name
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


FULL_DISK = (errno.ENOSPC, errno.EDQUOT)  # the errnos of a full disk or an exhausted quota


def disk_full(path: str | Path, needed: float, then: str) -> PipelineError:
    """The one line for a write to `path` that found the disk full (an OSError with an errno of FULL_DISK): the
    file, about how much more space it needs, what is free there, and `then` (what was kept, what to do)."""
    try:
        free = f"; {shutil.disk_usage(Path(path).parent).free / 1e6:,.1f} MB free there"
    except OSError:
        free = ""
    return PipelineError(f"{path}: no space left on device (about {needed / 1e6:,.1f} MB more needed{free}); {then}")


def write_json(path: str | Path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_csv(path: str | Path, frame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


# columns of the exchanged tables that hold names: galaxy ids (any text: 007, NA, null...), class names, splits,
# file paths. They are read back exactly as written.
TEXT_COLUMNS = ("id_str", "nearest_train_id", "label_name", "true_label", "pred_label", "split", "src", "file")


def read_table(path: str | Path):
    """A CSV one stage wrote for another, read back as written: ids and names stay text (007 stays 007, NA stays
    NA), nothing is read as a missing value except an empty cell of a numeric column."""
    import pandas as pd

    columns = pd.read_csv(path, nrows=0).columns
    return pd.read_csv(path, dtype={c: str for c in TEXT_COLUMNS if c in columns}, keep_default_na=False,
                       na_values={c: [""] for c in columns if c not in TEXT_COLUMNS})


def read_json(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def require(path: str | Path, stage: str, what: str | None = None) -> Path:
    """`path`, a file the `stage` stage writes; when it is not there, the one-line error that says which stage to
    run: '<what, default the path>: not found; run the <stage> stage first (dvc repro <stage>)'."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{what or path}: not found; run the {stage} stage first (dvc repro {stage})")
    return path


def read_stage_json(path: str | Path, stage: str) -> dict:
    """The JSON record `stage` wrote at `path` (require'd; one line for a file that is not valid JSON)."""
    try:
        return read_json(require(path, stage))
    except ValueError as exc:
        raise PipelineError(f"{path}: not valid JSON ({exc}); rerun the {stage} stage") from None


def read_model_config(model_dir: str | Path) -> dict:
    """The fine-tuned model's model.json (finetune_gpu; what it holds: training/model_io.py): the one reader."""
    return read_stage_json(Path(model_dir) / MODEL_CONFIG, "finetune_gpu")


def files_under(root: str | Path) -> list[tuple[str, Path]]:
    """(name relative to `root`, path) of every file under `root` in sorted order; a file is its own root."""
    root = Path(root)
    if root.is_file():
        return [(root.name, root)]
    return [(str(p.relative_to(root)), p) for p in sorted(root.rglob("*")) if p.is_file()]


def hash_files(digest, *roots: str | Path):
    """Update `digest` (a hashlib object) with the name and the sha256 of every file under `roots`; return it."""
    for root in roots:
        for name, path in files_under(root):
            digest.update(name.encode() + hashlib.sha256(path.read_bytes()).digest())
    return digest


def sha256sum(path: str | Path) -> str:
    """The file's sha256, read in 1 MiB blocks (weights, hashed for provenance and to match a model's files)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
