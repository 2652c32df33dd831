"""Classify your own galaxies with a fine-tuned model: `galaxy-classify MODEL_DIR IMAGES -o predictions.csv`.

IMAGES is a folder of JPG/PNG/FITS files or a CSV/parquet catalog with a file_loc column (optional id_str).
Each image is decoded as the store decoded the training galaxies (same size), then goes through exactly
the training-time eval view, on the GPU when present. It streams: memory holds a batch, rows reach
`OUTPUT.parts/` batch by batch, and a killed run started again with the same arguments goes on where it
stopped; at the end the rows are merged into OUTPUT in input order. `--devices N` shares the images
among N GPUs (one part file each). A folder's files that are not images (.txt, .DS_Store) are ignored; an
image that cannot be decoded (empty, cut short) is skipped with a warning naming it, counted in the last line
and listed in OUTPUT_skipped.csv (id_str, file, reason). Exit status 0, also with skips; 1 when no image
could be decoded (or on any other error).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import pandas as pd

from galaxy_finetune.core.accelerator import loader_workers, resolve_accelerator
from galaxy_finetune.core.cli import run_command
from galaxy_finetune.core.errors import PipelineError
from galaxy_finetune.data.loading import ImageFiles
from galaxy_finetune.data.sources import IMAGE_SUFFIXES, catalog_ids, id_from_file, read_catalog_file
from galaxy_finetune.inference.predict import predict_to_csv
from galaxy_finetune.inference.shift import optional_scorer, warn_if_shifted
from galaxy_finetune.training.model_io import fits_view, load_finetuned


def galaxies_from(source: Path) -> pd.DataFrame:
    """id_str and absolute file path of each galaxy in a folder (sorted by name) or a catalog (its order)."""
    if source.is_dir():
        root = os.path.abspath(source)
        with os.scandir(root) as entries:  # a million files: one directory read, no per-file Path objects
            names = sorted(e.name for e in entries if e.name.lower().endswith(IMAGE_SUFFIXES) and e.is_file())
        if not names:
            raise PipelineError(f"{source}: no {'/'.join(IMAGE_SUFFIXES)} images in this folder")
        frame = pd.DataFrame({"id_str": [id_from_file(n) for n in names],
                              "file": [os.path.join(root, n) for n in names]})
    else:
        table, files = read_catalog_file(source, {"file_loc"}, "images")
        frame = pd.DataFrame({"id_str": catalog_ids(table, files), "file": files})
    dupes = frame["id_str"][frame["id_str"].duplicated()]
    if len(dupes):
        raise PipelineError(f"{source}: id {dupes.iloc[0]!r} appears {int((frame['id_str'] == dupes.iloc[0]).sum())} "
                            f"times (same name, different suffix?); ids must be unique")
    return frame


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="galaxy-classify", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path, help="a fine-tuned model folder (models/finetuned)")
    parser.add_argument("images", type=Path, help="folder of images, or CSV/parquet catalog with file_loc")
    parser.add_argument("-o", "--output", type=Path, default=Path("predictions.csv"))
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--accelerator", choices=["auto", "cpu", "gpu"], default="auto")
    parser.add_argument("--devices", default="1", help="GPUs (or CPU processes) to share the images: N or auto")
    parser.add_argument("--workers", default="auto", help="DataLoader workers decoding images: N or auto "
                        "(auto: 4 on a GPU, 1 on CPU)")
    parser.add_argument("--embeddings", type=Path, default=Path("data/embeddings"),
                        help="the embed stage's folder: each galaxy's distance from the training set (train_distance, "
                             "val_share_farther) and a warning when most are far (default data/embeddings)")
    run_command(lambda: classify(parser.parse_args(argv)),
                interrupted="the rows predicted so far are kept: rerun the same command to go on where it stopped")


def classify(args: argparse.Namespace) -> None:
    """galaxy-classify's work: the predictions CSV, and a line saying so."""
    model, config = load_finetuned(args.model_dir)
    frame = galaxies_from(args.images)
    device, _ = resolve_accelerator(args.accelerator, "auto")
    workers = loader_workers(args.workers if args.workers == "auto" else int(args.workers), device)
    workers = workers or (1 if args.workers == "auto" else 0)  # decoding files overlaps the forward pass
    # decoded as the store did; a damaged file is skipped, named in a warning and listed beside the output
    dataset = ImageFiles(frame["file"], config["store_size"], fits_view(config), skip_damaged=True)
    devices = args.devices if args.devices == "auto" else int(args.devices)
    scorer, why_not = optional_scorer(args.embeddings, args.model_dir)
    result = predict_to_csv(model, config, args.model_dir, dataset, frame, args.output,
                            Path(f"{args.output}.parts"), args.batch_size, args.accelerator, devices, workers,
                            extra=["file"], scorer=scorer)
    if not result:  # another DDP rank: rank zero reports
        return
    if scorer is not None:
        warn_if_shifted(args.output, scorer.reference)
    else:
        print(f"galaxy-classify: no distance from the training set ({why_not})")
    skipped = (f"; {result['skipped']} damaged image(s) skipped, listed in {result['skipped_list']}"
               if result["skipped"] else "")
    print(f"galaxy-classify: {result['galaxies']} galaxies -> {args.output} ({result['images_per_s']} images/s on "
          f"{result['accelerator']}{', ' + str(result['resumed']) + ' resumed from an earlier run' if result['resumed'] else ''})"
          f"{skipped}")


if __name__ == "__main__":
    main()
