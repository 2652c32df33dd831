"""Stage predict: best model on the test and val splits -> data/predictions/{test,val}.csv."""
from pathlib import Path

from galaxy_finetune.cli import run_stage
from galaxy_finetune.files import atomic_path, write_json
from galaxy_finetune.predict import predict_splits


def add_arguments(parser):
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("raw_dir", type=Path)
    parser.add_argument("splits_dir", type=Path)
    parser.add_argument("predictions_out", type=Path)


def main(args, params):
    tables, timing = predict_splits(args.model_dir, args.splits_dir, args.raw_dir, ["test", "val"],
                                    params.predict.batch_size, params.train.accelerator)
    with atomic_path(args.predictions_out) as tmp:
        tmp.mkdir()
        for name, table in tables.items():
            table.to_csv(tmp / f"{name}.csv", index=False, float_format="%.6f")
        write_json(tmp / "timing.json", timing)
    acc = (tables["test"]["true_label"] == tables["test"]["pred_label"]).mean()
    print(f"predict: test accuracy {acc:.4f} on {len(tables['test'])} galaxies, "
          f"{timing['test_images_per_s']} images/s on {timing['device']}")


if __name__ == "__main__":
    run_stage(__doc__, add_arguments, main)
