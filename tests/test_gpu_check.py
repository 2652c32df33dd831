"""benchmarks/gpu_check.py --dry-run: every runner of the GPU check, on CPU, as the GPU box would import it.

The GPU box lacks dvc, dvclive and astropy (docs/gpu.md, "GPU check"), so the dry run runs with those three
made unimportable: a code path that starts importing one of them fails here before it costs device time.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOT_ON_THE_BOX = ("dvc", "dvclive", "astropy")
AS_ON_THE_BOX = f"""
import runpy, sys
for name in {NOT_ON_THE_BOX!r}:
    sys.modules[name] = None  # `import name` now fails, as where it is not installed
sys.argv = ["benchmarks/gpu_check.py", *sys.argv[1:]]
runpy.run_path("benchmarks/gpu_check.py", run_name="__main__")
"""
RATES = ("project_images_per_s", "bare_images_per_s")


@pytest.mark.slow  # the GPU check's dry run in its own process
def test_dry_run_measures_everything_and_prints_the_table_last(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([sys.executable, "-c", AS_ON_THE_BOX, "--dry-run", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())

    assert result["complete"] is True and result["errors"] == []
    for name in ("train", "train_compiled"):
        assert all(result[name][key] > 0 for key in (*RATES, "ratio_project_vs_bare")), result[name]
    assert result["train_compiled"]["compile"] == "eager"
    workers = {k: v for k, v in result["data_path"].items() if k.startswith("workers_")}
    assert sorted(workers) == ["workers_0", "workers_1"]
    for entry in workers.values():
        assert entry["images_per_s"] > 0 and entry["ratio_project_vs_bare"] > 0
        assert 0 < entry["between_steps_share"] < 1
    epoch = result["epoch"]
    assert epoch["epochs"] == 2 and epoch["epoch_s"] > 0 and epoch["projected_30_epochs_s"] > epoch["epoch_s"]
    for name in ("predict", "classify"):
        assert all(result[name][key] > 0 for key in RATES), result[name]
    assert result["classify"]["images"] == 64
    assert result["memory"]["host_peak_rss_gib"] > 0 and result["memory"]["peak_gpu_gib"] is None
    device = result["info"]["device"]
    assert device["device"].startswith("cpu") and device["torch"] and device["cpus"] > 0

    # the table comes last: its header, one row per measurement, then the device line
    lines = proc.stdout.rstrip().splitlines()
    header = max(i for i, line in enumerate(lines) if line.startswith("measurement"))
    table = lines[header:]
    assert len(table) == 1 + len(result["table"]) + 1, "\n".join(table)
    assert table[0].split() == ["measurement", "project", "bare", "ratio", "target", "met?"]
    for row, shown in zip(result["table"], table[1:]):
        assert shown.strip().startswith(row[0].strip())
    assert "DRY RUN" in table[-1] and "torch" in table[-1]


def test_an_unavailable_runner_is_reported_not_fatal(tmp_path):
    """Unit check of the report: a failed or skipped runner still gets its row."""
    sys.path.insert(0, str(ROOT))
    from benchmarks.gpu_check import table_rows

    rows = table_rows({"train": {"error": "RuntimeError: boom"}, "epoch": {"skipped": "3 s left"}}, None, True)
    assert rows == [("train img/s, eager", "-", "-", "-", "-", "error"), ("epoch", "-", "-", "-", "-", "skipped")]
