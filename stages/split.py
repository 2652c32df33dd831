"""Stage split: data/raw/catalog.csv -> stratified data/splits/{train,val,test}.csv (each row's store index).

Galaxies with identical pixels in the store (data/store/row_hashes.npy) are kept in one split, reported in one
warning line and listed in data/splits/duplicates.csv.
"""
import warnings
from pathlib import Path

from galaxy_finetune.core.cli import run_stage
from galaxy_finetune.core.layout import SPLIT_DUPLICATES
from galaxy_finetune.core.task import read_task
from galaxy_finetune.data.duplicates import exact_groups, exact_warning, pairs_frame
from galaxy_finetune.data.split import read_catalog, split_catalog, summary, write_splits
from galaxy_finetune.data.store import read_row_hashes


def add_arguments(parser):
    parser.add_argument("raw_dir", type=Path)
    parser.add_argument("splits_out", type=Path)
    parser.add_argument("--store", type=Path, default=None, help="data/store (row_hashes.npy: identical images)")


def main(args, params):
    catalog = read_catalog(args.raw_dir)
    hashes = read_row_hashes(args.store) if args.store else None
    groups = exact_groups(hashes) if hashes is not None and len(hashes) == len(catalog) else None
    p = params.split
    task = read_task(args.raw_dir)
    splits = split_catalog(catalog, p.val_fraction, p.test_fraction, p.seed, task, groups, p.train_per_class)
    where = {int(r): name for name, frame in splits.items() for r in frame["row"]}
    pairs = pairs_frame(catalog, groups if groups is not None else catalog["row"].to_numpy(), where)
    write_splits(splits, args.splits_out, {SPLIT_DUPLICATES: pairs})
    line = exact_warning(pairs, args.splits_out / SPLIT_DUPLICATES)
    if line:
        warnings.warn(line)
    print(summary(splits, task))


if __name__ == "__main__":
    run_stage(__doc__, add_arguments, main)
