"""galaxy-classify: new galaxies through exactly the pipeline's preprocessing, streamed and resumable."""
import shutil

import numpy as np
import pandas as pd
import pytest

from galaxy_finetune.inference import predict as predict_module
from galaxy_finetune.inference.classify import galaxies_from, main
from galaxy_finetune.inference.predict import predict_splits
from galaxy_finetune.data.sources import user_catalog

# with pytest-xdist: the modules of the session's one tiny trained model run on one worker
pytestmark = pytest.mark.xdist_group("tiny_model")


@pytest.fixture(scope="module")
def trained(tiny_model):
    return tiny_model


def _folder(paths, tmp_path, n=None):
    folder = tmp_path / "new"
    folder.mkdir()
    for src in paths.sources[:n]:
        shutil.copy(src, folder)
    return folder


def test_folder_matches_the_predict_stage(trained, tmp_path, capsys):
    predict_splits(trained.model, trained.store, trained.splits, tmp_path / "pred", ["test"], 16, "cpu",
                   parts_root=tmp_path / "parts")
    expected = pd.read_csv(tmp_path / "pred/test.csv")
    main([str(trained.model), str(_folder(trained, tmp_path)), "-o", str(tmp_path / "out.csv"), "--accelerator", "cpu"])
    out = pd.read_csv(tmp_path / "out.csv").set_index("id_str").loc[expected["id_str"]]
    classes = [c for c in out.columns if c.startswith("p_")]
    assert np.allclose(out[classes].to_numpy(), expected[classes].to_numpy(), atol=1e-5)
    assert (out["pred_label"].to_numpy() == expected["pred_label"].to_numpy()).all()
    assert "galaxies ->" in capsys.readouterr().out


def test_every_row_once_in_input_order_across_many_batches(trained, tmp_path):
    folder = _folder(trained, tmp_path)
    main([str(trained.model), str(folder), "-o", str(tmp_path / "out.csv"), "--accelerator", "cpu",
          "--batch-size", "5", "--workers", "2"])
    out = pd.read_csv(tmp_path / "out.csv")
    assert out["id_str"].tolist() == sorted(p.stem for p in folder.iterdir())  # 24 rows, 5 batches
    assert not (tmp_path / "out.csv.parts").exists()  # parts are merged, then removed


def test_a_killed_run_resumes_where_it_stopped_without_duplicates(trained, tmp_path, monkeypatch, capsys):
    folder = _folder(trained, tmp_path)
    args = [str(trained.model), str(folder), "-o", str(tmp_path / "out.csv"), "--accelerator", "cpu",
            "--batch-size", "4", "--workers", "0"]
    main(args[:2] + ["-o", str(tmp_path / "clean.csv")] + args[4:])
    original = predict_module.CsvPartWriter.write_on_batch_end
    calls = []

    def dies_at_the_third_batch(self, *a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # what a Ctrl-C or a scheduler's kill leaves: two batches on disk
        return original(self, *a, **k)

    monkeypatch.setattr(predict_module.CsvPartWriter, "write_on_batch_end", dies_at_the_third_batch)
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        main(args)
    monkeypatch.setattr(predict_module.CsvPartWriter, "write_on_batch_end", original)
    assert not (tmp_path / "out.csv").exists()
    parts = sorted((tmp_path / "out.csv.parts").glob("part-*.csv"))  # one per block of input rows
    assert sum(len(p.read_text().splitlines()) for p in parts) == 8
    with open(parts[-1], "a") as fh:
        fh.write("9,synthetic_00")  # a torn line: the process died mid-write
    capsys.readouterr()
    main(args)
    assert "resuming, 8 of 24 galaxies" in capsys.readouterr().out
    out, clean = pd.read_csv(tmp_path / "out.csv"), pd.read_csv(tmp_path / "clean.csv")
    assert out["id_str"].is_unique and len(out) == 24
    pd.testing.assert_frame_equal(out, clean)


def test_catalog_input_with_relative_paths(trained, tmp_path):
    folder = _folder(trained, tmp_path, n=2)
    names = sorted(p.name for p in folder.iterdir())
    pd.DataFrame({"file_loc": [f"new/{n}" for n in names], "id_str": ["a", "b"]}).to_csv(tmp_path / "mine.csv",
                                                                                        index=False)
    main([str(trained.model), str(tmp_path / "mine.csv"), "-o", str(tmp_path / "out.csv"), "--accelerator", "cpu"])
    out = pd.read_csv(tmp_path / "out.csv")
    assert out["id_str"].tolist() == ["a", "b"] and "true_label" not in out.columns
    assert np.allclose(out.filter(like="p_").sum(1), 1, atol=1e-5)


def damage(folder):
    """A survey folder's usual debris beside its good images: a note, a .DS_Store, an empty .jpg and a JPEG cut
    short. Returns the names of the two damaged images."""
    (folder / "notes.txt").write_text("observing log")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(64))
    (folder / "empty.jpg").write_bytes(b"")
    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / "cut.jpg", quality=95)
    data = (folder / "cut.jpg").read_bytes()
    (folder / "cut.jpg").write_bytes(data[: len(data) // 2])
    return ["cut.jpg", "empty.jpg"]


def test_damaged_images_are_skipped_named_counted_and_listed(trained, tmp_path, capsys):
    """Issue 27: a cut-short JPEG and an empty one do not stop a survey: the good galaxies get their predictions,
    each damaged one a warning and a row of OUTPUT_skipped.csv, the last line counts them; other files are ignored;
    the exit status is 0."""
    folder = _folder(trained, tmp_path, n=6)
    damaged = damage(folder)
    main([str(trained.model), str(folder), "-o", str(tmp_path / "out.csv"), "--accelerator", "cpu",
          "--batch-size", "3", "--workers", "0"])  # returns: no SystemExit, exit status 0
    out = pd.read_csv(tmp_path / "out.csv")
    good = sorted(p.stem for p in folder.iterdir() if p.suffix == ".png")
    assert out["id_str"].tolist() == good and np.allclose(out.filter(like="p_").sum(1), 1, atol=1e-5)
    listed = pd.read_csv(tmp_path / "out_skipped.csv")
    assert list(listed.columns) == ["id_str", "file", "reason"]
    assert listed["id_str"].tolist() == ["cut", "empty"]
    assert listed["file"].tolist() == [str(folder / n) for n in damaged]
    assert "image file is truncated" in listed["reason"][0] and "cannot decode image" in listed["reason"][1]
    captured = capsys.readouterr()
    warned = [line for line in captured.err.splitlines() if line.startswith("warning:")]
    assert [w for w in warned if "cut.jpg" in w] == [f"warning: {listed['reason'][0]}; skipped"]
    assert any("empty.jpg" in w and w.endswith("; skipped") for w in warned)
    assert "notes.txt" not in captured.err + captured.out and ".DS_Store" not in captured.err + captured.out
    assert captured.out.strip().splitlines()[-1].endswith(
        f"; 2 damaged image(s) skipped, listed in {tmp_path / 'out_skipped.csv'}")
    assert not (tmp_path / "out.csv.parts").exists()
    # the same folder mended: no list left over from the damaged run
    for name in damaged:
        (folder / name).unlink()
    main([str(trained.model), str(folder), "-o", str(tmp_path / "out.csv"), "--accelerator", "cpu"])
    assert not (tmp_path / "out_skipped.csv").exists() and len(pd.read_csv(tmp_path / "out.csv")) == 6
    assert "skipped" not in capsys.readouterr().out


def test_a_killed_run_with_damaged_images_resumes_without_listing_them_twice(trained, tmp_path, monkeypatch, capsys):
    folder = _folder(trained, tmp_path, n=6)
    damage(folder)
    args = [str(trained.model), str(folder), "-o", str(tmp_path / "out.csv"), "--accelerator", "cpu",
            "--batch-size", "2", "--workers", "0"]
    original = predict_module.CsvPartWriter.write_on_batch_end
    calls = []

    def dies_at_the_third_batch(self, *a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, *a, **k)

    monkeypatch.setattr(predict_module.CsvPartWriter, "write_on_batch_end", dies_at_the_third_batch)
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        main(args)
    monkeypatch.setattr(predict_module.CsvPartWriter, "write_on_batch_end", original)
    capsys.readouterr()
    main(args)
    assert "resuming, 4 of 8 galaxies" in capsys.readouterr().out  # cut.jpg and empty.jpg sort first: 2 batches
    assert pd.read_csv(tmp_path / "out_skipped.csv")["id_str"].tolist() == ["cut", "empty"]
    assert len(pd.read_csv(tmp_path / "out.csv")) == 6


def test_unreadable_image_is_named_on_one_line_and_no_output_written(trained, tmp_path, capsys):
    """Nothing in the folder could be decoded: exit 1, one line naming the file, no predictions."""
    folder = tmp_path / "new"
    folder.mkdir()
    (folder / "broken.png").write_bytes(b"not a png")
    with pytest.raises(SystemExit) as exit_:
        main([str(trained.model), str(folder), "-o", str(tmp_path / "out.csv"), "--accelerator", "cpu"])
    assert exit_.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and "broken.png" in err
    assert not (tmp_path / "out.csv").exists()


def test_an_output_that_cannot_be_written_is_one_line(trained, tmp_path, capsys):
    (tmp_path / "blocker").write_text("a file where a folder should be")
    with pytest.raises(SystemExit) as exit_:
        main([str(trained.model), str(_folder(trained, tmp_path, n=2)), "-o", str(tmp_path / "blocker" / "out.csv"),
              "--accelerator", "cpu"])
    assert exit_.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {tmp_path / 'blocker'}"), err


def test_missing_model_and_bad_catalog(trained, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([str(tmp_path / "nomodel"), str(trained.raw)])
    assert "run the finetune_gpu stage first" in capsys.readouterr().err
    (tmp_path / "cat.csv").write_text("path\nx.png\n")
    with pytest.raises(SystemExit):
        main([str(trained.model), str(tmp_path / "cat.csv")])
    assert "missing column(s) ['file_loc']" in capsys.readouterr().err


def test_a_file_name_gives_the_same_id_from_a_folder_a_catalog_and_the_pipeline(tmp_path):
    names = ["g01.fits.gz", "g02.FIT", "g03.png", "g04.fit.gz", "g05.jpeg"]
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in names:
        (folder / name).write_bytes(b"")  # only the names matter here
    pd.DataFrame({"file_loc": [f"imgs/{n}" for n in names], "label": [0, 1, 0, 1, 0]}).to_csv(tmp_path / "cat.csv",
                                                                                              index=False)
    ids = ["g01", "g02", "g03", "g04", "g05"]
    assert galaxies_from(folder)["id_str"].tolist() == ids
    assert galaxies_from(tmp_path / "cat.csv")["id_str"].tolist() == ids
    assert user_catalog(tmp_path / "cat.csv", ["a", "b"]).catalog["id_str"].tolist() == ids
