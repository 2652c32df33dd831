"""finetune_gpu: Zoobot's FinetuneableZoobotClassifier on the galaxies, driven by a Lightning Trainer."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import platform
import shutil
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from safetensors.torch import save_file

from galaxy_finetune.data import GalaxyDataModule, loader_workers
from galaxy_finetune.encoder import build_encoder, encoder_record
from galaxy_finetune.errors import PipelineError
from galaxy_finetune.files import atomic_path, read_json, write_json
from galaxy_finetune.layout import STORE_RECORD
from galaxy_finetune.params import AugmentParams, TrainParams
from galaxy_finetune.store import read_record

MONITOR = "finetuning/val_loss"  # logged by Zoobot's classifier every validation epoch
WEIGHTS, CONFIG = "model.safetensors", "model.json"
INTERRUPTED = "interrupted.ckpt"  # written by OnExceptionCheckpoint when a run is killed
STAMP = "fingerprint.json"  # what the checkpoints in the folder were trained from, and whether that run finished
# the code that shapes training: a change to it must never resume an older run's checkpoint
TRAINING_CODE = ("train.py", "data.py", "augment.py", "params.py", "encoder.py")


def build_classifier(encoder: torch.nn.Module, num_classes: int, train: TrainParams):
    """Zoobot's classifier around `encoder` (zoobot 2.9 API)."""
    from zoobot.pytorch.training.finetune import FinetuneableZoobotClassifier

    return FinetuneableZoobotClassifier(
        encoder=encoder, num_classes=num_classes, training_mode=train.training_mode,
        learning_rate=train.lr, layer_decay=train.layer_decay, weight_decay=train.weight_decay,
        head_dropout_prob=train.dropout, seed=train.seed)


def resolve_device(accelerator: str, precision: str) -> tuple[str, str]:
    """('gpu' | 'cpu', precision) for the Trainer; a GPU asked for but absent is an error."""
    has_gpu = torch.cuda.is_available()
    if accelerator == "gpu" and not has_gpu:
        raise PipelineError("train.accelerator: 'gpu' but no CUDA GPU is visible; use auto (falls back to CPU) or cpu")
    device = "gpu" if has_gpu and accelerator != "cpu" else "cpu"
    if precision == "auto":
        precision = "bf16-mixed" if device == "gpu" else "32"
    return device, precision


def device_name(device: str) -> str:
    if device == "gpu":
        return torch.cuda.get_device_name(0)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


class CpuEta(Callback):
    """On CPU, warn after the first steps how long the whole run will take at this pace."""

    def __init__(self, after_steps: int = 5):
        self.after_steps, self.start = after_steps, None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == 1 and self.start is None:  # skip step 0: it includes warm-up
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if self.start is None or trainer.global_step != 1 + self.after_steps:
            return
        per_step = (time.perf_counter() - self.start) / self.after_steps
        steps = trainer.num_training_batches * trainer.max_epochs
        eval_steps = sum(trainer.num_val_batches) * trainer.max_epochs if trainer.num_val_batches else 0
        eta_min = per_step * (steps + 0.4 * eval_steps) / 60  # an eval step costs ~0.4 of a train step
        warnings.warn(f"training on CPU: {per_step:.2f} s/step, about {eta_min:.0f} min for "
                      f"{trainer.max_epochs} epochs (less if early stopping triggers); a GPU is far faster",
                      stacklevel=1)


class SamplesSeen(Callback):
    """Training samples seen per epoch, summed over every process (so DDP's sharding can be checked)."""

    def __init__(self):
        self.per_epoch: list[int] = []
        self._count = 0

    def on_train_epoch_start(self, trainer, module):
        self._count = 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self._count += len(batch["label"])

    def on_train_epoch_end(self, trainer, module):
        total = trainer.strategy.reduce(torch.tensor(float(self._count), device=module.device), reduce_op="sum")
        self.per_epoch.append(int(total.item()))


def _files(root: Path) -> list[tuple[str, Path]]:
    root = Path(root)
    if root.is_file():
        return [(root.name, root)]
    return [(str(p.relative_to(root)), p) for p in sorted(root.rglob("*")) if p.is_file()]


def fingerprint(train: TrainParams, augment: AugmentParams, classes: list[str], *inputs: Path) -> str:
    """What a checkpoint was trained from: a run only resumes from checkpoints with the same fingerprint."""
    digest = hashlib.sha256(json.dumps([train.model_dump(exclude={"resume"}), augment.model_dump(), classes],
                                       sort_keys=True).encode())
    package = Path(__file__).parent
    for root in (*inputs, *(package / name for name in TRAINING_CODE)):
        for name, path in _files(root):
            digest.update(name.encode() + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def resume_checkpoint(checkpoint_dir: Path, stamp: str, resume: str, rank_zero: bool = True) -> Path | None:
    """The newest checkpoint of a killed run with the same inputs, else None.

    Rank zero then clears the folder of any other run's checkpoints and stamps it with `stamp`;
    other DDP ranks only read, so every rank reaches the same answer.
    """
    stamp_file = checkpoint_dir / STAMP
    candidates = [c for c in (checkpoint_dir / INTERRUPTED, checkpoint_dir / "last.ckpt") if c.is_file()]
    recorded = json.loads(stamp_file.read_text()) if stamp_file.is_file() else {}
    # a finished run is never resumed: a forced or repeated run trains afresh
    if resume == "auto" and candidates and recorded.get("fingerprint") == stamp and not recorded.get("complete"):
        return max(candidates, key=lambda c: c.stat().st_mtime)
    if rank_zero:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
        checkpoint_dir.mkdir(parents=True)
        write_json(stamp_file, {"fingerprint": stamp})
    return None


def finetune(train: TrainParams, augment: AugmentParams, run_label: str, classes: list[str],
             split_dir: Path, store_dir: Path, encoder_dir: Path, model_out: Path, live_dir: Path,
             checkpoint_dir: Path, workers: int | str = "auto") -> dict:
    """Fit (resuming a killed run when allowed), then export the best weights to `model_out`."""
    from dvclive.lightning import DVCLiveLogger
    from lightning.pytorch.callbacks import OnExceptionCheckpoint
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    device, precision = resolve_device(train.accelerator, train.precision)
    if device == "cpu" and train.accelerator == "auto":
        warnings.warn("no GPU found: training on CPU (train.accelerator: auto)", stacklevel=1)
    L.seed_everything(train.seed, workers=True, verbose=False)
    data = GalaxyDataModule(store_dir, split_dir, train.input_size, train.batch_size, augment,
                            loader_workers(workers, device))
    model = build_classifier(build_encoder(encoder_dir), len(classes), train)
    if device == "gpu":
        model = model.to(memory_format=torch.channels_last)
    stamp = fingerprint(train, augment, classes, split_dir, store_dir / STORE_RECORD, encoder_dir)
    # DDP workers (Lightning's launcher, torchrun, SLURM) run this script too, their rank set in the environment
    rank_zero = rank_zero_only.rank == 0 and os.environ.get("NODE_RANK", "0") == "0"
    ckpt_path = resume_checkpoint(checkpoint_dir, stamp, train.resume, rank_zero)
    if ckpt_path and rank_zero:
        print(f"finetune_gpu: resuming the killed run from {ckpt_path} (train.resume: auto, inputs unchanged)")
    seen = SamplesSeen()
    checkpoint = ModelCheckpoint(dirpath=checkpoint_dir, filename="best", monitor=MONITOR, mode="min",
                                 save_top_k=1, save_last=True)
    trainer = L.Trainer(
        max_epochs=train.epochs, accelerator=device, devices=train.devices, num_nodes=train.num_nodes,
        strategy=train.strategy, precision=precision,
        callbacks=[checkpoint, EarlyStopping(monitor=MONITOR, mode="min", patience=train.patience), CpuEta(), seen,
                   OnExceptionCheckpoint(checkpoint_dir, filename=INTERRUPTED.removesuffix(".ckpt"))],
        logger=DVCLiveLogger(dir=str(live_dir), save_dvc_exp=False, dvcyaml=None, resume=ckpt_path is not None),
        log_every_n_steps=5, deterministic=False, enable_model_summary=False)
    logging.getLogger("zoobot").setLevel(logging.WARNING)
    # with OnExceptionCheckpoint, Lightning reads ckpt_path=None as "last"; resume_checkpoint() has already
    # cleared other runs' checkpoints, so there is none to find and its warnings only add noise
    warnings.filterwarnings("ignore", message=r".*ckpt_path.*(without a model|no last checkpoint available)")
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    start = time.perf_counter()
    try:
        trainer.fit(model, datamodule=data, ckpt_path=ckpt_path, weights_only=True)  # never unpickle code
    except pickle.UnpicklingError as exc:
        raise PipelineError(f"{ckpt_path}: refused to load, it holds more than weights ({str(exc).splitlines()[0]}); "
                            f"delete it or set train.resume: never") from None
    except SIGTERMException:
        raise PipelineError(f"training stopped by SIGTERM; {checkpoint_dir / INTERRUPTED} saved, and the next "
                            f"`dvc repro` resumes from it (train.resume: auto)") from None
    wall = time.perf_counter() - start
    if trainer.interrupted:
        raise PipelineError("training was interrupted; outputs not written (rerun dvc repro)")
    if not trainer.is_global_zero:
        return {}

    best = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)
    model.load_state_dict(best["state_dict"])
    (checkpoint_dir / INTERRUPTED).unlink(missing_ok=True)
    write_json(checkpoint_dir / STAMP, {"fingerprint": stamp, "complete": True})
    n_train = len(data.dataset("train"))
    epochs_run = trainer.current_epoch
    run = {
        "run_label": run_label,
        "device": device_name(device),
        "accelerator": device,
        "precision": precision,
        "world_size": trainer.world_size,
        "wall_time_s": round(wall, 1),
        "resumed_from": str(ckpt_path) if ckpt_path else None,
        "epochs_run": epochs_run,
        "best_epoch": int(best["epoch"]),
        "best_val_loss": float(checkpoint.best_model_score),
        "train_images": n_train,
        "samples_per_epoch": seen.per_epoch,
        "train_images_per_s": round(sum(seen.per_epoch) / wall, 1),
        "params": train.model_dump(),
        "augment": augment.model_dump(),
        "versions": versions(),
    }
    encoder = encoder_record(encoder_dir)
    config = {"arch": encoder["arch"], "classes": classes, "input_size": train.input_size,
              "store_size": read_record(store_dir)["image_size"],
              "eval_zoom": augment.eval_zoom, "training_mode": train.training_mode, "dropout": train.dropout,
              "encoder": encoder, "run": run}
    with atomic_path(model_out) as tmp:
        tmp.mkdir()
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, tmp / WEIGHTS)
        write_json(tmp / CONFIG, config)
    return run


def versions() -> dict:
    import dvc
    import lightning
    import timm
    from importlib.metadata import version

    return {"python": platform.python_version(), "torch": torch.__version__, "lightning": lightning.__version__,
            "timm": timm.__version__, "zoobot": version("zoobot"), "dvc": dvc.__version__}


def load_finetuned(model_dir: str | Path):
    """The fine-tuned classifier and its config, from safetensors only (no pickle is ever loaded)."""
    import timm
    from safetensors.torch import load_file

    model_dir = Path(model_dir)
    config = read_config(model_dir)
    encoder = timm.create_model(config["arch"], pretrained=False, num_classes=0)
    train = TrainParams(training_mode=config["training_mode"], dropout=config["dropout"])
    model = build_classifier(encoder, len(config["classes"]), train)
    try:
        model.load_state_dict(load_file(model_dir / WEIGHTS))
    except Exception as exc:
        raise PipelineError(f"{model_dir / WEIGHTS}: cannot load ({type(exc).__name__}); rerun finetune_gpu") from None
    return model.eval(), config


def read_config(model_dir: Path) -> dict:
    path = Path(model_dir) / CONFIG
    if not path.is_file():
        raise PipelineError(f"{path}: not found; run the finetune_gpu stage first")
    return read_json(path)
