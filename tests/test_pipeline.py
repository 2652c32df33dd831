"""End to end: real `dvc repro` runs of the whole DAG in a throwaway git repo with tiny params.

What a params change reruns is checked on the session's sweep of experiments (test_experiments.py), each one
change from this first run."""
import json
import re

import numpy as np
import pandas as pd
import pytest

from galaxy_finetune.core.classes import read_classes
from galaxy_finetune.core.layout import (CATALOG, ENCODER_RECORD, MANIFEST, MODEL_CONFIG, MODEL_WEIGHTS, RECHECK,
                                    SOURCE, STORE_IMAGES)
from tests.pipeline_repo import STAGES, copy_repo, in_dag_order, ran, run, set_params

pytestmark = pytest.mark.slow  # real `dvc repro` runs of the tiny project, a kill -9 of a training

@pytest.fixture(scope="module")
def repo(pipeline_run, tmp_path_factory):
    """A copy of the session's first run: these tests change params and rerun."""
    path, env, output = pipeline_run
    return copy_repo(path, tmp_path_factory.mktemp("e2e") / "repo"), env, output


def test_first_run_runs_every_stage_and_writes_every_output(repo):
    path, _, output = repo
    assert in_dag_order(ran(output), set(STAGES)), ran(output)
    assert "OFFLINE STAND-IN" in output
    manifest = json.loads((path / "data/raw" / MANIFEST).read_text())
    assert manifest["run_label"].startswith("SYNTHETIC stand-in") and manifest["n_images"] == 48
    catalog = pd.read_csv(path / "data/raw" / CATALOG)
    assert list(catalog.columns) == ["id_str", "label", "label_name", "split", "src"]
    assert sorted(p.name for p in (path / "data/raw").iterdir()) == sorted([CATALOG, MANIFEST, RECHECK, SOURCE])
    images = np.load(path / "data/store" / STORE_IMAGES, mmap_mode="r")
    assert images.shape == (48, 32, 32, 3) and images.dtype == np.uint8
    assert (path / "models/encoder" / ENCODER_RECORD).is_file()
    splits = {s: pd.read_csv(path / f"data/splits/{s}.csv") for s in ("train", "val", "test")}
    assert sum(len(s) for s in splits.values()) == 48
    assert not set(splits["train"].id_str) & set(splits["test"].id_str)
    model = json.loads((path / "models/finetuned" / MODEL_CONFIG).read_text())
    assert model["input_size"] == 32 and model["run"]["params"]["lr"] == 1e-3 and model["run"]["epochs_run"] >= 1
    assert (path / "models/finetuned" / MODEL_WEIGHTS).stat().st_size > 1e6
    assert (path / "metrics/training/metrics.json").is_file()
    assert list((path / "metrics/training/plots/metrics").rglob("*.tsv"))
    predictions = pd.read_csv(path / "data/predictions/test.csv")
    classes = read_classes(path / "data/raw")
    assert list(predictions.columns) == (["id_str", "true_label", "pred_label"] + [f"p_{c}" for c in classes]
                                         + ["p_true", "confidence", "row", "train_distance", "val_share_farther"])
    assert (catalog["id_str"][predictions["row"]].to_numpy() == predictions["id_str"].to_numpy()).all()
    assert len(predictions) == len(splits["test"])
    assert predictions[[f"p_{c}" for c in classes]].sum(1).sub(1).abs().max() < 1e-4
    assert (path / "data/predictions/val.csv").is_file()
    metrics = json.loads((path / "metrics/metrics.json").read_text())
    assert 0 <= metrics["accuracy"] <= 1 and metrics["provenance"]["run_label"] == manifest["run_label"]
    assert metrics["provenance"]["real_run"] is False
    assert metrics["provenance"]["encoder_source"] == "random"
    assert set(metrics["confusion"]) == set(classes)
    assert (path / "plots/confusion_matrix.png").stat().st_size > 10_000


def test_first_run_prints_no_adverts_deprecations_or_source_lines(repo):
    _, _, output = repo
    for noise in ("litlogger", "litmodels", "_pytree", "Tip:", "warnings.warn(", "UserWarning"):
        assert noise not in output, noise
    warnings = [line for line in output.splitlines() if line.startswith("warning: ")]
    assert warnings  # the CPU warnings of training are still there, one line each, each once
    assert len(warnings) == len(set(warnings)), warnings
    assert not [line for line in output.splitlines() if re.search(r"\.py:\d+", line)]


def test_second_repro_reruns_nothing_but_the_network_check_and_copies_nothing(repo):
    path, env, _ = repo
    # fetch_data's own small outputs are re-linked by DVC around the run; everything after it is untouched
    outputs = [p for d in ("data/store", "data/splits", "data/predictions", "models/finetuned")
               for p in (path / d).iterdir()]
    stamps = {p: p.stat().st_mtime_ns for p in outputs}
    out = run(["dvc", "repro"], path, env).stdout
    assert ran(out) == ["fetch_data"] and "nothing changed since the last run" in out
    for stage in STAGES[1:]:
        assert f"Stage '{stage}' didn't change, skipping" in out
    assert {p: p.stat().st_mtime_ns for p in outputs} == stamps  # the store was not rewritten
    assert run(["git", "status", "--porcelain"], path, env).stdout.strip() == ""


def test_the_store_is_one_copy_linked_to_the_cache(repo):
    path, _, _ = repo
    store = path / "data/store/images.npy"
    assert store.stat().st_nlink == 2  # the workspace file and the cache entry are one inode


def test_bad_params_fail_with_one_line_before_any_work(repo):
    path, env, _ = repo
    set_params(path, {"train": {"lr": -1.0, "epochs": 0}})
    proc = run(["python", "-m", "stages.split", "data/raw", "data/splits-new"], path, env, check=False)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "train.lr" in errors[0] and "train.epochs" in errors[0]
    assert not (path / "data/splits-new").exists()
    run(["git", "checkout", "params.yaml"], path, env)


def test_a_broken_own_catalog_stops_dvc_repro_in_fetch_data_with_one_line_and_changes_nothing(repo):
    """Issue 37, through `dvc repro` as a user runs it: a catalog whose one row carries a class no other row has, then
    one with a header and no rows. Each is one line from fetch_data, before the store decodes any image; dvc.lock,
    the outputs and the work tree stay as they were."""
    path, env, _ = repo
    catalog = pd.read_csv(path / "data/raw" / CATALOG)
    own = path.parent / "own"
    own.mkdir()
    rows = pd.DataFrame({"id_str": catalog["id_str"], "file_loc": catalog["src"], "label": catalog["label_name"]})
    rows.loc[3, "label"] = "barred_spiral"
    rows.to_csv(own / "catalog.csv", index=False)
    set_params(path, {"data": {"source": "catalog", "catalog": str(own / "catalog.csv")}})
    lock = (path / "dvc.lock").read_bytes()
    raw = {p.name: p.read_bytes() for p in (path / "data/raw").iterdir()}
    proc = run(["dvc", "repro"], path, env, check=False)
    assert proc.returncode != 0 and ran(proc.stdout) == ["fetch_data"], proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors[0] == (f"error: {own / 'catalog.csv'}: class 'barred_spiral' has 1 galaxy (row 3), too few to "
                         f"split: a class needs 3 (one for train, val and test). Is it a typo of 'unbarred_spiral'? "
                         f"Fix the label, add galaxies of that class, or drop its rows from the catalog"), proc.stderr
    (own / "catalog.csv").write_text("id_str,file_loc,label\n")
    proc = run(["dvc", "repro"], path, env, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert [line for line in proc.stderr.splitlines() if line.startswith("error: ")][0] == (
        f"error: {own / 'catalog.csv'}: the catalog holds no galaxies (a header and no rows); add one row per galaxy")
    assert (path / "dvc.lock").read_bytes() == lock
    assert {p.name: p.read_bytes() for p in (path / "data/raw").iterdir()} == raw
    run(["git", "checkout", "params.yaml"], path, env)
    assert run(["git", "status", "--porcelain"], path, env).stdout.strip() == ""


def test_kill_9_during_finetune_gpu_then_dvc_repro_completes_and_a_second_repro_meanwhile_gets_dvcs_lock_error(repo):
    """Issue 27: `kill -9` of a `dvc repro` (its whole process group, as a scheduler or the OOM killer does) while
    finetune_gpu trains; DVC drops the dead process's lock and the next `dvc repro` completes the pipeline. The
    retraining writes the same model files (its timings go to metrics/training/timing.json, not the model's
    folder), so embed, predict and label_budget stay as they were; analyse reruns for the new wall time (unless the
    retraining took as long to 0.1 s: the curves themselves are the same).

    While that repro runs, a second `dvc repro` gets DVC's lock error and the first still completes (this was
    test_two_repros_at_once_the_second_gets_dvcs_lock_error, which ran a forced training of its own for it)."""
    import os
    import signal
    import subprocess
    import time

    path, env, _ = repo
    timing = (path / "metrics/training/timing.json").read_text()
    dvc = subprocess.Popen(["dvc", "repro", "-f", "-s", "finetune_gpu"], cwd=path, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline, seen = time.time() + 300, ""
        while "Running stage 'finetune_gpu'" not in seen and time.time() < deadline:
            seen += dvc.stdout.readline()
        assert "Running stage 'finetune_gpu'" in seen, seen[-2000:]
        time.sleep(3)  # into the stage's imports and training
        assert dvc.poll() is None, "dvc repro ended before it could be killed"
    finally:
        os.killpg(dvc.pid, signal.SIGKILL)
        dvc.wait(timeout=60)
    assert dvc.returncode == -signal.SIGKILL

    first = subprocess.Popen(["dvc", "repro"], cwd=path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    try:
        output, deadline = "", time.time() + 60
        while "Running stage" not in output and time.time() < deadline:
            output += first.stdout.readline()
        second = run(["dvc", "repro"], path, env, check=False)
        assert second.returncode != 0
        # DVC's own lock: either the repo lock or the per-output read/write lock, depending on timing
        assert re.search(r"is busy, it is being blocked by|Unable to acquire lock", second.stderr + second.stdout)
    finally:
        output += first.communicate(timeout=600)[0]
    assert first.returncode == 0, output[-3000:]
    # analyse reads the training's wall time (timing.json, to 0.1 s): it reruns unless the retraining took as long
    timed_again = (path / "metrics/training/timing.json").read_text() != timing
    assert "finetune_gpu" in ran(output) and ("analyse" in ran(output)) == timed_again, (ran(output), timing)
    assert not {"embed", "predict", "label_budget"} & set(ran(output)), ran(output)
    assert (path / "models/finetuned" / MODEL_WEIGHTS).is_file()
    status = run(["dvc", "status"], path, env).stdout.split()
    assert status == ["fetch_data:", "always", "changed"], status  # its network check; every other stage is current
