"""split: stratified, seeded train/val/test catalogs; a source's canonical test and val sets stay what they are."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

from galaxy_finetune.core.errors import PipelineError
from galaxy_finetune.core.files import atomic_path, read_table
from galaxy_finetune.core.layout import CATALOG
from galaxy_finetune.core.task import Task


def read_catalog(raw_dir: Path) -> pd.DataFrame:
    """data/raw/catalog.csv, with `row`: each galaxy's row in the store."""
    catalog = read_table(Path(raw_dir) / CATALOG)
    return catalog.assign(row=range(len(catalog)))


def split_catalog(catalog: pd.DataFrame, val_fraction: float, test_fraction: float, seed: int,
                  task: Task | None = None) -> dict[str, pd.DataFrame]:
    """Split into train/val/test, stratified by label (classification), by the first question's most-voted
    answer (votes, where each answer has galaxies enough), or at random (regression).

    Rows marked split=test by the source are the test set; otherwise test_fraction of the rows not marked
    val is held out. Rows marked split=val (galaxy-datasets' own layout) are the validation set; otherwise
    val_fraction of the remaining training pool becomes it.
    """
    if catalog["id_str"].duplicated().any():
        raise PipelineError("catalog.csv: duplicate id_str values; fix the source catalog")
    marked = catalog["split"].fillna("")
    canonical_val = catalog[marked.eq("val")]
    rest = catalog[~marked.eq("val")]
    canonical_test = marked[~marked.eq("val")].eq("test")
    if canonical_test.any():
        pool, test = rest[~canonical_test], rest[canonical_test]
    else:
        pool, test = _stratified(rest, test_fraction, seed, "test", task)
    if len(canonical_val):
        train, val = pool, canonical_val
    else:
        train, val = _stratified(pool, val_fraction, seed, "val", task)
    splits = {"train": train, "val": val, "test": test}
    return {name: frame.drop(columns=["split", "src"], errors="ignore").sort_values("id_str").reset_index(drop=True)
            for name, frame in splits.items()}


def write_splits(splits: dict[str, pd.DataFrame], out_dir: Path) -> None:
    """data/splits/{train,val,test}.csv (id_str, label, label_name, row), all or nothing."""
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for name, frame in splits.items():
            frame.to_csv(tmp / f"{name}.csv", index=False)


def _stratified(frame: pd.DataFrame, fraction: float, seed: int, what: str, task: Task | None = None):
    if task is not None and task.kind != "classification":
        return _unstratified(frame, fraction, seed, what, task)
    counts = frame["label_name"].value_counts()  # the class as data.classes names it
    if counts.min() < 2:
        name, n = counts.idxmin(), int(counts.min())
        raise PipelineError(f"split: class {name!r} has {n} galax{'y' if n == 1 else 'ies'} left, too few to put one "
                            f"in {what} and keep one in train; add galaxies of that class, or drop it from "
                            f"data.classes (and its galaxies from the catalog)")
    try:
        return train_test_split(frame, test_size=fraction, stratify=frame["label"], random_state=seed)
    except ValueError as exc:
        raise PipelineError(f"split: cannot carve a stratified {what} set ({exc}); raise split.{what}_fraction "
                            f"or add examples") from None


def _unstratified(frame: pd.DataFrame, fraction: float, seed: int, what: str, task: Task):
    """Regression: a seeded random split. Votes: stratified on the first question's most-voted answer when
    every such answer has at least two galaxies, else random."""
    if len(frame) < 2:
        raise PipelineError(f"split: {len(frame)} galax{'y' if len(frame) == 1 else 'ies'} left, too few to put one "
                            f"in {what} and keep one in train; add galaxies")
    stratify = None
    if task.kind == "votes":
        first = list(next(iter(task.questions.values())))
        top = frame[first].to_numpy().argmax(1)
        counts = pd.Series(top).value_counts()
        n_test = fraction * len(frame) if fraction < 1 else fraction
        if counts.min() >= 2 and n_test >= len(counts) and len(frame) - n_test >= len(counts):
            stratify = top
    try:
        return train_test_split(frame, test_size=fraction, stratify=stratify, random_state=seed)
    except ValueError as exc:
        raise PipelineError(f"split: cannot carve a {what} set ({exc}); raise split.{what}_fraction "
                            f"or add examples") from None


def summary(splits: dict[str, pd.DataFrame], classes: list[str], task: Task | None = None) -> str:
    if task is not None and task.kind != "classification":
        cols = list(task.label_cols)
        if task.kind == "votes":  # the mean volunteer fraction of each answer
            frames = {name: pd.concat([frame[list(a)].div(frame[list(a)].sum(1).replace(0, float("nan")), axis=0)
                                       for a in task.questions.values()], axis=1) for name, frame in splits.items()}
            what = "mean vote fraction"
        else:
            frames, what = {name: frame[cols] for name, frame in splits.items()}, "mean"
        table = pd.DataFrame({name: frame.mean() for name, frame in frames.items()}).round(3)
        table.loc["galaxies"] = [len(frame) for frame in splits.values()]
        return f"{task.kind}: {what} per column\n{table.to_string()}"
    table = pd.DataFrame({name: frame["label_name"].value_counts().reindex(classes, fill_value=0)
                          for name, frame in splits.items()})
    table.loc["total"] = table.sum()
    return table.to_string()
