"""Where the test suite's time goes: the CPU each test module costs, in its own process and in every Python
process it starts, against the machine's CPU over the run.

    python benchmarks/suite_cost.py                          # the README's `pytest`, with accounting
    python benchmarks/suite_cost.py --out suite_cost.json    # and the raw numbers
    python benchmarks/suite_cost.py -- tests/test_cli.py     # arguments after -- go to pytest

Every Python process of the run (pytest, its workers, `dvc`, the stages DVC starts, the CLIs and trainings the
tests start) loads a `sitecustomize` from a temporary folder put first on PYTHONPATH, which appends one line at
exit: its own CPU seconds, whether it imported torch, and the test that was running when it started
(PYTEST_CURRENT_TEST, inherited). A process killed with SIGKILL writes nothing, and neither do chromium, git or
cp; the machine's own counters (/proc/stat) over the run hold all of it, so the gap is printed too.

The baseline in the same run: the CPU one stage interpreter spends importing what a stage needs (`import
stages.finetune_gpu`: torch, Lightning, timm, Zoobot), the fixed cost of a stage process; each process that
imported torch is counted as up to that much (its own CPU where it was less).
The suite's floor on this machine is the machine's busy CPU seconds over its cores; a wall-time target needs
at most target x cores of them. A Debian python3's own sitecustomize is shadowed for the run (venvs have none).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if not __package__:  # run as a script: import this checkout's packages, never an installed copy
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import ROOT, load, provenance  # noqa: E402

HOOK = '''
import atexit, json, os, resource, sys

def _suite_cost_record():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    line = {"cpu_s": round(usage.ru_utime + usage.ru_stime, 3), "torch": "torch" in sys.modules,
            "worker": os.environ.get("PYTEST_XDIST_WORKER", ""), "test": os.environ.get("PYTEST_CURRENT_TEST", "")}
    try:
        with open(os.environ["SUITE_COST_LOG"], "a") as log:
            log.write(json.dumps(line) + "\\n")
    except (KeyError, OSError):
        pass

atexit.register(_suite_cost_record)
'''


def machine_busy_s() -> float | None:
    """CPU seconds the whole machine has spent busy since boot (all cores), from /proc/stat; None elsewhere."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def stage_import_cpu_s(repeats: int = 3) -> float:
    """The least CPU of `repeats` fresh interpreters importing the training stage (the baseline)."""
    costs = []
    for _ in range(repeats):
        before = children_cpu_s()
        subprocess.run([sys.executable, "-c", "import stages.finetune_gpu"], cwd=ROOT, check=True)
        costs.append(children_cpu_s() - before)
    return min(costs)


def group_of(record: dict) -> str:
    """The test module a process belongs to: the test running when it (or its ancestor) started."""
    if record["test"]:
        return record["test"].split("::")[0]
    if record["worker"]:
        return "(pytest workers: collection and in-process tests)"
    return "(pytest main process)"


def summarise(records: list[dict], busy_s: float | None, wall_s: float, cores: int, startup_s: float,
              target_s: float) -> dict:
    groups = collections.defaultdict(lambda: {"processes": 0, "torch_processes": 0, "cpu_s": 0.0})
    for record in records:
        group = groups[group_of(record)]
        group["processes"] += 1
        group["torch_processes"] += record["torch"]
        group["cpu_s"] += record["cpu_s"]
    logged = sum(r["cpu_s"] for r in records)
    torch_processes = sum(r["torch"] for r in records)
    return {
        "wall_s": round(wall_s, 1), "cores": cores,
        "machine_busy_cpu_s": None if busy_s is None else round(busy_s, 1),
        "machine_busy_share": None if busy_s is None else round(busy_s / (wall_s * cores), 3),
        "logged_python_cpu_s": round(logged, 1),
        "not_logged_cpu_s": None if busy_s is None else round(busy_s - logged, 1),
        "python_processes": len(records), "torch_processes": torch_processes,
        "stage_import_cpu_s": round(startup_s, 2),
        # a process that imported torch spent at most the baseline on its imports (less where it needed less)
        "torch_startups_cpu_s": round(sum(min(r["cpu_s"], startup_s) for r in records if r["torch"]), 1),
        "target_wall_s": target_s, "target_cpu_budget_s": target_s * cores,
        "groups": {name: {**g, "cpu_s": round(g["cpu_s"], 1)}
                   for name, g in sorted(groups.items(), key=lambda kv: -kv[1]["cpu_s"])},
    }


def print_table(result: dict) -> None:
    print(f"{'module':58s} {'procs':>5s} {'torch':>5s} {'CPU s':>7s}")
    for name, g in result["groups"].items():
        print(f"{name[:58]:58s} {g['processes']:5d} {g['torch_processes']:5d} {g['cpu_s']:7.1f}")
    busy = result["machine_busy_cpu_s"]
    print(f"\nwall {result['wall_s']} s on {result['cores']} cores; {result['summary_line']}")
    if busy is not None:
        print(f"machine busy {busy} CPU-s ({result['machine_busy_share']:.0%} of the cores over the run); "
              f"logged in Python processes {result['logged_python_cpu_s']}, not logged {result['not_logged_cpu_s']} "
              f"(killed processes, chromium, git, cp)")
        print(f"floor at this CPU cost: {busy / result['cores']:.0f} s; a {result['target_wall_s']:.0f} s run has "
              f"{result['target_cpu_budget_s']:.0f} CPU-s, so {max(0.0, busy - result['target_cpu_budget_s']):.0f} "
              f"CPU-s would have to go")
    print(f"{result['torch_processes']} of {result['python_processes']} Python processes imported torch; one stage "
          f"interpreter's imports cost {result['stage_import_cpu_s']} CPU-s (the baseline, measured in this run), "
          f"so up to {result['torch_startups_cpu_s']} CPU-s of the run are those start-ups")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the numbers as JSON here")
    parser.add_argument("--target", type=float, default=180.0, help="the wall-time target in seconds (issue 26)")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = parser.parse_args(argv)

    info = provenance()
    startup_s = stage_import_cpu_s()
    with tempfile.TemporaryDirectory(prefix="suite-cost-") as tmp:
        hook_dir, log = Path(tmp) / "hook", Path(tmp) / "processes.jsonl"
        hook_dir.mkdir()
        (hook_dir / "sitecustomize.py").write_text(HOOK)
        env = dict(os.environ, SUITE_COST_LOG=str(log),
                   PYTHONPATH=os.pathsep.join(filter(None, [str(hook_dir), os.environ.get("PYTHONPATH")])))
        busy_before, start = machine_busy_s(), time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args.pytest_args],
                              cwd=ROOT, env=env, capture_output=True, text=True)
        wall_s, busy_after = time.perf_counter() - start, machine_busy_s()
        records = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    busy_s = None if busy_before is None or busy_after is None else busy_after - busy_before
    result = summarise(records, busy_s, wall_s, os.cpu_count() or 1, startup_s, args.target)
    lines = [line for line in proc.stdout.splitlines() if re.search(r"\d+ (passed|failed)", line)]
    result.update(info, load_end=load(), pytest_returncode=proc.returncode,
                  summary_line=lines[-1].strip("= ") if lines else proc.stdout[-300:])
    print_table(result)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    if proc.returncode != 0:
        print(proc.stdout[-3000:], file=sys.stderr)
        sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
