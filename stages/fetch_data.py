"""Stage fetch_data: the galaxies' catalog -> data/raw/, the pretrained encoder -> models/encoder/ (only what changed)."""
from pathlib import Path

from galaxy_finetune.core.cli import run_stage
from galaxy_finetune.data.recheck import fetch_if_changed, said_unchanged, stage_lines


def add_arguments(parser):
    parser.add_argument("raw_out", type=Path, help="canonical catalog + images + manifest (data/raw)")
    parser.add_argument("encoder_out", type=Path, help="resolved encoder weights (models/encoder)")


def unchanged(args) -> bool:
    return said_unchanged(args.params, args.raw_out, args.encoder_out)


def main(args, params):
    print(stage_lines(fetch_if_changed(params, args.raw_out, args.encoder_out, args.params)))


if __name__ == "__main__":
    run_stage(__doc__, add_arguments, main, unchanged=unchanged)
