"""Semi-supervised fine-tuning (issue 34): the unlabelled pool's bookkeeping, its views, the pseudo-label mask, the
guard, and train.semi none leaving the supervised run exactly as it was. Tiny and in-process; accuracy is measured
by benchmarks/few_labels.py on real galaxies, not here."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from galaxy_finetune.core.layout import POOL
from galaxy_finetune.core.params import AugmentParams, Params, TrainParams
from galaxy_finetune.data.augment import distort, strong_view, train_view
from galaxy_finetune.data.loading import GalaxyDataModule, labelled_part, read_split
from galaxy_finetune.data.split import read_catalog, split_catalog, write_splits
from galaxy_finetune.training.semi import like_a_labelled_class
from tests.tiny import RANDOM_INIT_RECIPE, prepare

TINY = {"data": {"source": "synthetic", "synthetic_n_per_class": 10, "synthetic_image_size": 32},
        "model": {"encoder": "random", "random_arch": "convnext_atto"},
        RANDOM_INIT_RECIPE: {"lr": 1e-3, "batch_size": 4, "input_size": 32, "epochs": 1, "patience": 50,
                             "layer_decay": 1.0}}


@pytest.fixture(scope="module")
def budget(tmp_path_factory):
    """40 tiny synthetic galaxies split with 3 labels per class kept: the rest of train is the unlabelled pool."""
    root = tmp_path_factory.mktemp("semi")
    paths = prepare(root, Params.model_validate(TINY), 0.2, 0.2)
    splits = split_catalog(read_catalog(paths.raw), 0.2, 0.2, 0, train_per_class=3)
    write_splits(splits, paths.splits)
    paths.pool = read_split(paths.splits, POOL)
    return paths


def _train(budget, tmp_path, **semi):
    from galaxy_finetune.training.train import FinetuneJob, finetune

    params = Params.model_validate({**TINY, "train": {"accelerator": "cpu", "resume": "never", **semi}})
    name, train = params.recipe(False)
    job = FinetuneJob(budget.raw, budget.store, budget.splits, budget.encoder, tmp_path / "model", None,
                      tmp_path / "ckpt")
    return finetune(train, params.augment, name, budget.manifest, job)


def test_the_pool_rides_beside_each_labelled_batch_and_holds_only_unlabelled_rows(budget):
    data = GalaxyDataModule(budget.store, budget.splits, 32, 4, AugmentParams(), pool_ratio=2)
    train = read_split(budget.splits, "train")
    assert len(train) == 12 and len(budget.pool) > 0 and not set(train["row"]) & set(budget.pool["row"])
    loader = data.train_dataloader()
    loader.reset() if hasattr(loader, "reset") else None
    batches = list(iter(loader))
    assert len(batches) == 3  # an epoch is the labelled loader's: 12 galaxies in batches of 4
    for batch, *_ in batches:
        labelled, pool = labelled_part(batch), batch["unlabelled"]
        assert (labelled["label"] >= 0).all() and len(pool["image"]) == 8
        assert set(data.dataset("train").rows[labelled["index"].numpy()]) <= set(train["row"])
        assert set(data.dataset(POOL).rows[pool["index"].numpy()]) <= set(budget.pool["row"])
        assert (pool["label"] == -1).all()  # no truth reaches the pool's batches


def test_a_pool_of_a_million_is_sampled_not_scanned():
    """The pool's sampler draws with replacement: its epoch is the labelled epoch's length, whatever the pool."""
    from galaxy_finetune.data.loading import StoreGalaxies

    big = StoreGalaxies(np.zeros((1, 8, 8, 3), np.uint8), np.zeros(10**6, dtype=np.int64))
    sampler = torch.utils.data.RandomSampler(big, replacement=True, num_samples=64)
    assert len(list(sampler)) == 64


def test_the_strong_view_differs_from_the_weak_one_and_keeps_the_shape():
    images = torch.randint(0, 255, (6, 3, 40, 40), dtype=torch.uint8)
    aug = AugmentParams()
    weak = train_view(images, 32, aug, torch.Generator().manual_seed(0))
    strong = strong_view(images, 32, aug, torch.Generator().manual_seed(0))
    assert weak.shape == strong.shape == (6, 3, 32, 32)
    assert not torch.allclose(weak, strong)  # the same warp (same seed), then exposure, noise and a blanked square
    pixels = torch.rand(4, 3, 32, 32) * 0.5 + 0.25
    distorted = distort(pixels, torch.Generator().manual_seed(1))
    assert distorted.min() >= 0 and distorted.max() <= 1
    assert ((distorted == 0).flatten(1).sum(1) >= 3 * 8 * 8).all()  # a square of at least a quarter side


def test_the_threshold_masks_pseudo_labels_and_the_guard_leaves_out_galaxies_unlike_every_class():
    from galaxy_finetune.data.encoder import build_encoder
    from galaxy_finetune.training.semi import SemiGalaxyClassifier
    from galaxy_finetune.core.task import Task

    encoder = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 16))
    encoder.num_features = 16
    task = Task("classification", ("a", "b"))
    model = SemiGalaxyClassifier.for_task(task, encoder, semi={"method": "fixmatch", "threshold": 0.0, "weight": 1.0,
                                                              "guard": False, "prior": [0.5, 0.5]}, learning_rate=1e-3)
    weak = torch.rand(10, 3, 8, 8)
    labelled = torch.randn(4, 16)
    labels = torch.tensor([0, 0, 1, 1])
    _, counts, _ = model.pseudo_labels(weak, labelled, labels)
    assert counts.tolist() == [1.0] * 10  # every galaxy's top class reaches a threshold of 0
    model.semi["threshold"] = 1.0
    _, counts, _ = model.pseudo_labels(weak, labelled, labels)
    assert counts.sum() == 0  # a softmax over two classes never reaches 1 here
    # the guard: two tight labelled clusters; a pool galaxy in one counts, one at right angles to both does not
    a, b = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    labelled = torch.stack([a, a * 1.1, b, b * 0.9]) + 0.01
    pool = torch.stack([labelled[0] + labelled[1], torch.tensor([0.0, 0.0, 1.0])])  # a class mean; neither
    assert like_a_labelled_class(pool, labelled, labels, 2).tolist() == [True, False]
    lonely = torch.tensor([0, 1])  # no class mate in the batch: no bar to measure, nothing left out
    assert like_a_labelled_class(pool, labelled[[0, 2]], lonely, 2).tolist() == [True, True]


def test_semi_none_is_todays_supervised_run_and_fixmatch_learns_from_the_pool(budget, tmp_path):
    from safetensors.torch import load_file

    supervised = _train(budget, tmp_path / "none")
    assert supervised["semi"] == {"method": "none"}
    # the same split without its pool file: what a run did before the pool existed
    plain = tmp_path / "plain"
    plain.mkdir()
    for name in ("train", "val", "test"):
        (plain / f"{name}.csv").write_bytes((budget.splits / f"{name}.csv").read_bytes())
    before = type(budget)(**{**vars(budget), "splits": plain})
    _train(before, tmp_path / "before")
    weights = load_file(tmp_path / "none/model/model.safetensors")
    again = load_file(tmp_path / "before/model/model.safetensors")
    assert weights.keys() == again.keys() and all(torch.equal(weights[k], again[k]) for k in weights)
    semi = _train(budget, tmp_path / "fixmatch", semi="fixmatch", semi_threshold=0.0, semi_guard=False)
    record = semi["semi"]
    assert record["method"] == "fixmatch" and record["pool"] == len(budget.pool)
    assert record["pool_draws"] == semi["steps_run"] * 8 and record["used_share"] == 1.0  # threshold 0: all count
    assert semi["samples_per_epoch"] == [12]  # the labelled galaxies only, as before
    exported = load_file(tmp_path / "fixmatch/model/model.safetensors")
    assert exported.keys() == weights.keys()  # the plain classifier's weights: no teacher, nothing extra


def test_ema_teacher_keeps_an_averaged_copy_out_of_the_saved_model(budget, tmp_path):
    from safetensors.torch import load_file

    run = _train(budget, tmp_path / "ema", semi="ema_teacher", semi_threshold=0.5)
    assert run["semi"]["method"] == "ema_teacher" and run["semi"]["pool_draws"] > 0
    names = load_file(tmp_path / "ema/model/model.safetensors").keys()
    assert not any("teacher" in n or "n_averaged" in n for n in names)


def test_regression_says_in_one_line_that_semi_needs_classes(capsys):
    from galaxy_finetune.core.task import Task
    from galaxy_finetune.training.heads import head_for

    head = head_for(Task("regression", label_cols=("x",)))
    assert head.semi(TrainParams(semi="fixmatch"), 100) is None
    assert capsys.readouterr().out.strip() == ("finetune_gpu: train.semi fixmatch needs classes (confident "
                                               "pseudo-labels); this regression run learns from its labels alone")
