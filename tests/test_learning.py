"""A run that learned nothing says so: the verdict on val histories, and one real tiny training each way."""
import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from galaxy_finetune.training.learning import Baseline, LearningCurve, RunContext, learning_warning

BALANCED4 = Baseline.from_labels([0, 1, 2, 3] * 10, 4)
SCRATCH_LOW_LR = RunContext(pretrained=False, recipe="scratch", lr=1e-5, n_train=320)


def test_baselines_come_from_the_val_labels():
    assert BALANCED4.majority_rate == 0.25 and BALANCED4.class_frequency_loss == pytest.approx(math.log(4))
    skewed = Baseline.from_labels([0] * 6 + [1] * 2 + [2] * 2, 3)
    assert skewed.majority_rate == 0.6
    assert skewed.class_frequency_loss == pytest.approx(-(0.6 * math.log(0.6) + 2 * 0.2 * math.log(0.2)))


def test_chance_level_history_with_a_random_init_and_a_fine_tuning_lr():
    """The issue's case: a random ConvNeXt trained with lr 1e-5, 22.5% test accuracy, every p ~0.25."""
    line = learning_warning([0.23, 0.24, 0.225], [1.390, 1.388, 1.387], BALANCED4, 0.05, SCRATCH_LOW_LR)
    assert line == (
        "this run learned nothing: best val accuracy 24.0% is not 5% above the majority-class rate 25.0%; "
        "val loss never fell below 1.386 (the loss of answering the class frequencies; best 1.387). "
        "Likely causes: lr 1e-05 too low for a random init; too few images (320 for training, 80 per class); "
        "labels that do not match the images (shuffled or mis-joined catalog). Try: raise scratch.lr (1e-3 trains "
        "a random ConvNeXt); add images (a few hundred per class); look at a few catalog rows next to their "
        "images; use pretrained weights (model.encoder, cached once online).")


def test_a_run_that_learned_gives_no_warning():
    assert learning_warning([0.4, 0.7, 0.85], [1.2, 0.8, 0.5], BALANCED4, 0.05, SCRATCH_LOW_LR) is None
    assert learning_warning([], [], BALANCED4, 0.05, SCRATCH_LOW_LR) is None  # nothing to judge


def test_each_criterion_alone_warns():
    many = RunContext(pretrained=True, recipe="train", lr=1e-5, n_train=8000)
    acc_only = learning_warning([0.28], [1.2], BALANCED4, 0.05, many)
    assert "best val accuracy 28.0% is not 5% above" in acc_only and "val loss never fell" not in acc_only
    loss_only = learning_warning([0.6], [1.5], BALANCED4, 0.05, many)
    assert loss_only.startswith("this run's probabilities are no better than the class frequencies: val loss never "
                                "fell below 1.386 (the loss of answering the class frequencies; best 1.500), "
                                "although val accuracy reached 60.0%. Likely causes: ")
    # pretrained, plenty of images, a fine-tuning lr: only the labels are left to suspect
    assert "Likely causes: labels that do not match" in loss_only and "too few" not in loss_only
    assert "too low" not in loss_only and "use pretrained weights" not in loss_only


def test_causes_follow_the_run():
    high = learning_warning([0.25], [1.4], BALANCED4, 0.05, RunContext(True, "train", 1e-3, 8000))
    assert "Likely causes: lr 0.001 too high for fine-tuning" in high and "lower train.lr" in high
    scratch_ok = learning_warning([0.25], [1.4], BALANCED4, 0.05, RunContext(False, "scratch", 1e-3, 8000))
    assert "too low" not in scratch_ok and "use pretrained weights" in scratch_ok


def test_the_curve_survives_a_resume():
    curve = LearningCurve(BALANCED4, 0.05, SCRATCH_LOW_LR)
    curve.val_acc, curve.val_loss = [0.2, 0.25], [1.5, 1.45]
    resumed = LearningCurve(BALANCED4, 0.05, SCRATCH_LOW_LR)
    resumed.load_state_dict(curve.state_dict())
    assert (resumed.val_acc, resumed.val_loss) == ([0.2, 0.25], [1.5, 1.45]) and resumed.warning == curve.warning


# ---- one real tiny training each way ----

COLOURS = [(200, 40, 40), (40, 40, 200)]  # class 0 red, class 1 blue


def _tiny_inputs(root, shuffled: bool):
    """32 train / 12 val 32-px images of 2 classes. Shuffled: every image appears once with each label, so
    nothing in the pixels tells the labels apart (and val accuracy is exactly the majority rate)."""
    from galaxy_finetune.data.encoder import resolve_encoder
    from galaxy_finetune.data.store import build_store

    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "splits").mkdir()
    files = []
    for split, n in (("train", 16), ("val", 6)):
        rows = []
        for i in range(n):
            colour = COLOURS[i % 2]
            pixels = np.clip(np.array(colour) + rng.normal(0, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
            files.append(root / "images" / f"{split}{i}.png")
            Image.fromarray(pixels).save(files[-1])
            labels = (0, 1) if shuffled else (i % 2,)
            rows += [{"id_str": f"{split}{i}_{label}", "label": label, "row": len(files) - 1} for label in labels]
        if not shuffled:
            rows = rows * 2  # the same number of images either way
        pd.DataFrame(rows).to_csv(root / f"splits/{split}.csv", index=False)
    build_store(pd.DataFrame({"id_str": [f.stem for f in files], "src": files}), root / "store", 32)
    resolve_encoder("random", root / "encoder", "convnext_atto", 0, validate=False)
    (root / "source.json").write_text('{"classes": ["red", "blue"]}')  # what fetch_data writes: the classes
    return root


@pytest.mark.parametrize("shuffled", [True, False], ids=["shuffled-labels", "learnable"])
def test_real_training_says_whether_it_learned(tmp_path, monkeypatch, shuffled):
    from galaxy_finetune.core.params import AugmentParams, TrainParams
    from galaxy_finetune.training.train import FinetuneJob, finetune

    monkeypatch.chdir(tmp_path)
    root = _tiny_inputs(tmp_path, shuffled)
    train = TrainParams(lr=1e-3, layer_decay=1.0, batch_size=8, epochs=3, steps=0, patience=50, input_size=32,
                        head_init="random", schedule="constant", accelerator="cpu")
    augment = AugmentParams(rotation_deg=0, translate=0, shear_deg=0, flip=False)
    job = FinetuneJob(root, root / "store", root / "splits", root / "encoder", root / "model", root / "live",
                      root / "ckpt")
    run = finetune(train, augment, "scratch", {"classes": ["red", "blue"], "run_label": "test run"}, job)
    curve = LearningCurve(Baseline(0.5, 0.693, 2), 0.05, RunContext(False, "scratch", 1e-3, 32))
    curve.load_state_dict(run["val_curve"])
    assert len(curve.val_acc) == len(curve.val_loss) == 3  # one per epoch, the sanity check left out
    if shuffled:
        assert curve.val_acc == [0.5, 0.5, 0.5]
        assert run["learning_warning"].startswith("this run learned nothing: best val accuracy 50.0% is not 5% "
                                                  "above the majority-class rate 50.0%")
    else:
        assert max(curve.val_acc) >= 0.9, curve.val_acc
        assert run["learning_warning"] is None
    from galaxy_finetune.core.files import read_json
    assert read_json(root / "model/model.json")["run"]["learning_warning"] == run["learning_warning"]


def test_a_random_init_with_few_real_labels_is_told_before_training_with_the_numbers():
    from galaxy_finetune.training.learning import SCRATCH_FEW_PER_CLASS, scratch_warning

    said = scratch_warning(1260, 2, synthetic=False)
    assert said.startswith("training a random init from scratch on 1260 labelled galaxies (630 per class, under "
                           f"{SCRATCH_FEW_PER_CLASS} per class)") and "set model.encoder to pretrained weights" in said
    assert scratch_warning(1260, 2, synthetic=True) is None  # synthetic galaxies are learnable at any size
    assert scratch_warning(2 * SCRATCH_FEW_PER_CLASS, 2, synthetic=False) is None
