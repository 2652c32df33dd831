"""analyse: predictions and embeddings -> metrics JSON, plot data, figures, a Markdown summary and the mistakes page.

One call, `analyse`, validates every input before drawing anything and writes all its outputs through
temporary siblings renamed into place at the end, so bad input leaves no partial output behind.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from galaxy_finetune.analysis import figures
from galaxy_finetune.analysis.calibration import accuracy_coverage, purity_thresholds, temperature_scaling
from galaxy_finetune.analysis.common import (Inputs, Outputs, count_weights, embedding_rows, footer, map_points, number,
                                             percent, provenance, read_curves, read_predictions, records_json,
                                             semi_words, write_outputs)
from galaxy_finetune.analysis.metrics import (class_indexes, compute_metrics, confusion_array, most_confident,
                                              reliability, residuals, validated_probabilities)
from galaxy_finetune.analysis.mistakes_page import mistakes_html
from galaxy_finetune.analysis.targets import analyse_targets
from galaxy_finetune.core.classes import read_classes
from galaxy_finetune.core.errors import PipelineError
from galaxy_finetune.core.files import read_model_config, read_stage_json
from galaxy_finetune.core.gallery import thumbnail_png
from galaxy_finetune.core.layout import MANIFEST, MODEL_CONFIG, MODEL_WEIGHTS, TRAINING_TIMING
from galaxy_finetune.core.neighbours import anomaly_scores
from galaxy_finetune.core.params import AnalyseParams
from galaxy_finetune.core.task import Task, read_task
from galaxy_finetune.data.store import galaxy_pixels
from galaxy_finetune.inference.embeddings import Embeddings, read_embeddings
from galaxy_finetune.labels.issues import errors_page_section

COVERAGES = (0.5, 0.8, 0.9)  # reported in metrics.json; the whole curve is in the coverage plot
# how the report names train.training_mode: never "full", which would read as "the real, full run"
TRAINING_MODES = {"full": "end-to-end", "head_only": "head-only (linear probe)"}


def fine_tuning_vs_probe(run: dict) -> dict:
    """The val accuracy of the exported model beside a linear probe's of the starting encoder (finetune_gpu's
    record): what fine-tuning added, as metrics.json keys that `dvc metrics diff` compares."""
    probe = run.get("linear_probe") or {}
    return {"val_accuracy": run.get("val_accuracy"), "linear_probe_val_accuracy": probe.get("val_accuracy"),
            "kept": run.get("kept")}


def summary_markdown(result: dict, classes: list[str], plots_link: str, errors_link: str,
                     reason: str | None) -> str:
    """reports/summary.md: headline table, per-class table, calibration, clean samples, figure links."""
    prov = result["provenance"]
    lines = ["# Zoobot fine-tuned on GalaxyMNIST: test-set analysis", "", f"**Run:** {prov['run_label']}", ""]
    if not prov["real_run"]:
        lines += [f"> **NOT THE REAL RUN**: {prov['data_source']} galaxies and a {prov['encoder_source']} encoder, "
                  f"not the real inputs, so these numbers say nothing about Zoobot on GalaxyMNIST."
                  + (f" Why: {reason}" if reason else ""), ""]
    if prov.get("learning_warning"):
        lines += [f"> **Warning**: {prov['learning_warning']}", ""]
    minutes = "n/a" if prov["train_wall_time_s"] is None else f"{prov['train_wall_time_s'] / 60:.1f} min"
    weights = "n/a" if prov["model_weights"] is None else f"{prov['model_weights'] / 1e6:.1f} million"
    cal = result["calibration"]
    lines += [
        "| Headline | |", "| :--- | :--- |",
        f"| **Accuracy** | **{percent(result['accuracy'])}** (95% bootstrap CI {percent(result['accuracy_ci95_low'])}"
        f" - {percent(result['accuracy_ci95_high'])}; n = {result['n']}) |",
        f"| Balanced accuracy | {percent(result['balanced_accuracy'])} |",
        f"| Macro F1 | {result['macro_f1']:.3f} |",
        f"| Log-loss | {result['log_loss']:.3f} (after temperature scaling: {cal['test']['log_loss_after']:.3f}) |",
        f"| Brier score (multi-class, 0-2) | {result['brier']:.3f} (after: {cal['test']['brier_after']:.3f}) |",
        f"| ECE | {result['ece']:.3f} (after: {cal['test']['ece_after']:.3f}) |",
        f"| Training time | {minutes}, {prov['steps_run']} steps in {prov['epochs_run']} epochs (best: step "
        f"{prov['best_step']}, epoch {prov['best_epoch']}; {prov['recipe']} recipe) |",
        f"| What fine-tuning added (val accuracy) | {percent(result['val_accuracy'])} vs "
        f"{percent(result['linear_probe_val_accuracy'])} for a linear probe of the starting encoder"
        + (" (fine-tuning did not beat it on val loss, so the probe's head was kept)"
           if result["kept"] == "linear_probe" else "") + " |",
        f"| Unlabelled galaxies | {semi_words(prov)} |",
        f"| Device | {prov['device']}, precision {prov['precision']} |",
        f"| Model weights | {weights} |",
        f"| Data | {prov['data_source']} ({prov['data_images']} images, sha256 `{prov['data_sha256'][:12]}`) |",
        f"| Encoder | {prov['encoder_source']} ({prov['encoder_arch']}, "
        f"{TRAINING_MODES.get(prov['training_mode'], prov['training_mode'])} fine-tuning, "
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
    lines += ["", f"Every mistake, with its thumbnail and probabilities: [errors.html]({errors_link}).", ""]
    lines += ["## Calibration and clean samples", "",
              f"Temperature scaling fitted on the validation set: T = {cal['temperature']:.3f} ("
              + ("T > 1: the model was over-confident" if cal["temperature"] > 1 else
                 "T < 1: the model was under-confident" if cal["temperature"] < 1 else "already calibrated")
              + "). Keeping only the most confident galaxies: "
              + ", ".join(f"{percent(float(c) / 100)} kept -> accuracy {percent(a)}"
                          for c, a in result["selective"]["accuracy_at_coverage"].items()) + ".", "",
              "Cut on p(class) >= threshold (chosen on val) to build a sample of that class; test precision and "
              "completeness:", "",
              "| class | target | threshold | test precision | test completeness |",
              "| :--- | ---: | ---: | ---: | ---: |"]
    for name in classes:
        for key, cut in result["selective"]["thresholds"][name].items():
            lines.append(f"| {name} | {key.removeprefix('precision_')}% | {number(cut['threshold'])} | "
                         f"{percent(cut['test']['precision'])} | {percent(cut['test']['completeness'])} |")
    lines += ["", "## Figures", ""]
    lines += [f"- [{figure.title}]({plots_link}/{figure.file})" for figure in figures.FIGURES]
    for name in ("confusion_matrix.png", "per_class_accuracy.png", "embedding_map.png"):
        title = next(f.title for f in figures.FIGURES if f.file == name)
        lines += ["", f"![{title}]({plots_link}/{name})"]
    versions = ", ".join(f"{k} {v}" for k, v in prov["versions"].items())
    lines += ["", f"<sub>Versions: {versions}. Written by the analyse stage from metrics/metrics.json.</sub>", ""]
    return "\n".join(lines)


def anomalies_table(embeddings: Embeddings, rows: np.ndarray, table: pd.DataFrame, probs: np.ndarray,
                    k: int) -> pd.DataFrame:
    """Test galaxies ranked by mean cosine distance to their k nearest training galaxies, most unusual first."""
    train = embeddings.split("train")
    scores, nearest = anomaly_scores(embeddings.pca_features[train], embeddings.pca_features[rows], k)
    frame = pd.DataFrame({"id_str": table["id_str"].to_numpy(), "true_label": table["true_label"].to_numpy(),
                          "pred_label": table["pred_label"].to_numpy(), "confidence": np.round(probs.max(1), 6),
                          "anomaly_score": np.round(scores, 6),
                          "nearest_train_id": embeddings.galaxies["id_str"].to_numpy()[train][nearest]})
    frame = frame.sort_values(["anomaly_score", "id_str"], ascending=[False, True], kind="stable")
    return frame.reset_index(drop=True).rename_axis("rank").reset_index().assign(rank=lambda f: f["rank"] + 1)


def analyse(inputs: Inputs, params: AnalyseParams, out: Outputs) -> dict:
    """Validate the inputs, compute the metrics, then write every output of `out` (all or none); return the metrics."""
    manifest = read_stage_json(inputs.raw_dir / MANIFEST, "fetch_data")
    config = read_model_config(inputs.model_dir)
    timing = read_stage_json(inputs.timing, "predict") if inputs.timing else None
    trained = inputs.live_dir / TRAINING_TIMING if inputs.live_dir else None
    training_timing = read_stage_json(trained, "finetune_gpu") if trained and trained.is_file() else None
    try:
        prov = provenance(manifest, config, timing, count_weights(inputs.model_dir / MODEL_WEIGHTS), training_timing)
        trained_on = list(config.get("classes", []))
    except KeyError as exc:
        raise PipelineError(f"{inputs.raw_dir / MANIFEST} / {inputs.model_dir / MODEL_CONFIG}: missing key {exc}; "
                            f"rerun dvc repro") from None
    task = read_task(inputs.raw_dir)
    if not task.by_class:  # regression and votes: analysis/targets.py
        trained_for = Task.from_record(config.get("task"), config.get("classes", ()))
        if trained_for != task:
            raise PipelineError(f"{inputs.model_dir / MODEL_CONFIG}: the model was trained for "
                                f"{trained_for.kind} {list(trained_for.label_cols)}, the data is "
                                f"{task.kind} {list(task.label_cols)}; rerun dvc repro")
        reason = "; ".join(manifest.get("substitutions") or []) or manifest.get("reason")
        return analyse_targets(inputs, params, out, config, prov, task, reason)
    classes = read_classes(inputs.raw_dir)
    if trained_on != classes:
        raise PipelineError(f"{inputs.model_dir / MODEL_CONFIG}: the model was trained on classes {trained_on}, "
                            f"the data has {classes}; rerun dvc repro")
    table = read_predictions(inputs.predictions)
    probs = validated_probabilities(table, classes, name=str(inputs.predictions))
    if "row" not in table.columns:
        raise PipelineError(f"{inputs.predictions}: no `row` column (each galaxy's store row); rerun the predict stage")
    val_table = read_predictions(inputs.val_predictions)
    val_probs = validated_probabilities(val_table, classes, name=str(inputs.val_predictions))
    y_true, val_true = class_indexes(table["true_label"], classes), class_indexes(val_table["true_label"], classes)
    correct = y_true == class_indexes(table["pred_label"], classes)
    embeddings = read_embeddings(inputs.embeddings)
    rows = embedding_rows(embeddings, table, inputs.embeddings)

    result = compute_metrics(table, probs, classes, params.bootstrap_samples, params.seed, params.ece_bins)
    result.update(fine_tuning_vs_probe(config["run"]))
    calibration, scaled = temperature_scaling(val_probs, val_true, probs, y_true, params.ece_bins)
    coverage = accuracy_coverage(probs.max(1), correct)
    at = coverage.set_index("coverage")["accuracy"]
    result["calibration"] = calibration
    result["selective"] = {
        "accuracy_at_coverage": {str(round(c * 100)): float(at[at.index >= c - 1e-9].iloc[0]) for c in COVERAGES},
        "thresholds": purity_thresholds(val_probs, val_true, probs, y_true, classes)}
    anomalies = anomalies_table(embeddings, rows, table, probs, params.anomaly_k)
    result["anomalies"] = {"k": int(min(params.anomaly_k, len(embeddings.split("train")))),
                           "most_unusual": anomalies["id_str"].head(3).tolist()}
    result["provenance"] = prov
    per_galaxy = residuals(table, probs, classes)
    xy = map_points(embeddings.pca_features[rows], params.map, params.seed)
    map_frame = pd.DataFrame({"id_str": table["id_str"].to_numpy(), "x": np.round(xy[:, 0], 4),
                              "y": np.round(xy[:, 1], 4), "true_label": table["true_label"].to_numpy(),
                              "pred_label": table["pred_label"].to_numpy(),
                              "outcome": np.where(correct, "correct", "mistake")})

    top_correct, top_errors = (most_confident(table, probs, right, figures.TOP_K) for right in (True, False))
    unusual = anomalies.head(figures.GALLERY)
    mistakes = table["id_str"][~correct].tolist()
    shown = list(dict.fromkeys([*top_correct["id_str"], *top_errors["id_str"], *unusual["id_str"], *mistakes]))
    row_of = dict(zip(table["id_str"], table["row"]))
    pixels = dict(zip(shown, galaxy_pixels(inputs.store_dir, [row_of[i] for i in shown])))
    confidence = probs.max(1)
    data = figures.FigureData(
        classes=classes, table=table, probs=probs, residual=per_galaxy["residual"].to_numpy(), metrics=result,
        confusion=confusion_array(result, classes),
        reliability_before=reliability(confidence, correct, params.ece_bins),
        reliability_after=reliability(scaled.max(1), scaled.argmax(1) == y_true, params.ece_bins),
        calibration=calibration,
        top_correct=top_correct, top_correct_images=[pixels[i] for i in top_correct["id_str"]],
        top_errors=top_errors, top_errors_images=[pixels[i] for i in top_errors["id_str"]],
        curves=read_curves(inputs.live_dir), map_points=map_frame.assign(correct=correct), map_method=params.map,
        unusual=unusual, unusual_images=[pixels[i] for i in unusual["id_str"]])
    stamp = figures.Stamp(prov["run_label"], footer(prov), warn=not prov["real_run"])
    plots_link = Path(os.path.relpath(out.plots, out.report.parent)).as_posix()
    errors_link = Path(os.path.relpath(out.errors_page, out.report.parent)).as_posix()
    reason = "; ".join(manifest.get("substitutions") or []) or manifest.get("reason")
    report = summary_markdown(result, classes, plots_link, errors_link, reason)
    section = None
    if inputs.label_budget is not None:  # labels that look wrong (train/val/test), and duplicate counts
        found, section = errors_page_section(inputs.label_budget, inputs.store_dir)
        result.update(found)
    page = mistakes_html(table, probs, classes, {i: thumbnail_png(pixels[i]) for i in mistakes},
                         f"{prov['run_label']} | {semi_words(prov)}",
                         section)
    write_outputs(out, lambda folder: [figure.draw(data, folder / figure.file, stamp, figure.title)
                                       for figure in figures.FIGURES],
                  records_json(per_galaxy), coverage.to_csv(index=False), map_frame, anomalies, result, report, page)
    return result


