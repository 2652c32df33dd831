"""The label budget: nested budgets, the power law, acquisition scores and MC dropout, label issues, duplicates,
and the shift score (tiny, offline, synthetic)."""

import numpy as np
import pandas as pd
import pytest
import torch

from galaxy_finetune.labels.acquisition import bald, entropy, margin, mc_head_probs, pick
from galaxy_finetune.labels.curve import PowerLaw, fit_curve, fit_power_law, learning_curve
from galaxy_finetune.labels.issues import Judged, find_suspects, out_of_fold_probs
from galaxy_finetune.inference.shift import ShiftReference, shift_summary, shift_warning
from galaxy_finetune.labels.simulate import label_saving, simulate_active
from galaxy_finetune.data.subsets import nested_subsets


def test_nested_subsets_are_nested_class_balanced_and_seeded():
    labels = np.repeat([0, 1, 2], [60, 45, 80])
    subsets = nested_subsets(labels, [5, 10, 25, 50], seed=3)
    assert list(subsets) == [5, 10, 25, "all"]  # 50 per class: class 1 has 45, so that budget is dropped
    sizes = [5, 10, 25]
    for small, large in zip(sizes, sizes[1:]):
        assert set(subsets[small]) < set(subsets[large])
    for n in sizes:
        assert np.bincount(labels[subsets[n]]).tolist() == [n, n, n]
    assert len(subsets["all"]) == len(labels)
    assert np.array_equal(nested_subsets(labels, [10], seed=3)[10], subsets[10])
    assert not np.array_equal(nested_subsets(labels, [10], seed=4)[10], subsets[10])


def test_power_law_fit_recovers_a_known_law_and_says_when_a_target_is_out_of_reach():
    n = np.array([20, 50, 100, 200, 400, 800, 1600])
    truth = PowerLaw(0.8, 0.45, 0.06)
    law = fit_power_law(n, truth.error(n))
    assert law.a == pytest.approx(0.8, rel=1e-3) and law.b == pytest.approx(0.45, rel=1e-3)
    assert law.c == pytest.approx(0.06, abs=1e-4)
    need = law.labels_for(0.90)  # error 0.10 = 0.8 n^-0.45 + 0.06
    assert need == pytest.approx((0.8 / 0.04) ** (1 / 0.45), rel=1e-2)
    assert law.labels_for(0.95) is None  # below the floor: 1 - 0.06 = 94%
    curve = pd.DataFrame({"n_labels": n, "accuracy": 1 - truth.error(n), "ci_low": 0.0, "ci_high": 0.02})
    assert fit_curve(curve, "accuracy", 0.95)["note"].startswith("unreachable")


def test_learning_curve_rises_on_separable_features():
    rng = np.random.default_rng(0)

    def draw(n):
        y = rng.integers(0, 2, n)
        return rng.normal(0, 1, (n, 5)) + 1.2 * y[:, None], y

    (tx, ty), (vx, vy), (sx, sy) = draw(300), draw(80), draw(300)
    runs, curve = learning_curve(tx, ty, vx, vy, sx, sy, 2, [2, 10, 50], seeds=2, bootstrap_samples=50)
    assert curve["per_class"].tolist() == [2, 10, 50, "all"] and len(runs) == 8
    assert (curve["ci_low"] <= curve["accuracy"]).all() and (curve["accuracy"] <= curve["ci_high"]).all()
    assert curve["accuracy"].iloc[-1] > 0.85


def test_acquisition_scores_rank_the_uncertain_prediction_first():
    probs = np.array([[0.99, 0.01], [0.5, 0.5]])
    for values in (entropy(probs), margin(probs)):
        assert values[1] > values[0]
    agree = np.stack([probs] * 4)  # every pass says the same
    disagree = np.stack([np.array([[0.99, 0.01], [0.95, 0.05]]), np.array([[0.99, 0.01], [0.05, 0.95]])] * 2)
    assert bald(agree)[1] == pytest.approx(0.0, abs=1e-9)
    assert bald(disagree)[1] > bald(agree)[1] and bald(disagree)[1] > bald(disagree)[0]
    assert pick(np.array([0.1, 0.9, 0.5]), 2).tolist() == [1, 2]


def test_diverse_pick_skips_near_copies():
    features = np.array([[1.0, 0.0], [1.0, 0.001], [0.0, 1.0], [0.7, 0.7]])
    scores = np.array([0.9, 0.89, 0.5, 0.1])
    assert pick(scores, 2).tolist() == [0, 1]  # by score alone: a near-copy of the best
    assert pick(scores, 2, features).tolist() == [0, 2]


def _tiny_classifier(dropout=0.5):
    import timm

    from galaxy_finetune.core.params import TrainParams
    from galaxy_finetune.training.classifier import build_classifier

    torch.manual_seed(0)
    encoder = timm.create_model("test_convnext", pretrained=False, num_classes=0)
    return build_classifier(encoder, 3, TrainParams(dropout=dropout)).eval()


def test_mc_dropout_samples_the_head_only_and_leaves_the_model_in_eval():
    model = _tiny_classifier()
    seen = {}
    model.head.dropout.register_forward_hook(lambda m, i, o: seen.setdefault("dropout", []).append(m.training))
    model.encoder.register_forward_hook(lambda m, i, o: seen.setdefault("encoder", []).append(m.training))
    images = torch.rand(4, 3, 32, 32)
    with torch.inference_mode():
        features = model.encoder(images)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    mc = mc_head_probs(model, features, passes=6, seed=1)
    assert mc.shape == (6, 4, 3)
    assert all(seen["dropout"]) and len(seen["dropout"]) == 6  # dropout on in every pass
    assert seen["encoder"] == [False]  # the encoder ran once, before, in eval mode
    assert not torch.allclose(mc[0], mc[1])  # passes differ
    assert torch.allclose(mc_head_probs(model, features, 6, seed=1), mc)  # seeded
    assert not model.training and not model.head.dropout.training
    with torch.inference_mode():
        assert torch.allclose(model.encoder(images), features)  # encoder unchanged
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_an_injected_label_flip_ranks_near_the_top_of_the_label_issues():
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1], 120)
    x = rng.normal(0, 1, (240, 6)) + 4.0 * y[:, None]
    given = y.copy()
    given[17] = 1  # a class-0 galaxy labelled 1
    galaxies = pd.DataFrame({"id_str": [f"g{i}" for i in range(240)], "label": given, "split": "train",
                             "row": np.arange(240)})
    suspects = find_suspects([Judged("probe", galaxies, out_of_fold_probs(x, given, 2, folds=5))], ["a", "b"])
    assert "g17" in suspects["id_str"].head(3).tolist()
    top = suspects.set_index("id_str").loc["g17"]
    assert top["given_label"] == "b" and top["suggested_label"] == "a"
    assert len(suspects) < 10


def test_active_learning_simulation_reports_a_saving_per_strategy():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 400)
    x = rng.normal(0, 1, (400, 4)) + 1.5 * y[:, None]
    rounds = simulate_active(x[:300], y[:300], x[300:], y[300:], 2, 1.0, ["random", "entropy", "bald"], seeds=2,
                             start_per_class=3, batch=10, budget=46, passes=5)
    assert set(rounds["strategy"]) == {"random", "entropy", "bald"}
    assert rounds.groupby(["strategy", "seed"])["n_labels"].max().eq(46).all()
    assert rounds.groupby(["strategy", "seed"])["n_labels"].min().eq(6).all()
    saving = label_saving(rounds).set_index("strategy")
    assert saving.loc["random", "label_saving"] == pytest.approx(0.0, abs=1e-9)
    curves = pd.DataFrame({"strategy": ["random"] * 3 + ["entropy"] * 3, "seed": 0, "n_labels": [10, 20, 30] * 2,
                           "accuracy": [0.6, 0.7, 0.8, 0.7, 0.8, 0.85]})
    known = label_saving(curves).set_index("strategy")
    assert known.loc["entropy", "labels_to_match_random"] == 20 and known.loc["entropy", "label_saving"] == pytest.approx(1 / 3, abs=1e-3)


def _population(rng, centres, n):
    return centres[rng.integers(0, len(centres), n)] + rng.normal(0, 0.4, (n, centres.shape[1]))


def test_a_shifted_distribution_warns_and_the_training_distribution_does_not():
    rng = np.random.default_rng(3)
    centres, elsewhere = rng.normal(0, 2, (4, 16)), rng.normal(0, 2, (4, 16))  # 4 kinds of galaxy, 4 others
    reference = ShiftReference.build(np.zeros(16), np.eye(16), _population(rng, centres, 400),
                                     _population(rng, centres, 200), k=5, model_sha256="x")
    same = _population(rng, centres, 300)
    shifted = _population(rng, elsewhere, 300)
    for queries, warns in ((same, False), (shifted, True)):
        distance = reference.distances(queries)
        summary = shift_summary(reference.share_farther(distance), distance, reference)
        line = shift_warning(summary)
        assert (line is not None) == warns, summary
    assert shift_summary(reference.share_farther(reference.distances(same)), reference.distances(same),
                         reference)["far_share"] < 0.25
    assert "lie farther from the training set than 90% of validation galaxies" in line


def test_label_budget_writes_its_outputs_and_analyse_shows_the_suspect_labels(tmp_path):
    import json

    from galaxy_finetune.analysis.analyse import analyse
    from galaxy_finetune.core.params import AnalyseParams
    from tests.label_budget_inputs import budget_inputs
    from tests.test_analyse import make_inputs, outputs

    inputs = make_inputs(tmp_path / "in", n=40)  # store rows: 80 train, 40 val, 40 test
    summary = budget_inputs(tmp_path / "lb", wrong={5: "train", 130: "test"})
    files = sorted(p.name for p in (tmp_path / "lb").iterdir())
    assert files == sorted(["learning_curve.csv", "learning_curve_runs.csv", "active_learning.csv",
                            "active_learning_mean.csv", "label_issues.csv", "near_duplicates.csv", "summary.json",
                            "report.md"])
    assert list(summary["curve"]) == ["3", "6", "12", "all"]
    assert set(summary["active_learning"]) == {"random", "entropy", "margin", "bald"}
    # strict JSON for DVC's metrics: a strategy that never reached random's accuracy is null, never NaN
    json.loads((tmp_path / "lb/summary.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in summary"))
    issues = pd.read_csv(tmp_path / "lb/label_issues.csv")
    assert set(issues["id_str"].head(2)) == {"x005", "x130"}
    assert issues.set_index("id_str").loc["x130", "judge"] == "finetuned"

    result = analyse(Inputs_with(inputs, tmp_path / "lb"), AnalyseParams(bootstrap_samples=20), outputs(tmp_path / "out"))
    metrics = json.loads((tmp_path / "out/metrics/metrics.json").read_text())
    assert metrics["label_issues"]["n_flagged"] == len(issues) == result["label_issues"]["n_flagged"]
    assert metrics["duplicates"]["near"] == summary["duplicates"]["near"]
    page = (tmp_path / "out/reports/errors.html").read_text()
    assert 'id="suspect-labels"' in page and 'href="#suspect-labels"' in page
    assert 'data-id="x005"' in page and "the fine-tuned model&#x27;s out-of-sample predictions" in page


def Inputs_with(inputs, label_budget_dir):
    import dataclasses

    return dataclasses.replace(inputs, label_budget=label_budget_dir)


def test_split_train_per_class_keeps_val_and_test_and_nests_the_train_budgets():
    from galaxy_finetune.data.split import split_catalog
    from tests.test_split import _catalog

    full = split_catalog(_catalog(), 0.1, 0.2, seed=0)
    small = split_catalog(_catalog(), 0.1, 0.2, seed=0, train_per_class=5)
    larger = split_catalog(_catalog(), 0.1, 0.2, seed=0, train_per_class=12)
    for name in ("val", "test"):
        assert small[name]["id_str"].tolist() == full[name]["id_str"].tolist()
    assert small["train"]["label"].value_counts().tolist() == [5] * 4
    assert set(small["train"]["id_str"]) < set(larger["train"]["id_str"]) < set(full["train"]["id_str"])


def test_near_identical_features_are_paired_and_named_in_one_line():
    from galaxy_finetune.data.duplicates import candidate_pairs, near_warning

    rng = np.random.default_rng(5)
    features = rng.normal(0, 1, (50, 32))
    features[40] = features[3] * 1.05 + rng.normal(0, 0.01, 32)  # a re-encoded copy of galaxy 3
    pairs = candidate_pairs(features, 0.99)
    assert pairs[["i", "j"]].values.tolist() == [[3, 40]]
    frame = pd.DataFrame({"id_a": ["g3"], "split_a": ["train"], "id_b": ["g40"], "split_b": ["test"],
                          "similarity": pairs["similarity"], "proof": [0.93]})
    line = near_warning(frame, 0.99, "near_duplicates.csv")
    assert "'g3' (train) and 'g40' (test)" in line and "1 across splits (a leak)" in line and "\n" not in line
    assert "pixels 0.93" in line
    assert near_warning(frame.iloc[:0], 0.99, "x") is None


def test_the_label_budget_uses_a_bounded_sample_keeping_each_split_and_class_share():
    from galaxy_finetune.labels.budget import budget_sample

    galaxies = pd.DataFrame({"id_str": [f"g{i}" for i in range(1000)],
                             "split": np.repeat(["train", "val", "test"], [700, 100, 200]),
                             "label": np.tile([0, 0, 0, 1], 250)})
    assert budget_sample(galaxies, 0) is galaxies and budget_sample(galaxies, 1000) is galaxies
    sample = budget_sample(galaxies, 100)
    assert 98 <= len(sample) <= 102 and sample["id_str"].is_unique
    shares = sample.groupby(["split", "label"]).size() / len(sample)
    expected = galaxies.groupby(["split", "label"]).size() / len(galaxies)
    assert (shares - expected).abs().max() < 0.02
    assert budget_sample(galaxies, 100)["id_str"].tolist() == sample["id_str"].tolist()  # seeded
