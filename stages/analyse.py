"""Stage analyse: predictions -> metrics/metrics.json, plots/*.png (with provenance)."""
from pathlib import Path

from galaxy_finetune.analyse import analyse
from galaxy_finetune.cli import run_stage


def add_arguments(parser):
    parser.add_argument("predictions", type=Path, help="data/predictions/test.csv")
    parser.add_argument("raw_dir", type=Path)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("metrics_out", type=Path)
    parser.add_argument("plots_dir", type=Path)


def main(args, params):
    result = analyse(args.predictions, args.raw_dir / "manifest.json", args.model_dir, params.analyse,
                     args.metrics_out, args.plots_dir)
    print(f"analyse: accuracy {result['accuracy']:.4f} [{result['accuracy_ci95_low']:.4f}, "
          f"{result['accuracy_ci95_high']:.4f}], macro F1 {result['macro_f1']:.4f}; "
          f"top confusions: {', '.join(result['top_confusions'][:2]) or 'none'}")


if __name__ == "__main__":
    run_stage(__doc__, add_arguments, main)
