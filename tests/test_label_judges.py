"""The label budget speaks of the model the user trains: who judges each label, the random-init case said in
words, no library warnings (tiny, offline). Near copies: tests/test_near_copies.py."""
import warnings

import numpy as np
import pandas as pd
import torch

from galaxy_finetune.labels.budget import RANDOM_INIT, summary_line
from galaxy_finetune.labels.issues import out_of_fold_probs, probe_judged
from galaxy_finetune.training.dynamics import TrainingDynamics
from tests.label_budget_inputs import budget_inputs, galaxies_and_truth


def test_flipped_labels_rank_first_and_a_clean_set_yields_few_flags(tmp_path):
    flipped = budget_inputs(tmp_path / "flipped", wrong={5: "train", 61: "train", 130: "test"})
    issues = pd.read_csv(tmp_path / "flipped/label_issues.csv")
    assert set(issues["id_str"].head(3)) == {"x005", "x061", "x130"}
    clean = budget_inputs(tmp_path / "clean")
    judges = clean["label_issues"]["judges"]
    # a 97%-accurate judge disagrees with a few correct labels; cleanlab flags at most about that many
    assert clean["label_issues"]["n_flagged"] <= sum(j["expected_by_chance"] for j in judges.values()) + 2
    assert clean["label_issues"]["share"] <= 0.05 < flipped["label_issues"]["share"] + 0.05
    assert set(judges) == {"finetuned", "dynamics"} and judges["finetuned"]["splits"] == ["test", "val"]


def test_every_judge_keeps_to_its_splits(tmp_path):
    budget_inputs(tmp_path / "lb", wrong={5: "train", 90: "val", 130: "test"})
    issues = pd.read_csv(tmp_path / "lb/label_issues.csv")
    assert not issues.empty
    assert (issues.loc[issues["split"] == "train", "judge"] == "dynamics").all()
    assert (issues.loc[issues["split"] != "train", "judge"] == "finetuned").all()


def test_a_probe_judge_never_saw_the_label_it_judges():
    galaxies, features, _ = galaxies_and_truth()
    train = galaxies[galaxies["split"] == "train"].reset_index(drop=True)
    x, y = features[train.index], train["label"].to_numpy()
    judged = probe_judged(x, train, 4, folds=4)
    folds = judged.folds
    assert sorted(np.bincount(folds)) == [20, 20, 20, 20]  # every galaxy held out exactly once, stratified
    for i in (0, 33, 79):  # change galaxy i's label: its own probabilities stay exactly the same
        changed = y.copy()
        changed[i] = (y[i] + 1) % 4
        again = out_of_fold_probs(x, changed, 4, folds=4, fold_of=folds)
        assert np.array_equal(again[i], judged.probs[i])
        others = np.flatnonzero(folds != folds[i])
        assert not np.allclose(again[others], judged.probs[others])  # the other folds' probe did learn it


def test_a_random_init_run_says_it_cannot_judge_instead_of_printing_figures(tmp_path):
    summary = budget_inputs(tmp_path / "lb", pretrained=False)
    assert summary["learner"] is None and summary["note"] == RANDOM_INIT
    assert "curve" not in summary and "active_learning" not in summary
    assert pd.read_csv(tmp_path / "lb/learning_curve.csv").empty
    assert pd.read_csv(tmp_path / "lb/active_learning_mean.csv").empty
    line = summary_line(summary)
    assert "not computed (random-init encoder)" in line and "/class" not in line
    report = (tmp_path / "lb/report.md").read_text()
    assert "random init" in report and "| labels per class |" not in report
    assert "pretrained" not in summary["label_issues"]["judges"]["finetuned"]["method"]


def test_the_label_budget_emits_no_library_warnings(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        budget_inputs(tmp_path / "lb", wrong={5: "train"})
    library = [w for w in caught if any(lib in w.filename for lib in ("scipy", "sklearn", "cleanlab", "numpy"))
               or w.category.__module__.split(".")[0] in ("scipy", "sklearn", "cleanlab")]
    assert not library, [str(w.message) for w in library]


def test_training_dynamics_give_a_hard_label_the_lowest_margin():
    dynamics = TrainingDynamics(n_train=6, n_classes=2)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    for step in range(4):  # two batches an epoch; galaxy 2's given label (0) fights what the model predicts (1)
        for index in (torch.tensor([0, 2, 4]), torch.tensor([1, 3, 5])):
            truth = torch.tensor([0, 0, 1, 1, 1, 1])[index]
            logits = torch.nn.functional.one_hot(truth, 2).float() * (1 + step)
            dynamics.on_train_batch_end(None, None, {"predictions": logits},
                                        {"index": index, "label": labels[index]}, 0)
    galaxies = pd.DataFrame({"id_str": list("abcdef"), "row": range(6), "label": labels.numpy()})
    table = dynamics.table(galaxies, ["round", "spiral"])
    assert table["seen"].tolist() == [4] * 6
    assert table["aum"].idxmin() == 2 and table.loc[2, "aum"] < 0 < table.drop(2)["aum"].min()
    assert table.loc[2, "p_spiral"] > 0.5 and np.allclose(table[["p_round", "p_spiral"]].sum(1), 1)
    restored = TrainingDynamics(6, 2)
    restored.load_state_dict(dynamics.state_dict())
    assert restored.table(galaxies, ["round", "spiral"]).equals(table)


def test_the_cleanlab_filter_is_a_parameter_and_the_record_names_it(tmp_path):
    wrong = {5: "train", 61: "train", 130: "test"}
    default = budget_inputs(tmp_path / "default", wrong=wrong)["label_issues"]
    every = budget_inputs(tmp_path / "every", wrong=wrong, filter_by="predicted_neq_given")["label_issues"]
    # every disagreement of a judge with the given label: at least what the noise-rate pruning keeps
    assert every["n_flagged"] >= default["n_flagged"] >= 3
    assert "(predicted_neq_given)" in every["method"] and "(prune_by_noise_rate)" in default["method"]
    flagged = pd.read_csv(tmp_path / "every/label_issues.csv")
    assert {"x005", "x061", "x130"} <= set(flagged["id_str"])
