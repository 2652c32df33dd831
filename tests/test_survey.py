"""galaxy-classify on a cluster (issue 38): Parquet output, parts keyed by input rows, SIGTERM/SIGUSR1 stops that
keep every finished row and exit 75, a full disk named in one line, a read-only folder refused before any
prediction. The runs here are in this process (tiny model, CPU); the ones that start processes are in
test_survey_cluster.py (slow lane)."""
import errno
import os
import shutil
import signal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from galaxy_finetune.core.errors import REQUEUE_STATUS
from galaxy_finetune.core.files import read_table
from galaxy_finetune.inference import parts as parts_module
from galaxy_finetune.inference import predict as predict_module
from galaxy_finetune.inference.classify import main
from galaxy_finetune.inference.parts import Parts, part_rows_for

pytestmark = pytest.mark.xdist_group("tiny_model")
REAL_WRITE_ALL = parts_module._write_all


@pytest.fixture(scope="module")
def survey(tiny_model, tmp_path_factory):
    """The tiny model's 24 source images, as a survey folder."""
    folder = tmp_path_factory.mktemp("survey") / "images"
    folder.mkdir()
    for src in tiny_model.sources:
        shutil.copy(src, folder)
    return folder


@pytest.fixture(scope="module")
def clean(tiny_model, survey, tmp_path_factory):
    """One uninterrupted CSV run: the reference every other run must equal."""
    out = tmp_path_factory.mktemp("clean") / "clean.csv"
    main([str(tiny_model.model), str(survey), "-o", str(out), "--accelerator", "cpu", "--batch-size", "4",
          "--workers", "0"])
    return read_table(out)


def _args(tiny_model, survey, out, *more):
    return [str(tiny_model.model), str(survey), "-o", str(out), "--accelerator", "cpu", "--batch-size", "4", *more]


def test_parquet_output_is_parquet_with_the_csv_rows_and_columns(tiny_model, survey, clean, tmp_path):
    out = tmp_path / "survey.parquet"
    main(_args(tiny_model, survey, out, "--workers", "0"))
    assert out.read_bytes()[:4] == b"PAR1"
    table = pq.read_table(out)
    assert table.column_names == list(clean.columns)
    assert table.schema.field("id_str").type == pa.string() and table.schema.field("confidence").type == pa.float64()
    back = table.to_pandas()
    pd.testing.assert_frame_equal(back, clean, check_dtype=False)
    one = pq.read_table(out, columns=["id_str", "confidence"])  # a reader selects columns
    assert one.column_names == ["id_str", "confidence"] and one.num_rows == len(clean)
    assert not (tmp_path / "survey.parquet.parts").exists()


def test_parquet_keeps_ids_that_look_like_numbers_or_missing_values(tiny_model, survey, tmp_path):
    names = sorted(p.name for p in survey.iterdir())[:3]
    ids = ["007", "NA", "null"]
    pd.DataFrame({"file_loc": [str(survey / n) for n in names], "id_str": ids}).to_csv(tmp_path / "cat.csv",
                                                                                      index=False)
    main([str(tiny_model.model), str(tmp_path / "cat.csv"), "-o", str(tmp_path / "out.parquet"), "--accelerator",
          "cpu"])
    assert pq.read_table(tmp_path / "out.parquet").column("id_str").to_pylist() == ids


def test_blocks_are_keyed_by_rows_and_shared_evenly_whatever_the_ranks(tmp_path):
    assert part_rows_for(24) == 1 and part_rows_for(10**6) == 1000 and part_rows_for(10**9) == 100_000
    parts = Parts(tmp_path, 10_000)  # 1000 blocks of 10 rows
    counts = np.zeros(parts.blocks, np.int64)
    counts[:300] = 10  # an earlier run finished the first 300 blocks
    counts[300] = 4
    for world in (1, 2, 3, 7):
        plan = parts.plan(world, counts)
        assert len(plan) == world
        flat = [b for share in plan for b in share]
        assert flat == list(range(300, 1000))  # every unfinished block once, in order, each share contiguous
        lacking = [sum(10 - counts[b] for b in share) for share in plan]
        ideal = (7000 - 4) / world
        assert all(abs(n - ideal) <= 10 for n in lacking)  # each share within a block of an even split
    assert parts.plan(2, np.full(parts.blocks, 10)) == [[], []]
    assert parts.path("part", 301).name == "part-000000003010.csv"


def test_sigterm_or_sigusr1_finish_the_batch_save_it_and_exit_75_then_the_rerun_completes(
        tiny_model, survey, clean, tmp_path, monkeypatch, capsys):
    for signum in (signal.SIGTERM, signal.SIGUSR1):
        out = tmp_path / f"{signum.name}.csv"
        before = signal.getsignal(signum)  # another test's Trainer may have left Lightning's handler here
        original = predict_module.CsvPartWriter.write_on_batch_end
        calls = []

        def signalled_in_the_third_batch(self, *a, **k):
            calls.append(1)
            if len(calls) == 3:
                os.kill(os.getpid(), signum)  # arrives while the batch is in flight
            return original(self, *a, **k)

        monkeypatch.setattr(predict_module.CsvPartWriter, "write_on_batch_end", signalled_in_the_third_batch)
        with pytest.raises(SystemExit) as exit_:
            main(_args(tiny_model, survey, out, "--workers", "2"))
        monkeypatch.setattr(predict_module.CsvPartWriter, "write_on_batch_end", original)
        assert exit_.value.code == REQUEUE_STATUS == 75
        err = capsys.readouterr().err
        assert "Traceback" not in err
        lines = [line for line in err.splitlines() if line.strip() and not line.startswith("warning:")]
        assert lines == [f"stopped by {signum.name}: the rows predicted so far are kept in {out}.parts; rerun the "
                         f"same command to go on (exit status 75: requeue)"], lines
        assert signal.getsignal(signum) is before  # handlers restored to what they were
        held = sorted((tmp_path / f"{out.name}.parts").glob("part-*.csv"))
        assert sum(len(p.read_text().splitlines()) for p in held) == 12  # the third batch was finished and kept
        assert not out.exists()
        main(_args(tiny_model, survey, out, "--workers", "2"))
        assert "resuming, 12 of 24 galaxies" in capsys.readouterr().out
        pd.testing.assert_frame_equal(read_table(out), clean)


def _fills_the_disk_at(call: int, calls: list, when=lambda fd: True):
    def write_all(fd, data):
        if when(fd):
            calls.append(1)
            if len(calls) == call:
                os.write(fd, data[: len(data) // 2])  # half a line reaches the disk, then it is full
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return REAL_WRITE_ALL(fd, data)
    return write_all


def test_a_full_disk_while_writing_a_part_is_one_line_and_keeps_every_finished_row(
        tiny_model, survey, clean, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out.csv"
    monkeypatch.setattr(parts_module, "_write_all", _fills_the_disk_at(10, []))
    with pytest.raises(SystemExit) as exit_:
        main(_args(tiny_model, survey, out, "--workers", "0"))
    assert exit_.value.code == 1
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("warning:")]
    assert len(err) == 1 and "Traceback" not in err[0]
    assert err[0].startswith(f"error: {out}.parts/part-") and ": no space left on device (about " in err[0]
    assert " MB more needed" in err[0] and "free space, then rerun the same command" in err[0]
    held = sorted((tmp_path / "out.csv.parts").glob("part-*.csv"))
    lines = [line for p in held for line in p.read_text().splitlines(keepends=True)]
    assert len(lines) == 9 and all(line.endswith("\n") and line.count(",") == lines[0].count(",") for line in lines)
    monkeypatch.setattr(parts_module, "_write_all", REAL_WRITE_ALL)  # space freed
    main(_args(tiny_model, survey, out, "--workers", "0"))
    assert "resuming, 9 of 24 galaxies" in capsys.readouterr().out
    pd.testing.assert_frame_equal(read_table(out), clean)


def test_a_full_disk_while_merging_names_the_output_and_the_rerun_only_merges(
        tiny_model, survey, clean, tmp_path, monkeypatch, capsys):
    for name in ("out.csv", "out.parquet"):
        out = tmp_path / name
        writer = parts_module._ParquetOut if name.endswith(".parquet") else parts_module._CsvOut

        def full(self, *a, **k):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        with monkeypatch.context() as m:
            m.setattr(writer, "add", full)
            with pytest.raises(SystemExit) as exit_:
                main(_args(tiny_model, survey, out, "--workers", "0"))
        assert exit_.value.code == 1
        err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("warning:")]
        assert len(err) == 1 and err[0].startswith(f"error: {out}: no space left on device (about "), err
        assert f"every prediction is kept in {out}.parts" in err[0]
        assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(f".{name}.")]
        main(_args(tiny_model, survey, out, "--workers", "0"))
        assert "resuming, 24 of 24 galaxies" in capsys.readouterr().out
        back = read_table(out) if name.endswith(".csv") else pd.read_parquet(out)
        pd.testing.assert_frame_equal(back, clean, check_dtype=False)


def test_a_read_only_output_folder_is_refused_before_the_model_is_loaded(tiny_model, survey, tmp_path, monkeypatch,
                                                                          capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if str(p) == str(locked) else real_access(p, mode))
    monkeypatch.setattr("galaxy_finetune.inference.classify.load_finetuned",
                        lambda *a: pytest.fail("the model was loaded for an output that cannot be written"))
    with pytest.raises(SystemExit) as exit_:
        main(_args(tiny_model, survey, locked / "out.parquet"))
    assert exit_.value.code == 1
    assert capsys.readouterr().err.strip() == (f"error: {locked}: read-only, so {locked / 'out.parquet'} cannot be "
                                              "written there; choose an output in a folder you can write")
    assert list(locked.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a folder whatever its mode")
def test_a_chmod_read_only_folder_is_refused_before_any_prediction(tiny_model, survey, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    with pytest.raises(SystemExit):
        main(_args(tiny_model, survey, locked / "out.csv"))
    assert capsys.readouterr().err.startswith(f"error: {locked}: read-only")
