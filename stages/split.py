"""Stage split: data/raw/catalog.csv -> stratified data/splits/{train,val,test}.csv."""
from pathlib import Path

import pandas as pd

from galaxy_finetune.cli import run_stage
from galaxy_finetune.files import atomic_path, read_json
from galaxy_finetune.split import split_catalog, summary


def add_arguments(parser):
    parser.add_argument("raw_dir", type=Path)
    parser.add_argument("splits_out", type=Path)


def main(args, params):
    catalog = pd.read_csv(args.raw_dir / "catalog.csv", dtype={"id_str": str}, keep_default_na=False)
    classes = read_json(args.raw_dir / "manifest.json")["classes"]
    p = params.split
    splits = split_catalog(catalog, p.val_fraction, p.test_fraction, p.seed)
    with atomic_path(args.splits_out) as tmp:
        tmp.mkdir()
        for name, frame in splits.items():
            frame.to_csv(tmp / f"{name}.csv", index=False)
    print(summary(splits, classes))


if __name__ == "__main__":
    run_stage(__doc__, add_arguments, main)
