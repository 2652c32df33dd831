"""Zoobot's classifier head with the learning-rate schedule of a step budget.

FinetuneableZoobotClassifier builds the AdamW optimiser with layer decay (zoobot 2.9); this subclass only adds,
when `schedule_steps` is set, a per-step schedule on top: a linear warm-up over `warmup_steps`, then a cosine
decay to zero at `schedule_steps` (the lpft recipe), and BatchNorm layers that keep their pretrained statistics
(`frozen_batchnorm`). Its weights are those of Zoobot's classifier, so
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
