"""galaxy_finetune.core.neighbours: exact cosine search and the anomaly score."""
import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from galaxy_finetune.core.neighbours import CosineIndex, anomaly_scores


def test_search_matches_sklearn_brute_force_cosine():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(500, 12))
    queries = rng.normal(size=(7, 12))
    sim, rows = CosineIndex(features).search(queries, 5)
    distance, expected = NearestNeighbors(n_neighbors=5, metric="cosine", algorithm="brute").fit(features).kneighbors(
        queries)
    assert (rows == expected).all()
    assert sim == pytest.approx(1 - distance, abs=1e-5)
    assert (np.diff(sim, axis=1) <= 1e-7).all()


def test_a_galaxy_is_its_own_nearest_neighbour_and_a_duplicate_is_next():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(100, 8))
    features[57] = features[12] * 3.0  # same direction: a duplicate for cosine similarity
    sim, rows = CosineIndex(features).search(features, 2)
    assert (rows[:, 0] == np.arange(100))[np.r_[0:12, 13:57, 58:100]].all()
    assert set(rows[12]) == set(rows[57]) == {12, 57}
    assert sim[12] == pytest.approx([1, 1])


def test_k_larger_than_the_index():
    sim, rows = CosineIndex(np.eye(3)).search(np.array([[1.0, 0.5, 0]]), 10)
    assert rows.tolist() == [[0, 1, 2]]


def test_anomaly_score_is_highest_for_the_outlier():
    rng = np.random.default_rng(2)
    reference = rng.normal(size=(200, 6)) + np.array([5, 0, 0, 0, 0, 0])
    queries = np.vstack([rng.normal(size=(20, 6)) + np.array([5, 0, 0, 0, 0, 0]), [[-5, 0, 0, 0, 0, 0]]])
    scores, nearest = anomaly_scores(reference, queries, k=10, batch=7)  # several batches
    assert scores.argmax() == 20
    assert nearest.shape == (21,) and nearest.max() < 200
    assert ((scores >= 0) & (scores <= 2)).all()
