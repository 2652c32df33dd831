"""The quick lane says how many slow tests it left out, under pytest-xdist as in one process (tests/lanes.py)."""
import os
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


def test_the_summary_line_counts_the_slow_tests_left_out_under_xdist(tmp_path):
    """Without tests/lanes.py, pytest-xdist's summary line reads "1 passed" here."""
    (tmp_path / "conftest.py").write_text(
        'pytest_plugins = ["tests.lanes"]\n\n\ndef pytest_configure(config):\n'
        '    config.addinivalue_line("markers", "slow: end to end")\n')
    (tmp_path / "test_two_lanes.py").write_text(
        "import pytest\n\n\ndef test_quick():\n    pass\n\n\n@pytest.mark.slow\ndef test_slow():\n    pass\n\n\n"
        "@pytest.mark.slow\ndef test_slower():\n    pass\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("PYTEST_XDIST_WORKER", None)
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "2", "-m", "not slow",
                          str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-2000:]
    assert "1 passed, 2 deselected" in run.stdout.splitlines()[-1], run.stdout[-2000:]
