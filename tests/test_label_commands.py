"""The label budget through the project's own files: identical images through store and split, the shift columns
and warning of predict and galaxy-classify, and galaxy-label-next (a tiny untrained model: none of these need
training)."""
import argparse
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from galaxy_finetune.core.classes import read_classes
from galaxy_finetune.core.params import AugmentParams, Params, TrainParams
from galaxy_finetune.data.synthetic import render_galaxy
from tests.tiny import prepare

# with pytest-xdist: the module's one tiny project is built once, on one worker
pytestmark = pytest.mark.xdist_group("label_commands")


def _save(folder, images, prefix="n"):
    folder.mkdir(parents=True, exist_ok=True)
    for i, pixels in enumerate(images):
        Image.fromarray(pixels).save(folder / f"{prefix}{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """data/{raw,store,splits,embeddings} and an untrained models/finetuned of a tiny synthetic catalog."""
    from galaxy_finetune.data.store import read_record
    from galaxy_finetune.inference.embed import embed_splits
    from galaxy_finetune.data.encoder import build_encoder, encoder_record
    from galaxy_finetune.training.classifier import build_classifier
    from galaxy_finetune.training.model_io import save_finetuned
    from galaxy_finetune.core.task import Task
    from galaxy_finetune.training.train import model_config

    root = tmp_path_factory.mktemp("labels")
    params = Params.model_validate({
        "data": {"source": "synthetic", "synthetic_n_per_class": 40, "synthetic_image_size": 32},
        "model": {"encoder": "random", "random_arch": "resnet10t"},  # no normalisation layer undoes a shift
        "scratch": {"input_size": 32}, "train": {"input_size": 32}, "writeup": {"input_size": 32}})
    paths = prepare(root, params, val_fraction=0.4)
    train = TrainParams(input_size=32)
    model = build_classifier(build_encoder(paths.encoder), 4, train)
    paths.model = root / "models/finetuned"
    save_finetuned(paths.model, model, model_config(encoder_record(paths.encoder), read_record(paths.store), train, AugmentParams(), {},
                                                    Task("classification", tuple(read_classes(paths.raw)))))
    paths.embeddings = root / "data/embeddings"
    embed_splits(paths.model, paths.store, paths.splits, paths.embeddings, 64, 8, "cpu")
    return paths


def test_shift_columns_and_warning_only_for_galaxies_unlike_training(project, tmp_path, capsys):
    from galaxy_finetune.inference.classify import main
    from galaxy_finetune.inference.predict import predict_splits

    predict_splits(project.model, project.store, project.splits, tmp_path / "pred", ["test"], 32, "cpu",
                   parts_root=tmp_path / "parts", embeddings_dir=project.embeddings)
    test = pd.read_csv(tmp_path / "pred/test.csv")
    assert list(test.columns[-2:]) == ["train_distance", "val_share_farther"]
    assert (test["val_share_farther"] < 0.10).mean() < 0.5

    like = _save(tmp_path / "like", [render_galaxy(i % 4, 7, i, 32) for i in range(40)])  # new draws, same recipe
    rng = np.random.default_rng(0)
    noisy = [np.clip(render_galaxy(i % 4, 7, i, 32) + rng.normal(0, 60, (32, 32, 3)), 0, 255).astype(np.uint8)
             for i in range(40)]  # the same kind of galaxies under heavy noise: another survey depth
    shifted = _save(tmp_path / "shifted", noisy)
    args = ["--accelerator", "cpu", "--embeddings", str(project.embeddings)]
    main([str(project.model), str(like), "-o", str(tmp_path / "like.csv"), *args])
    assert "warning:" not in capsys.readouterr().err
    main([str(project.model), str(shifted), "-o", str(tmp_path / "shifted.csv"), *args])
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "lie farther from the training set than 90% of validation galaxies" in err
    out = pd.read_csv(tmp_path / "shifted.csv")
    assert (out["val_share_farther"] < 0.10).mean() > 0.5
    main([str(project.model), str(like), "-o", str(tmp_path / "none.csv"), "--accelerator", "cpu",
          "--embeddings", str(tmp_path / "nowhere")])
    assert "no distance from the training set" in capsys.readouterr().out
    assert "train_distance" not in pd.read_csv(tmp_path / "none.csv").columns


def test_label_next_writes_k_ranked_galaxies_and_a_sheet(project, tmp_path, capsys):
    from galaxy_finetune.labels.next import main

    folder = _save(tmp_path / "pool", [render_galaxy(i % 4, 9, i, 32) for i in range(30)])
    out, sheet = tmp_path / "next.csv", tmp_path / "next.png"
    main([str(project.model), str(folder), "-k", "7", "--diverse", "-o", str(out), "--sheet", str(sheet),
          "--passes", "5", "--embeddings", str(project.embeddings), "--accelerator", "cpu"])
    table = pd.read_csv(out)
    assert len(table) == 7 and table["rank"].tolist() == list(range(1, 8))
    assert (np.diff(table["bald"]) <= 1e-9).all() and table["id_str"].is_unique
    assert {"p_smooth_round", "train_distance"} <= set(table.columns)
    assert sheet.stat().st_size > 1000
    with pytest.raises(SystemExit) as info:
        main([str(project.model), str(folder), "-k", "0", "-o", str(out)])
    assert info.value.code == 1
    assert capsys.readouterr().err.strip().splitlines() == ["error: -k 0: ask for at least one galaxy"]


def test_issue34_label_next_over_an_own_catalog_ranks_only_the_galaxies_nobody_labelled(project, tmp_path, capsys):
    from galaxy_finetune.labels.next import main

    folder = _save(tmp_path / "survey", [render_galaxy(i % 4, 9, i, 32) for i in range(12)])
    labels = ["smooth_round", "", "edge_on_disk", "", "", "smooth_cigar", "", "unbarred_spiral", "", "", "x", ""]
    catalog = pd.DataFrame({"file_loc": [f"n{i:03d}.png" for i in range(12)], "label": labels})
    catalog.to_csv(folder / "catalog.csv", index=False)
    out = tmp_path / "next.csv"
    main([str(project.model), str(folder / "catalog.csv"), "-k", "50", "--score", "entropy", "-o", str(out),
          "--sheet", str(tmp_path / "next.png"), "--embeddings", str(tmp_path / "none"), "--accelerator", "cpu"])
    ranked = pd.read_csv(out)
    assert set(ranked["id_str"]) == {f"n{i:03d}" for i, label in enumerate(labels) if not label}
    catalog.assign(label="smooth_round").to_csv(folder / "catalog.csv", index=False)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main([str(project.model), str(folder / "catalog.csv"), "-o", str(out), "--accelerator", "cpu"])
    assert "every galaxy has a label; point galaxy-label-next at galaxies still to label" in capsys.readouterr().err


def test_label_next_skips_damaged_images_names_counts_and_lists_them(project, tmp_path, capsys):
    """Issue 27: the good galaxies of a folder are ranked; an empty and a cut-short JPEG are skipped, each named in a
    warning, counted in the last line and listed beside the output; a note is ignored; exit status 0."""
    from galaxy_finetune.labels.next import main
    from tests.test_classify import damage

    folder = _save(tmp_path / "pool", [render_galaxy(i % 4, 9, i, 32) for i in range(10)])
    damage(folder)
    out = tmp_path / "next.csv"
    main([str(project.model), str(folder), "-k", "4", "--score", "entropy", "-o", str(out), "--sheet",
          str(tmp_path / "next.png"), "--embeddings", str(project.embeddings), "--accelerator", "cpu",
          "--batch-size", "4"])
    table = pd.read_csv(out)
    assert len(table) == 4 and set(table["id_str"]) <= {f"n{i:03d}" for i in range(10)}
    listed = pd.read_csv(tmp_path / "next_skipped.csv")
    assert listed["id_str"].tolist() == ["cut", "empty"] and listed["file"].tolist() == [str(folder / "cut.jpg"),
                                                                                         str(folder / "empty.jpg")]
    captured = capsys.readouterr()
    assert sum(line.startswith("warning:") and line.endswith("; skipped") for line in captured.err.splitlines()) == 2
    last = captured.out.strip().splitlines()[-1]
    assert "the 4 of 10 galaxies" in last and last.endswith(f"2 damaged image(s) skipped, listed in {listed_path(out)}")
    # nothing decodable at all: exit 1 with one line
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes(b"not a png")
    with pytest.raises(SystemExit) as info:
        main([str(project.model), str(broken), "-o", str(tmp_path / "none.csv"), "--accelerator", "cpu"])
    assert info.value.code == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: none of the 1 image(s) could be decoded") and "a.png" in error
    assert not (tmp_path / "none.csv").exists()


def listed_path(out):
    return out.with_name(f"{out.stem}_skipped.csv")


def test_an_image_copied_under_a_second_id_is_reported_and_kept_in_one_split(tmp_path, capsys):
    import stages.split
    from galaxy_finetune.core.cli import _shown, quiet_logs
    from galaxy_finetune.data.split import read_catalog
    from galaxy_finetune.data.store import build_store

    folder = _save(tmp_path / "src", [render_galaxy(i % 2, 1, i, 24) for i in range(40)], prefix="g")
    shutil.copy(folder / "g003.png", folder / "copy_of_g003.png")
    raw = tmp_path / "raw"
    raw.mkdir()
    files = sorted(folder.iterdir())
    catalog = pd.DataFrame({"id_str": [f.stem for f in files], "label": [0 if f.stem == "copy_of_g003" else
                                                                         int(f.stem[1:]) % 2 for f in files]})
    catalog["label_name"] = np.array(["a", "b"])[catalog["label"]]
    # the catalog puts the copy in test and the original in train: without the hashes it would leak
    catalog["split"] = np.where(catalog["id_str"] == "copy_of_g003", "test",
                                np.where(np.arange(len(files)) % 4 == 0, "test", "train"))
    catalog.loc[catalog["id_str"] == "g003", "split"] = "train"
    catalog["src"] = [str(f) for f in files]
    catalog.to_csv(raw / "catalog.csv", index=False)
    (raw / "source.json").write_text('{"classes": ["a", "b"]}')
    build_store(read_catalog(raw).drop(columns="row"), tmp_path / "store", 24, threads=1)
    _shown.clear()
    quiet_logs()  # as run_stage does: each warning one line
    stages.split.main(argparse.Namespace(raw_dir=raw, splits_out=tmp_path / "splits", store=tmp_path / "store"),
                      Params())
    where = {name: set(pd.read_csv(tmp_path / "splits" / f"{name}.csv")["id_str"]) for name in ("train", "val", "test")}
    homes = [name for name, ids in where.items() if {"g003", "copy_of_g003"} & ids]
    assert homes == ["test"] and {"g003", "copy_of_g003"} <= where["test"]
    dupes = pd.read_csv(tmp_path / "splits/duplicates.csv")
    assert dupes[["id_a", "id_b", "split"]].values.tolist() == [["copy_of_g003", "g003", "test"]]
    warning = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "'copy_of_g003' and 'g003'" in warning[0] and "both in test" in warning[0]
