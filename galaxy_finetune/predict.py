"""predict: the fine-tuned classifier's class probabilities for every galaxy of a split."""
from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch

from galaxy_finetune.data import GalaxyDataModule, read_split
from galaxy_finetune.params import AugmentParams
from galaxy_finetune.accelerator import resolve_accelerator
from galaxy_finetune.model_io import load_finetuned


def predictions_table(frame: pd.DataFrame, probs: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """id_str, true_label (if known), pred_label (class names), p_<class> per class, p_true, confidence."""
    labelled = "label" in frame.columns
    table = pd.DataFrame({"id_str": frame["id_str"].values})
    if labelled:
        table["true_label"] = [classes[i] for i in frame["label"]]
    table["pred_label"] = [classes[i] for i in probs.argmax(1)]
    for i, name in enumerate(classes):
        table[f"p_{name}"] = probs[:, i]
    if labelled:
        table["p_true"] = probs[np.arange(len(probs)), frame["label"].to_numpy()]
    table["confidence"] = probs.max(1)
    return table


def predict_frames(model, config: dict, frames: dict[str, pd.DataFrame], raw_dir: Path, batch_size: int,
                   accelerator: str = "auto") -> tuple[dict[str, pd.DataFrame], dict]:
    """Class probabilities for each frame's galaxies through the training-time eval view, plus timing."""
    device, precision = resolve_accelerator(accelerator, "auto")
    augment = AugmentParams(eval_zoom=config["eval_zoom"])
    data = GalaxyDataModule(raw_dir, raw_dir, config["input_size"], batch_size, augment, batch_size)
    trainer = L.Trainer(accelerator=device, devices=1, precision=precision, logger=False,
                        enable_model_summary=False)
    tables, timing = {}, {"device": device, "precision": precision}
    for name, frame in frames.items():
        data.add(name, frame)
        data.predict_split = name
        start = time.perf_counter()
        probs = torch.cat(trainer.predict(model, datamodule=data)).float().numpy()
        seconds = time.perf_counter() - start
        tables[name] = predictions_table(frame, probs, config["classes"])
        timing[f"{name}_images_per_s"] = round(len(probs) / seconds, 1)
    return tables, timing


def predict_splits(model_dir: Path, split_dir: Path, raw_dir: Path, splits: list[str], batch_size: int,
                   accelerator: str = "auto") -> tuple[dict[str, pd.DataFrame], dict]:
    """Predictions for each split of data/splits/ with the fine-tuned model."""
    model, config = load_finetuned(model_dir)
    frames = {name: read_split(split_dir, name) for name in splits}
    return predict_frames(model, config, frames, raw_dir, batch_size, accelerator)
