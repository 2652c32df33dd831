"""The fine-tuned model's files: models/finetuned/{model.safetensors, model.json}. Only safetensors are loaded.

model.safetensors holds the model's state dict; model.json what rebuilds the model around it
(timm architecture, `task` (core.task.Task.record(); absent in models from before tasks: classification of
`classes`), classes, `unit_interval` (regression), training mode, dropout), how its inputs are made exactly as in training (the
store's size and FITS view, the eval zoom, input size and the encoder's normalisation: fits_view() and
eval_transform()), the encoder's record and the training run's record (`run`).
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import torch

from galaxy_finetune.core.errors import PipelineError
from galaxy_finetune.core.files import atomic_path, read_model_config, write_json
from galaxy_finetune.core.layout import MODEL_CONFIG, MODEL_WEIGHTS
from galaxy_finetune.core.params import FitsView, TrainParams
from galaxy_finetune.core.task import Task
from galaxy_finetune.data.augment import eval_view
from galaxy_finetune.training.classifier import build_module

def build_model(encoder: torch.nn.Module, task: Task, train: TrainParams, schedule_steps: int = 0,
                unit_interval: bool = True):
    """The module for `task` around `encoder` (training/classifier.py): Zoobot's classifier, regressor (one output per
    target column; a sigmoid on the outputs when `unit_interval`) or decision tree (the task's schema), each with
    the step budget's schedule (classifier.BudgetSchedule)."""
    return build_module(task, encoder, train, schedule_steps, unit_interval)


def model_task(config: dict) -> Task:
    """The task a model.json's model was trained for: its `task` record, or classification of its classes
    (models written before tasks existed); a classifier's classes are model.json's, whatever the record says."""
    task = Task.from_record(config.get("task"), config.get("classes", ()))
    return Task("classification", tuple(config.get("classes", task.classes))) if task.by_class else task


def save_finetuned(model_dir: Path, model: torch.nn.Module, config: dict, tables: dict | None = None) -> None:
    """Write the classifier's weights, `config` and `tables` ({file name: DataFrame}, e.g. the training dynamics)
    into `model_dir` at once (a folder replaced atomically)."""
    from safetensors.torch import save_file

    with atomic_path(model_dir) as tmp:
        tmp.mkdir()
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, tmp / MODEL_WEIGHTS)
        write_json(tmp / MODEL_CONFIG, config)
        for name, frame in (tables or {}).items():
            frame.to_csv(tmp / name, index=False)


def load_finetuned(model_dir: str | Path):
    """The fine-tuned classifier (in eval mode) and its config, from safetensors only (no pickle is ever loaded)."""
    import timm
    from safetensors.torch import load_file

    model_dir = Path(model_dir)
    config = read_model_config(model_dir)
    encoder = timm.create_model(config["arch"], pretrained=False, num_classes=0)
    train = TrainParams(training_mode=config["training_mode"], dropout=config["dropout"])
    model = build_model(encoder, model_task(config), train, unit_interval=config.get("unit_interval", True))
    weights = model_dir / MODEL_WEIGHTS
    try:
        model.load_state_dict(load_file(weights))
    except Exception as exc:
        raise PipelineError(f"{weights}: cannot load ({type(exc).__name__}); rerun finetune_gpu") from None
    return model.eval(), config


def fits_view(config: dict) -> FitsView:
    """How the store decoded FITS cutouts for training (data.fits_*): new FITS files are decoded the same way."""
    view = config.get("fits_view")
    return FitsView(tuple(view["bands"]), view["stretch"], view["q"]) if view else FitsView()


def eval_transform(config: dict):
    """The eval view training validated with: uint8 batches (B, 3, S, S) -> the model's input (zoom, size, the
    encoder's normalisation), for predict, galaxy-classify, embed and galaxy-similar alike."""
    return partial(eval_view, size=config["input_size"], zoom=config["eval_zoom"],
                   normalisation=config.get("normalisation"))
