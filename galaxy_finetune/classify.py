"""Classify your own galaxies with a fine-tuned model: `galaxy-classify MODEL_DIR IMAGES -o predictions.csv`.

IMAGES is a folder of JPG/PNG files or a CSV/parquet catalog with a file_loc column (optional id_str).
The images go through exactly the training-time eval view (decode, central zoom, resize to the model's
input size), on the GPU when present.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from galaxy_finetune.errors import PipelineError
from galaxy_finetune.files import write_csv
from galaxy_finetune.model_io import load_finetuned
from galaxy_finetune.predict import predict_frames
from galaxy_finetune.sources import read_catalog_file

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def galaxies_from(source: Path) -> pd.DataFrame:
    """id_str and absolute file paths of the galaxies in a folder or a catalog."""
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise PipelineError(f"{source}: no .jpg/.jpeg/.png images in this folder")
        return pd.DataFrame({"id_str": [p.stem for p in files], "file": [str(p.resolve()) for p in files]})
    frame, files = read_catalog_file(source, {"file_loc"}, "images")
    ids = frame["id_str"].astype(str) if "id_str" in frame.columns else [p.stem for p in files]
    return pd.DataFrame({"id_str": list(ids), "file": [str(p.resolve()) for p in files]})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="galaxy-classify", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path, help="a fine-tuned model folder (models/finetuned)")
    parser.add_argument("images", type=Path, help="folder of images, or CSV/parquet catalog with file_loc")
    parser.add_argument("-o", "--output", type=Path, default=Path("predictions.csv"))
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--accelerator", choices=["auto", "cpu", "gpu"], default="auto")
    args = parser.parse_args(argv)
    try:
        model, config = load_finetuned(args.model_dir)
        frame = galaxies_from(args.images)
        tables, timing = predict_frames(model, config, {"new": frame}, Path("/"), args.batch_size, args.accelerator)
        write_csv(args.output, tables["new"])
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    counts = tables["new"]["pred_label"].value_counts().to_dict()
    print(f"galaxy-classify: {len(frame)} galaxies -> {args.output} ({timing['new_images_per_s']} images/s on "
          f"{timing['device']}); predicted: {counts}")


if __name__ == "__main__":
    main()
