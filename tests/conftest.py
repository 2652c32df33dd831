"""Shared fixtures: a throwaway HTTP server on 127.0.0.1, the session's one tiny `dvc repro` run
(`pipeline_run`, `pipeline_two_runs`) and its one tiny trained model (`tiny_model`).

`pytest` runs on two pytest-xdist workers (pyproject.toml); the modules sharing a session fixture are one
xdist_group, so each fixture is built once."""
from __future__ import annotations

import functools
import os
import http.server
import socket
import threading
import urllib.parse
from pathlib import Path

import pytest

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


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist's loadgroup, a module without an xdist_group is its own group: its tests stay on one
    worker, so a module-scoped fixture is built once (modules sharing a session fixture name one group)."""
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))


@pytest.fixture
def dead_url_base():
    """A base URL on 127.0.0.1 where nothing listens (connections are refused at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory):
    """The tiny project repo after one `dvc repro`, committed: (repo, env, what dvc printed).

    The one full run of the DAG that the end-to-end modules share: read it, or change a copy (`copy_repo`).
    """
    from tests.pipeline_repo import make_repo, repro_and_commit

    repo, env = make_repo(tmp_path_factory.mktemp("pipeline") / "repo")
    return repo, env, repro_and_commit(repo, env, "first run")


@pytest.fixture(scope="session")
def pipeline_two_runs(pipeline_run, tmp_path_factory):
    """A copy of `pipeline_run` after a second `dvc repro` commit (1 epoch and analyse.seed 1): two revisions
    for the metrics/plots diff and the explore tests, which only read it."""
    from tests.pipeline_repo import copy_repo, repro_and_commit, set_params

    repo, env, _ = pipeline_run
    repo = copy_repo(repo, tmp_path_factory.mktemp("two-runs") / "repo")
    set_params(repo, {"scratch": {"epochs": 1}, "analyse": {"seed": 1}})
    repro_and_commit(repo, env, "second run: one epoch")
    return repo, env


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
