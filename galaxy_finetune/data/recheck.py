"""fetch_data's stage: on every `dvc repro`, first the cheap answer to "has anything it reads changed?"
(data/witness.py: the standard library and yaml, before params.yaml is validated), and only when something has,
the full fetch (data/fetch.py), which imports pandas, galaxy-datasets and the Hugging Face client.
"""
from __future__ import annotations

from pathlib import Path

from galaxy_finetune.data.witness import announce, read_params_file, unchanged


def said_unchanged(params_file: Path, raw_out: Path, encoder_out: Path) -> bool:
    """True, having said so in the stage's lines, when nothing fetch_data reads changed since its last run; False
    (nothing said) otherwise, or when the files cannot be read: then the full stage runs and says why."""
    try:
        manifest = unchanged(read_params_file(params_file), raw_out, encoder_out)
    except Exception:  # a damaged params.yaml or output: the full stage names it
        return False
    if manifest is None:
        return False
    _say_unchanged(manifest)
    print(stage_lines(manifest))
    return True


def fetch_if_changed(params, raw_out: Path, encoder_out: Path, params_file: Path | None = None) -> dict:
    """The last run's manifest if nothing changed (said in one line, with the stand-in banner), else the full
    `fetch.fetch_data`. `params`: validated Params; `params_file`: the params.yaml they came from, if any."""
    manifest = unchanged(read_params_file(params_file) if params_file else params, raw_out, encoder_out)
    if manifest is None:
        from galaxy_finetune.data.fetch import fetch_data  # pandas, galaxy-datasets, huggingface_hub: only now

        return fetch_data(params, raw_out, encoder_out, params_file=params_file)
    _say_unchanged(manifest)
    return manifest


def _say_unchanged(manifest: dict) -> None:
    print(f"fetch_data: nothing changed since the last run (fingerprint {manifest['data_fingerprint'][:12]}): "
          f"nothing copied")
    announce(manifest)


def stage_lines(manifest: dict) -> str:
    """The stage's last lines: which data and weights, the classes it read from the catalog, the unlabelled count."""
    classes = manifest["data"].get("classes_from_catalog")
    read = (f"; classes read from the catalog's labels (data.classes is empty): {classes}, label i = classes[i]"
            if classes else "")
    lines = [f"fetch_data: {manifest['run_label']}{read}"]
    if manifest.get("n_unlabelled"):
        lines.append(f"fetch_data: {manifest['n_unlabelled']:,} of {manifest['n_images']:,} galaxies are unlabelled "
                     f"(empty label): kept for semi-supervised training (train.semi), never in val, test or a metric")
    return "\n".join(lines)
