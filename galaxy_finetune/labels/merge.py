"""Fold the labelling page's answers into the own catalog: `galaxy-label-merge LABELS.csv [...]`.

The catalog is params.yaml's data.catalog (data.source: catalog), or --catalog. Each answer (the last one per
galaxy, later files winning) is:
- a class for a galaxy the catalog lacks: **added** (its file from the labels CSV, split left to the split stage);
- a class for a catalog galaxy: **corrected** when it differs from the catalog's label (the old label kept in
  `label_before`, who and when in `label_by` and `label_when`), **confirmed** when it agrees (nothing written);
- skip: **skipped**; artefact: a new galaxy is not added, a catalog galaxy is **removed** from the catalog and
  appended to `<catalog>.artefacts.csv` beside it.
Ids are checked against the catalog (a review answer for an id the catalog lacks, or a new galaxy whose file
the catalog already holds under another id, stops the merge) and labels against data.classes. The catalog is
rewritten atomically, and only when something changed, so `dvc repro` then reruns only what the new labels touch.

For a built-in dataset (data.source galaxy_mnist, synthetic...), --from-raw data/raw/catalog.csv starts an own
catalog at --catalog from this run's galaxies (their ids, files, labels and splits) before merging.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import pandas as pd

from galaxy_finetune.core.cli import run_command
from galaxy_finetune.core.errors import PipelineError
from galaxy_finetune.core.files import atomic_path, read_table, require, write_csv
from galaxy_finetune.core.params import load_params
from galaxy_finetune.data.sources import catalog_ids, id_from_file
from galaxy_finetune.labels.labelling_page import ACTIONS, ARTEFACT, SKIP

AUDIT_COLUMNS = ["label_before", "label_by", "label_when"]
OUTCOMES = ("added", "corrected", "confirmed", "skipped", "removed")


def read_labels(paths: list[Path], classes: list[str]) -> pd.DataFrame:
    """The answers of the labels CSVs, the last per galaxy (later files win), each label checked."""
    frames = []
    for path in paths:
        if not Path(path).is_file():
            raise PipelineError(f"{path}: not found; give the labels CSV galaxy-label wrote")
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        missing = {"id_str", "label"} - set(frame.columns)
        if missing:
            raise PipelineError(f"{path}: missing column(s) {sorted(missing)}; give the labels CSV galaxy-label wrote")
        for column in ("who", "when", "kind", "file"):
            if column not in frame.columns:
                frame[column] = ""
        for row, label in enumerate(frame["label"]):
            if label not in classes and label not in ACTIONS:
                raise PipelineError(f"{path}: row {row} (id {frame['id_str'].iloc[row]!r}): label {label!r} is not one "
                                    f"of data.classes {classes} (or {', '.join(ACTIONS)}); fix it or set data.classes")
        frames.append(frame.assign(labels_file=str(path)))
    labels = pd.concat(frames, ignore_index=True)
    return labels.drop_duplicates("id_str", keep="last").reset_index(drop=True)


def read_catalog(path: Path) -> pd.DataFrame:
    """The own catalog as written: every column text for a CSV (007 stays 007), its own dtypes for parquet."""
    if not path.is_file():
        raise PipelineError(f"{path}: not found; point data.catalog (or --catalog) at the own catalog, or start one "
                            f"with --from-raw data/raw/catalog.csv")
    try:
        frame = (pd.read_parquet(path) if path.suffix == ".parquet"
                 else pd.read_csv(path, dtype=str, keep_default_na=False))
    except Exception as exc:
        raise PipelineError(f"{path}: not a readable catalog ({exc})") from None
    missing = {"file_loc", "label"} - set(frame.columns)
    if missing:
        raise PipelineError(f"{path}: missing column(s) {sorted(missing)}; an own catalog needs file_loc and label")
    return frame


def write_catalog(path: Path, frame: pd.DataFrame) -> None:
    if path.suffix == ".parquet":
        with atomic_path(path) as tmp:
            frame.to_parquet(tmp, index=False)
    else:
        write_csv(path, frame)


def catalog_from_raw(raw_catalog: Path) -> pd.DataFrame:
    """An own catalog holding a run's galaxies (data/raw/catalog.csv: id_str, src, label_name, split)."""
    raw = read_table(require(raw_catalog, "fetch_data", what=f"--from-raw {raw_catalog}"))
    if (raw["label"].astype(int) < 0).any():
        raise PipelineError(f"--from-raw {raw_catalog}: this run learns targets, not classes; galaxy-label-merge "
                            f"merges class labels")
    return pd.DataFrame({"id_str": raw["id_str"], "file_loc": raw["src"], "label": raw["label_name"],
                         "split": raw["split"]})


def merge(catalog: pd.DataFrame, catalog_path: Path, labels: pd.DataFrame, classes: list[str]):
    """(the merged catalog, the artefact rows removed from it, the count of each outcome)."""
    base = os.path.abspath(catalog_path.parent)
    files = [os.path.normpath(os.path.join(base, str(p))) for p in catalog["file_loc"]]
    ids = catalog_ids(catalog, files)
    row_of = {i: n for n, i in enumerate(ids)}
    id_of_file = dict(zip(files, ids))
    as_index = len(catalog) > 0 and all(str(v).lstrip("-").isdigit() for v in catalog["label"])
    numeric = pd.api.types.is_numeric_dtype(catalog["label"])

    def written(name: str):
        """A class name as the catalog writes labels: its name, or its index (a number in a parquet's int column)."""
        return (classes.index(name) if numeric else str(classes.index(name))) if as_index else name

    catalog, original = catalog.copy(), set(catalog.columns)
    for column in AUDIT_COLUMNS:
        if column not in catalog.columns:
            catalog[column] = ""
    counts = dict.fromkeys(OUTCOMES, 0)
    added, removed = [], []
    for answer in labels.itertuples(index=False):
        where = f"{answer.labels_file}: id {answer.id_str!r}"
        stamp = {"label_by": answer.who, "label_when": answer.when}
        if answer.label == SKIP:
            counts["skipped"] += 1
            continue
        if answer.id_str in row_of:
            row = row_of[answer.id_str]
            if answer.label == ARTEFACT:
                removed.append(row)
                counts["removed"] += 1
                continue
            old = str(catalog["label"].iloc[row])
            old_name = classes[int(old)] if as_index and 0 <= int(old) < len(classes) else old
            if old_name == answer.label:
                counts["confirmed"] += 1
                continue
            position = catalog.index[row]
            if not str(catalog.at[position, "label_before"]):
                catalog.at[position, "label_before"] = old
            for column, value in stamp.items():
                catalog.at[position, column] = value
            catalog.at[position, "label"] = written(answer.label)
            counts["corrected"] += 1
            continue
        if answer.kind == "review":
            raise PipelineError(f"{where} was reviewed but is not in {catalog_path}; merge a review into the catalog "
                                f"its queue came from (data.catalog, or --catalog)")
        if answer.label == ARTEFACT:
            counts["skipped"] += 1
            continue
        if not answer.file:
            raise PipelineError(f"{where} is not in {catalog_path} and the labels CSV gives no file to add it from; "
                                f"check the id, or label it from a queue with files")
        file = os.path.normpath(os.path.abspath(answer.file))
        if not os.path.isfile(file):
            raise PipelineError(f"{where}: image {file} not found; restore it, or remove the row from the labels CSV")
        if file in id_of_file:
            raise PipelineError(f"{where}: its file {file} is already in {catalog_path} as id {id_of_file[file]!r}; "
                                f"one galaxy, two ids: fix the id")
        if "id_str" not in catalog.columns and answer.id_str != id_from_file(file):
            catalog.insert(0, "id_str", ids)  # the new id is not its file's name: the catalog names its ids
        relative = os.path.relpath(file, base)
        row = {"id_str": answer.id_str, "file_loc": file if relative.startswith("..") else relative,
               "label": written(answer.label), "label_before": "", **stamp}
        if "split" in catalog.columns:
            row["split"] = ""
        added.append(row)
        id_of_file[file] = answer.id_str
        counts["added"] += 1
    gone = catalog.iloc[removed]
    merged = catalog.drop(index=catalog.index[removed])
    if added:
        new = pd.DataFrame(added)
        if "id_str" not in merged.columns:
            new = new.drop(columns="id_str")
        merged = pd.concat([merged, new[[c for c in new.columns if c in merged.columns]]], ignore_index=True)
    unused = [c for c in AUDIT_COLUMNS if c not in original and not any(str(v) for v in merged[c])]
    merged = merged.drop(columns=unused)  # no correction, no addition: no audit columns
    return merged.reset_index(drop=True), gone, counts


def merge_labels(args: argparse.Namespace) -> dict:
    params = load_params(args.params)
    if params.train.task != "classification":
        raise PipelineError(f"{args.params}: train.task is {params.train.task}; galaxy-label-merge merges class "
                            f"labels (train.task classification)")
    classes = list(params.data.classes)
    target = args.catalog or (Path(params.data.catalog) if params.data.source == "catalog" else None)
    if target is None:
        raise PipelineError(f"{args.params}: data.source is {params.data.source}, not an own catalog; pass --catalog "
                            f"my_catalog.csv --from-raw data/raw/catalog.csv to start one from this run's galaxies")
    target = Path(target)
    if args.from_raw:
        if target.exists():
            raise PipelineError(f"--from-raw: {target} exists already; drop --from-raw to merge into it")
        catalog = catalog_from_raw(args.from_raw)
        original_columns = list(catalog.columns)
    else:
        catalog = read_catalog(target)
        original_columns = list(catalog.columns)
    labels = read_labels(args.labels, classes)
    merged, gone, counts = merge(catalog, target, labels, classes)
    changed = bool(args.from_raw) or counts["added"] or counts["corrected"] or counts["removed"]
    summary = ", ".join(f"{counts[k]} {k}" for k in OUTCOMES)
    if not changed:
        print(f"galaxy-label-merge: {summary}; {target} unchanged, so dvc repro has nothing new to run")
        return counts
    if len(gone):
        sidecar = target.with_name(target.name.removesuffix(target.suffix) + ".artefacts.csv")
        before = pd.read_csv(sidecar, dtype=str, keep_default_na=False) if sidecar.is_file() else None
        write_csv(sidecar, pd.concat([before, gone.astype(str)], ignore_index=True) if before is not None else gone)
    write_catalog(target, merged)
    extra = [c for c in merged.columns if c not in original_columns]
    print(f"galaxy-label-merge: {summary} -> {target} ({len(merged)} galaxies"
          f"{'; new column(s) ' + ', '.join(extra) if extra else ''}"
          f"{'; removed artefacts in ' + target.name.removesuffix(target.suffix) + '.artefacts.csv' if len(gone) else ''})"
          f"; next: dvc repro, then dvc metrics diff")
    if params.data.source != "catalog" or Path(params.data.catalog) != target:
        print(f"galaxy-label-merge: set data.source: catalog and data.catalog: {target} in {args.params} "
              f"(data.classes: {classes}) for dvc repro to use it")
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="galaxy-label-merge", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("labels", type=Path, nargs="+", help="labels CSV(s) galaxy-label wrote (later ones win)")
    parser.add_argument("--params", default="params.yaml", help="the project's params.yaml (data.catalog, data.classes)")
    parser.add_argument("--catalog", type=Path, help="the own catalog to merge into (default: data.catalog)")
    parser.add_argument("--from-raw", type=Path, help="start --catalog from a run's data/raw/catalog.csv (a built-in "
                        "dataset's galaxies) before merging")
    run_command(lambda: merge_labels(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
