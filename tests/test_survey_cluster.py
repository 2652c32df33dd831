"""galaxy-classify as a cluster starts it (issue 38, slow lane: each test starts processes that import torch): two
"nodes" on loopback through torchrun (gloo, one process each) equal one process galaxy for galaxy, also after a
rank is killed with -9 and the job rerun; SIGTERM to the whole process group, DataLoader workers included, stops
with exit status 75 and no traceback, and the rerun completes."""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from galaxy_finetune.core.files import read_table
from tests.pipeline_repo import checkout_env

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("tiny_model")]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """40 tiny galaxies (32 px PNGs)."""
    folder = tmp_path_factory.mktemp("cluster") / "images"
    folder.mkdir()
    rng = np.random.default_rng(38)
    for i in range(40):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"g{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def single(tiny_model, images, tmp_path_factory):
    """The one-process output every other run must equal."""
    from galaxy_finetune.inference.classify import main

    out = tmp_path_factory.mktemp("single") / "single.csv"
    main([str(tiny_model.model), str(images), "-o", str(out), "--accelerator", "cpu", "--batch-size", "4"])
    return read_table(out)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _classify(model, images, out, *more, slow: float = 0.0) -> list[str]:
    """galaxy-classify's module, or with `slow` the driver that holds each batch back `slow` seconds."""
    start = [str(ROOT / "tests/slow_classify.py"), str(slow)] if slow else ["-m", "galaxy_finetune.inference.classify"]
    return [*start, str(model), str(images), "-o", str(out), "--accelerator", "cpu", "--batch-size", "4",
            "--workers", "0", *more]


def _two_nodes(model, images, out, cwd, slow=0.0, kill_rank1_after_rows=None):
    """Two torchrun launches, --nnodes 2 --node-rank 0/1, one process each, rendezvous on 127.0.0.1. With
    `kill_rank1_after_rows`, node 1's rank gets SIGKILL once the parts hold that many rows."""
    port = _free_port()
    procs = []
    for rank in (0, 1):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(rank),
               "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port", str(port),
               *_classify(model, images, out, "--num-nodes", "2", "--devices", "1", slow=slow)]
        procs.append(subprocess.Popen(cmd, cwd=cwd, env=checkout_env(PYTHONUNBUFFERED="1"),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      start_new_session=True))
    if kill_rank1_after_rows is not None:
        parts = Path(f"{out}.parts")
        deadline = time.monotonic() + 300
        while _rows(parts) < kill_rank1_after_rows and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(procs[1].pid, signal.SIGKILL)  # node 1: its agent and its rank
        procs[0].send_signal(signal.SIGTERM)  # node 0's agent, as a scheduler ends a failed job's other steps
    outs = [p.communicate(timeout=600) for p in procs]
    return [p.returncode for p in procs], outs


def _rows(parts: Path) -> int:
    return sum(len(p.read_bytes().splitlines()) for p in parts.glob("part-*.csv")) if parts.is_dir() else 0


def test_two_torchrun_nodes_equal_one_process(tiny_model, images, single, tmp_path):
    out = tmp_path / "two.csv"
    codes, outs = _two_nodes(tiny_model.model, images, out, tmp_path)
    assert codes == [0, 0], [o[1][-3000:] for o in outs]
    pd.testing.assert_frame_equal(read_table(out), single)
    assert "x 2 processes" in outs[0][0]  # rank zero merged and reported; each rank predicted its share
    assert not Path(f"{out}.parts").exists()


def test_a_rank_killed_with_sigkill_then_rerun_loses_nothing_and_predicts_nothing_twice(
        tiny_model, images, single, tmp_path):
    out = tmp_path / "killed.csv"
    _two_nodes(tiny_model.model, images, out, tmp_path, slow=0.3, kill_rank1_after_rows=8)
    assert not out.exists()
    kept = _rows(Path(f"{out}.parts"))
    assert 8 <= kept < 40
    codes, outs = _two_nodes(tiny_model.model, images, out, tmp_path)  # the same command, again
    assert codes == [0, 0], [o[1][-3000:] for o in outs]
    assert f"resuming, {kept} of 40 galaxies" in outs[0][0]
    pd.testing.assert_frame_equal(read_table(out), single)


def test_sigterm_to_the_process_group_with_workers_running_exits_75_without_a_traceback(
        tiny_model, images, single, tmp_path):
    out = tmp_path / "out.parquet"
    cmd = [sys.executable, *_classify(tiny_model.model, images, out, "--workers", "2", slow=0.3)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=checkout_env(PYTHONUNBUFFERED="1"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group: the test's is not signalled
    parts = Path(f"{out}.parts")
    deadline = time.monotonic() + 300
    while _rows(parts) < 8 and time.monotonic() < deadline:
        time.sleep(0.05)
    workers = subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert len(workers) >= 3, workers  # the main process and its 2 DataLoader workers are running
    os.killpg(proc.pid, signal.SIGTERM)  # as SLURM signals every process of a step
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 75, stderr[-3000:]
    assert "Traceback" not in stderr and "killed by signal" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("warning:")]
    assert lines == [f"stopped by SIGTERM: the rows predicted so far are kept in {out}.parts; rerun the same "
                     "command to go on (exit status 75: requeue)"], stderr[-3000:]
    kept = _rows(parts)
    assert 8 <= kept < 40 and kept % 4 == 0  # whole batches only
    cmd = [sys.executable, *_classify(tiny_model.model, images, out, "--workers", "2")]
    rerun = subprocess.run(cmd, cwd=tmp_path, env=checkout_env(), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"resuming, {kept} of 40 galaxies" in rerun.stdout
    pd.testing.assert_frame_equal(pd.read_parquet(out), single, check_dtype=False)
