"""fetch_data: every external input (the galaxies and the pretrained encoder), or the honest offline stand-in."""
from __future__ import annotations

import hashlib
import os
import sys
import textwrap
from pathlib import Path

from galaxy_finetune import sources
from galaxy_finetune.download import Unreachable
from galaxy_finetune.encoder import resolve_encoder
from galaxy_finetune.errors import PipelineError
from galaxy_finetune.files import atomic_path, write_json
from galaxy_finetune.params import Params

MANIFEST = "manifest.json"


def cache_dir() -> Path:
    """Downloads live outside the repo so reruns, clones and experiments never fetch twice."""
    if os.environ.get("GALAXY_FINETUNE_CACHE"):
        return Path(os.environ["GALAXY_FINETUNE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "galaxy-finetune"


def load_source(params: Params, cache: Path) -> sources.RawData:
    d, f = params.data, params.fetch
    if d.source == "galaxy_mnist":
        return sources.galaxy_mnist(cache / "galaxy_mnist", d.local_dir, f.timeout_s, f.retries)
    if d.source == "galaxy_mnist_64":
        return sources.galaxy_mnist_64(cache / "galaxy_mnist_64", d.local_dir, f.timeout_s, f.retries)
    if d.source == "catalog":
        return sources.user_catalog(d.catalog, d.classes)
    return sources.synthetic(d.synthetic_n_per_class, d.synthetic_image_size, d.synthetic_seed, cache)


def data_digest(raw_dir: Path, catalog) -> str:
    """sha256 over catalog.csv and every image, in catalog order: one id for 'which data'."""
    digest = hashlib.sha256((raw_dir / "catalog.csv").read_bytes())
    for rel in catalog["file"]:
        digest.update((raw_dir / rel).read_bytes())
    return digest.hexdigest()


def banner(lines: list[str]) -> str:
    width = max(len(line) for line in lines) + 4
    rule = "=" * width
    return "\n".join([rule, *[f"| {line.ljust(width - 4)} |" for line in lines], rule])


def fetch_data(params: Params, raw_out: Path, encoder_out: Path, cache: Path | None = None) -> dict:
    """Write data/raw/ (catalog.csv, images/, manifest.json) and models/encoder/; return the manifest."""
    cache = cache or cache_dir()
    problems, raw, encoder_spec = [], None, params.model.encoder
    try:
        raw = load_source(params, cache)
    except Unreachable as exc:
        problems.append(str(exc))
    with atomic_path(encoder_out) as enc_tmp:
        try:
            encoder = resolve_encoder(encoder_spec, enc_tmp, params.model.random_arch, params.model.seed)
        except Unreachable as exc:
            problems.append(str(exc))
        profile = "full"
        if problems:
            if params.fetch.offline == "error":
                raise PipelineError("; ".join(problems) + ". fetch.offline is 'error': put the official files in "
                                    "data.local_dir, or set fetch.offline: quickstart")
            profile = "quickstart"
            d = params.data
            raw = sources.synthetic(d.synthetic_n_per_class, d.synthetic_image_size, d.synthetic_seed, cache)
            encoder = resolve_encoder("random", enc_tmp, "convnext_nano", params.model.seed, validate=False)
        with atomic_path(raw_out) as raw_tmp:
            catalog = sources.write_raw(raw, raw_tmp)
            manifest = {
                "profile": profile,
                "reason": "; ".join(problems) if problems else None,
                "source": "synthetic" if profile == "quickstart" else params.data.source,
                "requested": {"source": params.data.source, "encoder": encoder_spec},
                "classes": list(raw.classes),
                "n_images": len(catalog),
                "counts_per_class": catalog["label_name"].value_counts().reindex(raw.classes).astype(int).to_dict(),
                "counts_per_split": {k or "none": int(v) for k, v in catalog["split"].value_counts().items()},
                "data_sha256": data_digest(raw_tmp, catalog),
                "data": raw.record,
                "encoder": encoder,
            }
            write_json(raw_tmp / MANIFEST, manifest)
    constant = raw.record.get("constant_images") or []
    if constant:
        print(f"warning: {len(constant)} image(s) have one value everywhere (blank cutouts?), e.g. "
              f"{', '.join(constant[:5])}; listed in {raw_out / MANIFEST} under data.constant_images",
              file=sys.stderr)
    if profile == "quickstart":
        print(banner([
            "OFFLINE QUICKSTART: the real inputs could not be had, so this run uses",
            f"{len(catalog)} SYNTHETIC galaxies and a RANDOMLY INITIALISED {encoder['arch']} (no Zoobot weights).",
            "Its accuracy says nothing about Zoobot on GalaxyMNIST. Why:",
            *[line for p in problems for line in textwrap.wrap(p, 96, initial_indent="  - ", subsequent_indent="    ")],
            "For the real run: go online (or put the official files in data.local_dir and",
            "an HF cache in HF_HOME), then `dvc repro` again.",
        ]), file=sys.stderr)
    return manifest
