"""Atomic writes: a failed write (disk full, read-only folder) leaves nothing half-written; tables read back as
written."""
import errno
import os

import pandas as pd
import pytest

from galaxy_finetune.core import files
from galaxy_finetune.core.cli import run_stage


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


def test_write_replaces_atomically(tmp_path):
    files.write_json(tmp_path / "m.json", {"a": 1})
    old = open(tmp_path / "m.json")  # a reader holding the old file
    files.write_json(tmp_path / "m.json", {"a": 2})
    assert files.read_json(tmp_path / "m.json") == {"a": 2}
    # the new content went to another file renamed over the old one: the reader still sees the old file whole
    assert old.read() == '{\n  "a": 1\n}\n'
    assert os.fstat(old.fileno()).st_ino != (tmp_path / "m.json").stat().st_ino
    old.close()
    assert _leftovers(tmp_path) == ["m.json"]


def test_disk_full_mid_write_keeps_the_old_file(tmp_path):
    files.write_text(tmp_path / "report.md", "old")
    with pytest.raises(OSError):
        with files.atomic_path(tmp_path / "report.md") as tmp:
            tmp.write_text("half of the new")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))
    assert (tmp_path / "report.md").read_text() == "old"
    assert _leftovers(tmp_path) == ["report.md"]


def test_failed_folder_output_leaves_no_folder(tmp_path):
    with pytest.raises(RuntimeError):
        with files.atomic_path(tmp_path / "splits") as tmp:
            tmp.mkdir()
            (tmp / "train.csv").write_text("id\n")
            raise RuntimeError("killed")
    assert _leftovers(tmp_path) == []


def test_read_only_destination(tmp_path, monkeypatch):
    def refuse(src, dst):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dst))

    monkeypatch.setattr(files.os, "replace", refuse)
    with pytest.raises(OSError):
        files.write_json(tmp_path / "metrics.json", {"a": 1})
    assert _leftovers(tmp_path) == []


def test_stage_turns_os_errors_into_one_line(tmp_path, capsys):
    (tmp_path / "params.yaml").write_text("{}\n")

    def body(args, params):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "data/raw/images/x.png")

    with pytest.raises(SystemExit) as exit_:
        run_stage("test", lambda parser: None, body, ["--params", str(tmp_path / "params.yaml")])
    assert exit_.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err == "error: data/raw/images/x.png: No space left on device; free space or fix permissions, then rerun"


def test_read_table_keeps_ids_and_names_as_written(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("id_str,label,label_name,split,score\nNA,0,None,,1.5\n007,1,null,test,\nN/A,2,nan,val,2\n")
    table = files.read_table(path)
    assert table["id_str"].tolist() == ["NA", "007", "N/A"]
    assert table["label_name"].tolist() == ["None", "null", "nan"] and table["split"].tolist() == ["", "test", "val"]
    assert table["label"].tolist() == [0, 1, 2]
    assert table["score"].iloc[0] == 1.5 and pd.isna(table["score"].iloc[1])  # a blank number is missing


def test_a_missing_upstream_file_names_the_stage_to_run(tmp_path):
    from galaxy_finetune.core.errors import PipelineError

    with pytest.raises(PipelineError, match=r"^.*nope\.csv: not found; run the split stage first \(dvc repro split\)$"):
        files.require(tmp_path / "nope.csv", "split")
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(PipelineError, match=r"model.json: not valid JSON .*; rerun the finetune_gpu stage"):
        files.read_model_config(tmp_path)
    (tmp_path / "model.json").write_text('{"classes": ["a"]}')
    assert files.read_model_config(tmp_path) == {"classes": ["a"]}
