"""galaxy_finetune.analysis.metrics against small cases computed by hand."""
import math

import numpy as np
import pandas as pd
import pytest

from galaxy_finetune.analysis.calibration import temperature_scaling
from galaxy_finetune.core.errors import PipelineError
from galaxy_finetune.analysis.metrics import (PROB_FLOOR, bootstrap_ci, check_predictions, compute_metrics, confusion_array,
                                     validated_probabilities,
                                     expected_calibration_error, most_confident, reliability, residual_bin,
                                     residuals, top_confusions)

CLASSES = ["a", "b", "c"]


def table(rows):
    """rows: (true, pred, [p_a, p_b, p_c]) -> a predictions table like predict writes."""
    frame = pd.DataFrame({"id_str": [f"g{i}" for i in range(len(rows))],
                          "true_label": [r[0] for r in rows], "pred_label": [r[1] for r in rows]})
    for j, name in enumerate(CLASSES):
        frame[f"p_{name}"] = [r[2][j] for r in rows]
    probs = np.array([r[2] for r in rows])
    frame["p_true"] = [probs[i, CLASSES.index(r[0])] for i, r in enumerate(rows)]
    frame["confidence"] = probs.max(1)
    return frame


def metrics_of(frame, **kwargs):
    return compute_metrics(frame, validated_probabilities(frame, CLASSES), CLASSES, **kwargs)


# c has one galaxy and is never predicted; a -> b and c -> a are the two confusions
MIXED = table([("a", "a", [0.8, 0.2, 0.0]),
               ("a", "b", [0.4, 0.6, 0.0]),
               ("b", "b", [0.1, 0.9, 0.0]),
               ("c", "a", [0.5, 0.2, 0.3])])


def test_mixed_case_by_hand():
    m = metrics_of(MIXED, bootstrap_samples=200, seed=0)
    assert m["n"] == 4
    assert m["accuracy"] == pytest.approx(0.5)
    # recall a 1/2, b 1/1, c 0/1
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert [m["per_class"][c]["accuracy"] for c in CLASSES] == pytest.approx([0.5, 1.0, 0.0])
    # precision: a 1 of 2 predicted, b 1 of 2, c never predicted -> 0
    assert [m["per_class"][c]["precision"] for c in CLASSES] == pytest.approx([0.5, 0.5, 0.0])
    assert [m["per_class"][c]["f1"] for c in CLASSES] == pytest.approx([0.5, 2 / 3, 0.0])
    assert [m["per_class"][c]["support"] for c in CLASSES] == [2, 1, 1]
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0) / 3)
    assert m["log_loss"] == pytest.approx(-(math.log(0.8) + math.log(0.4) + math.log(0.9) + math.log(0.3)) / 4)
    # Brier, summed over classes: 0.08 + 0.72 + 0.02 + 0.78
    assert m["brier"] == pytest.approx(1.6 / 4)
    # every galaxy alone in its confidence bin: mean |correct - confidence|
    assert m["ece"] == pytest.approx((0.2 + 0.6 + 0.1 + 0.5) / 4)
    assert m["confusion"]["a"] == {"a": 1, "b": 1, "c": 0}
    assert m["confusion"]["c"] == {"a": 1, "b": 0, "c": 0}
    assert m["top_confusions"] == {"1": "a -> b: 1 (reverse: 0)", "2": "c -> a: 1 (reverse: 0)"}
    # the one-galaxy class is always wrong, in every resample that draws it
    assert (m["per_class"]["c"]["accuracy_ci95_low"], m["per_class"]["c"]["accuracy_ci95_high"]) == (0.0, 0.0)
    assert m["per_class"]["b"]["accuracy_ci95_low"] == 1.0
    assert 0 <= m["accuracy_ci95_low"] <= 0.5 <= m["accuracy_ci95_high"] <= 1
    assert confusion_array(m, CLASSES).tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]


def test_perfect_predictions():
    m = metrics_of(table([("a", "a", [1, 0, 0]), ("b", "b", [0, 1, 0]), ("c", "c", [0, 0, 1])]),
                   bootstrap_samples=50)
    assert m["accuracy"] == m["balanced_accuracy"] == m["macro_f1"] == 1.0
    assert (m["accuracy_ci95_low"], m["accuracy_ci95_high"]) == (1.0, 1.0)
    assert m["brier"] == 0.0 and m["ece"] == 0.0
    assert m["log_loss"] == pytest.approx(0.0, abs=1e-5)  # each 0 counts as PROB_FLOOR
    assert m["top_confusions"] == {}


def test_the_headline_log_loss_is_the_estimator_calibration_compares_before_and_after():
    # one confidently wrong row (p(true) written as 0) and one right one, as in the review: 18.2 vs 7.4
    frame = table([("a", "b", [0.0, 1.0, 0.0]), ("b", "b", [0.2, 0.8, 0.0])])
    m = metrics_of(frame, bootstrap_samples=10)
    probs, y = validated_probabilities(frame, CLASSES), np.array([0, 1])
    calibration, _ = temperature_scaling(probs, y, probs, y, 15)
    assert m["log_loss"] == calibration["test"]["log_loss_before"]
    assert m["log_loss"] == pytest.approx((-math.log(PROB_FLOOR) - math.log(0.8)) / 2, rel=1e-5)
    assert (m["brier"], m["ece"]) == (calibration["test"]["brier_before"], calibration["test"]["ece_before"])


def test_all_wrong():
    m = metrics_of(table([("a", "b", [0.3, 0.7, 0]), ("b", "c", [0, 0.4, 0.6]), ("c", "a", [0.9, 0, 0.1])]),
                   bootstrap_samples=50)
    assert m["accuracy"] == m["balanced_accuracy"] == m["macro_f1"] == 0.0
    assert (m["accuracy_ci95_low"], m["accuracy_ci95_high"]) == (0.0, 0.0)
    assert all(m["per_class"][c]["precision"] == 0.0 for c in CLASSES)
    assert m["ece"] == pytest.approx((0.7 + 0.6 + 0.9) / 3)  # accuracy 0 in every bin
    assert len(m["top_confusions"]) == 3


def test_class_absent_from_test_set_has_no_accuracy():
    m = metrics_of(table([("a", "a", [0.9, 0.1, 0]), ("b", "a", [0.6, 0.4, 0])]), bootstrap_samples=50)
    assert m["per_class"]["c"] == {"accuracy": None, "accuracy_ci95_low": None, "accuracy_ci95_high": None,
                                   "precision": 0.0, "f1": 0.0, "support": 0}
    assert m["balanced_accuracy"] == pytest.approx(0.5)  # over a and b only
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0) / 2)  # c neither true nor predicted: left out


def test_ece_two_bins_by_hand():
    confidence = np.array([0.2, 0.4, 0.7, 0.9])
    correct = np.array([False, True, True, True])
    # bin (0, .5]: confidence .3, accuracy .5; bin (.5, 1]: confidence .8, accuracy 1; each half the samples
    assert expected_calibration_error(confidence, correct, bins=2) == pytest.approx(0.5 * 0.2 + 0.5 * 0.2)
    bins = reliability(confidence, correct, bins=2)
    assert bins["count"].tolist() == [2, 2]
    assert bins["accuracy"].tolist() == pytest.approx([0.5, 1.0])
    empty = reliability(confidence, correct, bins=15)
    assert empty["count"].sum() == 4 and empty["accuracy"].isna().sum() == 11


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 3, 300)
    y_pred = np.where(rng.random(300) < 0.8, y_true, (y_true + 1) % 3)
    first = bootstrap_ci(y_true, y_pred, 3, samples=300, seed=7)
    assert first == bootstrap_ci(y_true, y_pred, 3, samples=300, seed=7)
    assert first != bootstrap_ci(y_true, y_pred, 3, samples=300, seed=8)
    low, high = first["accuracy"]
    assert low < (y_true == y_pred).mean() < high and high - low < 0.2
    for c, (lo, hi) in enumerate(first["per_class"]):
        assert lo <= (y_pred[y_true == c] == c).mean() <= hi


def test_top_confusions_order_and_reverse():
    confusion = np.array([[50, 3, 0], [150, 40, 18], [0, 18, 9]])
    top = top_confusions(confusion, ["edge_on_disk", "smooth_cigar", "x"], k=3)
    assert [(t["true"], t["pred"], t["count"], t["reverse"]) for t in top] == [
        ("smooth_cigar", "edge_on_disk", 150, 3), ("smooth_cigar", "x", 18, 18), ("x", "smooth_cigar", 18, 18)]


def test_residuals_and_bins():
    frame = residuals(MIXED, MIXED[["p_a", "p_b", "p_c"]].to_numpy(), CLASSES)
    assert frame["residual"].tolist() == pytest.approx([0.2, 0.6, 0.1, 0.7])
    assert frame["residual_bin"].tolist() == ["[0.2,0.3)", "[0.6,0.7)", "[0.1,0.2)", "[0.7,0.8)"]
    assert residual_bin([0.0, 0.999, 1.0]) == ["[0.0,0.1)", "[0.9,1.0]", "[0.9,1.0]"]
    assert sorted(residual_bin(np.linspace(0, 1, 11))) == residual_bin(np.linspace(0, 1, 11))  # sorts as text


def test_most_confident_ties_broken_by_id():
    probs = MIXED[["p_a", "p_b", "p_c"]].to_numpy()
    assert most_confident(MIXED, probs, correct=True)["id_str"].tolist() == ["g2", "g0"]
    assert most_confident(MIXED, probs, correct=False, k=1)["id_str"].tolist() == ["g1"]
    tied = MIXED.assign(id_str=["z", "y", "x", "w"], p_a=[0.9, 0.9, 0.9, 0.9], p_b=0.1, p_c=0.0,
                        pred_label=["a", "a", "a", "a"])
    tied_probs = tied[["p_a", "p_b", "p_c"]].to_numpy()
    assert most_confident(tied, tied_probs, correct=False)["id_str"].tolist() == ["w", "x"]
    assert most_confident(tied, tied_probs, correct=True)["id_str"].tolist() == ["y", "z"]


@pytest.mark.parametrize("change, message", [
    (lambda t: t.drop(columns=["p_b"]), "missing column(s) ['p_b']"),
    (lambda t: t.drop(columns=["true_label"]), "missing column(s) ['true_label']"),
    (lambda t: t.assign(p_a=t["p_a"] + 0.2), "sum to 1.2000, not 1"),
    (lambda t: t.assign(p_a=-t["p_a"], p_b=t["p_b"] + 2 * t["p_a"]), "not 1"),
    (lambda t: t.assign(true_label=["a", "a", "b", "elliptical"]),
     "true_label has unknown class name(s) ['elliptical']"),
    (lambda t: t.assign(pred_label=["a", "b", "b", None]), "pred_label has unknown class name(s) ['<missing>']"),
    (lambda t: t.assign(p_spiral=0.0), "probability column(s) ['p_spiral'] of unknown class(es)"),
    (lambda t: t.assign(pred_label=["b", "b", "b", "a"]), "pred_label of row 1 (id g0) is not its most probable"),
    (lambda t: t.assign(p_a="x"), "not all numbers"),
    (lambda t: t.iloc[:0], "no rows"),
])
def test_bad_predictions_are_one_line_errors(change, message):
    with pytest.raises(PipelineError) as err:
        check_predictions(change(MIXED.copy()), CLASSES, name="test.csv")
    text = str(err.value)
    assert text.startswith("test.csv: ") and message in text and "\n" not in text


def test_six_decimal_rounding_is_accepted():
    rounded = MIXED.assign(p_a=MIXED["p_a"] + 1e-6)
    assert check_predictions(rounded, CLASSES).shape == (4, 3)
