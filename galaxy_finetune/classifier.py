"""Zoobot's classifier head with the learning-rate schedule of a step budget.

FinetuneableZoobotClassifier builds the AdamW optimiser with layer decay (zoobot 2.9); this subclass only adds,
when `schedule_steps` is set, a per-step schedule on top: a linear warm-up over `warmup_steps`, then a cosine
decay to zero at `schedule_steps` (the lpft recipe). Its weights are those of Zoobot's classifier, so
model.safetensors loads into either.
"""
from __future__ import annotations

import math

import torch
from zoobot.pytorch.training.finetune import FinetuneableZoobotClassifier


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """The lr multiplier at optimizer step `step`: 0 -> 1 over the warm-up, then a cosine from 1 to 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class GalaxyClassifier(FinetuneableZoobotClassifier):
    def __init__(self, schedule_steps: int = 0, warmup_steps: int = 0, **zoobot_kwargs):
        super().__init__(**zoobot_kwargs)
        self.schedule_steps, self.warmup_steps = schedule_steps, warmup_steps

    def configure_optimizers(self):
        optimizer = super().configure_optimizers()  # no scheduler_kwargs: each group's lr already has its layer decay
        if not self.schedule_steps:
            return optimizer
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, self.warmup_steps, self.schedule_steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step", "frequency": 1}}
