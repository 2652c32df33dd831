"""A throwaway copy of this project as its own git repo, with tiny params, for end-to-end dvc runs."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "data": {"synthetic_n_per_class": 12, "synthetic_image_size": 32},
    "scratch": {"input_size": 32, "epochs": 2, "batch_size": 8, "patience": 2},
    "split": {"val_fraction": 0.15},
    "analyse": {"bootstrap_samples": 50},
}


STAGES = ["fetch_data", "store", "split", "finetune_gpu", "embed", "predict", "label_budget", "analyse"]
# what must run before what (DVC may order independent stages either way)
BEFORE = [("fetch_data", "store"), ("store", "split"), ("split", "finetune_gpu"), ("finetune_gpu", "embed"),
          ("embed", "predict"), ("finetune_gpu", "label_budget"), ("predict", "analyse"), ("label_budget", "analyse")]


def in_dag_order(stages: list[str], expected: set[str]) -> bool:
    """`stages` are exactly `expected`, each once, every upstream stage before its downstream ones."""
    return (sorted(stages) == sorted(expected)
            and all(stages.index(a) < stages.index(b) for a, b in BEFORE if a in stages and b in stages))


def ran(output: str) -> list[str]:
    """The stages a `dvc repro` (or an experiment's queue log) ran, in order."""
    return re.findall(r"Running stage '(\w+)'", output)


def _subprocess_env(env: dict) -> dict:
    """A stage process compiles the package once and reuses the bytecode, as Python does by default (an
    environment with PYTHONDONTWRITEBYTECODE set would make every one of them compile it again, ~2 s each)."""
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def dvc_env(cache: Path) -> dict:
    env = _subprocess_env(dict(os.environ))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["GALAXY_FINETUNE_CACHE"] = str(cache)
    env["HF_HUB_OFFLINE"] = "1"  # the tests never reach for the hub
    env["GALAXY_FINETUNE_OFFLINE"] = "1"  # nor for the dataset's servers
    env.setdefault("GIT_AUTHOR_NAME", "test")
    env.setdefault("GIT_AUTHOR_EMAIL", "test@example.com")
    env.setdefault("GIT_COMMITTER_NAME", "test")
    env.setdefault("GIT_COMMITTER_EMAIL", "test@example.com")
    return env


def stage_cmd(name: str, *args) -> list[str]:
    """A stage's command line as dvc.yaml writes it (`python -m stages.<name> ...`)."""
    return [sys.executable, "-m", f"stages.{name}", *map(str, args)]


def checkout_env(**extra) -> dict:
    """The environment for running this checkout's stages from another folder: its root first on sys.path."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return _subprocess_env(dict(os.environ, PYTHONPATH=path, **extra))


def run(args: list[str], cwd: Path, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def set_params(repo: Path, updates: dict) -> None:
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for group, values in updates.items():
        params.setdefault(group, {}).update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def make_repo(dest: Path, updates: dict | None = None) -> tuple[Path, dict]:
    """Copy the tracked project files into `dest`, apply tiny params, git init + commit."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for rel in files:
        if (ROOT / rel).is_file() and not rel.startswith(("data/", "models/", "metrics/", "plots/", "reports/")):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    shutil.copytree(ROOT / ".dvc", dest / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"),
                    dirs_exist_ok=True)
    for lock in ("dvc.lock",):
        (dest / lock).unlink(missing_ok=True)
    set_params(dest, TINY)
    if updates:
        set_params(dest, updates)
    env = dvc_env(dest.parent / "download-cache")
    run(["git", "init", "-q"], dest, env)
    run(["git", "add", "-A"], dest, env)
    run(["git", "commit", "-qm", "init"], dest, env)
    return dest, env


def copy_repo(repo: Path, dest: Path) -> Path:
    """A full copy of a finished tiny repo (git history, DVC cache and outputs) at `dest`, for a test that
    changes it; the copy shares the original's download cache (its env), so its sources stay unchanged."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    # cp -a keeps what DVC linked as links: an output and its cache entry stay one inode in the copy
    subprocess.run(["cp", "-a", str(repo), str(dest)], check=True)
    return dest


def repro_and_commit(repo: Path, env: dict, message: str, in_one_process: bool = False) -> str:
    """`dvc repro`, then commit everything; returns what dvc printed. `in_one_process`: the stages run in one
    Python process instead (tests/stage_runner.py: what they write is the same; only the default configuration's
    run, conftest.py's `pipeline_run`, needs DVC's own `dvc repro`)."""
    proc = run([sys.executable, "-m", "tests.stage_runner"] if in_one_process else ["dvc", "repro"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", message], repo, env)
    return proc.stdout + proc.stderr
