"""Stage predict: best model on the test and val splits -> data/predictions/{test,val}.csv + timing.json."""
from pathlib import Path

from galaxy_finetune.core.cli import run_stage
from galaxy_finetune.core.files import read_table
from galaxy_finetune.inference.predict import predict_splits


def add_arguments(parser):
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("store_dir", type=Path)
    parser.add_argument("splits_dir", type=Path)
    parser.add_argument("predictions_out", type=Path)
    parser.add_argument("--embeddings", type=Path, default=None,
                        help="data/embeddings: adds each galaxy's distance from the training set (inference/shift.py)")


def main(args, params):
    timing = predict_splits(args.model_dir, args.store_dir, args.splits_dir, args.predictions_out, ["test", "val"],
                            params.predict.batch_size, params.train.accelerator, embeddings_dir=args.embeddings)
    test = read_table(args.predictions_out / "test.csv")
    speed = f"{timing['test_images_per_s']} images/s on {timing['accelerator']}"
    if "true_label" not in test.columns:  # regression or votes: true_<col> / pred_<col> columns
        pairs = [(c, c.replace("pred_", "true_", 1)) for c in test.columns if c.startswith("pred_")]
        mae = sum((test[p] - test[t]).abs().mean() for p, t in pairs) / len(pairs)
        print(f"predict: test mean absolute error {mae:.4f} over {len(pairs)} columns on {len(test)} galaxies, {speed}")
        return
    print(f"predict: test accuracy {(test['true_label'] == test['pred_label']).mean():.4f} on {len(test)} galaxies, "
          f"{speed}")


if __name__ == "__main__":
    run_stage(__doc__, add_arguments, main)
