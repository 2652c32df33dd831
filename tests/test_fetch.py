"""fetch_data: what can be had is used, what is missing is replaced and named, and an unchanged source costs nothing."""
import os

import pandas as pd
import pytest
from PIL import Image

from galaxy_finetune.core.errors import PipelineError
from galaxy_finetune.data.fetch import fetch_data
from galaxy_finetune.core.files import read_json
from galaxy_finetune.core.layout import CATALOG, ENCODER_RECORD, MANIFEST, SOURCE
from galaxy_finetune.core.params import Params


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setenv("GALAXY_FINETUNE_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-empty"))


def _fetch(params, tmp_path):
    return fetch_data(params, tmp_path / "raw", tmp_path / "encoder", cache=tmp_path / "cache")


def test_offline_replaces_both_and_says_so(tmp_path, capsys):
    params = Params.model_validate({"data": {"synthetic_n_per_class": 3, "synthetic_image_size": 32}})
    manifest = _fetch(params, tmp_path)
    assert manifest["source"] == "synthetic" and manifest["data"]["substituted"]
    assert manifest["run_label"] == ("SYNTHETIC stand-in for GalaxyMNIST, 12 galaxies | "
                                     "no pretraining: random ConvNeXt-Nano")
    data_why, encoder_why = manifest["substitutions"]
    assert "galaxy_mnist_train_catalog.parquet" in data_why and "12 synthetic galaxies" in data_why
    assert "hf_hub:mwalmsley/zoobot-encoder-convnext_nano" in encoder_why
    assert manifest["requested"] == {"source": "galaxy_mnist", "encoder": params.model.encoder}
    assert manifest["counts_per_class"] == {c: 3 for c in params.data.classes}
    assert manifest["encoder"]["source"] == "random" and not manifest["encoder"]["pretrained"]
    assert read_json(tmp_path / "raw" / MANIFEST) == manifest
    catalog = pd.read_csv(tmp_path / "raw" / CATALOG)
    assert list(catalog.columns) == ["id_str", "label", "label_name", "split", "src"]
    assert all(os.path.isabs(p) and os.path.isfile(p) for p in catalog["src"])
    assert not (tmp_path / "raw" / "images").exists()  # nothing copied: the store decodes from src
    assert "OFFLINE STAND-IN" in capsys.readouterr().err
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_offline_error_names_what_is_missing_and_writes_nothing(tmp_path):
    params = Params.model_validate({"fetch": {"offline": "error"}})
    with pytest.raises(PipelineError) as err:
        _fetch(params, tmp_path)
    msg = str(err.value)
    assert "galaxy_mnist_train_catalog.parquet" in msg and "data.local_dir" in msg and "hf_hub:" in msg
    assert not (tmp_path / "raw").exists() and not (tmp_path / "encoder").exists()


def _own_catalog(tmp_path, n_per_class=3):
    folder = tmp_path / "mine"
    folder.mkdir()
    rows = []
    for i in range(4 * n_per_class):
        Image.new("RGB", (20, 20), (10 * i, 5, 200 - 10 * i)).save(folder / f"g{i}.png")
        rows.append({"file_loc": f"g{i}.png", "label": i % 4})
    pd.DataFrame(rows).to_csv(folder / "catalog.csv", index=False)
    return folder / "catalog.csv"


def test_own_catalog_is_kept_when_only_the_weights_are_missing(tmp_path, capsys):
    """Issue 10, case 1: the user's galaxies are never swapped for synthetic ones."""
    params = Params.model_validate({"data": {"source": "catalog", "catalog": str(_own_catalog(tmp_path))}})
    manifest = _fetch(params, tmp_path)
    assert manifest["source"] == "catalog" and not manifest["data"]["substituted"] and manifest["n_images"] == 12
    assert manifest["run_label"] == "own catalog, 12 galaxies | no pretraining: random ConvNeXt-Nano"
    assert len(manifest["substitutions"]) == 1 and "hf_hub:" in manifest["substitutions"][0]
    assert "own catalog, 12 galaxies" in capsys.readouterr().err


def test_explicit_synthetic_and_random_substitutes_nothing(tmp_path):
    params = Params.model_validate({"data": {"source": "synthetic", "synthetic_n_per_class": 3,
                                             "synthetic_image_size": 32},
                                    "model": {"encoder": "random", "random_arch": "convnext_atto"}})
    manifest = _fetch(params, tmp_path)
    assert manifest["substitutions"] == [] and manifest["n_images"] == 12
    assert manifest["run_label"] == "synthetic galaxies, 12 galaxies | no pretraining: random ConvNeXt-Atto"
    assert manifest["encoder"]["arch"] == "convnext_atto"


def test_missing_weights_use_model_random_arch(tmp_path):
    params = Params.model_validate({"data": {"source": "synthetic", "synthetic_n_per_class": 3,
                                             "synthetic_image_size": 32},
                                    "model": {"random_arch": "convnext_atto"}})
    assert _fetch(params, tmp_path)["encoder"]["arch"] == "convnext_atto"


def test_unchanged_source_writes_nothing_and_a_changed_file_is_seen(tmp_path, capsys):
    catalog = _own_catalog(tmp_path)
    params = Params.model_validate({"data": {"source": "catalog", "catalog": str(catalog)},
                                    "model": {"encoder": "random"}})
    first = _fetch(params, tmp_path)
    outputs = [tmp_path / "raw" / n for n in (CATALOG, SOURCE, MANIFEST)]
    outputs.append(tmp_path / "encoder" / ENCODER_RECORD)
    stamps = [p.stat().st_mtime_ns for p in outputs]
    capsys.readouterr()
    assert _fetch(params, tmp_path) == first
    assert [p.stat().st_mtime_ns for p in outputs] == stamps  # nothing rewritten
    assert "nothing changed" in capsys.readouterr().out
    image = catalog.parent / "g3.png"
    Image.new("RGB", (20, 20), (1, 2, 3)).save(image)  # same path and catalog, new pixels
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    again = _fetch(params, tmp_path)
    assert again["data_fingerprint"] != first["data_fingerprint"]


@pytest.mark.parametrize("bad_id, message", [
    ("", "empty id_str"), ("   ", "empty id_str"), ("a\x00b", "control character"), ("a\nb", "control character")])
def test_unusable_ids_are_refused_with_one_line(tmp_path, bad_id, message):
    catalog = _own_catalog(tmp_path)
    frame = pd.read_csv(catalog)
    frame["id_str"] = [f"g{i}" for i in range(len(frame))]
    frame.loc[2, "id_str"] = bad_id
    frame.to_parquet(catalog.with_suffix(".parquet"))  # parquet keeps NUL and newlines intact
    params = Params.model_validate({"data": {"source": "catalog", "catalog": str(catalog.with_suffix(".parquet"))},
                                    "model": {"encoder": "random"}})
    with pytest.raises(PipelineError, match=message) as err:
        _fetch(params, tmp_path)
    assert "\n" not in str(err.value).replace(repr(bad_id), "")
    assert not (tmp_path / "raw").exists()


def test_ids_that_look_like_paths_never_become_file_names(tmp_path):
    """Issue 11, bug 1: ids are data; nothing is written under an id's name, inside the project or out."""
    catalog = _own_catalog(tmp_path)
    outside = tmp_path / "outside"
    weird = [str(outside / "abs"), "../../escape", "a/b/c", "a\\b\\c", "x" * 5000, "galaxie_été_銀河", "..", ".",
             "-", "NA", "007", "id with spaces"]
    frame = pd.read_csv(catalog)
    frame["id_str"] = weird
    frame.to_csv(catalog, index=False)
    params = Params.model_validate({"data": {"source": "catalog", "catalog": str(catalog)},
                                    "model": {"encoder": "random"}})
    before = {p for p in tmp_path.rglob("*")}
    manifest = _fetch(params, tmp_path)
    assert manifest["n_images"] == len(weird)
    assert pd.read_csv(tmp_path / "raw" / CATALOG, keep_default_na=False)["id_str"].tolist() == weird
    created = {p for p in tmp_path.rglob("*")} - before
    assert all(p.is_relative_to(tmp_path / "raw") or p.is_relative_to(tmp_path / "encoder")
               or p.is_relative_to(tmp_path / "cache") for p in created), created
    assert not outside.exists()


def test_data_classes_pick_and_order_a_built_in_datasets_classes(tmp_path):
    """data.classes is the one list of classes: a subset of GalaxyMNIST's (here its offline stand-in's), in the
    user's order, labels 0..k-1 follow it, and every later stage reads it from source.json."""
    from galaxy_finetune.core.classes import read_classes

    params = Params.model_validate({"data": {"synthetic_n_per_class": 3, "synthetic_image_size": 32,
                                             "classes": ["edge_on_disk", "smooth_round"]}})
    manifest = _fetch(params, tmp_path)
    assert read_classes(tmp_path / "raw") == ["edge_on_disk", "smooth_round"]
    assert manifest["counts_per_class"] == {"edge_on_disk": 3, "smooth_round": 3} and "classes" not in manifest
    catalog = pd.read_csv(tmp_path / "raw" / CATALOG)
    assert len(catalog) == 6
    assert (catalog["label_name"] == catalog["label"].map({0: "edge_on_disk", 1: "smooth_round"})).all()


def test_a_class_the_dataset_lacks_is_one_line(tmp_path):
    params = Params.model_validate({"data": {"source": "synthetic", "synthetic_n_per_class": 2,
                                             "synthetic_image_size": 32, "classes": ["smooth_round", "barred"]}})
    with pytest.raises(PipelineError, match=r"data.classes: \['barred'\] not among synthetic galaxies's classes"):
        _fetch(params, tmp_path)
    assert not (tmp_path / "raw").exists()


def _named_catalog(tmp_path, names, n_per_class=3):
    """A catalog labelled with its own class names (no data.classes), `n_per_class` 20 px images each."""
    folder = tmp_path / "named"
    folder.mkdir()
    rows = []
    for i in range(len(names) * n_per_class):
        Image.new("RGB", (20, 20), (7 * i % 256, 5, 200 - 3 * i)).save(folder / f"g{i}.png")
        rows.append({"file_loc": f"g{i}.png", "label": names[i % len(names)]})
    pd.DataFrame(rows).to_csv(folder / "catalog.csv", index=False)
    return folder / "catalog.csv"


def test_own_class_names_are_read_from_the_catalog_said_and_recorded(tmp_path, capsys):
    """Issue 27: round/cigar/edge/spiral with data.classes left empty: sorted, in the stage line and source.json."""
    from stages import fetch_data as stage

    catalog = _named_catalog(tmp_path, ["round", "cigar", "edge", "spiral"])
    params = Params.model_validate({"data": {"source": "catalog", "catalog": str(catalog)},
                                    "model": {"encoder": "random"}})
    assert params.data.classes == []
    args = type("Args", (), {"raw_out": tmp_path / "raw", "encoder_out": tmp_path / "encoder", "params": None})
    stage.main(args, params)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line == ("fetch_data: own catalog, 12 galaxies | no pretraining: random ConvNeXt-Nano; classes read from "
                    "the catalog's labels (data.classes is empty): ['cigar', 'edge', 'round', 'spiral'], "
                    "label i = classes[i]")
    assert read_json(tmp_path / "raw" / SOURCE)["classes"] == ["cigar", "edge", "round", "spiral"]
    written = pd.read_csv(tmp_path / "raw" / CATALOG)
    assert (written["label_name"] == written["label"].map(dict(enumerate(["cigar", "edge", "round", "spiral"])))).all()
    stage.main(args, params)  # an unchanged rerun says it again
    assert "['cigar', 'edge', 'round', 'spiral']" in capsys.readouterr().out


def test_ten_classes_train_with_nothing_but_data_catalog_set(tmp_path):
    """Issue 27: a ten-class catalog (all of Galaxy10 DECaLS's classes) runs fetch_data, store, split and training
    with only data.source and data.catalog set; the model names its ten classes."""
    from galaxy_finetune.core.params import AugmentParams
    from galaxy_finetune.training.train import FinetuneJob, finetune
    from tests.tiny import prepare

    names = ["disturbed", "merging", "round_smooth", "in_between_round_smooth", "cigar_shaped_smooth", "barred_spiral",
             "unbarred_tight_spiral", "unbarred_loose_spiral", "edge_on_without_bulge", "edge_on_with_bulge"]
    catalog = _named_catalog(tmp_path, names, n_per_class=6)
    params = Params.model_validate({"data": {"source": "catalog", "catalog": str(catalog)},
                                    "model": {"encoder": "random", "random_arch": "convnext_atto"},
                                    "train": {"lr": 1e-3, "batch_size": 8, "input_size": 32, "epochs": 1, "steps": 0,
                                              "accelerator": "cpu"},
                                    "writeup": {"input_size": 32}, "scratch": {"input_size": 32}})  # a 32 px store
    paths = prepare(tmp_path / "run", params, val_fraction=0.25, test_fraction=0.25)
    assert read_json(paths.raw / SOURCE)["classes"] == sorted(names)
    assert paths.manifest["counts_per_class"] == {c: 6 for c in sorted(names)}
    finetune(params.train, AugmentParams(), "train", paths.manifest,
             FinetuneJob(paths.raw, paths.store, paths.splits, paths.encoder, tmp_path / "model", tmp_path / "live",
                         tmp_path / "ckpt"))
    assert read_json(tmp_path / "model" / "model.json")["classes"] == sorted(names)


def _stage(tmp_path, params: dict, capsys, out: list | None = None) -> tuple[int, str]:
    """fetch_data as `dvc repro` runs it (its argv, params.yaml, the error shell): (exit status, stderr); what it
    printed to stdout is appended to `out`."""
    import yaml

    from galaxy_finetune.core.cli import run_stage
    from stages import fetch_data as stage

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    argv = ["--params", str(tmp_path / "params.yaml"), str(tmp_path / "raw"), str(tmp_path / "encoder")]
    try:
        run_stage(stage.__doc__, stage.add_arguments, stage.main, argv, unchanged=stage.unchanged)
        status = 0
    except SystemExit as stop:
        status = stop.code
    captured = capsys.readouterr()
    if out is not None:
        out.append(captured.out)
    return status, captured.err


def _outputs(tmp_path) -> dict:
    return {p.relative_to(tmp_path): p.read_bytes() for folder in ("raw", "encoder")
            for p in sorted((tmp_path / folder).rglob("*")) if p.is_file()}


def test_issue37_a_catalog_with_a_header_and_no_rows_is_one_line_and_changes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GALAXY_FINETUNE_CACHE", str(tmp_path / "cache"))
    catalog = _named_catalog(tmp_path, ["round", "cigar"], n_per_class=5)
    params = {"data": {"source": "catalog", "catalog": str(catalog)}, "model": {"encoder": "random"}}
    assert _stage(tmp_path, params, capsys)[0] == 0
    before = _outputs(tmp_path)
    catalog.write_text("id_str,file_loc,label\n")
    status, err = _stage(tmp_path, params, capsys)
    assert status == 1
    assert err.strip().splitlines() == [f"error: {catalog}: the catalog holds no galaxies (a header and no rows); "
                                        f"add one row per galaxy"]
    assert _outputs(tmp_path) == before


def test_issue37_a_class_one_row_has_is_refused_before_decoding_naming_it_its_row_and_the_close_name(
        tmp_path, capsys, monkeypatch):
    """A typo'd label among GalaxyMNIST's names is one line from fetch_data, before the store decodes anything."""
    from galaxy_finetune.core.classes import GALAXY_MNIST_CLASSES

    monkeypatch.setenv("GALAXY_FINETUNE_CACHE", str(tmp_path / "cache"))
    catalog = _named_catalog(tmp_path, list(GALAXY_MNIST_CLASSES), n_per_class=5)
    params = {"data": {"source": "catalog", "catalog": str(catalog)}, "model": {"encoder": "random"}}
    assert _stage(tmp_path, params, capsys)[0] == 0
    before = _outputs(tmp_path)
    frame = pd.read_csv(catalog)
    frame.loc[7, "label"] = "barred_spiral"
    frame.to_csv(catalog, index=False)
    status, err = _stage(tmp_path, params, capsys)
    assert status == 1
    lines = err.strip().splitlines()
    assert lines == [f"error: {catalog}: class 'barred_spiral' has 1 galaxy (row 7), too few to split: a class needs "
                     f"3 (one for train, val and test). Is it a typo of 'unbarred_spiral'? Fix the label, add galaxies "
                     f"of that class, or drop its rows from the catalog"]
    assert _outputs(tmp_path) == before


def test_issue37_class_sizes_count_the_catalogs_own_splits(tmp_path):
    """A class needs one training galaxy and one for each split that is drawn, not given by the catalog."""
    from galaxy_finetune.core.task import Task

    task = Task("classification", ("a", "b"))
    frame = pd.DataFrame({"id_str": [f"g{i}" for i in range(12)], "label": [0] * 10 + [1] * 2,
                          "label_name": ["a"] * 10 + ["b"] * 2, "split": ""})
    with pytest.raises(PipelineError, match=r"^cat.csv: class 'b' has 2 galaxies \(rows 10, 11\), too few to split: "
                                            r"a class needs 3 \(one for train, val and test\)\. Fix"):
        task.check_splittable(frame, "cat.csv")
    frame.loc[11, "split"] = "test"  # the catalog's own test set: b needs one for train and one for val
    frame.loc[0, "split"] = "test"
    with pytest.raises(PipelineError, match=r"class 'b' has 1 galaxy outside the catalog's own val/test rows "
                                            r"\(rows 10, 11\), too few to split: a class needs 2 \(one for train and val\)"):
        task.check_splittable(frame, "cat.csv")
    frame.loc[10, "split"] = "val"
    frame.loc[1, "split"] = "val"
    with pytest.raises(PipelineError, match=r"class 'b' has 0 galaxies .* a class needs 1 \(one for train\)"):
        task.check_splittable(frame, "cat.csv")
    frame["split"] = ""
    frame["label"], frame["label_name"] = [0] * 6 + [1] * 6, ["a"] * 6 + ["b"] * 6
    task.check_splittable(frame, "cat.csv")  # 6 each: fine


# ---- issue 36: a no-change rerun decides before it imports pandas (data/recheck.py, data/witness.py)

def _full_run_forbidden(monkeypatch):
    import galaxy_finetune.data.fetch as fetch

    def refuse(*args, **kwargs):
        raise AssertionError("the full fetch_data ran")

    monkeypatch.setattr(fetch, "fetch_data", refuse)


def test_issue36_an_unchanged_rerun_is_decided_by_the_recheck_alone_and_says_what_stood_in(tmp_path, capsys,
                                                                                          monkeypatch):
    from galaxy_finetune.data.recheck import fetch_if_changed

    monkeypatch.setenv("GALAXY_FINETUNE_CACHE", str(tmp_path / "cache"))
    params = Params.model_validate({"data": {"synthetic_n_per_class": 3, "synthetic_image_size": 32}})
    first = fetch_if_changed(params, tmp_path / "raw", tmp_path / "encoder")  # the quickstart: both stand in
    assert first["substitutions"] and (tmp_path / "raw" / "recheck.json").is_file()
    capsys.readouterr()
    before = _outputs(tmp_path)
    _full_run_forbidden(monkeypatch)
    assert fetch_if_changed(params, tmp_path / "raw", tmp_path / "encoder") == first
    out, err = capsys.readouterr()
    assert "fetch_data: nothing changed since the last run" in out and "OFFLINE STAND-IN" in err
    assert _outputs(tmp_path) == before
    elsewhere = tmp_path / "elsewhere"  # the project run from another folder (moved, or a copy): still unchanged
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert fetch_if_changed(params, tmp_path / "raw", tmp_path / "encoder") == first
    assert _outputs(tmp_path) == before


@pytest.mark.parametrize("change", ["image", "param", "catalog", "host", "output", "code"])
def test_issue36_whatever_the_full_run_read_that_changes_sends_the_rerun_to_it(tmp_path, monkeypatch, change):
    import galaxy_finetune.data.fetch as fetch
    from galaxy_finetune.data import encoder, witness

    monkeypatch.setenv("GALAXY_FINETUNE_CACHE", str(tmp_path / "cache"))
    catalog = _own_catalog(tmp_path)
    # an hf_hub encoder the hub could not give: the witness names the hub's host
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(encoder, "_hub_reachable", lambda: False)
    params = Params.model_validate({"data": {"source": "catalog", "catalog": str(catalog)}})
    fetch.fetch_data(params, tmp_path / "raw", tmp_path / "encoder")
    assert read_json(tmp_path / "raw" / "recheck.json")["unreachable"] == ["huggingface.co"]
    assert witness.unchanged(params, tmp_path / "raw", tmp_path / "encoder") is not None
    if change == "image":
        src = pd.read_csv(tmp_path / "raw" / CATALOG)["src"].iloc[5]
        os.utime(src, ns=(0, os.stat(src).st_mtime_ns + 1))
    elif change == "param":
        params = Params.model_validate({"data": {"source": "catalog", "catalog": str(catalog), "fits_q": 4}})
    elif change == "catalog":
        catalog.write_text(catalog.read_text())  # the same rows, written again: the full run compares the rows
        os.utime(catalog, ns=(0, os.stat(catalog).st_mtime_ns + 1))
    elif change == "host":
        monkeypatch.setattr(witness, "resolves", lambda host: host == "huggingface.co")
    elif change == "output":
        (tmp_path / "raw" / MANIFEST).unlink()
    else:
        monkeypatch.setattr(witness, "CODE", (*witness.CODE, tmp_path / "changed.py"))
        (tmp_path / "changed.py").write_text("x = 1\n")
    assert witness.unchanged(params, tmp_path / "raw", tmp_path / "encoder") is None


def test_issue34_unlabelled_rows_and_data_unlabelled_are_kept_counted_and_said(tmp_path, capsys, monkeypatch):
    """Empty labels in the catalog and a folder named by data.unlabelled: unlabelled galaxies in catalog.csv (label
    -1, no class), counted in the manifest and in one line of the stage, and out of the class counts."""
    monkeypatch.setenv("GALAXY_FINETUNE_CACHE", str(tmp_path / "cache"))
    catalog = _named_catalog(tmp_path, ["round", "cigar"], n_per_class=4)
    frame = pd.read_csv(catalog)
    frame.loc[[1, 6], "label"] = ""
    frame.to_csv(catalog, index=False)
    extra = tmp_path / "more"
    extra.mkdir()
    for i in range(3):
        Image.new("RGB", (20, 20), (9, 9 * i, 90)).save(extra / f"more_{i}.png")
    (extra / "notes.txt").write_text("not an image")
    params = {"data": {"source": "catalog", "catalog": str(catalog), "unlabelled": str(extra)},
              "model": {"encoder": "random"}}
    printed = []
    assert _stage(tmp_path, params, capsys, printed)[0] == 0
    written = pd.read_csv(tmp_path / "raw" / CATALOG, keep_default_na=False)
    unlabelled = written[written["label"] == -1]
    assert sorted(unlabelled["id_str"]) == ["g1", "g6", "more_0", "more_1", "more_2"]
    assert (unlabelled["label_name"] == "").all()
    manifest = read_json(tmp_path / "raw" / MANIFEST)
    assert manifest["n_unlabelled"] == 5 and manifest["counts_per_class"] == {"cigar": 3, "round": 3}
    assert _stage(tmp_path, params, capsys, printed)[0] == 0  # the unchanged rerun (the recheck) says it too
    line = ("fetch_data: 5 of 11 galaxies are unlabelled (empty label): kept for semi-supervised training "
            "(train.semi), never in val, test or a metric")
    assert [line in run.splitlines() for run in printed] == [True, True]
    assert "nothing changed since the last run" in printed[1]
