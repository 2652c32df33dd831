"""What a run learns from each galaxy, `train.task`: one strategy class per task, picked once.

- Classification: one class per galaxy (`data.classes`); catalog columns `label` (0..k-1) and `label_name`.
- Regression: continuous values per galaxy, e.g. vote fractions in [0, 1]: the catalog columns `data.label_cols`.
- Votes: volunteer vote counts over a Galaxy Zoo decision tree: one count column per answer, grouped into
  questions by `data.schema` (a Zoobot schema's name, e.g. gz2_ortho_schema, or question -> answer columns).

Each class holds what differs per task in the data and its tables: how its targets are read and checked, how a
split is stratified and summarised, the prediction columns, the truth the predictions are scored against and the
groups they are scored in, and what the label budget can do for it. What differs per task in a heavier layer is
looked up there once by `kind`: the head, loss and learning curve (training/heads.py), the analysis
(analysis/analyse.py). `Task(kind, ...)` builds the kind's class, so a record, a param or a test names a task
by its kind.

fetch_data writes the task into data/raw/source.json; split, training, predict and analyse read it with
`read_task`, and model.json carries `Task.record()` so galaxy-classify knows what the model outputs.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from galaxy_finetune.core.classes import read_source
from galaxy_finetune.core.errors import PipelineError


UNLABELLED = -1  # catalog.csv's label of a galaxy nobody labelled (classification; for the others every target is empty)


def numbers(values) -> tuple[np.ndarray, np.ndarray]:
    """(floats, text): a column as numbers (empty cells NaN) and where it held text that is not a number."""
    raw = pd.Series(values)
    if not pd.api.types.is_numeric_dtype(raw):
        raw = raw.replace("", np.nan)
    numbers = pd.to_numeric(raw, errors="coerce")
    return numbers.to_numpy(float), (numbers.isna() & raw.notna()).to_numpy()


def _fmt(values: np.ndarray) -> np.ndarray:
    """Six decimals, an empty cell for NaN (an unanswered question)."""
    return np.where(np.isnan(values), "", np.char.mod("%.6f", np.nan_to_num(values)))


@dataclass(frozen=True)
class Task:
    kind: str                                   # one of TASKS
    classes: tuple[str, ...] = ()               # classification: label i is classes[i]
    label_cols: tuple[str, ...] = ()            # regression: the target columns; votes: every answer's count column
    questions: dict[str, tuple[str, ...]] = field(default_factory=dict)  # votes: question -> its answer columns

    # the truth is one class per galaxy (a `label` column): per-class subsets, stratified splits and the label
    # budget (wrong labels, learning curves) need it; otherwise it is the target columns `label_cols`
    by_class: ClassVar[bool] = False
    targets_param: ClassVar[str] = "data.label_cols"  # the parameter that names the targets, for messages

    def __new__(cls, kind: str | None = None, *args, **kwargs):
        if cls is Task:  # Task("votes", ...) is a Votes
            if kind not in KINDS:
                raise PipelineError(f"train.task: {kind!r} is not one of {list(TASKS)}")
            cls = KINDS[kind]
        return super().__new__(cls)

    def __post_init__(self):
        if self.kind != type(self).kind_name:
            raise PipelineError(f"train.task: {self.kind!r} is not a {type(self).kind_name} task")

    @property
    def outputs(self) -> int:
        """How many numbers the head gives per galaxy."""
        return len(self.label_cols)

    def record(self) -> dict:
        return {"kind": self.kind, "classes": list(self.classes), "label_cols": list(self.label_cols),
                "questions": {q: list(a) for q, a in self.questions.items()}}

    @classmethod
    def from_record(cls, record: dict | None, classes=()) -> Task:
        """From `record()`; None (a model or source written before tasks existed) is classification of `classes`."""
        if not record:
            return Task("classification", tuple(classes))
        return Task(record["kind"], tuple(record.get("classes", ())), tuple(record.get("label_cols", ())),
                    {q: tuple(a) for q, a in record.get("questions", {}).items()})

    # ---- the catalog: what each galaxy is labelled with ----

    def labelled(self, frame: pd.DataFrame) -> bool:
        """Whether `frame` carries this task's truth for each galaxy."""
        return all(c in frame.columns for c in self.label_cols)

    def unlabelled(self, frame: pd.DataFrame) -> np.ndarray:
        """Which rows of a catalog or split table are galaxies nobody labelled: every target column empty."""
        return frame[list(self.label_cols)].isna().all(axis=1).to_numpy()

    def unlabel(self, frame: pd.DataFrame) -> pd.DataFrame:
        """`frame` with its truth removed: the rows as unlabelled galaxies (split.train_per_class's held-back labels
        join the unlabelled pool this way, so no loss can see them)."""
        return frame.assign(**{c: np.nan for c in self.label_cols})

    def missing_targets(self, columns) -> list[str]:
        return [c for c in self.label_cols if c not in columns]

    def target_values(self, values, unit_interval: bool = False):
        """(values, bad, need): one target column as floats, which rows are not valid targets, and what a valid one
        is (for the message); `unit_interval` also asks values in [0, 1] (galaxy-datasets' regression targets)."""
        values = numbers(values)[0]
        bad = ~np.isfinite(values)
        if unit_interval:
            return values, bad | (np.nan_to_num(values) < 0) | (np.nan_to_num(values) > 1), "a number in [0, 1]"
        return values, bad, "a finite number"

    target_dtype: ClassVar[type] = float

    def check_source(self, name: str, has_classes: bool) -> None:
        """A PipelineError when galaxy-datasets' `name` (classes when `has_classes`, else vote counts) cannot
        give this task's truth."""

    def catalog_columns(self) -> list[str]:
        """The task's columns of catalog.csv after the shared ones (id_str, label, label_name, split, src)."""
        return list(self.label_cols)

    # ---- the split ----

    def strata(self, frame: pd.DataFrame, fraction: float, what: str) -> np.ndarray | None:
        """What a split of `frame` is stratified on (None: a seeded random split); a PipelineError when `frame`
        is too small to hold one galaxy out."""
        if len(frame) < 2:
            raise PipelineError(f"split: {len(frame)} galax{'y' if len(frame) == 1 else 'ies'} left, too few to put "
                                f"one in {what} and keep one in train; add galaxies")
        return None

    def check_splittable(self, catalog: pd.DataFrame, where: str) -> None:
        """A PipelineError, naming `where` (the catalog's file), when the split stage could not split `catalog`
        (catalog.csv's columns) whatever its fractions: known from the catalog alone, so fetch_data says it before
        any image is decoded. Here: a galaxy for train and one for each split drawn rather than given (unlabelled
        galaxies count for none)."""
        carved, free = _drawn_splits(catalog[~self.unlabelled(catalog)])
        if len(free) < 1 + len(carved):
            raise PipelineError(f"{where}: {len(free)} galax{'y' if len(free) == 1 else 'ies'} to split, too few: "
                                f"the split needs {1 + len(carved)} ({_one_for(carved)}); add galaxies")

    def truth(self, values: np.ndarray) -> np.ndarray:
        """The values the predictions are scored against, from the catalog's target columns."""
        return np.asarray(values, dtype=float)

    def split_summary(self, splits: dict[str, pd.DataFrame]) -> str:
        """The split stage's table: the mean truth per column in each split, and the galaxies."""
        frames = {name: pd.DataFrame(self.truth(frame[list(self.label_cols)].to_numpy(float)),
                                     columns=list(self.label_cols)) for name, frame in splits.items()}
        table = pd.DataFrame({name: frame.mean() for name, frame in frames.items()}).round(3)
        table.loc["galaxies"] = [len(frame) for frame in splits.values()]
        return f"{self.kind}: {self.summary_what} per column\n{table.to_string()}"

    summary_what: ClassVar[str] = "mean"

    # ---- predictions ----

    def prediction_header(self, labelled: bool, extra: list[str]) -> list[str]:
        """id_str, [true_<col>...], pred_<col>..., then `extra` columns."""
        cols = list(self.label_cols)
        return ["id_str"] + ([f"true_{c}" for c in cols] if labelled else []) + [f"pred_{c}" for c in cols] + extra

    def prediction_columns(self, out: np.ndarray, rows: pd.DataFrame, labelled: bool) -> list[np.ndarray]:
        """The columns after id_str of a batch's CSV rows: its truth (when `labelled`) and the model's outputs."""
        out = out.reshape(len(rows), -1)
        columns = []
        if labelled:
            truth = self.truth(rows[list(self.label_cols)].to_numpy(float))
            columns += [_fmt(truth[:, i]) for i in range(truth.shape[1])]
        return columns + [_fmt(out[:, i]) for i in range(out.shape[1])]

    # ---- scoring ----

    def groups(self) -> dict[str, list[int]]:
        """Scored groups of columns: each target column alone."""
        return {c: [i] for i, c in enumerate(self.label_cols)}

    group_word: ClassVar[str] = "target column"   # what a scored group is, in reports
    column_word: ClassVar[str] = "column"         # what a prediction column is, in figure titles
    truth_words: ClassVar[str] = "true value per column"


class Classification(Task):
    kind_name: ClassVar[str] = "classification"
    by_class: ClassVar[bool] = True
    targets_param: ClassVar[str] = "data.classes"

    @property
    def outputs(self) -> int:
        return len(self.classes)

    def labelled(self, frame: pd.DataFrame) -> bool:
        return "label" in frame.columns

    def unlabelled(self, frame: pd.DataFrame) -> np.ndarray:
        return (frame["label"] == UNLABELLED).to_numpy()

    def unlabel(self, frame: pd.DataFrame) -> pd.DataFrame:
        return frame.assign(label=UNLABELLED, label_name="")

    def check_source(self, name: str, has_classes: bool) -> None:
        if not has_classes:
            raise PipelineError(f"data.source {name} gives vote counts, not classes: use train.task votes (or "
                                f"regression with data.label_cols)")

    def catalog_columns(self) -> list[str]:
        return []

    def strata(self, frame: pd.DataFrame, fraction: float, what: str) -> np.ndarray:
        counts = frame["label_name"].value_counts()  # the class as data.classes names it
        if counts.min() < 2:
            name, n = counts.idxmin(), int(counts.min())
            raise PipelineError(f"split: class {name!r} has {n} galax{'y' if n == 1 else 'ies'} left, too few to put "
                                f"one in {what} and keep one in train; add galaxies of that class, or drop it from "
                                f"data.classes (and its galaxies from the catalog)")
        return frame["label"]

    def check_splittable(self, catalog: pd.DataFrame, where: str) -> None:
        """Each class needs a training galaxy and one for each split drawn rather than given by the catalog's split
        column (`strata` refuses a class of one); a class short of that is named with its rows and, where one is
        close, the known class it may be a typo of."""
        carved, free = _drawn_splits(catalog[~self.unlabelled(catalog)])
        need = 1 + len(carved)
        counts = free["label_name"].value_counts().reindex(list(self.classes), fill_value=0)
        if (counts >= need).all():
            return
        name, n = counts.idxmin(), int(counts.min())
        rows = np.flatnonzero((catalog["label_name"] == name).to_numpy())
        shown = ", ".join(map(str, rows[:5])) + (f" and {len(rows) - 5} more" if len(rows) > 5 else "")
        splittable = [c for c in self.classes if counts[c] >= need]  # a typo of a class that is there
        close = difflib.get_close_matches(name, splittable, n=1, cutoff=0.6)
        own = " outside the catalog's own val/test rows" if len(carved) < 2 else ""
        raise PipelineError(
            f"{where}: class {name!r} has {n} galax{'y' if n == 1 else 'ies'}{own} "
            f"({'row' if len(rows) == 1 else 'rows'} {shown or 'none'}), too few to split: a class needs {need} "
            f"({_one_for(carved)})." + (f" Is it a typo of {close[0]!r}?" if close else "")
            + " Fix the label, add galaxies of that class, or drop its rows from the catalog")

    def split_summary(self, splits: dict[str, pd.DataFrame]) -> str:
        table = pd.DataFrame({name: frame["label_name"].value_counts().reindex(list(self.classes), fill_value=0)
                              for name, frame in splits.items()})
        table.loc["total"] = table.sum()
        return table.to_string()

    def prediction_header(self, labelled: bool, extra: list[str]) -> list[str]:
        """id_str, [true_label], pred_label, p_<class>..., [p_true], confidence, then `extra` columns."""
        return (["id_str"] + (["true_label"] if labelled else []) + ["pred_label"]
                + [f"p_{c}" for c in self.classes] + (["p_true"] if labelled else []) + ["confidence"] + extra)

    def prediction_columns(self, out: np.ndarray, rows: pd.DataFrame, labelled: bool) -> list[np.ndarray]:
        classes = np.asarray(self.classes)
        columns = [classes[rows["label"].to_numpy()]] if labelled else []
        columns.append(classes[out.argmax(1)])
        columns += [np.char.mod("%.6f", out[:, i]) for i in range(out.shape[1])]
        if labelled:
            columns.append(np.char.mod("%.6f", out[np.arange(len(out)), rows["label"].to_numpy()]))
        return columns + [np.char.mod("%.6f", out.max(1))]


class Regression(Task):
    kind_name: ClassVar[str] = "regression"


class Votes(Task):
    kind_name: ClassVar[str] = "votes"
    targets_param: ClassVar[str] = "data.schema"
    summary_what: ClassVar[str] = "mean vote fraction"
    group_word: ClassVar[str] = "question"
    column_word: ClassVar[str] = "answer"
    truth_words: ClassVar[str] = "volunteer vote fraction per answer"

    def __post_init__(self):
        super().__post_init__()
        flat = tuple(c for answers in self.questions.values() for c in answers)
        if self.label_cols and self.label_cols != flat:
            raise PipelineError("votes: label_cols must be the questions' answer columns, in order")
        object.__setattr__(self, "label_cols", flat)

    def zoobot_schema(self):
        """Zoobot's Schema for the votes head: one question per question, answers in column order.

        Zoobot names an answer's column question + answer; a column that does not start with its question's
        name gets the answer text '::<column>'. Batches carry the counts under `schema.label_cols`, which are
        this task's label_cols position by position (see `batch_keys`)."""
        from zoobot.shared.schemas import Schema

        pairs = {q: [c[len(q):] if c.startswith(q) and len(c) > len(q) else f"::{c}" for c in answers]
                 for q, answers in self.questions.items()}
        return Schema(pairs, {q: None for q in pairs})

    def schema_keys(self) -> list[str]:
        """The batch keys of the votes head's counts, in label_cols order."""
        return list(self.zoobot_schema().label_cols)

    target_dtype: ClassVar[type] = np.int64

    def target_values(self, values, unit_interval: bool = False):
        """Vote counts: a question nobody was asked of a galaxy (empty) counts 0; each a whole number >= 0."""
        values, text = numbers(values)
        values = np.where(np.isnan(values), 0.0, values)
        return values, text | ~np.isfinite(values) | (values < 0) | (values != np.round(values)), \
            "a whole vote count >= 0"

    def check_source(self, name: str, has_classes: bool) -> None:
        if has_classes:
            raise PipelineError(f"data.source {name} has classes, not votes: use train.task classification")

    def strata(self, frame: pd.DataFrame, fraction: float, what: str) -> np.ndarray | None:
        """The first question's most-voted answer when every such answer has at least two galaxies, else None."""
        super().strata(frame, fraction, what)
        top = frame[list(next(iter(self.questions.values())))].to_numpy().argmax(1)
        counts = pd.Series(top).value_counts()
        n_test = fraction * len(frame) if fraction < 1 else fraction
        return top if counts.min() >= 2 and n_test >= len(counts) and len(frame) - n_test >= len(counts) else None

    def truth(self, values: np.ndarray) -> np.ndarray:
        return vote_fractions(values, self)

    def prediction_header(self, labelled: bool, extra: list[str]) -> list[str]:
        """id_str, [true_<answer>...] (volunteer fractions), pred_<answer>... (the Dirichlet mean vote fractions),
        <question>_concentration... (how sure), then `extra`."""
        return super().prediction_header(labelled, []) + [f"{q}_concentration" for q in self.questions] + extra

    def prediction_columns(self, out: np.ndarray, rows: pd.DataFrame, labelled: bool) -> list[np.ndarray]:
        fractions, totals = self.vote_outputs(out.reshape(len(rows), -1))
        columns = super().prediction_columns(fractions, rows, labelled)
        return columns + [np.char.mod("%.4f", totals[:, i]) for i in range(totals.shape[1])]

    def vote_outputs(self, concentrations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(predicted vote fraction per answer: the Dirichlet mean, Zoobot's expected_value_of_dirichlet_mixture;
        concentration total per question: the larger, the surer) from the tree head's (N, answers) output."""
        from zoobot.shared.stats import expected_value_of_dirichlet_mixture

        schema = self.zoobot_schema()
        fractions = expected_value_of_dirichlet_mixture(concentrations, schema)
        totals = np.stack([concentrations[:, q.start_index:q.end_index + 1].sum(1) for q in schema.questions], axis=1)
        return np.asarray(fractions), totals

    def groups(self) -> dict[str, list[int]]:
        """Each question's answers."""
        out, start = {}, 0
        for q, answers in self.questions.items():
            out[q] = list(range(start, start + len(answers)))
            start += len(answers)
        return out


def _drawn_splits(catalog: pd.DataFrame) -> tuple[list[str], pd.DataFrame]:
    """(the splits the split stage draws, val and/or test: those no row of the catalog is marked with; the rows
    it draws them from and keeps train in: those marked neither val nor test)."""
    marked = catalog["split"].fillna("").astype(str)
    carved = [what for what in ("val", "test") if not marked.eq(what).any()]
    return carved, catalog[~marked.isin(["val", "test"]).to_numpy()]


def _one_for(carved: list[str]) -> str:
    """'one for train, val and test'."""
    splits = ["train", *carved]
    return "one for " + (", ".join(splits[:-1]) + " and " if len(splits) > 1 else "") + splits[-1]


KINDS: dict[str, type[Task]] = {c.kind_name: c for c in (Classification, Regression, Votes)}
TASKS = tuple(KINDS)


def named_schema_questions(name: str) -> dict[str, tuple[str, ...]]:
    """question -> answer columns of a Zoobot schema named as in zoobot.shared.schemas (e.g. gz2_ortho_schema)."""
    from zoobot.shared import schemas

    schema = getattr(schemas, name, None)
    if not isinstance(schema, schemas.Schema):
        known = sorted(n for n in dir(schemas) if n.endswith("_schema"))
        raise PipelineError(f"data.schema: {name!r} is not a Zoobot schema; use one of {known}, or list "
                            f"question: [answer columns] for an own catalog")
    return {q.text: tuple(a.text for a in q.answers) for q in schema.questions}


def read_task(raw_dir: Path) -> Task:
    """The run's task from data/raw/source.json (written by fetch_data)."""
    record = read_source(raw_dir)
    return Task.from_record(record.get("task"), record.get("classes", ()))


def vote_fractions(counts, task: Task):
    """Volunteer vote fractions of (N, answers) counts in the task's column order: each count over its question's
    total, NaN where a question got no votes (predict's true_<answer> columns, analyse's baselines)."""
    counts = np.asarray(counts, dtype=float)
    fractions = np.full(counts.shape, np.nan)
    start = 0
    for answers in task.questions.values():
        block = counts[:, start:start + len(answers)]
        total = block.sum(1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            fractions[:, start:start + len(answers)] = np.where(total > 0, block / np.where(total > 0, total, 1),
                                                                np.nan)
        start += len(answers)
    return fractions
