"""The embed stage's library (inference/embed.py, embeddings.py): the encoder's pooled features of every split
galaxy through the model's eval view, in split order, as float16, with a PCA fitted on train only."""
import numpy as np
import pandas as pd
import pytest
import torch

from galaxy_finetune.data.loading import read_split
from galaxy_finetune.data.store import galaxy_pixels
from galaxy_finetune.inference.embed import embed_galaxies, embed_splits
from galaxy_finetune.inference.embeddings import read_embeddings
from galaxy_finetune.training.model_io import eval_transform, load_finetuned

# with pytest-xdist: the modules of the session's one tiny trained model run on one worker
pytestmark = pytest.mark.xdist_group("tiny_model")


@pytest.fixture(scope="module")
def embedded(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("embed") / "embeddings"
    record = embed_splits(tiny_model.model, tiny_model.store, tiny_model.splits, out, 7, 4, "cpu")
    return out, record


def test_every_split_galaxy_in_order_with_its_encoder_features(tiny_model, embedded):
    out, record = embedded
    emb = read_embeddings(out)
    frames = [read_split(tiny_model.splits, s).assign(split=s) for s in ("train", "val", "test")]
    expected = pd.concat(frames, ignore_index=True)
    assert emb.galaxies["id_str"].tolist() == expected["id_str"].tolist()
    assert emb.galaxies["split"].tolist() == expected["split"].tolist()
    assert emb.galaxies["row"].tolist() == expected["row"].tolist()
    model, config = load_finetuned(tiny_model.model)
    pixels = torch.from_numpy(galaxy_pixels(tiny_model.store, expected["row"].tolist())).permute(0, 3, 1, 2)
    with torch.no_grad():
        features = model.encoder(eval_transform(config)(pixels)).numpy()
    assert emb.features.dtype == np.float16 and emb.features.shape == features.shape
    np.testing.assert_allclose(emb.features.astype(np.float32), features, rtol=2e-3, atol=2e-3)
    assert record["galaxies"] == len(expected) and record["pca_components"] == 4


def test_the_pca_is_fitted_on_train_and_projects_every_row(embedded):
    from sklearn.decomposition import PCA

    emb = read_embeddings(embedded[0])
    train = emb.features[emb.split("train")].astype(np.float32)
    pca = PCA(4, svd_solver="full").fit(train)
    np.testing.assert_allclose(emb.pca_mean, pca.mean_, atol=1e-5)
    np.testing.assert_allclose(np.abs(emb.pca_components), np.abs(pca.components_), atol=1e-4)  # up to sign
    np.testing.assert_allclose(emb.project(emb.features), emb.pca_features, atol=1e-4)


def test_features_do_not_depend_on_the_batch(tiny_model):
    model, config = load_finetuned(tiny_model.model)
    rows = list(range(10))
    small = embed_galaxies(model, config, tiny_model.store, rows, 3, torch.device("cpu"))
    large = embed_galaxies(model, config, tiny_model.store, rows, 64, torch.device("cpu"))
    np.testing.assert_allclose(small, large, rtol=1e-5, atol=1e-5)
    assert embed_galaxies(model, config, tiny_model.store, [], 3, torch.device("cpu")).shape == (0, 320)
