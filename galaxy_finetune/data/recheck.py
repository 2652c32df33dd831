"""fetch_data's stage: on every `dvc repro`, first the cheap answer to "has anything it reads changed?"
(data/witness.py, standard library only), and only when something has, the full fetch (data/fetch.py), which
imports pandas, galaxy-datasets and the Hugging Face client.
"""
from __future__ import annotations

from pathlib import Path

from galaxy_finetune.core.params import Params
from galaxy_finetune.data.witness import announce, unchanged


def fetch_if_changed(params: Params, raw_out: Path, encoder_out: Path) -> dict:
    """fetch_data's stage: the last run's manifest if nothing changed (said in one line, with the stand-in
    banner), else the full `fetch.fetch_data` (which imports pandas and the download clients)."""
    manifest = unchanged(params, raw_out, encoder_out)
    if manifest is None:
        from galaxy_finetune.data.fetch import fetch_data  # pandas, galaxy-datasets, huggingface_hub: only now

        return fetch_data(params, raw_out, encoder_out)
    print(f"fetch_data: nothing changed since the last run (fingerprint {manifest['data_fingerprint'][:12]}): "
          f"nothing copied")
    announce(manifest)
    return manifest
