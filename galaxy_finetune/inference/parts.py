"""The part files of a streamed prediction run, keyed by input rows, and their merge into one output in input order.

The N input rows are cut into consecutive blocks of `part_rows` rows (part_rows_for(N): about PARTS_PER_RUN
blocks, at most PART_ROWS_MAX rows each; a function of N alone, so every rerun cuts the same blocks, whatever
the number of nodes or GPUs). Block b's predictions go to `part-<first row:012d>.csv` (`index,<output columns>`
lines, appended and flushed batch by batch), its damaged images to `skipped-<first row>.csv` and, with
embeddings, its PCA features to `emb-<first row>.f16` (records of an int64 index and K float16). One process
writes a block per run: `plan` hands each rank a contiguous run of the blocks still to do, balanced by the rows
they lack, so a rerun with another number of ranks finishes the same blocks. A killed process leaves at most a
torn last line (cut off by `prepare`); what a part holds is never predicted again.

`merge` reads the blocks in order, one at a time (memory: one block), and writes the output in input order:
CSV lines copied as written, or Parquet (pyarrow) with one row group per ROW_GROUP_ROWS rows, the same columns
(ids and names as text, `row` as int64, every other column float64), so a reader of 10^8 rows selects columns
without parsing the rest. Writes that hit a full disk name the file and the space they need (`disk_full`).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from galaxy_finetune.core.errors import PipelineError
from galaxy_finetune.core.files import FULL_DISK, TEXT_COLUMNS, atomic_path, disk_full, write_json

RUN = "run.json"                # which model and inputs the parts belong to, and part_rows
PARTS_PER_RUN = 1000            # about this many blocks of input rows per run
PART_ROWS_MAX = 100_000         # rows per block at most (10^8 galaxies: 1,000 parts)
ROW_GROUP_ROWS = 131_072        # Parquet output: rows per row group (blocks are gathered up to this)
PARQUET_SUFFIXES = (".parquet", ".pq")


def part_rows_for(n: int) -> int:
    """Rows per block for a run over `n` inputs: ceil(n / PARTS_PER_RUN), between 1 and PART_ROWS_MAX."""
    return int(max(1, min(PART_ROWS_MAX, -(-n // PARTS_PER_RUN))))


def is_parquet(path: str | Path) -> bool:
    return Path(path).suffix.lower() in PARQUET_SUFFIXES


def _write_all(fd: int, data: bytes) -> None:
    """Every byte of `data` to the file descriptor (os.write may write less than asked)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def append(path: Path, data: bytes) -> None:
    """`data` appended to `path` in full, or not at all: a write that fails (disk full) is cut back off, so the
    file keeps exactly the whole lines it held; the OSError is raised."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        start = os.fstat(fd).st_size
        try:
            _write_all(fd, data)
        except OSError:
            os.ftruncate(fd, start)
            raise
    finally:
        os.close(fd)


class Parts:
    """A folder of part files for `n` input rows in blocks of `part_rows`."""

    def __init__(self, folder: str | Path, n: int, embedding_dim: int = 0):
        self.folder, self.n, self.embedding_dim = Path(folder), int(n), int(embedding_dim)
        self.part_rows = part_rows_for(n)
        self.blocks = -(-self.n // self.part_rows)
        self.record = np.dtype([("index", "<i8"), ("pca", "<f2", (max(self.embedding_dim, 1),))])

    # ---- names ----
    def path(self, kind: str, block: int) -> Path:
        """`part` (predictions), `skipped` (damaged images) or `emb` (PCA features) of block `block`."""
        suffix = ".f16" if kind == "emb" else ".csv"
        return self.folder / f"{kind}-{block * self.part_rows:012d}{suffix}"

    def files(self, kind: str) -> list[Path]:
        return sorted(self.folder.glob(f"{kind}-*.f16" if kind == "emb" else f"{kind}-*.csv"))

    def block_of(self, path: Path) -> int:
        return int(path.stem.split("-")[1]) // self.part_rows

    def rows(self, block: int) -> np.ndarray:
        return np.arange(block * self.part_rows, min(self.n, (block + 1) * self.part_rows))

    # ---- rank zero, before any prediction ----
    def prepare(self, key: dict) -> None:
        """Start afresh unless the folder holds parts of this very run (`key`); cut torn last lines and records."""
        key = key | {"part_rows": self.part_rows, "embedding_dim": self.embedding_dim}
        run_file = self.folder / RUN
        try:
            same = run_file.is_file() and json.loads(run_file.read_text()) == key
        except ValueError:
            same = False
        if not same:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder.mkdir(parents=True)
            write_json(run_file, key)
            return
        for part in self.files("part") + self.files("skipped"):
            data = part.read_bytes()
            if data and not data.endswith(b"\n"):
                os.truncate(part, data.rfind(b"\n") + 1)
        for emb in self.files("emb"):
            size = emb.stat().st_size
            if size % self.record.itemsize:
                os.truncate(emb, size - size % self.record.itemsize)

    def done(self, block: int) -> np.ndarray:
        """Input rows of `block` its parts already hold, predicted or skipped as damaged."""
        held = [pd.read_csv(p, header=None, usecols=[0]).iloc[:, 0].to_numpy(np.int64)
                for p in (self.path("part", block), self.path("skipped", block)) if p.is_file() and p.stat().st_size]
        return np.concatenate(held) if held else np.zeros(0, np.int64)

    def done_counts(self) -> np.ndarray:
        """Rows each block's parts hold (one pass over the first column of every part)."""
        counts = np.zeros(self.blocks, np.int64)
        for part in self.files("part") + self.files("skipped"):
            if part.stat().st_size:
                counts[self.block_of(part)] += len(pd.read_csv(part, header=None, usecols=[0]))
        return counts

    def plan(self, world_size: int, counts: np.ndarray) -> list[list[int]]:
        """The blocks each rank predicts: those not complete, cut into `world_size` contiguous runs holding about
        the same number of rows still to do."""
        lacking = np.full(self.blocks, self.part_rows, np.int64)
        if self.blocks:
            lacking[-1] = self.n - (self.blocks - 1) * self.part_rows
        lacking -= counts
        todo = np.flatnonzero(lacking > 0)
        if not len(todo):
            return [[] for _ in range(world_size)]
        cumulative = np.cumsum(lacking[todo])
        cuts = np.searchsorted(cumulative, cumulative[-1] * np.arange(1, world_size) / world_size, side="right")
        return [chunk.tolist() for chunk in np.split(todo, cuts)]

    def todo(self, blocks: list[int]) -> np.ndarray:
        """The input rows of `blocks` their parts lack, ascending."""
        rows = [np.setdiff1d(self.rows(b), self.done(b), assume_unique=True) for b in blocks]
        return np.concatenate(rows) if rows else np.zeros(0, np.int64)

    # ---- writing (each rank, batch by batch) ----
    def write(self, kind: str, index: np.ndarray, lines, left: int) -> None:
        """Append the rows `index` (ascending) to their blocks' `kind` parts: `lines(positions)` gives the bytes of
        rows index[positions]; `left`: rows this process has still to write after these. A full disk is one line
        naming the part and about the space still needed: this process's rows left, plus the merged output (about
        the size of every part), at the bytes per row of this write."""
        blocks = index // self.part_rows
        starts = np.flatnonzero(np.r_[True, blocks[1:] != blocks[:-1]])
        for start, stop in zip(starts, np.r_[starts[1:], len(index)]):
            path = self.path(kind, int(blocks[start]))
            data = lines(np.arange(start, stop))
            try:
                append(path, data)
            except OSError as exc:
                if exc.errno not in FULL_DISK:
                    raise
                per_row = len(data) / (stop - start)
                need = per_row * (left + len(index) - start) + (per_row * self.n if kind == "part" else 0)
                raise disk_full(path, need, f"the rows written so far are kept in {self.folder}: free space, then "
                                "rerun the same command to go on") from None

    def embedding_records(self, index: np.ndarray, pca: np.ndarray) -> bytes:
        records = np.empty(len(index), self.record)
        records["index"], records["pca"] = index, np.asarray(pca, np.float16).reshape(len(index), -1)
        return records.tobytes()

    # ---- reading back (rank zero, at the end) ----
    def block_lines(self, block: int) -> tuple[np.ndarray, list[bytes]]:
        """(input rows, output lines without the index) of a block's predictions, in input order."""
        path = self.path("part", block)
        if not path.is_file():
            return np.zeros(0, np.int64), []
        lines = [line + b"\n" for line in path.read_bytes().split(b"\n")[:-1]]
        index = np.array([int(line[:line.index(b",")]) for line in lines], np.int64)
        order = np.argsort(index, kind="stable")
        index = index[order]
        if len(index) > 1 and (np.diff(index) == 0).any():
            raise RuntimeError(f"{path}: input row {index[np.flatnonzero(np.diff(index) == 0)[0]]} predicted twice")
        return index, [lines[i][lines[i].index(b",") + 1:] for i in order]

    def block_embeddings(self, block: int, index: np.ndarray) -> np.ndarray:
        """The PCA features of input rows `index` of a block (the last record of each row: a row whose line was
        torn by a kill is predicted again and its features appended again)."""
        path = self.path("emb", block)
        records = np.fromfile(path, self.record) if path.is_file() else np.zeros(0, self.record)
        last = {int(i): k for k, i in enumerate(records["index"])}
        missing = [int(i) for i in index if int(i) not in last]
        if missing:
            raise RuntimeError(f"{path}: no features for input row {missing[0]}")  # a bug: features precede lines
        return records["pca"][[last[int(i)] for i in index]]

    def size(self, kind: str = "part") -> int:
        return sum(p.stat().st_size for p in self.files(kind))


def column_types(header: list[str]) -> dict:
    """The Parquet type of each output column: ids and names text, `row` int64, the rest float64."""
    import pyarrow as pa

    return {c: pa.string() if c in TEXT_COLUMNS else pa.int64() if c == "row" else pa.float64() for c in header}


class _CsvOut:
    def __init__(self, path: Path, header: list[str]):
        self.fh = open(path, "wb")
        self.fh.write((",".join(header) + "\n").encode())

    def add(self, lines: list[bytes], header: list[str]) -> None:
        self.fh.write(b"".join(lines))

    def close(self) -> None:
        self.fh.close()


class _ParquetOut:
    """Lines gathered up to ROW_GROUP_ROWS, parsed by pyarrow's CSV reader with the output's fixed column types
    (ids text as written: "007", "NA" stay), written as one row group."""

    def __init__(self, path: Path, header: list[str]):
        import pyarrow as pa
        import pyarrow.csv as pcsv
        import pyarrow.parquet as pq

        types = column_types(header)
        self.schema = pa.schema(list(types.items()))
        self.read = pcsv.ReadOptions(column_names=header)
        self.convert = pcsv.ConvertOptions(column_types=types, strings_can_be_null=False, null_values=[""],
                                           quoted_strings_can_be_null=False)
        self.writer = pq.ParquetWriter(path, self.schema, compression="zstd")
        self.buffer, self.buffered = [], 0

    def add(self, lines: list[bytes], header: list[str]) -> None:
        self.buffer += lines
        self.buffered += len(lines)
        if self.buffered >= ROW_GROUP_ROWS:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa
        import pyarrow.csv as pcsv

        if self.buffer:
            table = pcsv.read_csv(pa.py_buffer(b"".join(self.buffer)), read_options=self.read,
                                  convert_options=self.convert)
            self.writer.write_table(table.select(self.schema.names).cast(self.schema), row_group_size=ROW_GROUP_ROWS)
            self.buffer, self.buffered = [], 0

    def close(self) -> None:
        self.flush()
        self.writer.close()


def merge(parts: Parts, out_path: Path, header: list[str], expected: int, stop=None,
          embeddings_path: Path | None = None) -> int:
    """The parts' predictions, in input order, into `out_path` (Parquet for .parquet/.pq, else CSV; atomically),
    and with `embeddings_path` their PCA features into a float16 .npy of the same rows in the same order. `stop`
    (a callable) is asked between blocks: when it raises, nothing is left half-written. Returns the row count."""
    out_path = Path(out_path)
    writing, count = out_path, 0
    try:
        with contextlib.ExitStack() as stack:
            tmp = stack.enter_context(atomic_path(out_path))
            emb = None
            if embeddings_path is not None:
                emb_tmp = stack.enter_context(atomic_path(embeddings_path))
                writing = Path(embeddings_path)
                emb = np.lib.format.open_memmap(emb_tmp, mode="w+", dtype=np.float16,
                                                shape=(expected, parts.embedding_dim))
            out = (_ParquetOut if is_parquet(out_path) else _CsvOut)(tmp, header)
            stack.callback(out.close)
            for block in range(parts.blocks):
                if stop is not None:
                    stop()
                index, lines = parts.block_lines(block)
                if count + len(index) > expected:
                    raise RuntimeError(f"{parts.folder}: more predictions than the {expected} galaxies")
                if emb is not None and len(index):
                    writing = Path(embeddings_path)
                    emb[count:count + len(index)] = parts.block_embeddings(block, index)
                if lines:
                    writing = out_path
                    out.add(lines, header)
                count += len(index)
            if count != expected:
                raise RuntimeError(f"{parts.folder}: {count} predictions for {expected} galaxies")
            writing = out_path
            stack.pop_all().close()  # the output closed (a full disk shows here), then both renamed into place
    except OSError as exc:
        if exc.errno not in FULL_DISK:
            raise
        needed = parts.size() if writing == out_path else expected * parts.embedding_dim * 2
        raise disk_full(writing, needed, f"no output was written and every prediction is kept in {parts.folder}: "
                        "free space, then rerun the same command (it only merges)") from None
    return count
