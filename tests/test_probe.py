"""The linear probe and the lpft recipe's mechanism: the head starts where the probe ends, the export is never
worse than the probe on val loss, and on a tiny learnable set lpft learns where the write-up recipe does not."""
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from galaxy_finetune.params import AugmentParams, Params
from galaxy_finetune.probe import fit_linear_probe, stratified_sample
from tests.tiny import prepare

STILL = AugmentParams(rotation_deg=0, translate=0, shear_deg=0, flip=False)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_probe_logits_give_sklearns_probabilities(n_classes):
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    y = rng.integers(0, n_classes, 300)
    x = rng.normal(size=(300, 6)) + y[:, None] * 0.8
    probe = fit_linear_probe(x[:200], y[:200], x[200:], y[200:], n_classes)
    reference = LogisticRegression(C=probe.C, max_iter=2000).fit(x[:200], y[:200])
    logits = probe.logits(x[200:])
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    np.testing.assert_allclose(probs, reference.predict_proba(x[200:]), atol=1e-4)
    assert probe.val_accuracy == pytest.approx(np.mean(reference.predict(x[200:]) == y[200:]))


def test_a_class_missing_from_train_is_never_predicted():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 100)
    x = rng.normal(size=(100, 4)) + y[:, None]
    probe = fit_linear_probe(x, y, x, y, n_classes=3)
    assert probe.weight.shape == (3, 4) and (probe.logits(x).argmax(1) != 2).all()


def test_stratified_sample_keeps_class_shares_and_everything_when_small():
    labels = np.array([0] * 900 + [1] * 100)
    assert len(stratified_sample(labels, 2000, 0)) == 1000
    keep = stratified_sample(labels, 100, 0)
    assert len(keep) == 100 and np.bincount(labels[keep]).tolist() == [90, 10]


@pytest.fixture(scope="module")
def learnable(tmp_path_factory):
    """40 tiny synthetic galaxies (4 classes) and a random ConvNeXt-Atto saved as a .safetensors file, so the
    pipeline takes it for pretrained weights (the fine-tuning recipes run): random features of these shapes
    separate the classes well enough for a probe, which is what the recipes are compared on."""
    import timm

    root = tmp_path_factory.mktemp("lpft")
    torch.manual_seed(0)
    save_file(timm.create_model("convnext_atto", num_classes=0).state_dict(), root / "atto.safetensors")
    params = Params.model_validate({
        "data": {"source": "synthetic", "synthetic_n_per_class": 16, "synthetic_image_size": 32},
        "model": {"encoder": str(root / "atto.safetensors"), "random_arch": "convnext_atto"}})
    return prepare(root, params, 0.25, 0.25)


def _job(paths, name):
    from galaxy_finetune.train import FinetuneJob

    out = paths.root / name
    return FinetuneJob(paths.raw, paths.store, paths.splits, paths.encoder, out / "model", None, out / "ckpt")


def _val_loss_of_export(paths, model_dir) -> float:
    from galaxy_finetune.data import GalaxyDataModule
    from galaxy_finetune.model_io import load_finetuned

    model, config = load_finetuned(model_dir)
    data = GalaxyDataModule(paths.store, paths.splits, config["input_size"], 64, STILL, 0, config["normalisation"])
    batch = data.dataset("val").__getitems__(list(range(len(data.dataset("val")))))
    with torch.no_grad():
        return float(torch.nn.functional.cross_entropy(model(data.eval_view(batch["image"])), batch["label"]))


def test_the_head_starts_where_the_probe_ends(learnable):
    """Loaded into Zoobot's head, the probe's weights give the model the probe's own val loss."""
    from galaxy_finetune.data import GalaxyDataModule
    from galaxy_finetune.encoder import build_encoder
    from galaxy_finetune.model_io import build_classifier
    from galaxy_finetune.probe import load_into_head
    from galaxy_finetune.train import linear_probe

    train = Params().train.model_copy(update={"input_size": 32})
    data = GalaxyDataModule(learnable.store, learnable.splits, 32, 8, STILL)
    encoder = build_encoder(learnable.encoder)
    probe = linear_probe(encoder, data, 4, 0, "cpu")
    model = build_classifier(encoder, 4, train).eval()
    load_into_head(model.head.linear, probe)
    batch = data.dataset("val").__getitems__(list(range(len(data.dataset("val")))))
    with torch.no_grad():
        loss = float(torch.nn.functional.cross_entropy(model(data.eval_view(batch["image"])), batch["label"]))
    assert loss == pytest.approx(probe.val_loss, abs=1e-4)
    assert probe.val_accuracy >= 0.5  # the learnable set is learnable for a probe (majority rate: 0.25)


def test_lpft_learns_where_the_writeup_recipe_does_not_and_never_exports_worse_than_its_probe(learnable):
    from galaxy_finetune.train import finetune

    manifest = {"classes": ["smooth_round", "smooth_cigar", "edge_on_disk", "unbarred_spiral"], "run_label": "t"}
    params = Params.model_validate({"train": {"input_size": 32, "batch_size": 8, "steps": 20, "patience": 50, "accelerator": "cpu"},
                                    "writeup": {"input_size": 32, "batch_size": 8, "epochs": 8}})
    name, lpft = params.recipe(True)
    run = finetune(lpft, STILL, name, manifest, _job(learnable, "lpft"))
    assert run["steps_run"] == 20 and len(run["val_curve"]["val_loss"]) == 20  # validated every step (20 // 20)
    assert run["best_val_loss"] <= run["linear_probe"]["val_loss"] + 1e-4  # the record rounds to 4 digits
    # what was exported is what the record says: its val loss, recomputed from model.safetensors
    assert _val_loss_of_export(learnable, _job(learnable, "lpft").model_out) == pytest.approx(
        run["best_val_loss"], abs=0.02)
    assert run["val_accuracy"] >= 0.25 + 0.2 and run["learning_warning"] is None

    writeup_params = params.model_copy(update={"train": params.train.model_copy(update={"recipe": "writeup"})})
    name, writeup = writeup_params.recipe(True)
    assert name == "writeup" and writeup.lr == 1e-5
    slow = finetune(writeup, STILL, name, manifest, _job(learnable, "writeup"))
    assert slow["kept"] == "fine_tuned" and slow["linear_probe"]["val_accuracy"] >= 0.5  # the yardstick, reported
    assert max(slow["val_curve"]["val_acc"]) < run["val_accuracy"]
    assert slow["learning_warning"] is not None  # the same features, but lr 1e-5 from a random head learns nothing
