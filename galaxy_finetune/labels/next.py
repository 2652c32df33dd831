"""Which galaxies to label next: `galaxy-label-next MODEL_DIR IMAGES -k 100 -o next.csv --sheet next.png`.

IMAGES is what galaxy-classify reads (a folder of JPG/PNG/FITS, or a catalog with file_loc; a catalog with a label
column, such as your own catalog, gives the rows whose label is empty: the galaxies nobody labelled yet). Each unlabelled
galaxy goes through the model's eval view and encoder once; its head gives the class probabilities and, for
--score bald, --passes Monte-Carlo passes with the head's dropout on (the encoder stays in eval mode). The k
highest-scoring galaxies (entropy, margin or BALD: labels/acquisition.py) go to a CSV (rank, id_str, file, score,
pred_label, p_<class>..., and with the embed stage's folder each one's distance from the training set) and a
contact sheet. --diverse spreads them out in the encoder's feature space (k-center greedy over the top 5k), so
the k are not near-copies of one another. An image that cannot be decoded is skipped as galaxy-classify skips it:
a warning naming it, a count in the last line, a list in OUTPUT_skipped.csv (id_str, file, reason); exit status 0,
1 only when no image could be decoded.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from galaxy_finetune.core import gallery
from galaxy_finetune.core.accelerator import torch_device
from galaxy_finetune.core.cli import run_command
from galaxy_finetune.core.errors import PipelineError
from galaxy_finetune.core.files import write_csv
from galaxy_finetune.data.images import decode_image
from galaxy_finetune.data.loading import ImageFiles, make_loader
from galaxy_finetune.data.sources import read_catalog_file
from galaxy_finetune.inference.classify import galaxies_from
from galaxy_finetune.inference.predict import damaged_table, readable_batches, write_skipped
from galaxy_finetune.inference.shift import optional_scorer
from galaxy_finetune.labels.acquisition import SCORES, mc_head_probs, pick, score
from galaxy_finetune.training.model_io import eval_transform, fits_view, load_finetuned

SHEET_MAX = 50  # galaxies drawn on the contact sheet (the CSV has all k)


@torch.inference_mode()
def score_galaxies(model, config: dict, files: pd.Series, how: str, passes: int, batch_size: int,
                   device: torch.device, workers: int = 0, seed: int = 0):
    """(probs (M, C), scores (M,), encoder features (M, D) float32, the M decoded files' positions in `files`,
    [(position, reason)] of the damaged ones) of image files, one encoder pass each; a file that cannot be
    decoded is skipped with a DamagedImageWarning naming it."""
    model = model.to(device).eval()
    view = eval_transform(config)
    dataset = ImageFiles(files, config["store_size"], fits_view(config), skip_damaged=True)
    probs, scores, features, decoded, damaged = [], [], [], [], []
    for i, batch in enumerate(readable_batches(make_loader(dataset, batch_size, False, workers), damaged)):
        ok = batch["ok"]
        feats = model.encoder(view(batch["image"][ok].to(device))).float()
        p = torch.softmax(model.head(feats).float(), dim=-1).cpu().numpy()  # eval mode: dropout off
        mc = mc_head_probs(model, feats, passes, seed + i).cpu().numpy() if how == "bald" else None
        probs.append(p)
        scores.append(score(how, p, mc))
        features.append(feats.cpu().numpy())
        decoded.append(batch["index"][ok].numpy())
    if not decoded:
        raise PipelineError(f"none of the {len(files)} image(s) could be decoded (e.g. {damaged[0][1]}); fix or "
                            f"replace them")
    return np.concatenate(probs), np.concatenate(scores), np.concatenate(features), np.concatenate(decoded), damaged


def unlabelled_only(frame: pd.DataFrame, source: Path) -> pd.DataFrame:
    """The galaxies of `frame` (galaxies_from(source)) still to label: all of a folder's; of a catalog with a label
    column, the rows whose label is empty (the unlabelled galaxies fetch_data keeps for semi-supervised training)."""
    if source.is_dir():
        return frame
    table, _ = read_catalog_file(source, {"file_loc"}, "images")
    if "label" not in table.columns:
        return frame
    empty = table["label"].map(lambda v: pd.isna(v) or not str(v).strip()).to_numpy(bool)
    if not empty.any():
        raise PipelineError(f"{source}: every galaxy has a label; point galaxy-label-next at galaxies still to label "
                            f"(a folder, or a catalog whose label is empty for them)")
    return frame[empty].reset_index(drop=True)


def label_next(args: argparse.Namespace) -> pd.DataFrame:
    """galaxy-label-next's work: the ranked CSV and the contact sheet, and a line saying so."""
    if args.k < 1:
        raise PipelineError(f"-k {args.k}: ask for at least one galaxy")
    if args.passes < 2 and args.score == "bald":
        raise PipelineError(f"--passes {args.passes}: BALD needs at least 2 Monte-Carlo passes")
    start = time.perf_counter()
    model, config = load_finetuned(args.model_dir)
    frame = unlabelled_only(galaxies_from(args.images), args.images)
    device = torch_device(args.accelerator)
    probs, scores, features, decoded, damaged = score_galaxies(model, config, frame["file"], args.score, args.passes,
                                                               args.batch_size, device)
    listed = write_skipped(args.output, damaged_table(frame, damaged))
    scored = frame.iloc[decoded].reset_index(drop=True)
    shift, why_not = optional_scorer(args.embeddings, args.model_dir)
    space = features if shift is None else shift.reference.project(features)
    chosen = pick(scores, args.k, space if args.diverse else None)
    classes = list(config["classes"])
    table = pd.DataFrame({"rank": np.arange(1, len(chosen) + 1), "id_str": scored["id_str"].to_numpy()[chosen],
                          "file": scored["file"].to_numpy()[chosen], args.score: np.round(scores[chosen], 6),
                          "pred_label": np.asarray(classes)[probs[chosen].argmax(1)]})
    for c, name in enumerate(classes):
        table[f"p_{name}"] = np.round(probs[chosen, c], 6)
    if shift is not None:
        distance = shift.reference.distances(features[chosen])
        table["train_distance"] = np.round(distance, 6)
        table["val_share_farther"] = np.round(shift.reference.share_farther(distance), 4)
    write_csv(args.output, table)
    contact_sheet(table, args.score, config, args.sheet)
    print(f"galaxy-label-next: the {len(table)} of {len(scored)} galaxies with the highest {args.score}"
          f"{' spread out in feature space' if args.diverse else ''} -> {args.output}, {args.sheet} "
          f"({time.perf_counter() - start:.1f} s on {device.type})"
          + ("" if shift is not None else f"; no distance from the training set ({why_not})")
          + (f"; {len(damaged)} damaged image(s) skipped, listed in {listed}" if damaged else ""))
    return table


def contact_sheet(table: pd.DataFrame, how: str, config: dict, path: Path) -> None:
    shown = table.head(SHEET_MAX)
    images = [decode_image(f, config["store_size"], fits=fits_view(config)) for f in shown["file"]]
    captions = [f"#{r.rank} {r.id_str}\n{r.pred_label}, {how} {getattr(r, how):.3f}" for r in shown.itertuples()]
    title = f"Label these next: the {len(table)} highest {how}" + (f" (first {SHEET_MAX} shown)" if len(table) >
                                                                   SHEET_MAX else "")
    gallery.galaxy_grid(images, captions, ["0.6"] * len(images), path, None, title, cols=min(5, max(1, len(images))))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="galaxy-label-next", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path, help="a fine-tuned model folder (models/finetuned)")
    parser.add_argument("images", type=Path, help="unlabelled galaxies: a folder of images, or a catalog with file_loc")
    parser.add_argument("-k", type=int, default=100, help="how many galaxies to propose (default 100)")
    parser.add_argument("--score", choices=SCORES, default="bald", help="acquisition score (default bald)")
    parser.add_argument("--passes", type=int, default=20, help="Monte-Carlo dropout passes for bald (default 20)")
    parser.add_argument("--diverse", action="store_true", help="spread the k out in feature space (k-center greedy)")
    parser.add_argument("-o", "--output", type=Path, default=Path("label_next.csv"))
    parser.add_argument("--sheet", type=Path, default=Path("label_next.png"), help="contact sheet PNG")
    parser.add_argument("--embeddings", type=Path, default=Path("data/embeddings"),
                        help="the embed stage's folder: distance from the training set, and the PCA --diverse uses")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--accelerator", choices=["auto", "cpu", "gpu"], default="auto")
    run_command(lambda: label_next(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
