"""Stage analyse: test predictions -> metrics/metrics.json, metrics/residuals.json, plots/*.png, reports/summary.md."""
import time
from pathlib import Path

from galaxy_finetune.analyse import Outputs, analyse
from galaxy_finetune.cli import run_stage


def add_arguments(parser):
    parser.add_argument("predictions", type=Path, help="data/predictions/test.csv")
    parser.add_argument("raw_dir", type=Path, help="data/raw (manifest.json, catalog.csv, images/)")
    parser.add_argument("model_dir", type=Path, help="models/finetuned (model.json)")
    parser.add_argument("live_dir", type=Path, help="metrics/training (dvclive's training curves)")
    parser.add_argument("--store", type=Path, default=Path("data/store"), help="data/store (galaxy images)")
    parser.add_argument("--metrics", type=Path, default=Path("metrics/metrics.json"))
    parser.add_argument("--residuals", type=Path, default=Path("metrics/residuals.json"))
    parser.add_argument("--plots", type=Path, default=Path("plots"))
    parser.add_argument("--report", type=Path, default=Path("reports/summary.md"))


def main(args, params):
    start = time.perf_counter()
    result = analyse(args.predictions, args.raw_dir, args.model_dir, args.live_dir, params.analyse,
                     Outputs(args.metrics, args.residuals, args.plots, args.report), args.store)
    top = list(result["top_confusions"].values())
    print(f"analyse: accuracy {result['accuracy']:.4f} [{result['accuracy_ci95_low']:.4f}, "
          f"{result['accuracy_ci95_high']:.4f}], macro F1 {result['macro_f1']:.4f}, ECE {result['ece']:.3f}; "
          f"top confusion: {top[0] if top else 'none'}; {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    run_stage(__doc__, add_arguments, main)
