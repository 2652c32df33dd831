"""Which training recipe a run uses, and saying so: the console line and metrics/recipe.json.

The recipe follows the encoder and train.recipe (Params.recipe):
- pretrained weights, train.recipe: lpft (the default) -> train.<RECIPE_KEYS>: the head is fitted first on the
  frozen encoder's features (a logistic regression), then the whole model is fine-tuned for a budget of
  optimizer steps (warm-up, cosine decay), and the best of the two on val loss is kept;
- pretrained weights, train.recipe: writeup -> writeup.<RECIPE_KEYS>: the reference write-up's 30 epochs at
  lr 1e-5 from a random head;
- a random init -> scratch.<RECIPE_KEYS> (from scratch).
"""
from __future__ import annotations

from galaxy_finetune.core.params import RECIPE_KEYS, TrainParams

KINDS = {"train": "fine-tuning (lpft)", "writeup": "write-up", "scratch": "from-scratch"}


def is_pretrained(encoder: dict) -> bool:
    """Whether an encoder record (models/encoder/encoder.json, manifest["encoder"]) carries pretrained weights."""
    return bool(encoder.get("pretrained", encoder["source"] != "random"))


def describe_encoder(encoder: dict) -> str:
    if is_pretrained(encoder):
        return f"pretrained ({encoder['source']})"
    return f"a random init ({encoder['arch']}, no pretraining)"


def recipe_record(name: str, train: TrainParams, encoder: dict, semi: dict | None = None) -> dict:
    """The effective training values, flat, for metrics/recipe.json (dvc exp show / dvc metrics diff); `semi`: the
    run record's use of the unlabelled pool (training/semi.py), or None for a run on labels alone."""
    semi = semi or {"method": "none"}
    return {"recipe": name, "pretrained": is_pretrained(encoder), "encoder": encoder["source"],
            "arch": encoder["arch"], **{key: getattr(train, key) for key in RECIPE_KEYS},
            "semi": semi["method"], "semi_threshold": semi.get("threshold"), "semi_pool": semi.get("pool", 0),
            "semi_used_share": semi.get("used_share")}


def recipe_line(name: str, train: TrainParams, encoder: dict) -> str:
    values = " ".join(f"{key}={getattr(train, key)}" for key in RECIPE_KEYS)
    return f"finetune_gpu: the encoder is {describe_encoder(encoder)}, so the {KINDS[name]} recipe ({name}.*): {values}"
