"""Find galaxies like one you care about: `galaxy-similar QUERY -k 8 -o similar.csv --sheet similar.png`.

QUERY is a galaxy id of the catalog (any split) or the path of an image file. The k most similar galaxies, by
cosine similarity of the fine-tuned encoder's PCA features (data/embeddings, written by the embed stage), go to
a CSV (rank, id_str, similarity, split, label_name, row: the store row) and a contact sheet PNG with the query
first. An image file goes through the model's eval view and encoder first, so it needs the model folder too.

QUERY may also be a folder of images (JPG/PNG/FITS; other files are ignored): the CSV then has the k galaxies like
each image, with its query_id and query_file first, and the sheet shows the first SHEET_QUERIES queries, one row
each. An image that cannot be decoded is skipped with a warning naming it, counted in the last line and listed
in OUTPUT_skipped.csv; exit status 0, 1 only when no image could be decoded.

With `--survey PREDICTIONS --survey-features PCA.npy` (galaxy-classify's output and its --embeddings-out) it
searches the survey instead of the catalog: QUERY is a galaxy id of the survey, an image file or a folder; the
CSV lists rank, id_str, similarity, file (and pred_label, confidence). Below 100,000 galaxies the search is
exact; above, through a FAISS index built on the first search and saved beside the features (PCA.npy.faiss),
rebuilt only when they change. `--exact` searches exactly whatever the size (the yardstick).
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
from galaxy_finetune.core.neighbours import CosineIndex, SurveyIndex
from galaxy_finetune.data.images import decode_image
from galaxy_finetune.data.store import galaxy_pixels
from galaxy_finetune.inference.embeddings import Embeddings, read_embeddings

SHEET_QUERIES = 5  # queries of a folder drawn on the contact sheet, one row each (the CSV has them all)
SHEET_NEIGHBOURS = 7  # neighbours drawn per query row


class _Search:
    """What both searches share: galaxies found by id (`position`), an index over their PCA features (`index`),
    and a `_table` of the neighbours found; `_features(row)` is a galaxy's own PCA features."""
    index: CosineIndex | SurveyIndex
    position: pd.Series

    def __contains__(self, galaxy_id: str) -> bool:
        return galaxy_id in self.position.index

    def like_galaxy(self, galaxy_id: str, k: int) -> pd.DataFrame:
        """The k galaxies most similar to galaxy `galaxy_id` (itself left out)."""
        row = int(self.position[galaxy_id])
        sim, rows = self.index.search(self._features(row), k + 1)
        keep = rows[0] != row
        return self._table(sim[0][keep][:k], rows[0][keep][:k])

    def like_features(self, pca_features: np.ndarray, k: int) -> pd.DataFrame:
        """The k galaxies most similar to PCA features `pca_features`."""
        sim, rows = self.index.search(pca_features, k)
        return self._table(sim[0], rows[0])


class SimilaritySearch(_Search):
    """The embeddings of the catalog and an exact cosine index over their PCA features, loaded once."""

    def __init__(self, embeddings: Embeddings):
        self.embeddings = embeddings
        self.index = CosineIndex(embeddings.pca_features)
        self.position = pd.Series(np.arange(len(embeddings.galaxies)), index=embeddings.galaxies["id_str"].to_numpy())

    @classmethod
    def load(cls, embed_dir: Path) -> "SimilaritySearch":
        return cls(read_embeddings(embed_dir))

    def _features(self, row: int) -> np.ndarray:
        return self.embeddings.pca_features[row]

    def _table(self, sim: np.ndarray, rows: np.ndarray) -> pd.DataFrame:
        galaxies = self.embeddings.galaxies.iloc[rows]
        return pd.DataFrame({"rank": np.arange(1, len(rows) + 1), "id_str": galaxies["id_str"].to_numpy(),
                             "similarity": np.round(sim, 6), "split": galaxies["split"].to_numpy(),
                             "label_name": galaxies["label_name"].to_numpy(), "row": galaxies["row"].to_numpy()})


    def project(self, features: np.ndarray) -> np.ndarray:
        """Encoder features -> the PCA features searched (as the embed stage stored them: float16 first)."""
        return self.embeddings.project(np.asarray(features).astype(np.float16).astype(np.float32))

    def pixels(self, neighbours: pd.DataFrame, store_dir: Path, model_dir: Path) -> list[np.ndarray]:
        """The neighbours' pixels, from the store."""
        return list(galaxy_pixels(store_dir, neighbours["row"].tolist()))

    def caption(self, row) -> str:
        return f"#{row.rank} {row.id_str}\n{row.label_name}, sim {row.similarity:.3f}"


def read_output(path: Path, columns: list[str]) -> pd.DataFrame:
    """The columns of galaxy-classify's output (Parquet or CSV) that it has, ids as written."""
    from galaxy_finetune.core.files import read_table

    if not Path(path).is_file():
        raise PipelineError(f"--survey {path}: not found; it is galaxy-classify's output (-o)")
    if str(path).lower().endswith((".parquet", ".pq")):
        import pyarrow.parquet as pq

        present = [c for c in columns if c in pq.read_schema(path).names]
        return pq.read_table(path, columns=present).to_pandas()
    table = read_table(path)
    return table[[c for c in columns if c in table.columns]]


class SurveySearch(_Search):
    """A survey's galaxies (galaxy-classify's output) and their PCA features (its --embeddings-out), searched
    through SurveyIndex (exact below EXACT_MAX rows, else FAISS); the PCA of the embed stage projects new images."""

    def __init__(self, predictions: Path, features: Path, embed_dir: Path, exact: bool | None = None):
        if not Path(features).is_file():
            raise PipelineError(f"--survey-features {features}: not found; write it with galaxy-classify "
                                "--embeddings-out")
        self.galaxies = read_output(predictions, ["id_str", "file", "pred_label", "confidence"])
        self.index = SurveyIndex(features, exact)
        if len(self.index) != len(self.galaxies):
            raise PipelineError(f"--survey-features {features}: {len(self.index)} rows for the {len(self.galaxies)} "
                                f"galaxies of {predictions}; use the pair one galaxy-classify run wrote")
        self.embed_dir = embed_dir
        self.position = pd.Series(np.arange(len(self.galaxies)), index=self.galaxies["id_str"].to_numpy())
        self._pca = None

    def _table(self, sim: np.ndarray, rows: np.ndarray) -> pd.DataFrame:
        keep = rows >= 0  # an approximate search may find fewer than k
        sim, rows = sim[keep], rows[keep]
        galaxies = self.galaxies.iloc[rows]
        table = pd.DataFrame({"rank": np.arange(1, len(rows) + 1), "id_str": galaxies["id_str"].to_numpy(),
                              "similarity": np.round(sim, 6)})
        for name in ("file", "pred_label", "confidence"):
            if name in galaxies.columns:
                table[name] = galaxies[name].to_numpy()
        return table

    def _features(self, row: int) -> np.ndarray:
        return np.asarray(self.index.features[row], np.float32)

    def project(self, features: np.ndarray) -> np.ndarray:
        """Encoder features -> PCA features, as galaxy-classify --embeddings-out computed them."""
        if self._pca is None:
            from galaxy_finetune.inference.shift import ShiftReference

            reference = ShiftReference.load(self.embed_dir)
            self._pca = reference.pca_mean, reference.pca_components
        mean, components = self._pca
        return (np.asarray(features).astype(np.float16).astype(np.float32) - mean) @ components.T

    def pixels(self, neighbours: pd.DataFrame, store_dir: Path, model_dir: Path) -> list[np.ndarray]:
        """The neighbours' pixels, decoded from their files as the store decoded the training galaxies."""
        from galaxy_finetune.core.files import read_model_config
        from galaxy_finetune.training.model_io import fits_view

        config = read_model_config(model_dir)
        return [np.asarray(decode_image(f, config["store_size"], fits=fits_view(config))) for f in neighbours["file"]]

    def caption(self, row) -> str:
        label = f"{row.pred_label}, " if hasattr(row, "pred_label") else ""
        return f"#{row.rank} {row.id_str}\n{label}sim {row.similarity:.3f}"


def embed_image(path: Path, model_dir: Path, embeddings, accelerator: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """(pixels, PCA features) of an image file through the fine-tuned model's eval view and encoder; `embeddings`
    (the catalog's Embeddings, or a search with a `project`) projects them."""
    from galaxy_finetune.core.accelerator import torch_device
    from galaxy_finetune.inference.embed import encoder_features, load_finetuned
    from galaxy_finetune.training.model_io import eval_transform, fits_view

    model, config = load_finetuned(model_dir)
    # decoded as the store decoded the training galaxies (its size and FITS view), then the eval view
    pixels = np.array(decode_image(path, config["store_size"], fits=fits_view(config)))  # writable, as torch wants
    device = torch_device(accelerator)
    features = encoder_features(model.to(device), pixels[None], eval_transform(config), device)
    if isinstance(embeddings, Embeddings):
        return pixels, embeddings.project(features.astype(np.float16).astype(np.float32))
    return pixels, embeddings.project(features)


def contact_sheet(query_pixels: np.ndarray, query_name: str, neighbours: pd.DataFrame, search, store_dir: Path,
                  model_dir: Path, path: Path) -> None:
    """The query, then each neighbour with its rank, id, similarity and class."""
    from galaxy_finetune.core import gallery

    images = [query_pixels, *search.pixels(neighbours, store_dir, model_dir)]
    captions = [f"query\n{query_name}"] + [search.caption(row) for row in neighbours.itertuples()]
    edges = ["black"] + ["0.6"] * len(neighbours)
    gallery.galaxy_grid(images, captions, edges, path, None, f"The {len(neighbours)} galaxies most like {query_name}",
                        cols=min(5, len(images)))


def like_folder(folder: Path, search, model_dir: Path, store_dir: Path, k: int, output: Path,
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
        pca = search.project(encoder_features(model, pixels, view, device))  # as the features searched were stored
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
    folder_sheet(shown, search, store_dir, model_dir, k, sheet)
    return {"queries": len(tables), "skipped": len(damaged), "skipped_list": listed, "seconds": seconds}


def folder_sheet(shown: list, search, store_dir: Path, model_dir: Path, k: int, path: Path) -> None:
    """One row per query: the query, then its first SHEET_NEIGHBOURS neighbours."""
    from galaxy_finetune.core import gallery

    cols = 1 + min(k, SHEET_NEIGHBOURS)
    images, captions, edges = [], [], []
    for name, pixels, table in shown:
        near = table.head(cols - 1)
        found = search.pixels(near, store_dir, model_dir)
        images += [pixels, *found] + [np.zeros_like(pixels)] * (cols - 1 - len(found))
        captions += [f"query\n{name}"] + [search.caption(r) for r in near.itertuples()] + [""] * (cols - 1 - len(near))
        edges += ["black"] + ["0.6"] * (cols - 1)
    gallery.galaxy_grid(images, captions, edges, path, None, f"The galaxies most like each of the first {len(shown)} "
                        f"queries", cols=cols)


def query_pixels(search, galaxy_id: str, store_dir: Path, model_dir: Path) -> np.ndarray:
    """The pixels of a searched galaxy: from the store (catalog) or its file (survey)."""
    if isinstance(search, SurveySearch):
        return search.pixels(search.galaxies.iloc[[int(search.position[galaxy_id])]], store_dir, model_dir)[0]
    row = int(search.embeddings.galaxies["row"].iloc[search.position[galaxy_id]])
    return galaxy_pixels(store_dir, [row])[0]


def find_similar(args: argparse.Namespace) -> None:
    """galaxy-similar's work: the neighbours of the query to a CSV and a contact sheet, and a line saying so."""
    if args.k < 1:
        raise PipelineError(f"-k {args.k}: ask for at least one galaxy")
    if args.survey is not None:
        if args.survey_features is None:
            raise PipelineError("--survey: give its PCA features too (--survey-features, galaxy-classify "
                                "--embeddings-out)")
        start = time.perf_counter()
        search = SurveySearch(args.survey, args.survey_features, args.embeddings, True if args.exact else None)
        how = "exact" if search.index.exact else "FAISS IVF index"
        if search.index.built:
            print(f"galaxy-similar: built the index of {len(search.index):,} galaxies in "
                  f"{time.perf_counter() - start:.1f} s -> {search.index.index_path}")
    else:
        search, how = SimilaritySearch.load(args.embeddings), "exact"
    if Path(args.query).is_dir():
        done = like_folder(Path(args.query), search, args.model, args.store, args.k, args.output, args.sheet,
                           args.accelerator)
        skipped = (f"; {done['skipped']} damaged image(s) skipped, listed in {done['skipped_list']}"
                   if done["skipped"] else "")
        print(f"galaxy-similar: the {args.k} galaxies like each of {done['queries']} images in {args.query} -> "
              f"{args.output}, {args.sheet} ({done['seconds']:.1f} s over {len(search.index)} galaxies, {how})"
              f"{skipped}")
        return
    if args.query in search:
        start = time.perf_counter()
        neighbours = search.like_galaxy(args.query, args.k)
        seconds = time.perf_counter() - start
        pixels = query_pixels(search, args.query, args.store, args.model)
    elif Path(args.query).is_file():
        pixels, features = embed_image(Path(args.query), args.model, search if args.survey else search.embeddings,
                                       args.accelerator)
        start = time.perf_counter()
        neighbours = search.like_features(features, args.k)
        seconds = time.perf_counter() - start
    else:
        where = args.survey if args.survey is not None else args.embeddings
        raise PipelineError(f"{args.query}: neither a galaxy id of {where} nor an image file")
    write_csv(args.output, neighbours)
    contact_sheet(pixels, Path(args.query).name, neighbours, search, args.store, args.model, args.sheet)
    print(f"galaxy-similar: {len(neighbours)} galaxies like {args.query} -> {args.output}, {args.sheet} "
          f"(search {seconds * 1000:.1f} ms over {len(search.index)} galaxies, {how})")


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
    parser.add_argument("--survey", type=Path, default=None,
                        help="search a survey instead of the catalog: galaxy-classify's output (CSV or Parquet)")
    parser.add_argument("--survey-features", type=Path, default=None,
                        help="the survey's PCA features (galaxy-classify --embeddings-out); its FAISS index is saved "
                             "beside it (.faiss)")
    parser.add_argument("--exact", action="store_true", help="exact search over the survey, whatever its size")
    run_command(lambda: find_similar(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
