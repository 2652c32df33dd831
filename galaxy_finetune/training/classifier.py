"""Zoobot's three heads (classifier, regressor, decision tree) with the learning-rate schedule of a step budget.

Zoobot's Finetuneable* classes build the AdamW optimiser with layer decay (zoobot 2.9); `BudgetSchedule` only
adds, when `schedule_steps` is set, a per-step schedule on top: a linear warm-up over `warmup_steps`, then a
cosine decay to zero at `schedule_steps` (the lpft recipe), and BatchNorm layers that keep their pretrained
statistics (`frozen_batchnorm`). Each head is Zoobot's class with that mixin in front, so its weights are
Zoobot's and model.safetensors loads into either:

- GalaxyClassifier (train.task classification): FinetuneableZoobotClassifier as it is.
- GalaxyRegressor (regression): FinetuneableZoobotRegressor widened to one output per target column with
  Zoobot's own LinearHead; predictions stay (B, K), also for one column or a batch of one.
- GalaxyTree (votes): FinetuneableZoobotTree (Dirichlet concentrations per answer), its Dirichlet-multinomial
  loss computed in float32 whatever the training precision.
"""
from __future__ import annotations

import math

import torch
from zoobot.pytorch.training.finetune import (FinetuneableZoobotClassifier, FinetuneableZoobotRegressor,
                                              FinetuneableZoobotTree, LinearHead)


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """The lr multiplier at optimizer step `step`: 0 -> 1 over the warm-up, then a cosine from 1 to 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class BudgetSchedule:
    """Mixin in front of a Zoobot head: the step budget's lr schedule and frozen BatchNorm statistics."""

    def __init__(self, schedule_steps: int = 0, warmup_steps: int = 0, frozen_batchnorm: bool = False,
                 **zoobot_kwargs):
        super().__init__(**zoobot_kwargs)
        self.schedule_steps, self.warmup_steps = schedule_steps, warmup_steps
        self.frozen_batchnorm = frozen_batchnorm

    def train(self, mode: bool = True):
        """With frozen_batchnorm, BatchNorm layers stay in eval mode when Lightning switches to training: they
        normalise with their pretrained running statistics, so the encoder's features in training are those the
        linear probe was fitted on (batch statistics of dark galaxy cutouts are far from ImageNet's, and a few
        steps of updating the running ones wreck the probe's head). Their scale and shift still learn.
        Encoders without BatchNorm (Zoobot's ConvNeXt: LayerNorm) are not affected."""
        super().train(mode)
        if mode and self.frozen_batchnorm:
            for module in self.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def on_fit_start(self) -> None:
        # Lightning keeps each module's mode as it finds it (it never calls train()); set it here, before the
        # sanity check captures the modes that validation restores
        self.train()

    def configure_optimizers(self):
        optimizer = super().configure_optimizers()  # no scheduler_kwargs: each group's lr already has its layer decay
        if not self.schedule_steps:
            return optimizer
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, self.warmup_steps, self.schedule_steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step", "frequency": 1}}


class GalaxyClassifier(BudgetSchedule, FinetuneableZoobotClassifier):
    """Zoobot's classifier (softmax over classes, cross-entropy)."""

    @classmethod
    def for_task(cls, task, encoder, unit_interval: bool = True, **common):
        return cls(encoder=encoder, num_classes=len(task.classes), **common)


class GalaxyRegressor(BudgetSchedule, FinetuneableZoobotRegressor):
    """Zoobot's regressor with one output per target column: Zoobot's LinearHead of width K (its own head is
    single-output and squeezes), predictions (B, K) whatever K and the batch size; a sigmoid on the outputs
    when `unit_interval` (every target in [0, 1], e.g. vote fractions)."""

    def __init__(self, n_outputs: int = 1, **kwargs):
        super().__init__(label_col="label", **kwargs)
        self.head = LinearHead(input_dim=self.encoder_dim, output_dim=n_outputs,
                               head_dropout_prob=self.head_dropout_prob,
                               activation=torch.sigmoid if self.unit_interval else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x)).reshape(len(x), -1)

    @classmethod
    def for_task(cls, task, encoder, unit_interval: bool = True, **common):
        return cls(n_outputs=len(task.label_cols), loss="mse", unit_interval=unit_interval, encoder=encoder, **common)


class GalaxyTree(BudgetSchedule, FinetuneableZoobotTree):
    """Zoobot's decision-tree head: Dirichlet concentrations (B, answers) for the schema's questions; the
    Dirichlet-multinomial loss is computed in float32 (lgamma of bf16 concentrations is too coarse). The schema
    is left out of the checkpoints' hyperparameters: they hold plain data only, loaded with weights_only (the
    schema is rebuilt from the task in model.json)."""

    def __init__(self, schema, **kwargs):
        super().__init__(schema=schema, **kwargs)
        for hparams in (self._hparams, getattr(self, "_hparams_initial", {})):
            hparams.pop("schema", None)

    @classmethod
    def for_task(cls, task, encoder, unit_interval: bool = True, **common):
        return cls(schema=task.zoobot_schema(), encoder=encoder, **common)

    def run_step_through_model(self, batch):
        x, y = self.batch_to_supervised_tuple(batch)
        y_pred = self.forward(x)
        with torch.autocast(device_type=y_pred.device.type, enabled=False):
            loss = self.loss(y_pred.float(), {k: v.float() for k, v in y.items()})
        return y, y_pred, loss


MODULES = {"classification": GalaxyClassifier, "regression": GalaxyRegressor, "votes": GalaxyTree}
WARMUP_FRACTION = 0.05  # of a cosine schedule's steps


def schedule(train, schedule_steps: int) -> dict:
    """What every head's module shares (train: core.params.TrainParams): the optimiser, the lr schedule (a warm-up
    over WARMUP_FRACTION of a cosine schedule's steps) and the encoder's training mode."""
    steps = schedule_steps if train.schedule == "cosine" else 0
    return dict(schedule_steps=steps, warmup_steps=math.ceil(WARMUP_FRACTION * steps),
                frozen_batchnorm=train.batchnorm == "frozen", training_mode=train.training_mode,
                learning_rate=train.lr, layer_decay=train.layer_decay, weight_decay=train.weight_decay,
                head_dropout_prob=train.dropout, seed=train.seed)


def build_module(task, encoder: torch.nn.Module, train, schedule_steps: int = 0, unit_interval: bool = True,
                 module: type | None = None, **extra):
    """The task's Zoobot module around `encoder`: the classifier, the regressor (one output per target column; a
    sigmoid on the outputs when `unit_interval`) or the decision tree (the task's schema), each with the step
    budget's schedule; `module` replaces the task's class (SemiGalaxyClassifier, with `extra`: semi=...)."""
    return (module or MODULES[task.kind]).for_task(task, encoder, unit_interval, **extra,
                                                   **schedule(train, schedule_steps))


def build_classifier(encoder: torch.nn.Module, num_classes: int, train, schedule_steps: int = 0):
    """Zoobot's classifier around `encoder` (zoobot 2.9 API) for `num_classes` classes; with `schedule_steps` and
    train.schedule cosine, its lr warms up over 5% of the steps, then decays along a cosine."""
    return GalaxyClassifier(encoder=encoder, num_classes=num_classes, **schedule(train, schedule_steps))
