"""core/stats.py: the one log loss (scikit-learn's, computed in log space) and the one seeded percentile bootstrap."""
import numpy as np
import pytest
from scipy.special import softmax
from sklearn.metrics import log_loss as sklearn_log_loss

from galaxy_finetune.core.stats import bootstrap_interval, log_loss


def test_log_loss_is_sklearns_with_labels_and_its_eps_clip():
    rng = np.random.default_rng(0)
    labels = np.array([2, 5, 9])
    probs = softmax(rng.normal(size=(50, 3)) * 20, axis=1)
    probs[0] = [1.0, 0.0, 0.0]  # below the float eps: clipped, as scikit-learn does
    y = labels[rng.integers(0, 3, 50)]
    assert log_loss(y, probs, labels=labels) == pytest.approx(sklearn_log_loss(y, probs, labels=labels), abs=1e-12)
    with pytest.raises(ValueError, match="not in labels"):
        log_loss(np.array([3]), probs[:1], labels=labels)


def test_log_loss_of_logits_never_underflows():
    logits = np.array([[800.0, 0.0], [0.0, 1.0]])
    assert log_loss([1, 1], logits=logits) == pytest.approx((800 + np.log1p(np.exp(-800)) + np.log1p(np.exp(-1))) / 2)


def test_bootstrap_interval_is_seeded_percentiles_of_the_resamples():
    values = np.arange(20.0)
    low, high = bootstrap_interval(lambda idx: values[idx].mean(1), 20, 500, seed=3)
    means = values[np.random.default_rng(3).integers(0, 20, size=(500, 20))].mean(1)
    assert (low, high) == (np.percentile(means, 2.5), np.percentile(means, 97.5))
    assert (low, high) == bootstrap_interval(lambda idx: values[idx].mean(1), 20, 500, seed=3)
    assert np.isnan(bootstrap_interval(lambda idx: values[idx].mean(1), 0, 500, seed=3)).all()
    assert np.isnan(bootstrap_interval(lambda idx: np.array([]), 20, 500, seed=3)).all()
