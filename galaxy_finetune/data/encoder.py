"""The pretrained encoder: resolved once by fetch_data into models/encoder/, built from there by training.

models/encoder/ holds encoder.json (where the weights came from, the timm architecture, sha256) and,
unless the encoder is a seeded random init, encoder.safetensors. Only safetensors are ever loaded.
"""
from __future__ import annotations

import shutil
import socket
import urllib.parse
from pathlib import Path

from galaxy_finetune.core.errors import PipelineError
from galaxy_finetune.core.files import read_json, sha256sum, write_json
from galaxy_finetune.core.layout import ENCODER_RECORD, ENCODER_WEIGHTS
from galaxy_finetune.data.download import Unreachable


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Cheap look-up before huggingface_hub's own retries, which take ~30 s to give up when offline."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    host = urllib.parse.urlparse(constants.ENDPOINT).hostname
    try:
        socket.setdefaulttimeout(timeout)
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False
    finally:
        socket.setdefaulttimeout(None)


def hub_files(repo_id: str) -> tuple[Path, Path, str]:
    """config.json and model.safetensors of a Hugging Face hub model, from the HF cache or the hub.

    Returns (config path, weights path, snapshot revision).
    """
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    def fetch(local_only: bool):
        cfg = hf_hub_download(repo_id, "config.json", local_files_only=local_only)
        weights = hf_hub_download(repo_id, "model.safetensors", local_files_only=local_only)
        return Path(cfg), Path(weights), Path(cfg).parent.name

    try:
        return fetch(local_only=True)
    except LocalEntryNotFoundError:
        pass
    if not _hub_reachable():
        host = None if constants.HF_HUB_OFFLINE else urllib.parse.urlparse(constants.ENDPOINT).hostname
        raise Unreachable(f"model.encoder: hf_hub:{repo_id} is not in the Hugging Face cache and the hub cannot "
                          f"be reached; run once online (or copy an HF cache here, HF_HOME) to cache it", host)
    try:
        return fetch(local_only=False)
    except Exception as exc:  # the hub client raises many types: network, auth, missing repo
        raise Unreachable(f"model.encoder: could not download hf_hub:{repo_id} ({type(exc).__name__}: {exc})",
                          urllib.parse.urlparse(constants.ENDPOINT).hostname) from None


def encoder_identity(spec: str, random_arch: str = "convnext_nano", seed: int = 42) -> dict:
    """What `spec` resolves to right now, found without copying or hashing the weights: the hub revision
    or the file's size and mtime. Equal identities mean models/encoder/ need not be written again."""
    if spec == "random":
        return {"spec": spec, "arch": random_arch, "seed": seed}
    if spec.startswith("hf_hub:"):
        _, weights, revision = hub_files(spec.removeprefix("hf_hub:"))
        return {"spec": spec, "revision": revision, "size": weights.stat().st_size}
    path = Path(spec)
    if spec.endswith(".safetensors") and path.is_file():
        stat = path.stat()
        config = path.parent / "config.json"  # its architecture and normalisation go into the record too
        config_mtime = config.stat().st_mtime_ns if config.is_file() else None
        return {"spec": spec, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "config_mtime_ns": config_mtime,
                "random_arch": random_arch}
    return {"spec": spec}  # resolve_encoder names the problem


def encoder_paths(spec: str) -> list[str]:
    """The files and folders `encoder_identity(spec)` is read from, or where the weights would appear (the Hugging
    Face cache's entry for the repo): a change to any of them may change the identity (data/recheck.py)."""
    if spec == "random":
        return []
    if spec.startswith("hf_hub:"):
        from huggingface_hub import constants

        repo = Path(constants.HF_HUB_CACHE) / f"models--{spec.removeprefix('hf_hub:').replace('/', '--')}"
        return [str(repo), str(repo / "refs" / "main"), str(repo / "snapshots")]
    return [spec, str(Path(spec).parent / "config.json")]


def resolve_encoder(spec: str, out_dir: Path, random_arch: str = "convnext_nano", seed: int = 42,
                    validate: bool = True) -> dict:
    """Write the encoder named by `spec` (hf_hub:<repo> | path.safetensors | random) into `out_dir`.

    `validate` builds the model once to check the weights fit (seconds: torch and timm are imported).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    if spec == "random":
        record = {"source": "random", "arch": random_arch, "seed": seed, "sha256": None,
                  "note": f"timm {random_arch} randomly initialised with torch seed {seed}: no pretraining"}
    elif spec.startswith("hf_hub:"):
        repo_id = spec.removeprefix("hf_hub:")
        cfg_path, weights, revision = hub_files(repo_id)
        shutil.copyfile(weights, out_dir / ENCODER_WEIGHTS)
        config = read_json(cfg_path)
        arch = config.get("architecture")
        if not arch:
            raise PipelineError(f"{cfg_path}: no 'architecture' key; not a timm model config")
        record = {"source": spec, "revision": revision, "arch": arch, "sha256": sha256sum(out_dir / ENCODER_WEIGHTS),
                  "normalisation": input_normalisation(config, repo_id)}
    elif spec.endswith(".safetensors"):
        path = Path(spec)
        if not path.is_file():
            raise PipelineError(f"model.encoder: {path} not found; give a .safetensors file, hf_hub:<repo> or random")
        shutil.copyfile(path, out_dir / ENCODER_WEIGHTS)
        cfg = path.parent / "config.json"
        config = read_json(cfg) if cfg.is_file() else {}
        record = {"source": str(path), "arch": config.get("architecture", random_arch),
                  "sha256": sha256sum(out_dir / ENCODER_WEIGHTS), "normalisation": input_normalisation(config, str(path))}
    else:
        raise PipelineError(f"model.encoder: {spec!r} not understood; use hf_hub:<repo>, a .safetensors path or random")
    write_json(out_dir / ENCODER_RECORD, record)
    if not validate:
        return record
    try:
        build_encoder(out_dir)  # fail now, not an hour into training, if the weights do not fit the architecture
    except PipelineError as exc:
        raise PipelineError(f"model.encoder: {spec}: {str(exc).split(': ', 1)[1]}") from None
    return record


def input_normalisation(config: dict, name: str) -> dict | None:
    """The per-channel {"mean": [...], "std": [...]} an encoder expects on [0, 1] pixels, from its timm config's
    pretrained_cfg; None means [0, 1] pixels as they are.

    Zoobot's encoders were trained on [0, 1] pixels and Zoobot feeds them so, whatever a hub config they were
    pushed with says (timm fills in ImageNet's mean/std by default), so a Zoobot encoder always gets None.
    """
    if "zoobot" in name.lower():
        return None
    cfg = config.get("pretrained_cfg") or {}
    mean, std = cfg.get("mean"), cfg.get("std")
    if mean is None or std is None:
        return None
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise PipelineError(f"{name}: config.json pretrained_cfg mean {mean} / std {std}: give 3 values each, "
                            f"std > 0 (or drop them to feed [0, 1] pixels)")
    return {"mean": [float(m) for m in mean], "std": [float(s) for s in std]}


def build_encoder(encoder_dir: str | Path, record: dict | None = None):
    """The timm encoder (no classifier head, a torch Module) recorded in `encoder_dir` (its encoder.json, or
    `record` when the caller has read it), with its weights loaded."""
    import timm
    import torch

    encoder_dir = Path(encoder_dir)
    record = record or encoder_record(encoder_dir)
    if record["source"] == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(record["seed"])
            return timm.create_model(record["arch"], pretrained=False, num_classes=0)
    weights = encoder_dir / ENCODER_WEIGHTS
    try:
        # timm's own loader: applies the architecture's checkpoint filter and drops any classifier
        return timm.create_model(record["arch"], pretrained=True, num_classes=0,
                                 pretrained_cfg_overlay={"file": str(weights)})
    except Exception as exc:  # torch, timm and safetensors each raise their own types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PipelineError(f"{weights}: cannot load into timm {record['arch']} ({first[:200]})") from None


def encoder_record(encoder_dir: str | Path) -> dict:
    return read_json(Path(encoder_dir) / ENCODER_RECORD)
