"""The pipeline up to training, in-process and tiny: fetch_data, store and split into one folder."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from galaxy_finetune.data.fetch import fetch_data
from galaxy_finetune.core.params import Params
from galaxy_finetune.data.split import read_catalog, split_catalog, write_splits
from galaxy_finetune.data.store import build_store, stored_size


RANDOM_INIT_RECIPE = "scratch"  # the params block training reads when the encoder is a random init


def prepare(root: Path, params: Params, val_fraction: float = 0.2, test_fraction: float = 0.3,
            seed: int = 0) -> SimpleNamespace:
    """root/data/{raw,store,splits} and root/models/encoder as the first three stages write them."""
    paths = SimpleNamespace(raw=root / "data/raw", encoder=root / "models/encoder", store=root / "data/store",
                            splits=root / "data/splits", cache=root / "cache", root=root)
    paths.manifest = fetch_data(params, paths.raw, paths.encoder, cache=paths.cache)
    catalog = read_catalog(paths.raw)
    input_size = params.largest_input_size()
    size = stored_size(params.store.image_size, input_size, catalog["src"].iloc[0])
    build_store(catalog, paths.store, size, threads=2)
    write_splits(split_catalog(catalog, val_fraction, test_fraction, seed), paths.splits)
    return paths
