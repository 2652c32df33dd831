"""Every stage of dvc.yaml run in this one Python process, in the DAG's order, each exactly as its `cmd` line says
(`python -m stages.<name> <args>`, run as `__main__` with those args); then DVC's own commit records the outputs in
dvc.lock and git-ignores them, as `dvc repro` would have.

For the test session's extra end-to-end configurations (the votes and regression tasks, an own FITS catalog): their
checks are on what the stages write, and the one real `dvc repro` of the default configuration (conftest.py's
`pipeline_run`) checks DVC's side. A stage started by DVC is a new Python process that imports torch, timm and
Lightning again (5-9 s each on 2 cores, most of a tiny stage's time); here they are imported once for the whole DAG.

    python -m tests.stage_runner        (in the project folder; prints what the stages print)
"""
from __future__ import annotations

import runpy
import shlex
import sys


def run_stage_cmd(cmd: str) -> None:
    """One stage's `python -m module args` run as `__main__` in this process; a non-zero exit raises."""
    argv = shlex.split(" ".join(cmd.split()))
    if argv[:2] != ["python", "-m"]:
        raise ValueError(f"not a `python -m` stage command: {cmd!r}")
    sys.argv = [argv[2], *argv[3:]]
    try:
        runpy.run_module(argv[2], run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        if stop.code not in (None, 0):
            raise RuntimeError(f"`{' '.join(argv)}` exited with {stop.code}") from None


def main() -> None:
    import networkx as nx
    from dvc.repo import Repo

    with Repo() as repo:
        # DVC's own stage graph (an edge from each stage to the stages it depends on), post-ordered as `dvc repro`
        # plans its runs: every stage after the stages whose outputs it reads
        for stage in nx.dfs_postorder_nodes(repo.index.graph):
            print(f"Running stage '{stage.name}':", flush=True)  # as dvc repro says it (tests/pipeline_repo.ran)
            run_stage_cmd(stage.cmd)
            sys.stdout.flush()
            sys.stderr.flush()
        repo.commit(force=True)
        for stage in repo.index.stages:
            stage.ignore_outs()


if __name__ == "__main__":
    main()
