"""Shared fixtures: a throwaway HTTP server on 127.0.0.1, the session's one tiny `dvc repro` run
(`pipeline_run`), its one queued sweep of DVC experiments (`sweep`) and the two-commit repo made from it
(`pipeline_two_runs`), and its one tiny trained model (`tiny_model`).

`pytest` runs on two pytest-xdist workers (pyproject.toml); the modules sharing a session fixture are one
xdist_group, so each fixture is built once, and the groups that build an end-to-end configuration are handed out
first, costliest first (`HEAVY_FIRST`), so the two workers share the heavy ones instead of one worker finishing
the suite alone."""
from __future__ import annotations

import functools
import os
import http.server
import socket
import threading
import urllib.parse
from pathlib import Path

import pytest

pytest_plugins = ["tests.lanes"]  # the slow tests a lane leaves out are counted in the summary line, xdist or not

if os.environ.get("PYTEST_XDIST_WORKER"):
    # two workers on two cores: one compute thread each (torch, BLAS and the stages the tests start), or each
    # worker's threads fight the other's and both run several times slower
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_var, "1")


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the folder; can fail a path with an HTTP error N times or cut its body short."""

    def log_message(self, format, *args):  # keep pytest output quiet
        pass

    def do_GET(self):
        server = self.server
        path = urllib.parse.urlsplit(self.path).path
        with server.lock:
            server.hits.append(path)
            failure = server.failures.get(path)
            if failure and failure[0] > 0:
                failure[0] -= 1
                code = failure[1]
            else:
                code = None
            truncate = server.truncate.get(path)
        if code is not None:
            self.send_error(code)
            return
        if truncate is not None:
            # announce the full length, send only `truncate` bytes, then drop the connection
            data = (Path(self.directory) / path.lstrip("/")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[:truncate])
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()


class ServedFolder(tuple):
    """(base_url, folder), plus controls for the running server.

    - fail(name, times, code=500): answer /name with HTTP `code` for the next `times` requests
    - truncate(name, n_bytes): answer /name with a body cut after n_bytes (Content-Length stays full)
    - hits: the paths requested so far (without query strings); count(name) for one file
    - url(name, query=""): the URL of a file in the folder
    """

    def __new__(cls, base_url: str, folder: Path, server):
        obj = super().__new__(cls, (base_url, folder))
        obj.base_url, obj.folder, obj._server = base_url, folder, server
        return obj

    def url(self, name: str, query: str = "") -> str:
        return f"{self.base_url}/{name}" + (f"?{query}" if query else "")

    def fail(self, name: str, times: int, code: int = 500) -> None:
        with self._server.lock:
            self._server.failures[f"/{name}"] = [times, code]

    def truncate(self, name: str, n_bytes: int) -> None:
        with self._server.lock:
            self._server.truncate[f"/{name}"] = n_bytes

    @property
    def hits(self) -> list[str]:
        with self._server.lock:
            return list(self._server.hits)

    def count(self, name: str) -> int:
        return self.hits.count(f"/{name}")


@pytest.fixture
def http_server(tmp_path_factory, monkeypatch):
    """Serve a fresh temporary folder over HTTP on 127.0.0.1 (random free port); yield (base_url, folder).

    The yielded tuple also has .fail(), .truncate(), .hits, .count() and .url() (see ServedFolder).
    """
    for var in ("no_proxy", "NO_PROXY"):  # a proxy set in the environment must not see loopback requests
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    folder = tmp_path_factory.mktemp("served")
    handler = functools.partial(_Handler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.lock = threading.Lock()
    server.hits, server.failures, server.truncate = [], {}, {}
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield ServedFolder(f"http://{host}:{port}", folder, server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# The xdist groups that build end-to-end configurations (dvc repro runs, trainings in subprocesses), costliest
# first. With `--no-loadscope-reorder` (pyproject.toml) pytest-xdist hands the groups out in collection order, two to
# each worker at the start (the first and third to one, the second and fourth to the other), then one to whichever
# worker frees up. "pipeline" (the default configuration's `dvc repro`, `pipeline_run`, its queued sweep and the
# modules reading them) is the longest; test_pipeline.py's module copies `pipeline_run` too and goes to the other
# worker after its first group, by when the run is built (the workers share it: `pipeline_run`).
HEAVY_FIRST = ("pipeline", "test_targets_e2e", "test_gpu_check", "test_pipeline", "test_distributed",
               "test_own_fits_e2e", "test_train", "test_analyse", "test_cli", "test_finetuned_curve", "tiny_model")


# the session fixtures built by real `dvc repro` and `dvc exp run` commands: a test that uses one is in the slow lane
DVC_RUNS = {"pipeline_run", "sweep", "pipeline_two_runs"}


def _group(item) -> str:
    return "_".join(sorted(str(m.args[0]) for m in item.iter_markers("xdist_group")))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist's loadgroup, a module without an xdist_group is its own group: its tests stay on one
    worker, so a module-scoped fixture is built once (modules sharing a session fixture name one group). The
    heavy groups are moved to the front (HEAVY_FIRST), each keeping its tests' order."""
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
        if DVC_RUNS & set(getattr(item, "fixturenames", ())) and item.get_closest_marker("slow") is None:
            item.add_marker(pytest.mark.slow)  # it reads a real `dvc repro`: the slow lane, whatever its module says
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    order = {id(item): i for i, item in enumerate(items)}
    items.sort(key=lambda item: (rank.get(_group(item), len(rank)), order[id(item)]))


@pytest.fixture
def dead_url_base():
    """A base URL on 127.0.0.1 where nothing listens (connections are refused at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory, worker_id):
    """The tiny project repo after one `dvc repro`, committed: (repo, env, what dvc printed).

    The one full run of the DAG that the end-to-end modules share: read it, or change a copy (`copy_repo`). Under
    pytest-xdist the workers share it too: the first to ask builds it in the session's common temporary folder
    (a file lock makes the other wait), so the modules that need it can run on either worker."""
    from filelock import FileLock

    from tests.pipeline_repo import dvc_env, make_repo, repro_and_commit

    root = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        root = root.parent  # shared by the workers of this session
    folder, done = root / "pipeline-run", root / "pipeline-run" / "dvc-output.txt"
    with FileLock(str(root / "pipeline-run.lock")):
        if not done.is_file():
            folder.mkdir(exist_ok=True)
            repo, env = make_repo(folder / "repo")
            done.write_text(repro_and_commit(repo, env, "first run"))
    return folder / "repo", dvc_env(folder / "download-cache"), done.read_text()


# The sweep's two experiments, each a change from the first run: `lr-0.002` sets the lr of the recipe that trains
# a random init (scratch.lr) and train.lr, which that recipe ignores: training and everything after it rerun; and
# `analyse-seed-5` changes only analyse's seed: only analyse reruns.
SWEEP = {"lr-0.002": ("scratch.lr=0.002", "train.lr=3e-5"), "analyse-seed-5": ("analyse.seed=5",)}


@pytest.fixture(scope="session")
def sweep(pipeline_run, tmp_path_factory):
    """A copy of `pipeline_run` after DVC's queue ran the two experiments of SWEEP on two queue workers:
    SimpleNamespace(repo, env, experiments={name: (params, metrics, recipe)} from `dvc exp show --json`,
    logs={name: what `dvc queue logs` printed})."""
    import json
    import re
    import subprocess
    import time
    from types import SimpleNamespace

    from tests.pipeline_repo import copy_repo, run

    path, env, _ = pipeline_run
    path = copy_repo(path, tmp_path_factory.mktemp("sweep") / "repo")
    for name, settings in SWEEP.items():
        run(["dvc", "exp", "run", "--queue", *(arg for s in settings for arg in ("-S", s)), "-n", name], path, env)
    # the queue's workers are daemons that outlive `dvc queue start`: give them no pipe of ours to hold open
    subprocess.run(["dvc", "queue", "start", "-j", "2"], cwd=path, env=env, check=True,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # a finished experiment is a git ref named after it (milliseconds to list); `dvc queue status` costs a second
    # and a half of CPU, so it is asked only now and then, for a failed (or never started) experiment
    deadline, asked = time.time() + 900, 0.0
    while time.time() < deadline:
        done = run(["git", "for-each-ref", "--format=%(refname:lstrip=-1)", "refs/exps"], path, env).stdout.split()
        if set(SWEEP) <= set(done) or time.time() - asked > 30:  # then the queue's own word: still at work?
            status, asked = run(["dvc", "queue", "status"], path, env).stdout, time.time()
            if not re.search(r"\b(Queued|Running)\b", status):
                break
        time.sleep(1 if len(done) < len(SWEEP) else 2)
    run(["dvc", "queue", "stop"], path, env, check=False)
    logs = {name: run(["dvc", "queue", "logs", name], path, env, check=False).stdout for name in SWEEP}
    assert "Failed" not in status, "\n".join(log[-3000:] for log in logs.values())
    shown = json.loads(run(["dvc", "exp", "show", "--json"], path, env).stdout)
    experiments = {}
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            rev = exp["revs"][0]
            data = rev.get("data") or {}
            experiments[exp.get("name") or rev.get("name")] = (
                data["params"]["params.yaml"]["data"], data["metrics"]["metrics/metrics.json"]["data"],
                data["metrics"]["metrics/recipe.json"]["data"])
    return SimpleNamespace(repo=path, env=env, experiments=experiments, logs=logs)


@pytest.fixture(scope="session")
def pipeline_two_runs(sweep, tmp_path_factory):
    """A copy of the sweep's repo with its `lr-0.002` experiment applied and committed: two revisions, the first
    run (HEAD~1) and the lr change (HEAD), for the metrics/plots diff and the explore tests, which only read it.
    Nothing trains here: the experiment's outputs come from the DVC cache."""
    from tests.pipeline_repo import copy_repo, run

    repo = copy_repo(sweep.repo, tmp_path_factory.mktemp("two-runs") / "repo")
    run(["dvc", "exp", "apply", "lr-0.002"], repo, sweep.env)
    run(["git", "add", "-A"], repo, sweep.env)
    run(["git", "commit", "-qm", "second run: the lr-0.002 experiment"], repo, sweep.env)
    return repo, sweep.env


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """One tiny trained model shared (read-only) by the classify, predict, embed, similar and model_io tests:
    a random ConvNeXt-Atto fine-tuned for one epoch on 24 synthetic 32 px galaxies, with the data it saw
    (fetch_data, store and split outputs) and `sources`, the image files the store was decoded from."""
    import pandas as pd

    from galaxy_finetune.core.layout import CATALOG
    from galaxy_finetune.core.params import AugmentParams, Params
    from galaxy_finetune.training.train import FinetuneJob, finetune
    from tests.tiny import prepare

    root = tmp_path_factory.mktemp("tiny-model")
    params = Params.model_validate({
        "data": {"source": "synthetic", "synthetic_n_per_class": 6, "synthetic_image_size": 32},
        "model": {"encoder": "random", "random_arch": "convnext_atto"},
        "train": {"lr": 1e-3, "batch_size": 8, "input_size": 32, "epochs": 1, "steps": 0, "accelerator": "cpu"}})
    paths = prepare(root, params)
    finetune(params.train, AugmentParams(), "train", paths.manifest,
             FinetuneJob(paths.raw, paths.store, paths.splits, paths.encoder, root / "model", root / "live",
                         root / "ckpt"))
    paths.model = root / "model"
    paths.sources = pd.read_csv(paths.raw / CATALOG)["src"].tolist()
    return paths
