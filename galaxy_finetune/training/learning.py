"""Did the run learn anything? Per-epoch validation accuracy and loss against what a guess achieves.

Two baselines come from the validation labels alone: the majority-class rate (the accuracy of always
answering the commonest class) and the class-frequency loss (the cross-entropy of always answering the
class frequencies, i.e. their entropy). A run learned nothing when its best val accuracy does not beat the
majority rate by `margin`; when only its val loss never falls below the class-frequency loss, its
accuracy may be real but its probabilities are no better than the class shares, and the warning says that.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from lightning.pytorch.callbacks import Callback

VAL_ACC, VAL_LOSS = "finetuning/val_acc", "finetuning/val_loss"  # logged by Zoobot's classifier
LOW_SCRATCH_LR = 1e-4  # below this a random init barely moves in a few epochs (scratch.lr 1e-3 does)
HIGH_FINETUNE_LR = 1e-4  # above this, fine-tuning a pretrained encoder risks wrecking it (lpft's lr, measured)
FEW_PER_CLASS = 100  # fewer training images per class than this is little for any encoder
# below this many labels per class, a random init trained from scratch on real galaxies learned far less than a
# pretrained encoder from the same labels (benchmarks/recipes.py; docs/recipes.md); synthetic galaxies
# are easy enough at any size
SCRATCH_FEW_PER_CLASS = 1000


@dataclass(frozen=True)
class Baseline:
    """What guessing achieves on the validation split."""
    majority_rate: float
    class_frequency_loss: float
    n_classes: int

    @classmethod
    def from_labels(cls, labels: Sequence[int], n_classes: int) -> Baseline:
        counts = np.bincount(np.asarray(labels, dtype=int), minlength=n_classes)
        shares = counts / counts.sum()
        entropy = float(-sum(p * math.log(p) for p in shares if p > 0))
        return cls(float(shares.max()), entropy, n_classes)


@dataclass(frozen=True)
class RunContext:
    """What the likely causes depend on."""
    pretrained: bool
    recipe: str  # the params group holding the lr: train | scratch
    lr: float
    n_train: int


def scratch_warning(n_train: int, n_classes: int, synthetic: bool) -> str | None:
    """Before training a random init: one line (without `warning: `) when its labels are too few to learn real
    galaxies from scratch, naming the numbers it judged by and what would do better; else None."""
    per_class = n_train / n_classes
    if synthetic or per_class >= SCRATCH_FEW_PER_CLASS:
        return None
    return (f"training a random init from scratch on {n_train} labelled galaxies ({per_class:.0f} per class, under "
            f"{SCRATCH_FEW_PER_CLASS} per class): on real galaxies this learns far less than pretrained weights do "
            f"from the same labels (docs/recipes.md); set model.encoder to pretrained weights (a Zoobot "
            f"hf_hub: encoder, or a .safetensors file), or label several times more galaxies")


def learning_warning(val_acc: Sequence[float], val_loss: Sequence[float], baseline: Baseline, margin: float,
                     run: RunContext) -> str | None:
    """One line (without the `warning: ` prefix) when the run learned nothing, else None.

    val_acc, val_loss: one value per validation epoch (at least one needed to judge).
    """
    if not val_acc or not val_loss:
        return None
    best_acc, best_loss = max(val_acc), min(val_loss)
    no_accuracy = best_acc < baseline.majority_rate + margin
    no_loss = best_loss >= baseline.class_frequency_loss
    loss_evidence = (f"val loss never fell below {baseline.class_frequency_loss:.3f} (the loss of answering the "
                     f"class frequencies; best {best_loss:.3f})")
    if no_accuracy:
        headline = (f"this run learned nothing: best val accuracy {best_acc:.1%} is not {margin:.0%} above the "
                    f"majority-class rate {baseline.majority_rate:.1%}" + (f"; {loss_evidence}" if no_loss else ""))
    elif no_loss:
        headline = (f"this run's probabilities are no better than the class frequencies: {loss_evidence}, "
                    f"although val accuracy reached {best_acc:.1%}")
    else:
        return None
    causes, tries = [], []
    if not run.pretrained and run.lr < LOW_SCRATCH_LR:
        causes.append(f"lr {run.lr:g} too low for a random init")
        tries.append(f"raise {run.recipe}.lr (1e-3 trains a random ConvNeXt)")
    per_class = run.n_train / baseline.n_classes
    if per_class < FEW_PER_CLASS:
        causes.append(f"too few images ({run.n_train} for training, {per_class:.0f} per class)")
        tries.append("add images (a few hundred per class)")
    causes.append("labels that do not match the images (shuffled or mis-joined catalog)")
    tries.append("look at a few catalog rows next to their images")
    if not run.pretrained:
        tries.append("use pretrained weights (model.encoder, cached once online)")
    elif run.lr > HIGH_FINETUNE_LR:
        causes.insert(0, f"lr {run.lr:g} too high for fine-tuning")
        tries.insert(0, f"lower {run.recipe}.lr (lpft fine-tunes at {HIGH_FINETUNE_LR:g}, Zoobot's default)")
    return f"{headline}. Likely causes: {'; '.join(causes)}. Try: {'; '.join(tries)}."


class LearningCurve(Callback):
    """Collects val accuracy and loss after every validation epoch (kept in checkpoints, so a resumed run
    judges its whole history); `warning` is learning_warning over them."""

    def __init__(self, baseline: Baseline, margin: float, run: RunContext):
        self.baseline, self.margin, self.run = baseline, margin, run
        self.val_acc: list[float] = []
        self.val_loss: list[float] = []

    def on_validation_end(self, trainer, module):  # epoch metrics are final here (not yet in *_epoch_end)
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        if VAL_ACC in metrics and VAL_LOSS in metrics:
            self.val_acc.append(float(metrics[VAL_ACC]))
            self.val_loss.append(float(metrics[VAL_LOSS]))

    def state_dict(self) -> dict:
        return {"val_acc": list(self.val_acc), "val_loss": list(self.val_loss)}

    def load_state_dict(self, state: dict) -> None:
        self.val_acc, self.val_loss = list(state["val_acc"]), list(state["val_loss"])

    def accuracy_at_best_loss(self) -> float | None:
        """Val accuracy at the validation with the lowest val loss (the one the best checkpoint holds)."""
        if not self.val_loss:
            return None
        return self.val_acc[int(np.argmin(self.val_loss))]

    @property
    def warning(self) -> str | None:
        return learning_warning(self.val_acc, self.val_loss, self.baseline, self.margin, self.run)


VAL_RMSE = "finetuning/val_rmse"  # logged by Zoobot's regressor


class TargetCurve(Callback):
    """The regression task's LearningCurve: val loss and RMSE after every validation, judged against
    `baseline_rmse`, the val RMSE of always predicting the train mean: a run whose best val RMSE is not below it
    learned nothing."""

    def __init__(self, baseline_rmse: float | None = None):
        self.baseline_rmse = baseline_rmse
        self.val_loss: list[float] = []
        self.val_rmse: list[float] = []

    def on_validation_end(self, trainer, module):
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        if VAL_LOSS in metrics:
            self.val_loss.append(float(metrics[VAL_LOSS]))
            if VAL_RMSE in metrics:
                self.val_rmse.append(float(metrics[VAL_RMSE]))

    def state_dict(self) -> dict:
        return {"val_loss": list(self.val_loss), "val_rmse": list(self.val_rmse)}

    def load_state_dict(self, state: dict) -> None:
        self.val_loss, self.val_rmse = list(state["val_loss"]), list(state.get("val_rmse", []))

    def rmse_at_best_loss(self) -> float | None:
        if not self.val_rmse:
            return None
        return self.val_rmse[int(np.argmin(self.val_loss[:len(self.val_rmse)]))]

    @property
    def warning(self) -> str | None:
        if self.val_rmse and self.baseline_rmse is not None and min(self.val_rmse) >= self.baseline_rmse:
            return (f"this run learned nothing: best val RMSE {min(self.val_rmse):.4f} is not below "
                    f"{self.baseline_rmse:.4f}, the RMSE of always predicting the train mean. Try: more steps, "
                    f"pretrained weights (model.encoder), or check that the target columns match the images.")
        return None


class VoteCurve(TargetCurve):
    """The votes task's curve: no yardstick in the loss's units, so a run whose val loss never fell below its first
    validation's is said to have learned nothing."""

    @property
    def warning(self) -> str | None:
        if len(self.val_loss) > 1 and min(self.val_loss[1:]) >= self.val_loss[0]:
            return (f"this run learned nothing: val loss never fell below its first validation's "
                    f"({self.val_loss[0]:.4f}). Try: more steps, pretrained weights (model.encoder), or check that "
                    f"the vote columns match the images.")
        return None
