"""What every task's analysis shares: its inputs and outputs, the readers of predictions, embeddings, training
curves and provenance, the 2-D map, and the one writer of every output (all or none).

analysis/analyse.py (classification) and analysis/targets.py (regression and votes) both build on it.
"""
from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd

from galaxy_finetune.core.errors import PipelineError
from galaxy_finetune.core.files import atomic_path, read_table, require, write_json, write_text
from galaxy_finetune.inference.embeddings import Embeddings


@dataclass(frozen=True)
class Inputs:
    """What analyse reads: test and val predictions, predict's timing.json, data/raw (the manifest), the store
    (pixels), the model, dvclive's folder and data/embeddings."""

    predictions: Path
    val_predictions: Path
    timing: Path | None
    raw_dir: Path
    store_dir: Path
    model_dir: Path
    live_dir: Path | None
    embeddings: Path
    label_budget: Path | None = None  # metrics/label_budget (the label_budget stage): label issues, duplicates


@dataclass(frozen=True)
class Outputs:
    """Where analyse writes: metrics JSON, plot data (residuals, coverage, map), anomalies CSV, figures folder,
    Markdown summary and the mistakes page."""

    metrics: Path
    residuals: Path
    coverage: Path
    embedding_map: Path
    anomalies: Path
    plots: Path
    report: Path
    errors_page: Path


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


def run_identity(manifest: dict) -> tuple[str, bool]:
    """(run label, real run?) of the manifest. A real run has a pretrained encoder and no substituted data;
    anything else is shown in red."""
    pretrained = bool((manifest.get("encoder") or {}).get("pretrained", False))
    return manifest["run_label"], pretrained and not (manifest.get("data") or {}).get("substituted", False)


def provenance(manifest: dict, model_config: dict, timing: dict | None = None, n_weights: int | None = None,
               training_timing: dict | None = None) -> dict:
    """Which run, data, weights, device, versions and times produced a result (`timing`: predict's; `training_timing`:
    finetune_gpu's, metrics/training/timing.json)."""
    run, encoder = model_config["run"], model_config["encoder"]
    label, real = run_identity(manifest)
    return {
        "run_label": label,
        "real_run": real,
        "data_source": manifest["source"],
        "data_sha256": manifest.get("data_fingerprint", manifest.get("data_sha256")),
        "data_images": manifest.get("n_images"),
        "encoder_source": encoder["source"],
        "encoder_arch": encoder["arch"],
        "encoder_sha256": encoder.get("sha256"),
        "training_mode": model_config.get("training_mode"),
        "model_weights": n_weights,
        "input_size": model_config["input_size"],
        "lr": run["params"]["lr"],
        "recipe": run.get("recipe"),
        "device": run["device"],
        "precision": run["precision"],
        "train_wall_time_s": (training_timing or {}).get("wall_time_s"),
        "train_images_per_s": (training_timing or {}).get("train_images_per_s"),
        "epochs_run": run["epochs_run"],
        "best_epoch": run["best_epoch"],
        "steps_run": run.get("steps_run"),
        "best_step": run.get("best_step"),
        "learning_warning": run.get("learning_warning"),  # issue 10: finetune_gpu's learned-nothing verdict
        "semi": run.get("semi") or {"method": "none"},  # issue 34: what the unlabelled pool added (training/semi.py)
        "data_unlabelled": manifest.get("n_unlabelled", 0),
        "predict_images_per_s": (timing or {}).get("test_images_per_s"),
        "versions": {**run["versions"], **{name: version(name) for name in ("scikit-learn", "matplotlib",
                                                                            "seaborn")}},
    }


def semi_words(prov: dict) -> str:
    """How the run used the galaxies nobody labelled, in words (the report and the errors page)."""
    semi = prov.get("semi") or {"method": "none"}
    if semi["method"] == "none":
        return "trained on its labels alone"
    return (f"semi-supervised ({semi['method']}, threshold {semi.get('threshold')}): also learned from "
            f"{semi.get('pool', 0):,} unlabelled galaxies, {semi.get('used_share', 0):.0%} of the pool draws used")


def footer(prov: dict) -> str:
    sha = (prov["data_sha256"] or "")[:10]
    return (f"data: {prov['data_source']} (sha256 {sha}) | encoder: {prov['encoder_source']} "
            f"({prov['encoder_arch']}) | device: {prov['device']}")


def read_predictions(path: Path) -> pd.DataFrame:
    require(path, "predict")
    try:
        return read_table(path)
    except Exception as exc:
        raise PipelineError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from None


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


def records_json(frame: pd.DataFrame) -> str:
    """A JSON list with one record per line: numbers stay numbers for DVC's plots, and git diffs stay readable."""
    return "[\n" + ",\n".join(json.dumps(row) for row in frame.to_dict(orient="records")) + "\n]\n"


def percent(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def number(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def map_points(features: np.ndarray, method: str, seed: int) -> np.ndarray:
    """(N, 2) coordinates of the test galaxies: t-SNE of their PCA features, or the first two PCA components."""
    if method == "pca" or len(features) < 5:
        return np.asarray(features[:, :2], dtype=float)
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, (len(features) - 1) / 3))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(features)


def embedding_rows(embeddings: Embeddings, table: pd.DataFrame, where: Path) -> np.ndarray:
    """Row of data/embeddings of each galaxy of the test predictions."""
    test = embeddings.split("test")
    index = pd.Series(test, index=embeddings.galaxies["id_str"].to_numpy()[test])
    missing = ~table["id_str"].isin(index.index)
    if missing.any():
        raise PipelineError(f"{where}: no embedding for test galaxy {table['id_str'][missing].iloc[0]}; the "
                            f"embeddings and predictions come from different runs (rerun dvc repro)")
    return index[table["id_str"]].to_numpy()


def write_outputs(out: Outputs, draw_plots, residuals_json: str, coverage_csv: str, map_frame: pd.DataFrame,
                  anomalies: pd.DataFrame, result: dict, report: str, page: str) -> None:
    """Every output of the analyse stage, each renamed into place only if all of them were written;
    `draw_plots(folder)` draws the figures into the new plots folder (every task's figures go through here)."""
    paths = (out.plots, out.metrics, out.residuals, out.coverage, out.embedding_map, out.anomalies, out.report,
             out.errors_page)
    with contextlib.ExitStack() as stack:
        plots_tmp, metrics_tmp, residuals_tmp, coverage_tmp, map_tmp, anomalies_tmp, report_tmp, page_tmp = [
            stack.enter_context(atomic_path(path)) for path in paths]
        plots_tmp.mkdir()
        draw_plots(plots_tmp)
        write_text(residuals_tmp, residuals_json)
        write_text(coverage_tmp, coverage_csv)
        map_frame.to_csv(map_tmp, index=False)
        anomalies.to_csv(anomalies_tmp, index=False)
        write_json(metrics_tmp, result)
        write_text(report_tmp, report)
        write_text(page_tmp, page)
