"""Nested, class-balanced subsets of a training split: the budgets of a learning curve.

One seeded shuffle per class; a budget of n per class takes the first n of each class's shuffle, so every
smaller budget is a subset of every larger one, and each class gets exactly n (a budget some class cannot fill
is dropped: "all" covers it).
"""
from __future__ import annotations

import numpy as np


def class_orders(labels: np.ndarray, seed: int) -> dict[int, np.ndarray]:
    """Per class, its row indexes in one seeded random order."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    return {int(c): rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)}


def nested_subsets(labels: np.ndarray, per_class: list[int], seed: int) -> dict[int | str, np.ndarray]:
    """{n per class: sorted row indexes} for each budget every class can fill, plus "all" (every row)."""
    orders = class_orders(labels, seed)
    smallest = min(len(order) for order in orders.values())
    subsets: dict[int | str, np.ndarray] = {}
    for n in sorted(set(int(n) for n in per_class)):
        if 0 < n < smallest:
            subsets[n] = np.sort(np.concatenate([order[:n] for order in orders.values()]))
    subsets["all"] = np.arange(len(labels))
    return subsets


def subset_per_class(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Sorted row indexes of the first `per_class` rows of each class's seeded shuffle (all of a smaller class)."""
    return np.sort(np.concatenate([order[:per_class] for order in class_orders(labels, seed).values()]))
