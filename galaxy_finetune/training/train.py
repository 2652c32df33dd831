"""finetune_gpu: Zoobot's FinetuneableZoobotClassifier on the galaxies, driven by a Lightning Trainer.

finetune() chooses the accelerator, builds the data and the classifier, resumes a killed run when its
inputs are unchanged, fits through the Trainer that build_trainer() makes, and exports the best
checkpoint with export_best() into the model files (galaxy_finetune.training.model_io).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import platform
import shutil
import signal
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only

from galaxy_finetune.core.accelerator import device_name, loader_workers, resolve_accelerator
from galaxy_finetune.core.code_deps import package_modules
from galaxy_finetune.core.errors import REQUEUE_STATUS, PipelineError, Requeue, restore_handlers
from galaxy_finetune.core.files import FULL_DISK, disk_full, hash_files, read_json, write_json
from galaxy_finetune.core.layout import (CHECKPOINT_BEST, CHECKPOINT_FINGERPRINT, CHECKPOINT_HPC,
                                         CHECKPOINT_INTERRUPTED, CHECKPOINT_LAST, MANIFEST, STORE_RECORD, TRAINING_TIMING)
from galaxy_finetune.core.params import AugmentParams, Params, TrainParams
from galaxy_finetune.core.task import Task, read_task
from galaxy_finetune.data.encoder import build_encoder, encoder_record
from galaxy_finetune.data.loading import GalaxyDataModule, labelled_part, pool_size, read_split
from galaxy_finetune.data.store import read_record
from galaxy_finetune.training.heads import head_for
from galaxy_finetune.training.learning import RunContext, VAL_LOSS
from galaxy_finetune.training.model_io import save_finetuned
from galaxy_finetune.training.probe import load_into_head
from galaxy_finetune.training.recipe import is_pretrained, recipe_line, recipe_record

STEP_VALIDATIONS = 20  # validations along a step budget (early stopping counts them)


class CpuEta(Callback):
    """On CPU, warn how long the whole run will take at this pace, timed after warm-up: over train steps
    `warmup`+1 .. `warmup`+`steps` of the run's first epoch (the first steps pay for start-up), then once more
    after that epoch, with its validation timed too, if the estimate moved by more than `revise` (a share)."""

    EVAL_COST = 0.4  # an eval step costs ~0.4 of a train step, until a validation has been timed

    def __init__(self, warmup: int = 5, steps: int = 10, revise: float = 0.25, clock=time.perf_counter):
        self.warmup, self.steps, self.revise, self.clock = warmup, steps, revise, clock
        self.train_ends: list[float] = []  # when each train step of the run's first epoch ended
        self.val_ends: list[float] = []    # when each batch of that epoch's validation ended
        self.active, self.epochs, self.said = False, 0, None  # said: the last estimate given, in minutes
        self.val_timed = False  # the first validation's batches are timed, not the later ones

    @staticmethod
    def pace(ends: list[float], skip: int = 0) -> float | None:
        """Mean seconds per step from the times steps ended: over the steps after the first `skip` + 1, whose
        times include start-up; None without two ends left."""
        ends = ends[skip:]
        return (ends[-1] - ends[0]) / (len(ends) - 1) if len(ends) >= 2 else None

    @staticmethod
    def minutes(train_pace: float, train_steps: int, epochs: int, val_steps: int = 0,
                val_pace: float | None = None) -> float:
        """Minutes for `epochs` epochs of `train_steps` train and `val_steps` validation steps."""
        val_pace = CpuEta.EVAL_COST * train_pace if val_pace is None else val_pace
        return (train_pace * train_steps + val_pace * val_steps) * epochs / 60

    def on_train_start(self, trainer, module):
        from lightning.pytorch.accelerators import CPUAccelerator

        self.active = isinstance(trainer.accelerator, CPUAccelerator) and trainer.is_global_zero
        self.epochs = trainer.max_epochs - trainer.current_epoch  # a resumed run trains the rest
        self.budget_steps = trainer.max_steps - trainer.global_step if trainer.max_steps > 0 else None

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if not self.active:
            return
        self.train_ends.append(self.clock())
        if len(self.train_ends) == self.warmup + self.steps + 1:
            self._say(trainer, self.pace(self.train_ends, self.warmup))

    def on_validation_batch_end(self, trainer, module, outputs, batch, batch_idx, dataloader_idx=0):
        if self.active and not trainer.sanity_checking and not self.val_timed:
            self.val_ends.append(self.clock())

    def on_validation_end(self, trainer, module):
        self.val_timed = self.val_timed or (bool(self.val_ends) and not trainer.sanity_checking)  # one is enough

    def on_train_epoch_end(self, trainer, module):
        """After the first epoch (its validation included): its steady pace, said if it is news."""
        if not self.active:
            return
        self.active = False  # once per run
        train_pace = self.pace(self.train_ends, min(self.warmup, len(self.train_ends) - 2))
        if train_pace is not None:
            self._say(trainer, train_pace, self.pace(self.val_ends))

    def _say(self, trainer, train_pace: float, val_pace: float | None = None) -> None:
        """Warn of the estimate unless one was given that is within `revise` of it."""
        val_steps = sum(trainer.num_val_batches)  # one validation
        if self.budget_steps is not None:  # a step budget: a validation every val_check_batch steps
            every = min(int(trainer.val_check_batch), self.budget_steps)
            steps, rounds, what = every, self.budget_steps / every, f"{self.budget_steps} steps"
        else:
            steps, rounds, what = trainer.num_training_batches, self.epochs, f"{self.epochs} epochs"
        estimate = self.minutes(train_pace, steps, rounds, val_steps, val_pace)
        before = self.said
        if before is not None and abs(estimate - before) <= self.revise * before:
            return
        self.said = estimate
        head = "training on CPU" + ("" if before is None else ", revised after the first epoch")
        note = "" if before is None else f"the first steps said {before:.0f} min; "
        warnings.warn(f"{head}: {train_pace:.2f} s/step, about {estimate:.0f} min for {what} ({note}less "
                      f"if early stopping triggers); a GPU is far faster", stacklevel=1)


class SamplesSeen(Callback):
    """Training samples seen per epoch, summed over every process (so DDP's sharding can be checked)."""

    def __init__(self):
        self.per_epoch: list[int] = []
        self._count = 0

    def on_train_epoch_start(self, trainer, module):
        self._count = 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self._count += len(labelled_part(batch)["image"])

    def on_train_epoch_end(self, trainer, module):
        total = trainer.strategy.reduce(torch.tensor(float(self._count), device=module.device), reduce_op="sum")
        self.per_epoch.append(int(total.item()))


def training_code() -> list[Path]:
    """The package modules that shape training (this module and all it imports): a change to any of them
    must never resume an older run's checkpoint."""
    return package_modules(__file__)


def fingerprint(train: TrainParams, augment: AugmentParams, classes: list[str], *inputs: Path) -> str:
    """What a checkpoint was trained from: a run only resumes from checkpoints with the same fingerprint."""
    digest = hashlib.sha256(json.dumps([train.model_dump(exclude={"resume"}), augment.model_dump(), classes],
                                       sort_keys=True).encode())
    return hash_files(digest, *inputs, *training_code()).hexdigest()


def resume_checkpoint(checkpoint_dir: Path, fingerprint: str, resume: str, rank_zero: bool = True) -> Path | None:
    """The newest checkpoint of a killed run with the same inputs, else None.

    Rank zero then clears the folder of any other run's checkpoints and records `fingerprint` in it;
    other DDP ranks only read, so every rank reaches the same answer.
    """
    record_file = checkpoint_dir / CHECKPOINT_FINGERPRINT
    # a killed run's checkpoint, the last epoch's, and those Lightning's SLURM support saved on SIGUSR1
    candidates = [c for c in (checkpoint_dir / CHECKPOINT_INTERRUPTED, checkpoint_dir / CHECKPOINT_LAST)
                  if c.is_file()] + sorted(checkpoint_dir.glob(CHECKPOINT_HPC))
    recorded = json.loads(record_file.read_text()) if record_file.is_file() else {}
    # a finished run is never resumed: a forced or repeated run trains afresh
    if (resume == "auto" and candidates and recorded.get("fingerprint") == fingerprint
            and not recorded.get("complete")):
        return max(candidates, key=lambda c: c.stat().st_mtime)
    if rank_zero:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
        checkpoint_dir.mkdir(parents=True)
        write_json(record_file, {"fingerprint": fingerprint})
    return None


def build_trainer(checkpoint_dir: Path, live_dir: Path | None = None, *, max_epochs: int = -1, patience: int,
                  accelerator: str = "cpu", precision: str = "32", devices: int | str = 1, num_nodes: int = 1,
                  strategy: str = "auto", resumed: bool = False, monitor: str = VAL_LOSS, callbacks=(),
                  **trainer_kwargs) -> L.Trainer:
    """The Trainer of a fine-tuning run (in the spirit of zoobot's get_trainer): keeps the best and the last
    checkpoint in `checkpoint_dir`, stops early on `monitor`, checkpoints a killed run, counts the samples
    seen, warns of a slow CPU run, and logs to dvclive in `live_dir` (no logger when None: dvclive is then
    not even imported, so the GPU check runs where it is not installed). Its default_root_dir is `checkpoint_dir`,
    so that under SLURM the checkpoint Lightning saves on SIGUSR1 before it requeues the job (hpc_ckpt_N.ckpt)
    lands beside the others, where resume_checkpoint() finds it."""
    from lightning.pytorch.callbacks import OnExceptionCheckpoint

    callbacks = [
        *callbacks,
        ModelCheckpoint(dirpath=checkpoint_dir, filename=CHECKPOINT_BEST.removesuffix(".ckpt"), monitor=monitor,
                        mode="min", save_top_k=1, save_last=True),
        EarlyStopping(monitor=monitor, mode="min", patience=patience),
        *([CpuEta()] if accelerator == "cpu" else []), SamplesSeen(),  # its warning says "training on CPU"
        OnExceptionCheckpoint(checkpoint_dir, filename=CHECKPOINT_INTERRUPTED.removesuffix(".ckpt")),
    ]
    logger = False
    if live_dir is not None:
        from dvclive.lightning import DVCLiveLogger

        logger = DVCLiveLogger(dir=str(live_dir), save_dvc_exp=False, dvcyaml=None, resume=resumed)
    options = dict(log_every_n_steps=5, deterministic=False, enable_model_summary=False,
                   default_root_dir=checkpoint_dir) | trainer_kwargs
    return L.Trainer(max_epochs=max_epochs, accelerator=accelerator, devices=devices, num_nodes=num_nodes,
                     strategy=strategy, precision=precision, callbacks=callbacks, logger=logger, **options)


def checkpoint_size(model: torch.nn.Module) -> int:
    """About what one checkpoint of `model` takes on disk: its weights and, as much again and twice, the
    optimiser's two moments (AdamW)."""
    return 3 * sum(t.numel() * t.element_size() for t in model.state_dict().values())


def fit(trainer: L.Trainer, model, data, ckpt_path: Path | None, checkpoint_dir: Path) -> float:
    """trainer.fit, resuming from `ckpt_path` (weights only, never unpickled code); returns the wall seconds."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    start = time.perf_counter()
    with warnings.catch_warnings():
        # with OnExceptionCheckpoint, Lightning reads ckpt_path=None as "last"; resume_checkpoint() has already
        # cleared other runs' checkpoints, so there is none to find and its warnings only add noise
        warnings.filterwarnings("ignore", message=r".*ckpt_path.*(without a model|no last checkpoint available)")
        warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
        # Lightning restores the signal handlers it installs in its teardown, which an exception raised while
        # saving the exception checkpoint (a full disk) skips: restore them here whatever happens
        handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
        try:
            trainer.fit(model, datamodule=data, ckpt_path=ckpt_path, weights_only=True)
        except pickle.UnpicklingError as exc:
            raise PipelineError(f"{ckpt_path}: refused to load, it holds more than weights "
                                f"({str(exc).splitlines()[0]}); delete it or set train.resume: never") from None
        except SIGTERMException:  # a scheduler's preemption or time limit: exit status "requeue me", not failure
            raise Requeue(f"stopped by SIGTERM: {checkpoint_dir / CHECKPOINT_INTERRUPTED} saved, and the next "
                          f"`dvc repro` (or the same command) resumes from it (train.resume: auto; exit status "
                          f"{REQUEUE_STATUS}: requeue)") from None
        except OSError as exc:
            if exc.errno not in FULL_DISK:
                raise
            raise disk_full(checkpoint_dir, checkpoint_size(model),
                            "the checkpoints already written are kept; free space, then rerun to resume") from None
        finally:
            restore_handlers(handlers)
    if trainer.interrupted:
        raise PipelineError("training was interrupted; outputs not written (rerun dvc repro)")
    return time.perf_counter() - start


@dataclass(frozen=True)
class FinetuneJob:
    """What one fine-tuning run reads (the first three stages' outputs) and writes."""
    raw_dir: Path  # manifest.json: the classes and the run label
    store_dir: Path
    split_dir: Path
    encoder_dir: Path
    model_out: Path
    live_dir: Path | None  # dvclive's folder (None: no logger)
    checkpoint_dir: Path
    recipe_out: Path | None = None  # metrics/recipe.json


def run_finetune(params: Params, job: FinetuneJob) -> dict:
    """The finetune_gpu stage: pick the recipe from the encoder, say which, train, write the outputs.

    Returns the run's record ({} in DDP processes other than rank zero, which writes everything)."""
    manifest = read_json(job.raw_dir / MANIFEST)
    encoder = encoder_record(job.encoder_dir)
    name, train = params.recipe(is_pretrained(encoder))
    if _rank_zero():
        print(recipe_line(name, train, encoder), flush=True)
    run = finetune(train, params.augment, name, manifest, job, params.store.loader_workers)
    if not run:
        return run
    if job.recipe_out is not None:
        write_json(job.recipe_out, recipe_record(name, train, encoder, run.get("semi")))
    if run["learning_warning"]:
        print(f"warning: {run['learning_warning']}", file=sys.stderr)
    print(final_line(run))
    return run


def final_line(run: dict) -> str:
    """The stage's last line: steps, time, best val loss and, per task, what it compares with."""
    probe = run["linear_probe"]
    kept = (" (no better than the linear probe on val loss: the probe's head on the pretrained encoder is kept)"
            if run["kept"] == "linear_probe" else "")
    head = (f"finetune_gpu: {run['steps_run']} steps ({run['epochs_run']} epochs) in {run['wall_time_s']} s on "
            f"{run['device']}, best val loss {run['best_val_loss']:.4f} at step {run['best_step']}")
    task = run.get("task", "classification")
    if task == "classification":
        return (f"{head}, val accuracy {run['val_accuracy']:.1%} vs the linear probe's "
                f"{probe['val_accuracy']:.1%}{kept}")
    if task == "regression":
        rmse = "n/a" if run["val_rmse"] is None else f"{run['val_rmse']:.4f}"
        return (f"{head} (regression), val RMSE {rmse} vs {run['baseline_val_rmse']:.4f} for the train mean and "
                f"{probe['val_rmse']:.4f} for the linear (ridge) probe{kept}")
    return f"{head} (votes: Dirichlet-multinomial loss, the first validation's {run['first_val_loss']:.4f})"


def _rank_zero() -> bool:
    # DDP workers (Lightning's launcher, torchrun, SLURM) run the stage too, their rank set in the environment
    return rank_zero_only.rank == 0 and os.environ.get("NODE_RANK", "0") == "0"


def semi_line(semi: dict, train: TrainParams) -> str:
    """What the unlabelled pool adds to each step, for a user who plans the run's cost."""
    draws = train.batch_size * semi["ratio"]
    return (f"finetune_gpu: semi-supervised ({semi['method']}, threshold {semi['threshold']}, weight "
            f"{semi['weight']}): each step also draws {draws} of the {semi['pool']:,} unlabelled galaxies "
            f"(data/splits/unlabelled.csv) at random and sees each in two views, about {1 + 2 * semi['ratio']}x "
            f"a labelled step's images (the ETA below counts them)")


def training_budget(train: TrainParams, n_train: int) -> dict:
    """The Trainer's stopping and validation settings: a step budget (train.steps, validated STEP_VALIDATIONS
    times along the way) or, with steps 0, train.epochs (validated every epoch); `schedule_steps` is the
    length of the cosine schedule."""
    if train.steps:
        every = max(1, train.steps // STEP_VALIDATIONS)
        # max_steps ends the run; max_epochs only bounds it from above (one process takes the most epochs)
        epochs = math.ceil(train.steps / math.ceil(n_train / train.batch_size))
        return {"max_steps": train.steps, "max_epochs": epochs, "val_check_interval": every,
                "check_val_every_n_epoch": None, "schedule_steps": train.steps}
    per_epoch = math.ceil(n_train / train.batch_size)
    return {"max_epochs": train.epochs, "schedule_steps": train.epochs * per_epoch}


def finetune(train: TrainParams, augment: AugmentParams, recipe: str, manifest: dict, job: FinetuneJob,
             workers: int | str = "auto", callbacks=()) -> dict:
    """Fit (resuming a killed run when allowed), then export the best weights to job.model_out; the run's record.

    The task's head (training/heads.py) fits the linear probe of the frozen encoder first: it is the yardstick
    reported beside the fine-tuned model, and with train.head_init linear_probe the head's starting weights.
    Then the best checkpoint on val loss is exported, or the probe's head on the untouched encoder when
    fine-tuning never beat the probe's val loss. `recipe`: the params group the values came from (Params.recipe);
    `callbacks` are added to the Trainer's (benchmarks time epochs with one); job.live_dir None logs nothing.

    Returns {} in DDP processes other than rank zero (rank zero exports)."""
    task = read_task(job.raw_dir)
    head = head_for(task)
    accelerator, precision = resolve_accelerator(train.accelerator, train.precision)
    if accelerator == "cpu" and train.accelerator == "auto":
        warnings.warn("no GPU found: training on CPU (train.accelerator: auto)", stacklevel=1)
    L.seed_everything(train.seed, workers=True, verbose=False)
    encoder_info = encoder_record(job.encoder_dir)
    semi = head.semi(train, pool_size(job.split_dir))  # None: labels alone
    data = GalaxyDataModule(job.store_dir, job.split_dir, train.input_size, train.batch_size, augment,
                            loader_workers(workers, accelerator), encoder_info.get("normalisation"), task,
                            pool_ratio=train.semi_ratio if semi else 0)
    n_train = len(data.dataset("train"))
    if semi:
        labels = data.dataset("train").labels.numpy()
        semi["prior"] = (np.bincount(labels, minlength=len(task.classes)) / len(labels)).tolist()
        if _rank_zero():
            print(semi_line(semi, train), flush=True)
    pretrained = encoder_info["source"] != "random"
    if _rank_zero():
        head.warnings(n_train, pretrained, manifest.get("source") == "synthetic")
    budget = training_budget(train, n_train)
    encoder = build_encoder(job.encoder_dir, encoder_info)
    head.fit_data(data)
    probe = head.probe(encoder, data, train, accelerator)
    model = head.build(encoder, train, budget.pop("schedule_steps"), semi)
    probe_weights = None
    if train.head_init == "linear_probe" and probe is not None:
        load_into_head(model.head.linear, probe)
        probe_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if accelerator == "gpu":
        model = model.to(memory_format=torch.channels_last)
    inputs_fingerprint = fingerprint(train, augment, task.record(), job.split_dir, job.store_dir / STORE_RECORD,
                                     job.encoder_dir)
    rank_zero = _rank_zero()
    ckpt_path = resume_checkpoint(job.checkpoint_dir, inputs_fingerprint, train.resume, rank_zero)
    if ckpt_path and rank_zero:
        print(f"finetune_gpu: resuming the killed run from {ckpt_path} (train.resume: auto, inputs unchanged)")
    curve = head.curve(data, train, RunContext(pretrained, recipe, train.lr, n_train))
    extra = head.callbacks(n_train)
    trainer = build_trainer(job.checkpoint_dir, job.live_dir, patience=train.patience, accelerator=accelerator,
                            precision=precision, devices=train.devices, num_nodes=train.num_nodes,
                            strategy=train.strategy, resumed=ckpt_path is not None,
                            callbacks=[*callbacks, curve, *extra], **budget)
    wall = fit(trainer, model, data, ckpt_path, job.checkpoint_dir)
    if not trainer.is_global_zero:
        return {}
    seen = next(c for c in trainer.callbacks if isinstance(c, SamplesSeen))
    best_loss = float(trainer.checkpoint_callback.best_model_score)
    keep_probe = probe_weights is not None and probe.val_loss <= best_loss
    run = {
        "run_label": manifest["run_label"],
        "recipe": recipe,
        "learning_warning": curve.warning,
        "device": device_name(accelerator),
        "accelerator": accelerator,
        "precision": precision,
        "world_size": trainer.world_size,
        "resumed_from": str(ckpt_path) if ckpt_path else None,
        "epochs_run": trainer.current_epoch,
        "steps_run": trainer.global_step,
        "linear_probe": probe.record() if probe is not None else None,
        "semi": {**model.semi_record(), "pool": semi["pool"]} if semi else {"method": "none"},
        "val_curve": curve.state_dict(),  # val accuracy (val RMSE) and loss at every validation
        "kept": "linear_probe" if keep_probe else "fine_tuned",
        "best_val_loss": probe.val_loss if keep_probe else best_loss,
        **head.scores(probe, curve, keep_probe),
        "train_images": n_train,
        "samples_per_epoch": seen.per_epoch,
        "params": train.model_dump(),
        "augment": augment.model_dump(),
        "versions": versions(),
    }
    config = model_config(encoder_info, read_record(job.store_dir), train, augment, run, task, head.config())
    tables = head.tables(extra, read_split(job.split_dir, "train"))
    if keep_probe:
        model.load_state_dict(probe_weights)
        run.update(best_epoch=0, best_step=0)
        save_finetuned(job.model_out, model, config, tables)
    else:
        export_best(model, trainer.checkpoint_callback.best_model_path, job.model_out, config, tables)
    (job.checkpoint_dir / CHECKPOINT_INTERRUPTED).unlink(missing_ok=True)
    write_json(job.checkpoint_dir / CHECKPOINT_FINGERPRINT, {"fingerprint": inputs_fingerprint, "complete": True})
    timing = {"wall_time_s": round(wall, 1), "train_images_per_s": round(sum(seen.per_epoch) / wall, 1)}
    if job.live_dir is not None:
        write_json(job.live_dir / TRAINING_TIMING, timing)
    return {**run, **timing}


def model_config(encoder: dict, store: dict, train: TrainParams, augment: AugmentParams, run: dict,
                 task: Task, head_config: dict | None = None) -> dict:
    """What model.json records: how to rebuild the model (its task and `head_config`, Head.config()) and view its
    inputs exactly as training did (the store's decode: its size and FITS view; then the eval view: zoom, input
    size, the encoder's normalisation), and where it came from; `encoder`: the encoder's record (encoder.json)."""
    return {"arch": encoder["arch"], "classes": list(task.classes), "input_size": train.input_size,
            "store_size": store["image_size"], "fits_view": store.get("fits_view"), "eval_zoom": augment.eval_zoom,
            "normalisation": encoder.get("normalisation"), "training_mode": train.training_mode,
            "dropout": train.dropout, "encoder": encoder, "run": run, "task": task.record(), **(head_config or {})}


def export_best(model, best_checkpoint: str | Path, model_out: Path, config: dict, tables: dict | None = None) -> int:
    """Load the best checkpoint's weights into `model` and write the model files (and `tables`, save_finetuned's);
    returns the best epoch.

    config["run"]["best_epoch"] and ["best_step"] are filled in from the checkpoint."""
    best = torch.load(best_checkpoint, map_location="cpu", weights_only=True)
    model.load_state_dict(best["state_dict"])
    config["run"]["best_epoch"] = int(best["epoch"])
    config["run"]["best_step"] = int(best["global_step"])
    save_finetuned(model_out, model, config, tables)
    return int(best["epoch"])


def versions() -> dict:
    """The versions that shaped the run; dvc's is read from its metadata (None where it is not installed, as on
    the GPU check's box), so recording it never imports dvc."""
    import lightning
    import timm
    from importlib.metadata import PackageNotFoundError, version

    try:
        dvc_version = version("dvc")
    except PackageNotFoundError:
        dvc_version = None
    return {"python": platform.python_version(), "torch": torch.__version__, "lightning": lightning.__version__,
            "timm": timm.__version__, "zoobot": version("zoobot"), "dvc": dvc_version}
