"""What a no-change `dvc repro` costs, against DVC's own floor measured in the same run (a benchmark, not a test).

Timed side by side, interleaved, the median of --repeats runs each:

  bare            a bare DVC pipeline of five stages, the first always changed, each running a trivial command:
                  what DVC itself needs to say "nothing changed" for a pipeline of this length
  shape-files     this project's eight stages and their deps exactly as dvc.yaml lists them (one dep per code
                  file), each running a trivial command: DVC's cost of reading and checking the project's deps
  shape-folders   the same with one dep per package folder a stage imports from (what a coarser dep would save)
  project N       a real project after a full `dvc repro` (--project PATH: e.g. the quickstart checkout; --sizes N:
                  an own catalog of N galaxies built here with tiny training params, kept under --work)

and prints each one's median and its ratio to `bare`. With --history it also counts, over the git history of
galaxy_finetune/, how many stage reruns a folder dep would have caused that the per-file deps did not.

  python benchmarks/noop_repro.py --project .                 # the quickstart (after its dvc repro)
  python benchmarks/noop_repro.py --sizes 20000 --keep        # an own catalog of 20,000 galaxies
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.harness import provenance  # noqa: E402
from tests.pipeline_repo import dvc_env, make_repo, run  # noqa: E402


def _git_repo(path: Path, env: dict) -> None:
    run(["git", "init", "-q"], path, env)
    run(["dvc", "init", "-q"], path, env)
    run(["dvc", "config", "core.analytics", "false"], path, env)


def _first_run(path: Path, env: dict, spec: dict) -> Path:
    """dvc.yaml with the stages of `spec`, its first `dvc repro`, committed."""
    (path / "dvc.yaml").write_text(yaml.safe_dump({"stages": spec}, sort_keys=False))
    run(["dvc", "repro", "-q"], path, env)
    run(["git", "add", "-A"], path, env)
    run(["git", "commit", "-qm", "first run"], path, env)
    return path


def bare(path: Path, env: dict, stages: int = 5) -> Path:
    """Five stages in a chain, the first always changed, each `echo`ing a constant into its output."""
    path.mkdir(parents=True)
    _git_repo(path, env)
    spec = {}
    for i in range(stages):
        spec[f"s{i}"] = {"cmd": f"echo {i} > o{i}.txt", "deps": [f"o{i - 1}.txt"] if i else [],
                         "outs": [{f"o{i}.txt": {"persist": True}} if i == 0 else f"o{i}.txt"]}
        if i == 0:
            spec[f"s{i}"]["always_changed"] = True
            del spec[f"s{i}"]["deps"]
    return _first_run(path, env, spec)


def shape(path: Path, env: dict, folders: bool) -> Path:
    """This project's stages with its code deps (per file, or per folder) and trivial commands."""
    path.mkdir(parents=True)
    _git_repo(path, env)
    shutil.copytree(ROOT / "galaxy_finetune", path / "galaxy_finetune",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "stages", path / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    (path / ".dvcignore").write_text("__pycache__\n")
    project = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    spec, before = {}, None
    for i, (name, stage) in enumerate(project.items()):
        code = [d for d in stage["deps"] if d.startswith(("galaxy_finetune/", "stages/"))]
        if folders:
            code = sorted({d if d.startswith("stages/") else str(Path(d).parent) for d in code})
        spec[name] = {"cmd": f"echo {i} > {name}.txt", "deps": code + ([f"{before}.txt"] if before else []),
                      "outs": [f"{name}.txt"]}
        if stage.get("always_changed"):
            spec[name]["always_changed"] = True
            spec[name]["outs"] = [{f"{name}.txt": {"persist": True}}]
        before = name
    return _first_run(path, env, spec)


def own_catalog_project(n: int, work: Path, keep: bool) -> Path:
    """A project over an own catalog of n galaxies (benchmarks/scale.py's JPEGs) after one full `dvc repro`
    with tiny training params; reused from --work when --keep left it there."""
    from benchmarks.scale import catalogs

    repo = work / f"project-{n}" / "repo"
    if keep and (repo / "dvc.lock").is_file():
        return repo
    shutil.rmtree(repo.parent, ignore_errors=True)
    repo.parent.mkdir(parents=True)
    catalog = catalogs(work / "images", [n], 2)[n]
    repo, env = make_repo(repo, {
        "data": {"source": "catalog", "catalog": str(catalog)}, "model": {"encoder": "random"},
        "scratch": {"input_size": 32, "epochs": 1, "batch_size": 128, "patience": 1},
        "store": {"image_size": 32}, "analyse": {"bootstrap_samples": 20}, "predict": {"batch_size": 512}})
    start = time.perf_counter()
    run(["dvc", "repro"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "first run"], repo, env)
    print(f"project-{n}: first dvc repro {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return repo


def noop_seconds(repo: Path, env: dict) -> float:
    start = time.perf_counter()
    proc = run(["dvc", "repro"], repo, env)
    seconds = time.perf_counter() - start
    if "Running stage" in proc.stdout.replace("Running stage 'fetch_data'", "").replace("Running stage 's0'", ""):
        raise AssertionError(f"{repo}: a no-change dvc repro ran stages:\n{proc.stdout[-2000:]}")
    return seconds


def history() -> dict:
    """Over every commit that changed galaxy_finetune/*.py: stage reruns under per-file deps (today's dvc.yaml)
    and under one dep per folder."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    files = {n: {d for d in s["deps"] if d.startswith("galaxy_finetune/")} for n, s in stages.items()}
    folders = {n: {str(Path(d).parent) for d in deps} for n, deps in files.items()}
    log = subprocess.run(["git", "log", "--pretty=@%H", "--name-only", "--", "galaxy_finetune"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    commits, per_file, per_folder = [], Counter(), Counter()
    for line in log.splitlines():
        if line.startswith("@"):
            commits.append([])
        elif line.startswith("galaxy_finetune/") and line.endswith(".py"):
            commits[-1].append(line)
    commits = [c for c in commits if c]
    for changed in commits:
        for name in stages:
            per_file[name] += any(f in files[name] for f in changed)
            per_folder[name] += any(str(Path(f).parent) in folders[name] for f in changed)
    return {"commits": len(commits), "per_file": dict(per_file), "per_folder": dict(per_folder),
            "needless": {n: per_folder[n] - per_file[n] for n in stages}}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--project", type=Path, action="append", default=[], help="a reproduced project to time")
    parser.add_argument("--sizes", type=int, nargs="*", default=[], help="own catalogs of N galaxies to build")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--work", type=Path, default=Path("/tmp/noop-repro"))
    parser.add_argument("--keep", action="store_true", help="reuse the projects built under --work")
    parser.add_argument("--history", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args(argv)
    env = dvc_env(args.work / "download-cache")
    for name in ("bare", "shape-files", "shape-folders"):
        shutil.rmtree(args.work / name, ignore_errors=True)
    args.work.mkdir(parents=True, exist_ok=True)
    repos = {"bare": bare(args.work / "bare", env), "shape-files": shape(args.work / "shape-files", env, False),
             "shape-folders": shape(args.work / "shape-folders", env, True)}
    # a user's project is timed in the user's environment: the tests' download cache and offline switches would
    # make its fetch_data outputs differ, and the "no-change" repro would retrain
    envs = {name: env for name in repos}
    user_env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    for path in args.project:
        repos[f"project {path}"] = path.resolve()
        envs[f"project {path}"] = user_env
        dry = run(["dvc", "repro", "--dry"], path.resolve(), user_env).stdout
        if "Running stage" in dry.replace("Running stage 'fetch_data'", ""):
            raise SystemExit(f"{path}: `dvc repro` would run stages (dvc status); reproduce it first")
    for n in args.sizes:
        repos[f"project {n} galaxies"] = own_catalog_project(n, args.work, args.keep)
        envs[f"project {n} galaxies"] = env
    times = {name: [] for name in repos}
    for name, repo in repos.items():
        noop_seconds(repo, envs[name])  # warm: DVC's state database and the page cache
    for _ in range(args.repeats):  # interleaved, so a change of the machine's load hits every row alike
        for name, repo in repos.items():
            times[name].append(noop_seconds(repo, envs[name]))
    floor = statistics.median(times["bare"])
    result = {"provenance": provenance(), "load": os.getloadavg(), "repeats": args.repeats,
              "rows": {name: {"median_s": round(statistics.median(t), 3), "ratio_to_bare": round(
                  statistics.median(t) / floor, 2), "all_s": [round(x, 3) for x in t]} for name, t in times.items()}}
    if args.history:
        result["history"] = history()
    print(f"no-change `dvc repro`, median of {args.repeats} (load {result['load'][0]:.2f} at the end)")
    for name, row in result["rows"].items():
        print(f"  {name:40s} {row['median_s']:6.2f} s   {row['ratio_to_bare']:4.2f}x bare")
    if args.history:
        h = result["history"]
        print(f"history: {h['commits']} commits changed galaxy_finetune/; stage reruns per file vs per folder: "
              + ", ".join(f"{n} {h['per_file'][n]}/{h['per_folder'][n]}" for n in h["per_file"]))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
