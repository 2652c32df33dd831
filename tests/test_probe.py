"""The linear probe and the lpft recipe's mechanism: the head starts where the probe ends, the export is never
worse than the probe on val loss, and on a tiny learnable set lpft learns where the write-up recipe does not."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from galaxy_finetune.core.classes import read_classes
from galaxy_finetune.core.params import AugmentParams, Params
from galaxy_finetune.training.probe import fit_linear_probe, stratified_sample
from tests.tiny import prepare

STILL = AugmentParams(rotation_deg=0, translate=0, shear_deg=0, flip=False)
NORMALISATION = {"mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3]}


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
    # a timm hub config beside the weights, as the shared ImageNet encoder has: its mean/std must reach every view
    (root / "config.json").write_text(json.dumps({"architecture": "convnext_atto", "pretrained_cfg": NORMALISATION}))
    params = Params.model_validate({
        "data": {"source": "synthetic", "synthetic_n_per_class": 16, "synthetic_image_size": 32},
        "model": {"encoder": str(root / "atto.safetensors"), "random_arch": "convnext_atto"}})
    return prepare(root, params, 0.25, 0.25)


def _job(paths, name):
    from galaxy_finetune.training.train import FinetuneJob

    out = paths.root / name
    return FinetuneJob(paths.raw, paths.store, paths.splits, paths.encoder, out / "model", None, out / "ckpt")


def _val_loss_of_export(paths, model_dir) -> float:
    from galaxy_finetune.data.loading import GalaxyDataModule
    from galaxy_finetune.training.model_io import load_finetuned

    model, config = load_finetuned(model_dir)
    data = GalaxyDataModule(paths.store, paths.splits, config["input_size"], 64, STILL, 0, config["normalisation"])
    batch = data.dataset("val").__getitems__(list(range(len(data.dataset("val")))))
    with torch.no_grad():
        return float(torch.nn.functional.cross_entropy(model(data.eval_view(batch["image"])), batch["label"]))


def test_the_head_starts_where_the_probe_ends(learnable):
    """Loaded into Zoobot's head, the probe's weights give the model the probe's own val loss."""
    from galaxy_finetune.data.loading import GalaxyDataModule
    from galaxy_finetune.data.encoder import build_encoder
    from galaxy_finetune.training.heads import build_classifier
    from galaxy_finetune.training.probe import load_into_head
    from galaxy_finetune.training.probe import linear_probe

    train = Params().train.model_copy(update={"input_size": 32})
    data = GalaxyDataModule(learnable.store, learnable.splits, 32, 8, STILL, normalisation=NORMALISATION)
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
    from galaxy_finetune.training.train import finetune

    manifest = {"run_label": "t"}
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
    # the same features, but lr 1e-5 from a random head: its exported model (best val loss) is no better than
    # answering the majority class (0.25 on this balanced val set), where lpft's is well above it
    assert slow["val_accuracy"] <= 0.25 + 0.05 < 0.25 + 0.2 <= run["val_accuracy"]


def test_the_encoders_mean_and_std_reach_training_and_inference_alike(learnable):
    """fetch records the config's normalisation; training's views, model.json and the predict stage all use it."""
    from galaxy_finetune.data.augment import eval_view
    from galaxy_finetune.data.encoder import encoder_record
    from galaxy_finetune.core.files import read_json
    from galaxy_finetune.training.model_io import load_finetuned
    from galaxy_finetune.inference.predict import predict_splits
    from galaxy_finetune.data.store import galaxy_pixels
    from galaxy_finetune.training.train import finetune

    assert encoder_record(learnable.encoder)["normalisation"] == NORMALISATION
    manifest = {"run_label": "t"}
    train = Params().train.model_copy(update={"input_size": 32, "batch_size": 8, "steps": 2, "accelerator": "cpu"})
    job = _job(learnable, "normalised")
    finetune(train, STILL, "train", manifest, job)
    assert read_json(job.model_out / "model.json")["normalisation"] == NORMALISATION
    predict_splits(job.model_out, learnable.store, learnable.splits, learnable.root / "predictions", ["test"], 8,
                   parts_root=learnable.root / "parts")
    table = __import__("pandas").read_csv(learnable.root / "predictions/test.csv")
    model, config = load_finetuned(job.model_out)
    pixels = torch.from_numpy(galaxy_pixels(learnable.store, table["row"].tolist())).permute(0, 3, 1, 2)
    with torch.no_grad():
        normalised = torch.softmax(model(eval_view(pixels, 32, config["eval_zoom"], NORMALISATION)), 1).numpy()
        plain = torch.softmax(model(eval_view(pixels, 32, config["eval_zoom"])), 1).numpy()
    predicted = table[[f"p_{c}" for c in read_classes(learnable.raw)]].to_numpy()
    np.testing.assert_allclose(predicted, normalised, atol=1e-4)
    assert np.abs(predicted - plain).max() > 1e-3  # and the normalisation is not a no-op here


@pytest.mark.parametrize("frozen", [True, False])
def test_frozen_batchnorm_keeps_the_pretrained_statistics_through_training_mode(frozen):
    """lpft's BatchNorm layers normalise with their running statistics in training too, so the features the
    probe's head was fitted on are the features it is trained on; the rest of the model still trains."""
    import timm

    from galaxy_finetune.training.heads import build_classifier

    train = Params().train.model_copy(update={"batchnorm": "frozen" if frozen else "train"})
    model = build_classifier(timm.create_model("resnet10t", num_classes=0), 2, train)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [m.running_mean.clone() for m in norms]
    model.train()
    assert model.head.dropout.training and model.training
    model(torch.rand(4, 3, 32, 32))
    assert all(not m.training for m in norms) == frozen
    assert all(torch.equal(a, m.running_mean) for a, m in zip(before, norms)) == frozen


def test_frozen_batchnorm_holds_inside_a_lightning_fit(learnable, monkeypatch):
    """Lightning never calls train() itself: the classifier must, or frozen BatchNorm would train after all."""
    import lightning as L

    from galaxy_finetune.training.classifier import GalaxyClassifier
    from galaxy_finetune.data.loading import GalaxyDataModule
    from galaxy_finetune.data.encoder import build_encoder
    from galaxy_finetune.training.heads import build_classifier

    seen = []
    step = GalaxyClassifier.training_step

    def recording_step(self, *args, **kwargs):
        seen.append((self.encoder.norm_pre.training, self.head.dropout.training))
        return step(self, *args, **kwargs)

    monkeypatch.setattr(GalaxyClassifier, "training_step", recording_step)
    model = build_classifier(build_encoder(learnable.encoder), 4, Params().train)
    # convnext_atto normalises with LayerNorm: stand a BatchNorm in (on its final feature map) to be frozen
    model.encoder.norm_pre = torch.nn.BatchNorm2d(model.encoder.num_features)
    data = GalaxyDataModule(learnable.store, learnable.splits, 32, 8, STILL)
    L.Trainer(max_steps=3, val_check_interval=1, check_val_every_n_epoch=None, accelerator="cpu", logger=False,
              enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False).fit(model, datamodule=data)
    assert seen == [(False, True)] * 3  # BatchNorm in eval mode, dropout training, before and after validations
