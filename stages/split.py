"""Stage split: data/raw/catalog.csv -> stratified data/splits/{train,val,test}.csv (each row's store index)."""
from pathlib import Path

from galaxy_finetune.core.cli import run_stage
from galaxy_finetune.core.classes import read_classes
from galaxy_finetune.core.task import read_task
from galaxy_finetune.data.split import read_catalog, split_catalog, summary, write_splits


def add_arguments(parser):
    parser.add_argument("raw_dir", type=Path)
    parser.add_argument("splits_out", type=Path)


def main(args, params):
    catalog = read_catalog(args.raw_dir)
    p = params.split
    task = read_task(args.raw_dir)
    splits = split_catalog(catalog, p.val_fraction, p.test_fraction, p.seed, task)
    write_splits(splits, args.splits_out)
    print(summary(splits, read_classes(args.raw_dir) if task.kind == "classification" else [], task))


if __name__ == "__main__":
    run_stage(__doc__, add_arguments, main)
