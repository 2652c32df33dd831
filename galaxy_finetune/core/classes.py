"""The one place that names the classes: the built-in datasets' class lists, and the reader of the
classes a run uses (data/raw/source.json, written by fetch_data from `data.classes`)."""
from __future__ import annotations

from pathlib import Path

from galaxy_finetune.core.errors import PipelineError
from galaxy_finetune.core.files import read_json
from galaxy_finetune.core.layout import SOURCE

# GalaxyMNIST's integer labels 0..3, in the order of its release (and of galaxy-datasets' catalogs).
GALAXY_MNIST_CLASSES = ("smooth_round", "smooth_cigar", "edge_on_disk", "unbarred_spiral")


def read_classes(raw_dir: Path) -> list[str]:
    """The run's classes, label i = classes[i]: every stage after fetch_data reads them here, and only here."""
    path = Path(raw_dir) / SOURCE
    if not path.is_file():
        raise PipelineError(f"{path}: not found; run the fetch_data stage first (dvc repro fetch_data)")
    classes = read_json(path).get("classes")
    if not classes:
        raise PipelineError(f"{path}: no `classes`; rerun the fetch_data stage (dvc repro -f fetch_data)")
    return list(classes)
