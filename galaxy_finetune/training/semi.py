"""Semi-supervised fine-tuning: the galaxies nobody labelled (data/splits/unlabelled.csv) teach the classifier too.

`train.semi` picks one of two families; both give each training step, beside its labelled batch, `train.semi_ratio`
times as many pool galaxies, each seen twice on the device (data/loading.py): a weak view (the train view) and a
strong one (augment.strong_view: the weak view's warp plus exposure, contrast, noise and a blanked square).

- fixmatch (Sohn et al. 2020, "FixMatch"): the model's own prediction on the weak view, where its confidence reaches
  `train.semi_threshold` (a number, or "adaptive": FreeMatch's self-adaptive threshold per class), is the target of
  its prediction on the strong view (consistency with confident pseudo-labels).
- ema_teacher (self-training with a mean teacher: Tarvainen & Valpola 2017; the teacher of Noisy Student): an
  exponential moving average of the model's weights (torch's AveragedModel, decay `train.semi_ema`) makes the
  pseudo-labels from the weak view; the model learns them on the strong view. The teacher changes slowly, so one
  step's mistakes do not become the next step's targets.

Both align the pseudo-labels' class distribution with the labelled one (ReMixMatch's distribution alignment: the
weak-view probabilities times the labelled class shares over a running mean of the predicted shares), and with
`train.semi_guard` leave out pool galaxies unlike every labelled class (a survey holds classes outside the label set;
Oliver et al. 2018 show they hurt naive methods): a pool galaxy counts only if its features are at least as close
(cosine) to some labelled class's mean features as the batch's labelled galaxies are to their own class's.

The labelled term is Zoobot's own loss on the labelled batch only: pool galaxies carry no label (split.py removes the
labels a split.train_per_class budget holds back), so nothing but a pseudo-label reaches them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from galaxy_finetune.training.classifier import GalaxyClassifier

METHODS = ("fixmatch", "ema_teacher")
ALIGN_MOMENTUM = 0.99  # the running mean of the predicted class shares: about the last hundred steps


class SemiSupervised:
    """Mixin in front of Zoobot's classifier (training/classifier.py): the labelled loss plus `weight` times the
    pool's pseudo-label loss. `semi`: method, threshold, weight, ema, guard and prior (the labelled class shares)."""

    def __init__(self, semi: dict | None = None, **zoobot_kwargs):
        super().__init__(**zoobot_kwargs)
        self.semi = dict(semi or {})
        # hidden in lists, out of the state dict: the saved model is the plain classifier
        self._teacher: list = []
        self._student: list = []
        self.prior = torch.tensor(self.semi.get("prior", []), dtype=torch.float32)
        self.predicted_shares: torch.Tensor | None = None
        self.confidence_mean: torch.Tensor | None = None  # the adaptive threshold's running state
        self.class_shares: torch.Tensor | None = None
        self.pool_seen = 0
        self.pool_used = 0  # pool galaxies whose pseudo-label counted (confident and, with the guard, like a class)
        self.pool_guarded = 0  # left out by the guard

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if self.semi.get("method") == "ema_teacher" and not self._teacher:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            student = torch.nn.Sequential(self.encoder, self.head)  # shares the modules: no copy
            self._student.append(student)
            self._teacher.append(AveragedModel(student, multi_avg_fn=get_ema_multi_avg_fn(self.semi["ema"]),
                                               use_buffers=True))

    def on_train_batch_end(self, step_output, *args):
        super().on_train_batch_end(step_output, *args)
        if self._teacher:
            self._teacher[0].update_parameters(self._student[0])

    def training_step(self, batch, batch_idx, dataloader_idx=0):
        if "unlabelled" not in batch:
            return super().training_step(batch, batch_idx, dataloader_idx)
        labelled, pool = batch["labelled"], batch["unlabelled"]
        n = len(labelled["image"])
        features = self.encoder(torch.cat([labelled["image"], pool["strong"]]))
        logits = self.head(features)
        loss_labelled = self.loss(logits[:n], labelled["label"]).mean()
        targets, counts, guarded = self.pseudo_labels(pool["weak"], features[:n].detach(), labelled["label"])
        loss_pool = (F.cross_entropy(logits[n:].float(), targets, reduction="none") * counts).mean()
        loss = loss_labelled + self.semi["weight"] * loss_pool
        self.pool_seen += len(counts)
        self.pool_used += int(counts.sum())
        self.pool_guarded += int(guarded.sum())
        size = len(counts)
        self.log("semi/used_share", counts.mean(), on_step=False, on_epoch=True, batch_size=size)
        self.log("semi/pool_loss", loss_pool.detach(), on_step=False, on_epoch=True, batch_size=size)
        return self.step_to_dict(labelled["label"], logits[:n], loss)

    @torch.no_grad()
    def pseudo_labels(self, weak: torch.Tensor, labelled_features: torch.Tensor, labels: torch.Tensor):
        """(pseudo-labels, 1.0 where each counts else 0.0, True where the guard left a galaxy out) of a batch of
        weak views: the teacher's (ema_teacher) or the model's own (fixmatch) prediction, without dropout,
        distribution-aligned, kept at `threshold` confidence or more."""
        if self._teacher:
            teacher = self._teacher[0].module
            teacher.eval()
            features = teacher[0](weak)
            logits = teacher[1](features)
        else:
            features = self.encoder(weak)
            training = self.head.training
            self.head.eval()  # no dropout in the pseudo-labels
            logits = self.head(features)
            self.head.train(training)
        probs = torch.softmax(logits.float(), dim=1)
        threshold = self.thresholds(probs)
        probs = self.align(probs)
        confidence, targets = probs.max(1)
        keep = confidence >= (threshold[targets] if threshold.ndim else threshold)
        guarded = torch.zeros_like(keep)
        if self.semi.get("guard"):
            guarded = ~like_a_labelled_class(features.float(), labelled_features.float(), labels, probs.shape[1])
            keep &= ~guarded
        return targets, keep.float(), guarded

    def thresholds(self, probs: torch.Tensor) -> torch.Tensor:
        """The confidence a pseudo-label needs: train.semi_threshold, or with "adaptive" FreeMatch's self-adaptive
        one per class (Wang et al. 2023): a running mean of the weak views' top confidence (it starts at 1/classes
        and rises as the model learns), scaled per class by the running mean of that class's predicted share over
        the largest one, so a class the model is still unsure of is not starved of pseudo-labels."""
        if self.semi["threshold"] != "adaptive":
            return torch.tensor(float(self.semi["threshold"]), device=probs.device)
        if self.confidence_mean is None:
            classes = probs.shape[1]
            self.confidence_mean = torch.tensor(1.0 / classes, device=probs.device)
            self.class_shares = torch.full((classes,), 1.0 / classes, device=probs.device)
        m = ALIGN_MOMENTUM
        self.confidence_mean = m * self.confidence_mean.to(probs) + (1 - m) * probs.max(1).values.mean()
        self.class_shares = m * self.class_shares.to(probs) + (1 - m) * probs.mean(0)
        return self.confidence_mean * self.class_shares / self.class_shares.max()

    def align(self, probs: torch.Tensor) -> torch.Tensor:
        """Distribution alignment: probabilities times prior / running mean of the predicted class shares."""
        if not len(self.prior):
            return probs
        shares = probs.mean(0)
        if self.predicted_shares is None:
            self.predicted_shares = shares
        self.predicted_shares = ALIGN_MOMENTUM * self.predicted_shares.to(shares) + (1 - ALIGN_MOMENTUM) * shares
        aligned = probs * (self.prior.to(probs) / self.predicted_shares.clamp_min(1e-6))
        return aligned / aligned.sum(1, keepdim=True)

    def semi_record(self) -> dict:
        """What the run record (model.json, recipe.json) says of the pool's use."""
        seen = max(self.pool_seen, 1)
        return {"method": self.semi.get("method"), "threshold": self.semi.get("threshold"),
                "weight": self.semi.get("weight"), "guard": self.semi.get("guard"),
                "pool_draws": self.pool_seen, "used_share": round(self.pool_used / seen, 4),
                "guarded_share": round(self.pool_guarded / seen, 4),
                **({"final_thresholds": [round(float(t), 4) for t in
                                         self.confidence_mean * self.class_shares / self.class_shares.max()]}
                   if self.confidence_mean is not None else {})}


def like_a_labelled_class(features: torch.Tensor, labelled: torch.Tensor, labels: torch.Tensor,
                          n_classes: int) -> torch.Tensor:
    """For each row of `features`: whether its cosine similarity to the nearest labelled class mean (over the
    labelled batch `labelled` with `labels`) is at least the lowest one of a labelled galaxy to the mean of the
    other labelled galaxies of its class (leave-one-out, so a galaxy's own share of its mean does not raise the
    bar). All True when no labelled galaxy has a class mate in the batch: nothing to measure the bar with."""
    labelled = F.normalize(labelled, dim=1)
    sums = torch.zeros(n_classes, labelled.shape[1], device=labelled.device).index_add_(0, labels, labelled)
    counts = torch.bincount(labels, minlength=n_classes)
    mates = counts[labels] > 1
    if not mates.any():
        return torch.ones(len(features), dtype=torch.bool, device=features.device)
    others = F.normalize(sums[labels] - labelled, dim=1)  # each galaxy's class mean without it
    own = (labelled * others).sum(1)[mates]
    nearest = (F.normalize(features, dim=1) @ F.normalize(sums[counts > 0], dim=1).T).max(1).values
    return nearest >= own.min()


class SemiGalaxyClassifier(SemiSupervised, GalaxyClassifier):
    """Zoobot's classifier that also learns from the unlabelled pool; its weights are the plain classifier's, so the
    saved model loads as a GalaxyClassifier (inference never imports this module)."""

    @classmethod
    def for_task(cls, task, encoder, unit_interval: bool = True, semi: dict | None = None, **common):
        return cls(encoder=encoder, num_classes=len(task.classes), semi=semi, **common)
