"""What fetch_data read, so that its next run can tell "nothing changed" with the standard library alone.

fetch_data runs on every `dvc repro` (the network may have come back), so this answer must cost little: it is
found before pandas, galaxy-datasets or the Hugging Face client are imported (data/recheck.py). Each full run of
`fetch.fetch_data` leaves a witness, data/raw/recheck.json, of what it read:

- `inputs`: the parameters fetch_data reads (data, fetch, model, train.task: as params.yaml writes them when the
  stage runs from it, so they are read without validating the whole file), the environment variables that steer
  where it looks (caches, offline switches, the hub's address) and the source of the code it runs
  (galaxy_finetune/core, galaxy_finetune/data and the stage script);
- `files`: the size and mtime of every file and folder the result was read from or could now come from: the own
  catalog, each galaxy's source file (catalog.csv's src column), the encoder's files, and for an offline stand-in
  the places the real inputs would appear (data.local_dir, the download cache, the Hugging Face cache);
- `unreachable`: the hosts a stand-in run could not reach: each must still fail to resolve.

When all three hold and the outputs are there as written, nothing changed: the run says so and writes nothing.
Anything else (a changed file, param, variable or line of code, a host that now resolves) runs the full stage,
which decides with the real fingerprint (sources.source_fingerprint) and writes a new witness.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import socket
import sys
import textwrap
from pathlib import Path
from typing import Iterable

from galaxy_finetune.core.files import read_json
from galaxy_finetune.core.layout import CATALOG, ENCODER_RECORD, MANIFEST, RECHECK, SOURCE

# where fetch_data looks and whether it may go online (data/fetch.py's cache_dir, data/download.py's OFFLINE_ENV,
# huggingface_hub's constants)
ENVIRONMENT = ("GALAXY_FINETUNE_CACHE", "XDG_CACHE_HOME", "HOME", "GALAXY_FINETUNE_OFFLINE", "HF_HOME",
               "HF_HUB_CACHE", "HF_HUB_OFFLINE", "HF_ENDPOINT")
PACKAGE = Path(__file__).resolve().parents[1]  # galaxy_finetune/
CODE = (PACKAGE / "core", PACKAGE / "data", PACKAGE.parent / "stages" / "fetch_data.py")


def params_record(params) -> dict:
    """The parameters fetch_data reads: from validated Params, or from params.yaml's own dict (read_params_file)."""
    if isinstance(params, dict):
        return {"data": params.get("data") or {}, "fetch": params.get("fetch") or {},
                "model": params.get("model") or {}, "task": (params.get("train") or {}).get("task"), "from": "file"}
    return {"data": params.data.model_dump(mode="json"), "fetch": params.fetch.model_dump(mode="json"),
            "model": params.model.model_dump(mode="json"), "task": params.train.task, "from": "params"}


def read_params_file(path: str | Path) -> dict:
    """params.yaml as written (yaml alone: no validation), for params_record."""
    import yaml

    return yaml.safe_load(Path(path).read_text()) or {}


def inputs_digest(params) -> str:
    """sha256 of the parameters fetch_data reads (params_record), the environment that steers it and the code.
    Not the project's folder: a moved or copied project (cp -a, a clone with its outputs pulled) keeps its witness,
    and a relative path in the params is stat'ed where it now points (files_digest)."""
    digest = hashlib.sha256(json.dumps({
        **params_record(params), "environment": {name: os.environ.get(name) for name in ENVIRONMENT}},
        sort_keys=True, default=str).encode())
    for path in CODE:
        for file in sorted(path.glob("*.py")) if path.is_dir() else [path]:
            if file.is_file():
                digest.update(file.name.encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def files_digest(paths: Iterable[str]) -> str:
    """sha256 over each path's (size, mtime) or its absence: one stat per path, in order."""
    digest = hashlib.sha256()
    for path in paths:
        try:
            st = os.stat(path)
            digest.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}\0-\n".encode())
    return digest.hexdigest()


def catalog_sources(raw_out: Path) -> list[str]:
    """The src column of data/raw/catalog.csv, read with the csv module."""
    with open(raw_out / CATALOG, newline="") as f:
        return [row["src"] for row in csv.DictReader(f)]


def witness(params, sources: Iterable[str], paths: list[str], unreachable: list[str],
            identity: dict) -> dict:
    """What data/raw/recheck.json holds after a full run: see the module's docstring. `sources` are the galaxies'
    files in catalog order, `paths` the other files and folders read, `unreachable` the hosts a stand-in could not
    reach, `identity` the encoder's (models/encoder/encoder.json)."""
    return {"inputs": inputs_digest(params), "files": files_digest([*paths, *sources]), "paths": list(paths),
            "unreachable": sorted(set(unreachable)), "encoder_identity": identity}


def resolves(host: str) -> bool:
    try:
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False


def unchanged(params, raw_out: Path, encoder_out: Path) -> dict | None:
    """The last run's manifest when nothing fetch_data reads has changed since it ran (its witness holds), else
    None. `params`: Params, or params.yaml's dict (read_params_file), whichever the last run's witness was made
    from. Standard library only (and yaml)."""
    try:
        last = read_json(raw_out / RECHECK)
        manifest = read_json(raw_out / MANIFEST)
        read_json(raw_out / SOURCE)
        encoder = read_json(encoder_out / ENCODER_RECORD)
        sources = catalog_sources(raw_out)
    except (OSError, ValueError, KeyError):
        return None  # no witness (a first run, or one from before witnesses) or damaged outputs: the full stage
    if (last.get("inputs") != inputs_digest(params) or encoder.get("identity") != last.get("encoder_identity")
            or any(resolves(host) for host in last.get("unreachable", ()))):
        return None
    if last.get("files") != files_digest([*last.get("paths", []), *sources]):
        return None
    return manifest


def banner(lines: list[str]) -> str:
    width = max(len(line) for line in lines) + 4
    rule = "=" * width
    return "\n".join([rule, *[f"| {line.ljust(width - 4)} |" for line in lines], rule])


def announce(manifest: dict) -> None:
    """Every run says what stood in for what, even when nothing had to be written."""
    if not manifest["substitutions"]:
        return
    print(banner([
        f"OFFLINE STAND-IN: {manifest['run_label']}",
        *[line for p in manifest["substitutions"] for line in textwrap.wrap(p, 96, initial_indent="  - ",
                                                                             subsequent_indent="    ")],
        "For the real inputs: go online (or put the official files in data.local_dir and an HF cache",
        "in HF_HOME), then `dvc repro` again; set fetch.offline: error to fail instead.",
    ]), file=sys.stderr)
