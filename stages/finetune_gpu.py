"""Stage finetune_gpu: fine-tune Zoobot on the train split (GPU when present) -> models/finetuned/.

The recipe follows the encoder and train.recipe: pretrained weights train with train.* (lpft: head first on
frozen features, then end to end) or writeup.*, a random init with scratch.* (galaxy_finetune.training.recipe).
"""
from pathlib import Path

from galaxy_finetune.core.cli import run_stage
from galaxy_finetune.training.train import FinetuneJob, run_finetune


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


def main(args, params):
    run_finetune(params, FinetuneJob(args.raw_dir, args.store_dir, args.splits_dir, args.encoder_dir, args.model_out,
                                     args.live_dir, args.checkpoints, args.recipe))


if __name__ == "__main__":
    run_stage(__doc__, add_arguments, main)
