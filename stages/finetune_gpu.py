"""Stage finetune_gpu: fine-tune Zoobot on the train split (GPU when present) -> models/finetuned/.

The recipe follows the encoder: pretrained weights train with train.*, a random init with scratch.*.
"""
import os
import sys
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_only

from galaxy_finetune.cli import run_stage
from galaxy_finetune.data import read_split
from galaxy_finetune.encoder import encoder_record
from galaxy_finetune.files import read_json, write_json
from galaxy_finetune.layout import MANIFEST
from galaxy_finetune.learning import Baseline, LearningCurve, RunContext
from galaxy_finetune.recipe import ignored_overrides, is_pretrained, locked_params, recipe_line, recipe_record
from galaxy_finetune.train import finetune


def add_arguments(parser):
    parser.add_argument("raw_dir", type=Path, help="data/raw (manifest.json: classes, what ran)")
    parser.add_argument("store_dir", type=Path, help="data/store (the decoded images)")
    parser.add_argument("splits_dir", type=Path)
    parser.add_argument("encoder_dir", type=Path)
    parser.add_argument("model_out", type=Path)
    parser.add_argument("--live-dir", type=Path, default=Path("metrics/training"), help="dvclive folder")
    parser.add_argument("--checkpoints", type=Path, default=Path("models/checkpoints"))
    parser.add_argument("--recipe", type=Path, default=Path("metrics/recipe.json"),
                        help="where the effective training values go (a DVC metric)")
    parser.add_argument("--lock", type=Path, default=Path("dvc.lock"),
                        help="the last run's params, to spot overrides of the unused recipe")


def main(args, params):
    manifest = read_json(args.raw_dir / MANIFEST)
    encoder = encoder_record(args.encoder_dir)
    pretrained = is_pretrained(encoder)
    name, train = params.recipe(pretrained)
    ignored = ignored_overrides(params, pretrained, locked_params(args.lock))
    if rank_zero_only.rank == 0 and os.environ.get("NODE_RANK", "0") == "0":  # DDP workers run this script too
        print(recipe_line(name, train, encoder))
        if ignored:
            print(f"warning: {ignored}", file=sys.stderr)
    classes = manifest["classes"]
    learning = LearningCurve(Baseline.from_labels(read_split(args.splits_dir, "val")["label"], len(classes)),
                             train.majority_margin,
                             RunContext(pretrained, name, train.lr, len(read_split(args.splits_dir, "train"))))
    run = finetune(train, params.augment, manifest["run_label"], name, classes, args.splits_dir, args.store_dir,
                   args.encoder_dir, args.model_out, args.live_dir, args.checkpoints, params.store.loader_workers,
                   learning)
    if not run:  # a DDP worker process: rank 0 reports and writes the outputs
        return
    write_json(args.recipe, recipe_record(name, train, encoder))
    if run["learning_warning"]:
        print(f"warning: {run['learning_warning']}", file=sys.stderr)
    print(f"finetune_gpu: {run['epochs_run']} epochs in {run['wall_time_s']} s on {run['device']}, "
          f"best val loss {run['best_val_loss']:.4f} (epoch {run['best_epoch']})")


if __name__ == "__main__":
    run_stage(__doc__, add_arguments, main)
