"""analyse: predictions -> metrics JSON, per-galaxy residuals, figures and a Markdown summary, all with provenance.

One call, `analyse`, validates every input before drawing anything and writes all four outputs through
temporary siblings renamed into place at the end, so bad input leaves no partial output behind.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd

from galaxy_finetune import figures
from galaxy_finetune.errors import PipelineError
from galaxy_finetune.files import atomic_path, read_json, write_json, write_text
from galaxy_finetune.metrics import (check_predictions, class_indexes, compute_metrics, confusion_array,
                                     most_confident, reliability, residuals)
from galaxy_finetune.params import AnalyseParams

FIGURE_TITLES = {  # figure file -> what the report calls it
    "confusion_matrix.png": "Confusion matrix (counts and row-normalised)",
    "per_class_accuracy.png": "Per-class accuracy with bootstrap intervals",
    "confidence_distribution.png": "Confidence distribution, correct vs wrong",
    "residual_distribution.png": "Residual distribution by true class",
    "top_5_predictions.png": "Top 5 most confident correct predictions",
    "top_5_errors.png": "Top 5 most confident errors",
    "reliability_diagram.png": "Reliability diagram (calibration)",
    "training_curves.png": "Training curves",
}
TOP_K = 5


@dataclass(frozen=True)
class Outputs:
    """Where analyse writes: metrics JSON, per-galaxy residuals JSON, figures folder, Markdown summary."""

    metrics: Path
    residuals: Path
    plots: Path
    report: Path


def count_weights(weights: Path) -> int | None:
    """How many numbers model.safetensors holds (read from its header only); None if there is no such file."""
    if not weights.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(weights, framework="numpy") as f:
            return int(sum(math.prod(f.get_slice(key).get_shape()) for key in f.keys()))
    except Exception as exc:
        raise PipelineError(f"{weights}: not a readable safetensors file ({exc}); rerun finetune_gpu") from None


def provenance(manifest: dict, model_config: dict, timing: dict | None = None, n_weights: int | None = None) -> dict:
    """Which profile, data, weights, device, versions and times produced a result."""
    run, encoder = model_config["run"], model_config["encoder"]
    return {
        "profile": manifest["run_label"],
        "data_source": manifest["source"],
        "data_sha256": manifest["data_fingerprint"],
        "data_images": manifest.get("n_images"),
        "encoder_source": encoder["source"],
        "encoder_arch": encoder["arch"],
        "encoder_sha256": encoder.get("sha256"),
        "training_mode": model_config.get("training_mode"),
        "model_weights": n_weights,
        "input_size": model_config["input_size"],
        "lr": run["params"]["lr"],
        "device": run["device"],
        "precision": run["precision"],
        "train_wall_time_s": run["wall_time_s"],
        "train_images_per_s": run.get("train_images_per_s"),
        "epochs_run": run["epochs_run"],
        "best_epoch": run["best_epoch"],
        "learning_warning": run.get("learning_warning"),  # issue 10: finetune_gpu's learned-nothing verdict
        "predict_images_per_s": (timing or {}).get("test_images_per_s"),
        "versions": {**run["versions"], **{name: version(name) for name in ("scikit-learn", "matplotlib",
                                                                            "seaborn")}},
    }


def footer(prov: dict) -> str:
    sha = (prov["data_sha256"] or "")[:10]
    return (f"profile: {prov['profile']} | data: {prov['data_source']} (sha256 {sha}) | "
            f"encoder: {prov['encoder_source']} ({prov['encoder_arch']}) | device: {prov['device']}")


def read_predictions(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise PipelineError(f"{path}: not found; run the predict stage first")
    try:
        return pd.read_csv(path, dtype={"id_str": str})
    except Exception as exc:
        raise PipelineError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from None


def read_input_json(path: Path, stage: str) -> dict:
    if not path.is_file():
        raise PipelineError(f"{path}: not found; run the {stage} stage first")
    try:
        return read_json(path)
    except ValueError as exc:
        raise PipelineError(f"{path}: not valid JSON ({exc}); rerun the {stage} stage") from None


def read_curves(live_dir: Path | None) -> dict[str, dict[str, pd.DataFrame]]:
    """dvclive's TSVs under <live_dir>/plots/metrics as {metric: {series: frame(step, value)}}.

    finetuning/train/loss.tsv becomes curves["loss"]["finetuning/train"]; epoch.tsv (the step -> epoch map)
    is left out.
    """
    curves: dict[str, dict[str, pd.DataFrame]] = {}
    root = Path(live_dir) / "plots" / "metrics" if live_dir else None
    if root is None or not root.is_dir():
        return curves
    for tsv in sorted(root.rglob("*.tsv")):
        metric, series = tsv.stem, tsv.parent.relative_to(root).as_posix()
        if metric in ("epoch", "step"):
            continue
        frame = pd.read_csv(tsv, sep="\t")
        value = metric if metric in frame.columns else frame.columns[-1]
        if "step" in frame.columns and len(frame):
            curves.setdefault(metric, {})[series if series != "." else metric] = (
                frame[["step", value]].rename(columns={value: "value"}))
    return curves


def load_images(store_dir: Path, rows: pd.DataFrame) -> list[np.ndarray]:
    """The stored images of the galaxies of `rows` (predictions with their store `row`)."""
    from galaxy_finetune.store import open_images

    images = open_images(store_dir)
    return [np.asarray(images[int(r)]) for r in rows["row"]]


def records_json(frame: pd.DataFrame) -> str:
    """A JSON list with one record per line: numbers stay numbers for DVC's plots, and git diffs stay readable."""
    return "[\n" + ",\n".join(json.dumps(row) for row in frame.to_dict(orient="records")) + "\n]\n"


def percent(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def summary_markdown(result: dict, classes: list[str], plots_link: str, quickstart_reason: str | None) -> str:
    """reports/summary.md: headline table, per-class table, top confusions, figure links."""
    prov = result["provenance"]
    lines = ["# Zoobot fine-tuned on GalaxyMNIST: test-set analysis", ""]
    if quickstart_reason:
        lines += [f"> **{prov['profile'].upper()} PROFILE**: {prov['data_source']} galaxies and a "
                  f"{prov['encoder_source']} encoder, not the real inputs, so these numbers say nothing about "
                  f"Zoobot on GalaxyMNIST." + (f" Why: {quickstart_reason}" if quickstart_reason else ""), ""]
    if prov.get("learning_warning"):
        lines += [f"> **Warning**: {prov['learning_warning']}", ""]
    minutes = prov["train_wall_time_s"] / 60
    weights = "n/a" if prov["model_weights"] is None else f"{prov['model_weights'] / 1e6:.1f} million"
    lines += [
        "| Headline | |", "| :--- | :--- |",
        f"| **Accuracy** | **{percent(result['accuracy'])}** (95% bootstrap CI {percent(result['accuracy_ci95_low'])}"
        f" - {percent(result['accuracy_ci95_high'])}; n = {result['n']}) |",
        f"| Balanced accuracy | {percent(result['balanced_accuracy'])} |",
        f"| Macro F1 | {result['macro_f1']:.3f} |",
        f"| Log-loss | {result['log_loss']:.3f} |",
        f"| Brier score (multi-class, 0-2) | {result['brier']:.3f} |",
        f"| ECE | {result['ece']:.3f} |",
        f"| Training time | {minutes:.1f} min, {prov['epochs_run']} epochs (best: epoch {prov['best_epoch']}) |",
        f"| Device | {prov['device']}, precision {prov['precision']} |",
        f"| Model weights | {weights} |",
        f"| Profile | {prov['profile']} |",
        f"| Data | {prov['data_source']} ({prov['data_images']} images, sha256 `{prov['data_sha256'][:12]}`) |",
        f"| Encoder | {prov['encoder_source']} ({prov['encoder_arch']}, {prov['training_mode']} fine-tuning, "
        f"lr {prov['lr']:g}, {prov['input_size']} px) |",
        "", "## Per class", "",
        "| class | accuracy (recall) | 95% CI | precision | F1 | support |",
        "| :--- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in classes:
        row = result["per_class"][name]
        ci = ("n/a" if row["accuracy"] is None
              else f"{percent(row['accuracy_ci95_low'])} - {percent(row['accuracy_ci95_high'])}")
        lines.append(f"| {name} | {percent(row['accuracy'])} | {ci} | {row['precision']:.3f} | {row['f1']:.3f} | "
                     f"{row['support']} |")
    lines += ["", "## Top confusions (true -> predicted)", ""]
    lines += [f"{rank}. {text}" for rank, text in result["top_confusions"].items()] or ["None: every galaxy right."]
    lines += ["", "## Figures", ""]
    lines += [f"- [{title}]({plots_link}/{name})" for name, title in FIGURE_TITLES.items()]
    for name in ("confusion_matrix.png", "per_class_accuracy.png", "residual_distribution.png"):
        lines += ["", f"![{FIGURE_TITLES[name]}]({plots_link}/{name})"]
    versions = ", ".join(f"{k} {v}" for k, v in prov["versions"].items())
    lines += ["", f"<sub>Versions: {versions}. Written by the analyse stage from metrics/metrics.json.</sub>", ""]
    return "\n".join(lines)


def draw_figures(table: pd.DataFrame, probs: np.ndarray, result: dict, classes: list[str], store_dir: Path,
                 curves: dict, ece_bins: int, plots_dir: Path, stamp: figures.Stamp) -> None:
    y_true = class_indexes(table["true_label"], classes)
    confidence = probs.max(1)
    correct = y_true == class_indexes(table["pred_label"], classes)
    residual = 1.0 - probs[np.arange(len(probs)), y_true]
    figures.confusion_matrix(confusion_array(result, classes), classes, plots_dir / "confusion_matrix.png", stamp,
                             result["accuracy"])
    figures.per_class_accuracy(result["per_class"], classes, result["accuracy"],
                               (result["accuracy_ci95_low"], result["accuracy_ci95_high"]),
                               plots_dir / "per_class_accuracy.png", stamp)
    figures.confidence_distribution(confidence, correct, len(classes), plots_dir / "confidence_distribution.png",
                                    stamp)
    figures.residual_distribution(residual, table["true_label"].to_numpy(), classes,
                                  plots_dir / "residual_distribution.png", stamp)
    for right, name, title in ((True, "top_5_predictions.png", f"The {TOP_K} most confident correct predictions"),
                               (False, "top_5_errors.png", f"The {TOP_K} most confident mistakes")):
        rows = most_confident(table, probs, right, TOP_K)
        images = load_images(store_dir, rows)
        figures.top_galaxies(rows, images, probs[rows["_row"].to_numpy()], classes, plots_dir / name, stamp, title,
                             TOP_K)
    figures.reliability_diagram(reliability(confidence, correct, ece_bins), result["ece"],
                                plots_dir / "reliability_diagram.png", stamp)
    figures.training_curves(curves, plots_dir / "training_curves.png", stamp)


def analyse(predictions: Path, raw_dir: Path, model_dir: Path, live_dir: Path | None, params: AnalyseParams,
            out: Outputs, store_dir: Path = Path("data/store")) -> dict:
    """Validate the inputs, compute the metrics, then write every output of `out` (all or none); return the metrics."""
    manifest = read_input_json(raw_dir / "manifest.json", "fetch_data")
    config = read_input_json(model_dir / "model.json", "finetune_gpu")
    timing_path = predictions.parent / "timing.json"
    timing = read_input_json(timing_path, "predict") if timing_path.is_file() else None
    try:
        prov = provenance(manifest, config, timing, count_weights(model_dir / "model.safetensors"))
        classes = list(config["classes"])
    except KeyError as exc:
        raise PipelineError(f"{raw_dir / 'manifest.json'} / {model_dir / 'model.json'}: missing key {exc}; "
                            f"rerun dvc repro") from None
    table = read_predictions(predictions)
    probs = check_predictions(table, classes, name=str(predictions))
    probs = probs / probs.sum(1, keepdims=True)
    result = compute_metrics(table, classes, params.bootstrap_samples, params.seed, params.ece_bins)
    result["provenance"] = prov
    curves = read_curves(live_dir)
    stamp = figures.Stamp(prov["profile"], footer(prov))
    plots_link = Path(os.path.relpath(out.plots, out.report.parent)).as_posix()
    report = summary_markdown(result, classes, plots_link, "; ".join(manifest["substitutions"]))
    with contextlib.ExitStack() as stack:  # each output is renamed into place only if everything succeeded
        plots_tmp, metrics_tmp, residuals_tmp, report_tmp = [
            stack.enter_context(atomic_path(path)) for path in (out.plots, out.metrics, out.residuals, out.report)]
        plots_tmp.mkdir()
        draw_figures(table, probs, result, classes, store_dir, curves, params.ece_bins, plots_tmp, stamp)
        write_text(residuals_tmp, records_json(residuals(table, probs, classes)))
        write_json(metrics_tmp, result)
        write_text(report_tmp, report)
    return result
