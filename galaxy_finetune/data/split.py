"""split: stratified, seeded train/val/test catalogs; a source's canonical test and val sets stay what they are."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from galaxy_finetune.core.errors import PipelineError
from galaxy_finetune.core.files import atomic_path, read_table
from galaxy_finetune.core.layout import CATALOG, POOL
from galaxy_finetune.core.task import Task
from galaxy_finetune.data.subsets import subset_per_class


def read_catalog(raw_dir: Path) -> pd.DataFrame:
    """data/raw/catalog.csv, with `row`: each galaxy's row in the store."""
    catalog = read_table(Path(raw_dir) / CATALOG)
    return catalog.assign(row=range(len(catalog)))


NO_LABEL = "no label"  # a pool galaxy's `reason` (data/splits/unlabelled.csv): an empty label in the catalog
HELD_BACK = "label held back (split.train_per_class)"  # or a training label a budget run does without


def split_catalog(catalog: pd.DataFrame, val_fraction: float, test_fraction: float, seed: int,
                  task: Task | None = None, groups: np.ndarray | None = None,
                  train_per_class: int = 0) -> dict[str, pd.DataFrame]:
    """Split into train/val/test, stratified by label (classification), by the first question's most-voted
    answer (votes, where each answer has galaxies enough), or at random (regression).

    Rows marked split=test by the source are the test set; otherwise test_fraction of the rows not marked
    val is held out. Rows marked split=val (galaxy-datasets' own layout) are the validation set; otherwise
    val_fraction of the remaining training pool becomes it.

    `groups`: for each row, the first row of its group of identical images (data.duplicates.exact_groups of
    the store's row hashes). A group goes to one split: test if any member is marked test, else val if any is
    marked val, else where its first row is drawn. `train_per_class` > 0 keeps that many training galaxies per
    class (nested: a smaller budget is a subset of a larger one; val and test unchanged), for learning curves.

    A fourth table, "unlabelled", is the pool semi-supervised training also learns from: the galaxies nobody
    labelled (Task.unlabelled; never in val or test) and, with `train_per_class`, the training galaxies whose
    labels the budget holds back, their truth removed (Task.unlabel); `reason` says which.
    """
    task = task or Task("classification")  # stratified on the label column
    if catalog["id_str"].duplicated().any():
        raise PipelineError("catalog.csv: duplicate id_str values; fix the source catalog")
    position = np.arange(len(catalog))
    group = position if groups is None else np.asarray(groups)
    unlabelled = task.unlabelled(catalog)
    if unlabelled.any():  # the pool: never val or test
        labelled = ~unlabelled
        splits = split_catalog(catalog[labelled].reset_index(drop=True), val_fraction, test_fraction, seed, task,
                               None if groups is None else _renumber(group[labelled]),
                               train_per_class)
        nobody = catalog[unlabelled].assign(reason=NO_LABEL)
        return {**splits, POOL: _tidy(pd.concat([splits[POOL], nobody]))}
    marked = catalog["split"].fillna("").astype(str).to_numpy()
    if (group != position).any():  # a group takes the strongest mark of its members: test, then val
        strength = pd.Series(np.select([marked == "test", marked == "val"], [2, 1], 0))
        best = strength.groupby(group).transform("max").to_numpy()
        marked = np.where(best > strength.to_numpy(), np.array(["", "val", "test"])[best], marked)
    catalog = catalog.assign(split=marked, _pos=position, _group=group)
    canonical_val = catalog[catalog["split"].eq("val")]
    rest = catalog[~catalog["split"].eq("val")]
    canonical_test = rest["split"].eq("test")
    if canonical_test.any():
        pool, test = rest[~canonical_test], rest[canonical_test]
    else:
        pool, test = _carve(rest, test_fraction, seed, "test", task)
    if len(canonical_val):
        train, val = pool, canonical_val
    else:
        train, val = _carve(pool, val_fraction, seed, "val", task)
    if train_per_class:
        if not task.by_class:
            raise PipelineError(f"split.train_per_class: per class, so for train.task classification only "
                                f"(this run's task is {task.kind}); set it to 0")
        kept = subset_per_class(train["label"].to_numpy(), train_per_class, seed)
        held = np.setdiff1d(np.arange(len(train)), kept)
        unlabelled = task.unlabel(train.iloc[held]).assign(reason=HELD_BACK)  # labels a budget run has not made
        train = train.iloc[kept]
    else:
        unlabelled = train.iloc[:0].assign(reason="")
    splits = {"train": train, "val": val, "test": test, POOL: unlabelled}
    return {name: _tidy(frame) for name, frame in splits.items()}


def _tidy(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["split", "src", "_pos", "_group"], errors="ignore").sort_values("id_str").reset_index(
        drop=True)


def _renumber(group: np.ndarray) -> np.ndarray:
    """Duplicate groups (each row's group: the position of its first member) among a subset of the rows, in the
    subset's own positions (a group's first labelled member leads it)."""
    return pd.Series(np.arange(len(group))).groupby(group).transform("min").to_numpy()


def _carve(frame: pd.DataFrame, fraction: float, seed: int, what: str, task: Task):
    """(kept, held): a stratified draw of each duplicate group's first row; the other members follow it."""
    first = frame[frame["_group"] == frame["_pos"]]
    if len(first) == len(frame):
        return _stratified(frame, fraction, seed, what, task)
    _, held = _stratified(first, fraction, seed, what, task)
    goes = frame["_group"].isin(held["_pos"])
    return frame[~goes], frame[goes]


def write_splits(splits: dict[str, pd.DataFrame], out_dir: Path, extra: dict[str, pd.DataFrame] | None = None) -> None:
    """data/splits/{train,val,test}.csv (id_str, label, label_name, row), and `extra` tables by file name (the
    duplicates), all or nothing."""
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for name, frame in splits.items():
            frame.to_csv(tmp / f"{name}.csv", index=False)
        for name, frame in (extra or {}).items():
            frame.to_csv(tmp / name, index=False)


def _stratified(frame: pd.DataFrame, fraction: float, seed: int, what: str, task: Task):
    """(kept, held): a seeded split, stratified on what the task stratifies on (Task.strata)."""
    stratify = task.strata(frame, fraction, what)
    try:
        return train_test_split(frame, test_size=fraction, stratify=stratify, random_state=seed)
    except ValueError as exc:
        kind = "a stratified" if stratify is not None and task.by_class else "a"
        raise PipelineError(f"split: cannot carve {kind} {what} set ({exc}); raise split.{what}_fraction "
                            f"or add examples") from None


def summary(splits: dict[str, pd.DataFrame], task: Task) -> str:
    """The split stage's table of what each split holds (Task.split_summary), and the unlabelled pool's size."""
    pool = splits.get(POOL, pd.DataFrame())
    table = task.split_summary({name: frame for name, frame in splits.items() if name != POOL})
    if not len(pool):
        return table
    why = ", ".join(f"{n:,} {reason}" for reason, n in pool["reason"].value_counts().items())
    return f"{table}\nunlabelled pool: {len(pool):,} galaxies ({why}), data/splits/{POOL}.csv"
