"""Time `dvc repro` of the offline quickstart end to end, then the no-op rerun, in a throwaway clone.

    python benchmarks/pipeline.py                 # clone HEAD into a temp dir, full run + no-op run
    python benchmarks/pipeline.py --worktree      # copy the working tree (uncommitted edits included)
    python benchmarks/pipeline.py --noop-runs 3   # more no-op reruns (the median is reported)

The clone runs with GALAXY_FINETUNE_OFFLINE=1 HF_HUB_OFFLINE=1 and a fresh GALAXY_FINETUNE_CACHE, so
fetch_data always falls back to the quickstart (synthetic galaxies, random encoder) and nothing is
downloaded. Every DVC output line is time-stamped, so each stage's share of the wall time is reported.
Targets (issue "Speed"): quickstart `dvc repro` <= 300 s on 2 cores, no-op `dvc repro` <= 3 s.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if not __package__:  # run as a script: import this checkout's packages, never an installed copy
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import ROOT, load, provenance  # noqa: E402
from galaxy_finetune.core.layout import MANIFEST, MODEL_CONFIG, TIMING, TRAINING_TIMING  # noqa: E402

STAGE_LINE = re.compile(r"Running stage '([^']+)'")
SKIP_LINE = re.compile(r"Stage '([^']+)' didn't change, skipping")


def env_for(cache: Path) -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(GALAXY_FINETUNE_OFFLINE="1", HF_HUB_OFFLINE="1", GALAXY_FINETUNE_CACHE=str(cache),
               PYTHONUNBUFFERED="1")  # stream DVC's lines so each stage is time-stamped
    for key, value in (("GIT_AUTHOR_NAME", "bench"), ("GIT_AUTHOR_EMAIL", "bench@example.com"),
                       ("GIT_COMMITTER_NAME", "bench"), ("GIT_COMMITTER_EMAIL", "bench@example.com")):
        env.setdefault(key, value)
    return env


def make_copy(dest: Path, worktree: bool, env: dict) -> str:
    """A clone of HEAD (default) or a copy of the working tree at `dest`; returns what was copied."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()
    if not worktree:
        subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True, env=env)
        return f"git clone of HEAD {head}"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split("\n")
    skip = ("data/", "models/", "metrics/", "plots/", "reports/", "dvc.lock")
    for rel in filter(None, files):
        if (ROOT / rel).is_file() and not rel.startswith(skip):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    for args in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "benchmark copy"]):
        subprocess.run(args, cwd=dest, check=True, env=env, capture_output=True)
    return f"working tree on HEAD {head} (uncommitted edits included)"


def timed_repro(repo: Path, env: dict, log) -> dict:
    """Run `dvc repro`, time-stamping each output line; per-stage seconds from the 'Running stage' lines."""
    start = time.perf_counter()
    load_before = load()
    proc = subprocess.Popen(["dvc", "repro"], cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)
    stages, skipped, current, t_current = {}, [], None, start
    for line in proc.stdout:
        now = time.perf_counter()
        log.write(f"[{now - start:7.1f}s] {line}")
        log.flush()
        if m := STAGE_LINE.search(line):
            if current:
                stages[current] = round(now - t_current, 1)
            current, t_current = m.group(1), now
        elif m := SKIP_LINE.search(line):
            skipped.append(m.group(1))
    rc = proc.wait()
    end = time.perf_counter()
    if current:
        stages[current] = round(end - t_current, 1)  # the last stage runs until dvc exits (incl. lock writing)
    if rc != 0:
        raise SystemExit(f"dvc repro failed ({rc}); see {log.name}")
    return {"wall_s": round(end - start, 2), "stages_run_s": stages, "stages_skipped": skipped,
            "load_before": load_before, "load_after": load()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worktree", action="store_true", help="copy the working tree instead of cloning HEAD")
    parser.add_argument("--noop-runs", type=int, default=1, help="no-op reruns after the full run (default 1)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (printed) for inspection")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    info = provenance()  # before the runs: the load they start under
    tmp = Path(tempfile.mkdtemp(prefix="galaxy-pipeline-bench-"))
    repo, cache = tmp / "repo", tmp / "cache"
    env = env_for(cache)
    copied = make_copy(repo, args.worktree, env)
    log_path = tmp / "dvc-repro.log"
    print(f"pipeline benchmark in {repo} ({copied}); log {log_path}", flush=True)
    ok = False
    try:
        with open(log_path, "w") as log:
            full = timed_repro(repo, env, log)
            print(f"quickstart dvc repro: {full['wall_s']} s (load {full['load_before']} -> {full['load_after']}); "
                  f"stages {full['stages_run_s']}", flush=True)
            noops = []
            for _ in range(args.noop_runs):
                noops.append(timed_repro(repo, env, log))
                print(f"no-op dvc repro: {noops[-1]['wall_s']} s (load {noops[-1]['load_before']}); "
                      f"ran {noops[-1]['stages_run_s']}, skipped {noops[-1]['stages_skipped']}", flush=True)
        manifest = json.loads((repo / "data/raw" / MANIFEST).read_text())
        run = json.loads((repo / "models/finetuned" / MODEL_CONFIG).read_text())["run"]
        timing = json.loads((repo / "data/predictions" / TIMING).read_text())
        noop_walls = sorted(n["wall_s"] for n in noops)
        result = {
            **info, "copied": copied,
            "run_label": manifest["run_label"], "n_images": manifest["n_images"],
            "quickstart_repro": full, "noop_repro": noops,
            "noop_median_s": noop_walls[len(noop_walls) // 2],
            "finetune": {**{k: run.get(k) for k in ("device", "epochs_run")},
                         **json.loads((repo / "metrics/training" / TRAINING_TIMING).read_text())},
            "predict_timing": timing,
            "targets": {"quickstart_le_300s": full["wall_s"] <= 300, "noop_le_3s": noop_walls[0] <= 3},
        }
        ok = True
    finally:
        if ok and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        elif not ok:
            print(f"kept {tmp} for inspection", file=sys.stderr)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
