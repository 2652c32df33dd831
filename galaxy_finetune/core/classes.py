"""The one place that names the classes: the built-in datasets (their names, class lists and Zoobot vote
schemas), and the reader of the classes a run uses (data/raw/source.json, written by fetch_data from
`data.classes`). Names only, no imports: params.py validates data.source here without loading the fetch code."""
from __future__ import annotations

from pathlib import Path

from galaxy_finetune.core.errors import PipelineError
from galaxy_finetune.core.files import read_json, require
from galaxy_finetune.core.layout import SOURCE

# GalaxyMNIST's integer labels 0..3, in the order of its release (and of galaxy-datasets' catalogs).
GALAXY_MNIST_CLASSES = ("smooth_round", "smooth_cigar", "edge_on_disk", "unbarred_spiral")

# galaxy-datasets 0.0.25 by name (each a function galaxy_datasets.shared.<name>.<name>(root, train, download)):
# the public ones data.source accepts, and the Zoobot team's own, whose download URLs are not published.
LIBRARY_PUBLIC = ("gz2", "gz_decals_5", "gz_candels", "gz_hubble", "tidal", "demo_rings", "demo_gz_candels",
                  "galaxy_mnist")
LIBRARY_INTERNAL = ("gz_desi", "gz_rings", "gz_euclid", "gz_h2o", "gz_ukidss", "gz_jwst", "gz_hubble_euclidized")
# Every data.source: the library's public datasets, the 64 px GalaxyMNIST release, an own catalog, synthetic.
SOURCES = LIBRARY_PUBLIC + ("galaxy_mnist_64", "catalog", "synthetic")

# The built-in classification datasets' classes, label i = classes[i] (data.classes: [] means all of them).
# demo_rings: its `ring` column is 0/1; tidal: its coarse_tidal_label is 0/1, no tidal feature / a tidal feature
# (Atkinson 2013's expert labels, galaxy-datasets' README). The synthetic galaxies mimic GalaxyMNIST.
DATASET_CLASSES = {"galaxy_mnist": GALAXY_MNIST_CLASSES, "galaxy_mnist_64": GALAXY_MNIST_CLASSES,
                   "synthetic": GALAXY_MNIST_CLASSES, "demo_rings": ("not_ring", "ring"),
                   "tidal": ("not_tidal", "tidal")}
# The vote datasets' Zoobot schemas (names in zoobot.shared.schemas), for train.task votes with data.schema: auto.
VOTE_SCHEMAS = {"gz2": "gz2_ortho_schema", "gz_decals_5": "decals_dr5_ortho_schema",
                "gz_candels": "gz_candels_ortho_schema", "gz_hubble": "gz_hubble_ortho_schema",
                "demo_gz_candels": "gz_candels_ortho_schema"}


def internal_dataset(name: str) -> str:
    """The one line for a galaxy-datasets dataset whose URLs only the Zoobot team has."""
    return (f"{name}: an internal galaxy-datasets dataset, its URLs are internal to the Zoobot team; put its files "
            f"in a CSV/parquet catalog and use data.source: catalog")


def read_source(raw_dir: Path) -> dict:
    """data/raw/source.json, written by fetch_data: the one reader (the classes here, core.task.read_task)."""
    return read_json(require(Path(raw_dir) / SOURCE, "fetch_data"))


def read_classes(raw_dir: Path) -> list[str]:
    """The run's classes, label i = classes[i]: every stage after fetch_data reads them here, and only here."""
    path = Path(raw_dir) / SOURCE
    classes = read_source(raw_dir).get("classes")
    if not classes:
        raise PipelineError(f"{path}: no `classes`; rerun the fetch_data stage (dvc repro -f fetch_data)")
    return list(classes)
