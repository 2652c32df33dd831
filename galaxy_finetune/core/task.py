"""What a run learns from each galaxy, `train.task`, and the one reader of it for every later stage.

- classification: one class per galaxy (`data.classes`); catalog columns `label` (0..k-1) and `label_name`.
- regression: continuous values per galaxy, e.g. vote fractions in [0, 1]: the catalog columns `data.label_cols`.
- votes: volunteer vote counts over a Galaxy Zoo decision tree: one count column per answer, grouped into
  questions by `data.schema` (a Zoobot schema's name, e.g. gz2_ortho_schema, or question -> answer columns).

fetch_data writes the task into data/raw/source.json; split, training, predict and analyse read it with
`read_task`, and model.json carries `Task.record()` so galaxy-classify knows what the model outputs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from galaxy_finetune.core.classes import read_source
from galaxy_finetune.core.errors import PipelineError

TASKS = ("classification", "regression", "votes")


@dataclass(frozen=True)
class Task:
    kind: str                                   # one of TASKS
    classes: tuple[str, ...] = ()               # classification: label i is classes[i]
    label_cols: tuple[str, ...] = ()            # regression: the target columns; votes: every answer's count column
    questions: dict[str, tuple[str, ...]] = field(default_factory=dict)  # votes: question -> its answer columns

    def __post_init__(self):
        if self.kind not in TASKS:
            raise PipelineError(f"train.task: {self.kind!r} is not one of {list(TASKS)}")
        if self.kind == "votes":
            flat = tuple(c for answers in self.questions.values() for c in answers)
            if self.label_cols and self.label_cols != flat:
                raise PipelineError("votes: label_cols must be the questions' answer columns, in order")
            object.__setattr__(self, "label_cols", flat)

    @property
    def outputs(self) -> int:
        """How many numbers the head gives per galaxy."""
        return len(self.classes) if self.kind == "classification" else len(self.label_cols)

    def zoobot_schema(self):
        """Zoobot's Schema for the votes head: one question per question, answers in column order.

        Zoobot names an answer's column question + answer; a column that does not start with its question's
        name gets the answer text '::<column>'. Batches carry the counts under `schema.label_cols`, which are
        this task's label_cols position by position (see `schema_keys`)."""
        if self.kind != "votes":
            raise ValueError(f"a {self.kind} task has no Zoobot schema")
        from zoobot.shared.schemas import Schema

        pairs = {q: [c[len(q):] if c.startswith(q) and len(c) > len(q) else f"::{c}" for c in answers]
                 for q, answers in self.questions.items()}
        return Schema(pairs, {q: None for q in pairs})

    def schema_keys(self) -> list[str]:
        """The batch keys of the votes head's counts, in label_cols order."""
        return list(self.zoobot_schema().label_cols)

    def record(self) -> dict:
        return {"kind": self.kind, "classes": list(self.classes), "label_cols": list(self.label_cols),
                "questions": {q: list(a) for q, a in self.questions.items()}}

    @classmethod
    def from_record(cls, record: dict | None, classes=()) -> Task:
        """From `record()`; None (a model or source written before tasks existed) is classification of `classes`."""
        if not record:
            return cls("classification", tuple(classes))
        return cls(record["kind"], tuple(record.get("classes", ())), tuple(record.get("label_cols", ())),
                   {q: tuple(a) for q, a in record.get("questions", {}).items()})


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
    import numpy as np

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
