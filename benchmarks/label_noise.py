"""Label noise and near copies injected into real galaxies: does the label budget find them? (a benchmark, not a test)

On ../shared/real-galaxies/gz2_spiral (2,000 SDSS galaxies, spiral vs not, its own 600-galaxy test set) with the
shared ImageNet EfficientNet-Lite0:
1. a noisy copy of the catalog: 10% of the labels flipped at random (seeded, every split), and 12 near copies of
   random galaxies under new ids (4 re-encoded as JPEG quality 90, 4 shifted by 4 px of the 424-px cut-out,
   4 made 10% brighter), written as new image files;
2. the pipeline's own stages on it, each stage's dvc.yaml command run in a scratch project (fetch_data, store,
   split, finetune_gpu, embed, predict, label_budget) with the project's params.yaml and these overrides:
   data.source catalog, the shared encoder, train.input_size 128 (the CPU's limit; the default is 224);
3. the flagged labels against the flips (recall, precision; overall and per split), for the stage's default
   (val/test: the fine-tuned model's predictions; train: the run's training dynamics), for labels.train_judge
   probe (the stage rerun), and for the method this replaced (cleanlab on 5-fold out-of-fold probabilities of a
   linear probe on PCA-40 of the frozen features, all 2,000 galaxies at once), in the same run;
4. the near copies found, and the other pairs reported.
Real GZ2 labels come from vote-fraction thresholds and carry their own noise, so precision against the flips is a
lower bound.

    python benchmarks/label_noise.py --out benchmarks/label_noise.json

It skips with a message when ../shared/real-galaxies is absent (CI and users do not have it).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "real-galaxies"
CATALOG = SHARED / "gz2_spiral" / "catalog.csv"
ENCODER = SHARED / "encoders" / "imagenet-efficientnet-lite0" / "model.safetensors"
STAGES = ["fetch_data", "store", "split", "finetune_gpu", "embed", "predict", "label_budget"]


def noisy_catalog(folder: Path, flip_share: float, n_copies: int, seed: int) -> tuple[Path, set[str], list[tuple]]:
    """The GZ2 catalog with `flip_share` of its labels flipped and `n_copies` near copies under new ids; returns the
    catalog's path, the flipped ids and the (original id, copy id, kind) of each copy."""
    from PIL import Image

    catalog = pd.read_csv(CATALOG, dtype={"id_str": str})
    catalog["file_loc"] = [str(CATALOG.parent / f) for f in catalog["file_loc"]]
    rng = np.random.default_rng(seed)
    flipped = rng.choice(len(catalog), int(round(flip_share * len(catalog))), replace=False)
    other = {"spiral": "non_spiral", "non_spiral": "spiral"}
    catalog.loc[flipped, "label"] = catalog.loc[flipped, "label"].map(other)
    kinds = ["jpeg_q90", "shift_4px", "brightness_1.1"]
    sources = rng.choice(np.setdiff1d(np.arange(len(catalog)), flipped), n_copies, replace=False)
    (folder / "copies").mkdir(parents=True)
    copies, rows = [], []
    for k, i in enumerate(sources):
        kind = kinds[k % len(kinds)]
        image = Image.open(catalog.at[i, "file_loc"]).convert("RGB")
        pixels = np.asarray(image)
        if kind == "shift_4px":
            image = Image.fromarray(np.roll(pixels, 4, axis=1))
        elif kind == "brightness_1.1":
            image = Image.fromarray(np.clip(pixels.astype(np.float32) * 1.1, 0, 255).astype(np.uint8))
        copy_id = f"copy{k:02d}_{catalog.at[i, 'id_str']}"
        path = folder / "copies" / f"{copy_id}.jpg"
        image.save(path, format="JPEG", quality=90)
        copies.append((catalog.at[i, "id_str"], copy_id, kind))
        rows.append({**catalog.loc[i].to_dict(), "id_str": copy_id, "file_loc": str(path)})
    catalog = pd.concat([catalog, pd.DataFrame(rows)], ignore_index=True)
    path = folder / "catalog.csv"
    catalog.to_csv(path, index=False)
    return path, set(catalog.loc[flipped, "id_str"]), copies


STAGE_ENV = {**os.environ, "PYTHONPATH": str(ROOT)}  # the stages import this checkout's package


def labelled_galaxies(project: Path) -> pd.DataFrame:
    """Every galaxy of the project's three splits (id_str, label, row, ...), with its `split`."""
    from galaxy_finetune.data.loading import read_split

    return pd.concat([read_split(project / "data/splits", s).assign(split=s) for s in ("train", "val", "test")],
                     ignore_index=True)


def finetuned_predictions(project: Path) -> pd.DataFrame:
    """The fine-tuned model's predictions of val and test (data/predictions/)."""
    from galaxy_finetune.core.files import read_table

    return pd.concat([read_table(project / f"data/predictions/{s}.csv") for s in ("val", "test")], ignore_index=True)


def run_stage(project: Path, name: str, env: dict) -> float:
    """One stage's dvc.yaml command in `project` (the package from this checkout); its wall seconds."""
    cmd = " ".join(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][name]["cmd"].split())
    start = time.perf_counter()
    args = shlex.split(cmd)
    args[0] = sys.executable if args[0] == "python" else args[0]  # this interpreter, as `dvc repro` in its venv
    proc = subprocess.run(args, cwd=project, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
    print(f"label_noise: {name} {seconds:.0f} s: " + " | ".join(tail), flush=True)
    if proc.returncode:
        raise SystemExit(f"{name} failed:\n{proc.stdout}\n{proc.stderr}")
    return seconds


def scores(flagged: pd.DataFrame, flips: set[str], labelled: pd.DataFrame) -> dict:
    """Recall and precision of `flagged` (id_str, split) against the flipped ids, overall and per split."""
    def one(f, ids):
        hit = int(f["id_str"].isin(flips).sum())
        n_flips = len(ids & flips)
        return {"flagged": int(len(f)), "flips": n_flips, "flips_flagged": hit,
                "recall": round(hit / n_flips, 3) if n_flips else None,
                "precision": round(hit / len(f), 3) if len(f) else None}

    out = one(flagged, set(labelled["id_str"]))
    out["by_split"] = {s: one(flagged[flagged["split"] == s], set(labelled.loc[labelled["split"] == s, "id_str"]))
                       for s in ("train", "val", "test")}
    return out


def rankings(project: Path, flips: set[str]) -> dict:
    """How far each judge's own ranking goes: the train split by the area under the margin and by the mean
    probability of the given label (models/finetuned/training_dynamics.csv), val and test by the fine-tuned model's
    p(given label); for each, the galaxies to flag for 75% recall and the precision there."""
    from galaxy_finetune.core.files import read_table

    def reach(score: np.ndarray, flip: np.ndarray) -> dict:
        hits = np.cumsum(flip[np.argsort(score, kind="stable")])
        k = int(np.searchsorted(hits, 0.75 * flip.sum()) + 1)
        return {"flips": int(flip.sum()), "flag_for_75pct_recall": k, "precision_there": round(hits[k - 1] / k, 3)}

    dynamics = read_table(project / "models/finetuned/training_dynamics.csv")
    flip = dynamics["id_str"].isin(flips).to_numpy()
    p_given = np.where(dynamics["label"] == 1, dynamics.iloc[:, -1], dynamics.iloc[:, -2]).astype(float)
    below = dynamics["aum"].to_numpy(float) < 0
    out = {"train_aum": {**reach(dynamics["aum"].to_numpy(float), flip), "aum_below_0": {
        "flagged": int(below.sum()), "recall": round(float((below & flip).sum() / flip.sum()), 3),
        "precision": round(float((below & flip).sum() / max(below.sum(), 1)), 3)}},
           "train_mean_p_given": reach(p_given, flip)}
    for split in ("val", "test"):
        table = read_table(project / f"data/predictions/{split}.csv")
        out[f"{split}_p_given"] = reach(table["p_true"].to_numpy(float), table["id_str"].isin(flips).to_numpy())
    return out


def variants(project: Path, labelled: pd.DataFrame, probe: np.ndarray, flips: set[str]) -> dict:
    """Other judges and cleanlab filters, scored on the same run's outputs (nothing retrained): each split's own
    judge (val/test: the fine-tuned model; train: the training dynamics) alone or averaged with the out-of-fold
    probe's probabilities (`probe`: (N, C) for `labelled`'s rows, each from a probe that never saw the row's
    label), under each of cleanlab's filters."""
    from galaxy_finetune.core.files import read_table
    from galaxy_finetune.labels.issues import Judged, dynamics_judged, find_suspects, finetuned_judged

    classes = ["non_spiral", "spiral"]
    probe_of = dict(zip(labelled["id_str"], probe))
    own = [finetuned_judged(finetuned_predictions(project), labelled[labelled["split"] != "train"], classes),
           dynamics_judged(read_table(project / "models/finetuned/training_dynamics.csv"),
                           labelled[labelled["split"] == "train"], classes)]
    oof = [np.stack([probe_of[i] for i in j.galaxies["id_str"]]) for j in own]
    out = {}
    for weight in (0.0, 0.25, 0.5):
        for filter_by in ("prune_by_noise_rate", "both", "confident_learning", "predicted_neq_given"):
            judged = [Judged(j.judge, j.galaxies, (1 - weight) * j.probs + weight * o) for j, o in zip(own, oof)]
            flagged = find_suspects(judged, classes, filter_by=filter_by)
            out[f"probe_weight_{weight}/{filter_by}"] = scores(flagged, flips, labelled)
    return out


def crossfit(project: Path, labelled: pd.DataFrame, flips: set[str], k: int, env: dict) -> dict:
    """Cross-fitted fine-tuning as the train split's judge (the option the stage does not build): k trainings, each
    on the train galaxies outside one fold (stratified, seeded), predicting that fold with the stage's own
    finetune_gpu, embed and predict commands in a copy of the project whose test split is the fold; then cleanlab's
    default filter on those out-of-sample probabilities, beside the stage's judges of val and test."""
    from sklearn.model_selection import StratifiedKFold

    from galaxy_finetune.core.files import read_table
    from galaxy_finetune.labels.issues import find_suspects, finetuned_judged

    classes = ["non_spiral", "spiral"]
    splits = project / "data/splits"
    train = read_table(splits / "train.csv")
    parts, walls = [], []
    for fold, (fit, held) in enumerate(StratifiedKFold(k, shuffle=True, random_state=0).split(train, train["label"])):
        copy = project / f"crossfit{fold}"
        trained = (copy / "models/finetuned/model.json").is_file() and (copy / "data/splits/train.csv").is_file() \
            and read_table(copy / "data/splits/train.csv")["id_str"].tolist() == train["id_str"].iloc[fit].tolist()
        if not trained:  # (a fold trained by an earlier call on this kept project is reused)
            shutil.rmtree(copy, ignore_errors=True)
            (copy / "data/splits").mkdir(parents=True)
            (copy / "models").mkdir()
            for name in ("data/raw", "data/store", "models/encoder"):
                (copy / name).symlink_to(project / name)
            shutil.copy(project / "params.yaml", copy / "params.yaml")
            train.iloc[fit].to_csv(copy / "data/splits/train.csv", index=False)
            shutil.copy(splits / "val.csv", copy / "data/splits/val.csv")
            train.iloc[held].to_csv(copy / "data/splits/test.csv", index=False)
        # predict's shift score reads the embed stage's reference of the training set
        walls.append(round(sum(run_stage(copy, name, env) for name in ("finetune_gpu", "embed", "predict")
                               if name != "finetune_gpu" or not trained), 1))
        parts.append(read_table(copy / "data/predictions/test.csv"))
    judged = [finetuned_judged(finetuned_predictions(project), labelled[labelled["split"] != "train"], classes),
              finetuned_judged(pd.concat(parts, ignore_index=True), labelled[labelled["split"] == "train"], classes)]
    return {"k": k, "wall_s": walls, "train_agreement": round(judged[1].agreement, 4),
            **scores(find_suspects(judged, classes), flips, labelled)}


def rescore(project: Path, flips: set[str], overrides: list[str]) -> dict:
    """The label_budget stage rerun on a kept project with `overrides` (key=value) set in its params.yaml (restored
    afterwards), scored against the flips."""
    from galaxy_finetune.core.files import read_table

    path = project / "params.yaml"
    before = path.read_text()
    params = yaml.safe_load(before)
    for item in overrides:
        key, value = item.split("=", 1)
        group, name = key.split(".", 1)
        params[group][name] = yaml.safe_load(value)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        wall = run_stage(project, "label_budget", STAGE_ENV)
    finally:
        path.write_text(before)
    labelled = labelled_galaxies(project)
    summary = json.loads((project / "metrics/label_budget/summary.json").read_text())
    return {"overrides": overrides, "wall_s": round(wall, 1), "judges": summary["label_issues"]["judges"],
            **scores(read_table(project / "metrics/label_budget/label_issues.csv"), flips, labelled)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flip-share", type=float, default=0.10)
    parser.add_argument("--copies", type=int, default=12)
    parser.add_argument("--input-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], help="extra params overrides, key=value (yaml values)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the scratch project here")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "label_noise.json")
    parser.add_argument("--rankings-of", type=Path, default=None,
                        help="only add the rankings of a project kept with --keep to --out (no pipeline run)")
    parser.add_argument("--rescore", type=Path, default=None,
                        help="rerun only the label_budget stage of a project kept with --keep, with --set's overrides, "
                             "and add its scores to --out under --name (no training)")
    parser.add_argument("--name", default="rescored")
    parser.add_argument("--crossfit", type=int, default=0,
                        help="with --rescore: judge the train split by K cross-fitted fine-tunings instead (K trainings)")
    args = parser.parse_args()
    kept = args.rankings_of or args.rescore
    if kept is not None:
        original = pd.read_csv(CATALOG, dtype={"id_str": str}).set_index("id_str")["label"]
        noisy = pd.read_csv(kept / "input" / "catalog.csv", dtype={"id_str": str}).set_index("id_str")["label"]
        common = noisy.index.intersection(original.index)
        flips = set(common[noisy[common] != original[common]])
        result = json.loads(args.out.read_text())
        if args.rankings_of is not None:
            result["rankings"] = shown = rankings(kept, flips)
        elif args.crossfit:
            result[args.name] = shown = crossfit(kept, labelled_galaxies(kept), flips, args.crossfit, STAGE_ENV)
        else:
            result[args.name] = shown = rescore(kept, flips, args.set)
        args.out.write_text(json.dumps(result, indent=1, default=str) + "\n")
        print(json.dumps(shown, indent=1))
        return
    if not SHARED.is_dir():
        print(f"label_noise: skipped, {SHARED} is absent (the real galaxies are only on the developers' machines)")
        return
    from benchmarks.harness import load, provenance
    from galaxy_finetune.core.files import read_table
    from galaxy_finetune.labels.budget import pca_project
    from galaxy_finetune.labels.features import frozen_features
    from galaxy_finetune.labels.issues import Judged, find_suspects, out_of_fold_probs
    from galaxy_finetune.core.files import read_model_config

    result = provenance(catalog="gz2_spiral", encoder="imagenet-efficientnet-lite0", input_size=args.input_size,
                        flip_share=args.flip_share, copies=args.copies, seed=args.seed, overrides=args.set)
    project = args.keep or Path(tempfile.mkdtemp(prefix="label-noise-"))
    project.mkdir(parents=True, exist_ok=True)
    clock = result["wall_s"] = {}
    try:
        catalog, flips, copies = noisy_catalog(project / "input", args.flip_share, args.copies, args.seed)
        params = yaml.safe_load((ROOT / "params.yaml").read_text())
        params["data"].update(source="catalog", catalog=str(catalog), classes=["non_spiral", "spiral"])
        params["fetch"]["offline"] = "error"
        params["model"]["encoder"] = str(ENCODER)
        params["train"]["input_size"] = args.input_size
        for item in args.set:
            key, value = item.split("=", 1)
            group, name = key.split(".", 1)
            params[group][name] = yaml.safe_load(value)
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        env = STAGE_ENV
        for name in STAGES:
            clock[name] = round(run_stage(project, name, env), 1)
        labelled = labelled_galaxies(project)
        summary = json.loads((project / "metrics/label_budget/summary.json").read_text())
        flagged = read_table(project / "metrics/label_budget/label_issues.csv")
        result["finetune"] = {k: v for k, v in json.loads((project / "metrics/training/metrics.json").read_text()).items()
                              if not isinstance(v, dict)} if (project / "metrics/training/metrics.json").is_file() else {}
        test = read_table(project / "data/predictions/test.csv")
        result["finetuned_test_accuracy_on_noisy_labels"] = round(float((test["true_label"] == test["pred_label"]).mean()), 4)
        result["default"] = {"judges": summary["label_issues"]["judges"], **scores(flagged, flips, labelled)}

        near = read_table(project / "metrics/label_budget/near_duplicates.csv")
        found = {frozenset(p) for p in zip(near["id_a"], near["id_b"])}
        truth = {frozenset((a, b)) for a, b, _ in copies}
        result["near_copies"] = {"copies": len(copies), "found": sum(t in found for t in truth),
                                 "found_by_kind": {k: sum(frozenset((a, b)) in found for a, b, kk in copies if kk == k)
                                                   for k in sorted({c[2] for c in copies})},
                                 "other_pairs": len(found - truth), "calibration": summary["duplicates"]["near_calibration"]}

        result["rankings"] = rankings(project, flips)

        # the train split judged by an out-of-fold probe instead: the stage rerun with labels.train_judge probe
        params["labels"]["train_judge"] = "probe"
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        clock["label_budget (train_judge probe)"] = round(run_stage(project, "label_budget", env), 1)
        probe_summary = json.loads((project / "metrics/label_budget/summary.json").read_text())
        result["train_judge_probe"] = {"judges": probe_summary["label_issues"]["judges"],
                                       **scores(read_table(project / "metrics/label_budget/label_issues.csv"), flips,
                                                labelled)}

        # the method this replaced: one out-of-fold probe on frozen features judging every label
        start = time.perf_counter()
        features = frozen_features(project / "models/encoder", read_model_config(project / "models/finetuned"),
                                   project / "data/store", labelled["row"], 64)
        train = np.flatnonzero(labelled["split"].to_numpy() == "train")
        x = pca_project(features[train], features, 40)
        probs = out_of_fold_probs(x, labelled["label"].to_numpy(int), 2, 5)
        old = find_suspects([Judged("probe", labelled, probs)], ["non_spiral", "spiral"])
        clock["previous method (OOF probe on all)"] = round(time.perf_counter() - start, 1)
        result["previous_method"] = {"oof_accuracy_vs_given": round(float(np.mean(probs.argmax(1) == labelled["label"])), 4),
                                     **scores(old, flips, labelled)}
        result["variants"] = variants(project, labelled, probs, flips)
        result["load_end"] = load()
    finally:
        if args.keep is None:
            shutil.rmtree(project, ignore_errors=True)
    args.out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    sys.exit(main())
