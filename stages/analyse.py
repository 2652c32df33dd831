"""Stage analyse: predictions + embeddings -> metrics/ (metrics, plot data, anomalies), plots/*.png, reports/."""
import time
from pathlib import Path

from galaxy_finetune.analysis.analyse import analyse
from galaxy_finetune.analysis.common import Inputs, Outputs
from galaxy_finetune.core.cli import run_stage


def add_arguments(parser):
    parser.add_argument("predictions", type=Path, help="data/predictions/test.csv")
    parser.add_argument("raw_dir", type=Path, help="data/raw (manifest.json)")
    parser.add_argument("store_dir", type=Path, help="data/store (the galaxies' pixels)")
    parser.add_argument("model_dir", type=Path, help="models/finetuned (model.json)")
    parser.add_argument("live_dir", type=Path, help="metrics/training (dvclive's training curves)")
    parser.add_argument("embeddings", type=Path, help="data/embeddings (the embed stage)")
    parser.add_argument("--val-predictions", type=Path, default=Path("data/predictions/val.csv"),
                        help="fits the temperature and the purity thresholds")
    parser.add_argument("--timing", type=Path, default=None, help="data/predictions/timing.json (predict speed)")
    parser.add_argument("--metrics", type=Path, default=Path("metrics/metrics.json"))
    parser.add_argument("--residuals", type=Path, default=Path("metrics/residuals.json"))
    parser.add_argument("--coverage", type=Path, default=Path("metrics/coverage.csv"))
    parser.add_argument("--map", type=Path, default=Path("metrics/embedding_map.csv"))
    parser.add_argument("--anomalies", type=Path, default=Path("metrics/anomalies.csv"))
    parser.add_argument("--plots", type=Path, default=Path("plots"))
    parser.add_argument("--report", type=Path, default=Path("reports/summary.md"))
    parser.add_argument("--errors-page", type=Path, default=Path("reports/errors.html"))
    parser.add_argument("--label-budget", type=Path, default=None,
                        help="metrics/label_budget: labels that look wrong (errors page, metrics.json) and duplicates")


def main(args, params):
    start = time.perf_counter()
    inputs = Inputs(args.predictions, args.val_predictions, args.timing, args.raw_dir, args.store_dir, args.model_dir,
                    args.live_dir, args.embeddings, args.label_budget)
    out = Outputs(args.metrics, args.residuals, args.coverage, args.map, args.anomalies, args.plots, args.report,
                  args.errors_page)
    result = analyse(inputs, params.analyse, out)
    if result.get("task", "classification") != "classification":
        what = "per column" if result["task"] == "regression" else "per question"
        print(f"analyse: {result['task']}: MAE {result['mae']:.4f} vs {result['baseline_mae']:.4f} for the train mean, "
              f"RMSE {result['rmse']:.4f} vs {result['baseline_rmse']:.4f} (means {what}); "
              f"{time.perf_counter() - start:.1f} s")
        return
    top = list(result["top_confusions"].values())
    cal = result["calibration"]
    print(f"analyse: accuracy {result['accuracy']:.4f} [{result['accuracy_ci95_low']:.4f}, "
          f"{result['accuracy_ci95_high']:.4f}], macro F1 {result['macro_f1']:.4f}, ECE {result['ece']:.3f} "
          f"({cal['test']['ece_after']:.3f} at T = {cal['temperature']:.2f}); top confusion: "
          f"{top[0] if top else 'none'}; {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    run_stage(__doc__, add_arguments, main)
