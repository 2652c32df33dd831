"""The predict stage's library (inference/predict.py): every galaxy of a split once, in split order, with the
softmax of the model on exactly the eval view, its store row, and a timing record."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from galaxy_finetune.core.classes import read_classes
from galaxy_finetune.core.layout import TIMING
from galaxy_finetune.data.loading import read_split
from galaxy_finetune.data.store import galaxy_pixels
from galaxy_finetune.inference.predict import predict_splits
from galaxy_finetune.training.model_io import eval_transform, load_finetuned

# with pytest-xdist: the modules of the session's one tiny trained model run on one worker
pytestmark = pytest.mark.xdist_group("tiny_model")


@pytest.fixture(scope="module")
def predicted(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("predict") / "predictions"
    timing = predict_splits(tiny_model.model, tiny_model.store, tiny_model.splits, out, ["val", "test"], 5, "cpu",
                            parts_root=out.parent / "parts")
    return out, timing


@pytest.mark.parametrize("split", ["val", "test"])
def test_rows_are_the_split_in_order_with_the_models_softmax_of_the_eval_view(tiny_model, predicted, split):
    out, _ = predicted
    table = pd.read_csv(out / f"{split}.csv", keep_default_na=False)
    frame = read_split(tiny_model.splits, split)
    classes = read_classes(tiny_model.raw)
    assert list(table.columns) == (["id_str", "true_label", "pred_label"] + [f"p_{c}" for c in classes]
                                   + ["p_true", "confidence", "row"])
    assert table["id_str"].tolist() == frame["id_str"].tolist() and table["row"].tolist() == frame["row"].tolist()
    assert table["true_label"].tolist() == frame["label_name"].tolist()
    model, config = load_finetuned(tiny_model.model)
    pixels = torch.from_numpy(galaxy_pixels(tiny_model.store, frame["row"].tolist())).permute(0, 3, 1, 2)
    with torch.no_grad():
        expected = torch.softmax(model(eval_transform(config)(pixels)), 1).numpy()
    probs = table[[f"p_{c}" for c in classes]].to_numpy()
    np.testing.assert_allclose(probs, expected, atol=2e-6)  # written with 6 decimals
    assert table["pred_label"].tolist() == [classes[i] for i in expected.argmax(1)]
    np.testing.assert_allclose(table["p_true"], probs[np.arange(len(table)), frame["label"]], atol=1e-9)
    np.testing.assert_allclose(table["confidence"], probs.max(1), atol=1e-9)


def test_timing_and_no_partial_files_left(predicted):
    out, timing = predicted
    assert json.loads((out / TIMING).read_text()) == timing
    assert timing["accelerator"] == "cpu" and timing["val_images_per_s"] > 0 and timing["test_images_per_s"] > 0
    assert sorted(p.name for p in out.iterdir()) == sorted(["val.csv", "test.csv", TIMING])
    assert not (out.parent / "parts" / "test").exists()  # each split's parts are merged, then removed


def test_batch_size_does_not_change_a_prediction(tiny_model, predicted, tmp_path):
    other = tmp_path / "predictions"
    predict_splits(tiny_model.model, tiny_model.store, tiny_model.splits, other, ["test"], 64, "cpu",
                   parts_root=tmp_path / "parts")
    pd.testing.assert_frame_equal(pd.read_csv(other / "test.csv"), pd.read_csv(predicted[0] / "test.csv"))
