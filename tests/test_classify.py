"""galaxy-classify: new galaxies through exactly the pipeline's preprocessing."""
import numpy as np
import pandas as pd
import pytest

from galaxy_finetune.classify import main
from galaxy_finetune.fetch import fetch_data
from galaxy_finetune.layout import CATALOG
from galaxy_finetune.params import AugmentParams, Params
from galaxy_finetune.predict import predict_splits
from galaxy_finetune.split import split_catalog
from galaxy_finetune.train import finetune


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("classify")
    params = Params.model_validate({
        "data": {"source": "synthetic", "synthetic_n_per_class": 6, "synthetic_image_size": 32},
        "model": {"encoder": "random", "random_arch": "convnext_atto"},
        "train": {"lr": 1e-3, "batch_size": 8, "input_size": 32, "epochs": 1, "accelerator": "cpu"}})
    fetch_data(params, root / "raw", root / "encoder", cache=root / "cache")
    catalog = pd.read_csv(root / "raw" / CATALOG, keep_default_na=False)
    (root / "splits").mkdir()
    for name, frame in split_catalog(catalog, 0.2, 0.3, 0).items():
        frame.to_csv(root / f"splits/{name}.csv", index=False)
    finetune(params.train, AugmentParams(), "full", list(params.data.classes), root / "splits", root / "raw",
             root / "encoder", root / "model", root / "live", root / "ckpt")
    return root


def test_folder_matches_the_predict_stage(trained, tmp_path, capsys):
    tables, _ = predict_splits(trained / "model", trained / "splits", trained / "raw", ["test"], 16, "cpu")
    test = pd.read_csv(trained / "splits/test.csv")
    folder = tmp_path / "new"
    folder.mkdir()
    for f in test["file"]:
        (folder / f.split("/")[-1]).write_bytes((trained / "raw" / f).read_bytes())
    main([str(trained / "model"), str(folder), "-o", str(tmp_path / "out.csv"), "--accelerator", "cpu"])
    out = pd.read_csv(tmp_path / "out.csv").set_index("id_str").loc[tables["test"]["id_str"]]
    classes = [c for c in out.columns if c.startswith("p_")]
    assert np.allclose(out[classes].to_numpy(), tables["test"][classes].to_numpy(), atol=1e-5)
    assert (out["pred_label"].to_numpy() == tables["test"]["pred_label"].to_numpy()).all()
    assert "galaxies ->" in capsys.readouterr().out


def test_catalog_input_with_relative_paths(trained, tmp_path):
    raw = trained / "raw"
    pd.DataFrame({"file_loc": ["images/synthetic_000000.png", "images/synthetic_000001.png"],
                  "id_str": ["a", "b"]}).to_csv(raw / "mine.csv", index=False)
    main([str(trained / "model"), str(raw / "mine.csv"), "-o", str(tmp_path / "out.csv"), "--accelerator", "cpu"])
    out = pd.read_csv(tmp_path / "out.csv")
    assert out["id_str"].tolist() == ["a", "b"] and "true_label" not in out.columns
    assert np.allclose(out.filter(like="p_").sum(1), 1, atol=1e-5)


def test_unreadable_image_is_named_and_nothing_written(trained, tmp_path, capsys):
    folder = tmp_path / "new"
    folder.mkdir()
    (folder / "good.png").write_bytes((trained / "raw/images/synthetic_000000.png").read_bytes())
    (folder / "broken.png").write_bytes(b"not a png")
    with pytest.raises(SystemExit) as exit_:
        main([str(trained / "model"), str(folder), "-o", str(tmp_path / "out.csv")])
    assert exit_.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "broken.png" in err and "\n" not in err
    assert not (tmp_path / "out.csv").exists()


def test_missing_model_and_bad_catalog(trained, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([str(tmp_path / "nomodel"), str(trained / "raw/images")])
    assert "run the finetune_gpu stage first" in capsys.readouterr().err
    (tmp_path / "cat.csv").write_text("path\nx.png\n")
    with pytest.raises(SystemExit):
        main([str(trained / "model"), str(tmp_path / "cat.csv")])
    assert "missing column(s) ['file_loc']" in capsys.readouterr().err
