"""analyse: metrics.json, figures and report from the predictions, each stamped with its provenance."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from galaxy_finetune import figures
from galaxy_finetune.errors import PipelineError
from galaxy_finetune.files import read_json, write_json
from galaxy_finetune.metrics import compute_metrics
from galaxy_finetune.params import AnalyseParams


def provenance(manifest: dict, model_config: dict) -> dict:
    """Which data, weights, profile and device produced a result."""
    run, encoder = model_config["run"], model_config["encoder"]
    return {
        "profile": manifest["profile"],
        "profile_reason": manifest.get("reason"),
        "data_source": manifest["source"],
        "data_sha256": manifest["data_sha256"],
        "encoder_source": encoder["source"],
        "encoder_arch": encoder["arch"],
        "encoder_sha256": encoder.get("sha256"),
        "device": run["device"],
        "precision": run["precision"],
        "train_wall_time_s": run["wall_time_s"],
        "epochs_run": run["epochs_run"],
        "best_epoch": run["best_epoch"],
        "input_size": model_config["input_size"],
        "lr": run["params"]["lr"],
        "versions": run["versions"],
    }


def footer(prov: dict) -> str:
    return (f"profile: {prov['profile']} | data: {prov['data_source']} ({prov['data_sha256'][:10]}) | "
            f"encoder: {prov['encoder_source']} ({prov['encoder_arch']}) | device: {prov['device']}")


def read_predictions(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise PipelineError(f"{path}: not found; run the predict stage first")
    try:
        return pd.read_csv(path, dtype={"id_str": str})
    except Exception as exc:
        raise PipelineError(f"{path}: not a readable CSV ({exc})") from None


def analyse(predictions: Path, manifest_path: Path, model_dir: Path, params: AnalyseParams,
            metrics_out: Path, plots_dir: Path) -> dict:
    manifest, config = read_json(manifest_path), read_json(model_dir / "model.json")
    classes = config["classes"]
    table = read_predictions(predictions)
    try:
        result = compute_metrics(table, classes, params.bootstrap_samples, params.seed, params.ece_bins)
    except PipelineError as exc:
        raise PipelineError(f"{predictions}: {str(exc).split(': ', 1)[1]}") from None
    prov = provenance(manifest, config)
    result["provenance"] = prov
    title = f"GalaxyMNIST test set: accuracy {result['accuracy']:.2%} [{prov['profile']} profile]"
    figures.confusion_matrix(result, classes, plots_dir / "confusion_matrix.png", footer(prov), title)
    write_json(metrics_out, result)
    return result
