"""galaxy_finetune.analysis.analyse and stages/analyse.py on small hand-made inputs (no training, no dvc)."""
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from galaxy_finetune.analysis.analyse import analyse
from galaxy_finetune.analysis.common import Inputs, Outputs, read_curves, run_identity
from galaxy_finetune.core.classes import GALAXY_MNIST_CLASSES
from galaxy_finetune.inference.embeddings import write_embeddings
from galaxy_finetune.core.errors import PipelineError
from galaxy_finetune.analysis.figures import FIGURES
from galaxy_finetune.core.params import AnalyseParams

ROOT = Path(__file__).resolve().parents[1]
CLASSES = list(GALAXY_MNIST_CLASSES)


def predictions_frame(ids: list[str], true: np.ndarray, rows: np.ndarray, rng) -> pd.DataFrame:
    """A predictions table like predict writes (with each galaxy's store row), mostly right."""
    n = len(ids)
    probs = rng.dirichlet(np.ones(len(CLASSES)), n)
    probs[np.arange(n), true] += rng.random(n) * 2
    probs /= probs.sum(1, keepdims=True)
    frame = pd.DataFrame({"id_str": ids, "true_label": np.array(CLASSES)[true],
                          "pred_label": np.array(CLASSES)[probs.argmax(1)]})
    for i, name in enumerate(CLASSES):
        frame[f"p_{name}"] = probs[:, i]
    frame["p_true"] = probs[np.arange(n), true]
    frame["confidence"] = probs.max(1)
    frame["row"] = rows
    return frame


def make_inputs(root: Path, n: int = 80, seed: int = 0, real_run: bool = False) -> Inputs:
    """data/raw/manifest.json, data/store, models/finetuned/model.json, dvclive TSVs, test and val predictions and
    embeddings: n test galaxies, as many val, twice as many train (store rows: train, val, test); random features."""
    rng = np.random.default_rng(seed)
    raw, store, model, live, preds = root / "raw", root / "store", root / "model", root / "live", root / "predictions"
    curves = live / "plots/metrics/finetuning"
    for folder in (raw, store, model, curves / "train", curves / "val", preds):
        folder.mkdir(parents=True, exist_ok=True)
    train_ids, val_ids, ids = ([f"{prefix}{i:05d}" for i in range(count)]
                               for prefix, count in (("t", 2 * n), ("v", n), ("g", n)))
    np.save(store / "images.npy", rng.integers(0, 255, (4 * n, 16, 16, 3), dtype=np.uint8))
    true = np.arange(n) % len(CLASSES)
    source = "galaxy_mnist" if real_run else "synthetic"
    description = "pretrained: hf_hub:mwalmsley/zoobot-encoder-convnext_nano" if real_run else \
        "no pretraining: random ConvNeXt-Nano"
    (raw / "manifest.json").write_text(json.dumps({
        "run_label": f"{'GalaxyMNIST' if real_run else 'synthetic stand-in'}, {4 * n} galaxies | {description}",
        "substitutions": [] if real_run else ["data: offline; using synthetic galaxies instead"],
        "source": source, "data_fingerprint": "ab" * 32, "n_images": 4 * n,
        "data": {"substituted": not real_run}, "encoder": {"pretrained": real_run}}))
    (raw / "source.json").write_text(json.dumps({"source": source, "classes": CLASSES}))
    (model / "model.json").write_text(json.dumps({
        "arch": "convnext_nano", "classes": CLASSES, "input_size": 64, "training_mode": "full",
        "encoder": {"source": "random", "arch": "convnext_nano", "sha256": None},
        "run": {"device": "cpu (test)", "precision": "32", "epochs_run": 3, "best_epoch": 2,
                "params": {"lr": 1e-3}, "versions": {"python": "3"}}}))
    (live / "timing.json").write_text(json.dumps({"wall_time_s": 90.0, "train_images_per_s": 50.0}))
    for split, offset in (("train", 0.0), ("val", 0.1)):
        for metric, values in (("loss", [1.3, 1.0, 0.8]), ("acc", [0.4, 0.6, 0.7])):
            pd.DataFrame({"step": [10, 20, 30], metric: np.array(values) + offset}).to_csv(
                live / f"plots/metrics/finetuning/{split}/{metric}.tsv", sep="\t", index=False)
    pd.DataFrame({"step": [10, 20, 30], "epoch": [0, 1, 2]}).to_csv(live / "plots/metrics/epoch.tsv", sep="\t",
                                                                      index=False)
    predictions_frame(ids, true, np.arange(3 * n, 4 * n), rng).to_csv(preds / "test.csv", index=False,
                                                                     float_format="%.6f")
    predictions_frame(val_ids, true, np.arange(2 * n, 3 * n), rng).to_csv(preds / "val.csv", index=False,
                                                                         float_format="%.6f")
    (preds / "timing.json").write_text(json.dumps({"test_images_per_s": 123.4}))
    galaxies = pd.DataFrame({"id_str": train_ids + val_ids + ids,
                             "split": ["train"] * 2 * n + ["val"] * n + ["test"] * n, "row": np.arange(4 * n)})
    galaxies["label"] = np.arange(len(galaxies)) % len(CLASSES)
    galaxies["label_name"] = np.array(CLASSES)[galaxies["label"]]
    write_embeddings(root / "embeddings", galaxies, rng.normal(size=(len(galaxies), 64)), 40)
    return Inputs(preds / "test.csv", preds / "val.csv", preds / "timing.json", raw, store, model, live,
                  root / "embeddings")


def outputs(root: Path) -> Outputs:
    return Outputs(root / "metrics/metrics.json", root / "metrics/residuals.json", root / "metrics/coverage.csv",
                   root / "metrics/embedding_map.csv", root / "metrics/anomalies.csv", root / "plots",
                   root / "reports/summary.md", root / "reports/errors.html")


def test_analyse_writes_metrics_residuals_figures_and_report(tmp_path):
    inputs = make_inputs(tmp_path / "in")
    out = outputs(tmp_path / "out")
    result = analyse(inputs, AnalyseParams(bootstrap_samples=100), out)

    metrics = json.loads(out.metrics.read_text())
    assert metrics == json.loads(json.dumps(result))
    for key in ("n", "accuracy", "accuracy_ci95_low", "accuracy_ci95_high", "balanced_accuracy", "macro_f1",
                "log_loss", "brier", "ece", "per_class", "confusion", "top_confusions", "calibration", "selective",
                "anomalies", "provenance"):
        assert key in metrics
    assert metrics["n"] == 80
    assert set(metrics["per_class"]) == set(CLASSES)
    assert sum(sum(row.values()) for row in metrics["confusion"].values()) == 80
    prov = metrics["provenance"]
    assert (prov["real_run"], prov["data_source"], prov["encoder_source"], prov["device"]) == (
        False, "synthetic", "random", "cpu (test)")
    assert "full" not in prov["run_label"] and "no pretraining" in prov["run_label"]
    assert prov["train_wall_time_s"] == 90.0 and prov["predict_images_per_s"] == 123.4
    assert {"python", "scikit-learn", "matplotlib"} <= set(prov["versions"])
    assert metrics["calibration"]["test"]["log_loss_before"] == pytest.approx(metrics["log_loss"], abs=1e-4)
    assert set(metrics["selective"]["thresholds"]) == set(CLASSES)

    residuals = json.loads(out.residuals.read_text())
    assert len(residuals) == 80 and set(residuals[0]) == {"id_str", "true_label", "pred_label", "residual",
                                                          "residual_bin"}
    assert all(isinstance(r["residual"], float) and 0 <= r["residual"] <= 1 for r in residuals)
    coverage = pd.read_csv(out.coverage)
    assert coverage["coverage"].iloc[-1] == 1.0 and coverage["accuracy"].iloc[-1] == pytest.approx(metrics["accuracy"])
    anomalies = pd.read_csv(out.anomalies, dtype={"id_str": str})
    assert sorted(anomalies["id_str"]) == sorted(pd.read_csv(inputs.predictions)["id_str"])
    assert anomalies["anomaly_score"].is_monotonic_decreasing and anomalies["rank"].tolist() == list(range(1, 81))
    assert anomalies["nearest_train_id"].str.startswith("t").all()
    assert len(pd.read_csv(out.embedding_map)) == 80

    assert sorted(p.name for p in out.plots.iterdir()) == sorted(f.file for f in FIGURES)
    report = out.report.read_text()
    assert "NOT THE REAL RUN" in report and "| **Accuracy** |" in report and "95% bootstrap CI" in report
    assert prov["run_label"] in report and not re.search(r"\bfull\b", report)  # a stand-in is never "full"
    assert "## Per class" in report and "## Top confusions" in report and "cpu (test)" in report
    assert "](errors.html)" in report and out.errors_page.is_file()
    for name in [f.file for f in FIGURES]:
        assert f"](../plots/{name})" in report
    assert not [p for p in (tmp_path / "out").rglob("*") if ".tmp" in p.name]


@pytest.fixture(scope="module")
def analysed_once(tmp_path_factory):
    """One small real run's analyse (a training run that learned nothing), counting its validations: shared by the
    tests that only read what it wrote, as each analyse draws every figure (most of its time)."""
    import galaxy_finetune.analysis.analyse as module
    import galaxy_finetune.analysis.metrics as metrics

    root = tmp_path_factory.mktemp("analysed_once")
    inputs = make_inputs(root / "in", n=12, real_run=True)
    config = json.loads((inputs.model_dir / "model.json").read_text())
    config["run"]["learning_warning"] = "this run learned nothing: best val accuracy 24.0% is not 5% above ..."
    (inputs.model_dir / "model.json").write_text(json.dumps(config))
    calls = {"check": 0, "residuals": 0}
    check, residuals = metrics.check_predictions, module.residuals

    def counting_check(*args, **kwargs):
        calls["check"] += 1
        return check(*args, **kwargs)

    def counting_residuals(*args, **kwargs):
        calls["residuals"] += 1
        return residuals(*args, **kwargs)

    out = outputs(root / "out")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(metrics, "check_predictions", counting_check)
        patch.setattr(module, "residuals", counting_residuals)
        result = analyse(inputs, AnalyseParams(bootstrap_samples=10, map="pca"), out)
    return result, out, calls


def test_real_run_has_no_stand_in_banner(analysed_once):
    result, out, _ = analysed_once
    assert result["provenance"]["real_run"] is True
    report = out.report.read_text()
    assert "NOT THE REAL RUN" not in report and "GalaxyMNIST, 48 galaxies | pretrained" in report


def test_run_label_from_the_manifest():
    label = "GalaxyMNIST, 10000 galaxies | pretrained: hf_hub:mwalmsley/zoobot-encoder-convnext_nano"
    assert run_identity({"run_label": label, "encoder": {"pretrained": True}, "data": {"substituted": False}}) == (
        label, True)
    assert run_identity({"run_label": "x", "encoder": {"pretrained": True}, "data": {"substituted": True}})[1] is False
    assert run_identity({"run_label": "y", "encoder": {"pretrained": False}}) == ("y", False)


def test_a_manifest_without_a_run_label_asks_for_a_rerun(tmp_path):
    inputs = make_inputs(tmp_path / "in", n=8)
    manifest = json.loads((inputs.raw_dir / "manifest.json").read_text())
    del manifest["run_label"]  # as fetch_data wrote it before run labels existed
    (inputs.raw_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PipelineError, match=r"manifest.json / .*model.json: missing key 'run_label'; rerun dvc repro"):
        analyse(inputs, AnalyseParams(), outputs(tmp_path / "out"))


def test_report_shows_the_learned_nothing_warning_of_the_training_run(analysed_once):
    """issue 10: finetune_gpu records run["learning_warning"]; the report puts it above the headline."""
    _, out, _ = analysed_once
    report = out.report.read_text()
    assert "> **Warning**: this run learned nothing: best val accuracy 24.0%" in report
    assert report.index("**Warning**") < report.index("| **Accuracy** |")


def test_read_curves_groups_by_metric_and_leaves_out_epoch(tmp_path):
    inputs = make_inputs(tmp_path, n=8)
    curves = read_curves(inputs.live_dir)
    assert set(curves) == {"loss", "acc"}
    assert set(curves["loss"]) == {"finetuning/train", "finetuning/val"}
    assert curves["loss"]["finetuning/val"]["value"].tolist() == pytest.approx([1.4, 1.1, 0.9])
    assert read_curves(tmp_path / "nowhere") == {}


def stage_args(inputs: Inputs, root: Path) -> list[str]:
    """stages/analyse.py's command line (after `python -m stages.analyse`) on `inputs`, writing under `root`."""
    out = outputs(root)
    return [str(inputs.predictions), str(inputs.raw_dir), str(inputs.store_dir), str(inputs.model_dir),
            str(inputs.live_dir), str(inputs.embeddings), "--val-predictions", str(inputs.val_predictions),
            "--timing", str(inputs.timing), "--metrics", str(out.metrics), "--residuals", str(out.residuals),
            "--coverage", str(out.coverage), "--map", str(out.embedding_map), "--anomalies", str(out.anomalies),
            "--plots", str(out.plots), "--report", str(out.report), "--errors-page", str(out.errors_page)]


def run_stage(inputs: Inputs, root: Path) -> subprocess.CompletedProcess:
    """The stage as dvc runs it: its own process, in the project folder (params.yaml)."""
    return subprocess.run([sys.executable, "-m", "stages.analyse", *stage_args(inputs, root)], cwd=ROOT,
                          capture_output=True, text=True)


def run_stage_here(inputs: Inputs, root: Path, capfd) -> tuple[int, str, str]:
    """The stage through the same shell (stages/analyse.py's run_stage) in this process, with the project's
    params.yaml: (exit status, stdout, stderr), read from the file descriptors, as a subprocess's would be."""
    import stages.analyse as stage
    from galaxy_finetune.core.cli import run_stage as stage_shell

    capfd.readouterr()
    try:
        stage_shell(stage.__doc__, stage.add_arguments, stage.main,
                    [*stage_args(inputs, root), "--params", str(ROOT / "params.yaml")])
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capfd.readouterr()
    return code, out, err


def break_missing_column(table):
    return table.drop(columns=["p_edge_on_disk"])


def break_sums(table):
    return table.assign(p_smooth_round=table["p_smooth_round"] + 0.5)


def break_class_names(table):
    return table.assign(true_label=table["true_label"].replace("smooth_cigar", "cigar"))


@pytest.mark.parametrize("which, damage, message", [
    ("predictions", break_missing_column, "missing column(s) ['p_edge_on_disk']"),
    ("predictions", break_sums, "not 1"),
    ("predictions", break_class_names, "true_label has unknown class name(s) ['cigar']"),
    ("val_predictions", break_sums, "not 1"),
])
def test_stage_bad_input_is_one_line_error_and_writes_nothing(tmp_path, capfd, which, damage, message):
    """The stage's shell in this process (test_stage_failure_midway... runs it as its own process)."""
    inputs = make_inputs(tmp_path / "in", n=12)
    path = getattr(inputs, which)
    damage(pd.read_csv(path)).to_csv(path, index=False)
    code, _, stderr = run_stage_here(inputs, tmp_path / "out", capfd)
    assert code == 1, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], stderr
    assert str(path) in lines[0]
    assert not (tmp_path / "out").exists()  # validation comes before any output folder is made


def test_validation_and_residuals_happen_once(analysed_once):
    _, _, calls = analysed_once
    assert calls == {"check": 2, "residuals": 1}  # test and val predictions once each


@pytest.mark.slow  # the analyse stage in its own process
def test_stage_failure_midway_keeps_previous_outputs_and_leaves_no_temporaries(tmp_path):
    inputs = make_inputs(tmp_path / "in", n=12)
    ok = run_stage(inputs, tmp_path / "out")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("analyse: accuracy ")
    before = {p: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    np.save(inputs.store_dir / "images.npy", np.zeros((10, 16, 16, 3), np.uint8))  # a store from another run
    proc = run_stage(inputs, tmp_path / "out")
    assert proc.returncode == 1 and proc.stderr.startswith("error: ") and "in a store of 10 galaxies" in proc.stderr
    after = {p: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert after == before


def test_missing_upstream_output_is_named(tmp_path):
    inputs = make_inputs(tmp_path / "in", n=8)
    (inputs.model_dir / "model.json").unlink()
    with pytest.raises(PipelineError, match="model.json: not found; run the finetune_gpu stage"):
        analyse(inputs, AnalyseParams(), outputs(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_2000_galaxies_write_every_output(tmp_path):
    """A catalog-sized input runs through (its speed is a benchmark's business, not a test's)."""
    inputs, out = make_inputs(tmp_path / "in", n=2000), outputs(tmp_path / "out")
    result = analyse(inputs, AnalyseParams(), out)
    assert result["n"] == len(pd.read_csv(inputs.predictions)) == 2000
    assert all(Path(p).exists() for p in vars(out).values())


def test_a_model_trained_on_other_classes_is_refused(tmp_path):
    """The classes come from data/raw/source.json; a model whose model.json names others is one line."""
    inputs = make_inputs(tmp_path, n=8)
    (inputs.raw_dir / "source.json").write_text(json.dumps({"classes": CLASSES[::-1]}))
    with pytest.raises(PipelineError, match=r"model.json: the model was trained on classes .*rerun dvc repro"):
        analyse(inputs, AnalyseParams(), outputs(tmp_path))
