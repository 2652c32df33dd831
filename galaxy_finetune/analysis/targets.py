"""analyse for train.task regression and votes: errors of predicted values (vote fractions) against the truth.

Regression scores each target column; votes each question (only the galaxies whose volunteers answered it) and
each answer. Every score is an MAE and an RMSE with a percentile bootstrap CI over galaxies
(metrics.bootstrap_mean_ci), beside the constant prediction's: the train split's mean of the column (of the
answer's vote fraction). Votes add, per question, the confusion of the most-voted answer on the galaxies whose
volunteers agree (majority fraction >= AGREEMENT). Calibration, coverage, temperature scaling and purity
thresholds are classification-only: coverage.csv is written header-only so the stage's outputs stay complete.
"""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from galaxy_finetune.analysis import figures
from galaxy_finetune.analysis.common import (embedding_rows, footer, map_points, read_curves, read_predictions,
                                             records_json, write_outputs)
from galaxy_finetune.analysis.metrics import bootstrap_mean_ci
from galaxy_finetune.analysis.mistakes_page import STYLE
from galaxy_finetune.core.errors import PipelineError
from galaxy_finetune.core.files import read_table
from galaxy_finetune.core.gallery import thumbnail_png
from galaxy_finetune.core.layout import CATALOG
from galaxy_finetune.core.neighbours import anomaly_scores
from galaxy_finetune.core.task import Task
from galaxy_finetune.data.store import galaxy_pixels
from galaxy_finetune.inference.embeddings import read_embeddings

AGREEMENT = 0.8  # volunteers agree on a question when its most-voted answer has at least this share
LARGEST = 12  # galaxies on the largest-residuals figure (the errors page lists LARGEST_PAGE)
LARGEST_PAGE = 50
COVERAGE_HEADER = "coverage,kept,accuracy,min_confidence\n"
CLASSIFICATION_ONLY = ("calibration (reliability, ECE, temperature scaling), accuracy-coverage and purity "
                       "thresholds are classification-only")
RESIDUAL_BINS = np.round(np.linspace(-1.0, 1.0, 21), 1)


def truth_and_prediction(table: pd.DataFrame, task: Task, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(N, K) true values (vote fractions; NaN for an unanswered question) and predictions, from predict's columns."""
    cols = list(task.label_cols)
    missing = [f"{p}_{c}" for c in cols for p in ("true", "pred") if f"{p}_{c}" not in table.columns]
    if missing:
        raise PipelineError(f"{where}: no column(s) {missing[:3]}; the predictions are not of this {task.kind} task "
                            f"(rerun dvc repro)")
    truth = table[[f"true_{c}" for c in cols]].to_numpy(float)
    pred = table[[f"pred_{c}" for c in cols]].to_numpy(float)
    if not np.isfinite(pred).all():
        raise PipelineError(f"{where}: a prediction that is not a number; rerun the predict stage")
    return truth, pred


def train_means(raw_dir: Path, train_ids, task: Task) -> np.ndarray:
    """The constant prediction: each column's (each answer's vote fraction's) mean over the train split."""
    catalog = read_table(Path(raw_dir) / CATALOG)
    rows = catalog[catalog["id_str"].isin(set(train_ids))]
    values = task.truth(rows[list(task.label_cols)].to_numpy(float))
    with np.errstate(invalid="ignore"):
        means = np.nanmean(values, axis=0) if len(values) else np.full(len(task.label_cols), np.nan)
    return np.nan_to_num(means, nan=0.5)


def scores(truth: np.ndarray, pred: np.ndarray, baseline: np.ndarray, samples: int, seed: int) -> dict:
    """MAE and RMSE (each with its 95% bootstrap CI) over the galaxies with a truth, and the constant baseline's."""
    keep = np.isfinite(truth).all(1)
    t, p = truth[keep], pred[keep]
    if not len(t):
        return {"n": 0, "mae": None, "rmse": None, "baseline_mae": None, "baseline_rmse": None}
    abs_err, sq_err = np.abs(p - t).mean(1), ((p - t) ** 2).mean(1)
    mae_ci, rmse_ci = bootstrap_mean_ci(abs_err, samples, seed), bootstrap_mean_ci(sq_err, samples, seed,
                                                                                 transform=np.sqrt)
    return {"n": int(len(t)), "mae": float(abs_err.mean()), "mae_ci95_low": mae_ci[0], "mae_ci95_high": mae_ci[1],
            "rmse": float(np.sqrt(sq_err.mean())), "rmse_ci95_low": rmse_ci[0], "rmse_ci95_high": rmse_ci[1],
            "baseline_mae": float(np.abs(baseline - t).mean()),
            "baseline_rmse": float(np.sqrt(((baseline - t) ** 2).mean()))}


def agreement_confusion(truth: np.ndarray, pred: np.ndarray, columns: list[int]) -> tuple[np.ndarray, int]:
    """Counts (true most-voted answer x predicted most-likely answer) over galaxies whose volunteers agree."""
    t, p = truth[:, columns], pred[:, columns]
    agreed = np.isfinite(t).all(1) & (np.nan_to_num(t).max(1) >= AGREEMENT)
    counts = np.zeros((len(columns), len(columns)), dtype=int)
    np.add.at(counts, (t[agreed].argmax(1), p[agreed].argmax(1)), 1)
    return counts, int(agreed.sum())


def compute_target_metrics(truth, pred, baseline, task: Task, samples: int, seed: int) -> dict:
    """metrics.json's scores: per column (regression) or per question and per answer (votes), the macro mean
    over them as the headline, and for votes the agreed galaxies' most-voted-answer accuracy per question."""
    by_group = {name: scores(truth[:, cols], pred[:, cols], baseline[cols], samples, seed)
                for name, cols in task.groups().items()}
    scored = [s for s in by_group.values() if s["n"]]

    def mean(key: str) -> float | None:
        return float(np.mean([s[key] for s in scored])) if scored else None

    result = {"task": task.kind, "n": int(len(truth)), "mae": mean("mae"), "rmse": mean("rmse"),
              "baseline_mae": mean("baseline_mae"), "baseline_rmse": mean("baseline_rmse"),
              GROUP_KEY[task.group_word]: by_group}
    return result | TARGETS[task.kind].more_metrics(truth, pred, baseline, task, samples, seed)


# ---- figures ----

def _grid(n: int, width: float = 3.4):
    cols = min(4, max(1, n))
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, width * rows + 1.2), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_axis_off()
    return fig, axes.flat


def predicted_vs_true(truth, pred, names: list[str], fractions: bool, path: Path, stamp, title: str) -> None:
    """One hexbin per column (answer): predicted against true (volunteer fraction: `fractions`, on [0, 1]), the
    y = x line, the MAE."""
    fig, axes = _grid(len(names))
    for ax, i, name in zip(axes, range(len(names)), names):
        keep = np.isfinite(truth[:, i])
        t, p = truth[keep, i], pred[keep, i]
        lo, hi = (0.0, 1.0) if fractions else (float(min(t.min(initial=0), p.min(initial=0))),
                                                      float(max(t.max(initial=1), p.max(initial=1))))
        if len(t):
            ax.hexbin(t, p, gridsize=20, extent=(lo, hi, lo, hi), cmap="viridis", mincnt=1)
        ax.plot([lo, hi], [lo, hi], color="0.5", lw=1, ls="--")
        mae = float(np.abs(p - t).mean()) if len(t) else float("nan")
        ax.set_title(f"{name}\nMAE {mae:.3f} (n = {len(t)})", fontsize=8.5)
        ax.set_xlabel("volunteer fraction" if fractions else "true")
        ax.set_ylabel("predicted")
    figures.save(fig, path, stamp, title)


def residual_histograms(truth, pred, names: list[str], path: Path, stamp, title: str) -> None:
    fig, axes = _grid(len(names))
    for ax, i, name in zip(axes, range(len(names)), names):
        keep = np.isfinite(truth[:, i])
        ax.hist(pred[keep, i] - truth[keep, i], bins=RESIDUAL_BINS, color="#1c7ed6", alpha=0.8)
        ax.axvline(0, color="0.3", lw=1)
        ax.set_title(name, fontsize=8.5)
        ax.set_xlabel("predicted - true")
        ax.set_ylabel("galaxies")
    figures.save(fig, path, stamp, title)


def error_map(points: pd.DataFrame, method: str, path: Path, stamp, title: str) -> None:
    fig, ax = plt.subplots(figsize=(8.6, 7.4))
    art = ax.scatter(points["x"], points["y"], c=points["mean_abs_residual"], s=16, cmap="magma_r", linewidths=0)
    fig.colorbar(art, ax=ax, label="mean |predicted - true|")
    ax.set_xlabel(f"{method} 1")
    ax.set_ylabel(f"{method} 2")
    ax.set_xticks([])
    ax.set_yticks([])
    figures.save(fig, path, stamp, title)


def largest_residuals_html(rows: pd.DataFrame, names: list[str], thumbnails: dict[str, bytes], run_label: str,
                           note: str = "") -> str:
    """errors.html for regression and votes: the test galaxies with the largest mean |residual|, each with its
    thumbnail and its true and predicted values."""
    import base64
    import html

    esc = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>Test-set largest residuals</title>", f"<style>{STYLE}</style></head><body>",
             f"<h1>The {len(rows)} test galaxies with the largest mean |predicted - true|</h1>",
             f'<p class="label">{esc(run_label)}</p>',
             f'<p class="note">Largest first. {esc(note)}</p>', '<div class="cell">']
    for row in rows.itertuples(index=False):
        record = row._asdict()
        image = base64.b64encode(thumbnails[record["id_str"]]).decode("ascii")
        lines = "".join(f"<tr><td>{esc(n)}</td><td class=\"p\">{_cell(record.get(f'true_{n}'))}</td>"
                        f"<td class=\"p\">{_cell(record.get(f'pred_{n}'))}</td></tr>" for n in names)
        parts.append(f'<div class="mistake" data-id="{esc(str(record["id_str"]))}"><img alt="galaxy '
                     f'{esc(str(record["id_str"]))}" src="data:image/png;base64,{image}"><b>'
                     f'{esc(str(record["id_str"]))}</b><br>mean |residual| {record["mean_abs_residual"]:.3f}'
                     f"<table><tr><td></td><td>true</td><td>pred</td></tr>{lines}</table></div>")
    parts += ["</div>", "</body></html>"]
    return "\n".join(parts) + "\n"


def _cell(value) -> str:
    return "" if value is None or not np.isfinite(value) else f"{value:.3f}"


def summary_markdown(result: dict, task: Task, prov: dict, plots_link: str, errors_link: str, files: list[str],
                     reason: str | None) -> str:
    what, more = task.group_word, TARGETS[task.kind]
    lines = [f"# Zoobot fine-tuned for {task.kind}: test-set analysis", "", f"**Run:** {prov['run_label']}", ""]
    if not prov["real_run"]:
        lines += [f"> **NOT THE REAL RUN**: {prov['data_source']} galaxies and a {prov['encoder_source']} encoder."
                  + (f" Why: {reason}" if reason else ""), ""]
    if prov.get("learning_warning"):
        lines += [f"> **Warning**: {prov['learning_warning']}", ""]
    def fmt(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.4f}"

    lines += ["| Headline | |", "| :--- | :--- |",
              f"| **MAE** (mean over {what}s) | **{fmt(result['mae'])}** vs {fmt(result['baseline_mae'])} for the "
              f"constant prediction (train mean); n = {result['n']} |",
              f"| RMSE (mean over {what}s) | {fmt(result['rmse'])} vs {fmt(result['baseline_rmse'])} |",
              f"| Best val loss | {fmt(result.get('best_val_loss'))} ({prov['recipe']} recipe, {prov['steps_run']} "
              f"steps, best step {prov['best_step']}) |",
              f"| Device | {prov['device']}, precision {prov['precision']} |",
              f"| Data | {prov['data_source']} ({prov['data_images']} images) |",
              f"| Encoder | {prov['encoder_source']} ({prov['encoder_arch']}, {prov['input_size']} px) |",
              "", f"## Per {what}{more.heading}", "",
              "| | n | MAE | 95% CI | RMSE | 95% CI | constant MAE | constant RMSE |",
              "| :--- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    table = result[GROUP_KEY[what]]
    for name, s in table.items():
        if not s["n"]:
            lines.append(f"| {name} | 0 | n/a | | n/a | | | |")
            continue
        lines.append(f"| {name} | {s['n']} | {s['mae']:.4f} | {s['mae_ci95_low']:.4f} - {s['mae_ci95_high']:.4f} | "
                     f"{s['rmse']:.4f} | {s['rmse_ci95_low']:.4f} - {s['rmse_ci95_high']:.4f} | "
                     f"{s['baseline_mae']:.4f} | {s['baseline_rmse']:.4f} |")
    lines += more.summary_lines(result)
    lines += ["", f"Not computed: {CLASSIFICATION_ONLY} (metrics/coverage.csv is header-only).", "",
              f"The test galaxies with the largest residuals, with thumbnails: [errors.html]({errors_link}).", "",
              "## Figures", ""]
    lines += [f"- [{title}]({plots_link}/{name})" for name, title in files]
    lines += ["", f"![predicted vs true]({plots_link}/predicted_vs_true.png)", ""]
    return "\n".join(lines)


def analyse_targets(inputs, params, out, config: dict, prov: dict, task: Task, reason: str | None) -> dict:
    """analyse() for regression and votes: the same outputs as for classification (see the module docstring)."""
    table = read_predictions(inputs.predictions)
    if "row" not in table.columns:
        raise PipelineError(f"{inputs.predictions}: no `row` column (each galaxy's store row); rerun the predict stage")
    truth, pred = truth_and_prediction(table, task, str(inputs.predictions))
    embeddings = read_embeddings(inputs.embeddings)
    rows = embedding_rows(embeddings, table, inputs.embeddings)
    train_ids = embeddings.galaxies["id_str"].to_numpy()[embeddings.split("train")]
    baseline = train_means(inputs.raw_dir, train_ids, task)

    result = compute_target_metrics(truth, pred, baseline, task, params.bootstrap_samples, params.seed)
    run = config["run"]
    result.update({"best_val_loss": run.get("best_val_loss"), "kept": run.get("kept"),
                   "baseline_train_mean": dict(zip(task.label_cols, map(float, baseline)))})
    more = TARGETS[task.kind]
    result.update(more.run_scores(run))
    names = list(task.label_cols)
    with np.errstate(invalid="ignore"):
        mean_abs = np.nanmean(np.where(np.isfinite(truth), np.abs(pred - truth), np.nan), axis=1)
    mean_abs = np.nan_to_num(mean_abs)
    per_galaxy = table[["id_str", *[f"true_{c}" for c in names], *[f"pred_{c}" for c in names]]].assign(
        mean_abs_residual=np.round(mean_abs, 6))


    train = embeddings.split("train")
    score, nearest = anomaly_scores(embeddings.pca_features[train], embeddings.pca_features[rows], params.anomaly_k)
    anomalies = pd.DataFrame({"id_str": table["id_str"].to_numpy(), "mean_abs_residual": np.round(mean_abs, 6),
                              "anomaly_score": np.round(score, 6),
                              "nearest_train_id": embeddings.galaxies["id_str"].to_numpy()[train][nearest]})
    anomalies = anomalies.sort_values(["anomaly_score", "id_str"], ascending=[False, True], kind="stable")
    anomalies = anomalies.reset_index(drop=True).rename_axis("rank").reset_index().assign(rank=lambda f: f["rank"] + 1)
    result["anomalies"] = {"k": int(min(params.anomaly_k, len(train))),
                           "most_unusual": anomalies["id_str"].head(3).tolist()}
    result["provenance"] = prov

    long = pd.DataFrame({"id_str": np.repeat(table["id_str"].astype(str).to_numpy(), len(names)),
                         "true_label": np.tile(names, len(table)),
                         "residual": np.round((pred - truth).ravel(), 6)})
    long = long[np.isfinite(long["residual"])]
    edges = RESIDUAL_BINS
    which = np.clip(np.digitize(long["residual"], edges[1:-1]), 0, len(edges) - 2)
    long = long.assign(residual_bin=[f"[{edges[b]:+.1f},{edges[b + 1]:+.1f})" for b in which])

    xy = map_points(embeddings.pca_features[rows], params.map, params.seed)
    map_frame = pd.DataFrame({"id_str": table["id_str"].to_numpy(), "x": np.round(xy[:, 0], 4),
                              "y": np.round(xy[:, 1], 4), "mean_abs_residual": np.round(mean_abs, 6)})

    largest = per_galaxy.sort_values(["mean_abs_residual", "id_str"], ascending=[False, True], kind="stable")
    page_rows = largest.head(LARGEST_PAGE)
    unusual = anomalies.head(figures.GALLERY)
    shown = list(dict.fromkeys([*page_rows["id_str"], *unusual["id_str"]]))
    row_of = dict(zip(table["id_str"], table["row"]))
    pixels = dict(zip(shown, galaxy_pixels(inputs.store_dir, [row_of[i] for i in shown])))
    stamp = figures.Stamp(prov["run_label"], footer(prov), warn=not prov["real_run"])
    curves = read_curves(inputs.live_dir)
    draw = [("predicted_vs_true.png", f"Predicted vs {task.truth_words}",
             lambda p, t: predicted_vs_true(truth, pred, names, more.fractions, p, stamp, t)),
            ("target_residuals.png", f"Residual (predicted - true) per {task.column_word}",
             lambda p, t: residual_histograms(truth, pred, names, p, stamp, t)),
            ("training_curves.png", "Training curves (dvclive)",
             lambda p, t: figures.training_curves(curves, p, stamp, t)),
            ("embedding_map.png", "Map of the test set's encoder features, colour = mean |residual|",
             lambda p, t: error_map(map_frame, params.map, p, stamp, t)),
            ("largest_residuals.png", f"The {LARGEST} test galaxies with the largest mean |residual|",
             lambda p, t: figures.galaxy_grid([pixels[i] for i in page_rows["id_str"].head(LARGEST)],
                                              [f"{r.id_str}\n|res| {r.mean_abs_residual:.3f}"
                                               for r in page_rows.head(LARGEST).itertuples()],
                                              [figures.WRONG] * min(LARGEST, len(page_rows)), p, stamp, t)),
            ("unusual_galaxies.png", f"The {figures.GALLERY} most unusual test galaxies",
             lambda p, t: figures.galaxy_grid([pixels[i] for i in unusual["id_str"]],
                                              [f"#{r.rank} {r.id_str} (score {r.anomaly_score:.3f})\n"
                                               f"|res| {r.mean_abs_residual:.3f}" for r in unusual.itertuples()],
                                              ["0.5"] * len(unusual), p, stamp, t))]
    draw += more.figures(result, task, stamp)
    plots_link = Path(os.path.relpath(out.plots, out.report.parent)).as_posix()
    errors_link = Path(os.path.relpath(out.errors_page, out.report.parent)).as_posix()
    report = summary_markdown(result, task, prov, plots_link, errors_link, [(f, t) for f, t, _ in draw], reason)
    page = largest_residuals_html(page_rows, names, {i: thumbnail_png(pixels[i]) for i in page_rows["id_str"]},
                                  prov["run_label"], more.page_note)
    write_outputs(out, lambda folder: [fn(folder / name, title) for name, title, fn in draw],
                          records_json(long), COVERAGE_HEADER, map_frame, anomalies, result, report, page)
    return result


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


GROUP_KEY = {"target column": "per_column", "question": "per_question"}  # metrics.json's key of the group scores


class RegressionScores:
    """What a regression run's analysis adds: the run's val RMSE beside the train mean's and the probe's."""
    heading = ""
    fractions = False  # predictions on [0, 1] axes
    page_note = ""

    def more_metrics(self, truth, pred, baseline, task: Task, samples: int, seed: int) -> dict:
        return {}

    def run_scores(self, run: dict) -> dict:
        return {"val_rmse": run.get("val_rmse"), "baseline_val_rmse": run.get("baseline_val_rmse"),
                "linear_probe_val_rmse": (run.get("linear_probe") or {}).get("val_rmse")}

    def summary_lines(self, result: dict) -> list[str]:
        return []

    def figures(self, result: dict, task: Task, stamp) -> list:
        return []


class VoteScores(RegressionScores):
    """What a votes run's analysis adds: each answer's scores, and per question the confusion of the most-voted
    answer on the galaxies whose volunteers agree (a table and a figure per question)."""
    heading = " (galaxies with votes on the question)"
    fractions = True
    page_note = "True values are the volunteers' vote fractions; predicted, the Dirichlet mean. Empty: the question " \
                "got no votes."

    def more_metrics(self, truth, pred, baseline, task: Task, samples: int, seed: int) -> dict:
        agreement = {}
        for q, cols in task.groups().items():
            counts, n = agreement_confusion(truth, pred, cols)
            agreement[q] = {"n_agreed": n, "accuracy": float(np.trace(counts) / n) if n else None,
                            "confusion": counts.tolist()}
        return {"per_answer": {c: scores(truth[:, [i]], pred[:, [i]], baseline[[i]], samples, seed)
                               for i, c in enumerate(task.label_cols)},
                "agreement": {"threshold": AGREEMENT, "per_question": agreement}}

    def run_scores(self, run: dict) -> dict:
        return {}

    def summary_lines(self, result: dict) -> list[str]:
        lines = ["", f"## Most-voted answer where volunteers agree (majority fraction >= {AGREEMENT})", "",
                 "| question | agreed galaxies | accuracy of the predicted most-likely answer |",
                 "| :--- | ---: | ---: |"]
        for q, a in result["agreement"]["per_question"].items():
            accuracy = "n/a" if a["accuracy"] is None else f"{a['accuracy']:.1%}"
            lines.append(f"| {q} | {a['n_agreed']} | {accuracy} |")
        return lines

    def figures(self, result: dict, task: Task, stamp) -> list:
        names, draw = list(task.label_cols), []
        for q, cols in task.groups().items():
            answers = [names[i].removeprefix(q).lstrip("_-") or names[i] for i in cols]
            counts = np.array(result["agreement"]["per_question"][q]["confusion"])
            acc = result["agreement"]["per_question"][q]["accuracy"] or 0.0
            draw.append((f"agreement_confusion_{_safe(q)}.png",
                         f"{q}: most-voted answer where volunteers agree (>= {AGREEMENT:.0%})",
                         lambda p, t, c=counts, a=answers, s=acc: figures.confusion_matrix(c, a, s, p, stamp, t)))
        return draw


TARGETS = {"regression": RegressionScores(), "votes": VoteScores()}
