"""galaxy_finetune.analyse and stages/analyse.py on small hand-made inputs (no training, no dvc)."""
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from galaxy_finetune.analyse import Outputs, analyse, read_curves
from galaxy_finetune.classes import GALAXY_MNIST_CLASSES
from galaxy_finetune.errors import PipelineError
from galaxy_finetune.figures import FIGURES
from galaxy_finetune.params import AnalyseParams

ROOT = Path(__file__).resolve().parents[1]
CLASSES = list(GALAXY_MNIST_CLASSES)


def make_inputs(root: Path, n: int = 80, seed: int = 0, profile: str = "quickstart") -> dict:
    """data/raw (manifest, catalog, images), models/finetuned/model.json, dvclive TSVs and predictions."""
    rng = np.random.default_rng(seed)
    raw, model, live, preds = root / "raw", root / "model", root / "live", root / "predictions"
    curves = live / "plots/metrics/finetuning"
    for folder in (raw / "images", model, curves / "train", curves / "val", preds):
        folder.mkdir(parents=True, exist_ok=True)
    ids = [f"g{i:05d}" for i in range(n)]
    true = np.arange(n) % len(CLASSES)
    for galaxy in ids:
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(raw / "images" / f"{galaxy}.png")
    pd.DataFrame({"id_str": ids, "label": true, "label_name": np.array(CLASSES)[true], "split": "",
                  "file": [f"images/{g}.png" for g in ids]}).to_csv(raw / "catalog.csv", index=False)
    (raw / "manifest.json").write_text(json.dumps({
        "profile": profile, "reason": "offline" if profile != "full" else None,
        "source": "synthetic" if profile != "full" else "galaxy_mnist", "data_sha256": "ab" * 32,
        "n_images": n, "classes": CLASSES}))
    (model / "model.json").write_text(json.dumps({
        "arch": "convnext_nano", "classes": CLASSES, "input_size": 64, "training_mode": "full",
        "encoder": {"source": "random", "arch": "convnext_nano", "sha256": None},
        "run": {"device": "cpu (test)", "precision": "32", "wall_time_s": 90.0, "epochs_run": 3, "best_epoch": 2,
                "train_images_per_s": 50.0, "params": {"lr": 1e-3}, "versions": {"python": "3"}}}))
    for split, offset in (("train", 0.0), ("val", 0.1)):
        for metric, values in (("loss", [1.3, 1.0, 0.8]), ("acc", [0.4, 0.6, 0.7])):
            pd.DataFrame({"step": [10, 20, 30], metric: np.array(values) + offset}).to_csv(
                live / f"plots/metrics/finetuning/{split}/{metric}.tsv", sep="\t", index=False)
    pd.DataFrame({"step": [10, 20, 30], "epoch": [0, 1, 2]}).to_csv(live / "plots/metrics/epoch.tsv", sep="\t",
                                                                      index=False)
    probs = rng.dirichlet(np.ones(len(CLASSES)), n)
    probs[np.arange(n), true] += rng.random(n) * 2  # mostly right
    probs /= probs.sum(1, keepdims=True)
    frame = pd.DataFrame({"id_str": ids, "true_label": np.array(CLASSES)[true],
                          "pred_label": np.array(CLASSES)[probs.argmax(1)]})
    for i, name in enumerate(CLASSES):
        frame[f"p_{name}"] = probs[:, i]
    frame["p_true"] = probs[np.arange(n), true]
    frame["confidence"] = probs.max(1)
    frame.to_csv(preds / "test.csv", index=False, float_format="%.6f")
    (preds / "timing.json").write_text(json.dumps({"test_images_per_s": 123.4}))
    return {"predictions": preds / "test.csv", "raw": raw, "model": model, "live": live}


def outputs(root: Path) -> Outputs:
    return Outputs(root / "metrics/metrics.json", root / "metrics/residuals.json", root / "plots",
                   root / "reports/summary.md")


def test_analyse_writes_metrics_residuals_figures_and_report(tmp_path):
    inputs = make_inputs(tmp_path / "in")
    out = outputs(tmp_path / "out")
    result = analyse(inputs["predictions"], inputs["raw"], inputs["model"], inputs["live"],
                     AnalyseParams(bootstrap_samples=100), out)

    metrics = json.loads(out.metrics.read_text())
    assert metrics == json.loads(json.dumps(result))
    for key in ("n", "accuracy", "accuracy_ci95_low", "accuracy_ci95_high", "balanced_accuracy", "macro_f1",
                "log_loss", "brier", "ece", "per_class", "confusion", "top_confusions", "provenance"):
        assert key in metrics
    assert metrics["n"] == 80
    assert set(metrics["per_class"]) == set(CLASSES)
    assert sum(sum(row.values()) for row in metrics["confusion"].values()) == 80
    prov = metrics["provenance"]
    assert (prov["profile"], prov["data_source"], prov["encoder_source"], prov["device"]) == (
        "quickstart", "synthetic", "random", "cpu (test)")
    assert prov["train_wall_time_s"] == 90.0 and prov["predict_images_per_s"] == 123.4
    assert {"python", "scikit-learn", "matplotlib"} <= set(prov["versions"])

    residuals = json.loads(out.residuals.read_text())
    assert len(residuals) == 80 and set(residuals[0]) == {"id_str", "true_label", "pred_label", "residual",
                                                          "residual_bin"}
    assert all(isinstance(r["residual"], float) and 0 <= r["residual"] <= 1 for r in residuals)

    assert sorted(p.name for p in out.plots.iterdir()) == sorted(FIGURES)
    report = out.report.read_text()
    assert "QUICKSTART PROFILE" in report and "| **Accuracy** |" in report and "95% bootstrap CI" in report
    assert "## Per class" in report and "## Top confusions" in report and "cpu (test)" in report
    for name in FIGURES:
        assert f"](../plots/{name})" in report
    assert not [p for p in (tmp_path / "out").rglob("*") if ".tmp" in p.name]


def test_report_shows_the_learned_nothing_warning_of_the_training_run(tmp_path):
    """issue 10: finetune_gpu records run["learning_warning"]; the report puts it above the headline."""
    inputs = make_inputs(tmp_path / "in")
    config = json.loads((inputs["model"] / "model.json").read_text())
    config["run"]["learning_warning"] = "this run learned nothing: best val accuracy 24.0% is not 5% above ..."
    (inputs["model"] / "model.json").write_text(json.dumps(config))
    out = outputs(tmp_path / "out")
    analyse(inputs["predictions"], inputs["raw"], inputs["model"], inputs["live"], AnalyseParams(bootstrap_samples=10),
            out)
    report = out.report.read_text()
    assert "> **Warning**: this run learned nothing: best val accuracy 24.0%" in report
    assert report.index("**Warning**") < report.index("| **Accuracy** |")


def test_read_curves_groups_by_metric_and_leaves_out_epoch(tmp_path):
    inputs = make_inputs(tmp_path, n=8)
    curves = read_curves(inputs["live"])
    assert set(curves) == {"loss", "acc"}
    assert set(curves["loss"]) == {"finetuning/train", "finetuning/val"}
    assert curves["loss"]["finetuning/val"]["value"].tolist() == pytest.approx([1.4, 1.1, 0.9])
    assert read_curves(tmp_path / "nowhere") == {}


def run_stage(inputs: dict, root: Path) -> subprocess.CompletedProcess:
    out = outputs(root)
    return subprocess.run(
        [sys.executable, "-m", "stages.analyse", str(inputs["predictions"]), str(inputs["raw"]), str(inputs["model"]),
         str(inputs["live"]), "--metrics", str(out.metrics), "--residuals", str(out.residuals), "--plots",
         str(out.plots), "--report", str(out.report)], cwd=ROOT, capture_output=True, text=True)


def break_missing_column(table):
    return table.drop(columns=["p_edge_on_disk"])


def break_sums(table):
    return table.assign(p_smooth_round=table["p_smooth_round"] + 0.5)


def break_class_names(table):
    return table.assign(true_label=table["true_label"].replace("smooth_cigar", "cigar"))


@pytest.mark.parametrize("damage, message", [
    (break_missing_column, "missing column(s) ['p_edge_on_disk']"),
    (break_sums, "not 1"),
    (break_class_names, "true_label has unknown class name(s) ['cigar']"),
])
def test_stage_bad_input_is_one_line_error_and_writes_nothing(tmp_path, damage, message):
    inputs = make_inputs(tmp_path / "in", n=12)
    table = pd.read_csv(inputs["predictions"])
    damage(table).to_csv(inputs["predictions"], index=False)
    proc = run_stage(inputs, tmp_path / "out")
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert str(inputs["predictions"]) in lines[0]
    assert not (tmp_path / "out").exists()  # validation comes before any output folder is made


def test_stage_failure_midway_keeps_previous_outputs_and_leaves_no_temporaries(tmp_path):
    inputs = make_inputs(tmp_path / "in", n=12)
    ok = run_stage(inputs, tmp_path / "out")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("analyse: accuracy ")
    before = {p: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    for image in (inputs["raw"] / "images").iterdir():  # the top-5 figures cannot be drawn
        image.write_bytes(b"not a png")
    proc = run_stage(inputs, tmp_path / "out")
    assert proc.returncode == 1 and proc.stderr.startswith("error: ") and "cannot read the image" in proc.stderr
    after = {p: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert after == before


def test_missing_upstream_output_is_named(tmp_path):
    inputs = make_inputs(tmp_path / "in", n=8)
    (inputs["model"] / "model.json").unlink()
    with pytest.raises(PipelineError, match="model.json: not found; run the finetune_gpu stage"):
        analyse(inputs["predictions"], inputs["raw"], inputs["model"], inputs["live"], AnalyseParams(),
                outputs(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_2000_galaxies_well_under_20_seconds(tmp_path):
    inputs = make_inputs(tmp_path / "in", n=2000)
    start = time.perf_counter()
    analyse(inputs["predictions"], inputs["raw"], inputs["model"], inputs["live"], AnalyseParams(),
            outputs(tmp_path / "out"))
    assert time.perf_counter() - start < 20
