"""Classify your own galaxies with a fine-tuned model: `galaxy-classify MODEL_DIR IMAGES -o predictions.csv`.

IMAGES is a folder of JPG/PNG/FITS files or a CSV/parquet catalog with a file_loc column (optional id_str).
Each image is decoded as the store decoded the training galaxies (same size), then goes through exactly
the training-time eval view, on the GPU when present. It streams: memory holds a batch, rows reach
`OUTPUT.parts/` batch by batch, and a killed run started again with the same arguments goes on where it
stopped; at the end the rows are merged into OUTPUT in input order: CSV, or Parquet when OUTPUT ends in
.parquet (same columns). `--devices N` shares the images among N GPUs; across nodes, start it on every node
with torchrun (`torchrun --nnodes N --node-rank R ... $(which galaxy-classify) ... --num-nodes N --devices G`)
or srun: each rank predicts its share of blocks of input rows, rank zero merges. `--embeddings-out F.npy`
also writes each galaxy's float16 PCA features (the embed stage's PCA), in OUTPUT's order, for galaxy-similar
--survey. A folder's files that are not images (.txt, .DS_Store) are ignored; an image that cannot be decoded
(empty, cut short) is skipped with a warning naming it, counted in the last line and listed in
OUTPUT_skipped.csv (id_str, file, reason). Exit status 0, also with skips; 1 when no image could be decoded
(or on any other error); 75 when SIGTERM or SIGUSR1 stopped it after the batch in flight, every finished row
kept: rerun (requeue) the same command to go on.
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
from galaxy_finetune.inference.predict import check_writable, predict_to_file
from galaxy_finetune.inference.shift import optional_scorer, shift_scorer, warn_if_shifted
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
    parser.add_argument("-o", "--output", type=Path, default=Path("predictions.csv"),
                        help="CSV, or Parquet when it ends in .parquet (default predictions.csv)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--accelerator", choices=["auto", "cpu", "gpu"], default="auto")
    parser.add_argument("--devices", default="1", help="GPUs (or CPU processes) per node to share the images: N or auto")
    parser.add_argument("--num-nodes", type=int, default=1, help="nodes of a torchrun or srun job (default 1)")
    parser.add_argument("--workers", default="auto", help="DataLoader workers decoding images: N or auto "
                        "(auto: 4 on a GPU, 1 on CPU)")
    parser.add_argument("--embeddings", type=Path, default=Path("data/embeddings"),
                        help="the embed stage's folder: each galaxy's distance from the training set (train_distance, "
                             "val_share_farther) and a warning when most are far (default data/embeddings)")
    parser.add_argument("--embeddings-out", type=Path, default=None,
                        help="also write each galaxy's float16 PCA features (the PCA of --embeddings) to this .npy, "
                             "row i = row i of OUTPUT, for galaxy-similar --survey")
    run_command(lambda: classify(parser.parse_args(argv)),
                interrupted="the rows predicted so far are kept: rerun the same command to go on where it stopped")


def classify(args: argparse.Namespace) -> None:
    """galaxy-classify's work: the predictions CSV, and a line saying so."""
    if args.embeddings_out is not None and args.embeddings_out.suffix != ".npy":
        raise PipelineError(f"--embeddings-out {args.embeddings_out}: name a .npy file")
    check_writable(args.output, Path(f"{args.output}.parts") / "run.json", args.embeddings_out)  # before any GPU time
    model, config = load_finetuned(args.model_dir)
    frame = galaxies_from(args.images)
    device, _ = resolve_accelerator(args.accelerator, "auto")
    workers = loader_workers(args.workers if args.workers == "auto" else int(args.workers), device)
    workers = workers or (1 if args.workers == "auto" else 0)  # decoding files overlaps the forward pass
    # decoded as the store did; a damaged file is skipped, named in a warning and listed beside the output
    dataset = ImageFiles(frame["file"], config["store_size"], fits_view(config), skip_damaged=True)
    devices = args.devices if args.devices == "auto" else int(args.devices)
    if args.embeddings_out is not None:  # the PCA features need this model's embed stage
        scorer, why_not = shift_scorer(args.embeddings, args.model_dir), None
    else:
        scorer, why_not = optional_scorer(args.embeddings, args.model_dir)
    pca = (scorer.reference.pca_mean, scorer.reference.pca_components) if args.embeddings_out is not None else None
    result = predict_to_file(model, config, args.model_dir, dataset, frame, args.output,
                             Path(f"{args.output}.parts"), args.batch_size, args.accelerator, devices, workers,
                             extra=["file"], scorer=scorer, num_nodes=args.num_nodes,
                             embeddings_out=args.embeddings_out, pca=pca)
    if not result:  # another DDP rank: rank zero reports
        return
    if scorer is not None:
        warn_if_shifted(args.output, scorer.reference)
    else:
        print(f"galaxy-classify: no distance from the training set ({why_not})")
    skipped = (f"; {result['skipped']} damaged image(s) skipped, listed in {result['skipped_list']}"
               if result["skipped"] else "")
    print(f"galaxy-classify: {result['galaxies']} galaxies -> {args.output} ({result['images_per_s']} images/s on "
          f"{result['accelerator']}{' x ' + str(result['world_size']) + ' processes' if result['world_size'] > 1 else ''}"
          f"{', ' + str(result['resumed']) + ' resumed from an earlier run' if result['resumed'] else ''})"
          f"{skipped}{'; PCA features -> ' + str(args.embeddings_out) if args.embeddings_out else ''}")


if __name__ == "__main__":
    main()
