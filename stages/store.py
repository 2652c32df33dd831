"""Stage store: decode every galaxy of data/raw/catalog.csv once -> data/store/images.npy (+ store.json)."""
from pathlib import Path

from galaxy_finetune.core.cli import run_stage
from galaxy_finetune.core.files import read_table
from galaxy_finetune.core.layout import CATALOG
from galaxy_finetune.data.store import build_store, stored_size


def add_arguments(parser):
    parser.add_argument("raw_dir", type=Path, help="data/raw (catalog.csv with each galaxy's source file)")
    parser.add_argument("store_out", type=Path, help="data/store")


def main(args, params):
    catalog = read_table(args.raw_dir / CATALOG)
    # auto: the largest input size of the recipes, so switching recipe or encoder never rebuilds the store
    input_size = params.largest_input_size()
    size = stored_size(params.store.image_size, input_size, catalog["src"].iloc[0], params.data.fits_view())
    record = build_store(catalog, args.store_out, size, params.store.threads, params.data.fits_view())
    print(f"store: {record['n_images']} galaxies decoded at {size} px into {args.store_out}")


if __name__ == "__main__":
    run_stage(__doc__, add_arguments, main)
