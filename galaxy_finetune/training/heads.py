"""What fine-tuning does differently per task, one small class per Zoobot head, picked once by `head_for(task)`.

Each Head builds its Zoobot module around the encoder (classifier, regressor or decision tree), fits the linear
probe that is its yardstick (and may start its head), watches the validation curve that says whether the run
learned anything, and names the run record's task scores. finetune() (training/train.py) is the same for all.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only

from galaxy_finetune.core.params import TrainParams
from galaxy_finetune.core.task import Task
from galaxy_finetune.training.classifier import build_module
from galaxy_finetune.training.dynamics import DYNAMICS_FILE, TrainingDynamics
from galaxy_finetune.training.learning import (Baseline, LearningCurve, RunContext, TargetCurve, VoteCurve,
                                               scratch_warning)
from galaxy_finetune.training.probe import linear_probe, ridge_probe
from galaxy_finetune.training.semi import SemiGalaxyClassifier

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

    def semi(self, train: TrainParams, pool: int) -> dict | None:
        """How the run learns from the `pool` unlabelled galaxies (training/semi.py): None, said in one line when
        train.semi asks for it, since confident pseudo-labels need classes."""
        if train.semi != "none":
            rank_zero_only(print)(f"finetune_gpu: train.semi {train.semi} needs classes (confident pseudo-labels); "
                                  f"this {self.task.kind} run learns from its labels alone")
        return None

    def build(self, encoder: torch.nn.Module, train: TrainParams, schedule_steps: int = 0, semi: dict | None = None):
        """The task's Zoobot module around `encoder` (training/classifier.py)."""
        unit_interval = True if self.unit_interval is None else self.unit_interval
        return build_module(self.task, encoder, train, schedule_steps, unit_interval)


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


    def probe(self, encoder, data, train: TrainParams, accelerator: str):
        return linear_probe(encoder, data, len(self.task.classes), train.seed, accelerator)

    def semi(self, train: TrainParams, pool: int) -> dict | None:
        if train.semi == "none":
            return None
        if not pool:
            rank_zero_only(print)(f"finetune_gpu: train.semi {train.semi}: the unlabelled pool is empty "
                                  f"(data/splits/unlabelled.csv); this run learns from its labels alone")
            return None
        return {"method": train.semi, "threshold": train.semi_threshold, "weight": train.semi_weight,
                "ema": train.semi_ema, "guard": train.semi_guard, "ratio": train.semi_ratio, "pool": pool}

    def build(self, encoder: torch.nn.Module, train: TrainParams, schedule_steps: int = 0, semi: dict | None = None):
        """Zoobot's classifier, or with `semi` (its `prior`: the labelled class shares) the one that also learns
        from the unlabelled pool."""
        if not semi:
            return build_module(self.task, encoder, train, schedule_steps)
        return build_module(self.task, encoder, train, schedule_steps, module=SemiGalaxyClassifier, semi=semi)

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
