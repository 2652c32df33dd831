"""galaxy-similar's library (inference/similar.py): the k nearest galaxies by cosine similarity of the PCA
features, the query left out, most similar first; an image file goes through the model as the store did."""
import numpy as np
import pandas as pd
import pytest

from galaxy_finetune.inference.embed import embed_splits
from galaxy_finetune.inference.embeddings import read_embeddings, write_embeddings
from galaxy_finetune.inference.similar import SimilaritySearch, embed_image

# with pytest-xdist: the modules of the session's one tiny trained model run on one worker
pytestmark = pytest.mark.xdist_group("tiny_model")


def test_neighbours_are_ranked_by_cosine_similarity_without_the_query(tmp_path):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(30, 12))
    features[7] = features[3] * 2 + rng.normal(scale=1e-3, size=12)  # 7: a brighter copy of 3, same direction
    galaxies = pd.DataFrame({"id_str": [f"g{i}" for i in range(30)], "split": ["train"] * 20 + ["test"] * 10,
                             "label": 0, "label_name": "round", "row": range(30)})
    write_embeddings(tmp_path, galaxies, features, 12)
    search = SimilaritySearch.load(tmp_path)
    found = search.like_galaxy("g3", 5)
    assert found["rank"].tolist() == [1, 2, 3, 4, 5] and "g3" not in found["id_str"].tolist()
    assert found["id_str"].iloc[0] == "g7" and found["similarity"].iloc[0] > 0.99
    pca = read_embeddings(tmp_path).pca_features
    unit = pca / np.linalg.norm(pca, axis=1, keepdims=True)
    cosine = unit @ unit[3]
    cosine[3] = -np.inf
    assert found["id_str"].tolist() == [f"g{i}" for i in np.argsort(-cosine)[:5]]
    np.testing.assert_allclose(found["similarity"], np.sort(cosine)[::-1][:5], atol=1e-5)
    by_features = search.like_features(pca[3], 2)
    assert by_features["id_str"].tolist() == ["g3", "g7"]  # from features, the galaxy itself comes first


def test_an_image_file_is_embedded_as_its_stored_galaxy(tiny_model, tmp_path):
    embed_splits(tiny_model.model, tiny_model.store, tiny_model.splits, tmp_path / "emb", 16, 4, "cpu")
    emb = read_embeddings(tmp_path / "emb")
    row = int(emb.galaxies["row"].iloc[0])
    pixels, pca = embed_image(tiny_model.sources[row], tiny_model.model, emb, "cpu")
    np.testing.assert_array_equal(pixels, np.load(tiny_model.store / "images.npy", mmap_mode="r")[row])
    np.testing.assert_allclose(pca[0], emb.pca_features[0], atol=1e-3)
    assert SimilaritySearch(emb).like_features(pca, 1)["id_str"].iloc[0] == emb.galaxies["id_str"].iloc[0]


@pytest.mark.parametrize("k", [1, 29])
def test_k_neighbours_whatever_k(tmp_path, k):
    galaxies = pd.DataFrame({"id_str": [f"g{i}" for i in range(30)], "split": "train", "label": 0,
                             "label_name": "round", "row": range(30)})
    write_embeddings(tmp_path, galaxies, np.random.default_rng(1).normal(size=(30, 6)), 4)
    found = SimilaritySearch.load(tmp_path).like_galaxy("g0", k)
    assert len(found) == k and found["id_str"].is_unique and (np.diff(found["similarity"]) <= 0).all()


def test_a_folder_query_finds_each_images_galaxies_and_skips_damaged_ones(tiny_model, tmp_path, capsys):
    """Issue 27: galaxy-similar over a folder: every good image's k galaxies (each stored galaxy's own file finds
    itself first); an empty and a cut-short JPEG are skipped, named, counted and listed; other files ignored."""
    import shutil

    from galaxy_finetune.data.sources import id_from_file
    from galaxy_finetune.inference.similar import main
    from tests.test_classify import damage

    embed_splits(tiny_model.model, tiny_model.store, tiny_model.splits, tmp_path / "emb", 16, 4, "cpu")
    emb = read_embeddings(tmp_path / "emb")
    folder = tmp_path / "survey"
    folder.mkdir()
    rows = emb.galaxies["row"].iloc[:3].tolist()
    for row in rows:
        shutil.copy(tiny_model.sources[row], folder)
    damage(folder)
    out, sheet = tmp_path / "like.csv", tmp_path / "like.png"
    common = ["--embeddings", str(tmp_path / "emb"), "--store", str(tiny_model.store), "--model",
              str(tiny_model.model), "--accelerator", "cpu"]
    main([str(folder), "-k", "2", "-o", str(out), "--sheet", str(sheet), *common])  # no SystemExit: status 0
    found = pd.read_csv(out, dtype={"query_id": str, "id_str": str})
    assert list(found.columns[:3]) == ["query_id", "query_file", "rank"] and len(found) == 6
    firsts = found[found["rank"] == 1].set_index("query_id")
    by_row = emb.galaxies.set_index("row")["id_str"]
    for row in rows:
        query = id_from_file(tiny_model.sources[row])
        assert firsts.loc[query, "id_str"] == by_row[row] and firsts.loc[query, "similarity"] > 0.999
    assert pd.read_csv(tmp_path / "like_skipped.csv")["id_str"].tolist() == ["cut", "empty"]
    assert sheet.stat().st_size > 1000
    captured = capsys.readouterr()
    assert sum(line.startswith("warning:") and line.endswith("; skipped") for line in captured.err.splitlines()) == 2
    assert captured.out.strip().splitlines()[-1].endswith(
        f"2 damaged image(s) skipped, listed in {tmp_path / 'like_skipped.csv'}")
    for name in ("notes.txt", "cut.jpg", "empty.jpg"):  # nothing decodable left: exit 1, one line
        (folder / name).unlink(missing_ok=True)
    for png in folder.glob("*.png"):
        png.write_bytes(b"")
    with pytest.raises(SystemExit) as info:
        main([str(folder), "-o", str(tmp_path / "none.csv"), "--sheet", str(tmp_path / "none.png"), *common])
    assert info.value.code == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"error: {folder}: none of its 3 image(s) could be decoded")
    assert not (tmp_path / "none.csv").exists()
