"""Stage label_budget: the labelled galaxies, the fine-tuned model's predictions and training dynamics ->
metrics/label_budget/ (labels that look wrong, near duplicates, the probe's learning curve and acquisition)."""
from pathlib import Path

from galaxy_finetune.core.cli import run_stage
from galaxy_finetune.labels.budget import run_label_budget, summary_line


def add_arguments(parser):
    parser.add_argument("raw_dir", type=Path, help="data/raw (the task and the classes)")
    parser.add_argument("store_dir", type=Path, help="data/store")
    parser.add_argument("splits_dir", type=Path, help="data/splits")
    parser.add_argument("encoder_dir", type=Path, help="models/encoder (the starting encoder)")
    parser.add_argument("model_dir", type=Path, help="models/finetuned (its eval view and training dynamics)")
    parser.add_argument("predictions_dir", type=Path, help="data/predictions (the fine-tuned model on val and test)")
    parser.add_argument("out_dir", type=Path, help="metrics/label_budget")


def main(args, params):
    print(summary_line(run_label_budget(args.raw_dir, args.store_dir, args.splits_dir, args.encoder_dir,
                                        args.model_dir, args.predictions_dir, args.out_dir, params)))


if __name__ == "__main__":
    run_stage(__doc__, add_arguments, main)
