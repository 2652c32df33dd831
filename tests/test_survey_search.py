"""A survey searched (issue 38): galaxy-classify --embeddings-out writes each galaxy's float16 PCA features in the
output's order; galaxy-similar --survey searches them exactly below EXACT_MAX rows, else through a FAISS IVF index
built once and saved beside them; the index returns the exact neighbours."""
import numpy as np
import pandas as pd
import pytest

from galaxy_finetune.core import neighbours
from galaxy_finetune.core.neighbours import CosineIndex, SurveyIndex, exact_top, ivf_lists, recall_at

pytestmark = pytest.mark.xdist_group("tiny_model")


def _clustered(n: int, dim: int = 40, seed: int = 0) -> np.ndarray:
    """Features shaped like PCA features: clusters, variance falling with the component."""
    rng = np.random.default_rng(seed)
    scale = 1.0 / np.sqrt(np.arange(1, dim + 1))
    centres = np.random.default_rng(1234).normal(size=(50, dim)) * scale  # the same clusters whatever the seed
    return (centres[rng.integers(0, 50, n)] + 0.5 * rng.normal(size=(n, dim)) * scale).astype(np.float16)


def test_the_index_returns_the_exact_neighbours(tmp_path):
    features = _clustered(3000)
    np.save(tmp_path / "pca.npy", features)
    queries = features[:50].astype(np.float32)
    exact_sim, exact_rows = CosineIndex(features).search(queries, 10)
    every_list = SurveyIndex(tmp_path / "pca.npy", exact=False, probes=ivf_lists(3000))  # visits every list
    assert every_list.built and every_list.index.nlist == ivf_lists(3000) == 219
    sim, rows = every_list.search(queries, 10)
    np.testing.assert_allclose(sim, exact_sim, atol=1e-5)
    assert (rows == exact_rows).mean() > 0.99  # the same rows, but for ties of equal similarity
    default = SurveyIndex(tmp_path / "pca.npy", exact=False)  # the saved index, its calibrated nprobe
    assert not default.built and default.index.nprobe == every_list.record["nprobe"] < 219  # it prunes
    assert every_list.record["calibration"]["recall_at_10"] >= 0.95
    held_out = _clustered(100, seed=7).astype(np.float32)  # new galaxies like the survey's, not in it
    truth = exact_top(features, held_out, 10)
    np.testing.assert_array_equal(truth[:, 0], CosineIndex(features).search(held_out, 1)[1][:, 0])
    assert recall_at(default.search(held_out, 10)[1], truth) >= 0.9


def test_the_index_is_built_once_and_again_only_when_the_features_change(tmp_path):
    np.save(tmp_path / "pca.npy", _clustered(2000, seed=1))
    assert SurveyIndex(tmp_path / "pca.npy", exact=False).built
    assert (tmp_path / "pca.npy.faiss").is_file() and (tmp_path / "pca.npy.faiss.json").is_file()
    assert not SurveyIndex(tmp_path / "pca.npy", exact=False).built
    np.save(tmp_path / "pca.npy", _clustered(2500, seed=2))
    again = SurveyIndex(tmp_path / "pca.npy", exact=False)
    assert again.built and again.index.ntotal == 2500


def test_small_surveys_are_searched_exactly(tmp_path, monkeypatch):
    np.save(tmp_path / "pca.npy", _clustered(500))
    assert SurveyIndex(tmp_path / "pca.npy").exact and not (tmp_path / "pca.npy.faiss").exists()
    monkeypatch.setattr(neighbours, "EXACT_MAX", 100)
    assert not SurveyIndex(tmp_path / "pca.npy").exact


def test_classify_writes_the_pca_features_and_similar_searches_the_survey(tiny_model, tmp_path, capsys, monkeypatch):
    import shutil

    from galaxy_finetune.core.files import read_table
    from galaxy_finetune.inference import similar
    from galaxy_finetune.inference.classify import main as classify
    from galaxy_finetune.inference.embed import embed_splits
    from galaxy_finetune.inference.embeddings import read_embeddings

    embed_splits(tiny_model.model, tiny_model.store, tiny_model.splits, tmp_path / "emb", 16, 4, "cpu")
    emb = read_embeddings(tmp_path / "emb")
    folder = tmp_path / "survey"
    folder.mkdir()
    for src in tiny_model.sources:
        shutil.copy(src, folder)
    out, features = tmp_path / "survey.parquet", tmp_path / "survey_pca.npy"
    classify([str(tiny_model.model), str(folder), "-o", str(out), "--accelerator", "cpu", "--batch-size", "5",
              "--embeddings", str(tmp_path / "emb"), "--embeddings-out", str(features)])
    assert capsys.readouterr().out.strip().endswith(f"; PCA features -> {features}")
    pca = np.load(features)
    table = pd.read_parquet(out)
    assert pca.dtype == np.float16 and pca.shape == (24, 4) and len(table) == 24
    # row i of the features is row i of the output: the embed stage's features of the same galaxy
    by_file = {src.split("/")[-1]: row for row, src in enumerate(tiny_model.sources)}
    stored = emb.galaxies.reset_index().set_index("row")["index"]
    expected = emb.pca_features[[stored[by_file[f.split("/")[-1]]] for f in table["file"]]]
    np.testing.assert_allclose(pca.astype(np.float32), expected, atol=2e-2, rtol=2e-3)

    common = ["--survey", str(out), "--survey-features", str(features), "--embeddings", str(tmp_path / "emb"),
              "--model", str(tiny_model.model), "--accelerator", "cpu", "-k", "3"]
    query = table["id_str"].iloc[5]
    similar.main([query, "-o", str(tmp_path / "like.csv"), "--sheet", str(tmp_path / "like.png"), *common])
    found = read_table(tmp_path / "like.csv")
    assert list(found.columns) == ["rank", "id_str", "similarity", "file", "pred_label", "confidence"]
    unit = pca.astype(np.float32) / np.linalg.norm(pca.astype(np.float32), axis=1, keepdims=True)
    cosine = unit @ unit[5]
    cosine[5] = -np.inf
    assert found["id_str"].tolist() == table["id_str"].iloc[np.argsort(-cosine)[:3]].tolist()
    assert "exact" in capsys.readouterr().out and (tmp_path / "like.png").stat().st_size > 1000
    # the same survey through the FAISS index (forced below its size): the same neighbours here
    monkeypatch.setattr(neighbours, "EXACT_MAX", 10)
    similar.main([query, "-o", str(tmp_path / "like_ivf.csv"), "--sheet", str(tmp_path / "like_ivf.png"), *common])
    printed = capsys.readouterr().out
    assert "built the index of 24 galaxies" in printed and "FAISS IVF index" in printed
    pd.testing.assert_frame_equal(read_table(tmp_path / "like_ivf.csv"), found, atol=1e-5)
    # an image file goes through the model and the survey's PCA: its own galaxy first
    similar.main([str(tiny_model.sources[0]), "-o", str(tmp_path / "img.csv"), "--sheet", str(tmp_path / "img.png"),
                  *common])
    assert read_table(tmp_path / "img.csv")["file"].iloc[0].endswith(tiny_model.sources[0].split("/")[-1])


def test_a_survey_without_its_features_is_one_line(tmp_path, capsys):
    from galaxy_finetune.inference.similar import main

    pd.DataFrame({"id_str": ["a"], "file": ["a.png"]}).to_csv(tmp_path / "out.csv", index=False)
    with pytest.raises(SystemExit):
        main(["a", "--survey", str(tmp_path / "out.csv"), "--survey-features", str(tmp_path / "none.npy")])
    assert capsys.readouterr().err.strip() == (f"error: --survey-features {tmp_path / 'none.npy'}: not found; write "
                                               "it with galaxy-classify --embeddings-out")
