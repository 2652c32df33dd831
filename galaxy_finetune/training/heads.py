"""What fine-tuning does differently per task, one small class per Zoobot head, picked once by `head_for(task)`.

Each Head builds its Zoobot module around the encoder (classifier, regressor or decision tree), fits the linear
probe that is its yardstick (and may start its head), watches the validation curve that says whether the run
learned anything, and names the run record's task scores. finetune() (training/train.py) is the same for all.
"""
from __future__ import annotations

import math
import warnings

from lightning.pytorch.utilities import rank_zero_only

import numpy as np
import torch

from galaxy_finetune.core.params import TrainParams
from galaxy_finetune.core.task import Task
from galaxy_finetune.training.dynamics import DYNAMICS_FILE, TrainingDynamics
from galaxy_finetune.training.learning import (Baseline, LearningCurve, RunContext, TargetCurve, VoteCurve,
                                               scratch_warning)
from galaxy_finetune.training.probe import linear_probe, ridge_probe

WARMUP_FRACTION = 0.05  # of a cosine schedule's steps


def schedule(train: TrainParams, schedule_steps: int) -> dict:
    """The keyword arguments every head shares: the optimiser, the lr schedule and the encoder's training mode."""
    steps = schedule_steps if train.schedule == "cosine" else 0
    return dict(schedule_steps=steps, warmup_steps=math.ceil(WARMUP_FRACTION * steps),
                frozen_batchnorm=train.batchnorm == "frozen", training_mode=train.training_mode,
                learning_rate=train.lr, layer_decay=train.layer_decay, weight_decay=train.weight_decay,
                head_dropout_prob=train.dropout, seed=train.seed)


def build_classifier(encoder: torch.nn.Module, num_classes: int, train: TrainParams, schedule_steps: int = 0):
    """Zoobot's classifier around `encoder` (zoobot 2.9 API); with `schedule_steps` and train.schedule cosine,
    its lr warms up over 5% of the steps, then decays along a cosine (classifier.GalaxyClassifier)."""
    from galaxy_finetune.training.classifier import GalaxyClassifier

    return GalaxyClassifier(encoder=encoder, num_classes=num_classes, **schedule(train, schedule_steps))


class Head:
    """The regression head (Zoobot's regressor, MSE) and what every head shares."""

    def __init__(self, task: Task, unit_interval: bool | None = None):
        self.task = task
        self.unit_interval = unit_interval  # regression: every target in [0, 1] (a sigmoid on the outputs)

    def fit_data(self, data) -> None:
        """What the head learns from the data before it is built: whether every target lies in [0, 1]."""
        targets = np.concatenate([data.dataset(s).targets.numpy() for s in ("train", "val")])
        self.unit_interval = bool(((targets >= 0) & (targets <= 1)).all())

    def warnings(self, n_train: int, pretrained: bool, synthetic: bool) -> None:
        """Warnings about the run's labels before it trains."""

    def build(self, encoder: torch.nn.Module, train: TrainParams, schedule_steps: int = 0):
        from galaxy_finetune.training.classifier import GalaxyRegressor

        return GalaxyRegressor(n_outputs=len(self.task.label_cols), loss="mse",
                               unit_interval=True if self.unit_interval is None else self.unit_interval,
                               encoder=encoder, **schedule(train, schedule_steps))

    def probe(self, encoder, data, train: TrainParams, accelerator: str):
        """The linear probe of the frozen encoder (training/probe.py), or None where the head has none."""
        return ridge_probe(encoder, data, train.seed, accelerator, bool(self.unit_interval))

    def curve(self, data, train: TrainParams, context: RunContext):
        """The callback recording the validation curve, judged against always predicting the train mean."""
        mean = data.dataset("train").targets.numpy().mean(0)
        self.baseline_rmse = float(np.sqrt(np.mean((data.dataset("val").targets.numpy() - mean) ** 2)))
        return TargetCurve(self.baseline_rmse)

    def callbacks(self, n_train: int) -> list:
        """More callbacks for the Trainer (the label budget's training dynamics, for classification)."""
        return []

    def tables(self, callbacks: list, train_split) -> dict:
        """Tables saved with the model, by file name."""
        return {}

    def scores(self, probe, curve, keep_probe: bool) -> dict:
        """The run record's task scores: val RMSE beside always predicting the train mean's."""
        return {"task": self.task.kind, "val_rmse": probe.val_rmse if keep_probe else curve.rmse_at_best_loss(),
                "baseline_val_rmse": self.baseline_rmse}

    def config(self) -> dict:
        """What model.json needs beyond the task to rebuild this head."""
        return {"unit_interval": self.unit_interval}


class ClassifierHead(Head):
    """Zoobot's classifier (cross-entropy), its logistic probe, and the training dynamics of every label."""

    def fit_data(self, data) -> None:
        pass

    def warnings(self, n_train: int, pretrained: bool, synthetic: bool) -> None:
        if not pretrained and (few := scratch_warning(n_train, len(self.task.classes), synthetic)):
            warnings.warn(few, stacklevel=2)

    def build(self, encoder: torch.nn.Module, train: TrainParams, schedule_steps: int = 0):
        return build_classifier(encoder, len(self.task.classes), train, schedule_steps)

    def probe(self, encoder, data, train: TrainParams, accelerator: str):
        return linear_probe(encoder, data, len(self.task.classes), train.seed, accelerator)

    def curve(self, data, train: TrainParams, context: RunContext):
        return LearningCurve(Baseline.from_labels(data.dataset("val").labels.numpy(), len(self.task.classes)),
                             train.majority_margin, context)

    def callbacks(self, n_train: int) -> list:
        # how hard each training label was to fit: the label budget's judge of the train split's labels
        return [TrainingDynamics(n_train, len(self.task.classes))]

    def tables(self, callbacks: list, train_split) -> dict:
        dynamics = next(c for c in callbacks if isinstance(c, TrainingDynamics))
        return {DYNAMICS_FILE: dynamics.table(train_split, list(self.task.classes))}

    def scores(self, probe, curve, keep_probe: bool) -> dict:
        return {"val_accuracy": probe.val_accuracy if keep_probe else curve.accuracy_at_best_loss()}

    def config(self) -> dict:
        return {}


class TreeHead(Head):
    """Zoobot's decision-tree head (Dirichlet-multinomial loss over each question's vote counts); no probe."""

    def fit_data(self, data) -> None:
        pass

    def build(self, encoder: torch.nn.Module, train: TrainParams, schedule_steps: int = 0):
        from galaxy_finetune.training.classifier import GalaxyTree

        return GalaxyTree(schema=self.task.zoobot_schema(), encoder=encoder, **schedule(train, schedule_steps))

    def probe(self, encoder, data, train: TrainParams, accelerator: str):
        if train.head_init == "linear_probe":
            rank_zero_only(print)("finetune_gpu: votes: no linear probe for the Dirichlet head; its head starts from Zoobot's "
                  "random init (head_init random)")
        return None

    def curve(self, data, train: TrainParams, context: RunContext):
        return VoteCurve()

    def scores(self, probe, curve, keep_probe: bool) -> dict:
        return {"task": self.task.kind, "first_val_loss": curve.val_loss[0] if curve.val_loss else float("nan")}

    def config(self) -> dict:
        return {}


HEADS: dict[str, type[Head]] = {"classification": ClassifierHead, "regression": Head, "votes": TreeHead}


def head_for(task: Task, unit_interval: bool | None = None) -> Head:
    """The task's head; `unit_interval` as a model.json recorded it (regression)."""
    return HEADS[task.kind](task, unit_interval)
