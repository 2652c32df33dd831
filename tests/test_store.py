"""The image store: exact round trip, bounded decode, one-line errors, and training on it equals training in memory."""
from __future__ import annotations

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from galaxy_finetune.data.loading import GalaxyDataModule, StoreGalaxies
from galaxy_finetune.data.encoder import build_encoder
from galaxy_finetune.core.errors import PipelineError
from galaxy_finetune.data.images import decode_image
from galaxy_finetune.core.layout import CATALOG
from galaxy_finetune.training.heads import build_classifier
from galaxy_finetune.core.params import AugmentParams, Params, TrainParams
from galaxy_finetune.data.store import build_store, galaxy_pixels, open_images, read_record, stored_size
from galaxy_finetune.data.synthetic import render_galaxy
from tests.tiny import prepare


def _catalog(folder, n=10, size=24, fmt="png"):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"g{i}.{fmt}"
        Image.fromarray(render_galaxy(i % 4, 0, i, size)).save(path)
        paths.append(str(path))
    return pd.DataFrame({"id_str": [f"g{i}" for i in range(n)], "src": paths})


def test_round_trip_is_exact_at_the_source_size(tmp_path):
    catalog = _catalog(tmp_path / "src", n=300)  # more than one decode chunk
    record = build_store(catalog, tmp_path / "store", 24, threads=3)
    images = open_images(tmp_path / "store")
    assert isinstance(images, np.memmap) and not images.flags.writeable
    assert images.shape == (300, 24, 24, 3) and record["n_images"] == 300 and record["image_size"] == 24
    for i in (0, 255, 256, 299):
        np.testing.assert_array_equal(images[i], np.asarray(Image.open(catalog["src"][i]).convert("RGB")))
    assert read_record(tmp_path / "store") == record


def test_resized_rows_equal_pil_bilinear_and_jpegs_decode_like_pil(tmp_path):
    catalog = _catalog(tmp_path / "src", n=4, size=40, fmt="jpg")
    build_store(catalog, tmp_path / "store", 16)
    images = open_images(tmp_path / "store")
    for i, src in enumerate(catalog["src"]):
        expected = np.asarray(Image.open(src).convert("RGB").resize((16, 16), Image.BILINEAR))
        np.testing.assert_array_equal(images[i], expected)


def test_auto_size_is_the_input_size_capped_at_the_source(tmp_path):
    catalog = _catalog(tmp_path / "src", n=1, size=40)
    assert stored_size("auto", 224, catalog["src"][0]) == 40
    assert stored_size("auto", 32, catalog["src"][0]) == 32
    assert stored_size(64, 32, catalog["src"][0]) == 64


def test_unreadable_image_is_one_line_naming_row_id_and_file_and_nothing_is_left(tmp_path):
    catalog = _catalog(tmp_path / "src", n=3)
    (tmp_path / "src" / "g1.png").write_bytes(b"not an image")
    with pytest.raises(PipelineError) as err:
        build_store(catalog, tmp_path / "store", 24)
    message = str(err.value)
    assert "row 1" in message and "'g1'" in message and "g1.png" in message and "\n" not in message
    assert not (tmp_path / "store").exists() and not list(tmp_path.glob(".store*"))


def test_blank_images_are_kept_and_reported(tmp_path, capsys):
    catalog = _catalog(tmp_path / "src", n=3)
    Image.new("RGB", (24, 24), (7, 7, 7)).save(catalog["src"][2])
    record = build_store(catalog, tmp_path / "store", 24)
    assert record["constant_images"] == ["g2"] and record["n_images"] == 3
    assert "1 image(s) have one value everywhere" in capsys.readouterr().err


def test_a_dataset_pickles_without_its_pixels(tmp_path):
    """DataLoader workers get the path and reopen the map; a pickled memmap would copy the whole store."""
    import pickle

    catalog = _catalog(tmp_path / "src", n=8)
    build_store(catalog, tmp_path / "store", 24)
    dataset = StoreGalaxies(tmp_path / "store", [5, 1], [0, 1])
    batch = dataset.__getitems__([0, 1])
    clone = pickle.loads(pickle.dumps(dataset))
    assert len(pickle.dumps(dataset)) < 2000
    assert torch.equal(clone.__getitems__([0, 1])["image"], batch["image"])
    assert batch["image"].shape == (2, 3, 24, 24) and batch["label"].tolist() == [0, 1]


def test_training_batches_and_shown_galaxies_read_rows_alike(tmp_path):
    catalog = _catalog(tmp_path / "src", n=8)
    build_store(catalog, tmp_path / "store", 24)
    rows = [5, 1, 5, 7]
    batch = StoreGalaxies(tmp_path / "store", rows).__getitems__([0, 1, 2, 3])["image"]
    assert torch.equal(batch, torch.from_numpy(galaxy_pixels(tmp_path / "store", rows)).permute(0, 3, 1, 2))
    for reader in (lambda: StoreGalaxies(tmp_path / "store", [1, 8]).__getitems__([0, 1]),
                   lambda: galaxy_pixels(tmp_path / "store", [1, 8])):
        with pytest.raises(PipelineError, match=r"store: no row 8 in a store of 8 galaxies; .* \(rerun dvc repro\)"):
            reader()


def _train_one_epoch(datamodule, encoder_dir, classes):
    L.seed_everything(0, workers=True, verbose=False)
    model = build_classifier(build_encoder(encoder_dir), len(classes), TrainParams(lr=1e-3, layer_decay=1.0))
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, deterministic=True)
    trainer.fit(model, datamodule=datamodule)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class InMemory(GalaxyDataModule):
    """The pre-store data path: every image decoded from its source file into one array in memory."""

    def __init__(self, pixels, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pixels = pixels

    def dataset(self, name):
        if name not in self.datasets:
            frame = pd.read_csv(self.split_dir / f"{name}.csv")
            self.datasets[name] = StoreGalaxies(self.pixels, frame["row"], frame["label"])
        return self.datasets[name]


def test_training_on_the_store_equals_training_in_memory(tmp_path):
    params = Params.model_validate({
        "data": {"source": "synthetic", "synthetic_n_per_class": 6, "synthetic_image_size": 32},
        "model": {"encoder": "random", "random_arch": "convnext_atto"}, "train": {"input_size": 32}})
    paths = prepare(tmp_path, params)
    catalog = pd.read_csv(paths.raw / CATALOG)
    in_memory = np.stack([decode_image(p) for p in catalog["src"]])  # decoded straight from the sources
    classes = list(params.data.classes)
    args = (paths.store, paths.splits, 32, 4, AugmentParams())
    from_store = _train_one_epoch(GalaxyDataModule(*args), paths.encoder, classes)
    from_memory = _train_one_epoch(InMemory(in_memory, *args), paths.encoder, classes)
    assert from_store.keys() == from_memory.keys()
    for key in from_store:
        torch.testing.assert_close(from_store[key], from_memory[key], rtol=0, atol=0, msg=key)
    untrained = build_classifier(build_encoder(paths.encoder), len(classes), TrainParams()).state_dict()
    assert any(not torch.equal(v, untrained[k]) for k, v in from_store.items() if v.is_floating_point())  # it trained
