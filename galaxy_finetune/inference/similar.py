"""Find galaxies like one you care about: `galaxy-similar QUERY -k 8 -o similar.csv --sheet similar.png`.

QUERY is a galaxy id of the catalog (any split) or the path of an image file. The k most similar galaxies, by
cosine similarity of the fine-tuned encoder's PCA features (data/embeddings, written by the embed stage), go to
a CSV (rank, id_str, similarity, split, label_name, row: the store row) and a contact sheet PNG with the query
first. An image file goes through the model's eval view and encoder first, so it needs the model folder too.

QUERY may also be a folder of images (JPG/PNG/FITS; other files are ignored): the CSV then has the k galaxies like
each image, with its query_id and query_file first, and the sheet shows the first SHEET_QUERIES queries, one row
each. An image that cannot be decoded is skipped with a warning naming it, counted in the last line and listed
in OUTPUT_skipped.csv; exit status 0, 1 only when no image could be decoded.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from galaxy_finetune.core.cli import run_command
from galaxy_finetune.core.errors import PipelineError
from galaxy_finetune.core.files import write_csv
from galaxy_finetune.core.neighbours import CosineIndex
from galaxy_finetune.data.images import decode_image
from galaxy_finetune.data.store import galaxy_pixels
from galaxy_finetune.inference.embeddings import Embeddings, read_embeddings

SHEET_QUERIES = 5  # queries of a folder drawn on the contact sheet, one row each (the CSV has them all)
SHEET_NEIGHBOURS = 7  # neighbours drawn per query row


class SimilaritySearch:
    """The embeddings of the catalog and an exact cosine index over their PCA features, loaded once."""

    def __init__(self, embeddings: Embeddings):
        self.embeddings = embeddings
        self.index = CosineIndex(embeddings.pca_features)
        self.position = pd.Series(np.arange(len(embeddings.galaxies)), index=embeddings.galaxies["id_str"].to_numpy())

    @classmethod
    def load(cls, embed_dir: Path) -> "SimilaritySearch":
        return cls(read_embeddings(embed_dir))

    def __contains__(self, galaxy_id: str) -> bool:
        return galaxy_id in self.position.index

    def _table(self, sim: np.ndarray, rows: np.ndarray) -> pd.DataFrame:
        galaxies = self.embeddings.galaxies.iloc[rows]
        return pd.DataFrame({"rank": np.arange(1, len(rows) + 1), "id_str": galaxies["id_str"].to_numpy(),
                             "similarity": np.round(sim, 6), "split": galaxies["split"].to_numpy(),
                             "label_name": galaxies["label_name"].to_numpy(), "row": galaxies["row"].to_numpy()})

    def like_galaxy(self, galaxy_id: str, k: int) -> pd.DataFrame:
        """The k galaxies most similar to catalog galaxy `galaxy_id` (itself left out)."""
        row = int(self.position[galaxy_id])
        sim, rows = self.index.search(self.embeddings.pca_features[row], k + 1)
        keep = rows[0] != row
        return self._table(sim[0][keep][:k], rows[0][keep][:k])

    def like_features(self, pca_features: np.ndarray, k: int) -> pd.DataFrame:
        """The k galaxies most similar to PCA features `pca_features`."""
        sim, rows = self.index.search(pca_features, k)
        return self._table(sim[0], rows[0])


def embed_image(path: Path, model_dir: Path, embeddings: Embeddings, accelerator: str = "auto") -> tuple[np.ndarray,
                                                                                                         np.ndarray]:
    """(pixels, PCA features) of an image file through the fine-tuned model's eval view and encoder."""
    from galaxy_finetune.core.accelerator import torch_device
    from galaxy_finetune.inference.embed import encoder_features, load_finetuned
    from galaxy_finetune.training.model_io import eval_transform, fits_view

    model, config = load_finetuned(model_dir)
    # decoded as the store decoded the training galaxies (its size and FITS view), then the eval view
    pixels = np.array(decode_image(path, config["store_size"], fits=fits_view(config)))  # writable, as torch wants
    device = torch_device(accelerator)
    features = encoder_features(model.to(device), pixels[None], eval_transform(config), device)
    return pixels, embeddings.project(features.astype(np.float16).astype(np.float32))


def contact_sheet(query_pixels: np.ndarray, query_name: str, neighbours: pd.DataFrame, store_dir: Path,
                  path: Path) -> None:
    """The query, then each neighbour with its rank, id, similarity and class."""
    from galaxy_finetune.core import gallery

    images = [query_pixels, *galaxy_pixels(store_dir, neighbours["row"].tolist())]
    captions = [f"query\n{query_name}"] + [f"#{row.rank} {row.id_str}\n{row.label_name}, sim {row.similarity:.3f}"
                                            for row in neighbours.itertuples()]
    edges = ["black"] + ["0.6"] * len(neighbours)
    gallery.galaxy_grid(images, captions, edges, path, None, f"The {len(neighbours)} galaxies most like {query_name}",
                        cols=min(5, len(images)))


def like_folder(folder: Path, search: SimilaritySearch, model_dir: Path, store_dir: Path, k: int, output: Path,
                sheet: Path, accelerator: str = "auto", batch_size: int = 64) -> dict:
    """The k galaxies like each image of `folder` to `output` (query_id, query_file, then galaxy-similar's columns)
    and a sheet of the first SHEET_QUERIES queries; damaged images skipped, warned about and listed beside `output`.
    Returns the counts for the last line."""
    from galaxy_finetune.core.accelerator import torch_device
    from galaxy_finetune.data.loading import ImageFiles, make_loader
    from galaxy_finetune.inference.classify import galaxies_from
    from galaxy_finetune.inference.embed import encoder_features, load_finetuned
    from galaxy_finetune.inference.predict import damaged_table, readable_batches, write_skipped
    from galaxy_finetune.training.model_io import eval_transform, fits_view

    frame = galaxies_from(folder)
    model, config = load_finetuned(model_dir)
    device = torch_device(accelerator)
    model, view = model.to(device).eval(), eval_transform(config)
    dataset = ImageFiles(frame["file"], config["store_size"], fits_view(config), skip_damaged=True)
    tables, shown, damaged = [], [], []
    start = time.perf_counter()
    for batch in readable_batches(make_loader(dataset, batch_size, False, 0), damaged):
        ok = batch["ok"]
        pixels = batch["image"][ok].permute(0, 2, 3, 1).contiguous().numpy()
        features = encoder_features(model, pixels, view, device)
        pca = search.embeddings.project(features.astype(np.float16).astype(np.float32))  # as the embed stage stored
        for j, i in enumerate(batch["index"][ok].tolist()):
            table = search.like_features(pca[j], k)
            table.insert(0, "query_file", frame["file"].iloc[i])
            table.insert(0, "query_id", frame["id_str"].iloc[i])
            tables.append(table)
            if len(shown) < SHEET_QUERIES:
                shown.append((frame["id_str"].iloc[i], pixels[j], table))
    seconds = time.perf_counter() - start
    listed = write_skipped(output, damaged_table(frame, damaged))
    if not tables:
        raise PipelineError(f"{folder}: none of its {len(frame)} image(s) could be decoded (e.g. {damaged[0][1]}); "
                            f"all are listed in {listed}")
    write_csv(output, pd.concat(tables, ignore_index=True))
    folder_sheet(shown, store_dir, k, sheet)
    return {"queries": len(tables), "skipped": len(damaged), "skipped_list": listed, "seconds": seconds}


def folder_sheet(shown: list, store_dir: Path, k: int, path: Path) -> None:
    """One row per query: the query, then its first SHEET_NEIGHBOURS neighbours."""
    from galaxy_finetune.core import gallery

    cols = 1 + min(k, SHEET_NEIGHBOURS)
    images, captions, edges = [], [], []
    for name, pixels, table in shown:
        near = table.head(cols - 1)
        found = galaxy_pixels(store_dir, near["row"].tolist())
        images += [pixels, *found] + [np.zeros_like(pixels)] * (cols - 1 - len(found))
        captions += [f"query\n{name}"] + [f"#{r.rank} {r.id_str}\n{r.label_name}, sim {r.similarity:.3f}"
                                           for r in near.itertuples()] + [""] * (cols - 1 - len(near))
        edges += ["black"] + ["0.6"] * (cols - 1)
    gallery.galaxy_grid(images, captions, edges, path, None, f"The galaxies most like each of the first {len(shown)} "
                        f"queries", cols=cols)


def find_similar(args: argparse.Namespace) -> None:
    """galaxy-similar's work: the neighbours of the query to a CSV and a contact sheet, and a line saying so."""
    if args.k < 1:
        raise PipelineError(f"-k {args.k}: ask for at least one galaxy")
    search = SimilaritySearch.load(args.embeddings)
    if Path(args.query).is_dir():
        done = like_folder(Path(args.query), search, args.model, args.store, args.k, args.output, args.sheet,
                           args.accelerator)
        skipped = (f"; {done['skipped']} damaged image(s) skipped, listed in {done['skipped_list']}"
                   if done["skipped"] else "")
        print(f"galaxy-similar: the {args.k} galaxies like each of {done['queries']} images in {args.query} -> "
              f"{args.output}, {args.sheet} ({done['seconds']:.1f} s over {len(search.index)} galaxies){skipped}")
        return
    if args.query in search:
        start = time.perf_counter()
        neighbours = search.like_galaxy(args.query, args.k)
        seconds = time.perf_counter() - start

        query_row = int(search.embeddings.galaxies["row"].iloc[search.position[args.query]])
        query_pixels = galaxy_pixels(args.store, [query_row])[0]
    elif Path(args.query).is_file():
        query_pixels, features = embed_image(Path(args.query), args.model, search.embeddings, args.accelerator)
        start = time.perf_counter()
        neighbours = search.like_features(features, args.k)
        seconds = time.perf_counter() - start
    else:
        raise PipelineError(f"{args.query}: neither a galaxy id of {args.embeddings} nor an image file")
    write_csv(args.output, neighbours)
    contact_sheet(query_pixels, Path(args.query).name, neighbours, args.store, args.sheet)
    print(f"galaxy-similar: {len(neighbours)} galaxies like {args.query} -> {args.output}, {args.sheet} "
          f"(search {seconds * 1000:.1f} ms over {len(search.index)} galaxies)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="galaxy-similar", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("query", help="a galaxy id of the catalog, the path of an image file, or a folder of them")
    parser.add_argument("-k", type=int, default=8, help="how many similar galaxies (default 8)")
    parser.add_argument("-o", "--output", type=Path, default=Path("similar.csv"))
    parser.add_argument("--sheet", type=Path, default=Path("similar.png"), help="contact sheet PNG")
    parser.add_argument("--embeddings", type=Path, default=Path("data/embeddings"))
    parser.add_argument("--store", type=Path, default=Path("data/store"), help="data/store (the galaxies' pixels)")
    parser.add_argument("--model", type=Path, default=Path("models/finetuned"), help="for an image-file query")
    parser.add_argument("--accelerator", choices=["auto", "cpu", "gpu"], default="auto")
    run_command(lambda: find_similar(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
