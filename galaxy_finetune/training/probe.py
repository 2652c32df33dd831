"""The linear probe: a logistic regression on the frozen encoder's pooled features of the train split.

It is the yardstick of every run (what the pretrained features alone achieve on val, in metrics.json beside
the fine-tuned model's) and, in the default lpft recipe, the head's starting point: its weights are copied
into Zoobot's linear head before end-to-end fine-tuning (LP-FT, Kumar et al. 2022), so the head starts
where a linear probe ends instead of from random weights at a fine-tuning learning rate.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from galaxy_finetune.core.stats import log_loss

PROBE_MAX_TRAIN = 20_000  # galaxies the regression is fitted on at most (a class-stratified sample beyond)
C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0)  # inverse L2 strengths tried; the one with the lowest val log loss wins


@dataclass(frozen=True)
class LinearProbe:
    """A fitted probe, as logits = features @ weight.T + bias on raw (unstandardised) pooled features."""
    weight: np.ndarray  # (n_classes, n_features)
    bias: np.ndarray  # (n_classes,)
    C: float
    n_train: int
    val_accuracy: float
    val_loss: float  # mean cross-entropy, natural log (what Zoobot logs as val loss)

    def logits(self, features: np.ndarray) -> np.ndarray:
        return features @ self.weight.T + self.bias

    def record(self) -> dict:
        return {"C": self.C, "n_train": self.n_train, "val_accuracy": round(self.val_accuracy, 4),
                "val_loss": round(self.val_loss, 4)}


@torch.no_grad()
def pooled_features(encoder: torch.nn.Module, batches, view) -> np.ndarray:
    """The encoder's pooled features of uint8 image batches (B, 3, S, S), each seen through `view` (the eval view)."""
    was_training = encoder.training
    encoder.eval()
    device = next(encoder.parameters()).device
    try:
        return np.concatenate([encoder(view(images.to(device))).float().cpu().numpy() for images in batches])
    finally:
        encoder.train(was_training)


def stratified_sample(labels: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Indices of at most `limit` rows, each class keeping its share (all rows when there are few enough)."""
    if len(labels) <= limit:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(labels == c))[:max(1, round(limit * np.mean(labels == c)))]
            for c in np.unique(labels)]
    return np.sort(np.concatenate(keep))


def fit_linear_probe(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
                     n_classes: int, seed: int = 0) -> LinearProbe:
    """Multinomial logistic regression on the raw pooled features (what the head sees), its strength C picked by
    val log loss. (Standardising first and folding the scale into the weights gives near-constant features
    huge weights, which the head's dropout and the encoder's batch statistics then amplify in training.)"""
    from sklearn.linear_model import LogisticRegression

    train_y, val_y = np.asarray(train_y, dtype=int), np.asarray(val_y, dtype=int)
    best = None
    for C in C_GRID:
        fitted = LogisticRegression(C=C, max_iter=2000, random_state=seed).fit(train_x, train_y)
        weight = np.zeros((n_classes, train_x.shape[1]))
        bias = np.zeros(n_classes)
        if len(fitted.classes_) == 2:  # sklearn keeps one row for two classes: logit(c1) - logit(c0)
            weight[fitted.classes_[1]], bias[fitted.classes_[1]] = fitted.coef_[0] / 2, fitted.intercept_[0] / 2
            weight[fitted.classes_[0]], bias[fitted.classes_[0]] = -fitted.coef_[0] / 2, -fitted.intercept_[0] / 2
        else:
            weight[fitted.classes_], bias[fitted.classes_] = fitted.coef_, fitted.intercept_
            absent = np.setdiff1d(np.arange(n_classes), fitted.classes_)
            bias[absent] = -30.0  # a class the train split lacks is never predicted
        logits = val_x @ weight.T + bias
        probe = LinearProbe(weight.astype(np.float32), bias.astype(np.float32), C, len(train_y),
                            float(np.mean(logits.argmax(axis=1) == val_y)), log_loss(val_y, logits=logits))
        if best is None or probe.val_loss < best.val_loss:
            best = probe
    return best


def load_into_head(linear: torch.nn.Linear, probe: LinearProbe) -> None:
    """Copy the probe's weights into Zoobot's head (its final nn.Linear)."""
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(probe.weight))
        linear.bias.copy_(torch.from_numpy(probe.bias))


RIDGE_ALPHAS = (0.01, 0.1, 1.0, 10.0, 100.0)  # L2 strengths tried; the one with the lowest val loss wins
LOGIT_CLIP = 0.02  # unit-interval targets are clipped to [0.02, 0.98] before the logit the ridge fits


@dataclass(frozen=True)
class RidgeProbe:
    """The regression task's linear probe: outputs = features @ weight.T + bias (then a sigmoid when the targets
    lie in [0, 1], as the regressor's head does), fitted by ridge regression on the frozen encoder's features."""
    weight: np.ndarray  # (n_outputs, n_features)
    bias: np.ndarray  # (n_outputs,)
    alpha: float
    n_train: int
    unit_interval: bool
    val_rmse: float
    val_loss: float  # mean squared error over galaxies and columns (what Zoobot's regressor logs as val loss)

    def predict(self, features: np.ndarray) -> np.ndarray:
        out = features @ self.weight.T + self.bias
        return 1 / (1 + np.exp(-out)) if self.unit_interval else out

    def record(self) -> dict:
        return {"alpha": self.alpha, "n_train": self.n_train, "val_rmse": round(self.val_rmse, 4),
                "val_loss": round(self.val_loss, 6)}


def fit_ridge_probe(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
                    unit_interval: bool) -> RidgeProbe:
    """Ridge regression of the (N, K) targets on raw pooled features (of their logits, clipped, when the targets
    lie in [0, 1]), its strength picked by val mean squared error of the outputs the head would give."""
    from sklearn.linear_model import Ridge

    train_y, val_y = np.asarray(train_y, dtype=float), np.asarray(val_y, dtype=float)
    fit_y = train_y
    if unit_interval:
        clipped = np.clip(train_y, LOGIT_CLIP, 1 - LOGIT_CLIP)
        fit_y = np.log(clipped / (1 - clipped))
    best = None
    for alpha in RIDGE_ALPHAS:
        fitted = Ridge(alpha=alpha).fit(train_x, fit_y)
        weight = np.atleast_2d(fitted.coef_).astype(np.float32)
        bias = np.atleast_1d(fitted.intercept_).astype(np.float32)
        probe = RidgeProbe(weight, bias, alpha, len(train_y), unit_interval, 0.0, 0.0)
        mse = float(np.mean((probe.predict(val_x) - val_y) ** 2))
        probe = RidgeProbe(weight, bias, alpha, len(train_y), unit_interval, mse ** 0.5, mse)
        if best is None or probe.val_loss < best.val_loss:
            best = probe
    return best


def frozen_features(encoder, data, seed: int, accelerator: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(keep, train features, val features): the frozen encoder's pooled features of (at most PROBE_MAX_TRAIN, a
    class-stratified sample `keep` of) the train galaxies and of every val galaxy of `data` (a GalaxyDataModule)."""
    device = torch.device("cuda" if accelerator == "gpu" else "cpu")
    encoder.to(device)
    train, val = data.dataset("train"), data.dataset("val")
    keep = stratified_sample(train.labels.numpy(), PROBE_MAX_TRAIN, seed)

    def features(dataset, rows):
        batches = (dataset.__getitems__(rows[i:i + data.batch_size])["image"]
                   for i in range(0, len(rows), data.batch_size))
        return pooled_features(encoder, batches, data.eval_view)

    try:
        return keep, features(train, keep), features(val, np.arange(len(val)))
    finally:
        encoder.to("cpu")


def linear_probe(encoder, data, n_classes: int, seed: int, accelerator: str) -> LinearProbe:
    """The logistic regression of the classes on the frozen encoder's features (frozen_features)."""
    keep, train_x, val_x = frozen_features(encoder, data, seed, accelerator)
    train, val = data.dataset("train"), data.dataset("val")
    return fit_linear_probe(train_x, train.labels.numpy()[keep], val_x, val.labels.numpy(), n_classes, seed)


def ridge_probe(encoder, data, seed: int, accelerator: str, unit_interval: bool) -> RidgeProbe:
    """The ridge regression of the targets on the frozen encoder's features (frozen_features)."""
    keep, train_x, val_x = frozen_features(encoder, data, seed, accelerator)
    train, val = data.dataset("train"), data.dataset("val")
    return fit_ridge_probe(train_x, train.targets.numpy()[keep], val_x, val.targets.numpy(), unit_interval)
