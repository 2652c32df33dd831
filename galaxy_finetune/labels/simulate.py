"""Does choosing which galaxies to label pay? Acquisition against random labelling, simulated on a held-out pool.

The pool is the train split with its labels hidden; each round the learner (a logistic regression on frozen
encoder features, as the linear probe) is refitted on the labelled galaxies, scored on the fixed test split, and
`batch` more pool galaxies get their labels: the highest-scoring ones under an acquisition score, or random ones.
BALD's Monte-Carlo passes drop features with the head's dropout rate before the fitted weights (as Zoobot's head
does). The label saving at equal accuracy: the labels a strategy needs to reach the accuracy random labelling has
at the full budget, against the labels random labelling itself needed to first reach it.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from galaxy_finetune.data.subsets import subset_per_class
from galaxy_finetune.labels.acquisition import score


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


class ProbeLearner:
    """A multinomial logistic regression at a fixed strength C (picked once on val), with MC feature dropout."""

    def __init__(self, C: float, dropout: float = 0.5, passes: int = 20, seed: int = 0):
        self.C, self.dropout, self.passes, self.seed = C, dropout, passes, seed

    def fit(self, x: np.ndarray, y: np.ndarray, n_classes: int) -> "ProbeLearner":
        from sklearn.linear_model import LogisticRegression

        fitted = LogisticRegression(C=self.C, max_iter=2000).fit(x, y)
        self.weight, self.bias = np.zeros((n_classes, x.shape[1])), np.zeros(n_classes)
        if len(fitted.classes_) == 2:
            self.weight[fitted.classes_[1]], self.bias[fitted.classes_[1]] = fitted.coef_[0], fitted.intercept_[0]
        else:
            self.weight[fitted.classes_], self.bias[fitted.classes_] = fitted.coef_, fitted.intercept_
            self.bias[np.setdiff1d(np.arange(n_classes), fitted.classes_)] = -30.0
        return self

    def probs(self, x: np.ndarray) -> np.ndarray:
        return _softmax(x @ self.weight.T + self.bias)

    def mc_probs(self, x: np.ndarray) -> np.ndarray:
        """(T, N, C): each pass drops features at the dropout rate (inverted dropout) before the weights."""
        rng = np.random.default_rng(self.seed)
        keep = 1.0 - self.dropout
        return np.stack([_softmax((x * (rng.random(x.shape) < keep) / keep) @ self.weight.T + self.bias)
                         for _ in range(self.passes)])


def simulate_active(train_x, train_y, test_x, test_y, n_classes: int, C: float, strategies: list[str],
                    seeds: int, start_per_class: int, batch: int, budget: int, dropout: float = 0.5,
                    passes: int = 20) -> pd.DataFrame:
    """Rows (strategy, seed, n_labels, accuracy) of each round of each strategy ("random" or an acquisition
    score) and seed; every strategy of one seed starts from the same class-balanced labelled set."""
    train_y, test_y = np.asarray(train_y, int), np.asarray(test_y, int)
    budget = min(budget, len(train_y))
    rows = []
    for seed in range(seeds):
        start = subset_per_class(train_y, start_per_class, seed)
        for strategy in strategies:
            rng = np.random.default_rng(1000 + seed)
            labelled = np.zeros(len(train_y), bool)
            labelled[start] = True
            while True:
                learner = ProbeLearner(C, dropout, passes, seed).fit(train_x[labelled], train_y[labelled], n_classes)
                accuracy = float(np.mean(learner.probs(test_x).argmax(1) == test_y))
                rows.append({"strategy": strategy, "seed": seed, "n_labels": int(labelled.sum()),
                             "accuracy": round(accuracy, 4)})
                if labelled.sum() >= budget:
                    break
                pool = np.flatnonzero(~labelled)
                take = min(batch, budget - int(labelled.sum()), len(pool))
                if strategy == "random":
                    chosen = rng.choice(pool, take, replace=False)
                else:
                    x = train_x[pool]
                    values = score(strategy, learner.probs(x), learner.mc_probs(x) if strategy == "bald" else None)
                    chosen = pool[np.lexsort((pool, -values))[:take]]
                labelled[chosen] = True
    return pd.DataFrame(rows)


def labels_to_reach(curve: pd.DataFrame, target: float) -> float | None:
    """Labels at which a (n_labels, accuracy) curve first reaches `target`, linearly interpolated; None if never."""
    n, acc = curve["n_labels"].to_numpy(float), curve["accuracy"].to_numpy(float)
    above = np.flatnonzero(acc >= target - 1e-12)
    if not len(above):
        return None
    i = above[0]
    if i == 0:
        return float(n[0])
    return float(n[i - 1] + (target - acc[i - 1]) / (acc[i] - acc[i - 1]) * (n[i] - n[i - 1]))


def label_saving(rounds: pd.DataFrame) -> pd.DataFrame:
    """Per strategy (seed-averaged curves): its final accuracy, the labels it needs to first reach the accuracy
    random labelling has at the full budget, and the saving at that equal accuracy: 1 - its labels / the labels
    random labelling needed to first reach it (0 for random itself; None when a strategy never reaches it)."""
    mean = rounds.groupby(["strategy", "n_labels"], as_index=False)["accuracy"].mean()
    random = mean[mean["strategy"] == "random"]
    budget = float(random["n_labels"].max())
    target = float(random.loc[random["n_labels"].idxmax(), "accuracy"])
    random_need = labels_to_reach(random, target)
    out = []
    for strategy, curve in mean.groupby("strategy", sort=False):
        need = labels_to_reach(curve, target)
        out.append({"strategy": strategy, "final_accuracy": round(float(curve["accuracy"].iloc[-1]), 4),
                    "random_accuracy_at_budget": round(target, 4), "budget": int(budget),
                    "labels_to_match_random": None if need is None else round(need, 1),
                    "random_labels_to_match": round(random_need, 1),
                    "label_saving": None if need is None else round(1.0 - need / random_need, 3)})
    return pd.DataFrame(out)
