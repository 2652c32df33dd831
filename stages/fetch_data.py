"""Stage fetch_data: the galaxies' catalog -> data/raw/, the pretrained encoder -> models/encoder/ (only what changed)."""
from pathlib import Path

from galaxy_finetune.core.cli import run_stage
from galaxy_finetune.data.recheck import fetch_if_changed


def add_arguments(parser):
    parser.add_argument("raw_out", type=Path, help="canonical catalog + images + manifest (data/raw)")
    parser.add_argument("encoder_out", type=Path, help="resolved encoder weights (models/encoder)")


def main(args, params):
    manifest = fetch_if_changed(params, args.raw_out, args.encoder_out)
    classes = manifest["data"].get("classes_from_catalog")
    read = (f"; classes read from the catalog's labels (data.classes is empty): {classes}, label i = classes[i]"
            if classes else "")
    print(f"fetch_data: {manifest['run_label']}{read}")
    if manifest.get("n_unlabelled"):
        print(f"fetch_data: {manifest['n_unlabelled']:,} of {manifest['n_images']:,} galaxies are unlabelled (empty "
              f"label): kept for semi-supervised training (train.semi), never in val, test or a metric")


if __name__ == "__main__":
    run_stage(__doc__, add_arguments, main)
