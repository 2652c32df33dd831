"""Training dynamics of one fine-tuning run: how hard each training galaxy's given label was to fit.

Every time a training galaxy goes through a training step, its (augmented) view's logits are recorded: the
softmax probabilities, and the margin of the given class over the largest other logit. Averaged over the steps
that saw it, the margin is the "area under the margin" (AUM; Pleiss et al. 2020, "Identifying Mislabeled Data
using the Area Under the Margin Ranking"): a correct label is learned early and from the other galaxies of its
class, so its margin is positive most of the run; a wrong label fights them, so its margin stays low or negative
until the network memorises it. The mean probabilities are what the label_budget stage ranks with cleanlab (the
train split's judge: labels.train_judge dynamics).

The model did see these labels: the dynamics judge a label by how hard it was to learn, not by an out-of-sample
prediction (val and test are judged by the fine-tuned model's out-of-sample predictions instead).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback

from galaxy_finetune.data.loading import labelled_part

DYNAMICS_FILE = "training_dynamics.csv"  # in models/finetuned: one row per training galaxy


class TrainingDynamics(Callback):
    """Sums of each training galaxy's softmax probabilities and margins over the training steps that saw it.

    Batches carry `index` (the galaxy's position in the train split) and `label`; the classifier's training step
    returns its logits as outputs["predictions"] (Zoobot's FinetuneableZoobotClassifier). Kept in checkpoints, so
    a resumed run keeps the whole record; summed across DDP ranks at the end of training."""

    def __init__(self, n_train: int, n_classes: int):
        self.prob_sum = torch.zeros(n_train, n_classes, dtype=torch.float64)
        self.margin_sum = torch.zeros(n_train, dtype=torch.float64)
        self.seen = torch.zeros(n_train, dtype=torch.float64)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        logits = outputs["predictions"].detach().float().cpu()
        batch = labelled_part(batch)  # the pool galaxies that ride along have no label and no training row
        index = batch["index"].cpu()
        labels = batch["label"].cpu()
        given = logits.gather(1, labels[:, None])[:, 0]
        others = logits.scatter(1, labels[:, None], float("-inf")).max(1).values
        self.prob_sum.index_add_(0, index, torch.softmax(logits, 1).double())
        self.margin_sum.index_add_(0, index, (given - others).double())
        self.seen.index_add_(0, index, torch.ones(len(index), dtype=torch.float64))

    def on_train_end(self, trainer, module):
        if trainer.world_size > 1:  # each rank saw its own share of the galaxies
            for name in ("prob_sum", "margin_sum", "seen"):
                total = trainer.strategy.reduce(getattr(self, name).to(module.device), reduce_op="sum")
                setattr(self, name, total.cpu())

    def state_dict(self) -> dict:
        return {"prob_sum": self.prob_sum, "margin_sum": self.margin_sum, "seen": self.seen}

    def load_state_dict(self, state: dict) -> None:
        self.prob_sum, self.margin_sum, self.seen = state["prob_sum"], state["margin_sum"], state["seen"]

    def table(self, galaxies: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
        """One row per training galaxy (`galaxies`: the train split, in dataset order): id_str, row, label,
        seen (steps that trained on it), aum (mean margin of the given class), p_<class> (mean probabilities)."""
        seen = self.seen.numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            probs = self.prob_sum.numpy() / seen[:, None]
            aum = self.margin_sum.numpy() / seen
        frame = pd.DataFrame({"id_str": galaxies["id_str"].to_numpy(), "row": galaxies["row"].to_numpy(),
                              "label": galaxies["label"].to_numpy(), "seen": seen.astype(int),
                              "aum": np.round(aum, 5)})
        for i, name in enumerate(classes):
            frame[f"p_{name}"] = np.round(probs[:, i], 5)
        return frame
