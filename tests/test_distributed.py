"""DDP through Lightning on CPU (gloo): two processes see every sample once and agree with one process (the
two-process runs are subprocesses, as a user starts them; the one-process references run in this process)."""
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from galaxy_finetune.core.layout import MODEL_CONFIG
from galaxy_finetune.core.params import Params
from galaxy_finetune.data.split import read_catalog
from tests.pipeline_repo import checkout_env, stage_cmd
from tests.tiny import RANDOM_INIT_RECIPE, prepare

pytestmark = pytest.mark.slow  # two-process DDP training and galaxy-classify


def _params(devices: int, batch_size: int) -> dict:
    return {"data": {"source": "synthetic", "synthetic_n_per_class": 8, "synthetic_image_size": 32},
            "model": {"encoder": "random", "random_arch": "convnext_atto"},
            # lr so small the weights stay put: validation then measures the same model in both runs
            RANDOM_INIT_RECIPE: {"lr": 1e-12, "batch_size": batch_size, "input_size": 32, "epochs": 2, "patience": 50},
            "train": {"accelerator": "cpu", "devices": devices, "strategy": "ddp" if devices > 1 else "auto"}}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    prepare(root, Params.model_validate(_params(1, 8)))
    catalog = read_catalog(root / "data/raw").drop(columns=["split", "src"])
    # 24 train / 8 val: both divide evenly over 2 processes, so DistributedSampler pads nothing
    catalog.iloc[:24].to_csv(root / "data/splits/train.csv", index=False)
    catalog.iloc[24:].to_csv(root / "data/splits/val.csv", index=False)
    catalog.iloc[24:].to_csv(root / "data/splits/test.csv", index=False)
    return root


def _finetune(root: Path, devices: int, batch_size: int, monkeypatch=None) -> dict:
    """The finetune_gpu stage in run{devices}/, as dvc.yaml runs it: two processes (DDP) in a subprocess, whose
    processes Lightning starts; one process in this one (`monkeypatch` given), through the same stage shell."""
    run_dir = root / f"run{devices}"
    run_dir.mkdir()
    (run_dir / "params.yaml").write_text(yaml.safe_dump(_params(devices, batch_size)))
    args = [root / "data/raw", root / "data/store", root / "data/splits", root / "models/encoder", "models/finetuned",
            "--live-dir", "metrics/training"]
    if monkeypatch is not None:
        import stages.finetune_gpu as stage
        from galaxy_finetune.core.cli import run_stage

        with monkeypatch.context() as m:
            m.chdir(run_dir)
            run_stage(stage.__doc__, stage.add_arguments, stage.main, [str(a) for a in args])
    else:
        proc = subprocess.run(stage_cmd("finetune_gpu", *args), cwd=run_dir, capture_output=True, text=True,
                              timeout=600, env=checkout_env(PYTHONUNBUFFERED="1"))
        assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((run_dir / "models/finetuned" / MODEL_CONFIG).read_text())["run"]


def test_two_processes_match_one(inputs, monkeypatch):
    single = _finetune(inputs, devices=1, batch_size=8, monkeypatch=monkeypatch)
    ddp = _finetune(inputs, devices=2, batch_size=4)  # the same global batch of 8
    assert single["world_size"] == 1 and ddp["world_size"] == 2
    assert single["samples_per_epoch"] == ddp["samples_per_epoch"] == [24, 24]
    assert ddp["best_val_loss"] == pytest.approx(single["best_val_loss"], rel=1e-4)
    assert ddp["best_epoch"] == single["best_epoch"] == 0
    assert not list((inputs / "run2").glob("models/checkpoints/*-v1.ckpt"))  # saved once, by rank 0


def test_classify_on_two_processes_writes_every_galaxy_once(inputs, tmp_path, monkeypatch):
    """Each rank writes its own part through the prediction writer; the merge keeps input order."""
    from galaxy_finetune.inference.classify import main

    _finetune(inputs, devices=1, batch_size=8, monkeypatch=monkeypatch) if not (inputs / "run1").exists() else None
    folder = tmp_path / "survey"
    folder.mkdir()
    for src in read_catalog(inputs / "data/raw")["src"][:13]:  # odd: the ranks get 7 and 6
        (folder / Path(src).name).write_bytes(Path(src).read_bytes())
    cmd = [sys.executable, "-m", "galaxy_finetune.inference.classify", str(inputs / "run1/models/finetuned"), str(folder),
           "-o", str(tmp_path / "out.csv"), "--accelerator", "cpu", "--devices", "2", "--batch-size", "3"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env=checkout_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = pd.read_csv(tmp_path / "out.csv")
    assert out["id_str"].tolist() == sorted(p.stem for p in folder.iterdir())
    single = tmp_path / "single.csv"
    monkeypatch.chdir(tmp_path)  # where the two-process run ran (no data/embeddings there)
    main(cmd[3:5] + ["-o", str(single), "--accelerator", "cpu"])  # one process: galaxy-classify in this one
    pd.testing.assert_frame_equal(out, pd.read_csv(single), atol=1e-5)
