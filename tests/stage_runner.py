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
from graphlib import TopologicalSorter
from pathlib import Path

import yaml


def _paths(entries) -> list[str]:
    """The paths of a stage's deps/outs/metrics/plots list (an entry is a path or {path: options})."""
    return [p for e in entries or [] for p in ([e] if isinstance(e, str) else e)]


def stage_order(dvc_yaml: dict) -> list[str]:
    """dvc.yaml's stages, each after every stage whose output it depends on."""
    stages = dvc_yaml["stages"]
    made_by = {out.rstrip("/"): name for name, st in stages.items()
               for key in ("outs", "metrics", "plots") for out in _paths(st.get(key))}

    def producers(dep: str):
        dep = dep.rstrip("/")
        return {made_by[out] for out in made_by if dep == out or dep.startswith(out + "/")}

    graph = {name: set().union(*map(producers, _paths(st.get("deps")))) - {name} for name, st in stages.items()}
    return list(TopologicalSorter(graph).static_order())


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
    dvc_yaml = yaml.safe_load(Path("dvc.yaml").read_text())
    for name in stage_order(dvc_yaml):
        print(f"Running stage '{name}':", flush=True)  # as dvc repro says it (tests/pipeline_repo.ran reads it)
        run_stage_cmd(dvc_yaml["stages"][name]["cmd"])
        sys.stdout.flush()
        sys.stderr.flush()
    from dvc.repo import Repo

    with Repo() as repo:
        repo.commit(force=True)
        for stage in repo.index.stages:
            stage.ignore_outs()


if __name__ == "__main__":
    main()
