"""Which training recipe a run uses, and saying so: the console line, metrics/recipe.json, ignored overrides.

The recipe follows the encoder (Params.recipe): pretrained weights -> train.<RECIPE_KEYS> (fine-tuning),
a random init -> scratch.<RECIPE_KEYS> (from scratch). A key of the other recipe is read by nothing.

An ignored override is a key of the unused recipe whose value differs from the one dvc.lock recorded for
the last run of the stage: that is what `dvc exp run -S train.lr=3e-5` or an edit of params.yaml changes,
and the change has no effect on this run. (Comparing against the schema defaults would flag every
deliberate edit of params.yaml; comparing the two recipes with each other would flag every run, since they
differ by design.) Without a dvc.lock entry (a first run) there is nothing to compare, so no warning.
"""
from __future__ import annotations

from pathlib import Path


from galaxy_finetune.params import RECIPE_KEYS, Params, TrainParams

STAGE = "finetune_gpu"


def is_pretrained(encoder: dict) -> bool:
    """Whether an encoder record (models/encoder/encoder.json, manifest["encoder"]) carries pretrained weights."""
    return bool(encoder.get("pretrained", encoder["source"] != "random"))


def describe_encoder(encoder: dict) -> str:
    if is_pretrained(encoder):
        return f"pretrained ({encoder['source']})"
    return f"a random init ({encoder['arch']}, no pretraining)"


def recipe_record(name: str, train: TrainParams, encoder: dict) -> dict:
    """The effective training values, flat, for metrics/recipe.json (dvc exp show / dvc metrics diff)."""
    return {"recipe": name, "pretrained": is_pretrained(encoder), "encoder": encoder["source"],
            "arch": encoder["arch"], **{key: getattr(train, key) for key in RECIPE_KEYS}}


def recipe_line(name: str, train: TrainParams, encoder: dict) -> str:
    values = " ".join(f"{key}={getattr(train, key)}" for key in RECIPE_KEYS)
    kind = "fine-tuning" if name == "train" else "from-scratch"
    return f"finetune_gpu: the encoder is {describe_encoder(encoder)}, so the {kind} recipe ({name}.*): {values}"


def _flatten(values: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def locked_params(lock_path: str | Path, stage: str = STAGE) -> dict:
    """params.yaml values dvc.lock recorded for the last run of `stage`, as {"train.lr": 1e-05, ...}; {} if none."""
    path = Path(lock_path)
    if not path.is_file():
        return {}
    from ruamel.yaml import YAML  # DVC's own YAML 1.2 reader: PyYAML (1.1) reads dvc.lock's `1e-05` as a string
    from ruamel.yaml.error import YAMLError

    try:
        lock = YAML(typ="safe").load(path.read_text()) or {}
    except YAMLError:
        return {}
    recorded = (((lock.get("stages") or {}).get(stage) or {}).get("params") or {}).get("params.yaml") or {}
    return _flatten(recorded)


def ignored_overrides(params: Params, pretrained: bool, previous: dict) -> str | None:
    """One warning line (without the `warning: ` prefix) for changed keys of the unused recipe, else None.

    `previous`: the last run's values (locked_params).
    """
    used, _ = params.recipe(pretrained)
    unused = "scratch" if pretrained else "train"
    changed = [key for key in RECIPE_KEYS if f"{unused}.{key}" in previous
               and previous[f"{unused}.{key}"] != getattr(getattr(params, unused), key)]
    if not changed:
        return None
    why = "pretrained" if pretrained else "a random init"
    ignored = ", ".join(f"{unused}.{key}={getattr(getattr(params, unused), key)}" for key in changed)
    instead = ", ".join(f"{used}.{key}={getattr(getattr(params, used), key)}" for key in changed)
    verb = "is" if len(changed) == 1 else "are"
    return f"{ignored} {verb} not used: the encoder is {why}, so {instead} {verb}"
