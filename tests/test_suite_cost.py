"""benchmarks/suite_cost.py's accounting: processes grouped by the test that started them, torch start-ups
counted at most at the baseline, and the machine's CPU against a wall-time target."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from benchmarks.suite_cost import HOOK, summarise


def record(cpu_s, test="", worker="gw0", torch=False):
    return {"cpu_s": cpu_s, "torch": torch, "worker": worker, "test": test}


def test_processes_are_grouped_by_module_and_start_ups_are_capped_at_the_baseline():
    records = [record(40.0, worker="gw0", torch=True), record(3.0, worker=""),
               record(12.0, "tests/test_a.py::test_one (setup)", torch=True),
               record(4.0, "tests/test_a.py::test_two (call)", torch=True),
               record(1.0, "tests/test_b.py::test_three (call)")]
    result = summarise(records, busy_s=100.0, wall_s=40.0, cores=2, startup_s=9.0, target_s=30.0)
    groups = result["groups"]
    assert list(groups) == ["(pytest workers: collection and in-process tests)", "tests/test_a.py",
                            "(pytest main process)", "tests/test_b.py"]  # costliest first
    assert groups["tests/test_a.py"] == {"processes": 2, "torch_processes": 2, "cpu_s": 16.0}
    assert result["logged_python_cpu_s"] == 60.0 and result["not_logged_cpu_s"] == 40.0
    assert result["torch_startups_cpu_s"] == 9.0 + 9.0 + 4.0  # 40 and 12 capped at 9; 4 counted as 4
    assert result["machine_busy_share"] == 1.25 and result["target_cpu_budget_s"] == 60.0


def test_the_hook_records_a_process_that_imports_nothing_heavy(tmp_path):
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(HOOK)
    log = tmp_path / "log.jsonl"
    env = dict(os.environ, SUITE_COST_LOG=str(log), PYTHONPATH=str(tmp_path / "hook"),
               PYTEST_CURRENT_TEST="tests/test_x.py::test_y (call)")
    subprocess.run([sys.executable, "-c", "pass"], env=env, check=True, cwd=tmp_path)
    (line,) = log.read_text().splitlines()
    entry = json.loads(line)
    assert entry["test"] == "tests/test_x.py::test_y (call)" and entry["torch"] is False and entry["cpu_s"] >= 0
