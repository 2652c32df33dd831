import pandas as pd
import pytest

from galaxy_finetune.core.errors import PipelineError
from galaxy_finetune.data.split import split_catalog


def _catalog(n_per_class=50, canonical=False):
    rows = []
    for c, name in enumerate(["a", "b", "c", "d"]):
        for i in range(n_per_class):
            split = ("test" if i % 5 == 0 else "train") if canonical else ""
            rows.append({"id_str": f"{name}{i}", "label": c, "label_name": name, "split": split, "file": f"{name}{i}.png"})
    return pd.DataFrame(rows)


def test_stratified_no_leakage_seeded():
    splits = split_catalog(_catalog(), val_fraction=0.1, test_fraction=0.2, seed=0)
    ids = [set(s["id_str"]) for s in splits.values()]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert sum(len(s) for s in splits.values()) == 200
    assert splits["test"]["label"].value_counts().tolist() == [10] * 4
    assert splits["val"]["label"].value_counts().tolist() == [4] * 4
    again = split_catalog(_catalog(), val_fraction=0.1, test_fraction=0.2, seed=0)
    other = split_catalog(_catalog(), val_fraction=0.1, test_fraction=0.2, seed=1)
    assert splits["test"]["id_str"].tolist() == again["test"]["id_str"].tolist()
    assert splits["test"]["id_str"].tolist() != other["test"]["id_str"].tolist()
    assert "split" not in splits["train"].columns


def test_canonical_test_set_is_kept():
    catalog = _catalog(canonical=True)
    splits = split_catalog(catalog, val_fraction=0.1, test_fraction=0.5, seed=0)
    assert set(splits["test"]["id_str"]) == set(catalog.loc[catalog["split"] == "test", "id_str"])
    assert len(splits["train"]) + len(splits["val"]) == 160


def test_too_few_examples_and_duplicates():
    tiny = _catalog(n_per_class=1)
    with pytest.raises(PipelineError, match="too few"):
        split_catalog(tiny, 0.1, 0.2, 0)
    lonely = pd.concat([_catalog(n_per_class=10).query("label_name != 'c'"), _catalog(n_per_class=1).iloc[[2]]])
    with pytest.raises(PipelineError) as info:
        split_catalog(lonely, 0.1, 0.2, 0)
    assert str(info.value) == ("split: class 'c' has 1 galaxy left, too few to put one in test and keep one in train; "
                               "add galaxies of that class, or drop it from data.classes (and its galaxies from the "
                               "catalog)")
    dup = pd.concat([_catalog(), _catalog().head(1)])
    with pytest.raises(PipelineError, match="duplicate id_str"):
        split_catalog(dup, 0.1, 0.2, 0)


def test_canonical_val_set_is_kept():
    """galaxy-datasets' layout marks val too: those rows are the validation set, none is carved from train."""
    catalog = _catalog(canonical=True)
    catalog.loc[catalog.index % 5 == 1, "split"] = "val"
    splits = split_catalog(catalog, val_fraction=0.3, test_fraction=0.5, seed=0)
    for name in ("train", "val", "test"):
        assert set(splits[name]["id_str"]) == set(catalog.loc[catalog["split"] == name, "id_str"]), name


def test_canonical_val_without_test_carves_test_from_the_rest():
    catalog = _catalog()
    catalog.loc[catalog.index % 10 == 0, "split"] = "val"
    splits = split_catalog(catalog, val_fraction=0.3, test_fraction=0.25, seed=0)
    assert set(splits["val"]["id_str"]) == set(catalog.loc[catalog["split"] == "val", "id_str"])
    assert len(splits["test"]) == 45 and len(splits["train"]) == 135  # 25% of the 180 unmarked rows
    assert not set(splits["test"]["id_str"]) & set(splits["val"]["id_str"])


def _with_unlabelled(n: int = 30) -> pd.DataFrame:
    catalog = _catalog()
    pool = pd.DataFrame({"id_str": [f"u{i}" for i in range(n)], "label": -1, "label_name": "",
                         "split": ["test", "val", ""] * (n // 3), "file": [f"u{i}.png" for i in range(n)]})
    return pd.concat([catalog, pool], ignore_index=True).assign(row=lambda f: range(len(f)))


def test_issue34_unlabelled_galaxies_go_to_the_pool_never_val_or_test_and_leave_the_draw_unchanged():
    catalog = _with_unlabelled()
    splits = split_catalog(catalog, val_fraction=0.1, test_fraction=0.2, seed=0)
    pool = splits["unlabelled"]
    assert set(pool["id_str"]) == {f"u{i}" for i in range(30)}  # marked test or val in the catalog, even so
    assert set(pool["reason"]) == {"no label"} and (pool["label"] == -1).all()
    for name in ("train", "val", "test"):
        assert (splits[name]["label"] >= 0).all() and not set(splits[name]["id_str"]) & set(pool["id_str"])
    alone = split_catalog(_catalog().assign(row=range(200)), val_fraction=0.1, test_fraction=0.2, seed=0)
    for name in ("train", "val", "test"):  # the labelled galaxies are drawn exactly as without a pool
        assert splits[name]["id_str"].tolist() == alone[name]["id_str"].tolist()
    assert splits["train"]["row"].tolist() == alone["train"]["row"].tolist()  # store rows kept as they were


def test_issue34_a_budget_runs_held_back_labels_join_the_pool_without_their_labels():
    catalog = _with_unlabelled()
    full = split_catalog(catalog, val_fraction=0.1, test_fraction=0.2, seed=0)
    budget = split_catalog(catalog, val_fraction=0.1, test_fraction=0.2, seed=0, train_per_class=5)
    assert budget["train"]["label"].value_counts().tolist() == [5] * 4
    held = budget["unlabelled"][budget["unlabelled"]["reason"] == "label held back (split.train_per_class)"]
    assert set(held["id_str"]) == set(full["train"]["id_str"]) - set(budget["train"]["id_str"])
    assert (held["label"] == -1).all() and (held["label_name"] == "").all()  # no loss can see them
    assert len(budget["unlabelled"]) == len(full["train"]) - 20 + 30
    for name in ("val", "test"):
        assert budget[name]["id_str"].tolist() == full[name]["id_str"].tolist()
