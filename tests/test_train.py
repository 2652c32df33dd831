"""finetune_gpu: accelerator choice, checkpoint resume after a kill, and the exported model (the killed runs are
subprocesses that get a real SIGTERM; the reruns run in this process)."""
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml

from galaxy_finetune.core.accelerator import resolve_accelerator
from galaxy_finetune.core.classes import GALAXY_MNIST_CLASSES
from galaxy_finetune.core.errors import REQUEUE_STATUS, PipelineError
from galaxy_finetune.core.layout import (CHECKPOINT_FINGERPRINT, CHECKPOINT_INTERRUPTED, CHECKPOINT_LAST,
                                    MODEL_CONFIG, MODEL_WEIGHTS, STORE_RECORD)
from galaxy_finetune.core.params import Params
from galaxy_finetune.training.train import resume_checkpoint
from tests.pipeline_repo import checkout_env, stage_cmd
from tests.tiny import RANDOM_INIT_RECIPE, prepare

TINY = {"data": {"source": "synthetic", "synthetic_n_per_class": 10, "synthetic_image_size": 32},
        "model": {"encoder": "random", "random_arch": "convnext_atto"},
        "split": {"val_fraction": 0.2},
        RANDOM_INIT_RECIPE: {"lr": 1e-3, "batch_size": 8, "input_size": 32, "patience": 50, "layer_decay": 1.0}}


def job(root: Path, checkpoints: Path):
    from galaxy_finetune.training.train import FinetuneJob

    return FinetuneJob(root / "data/raw", root / "data/store", root / "data/splits", root / "models/encoder",
                       root / "models/finetuned", root / "live", checkpoints)


@pytest.fixture
def inputs(tmp_path, monkeypatch):
    """data/raw, data/store, data/splits, models/encoder for 40 tiny synthetic galaxies, made by the library."""
    monkeypatch.chdir(tmp_path)
    prepare(tmp_path, Params.model_validate(TINY), 0.2, 0.2)
    return tmp_path


def finetune_cmd(epochs: int, root: Path) -> tuple[list[str], dict]:
    params = json.loads(json.dumps(TINY))
    params[RANDOM_INIT_RECIPE]["epochs"] = epochs
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return stage_cmd("finetune_gpu", "data/raw", "data/store", "data/splits", "models/encoder", "models/finetuned",
                     "--live-dir", "metrics/training"), checkout_env(PYTHONUNBUFFERED="1")


def finetune_here(cmd: list[str], capsys) -> str:
    """The finetune_gpu stage of `cmd` run in this process, through the same stage shell (the folder is the
    current one: `inputs` made it so); returns what it printed. A failure is SystemExit, as the shell ends it."""
    import stages.finetune_gpu as stage
    from galaxy_finetune.core.cli import run_stage

    assert cmd[1:3] == ["-m", "stages.finetune_gpu"]
    capsys.readouterr()
    run_stage(stage.__doc__, stage.add_arguments, stage.main, cmd[3:])
    return capsys.readouterr().out


def start_then_sigterm(cmd: list[str], env: dict, root: Path) -> tuple[subprocess.Popen, str]:
    """Start training, send SIGTERM once the first epoch's checkpoint exists; return the process and stderr."""
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline, last = time.time() + 240, root / "models/checkpoints" / CHECKPOINT_LAST
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert last.exists() or proc.returncode == 0, proc.communicate()[1][-2000:]
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    return proc, err


def test_gpu_requested_without_one_is_a_clear_error(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(PipelineError, match="train.accelerator: 'gpu' but no CUDA GPU"):
        resolve_accelerator("gpu", "auto")
    assert resolve_accelerator("auto", "auto") == ("cpu", "32")


def test_resume_only_with_the_same_inputs(tmp_path):
    ckpt = tmp_path / "ckpt"
    assert resume_checkpoint(ckpt, "a", "auto") is None
    last = ckpt / CHECKPOINT_LAST
    last.write_text("x")
    assert resume_checkpoint(ckpt, "a", "auto") == last
    assert resume_checkpoint(ckpt, "a", "auto", rank_zero=False) == last
    assert resume_checkpoint(ckpt, "a", "never") is None and not last.exists()
    last.write_text("x")
    assert resume_checkpoint(ckpt, "b", "auto") is None and not last.exists()
    last.write_text("x")
    (ckpt / CHECKPOINT_FINGERPRINT).write_text(json.dumps({"fingerprint": "b", "complete": True}))
    assert resume_checkpoint(ckpt, "b", "auto") is None  # a finished run is not resumed


@pytest.mark.slow  # a training process killed by SIGTERM
def test_killed_run_leaves_no_model_and_a_rerun_with_changed_inputs_starts_afresh(inputs, capsys):
    proc, err = start_then_sigterm(*finetune_cmd(epochs=40, root=inputs), inputs)
    assert proc.returncode == REQUEUE_STATUS, err[-2000:]  # "requeue me", as a scheduler's script reads it
    assert "stopped by SIGTERM" in err and "Traceback" not in err
    assert (inputs / "models/checkpoints" / CHECKPOINT_INTERRUPTED).is_file()
    assert not (inputs / "models/finetuned").exists()  # a killed run is never taken as complete

    cmd, _ = finetune_cmd(epochs=2, root=inputs)  # fewer epochs: a changed input, so no resume
    fresh = finetune_here(cmd, capsys)  # the rerun in this process (it completes: no SystemExit)
    assert "resuming" not in fresh
    model = json.loads((inputs / "models/finetuned" / MODEL_CONFIG).read_text())
    assert model["run"]["resumed_from"] is None and model["run"]["epochs_run"] == 2


@pytest.mark.slow  # a training process killed by SIGTERM
def test_interrupted_then_resumed_with_unchanged_inputs(inputs, capsys):
    cmd, env = finetune_cmd(epochs=3, root=inputs)
    proc, _ = start_then_sigterm(cmd, env, inputs)
    if proc.returncode == 0:
        pytest.skip("training finished before the signal arrived")
    again = finetune_here(cmd, capsys)  # the rerun in this process (it completes: no SystemExit)
    assert "resuming the killed run" in again
    model = json.loads((inputs / "models/finetuned" / MODEL_CONFIG).read_text())
    assert model["run"]["resumed_from"].endswith(".ckpt") and model["run"]["epochs_run"] == 3
    assert not (inputs / "models/checkpoints" / CHECKPOINT_INTERRUPTED).exists()


def test_a_full_disk_while_checkpointing_is_one_line_and_the_rerun_completes(inputs, capsys, monkeypatch):
    """ENOSPC on the first checkpoint: one line naming the checkpoint folder and the space needed, no model
    exported; once space is free the same command completes."""
    import errno

    import lightning.fabric.plugins.io.torch_io as torch_io

    def full(checkpoint, filepath):
        raise OSError(errno.ENOSPC, "No space left on device", str(filepath))

    cmd, _ = finetune_cmd(epochs=2, root=inputs)
    before = signal.getsignal(signal.SIGTERM)
    with monkeypatch.context() as patch:
        patch.setattr(torch_io, "_atomic_save", full)
        with pytest.raises(SystemExit) as stopped:
            finetune_here(cmd, capsys)
    err = capsys.readouterr().err
    assert stopped.value.code == 1 and "Traceback" not in err
    line = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(line) == 1 and "models/checkpoints: no space left on device (about" in line[0], err[-2000:]
    assert "MB more needed" in line[0] and "free space, then rerun" in line[0]
    assert not (inputs / "models/finetuned").exists()
    assert signal.getsignal(signal.SIGTERM) is before  # Lightning's handlers do not outlive the failed run
    finetune_here(cmd, capsys)  # space freed: the same command completes
    assert json.loads((inputs / "models/finetuned" / MODEL_CONFIG).read_text())["run"]["epochs_run"] == 2


@pytest.mark.slow  # a training process under a simulated SLURM job, killed by its fake scontrol
def test_slurm_sigusr1_checkpoints_requeues_and_the_requeued_run_resumes(inputs, capsys, monkeypatch, tmp_path):
    """SLURM's warning before the time limit (--signal=USR1@...): Lightning's SLURM support saves hpc_ckpt_1.ckpt
    beside the run's other checkpoints and runs `scontrol requeue JOB`; here scontrol is a script that records its
    arguments and kills the job as SLURM would. The requeued run (same command, same job) resumes from it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "scontrol.args"
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" > {record}\nkill -9 $PPID\n')
    (bin_dir / "scontrol").chmod(0o755)
    slurm = {"SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1", "SLURM_JOB_NAME": "finetune", "SLURM_JOB_ID": "4242",
             "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NODELIST": "127.0.0.1"}
    cmd, env = finetune_cmd(epochs=40, root=inputs)
    env = dict(env, PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", **slurm)
    proc = subprocess.Popen(cmd, cwd=inputs, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline, last = time.time() + 240, inputs / "models/checkpoints" / CHECKPOINT_LAST
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGUSR1)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err[-2000:]
    assert record.read_text().split() == ["requeue", "4242"]
    hpc = inputs / "models/checkpoints" / "hpc_ckpt_1.ckpt"
    assert hpc.is_file() and not (inputs / "models/finetuned").exists()

    for key, value in slurm.items():  # the requeued job: the same command under the same job
        monkeypatch.setenv(key, value)
    again = finetune_here(cmd, capsys)
    where = str(hpc.relative_to(inputs))  # the stage's paths, as dvc.yaml gives them
    assert f"resuming the killed run from {where}" in again
    model = json.loads((inputs / "models/finetuned" / MODEL_CONFIG).read_text())
    assert model["run"]["resumed_from"] == where and model["run"]["epochs_run"] == 40


def test_a_checkpoint_that_runs_code_is_refused(inputs, tmp_path):
    """A pickle smuggled in as the checkpoint to resume from is never executed."""
    import pickle

    from galaxy_finetune.core.params import AugmentParams
    from galaxy_finetune.core.task import Task
    from galaxy_finetune.training.train import fingerprint

    train = Params.model_validate(TINY).recipe(False)[1].model_copy(update={"epochs": 1})
    augment = AugmentParams()
    classes = list(GALAXY_MNIST_CLASSES)
    ckpt = inputs / "models/checkpoints"
    ckpt.mkdir(parents=True)
    task = Task("classification", tuple(classes)).record()  # what the run learns (core/task.py)
    inputs_fingerprint = fingerprint(train, augment, task, inputs / "data/splits", inputs / "data/store" / STORE_RECORD,
                                     inputs / "models/encoder")
    (ckpt / CHECKPOINT_FINGERPRINT).write_text(json.dumps({"fingerprint": inputs_fingerprint}))
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (ckpt / CHECKPOINT_LAST).write_bytes(pickle.dumps({"state_dict": Evil()}))
    from galaxy_finetune.training.train import finetune

    with pytest.raises(PipelineError, match="refused to load"):
        finetune(train, augment, "scratch", {"classes": classes, "run_label": "test run"}, job(inputs, ckpt))
    assert not marker.exists()
    assert not (inputs / "models/finetuned").exists()


def test_head_only_training_leaves_the_encoder_as_it_was(inputs):
    """training_mode: head_only is the linear-probe baseline: Zoobot's classifier freezes the encoder."""
    from safetensors.torch import load_file

    from galaxy_finetune.data.encoder import build_encoder
    from galaxy_finetune.core.params import AugmentParams
    from galaxy_finetune.training.train import finetune

    train = Params.model_validate(TINY).recipe(False)[1].model_copy(
        update={"epochs": 1, "training_mode": "head_only", "accelerator": "cpu"})
    classes = list(GALAXY_MNIST_CLASSES)
    run = finetune(train, AugmentParams(), "scratch", {"classes": classes, "run_label": "test run"},
                   job(inputs, inputs / "ckpt"))
    assert run["params"]["training_mode"] == "head_only"
    trained = load_file(inputs / "models/finetuned" / MODEL_WEIGHTS)
    initial = build_encoder(inputs / "models/encoder").state_dict()
    for key, value in initial.items():
        assert torch.equal(trained[f"encoder.{key}"], value), key
    head = [k for k in trained if k.startswith("head.")]
    assert head
