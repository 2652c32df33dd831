"""galaxy_finetune.analysis.calibration: temperature scaling, accuracy against coverage, purity thresholds."""
import numpy as np
import pytest
from scipy.special import softmax

from galaxy_finetune.analysis.calibration import (accuracy_coverage, fit_temperature, negative_log_likelihood,
                                         purity_threshold, purity_thresholds, scale, selection_quality,
                                         temperature_scaling)
from galaxy_finetune.core.classes import GALAXY_MNIST_CLASSES

CLASSES = list(GALAXY_MNIST_CLASSES)


def overconfident(n=600, seed=0, sharpness=3.0):
    """Probabilities from logits drawn calibrated at T = 1, then sharpened: the true temperature is `sharpness`."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, len(CLASSES))) * 2
    y = np.array([rng.choice(len(CLASSES), p=p) for p in softmax(logits, axis=1)])
    return softmax(logits * sharpness, axis=1), y


def test_scale_at_temperature_one_is_identity_and_higher_t_flattens():
    probs, _ = overconfident(20)
    assert scale(probs, 1.0) == pytest.approx(probs, abs=1e-6)
    assert (scale(probs, 2.0).max(1) < probs.max(1)).all()
    assert scale(probs, 2.0).sum(1) == pytest.approx(np.ones(20))


def test_fitted_temperature_recovers_the_sharpening_and_lowers_the_log_loss():
    probs, y = overconfident()
    t = fit_temperature(probs, y)
    assert t == pytest.approx(3.0, rel=0.15)
    assert negative_log_likelihood(probs, y, t) < negative_log_likelihood(probs, y, 1.0) - 0.1


def test_calibrated_probabilities_keep_temperature_one():
    probs, y = overconfident(sharpness=1.0, n=3000)
    assert fit_temperature(probs, y) == pytest.approx(1.0, abs=0.1)


def test_temperature_scaling_reports_before_and_after_on_both_splits():
    val, val_y = overconfident(seed=1)
    test, test_y = overconfident(seed=2)
    result, scaled = temperature_scaling(val, val_y, test, test_y, ece_bins=10)
    assert set(result) == {"temperature", "val", "test"}
    for split in ("val", "test"):
        assert set(result[split]) == {f"{m}_{w}" for m in ("log_loss", "brier", "ece") for w in ("before", "after")}
        assert result[split]["log_loss_after"] < result[split]["log_loss_before"]
        assert result[split]["ece_after"] < result[split]["ece_before"]
    assert scaled == pytest.approx(scale(test, result["temperature"]))
    assert (scaled.argmax(1) == test.argmax(1)).all()  # scaling never changes the predicted class


def test_accuracy_coverage_by_hand():
    confidence = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    correct = np.array([True, True, False, True, False])
    curve = accuracy_coverage(confidence, correct, steps=5)
    assert curve["coverage"].tolist() == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert curve["accuracy"].tolist() == pytest.approx([1, 1, 2 / 3, 3 / 4, 3 / 5])
    assert curve["min_confidence"].tolist() == pytest.approx([0.9, 0.8, 0.7, 0.6, 0.5])
    # the 100% row is the plain accuracy, whatever the ties
    rng = np.random.default_rng(0)
    ties = rng.integers(0, 3, 50) / 3
    hits = rng.random(50) < 0.7
    assert accuracy_coverage(ties, hits)["accuracy"].iloc[-1] == pytest.approx(hits.mean(), abs=1e-6)


def test_purity_threshold_is_the_lowest_cut_reaching_the_target():
    p = np.array([0.99, 0.95, 0.9, 0.8, 0.7, 0.6])
    is_class = np.array([True, True, True, False, True, False])
    assert purity_threshold(p, is_class, 0.95) == 0.9  # 3/3; at 0.8 3/4, at 0.7 4/5 = 0.8
    assert purity_threshold(p, is_class, 0.8) == 0.7  # 4/5 reaches 0.8
    assert purity_threshold(p, ~is_class, 0.95) is None
    # a cut keeps every galaxy with the same p: a tie that mixes classes cannot be split
    assert purity_threshold(np.array([0.9, 0.9]), np.array([True, False]), 0.95) is None
    assert purity_threshold(p, np.zeros(len(p), bool), 0.5) is None  # no galaxy of the class
    rng = np.random.default_rng(1)
    for _ in range(200):  # against every cut tried by hand, on rounded (so tied) probabilities
        p_random = np.round(rng.random(30), 1)
        y_random = rng.random(30) < p_random
        reaching = [t for t in np.unique(p_random) if y_random[p_random >= t].mean() >= 0.8]
        assert purity_threshold(p_random, y_random, 0.8) == (min(reaching) if reaching else None)
    quality = selection_quality(p, is_class, 0.7)
    assert quality == {"precision": 0.8, "completeness": 1.0, "selected": 5}
    assert selection_quality(p, is_class, None) == {"precision": None, "completeness": None, "selected": 0}


def test_purity_thresholds_reach_the_target_on_val():
    val, val_y = overconfident(seed=3)
    test, test_y = overconfident(seed=4)
    result = purity_thresholds(val, val_y, test, test_y, CLASSES)
    assert set(result) == set(CLASSES)
    for name in CLASSES:
        strict, loose = result[name]["precision_99"], result[name]["precision_95"]
        for cut, target in ((loose, 0.95), (strict, 0.99)):
            if cut["threshold"] is not None:
                assert cut["val"]["precision"] >= target
        if strict["threshold"] is not None and loose["threshold"] is not None:
            assert strict["threshold"] >= loose["threshold"]
            assert strict["test"]["completeness"] <= loose["test"]["completeness"]
