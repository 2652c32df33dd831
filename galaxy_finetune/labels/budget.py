"""The label_budget stage's work: from the labelled galaxies and the fine-tuned model to metrics/label_budget/.

- label_issues.csv: the labels that look wrong, each judged by a model that did not learn it (labels/issues.py:
  the fine-tuned model's predictions for val and test, the run's training dynamics or an out-of-fold probe for
  train), most suspect first, with the judge's name;
- near_duplicates.csv: near copies (data/duplicates.py): pairs the encoder's features propose (at least as alike
  as the run's own measured near copies, on the starting encoder's features when pretrained, else on the
  fine-tuned encoder's), each confirmed on the stored pixels (`proof`);
- learning_curve.csv (+ learning_curve_runs.csv), active_learning.csv and active_learning_mean.csv: the linear probe
  on a PCA of the pretrained starting encoder's frozen features, over nested class-balanced budgets and against
  random labelling, beside its distance from the fine-tuned model on the same val split. With a random-init
  encoder the probe means nothing and these files hold only their header (the summary says why). How many labels
  reach a target comes from the fine-tuned model's own curve (galaxy-label-curve), never from this probe;
- summary.json (a DVC metric) and report.md: the same, saying what each figure stands on.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from galaxy_finetune.core.accelerator import torch_device
from galaxy_finetune.core.classes import read_classes
from galaxy_finetune.core.files import atomic_path, read_model_config, read_table, write_json
from galaxy_finetune.core.layout import SPLIT_DUPLICATES
from galaxy_finetune.core.neighbours import unit_rows
from galaxy_finetune.core.params import LabelsParams
from galaxy_finetune.core.task import read_task
from galaxy_finetune.data.duplicates import PROOF_SAMPLE, find_near_copies, near_copies, near_warning
from galaxy_finetune.data.encoder import encoder_record
from galaxy_finetune.data.loading import read_split
from galaxy_finetune.data.store import galaxy_pixels
from galaxy_finetune.inference.embeddings import fit_pca
from galaxy_finetune.labels.curve import learning_curve
from galaxy_finetune.labels.features import frozen_encoder, pixel_features, store_features
from galaxy_finetune.labels.issues import (ISSUE_COLUMNS, Judged, dynamics_judged, find_suspects, finetuned_judged,
                                           issues_record, judge_records, judges_sentence, probe_judged)
from galaxy_finetune.labels.simulate import label_saving, simulate_active
from galaxy_finetune.training.dynamics import DYNAMICS_FILE
from galaxy_finetune.training.model_io import load_finetuned
from galaxy_finetune.training.probe import fit_linear_probe, stratified_sample
from galaxy_finetune.training.recipe import is_pretrained

LEARNER = "linear probe on a PCA of the pretrained starting encoder's frozen features"
RANDOM_INIT = ("the starting encoder is a random init: a probe on its features says nothing about what the "
               "fine-tuned model needs, so the probe's learning curve and acquisition simulation are not computed. "
               "The fine-tuned model's own curve: `dvc exp run --queue -S split.train_per_class=N` for a few N, "
               "`dvc queue start`, then `galaxy-label-curve`")
COPY_SAMPLE = 150  # galaxies copied four ways to measure the cosine at which features propose near copies
CURVE_COLUMNS = ["per_class", "n_labels", "accuracy", "ci_low", "ci_high", "seed_std", "seeds"]


@dataclass
class Evidence:
    """What the label budget stands on besides the labelled galaxies and their features."""
    pretrained: bool  # the starting encoder: pretrained weights, or a random init
    features: str  # what the features are (said in the near-duplicate record)
    judged: list[Judged]  # each split's judge of the labels
    not_judged: str | None  # labels no judge looked at, and why
    finetuned_val_accuracy: float | None  # the fine-tuned model on the val split (data/predictions/val.csv)
    copy_cosines: dict  # {kind: cosine of each measured near copy with its original}
    near_cosine: float | None = None  # labels.near_duplicate_cosine set by hand (None: measured)
    train_labels: int | None = None  # labels in the train split, all of them (None: the train galaxies given)
    pixels: Callable[[np.ndarray], np.ndarray] | None = None  # the stored pixels of galaxies (by position)


def pca_project(train: np.ndarray, everything: np.ndarray, components: int) -> np.ndarray:
    """`everything` projected on a PCA fitted on `train` (unsupervised: no label is used)."""
    return fit_pca(train, components).transform(everything.astype(np.float32)).astype(np.float32)


def budget_sample(galaxies: pd.DataFrame, limit: int, seed: int = 0) -> pd.DataFrame:
    """At most `limit` of the labelled galaxies (0: all), each (split, class) keeping its share: what bounds the
    stage's cost (the encoder pass, the pairwise near-duplicate search) whatever the catalog's size."""
    if not limit or len(galaxies) <= limit:
        return galaxies
    key = pd.factorize(galaxies["split"].astype(str) + "/" + galaxies["label"].astype(str))[0]
    return galaxies.iloc[stratified_sample(key, limit, seed)].reset_index(drop=True)


def label_budget(galaxies: pd.DataFrame, features: np.ndarray, classes: list[str], params: LabelsParams,
                 out_dir: Path, evidence: Evidence, splits_dir: Path | None = None, bootstrap_samples: int = 1000,
                 n_labelled: int | None = None) -> dict:
    """Every label-budget output for `galaxies` (id_str, split, label, row; row i of `features`) into `out_dir`
    (all or nothing); returns the summary."""
    clock = {}
    split = galaxies["split"].to_numpy()
    idx = {name: np.flatnonzero(split == name) for name in ("train", "val", "test")}
    y = galaxies["label"].to_numpy(int)
    n_classes = len(classes)
    with warnings.catch_warnings():  # library chatter (scipy's covariance, sklearn's iterations): nothing to act on
        warnings.simplefilter("ignore")
        if evidence.pretrained:
            start = time.perf_counter()
            x = pca_project(features[idx["train"]], features, params.pca_components)
            learner = learner_part(x, y, idx, n_classes, params, bootstrap_samples, evidence.finetuned_val_accuracy)
            clock["learner_s"] = time.perf_counter() - start
        else:
            learner = {"summary": {"learner": None, "note": RANDOM_INIT},
                       "curve": pd.DataFrame(columns=CURVE_COLUMNS), "runs": pd.DataFrame(columns=CURVE_COLUMNS),
                       "rounds": pd.DataFrame(columns=["strategy", "seed", "n_labels", "accuracy"]),
                       "mean": pd.DataFrame(columns=["n_labels", "random", *params.acquisition]), "saving": None}

        start = time.perf_counter()
        suspects = find_suspects(evidence.judged, classes, params.filter_by)
        clock["label_issues_s"] = time.perf_counter() - start

        start = time.perf_counter()
        calibration = np.sort(np.random.default_rng(1).choice(len(galaxies), min(PROOF_SAMPLE, len(galaxies)),
                                                              replace=False))
        near_record, pairs = find_near_copies(features, evidence.copy_cosines, evidence.pixels, calibration,
                                              evidence.features, evidence.near_cosine)
        ids = galaxies["id_str"].to_numpy()
        near = pd.DataFrame({"id_a": ids[pairs["i"]], "split_a": split[pairs["i"]], "id_b": ids[pairs["j"]],
                             "split_b": split[pairs["j"]], "similarity": pairs["similarity"],
                             "proof": pairs["proof"]})
        clock["near_duplicates_s"] = time.perf_counter() - start
    exact = 0
    if splits_dir is not None and (Path(splits_dir) / SPLIT_DUPLICATES).is_file():
        exact = len(read_table(Path(splits_dir) / SPLIT_DUPLICATES))
    n_all = int(n_labelled or len(galaxies))
    summary = {
        **learner["summary"], "metric": params.metric,
        # the galaxies the probe and the duplicate search used, of the labelled ones (labels.max_galaxies)
        "galaxies": {"used": int(len(galaxies)), "labelled": n_all},
        "n_train": int(len(idx["train"])), "n_val": int(len(idx["val"])), "n_test": int(len(idx["test"])),
        # the labels this run trained on (a point of the fine-tuned learning curve: galaxy-label-curve)
        "train_labels": int(evidence.train_labels if evidence.train_labels is not None else len(idx["train"])),
        "finetuned_val_accuracy": evidence.finetuned_val_accuracy,
        "label_issues": issues_record(suspects, sum(len(j.galaxies) for j in evidence.judged) or n_all,
                                      judge_records(evidence.judged, suspects), evidence.not_judged,
                                      params.filter_by),
        "duplicates": {"exact": int(exact), "near": None if near_record["threshold"] is None else int(len(near)),
                       "near_threshold_cosine": near_record["threshold"], "near_calibration": near_record},
        "wall_s": {k: round(v, 2) for k, v in clock.items()},
    }
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        learner["curve"].to_csv(tmp / "learning_curve.csv", index=False)
        learner["runs"].to_csv(tmp / "learning_curve_runs.csv", index=False)
        learner["rounds"].to_csv(tmp / "active_learning.csv", index=False)
        learner["mean"].to_csv(tmp / "active_learning_mean.csv", index=False)
        suspects.to_csv(tmp / "label_issues.csv", index=False)
        near.to_csv(tmp / "near_duplicates.csv", index=False)
        write_json(tmp / "summary.json", summary)
        (tmp / "report.md").write_text(report_markdown(summary, learner["curve"], learner["saving"]))
    line = near_warning(near, near_record["threshold"], Path(out_dir) / "near_duplicates.csv")
    if line:
        warnings.warn(line)
    return summary


def learner_part(x: np.ndarray, y: np.ndarray, idx: dict, n_classes: int, params: LabelsParams,
                 bootstrap_samples: int, finetuned_val_accuracy: float | None) -> dict:
    """The probe's learning curve and acquisition simulation on PCA features `x`, and how far the probe is from the
    fine-tuned model on the same val split (with every training label)."""
    tr, va, te = idx["train"], idx["val"], idx["test"]
    runs, curve = learning_curve(x[tr], y[tr], x[va], y[va], x[te], y[te], n_classes, params.per_class,
                                 params.seeds, params.metric, bootstrap_samples)
    probe = fit_linear_probe(x[tr], y[tr], x[va], y[va], n_classes)
    learner_val = float(np.mean(probe.logits(x[va]).argmax(1) == y[va])) if len(va) else None
    strategies = ["random", *params.acquisition]
    start_per_class = min(params.al_start_per_class, int(np.bincount(y[tr], minlength=n_classes).min()))
    rounds = simulate_active(x[tr], y[tr], x[te], y[te], n_classes, probe.C, strategies, params.seeds,
                             start_per_class, params.al_batch, params.al_budget, passes=params.mc_passes)
    saving = label_saving(rounds)
    mean = rounds.groupby(["n_labels", "strategy"])["accuracy"].mean().unstack("strategy")[strategies]
    gap = (None if learner_val is None or finetuned_val_accuracy is None
           else round(finetuned_val_accuracy - learner_val, 4))
    summary = {
        "learner": LEARNER, "learner_val_accuracy": None if learner_val is None else round(learner_val, 4),
        "finetuned_minus_learner_val_accuracy": gap,
        "note": (f"the probe is {gap:+.1%} from the fine-tuned model on val: its curve and simulation describe a "
                 f"{'weaker' if gap > 0 else 'comparable'} learner; labels for a target come from the fine-tuned "
                 f"curve (galaxy-label-curve)") if gap is not None else None,
        "curve": {str(r.per_class): getattr(r, params.metric) for r in curve.itertuples()},
        # null, not NaN (not JSON), where a strategy never reached random's accuracy
        "active_learning": {r.strategy: {"final_accuracy": r.final_accuracy,
                                         "label_saving": None if pd.isna(r.label_saving) else r.label_saving,
                                         "labels_to_match_random": (None if pd.isna(r.labels_to_match_random)
                                                                    else r.labels_to_match_random)}
                            for r in saving.itertuples()},
        "active_learning_budget": int(rounds["n_labels"].max()),
    }
    return {"summary": summary, "curve": curve, "runs": runs, "rounds": rounds, "mean": mean.round(4).reset_index(),
            "saving": saving}


def report_markdown(summary: dict, curve: pd.DataFrame, saving: pd.DataFrame | None) -> str:
    """report.md: each part with what it stands on."""
    metric, issues, dup = summary["metric"], summary["label_issues"], summary["duplicates"]
    lines = ["# The label budget", "", "## Labels that look wrong", "",
             f"{issues['n_flagged']} of {issues['n_labelled']} judged labels flagged by cleanlab. "
             + judges_sentence(issues), "", "## Duplicates", ""]
    near = dup["near_calibration"]
    lines += [f"{dup['exact']} galaxies with identical pixels. " + (
        near["why"][0].upper() + near["why"][1:] + "." if near["threshold"] is None else
        f"{dup['near']} near copies: {near['candidates']} candidate pairs at cosine >= {near['threshold']} on "
        f"{near['features']} (the cosine 99% of {near['copies']} measured near copies of this run's galaxies reach), "
        f"each proved on the stored pixels ({near['proof']}); {near['confirmed']} confirmed, {near['rejected']} "
        f"rejected. The proof passed its calibration on {near['calibration_galaxies']} of the run's galaxies: "
        + ", ".join(f"{k} {v:.0%}" for k, v in near["passed"].items()) + " passed."), ""]
    lines += ["## How many labels, and which next", ""]
    if summary["learner"] is None:
        return "\n".join(lines + [summary["note"] + ".", ""])
    lines += [f"Learner: {summary['learner']}; on val it reaches {summary['learner_val_accuracy']:.1%}"
              + (f" where the fine-tuned model reaches {summary['finetuned_val_accuracy']:.1%}"
                 if summary["finetuned_val_accuracy"] is not None else "")
              + ". Its curve is a lower bound of fine-tuning; labels for a target come from the fine-tuned model's "
                "own curve (`galaxy-label-curve`).", "",
              f"Test {metric} with a 95% bootstrap CI over the {summary['n_test']} test galaxies, averaged over the "
              "seeds' nested budgets.", "",
              f"| labels per class | labels | {metric} | 95% CI | seed spread (sd) |", "|---|---|---|---|---|"]
    lines += [f"| {r.per_class} | {r.n_labels} | {getattr(r, metric):.1%} | {r.ci_low:.1%}-{r.ci_high:.1%} | "
              f"{r.seed_std:.3f} |" for r in curve.itertuples()]
    lines += ["", "Acquisition against random labelling, the same learner:", "",
              "| strategy | final accuracy | labels to match random at the budget | label saving |", "|---|---|---|---|"]
    never = "never (it did not reach random's accuracy)"
    lines += [f"| {r.strategy} | {r.final_accuracy:.1%} | "
              f"{never if pd.isna(r.labels_to_match_random) else f'{r.labels_to_match_random:g}'} | "
              f"{'-' if pd.isna(r.label_saving) else f'{r.label_saving:.1%}'} |" for r in saving.itertuples()]
    return "\n".join(lines + [""])


def not_applicable(task_kind: str, out_dir: Path) -> dict:
    """metrics/label_budget/ for a regression or votes run: the label budget's learner, acquisition scores and
    label checks are per class, so the folder says so (summary.json, report.md) and holds an empty
    label_issues.csv, the file analyse reads."""
    note = (f"the label budget (learning curve, acquisition, label checks) is for classification; this run's "
            f"train.task is {task_kind}")
    summary = {"learner": None, "task": task_kind, "note": note}
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        pd.DataFrame(columns=ISSUE_COLUMNS).to_csv(tmp / "label_issues.csv", index=False)
        write_json(tmp / "summary.json", summary)
        (tmp / "report.md").write_text(f"# The label budget\n\nNot computed: {note}.\n")
    return summary


def run_label_budget(raw_dir: Path, store_dir: Path, splits_dir: Path, encoder_dir: Path, model_dir: Path,
                     predictions_dir: Path, out_dir: Path, params) -> dict:
    """The label_budget stage: gather the evidence (features, each split's judge, measured near copies) for the
    labelled galaxies of a classification run, then label_budget(); a regression or votes run gets not_applicable."""
    task = read_task(raw_dir)
    if not task.by_class:  # wrong labels, per-class curves and acquisition need a class per galaxy
        return not_applicable(task.kind, out_dir)
    labels = params.labels
    classes = read_classes(raw_dir)
    labelled = pd.concat([read_split(splits_dir, name).assign(split=name) for name in ("train", "val", "test")],
                         ignore_index=True)
    galaxies = budget_sample(labelled, labels.max_galaxies)
    config = read_model_config(model_dir)
    pretrained = is_pretrained(encoder_record(encoder_dir))
    device = torch_device(params.train.accelerator)
    if pretrained:
        encoder, described = frozen_encoder(encoder_dir, device), "the pretrained starting encoder's features"
    else:
        encoder = load_finetuned(model_dir)[0].encoder.to(device).eval()
        described = "the fine-tuned encoder's features (the starting encoder is a random init)"
    features = store_features(encoder, config, store_dir, galaxies["row"], labels.batch_size, device)
    sample = np.sort(np.random.default_rng(0).choice(len(galaxies), min(COPY_SAMPLE, len(galaxies)), replace=False))

    originals = unit_rows(features[sample])
    copy_cosines = {kind: (unit_rows(pixel_features(encoder, config, pixels, labels.batch_size, device))
                           * originals).sum(1)
                    for kind, pixels in near_copies(galaxy_pixels(store_dir, galaxies["row"].to_numpy()[sample])).items()}

    predictions = {name: read_table(predictions_dir / f"{name}.csv") for name in ("val", "test")}
    judged = [finetuned_judged(pd.concat(predictions.values(), ignore_index=True),
                               labelled[labelled["split"] != "train"], classes)]
    train = labelled[labelled["split"] == "train"]
    not_judged = None
    if labels.train_judge == "dynamics":
        path = model_dir / DYNAMICS_FILE
        if path.is_file():
            judged.append(dynamics_judged(read_table(path), train, classes))
        else:
            not_judged = (f"train: not judged, {path} is absent (a model trained before training dynamics were "
                          f"recorded); rerun finetune_gpu")
    elif labels.train_judge == "probe" and pretrained:
        sampled_train = galaxies[galaxies["split"] == "train"]
        x = pca_project(features[sampled_train.index], features[sampled_train.index], labels.pca_components)
        judged.append(probe_judged(x, sampled_train, len(classes), labels.issue_folds))
    elif labels.train_judge == "probe":
        not_judged = "train: not judged, a probe on a random init's features cannot judge labels"
    else:
        not_judged = "train: not judged (labels.train_judge: none)"
    val = predictions["val"]
    evidence = Evidence(pretrained, described, judged, not_judged,
                        round(float((val["true_label"] == val["pred_label"]).mean()), 4) if len(val) else None,
                        copy_cosines, None if labels.near_duplicate_cosine == "auto" else labels.near_duplicate_cosine,
                        train_labels=len(train),
                        pixels=lambda at: galaxy_pixels(store_dir, galaxies["row"].to_numpy()[at]))
    return label_budget(galaxies, features, classes, labels, out_dir, evidence, splits_dir,
                        params.analyse.bootstrap_samples, n_labelled=len(labelled))


def summary_line(s: dict) -> str:
    """The stage's closing line: what was flagged and by which judges, near duplicates, the learner."""
    if "label_issues" not in s:
        return f"label_budget: {s['note']}: nothing to do"
    issues, dup = s["label_issues"], s["duplicates"]
    judges = ", ".join(f"{'/'.join(r['splits'])} by {name} ({r['agreement']:.1%} agreement, {r['n_flagged']} flagged, "
                       f"~{r['expected_by_chance']} disagreements by chance)" for name, r in issues["judges"].items())
    near = (dup["near_calibration"]["why"] if dup["near"] is None else
            f"{dup['near']} near copies ({dup['near_calibration']['candidates']} candidate pairs at cosine >= "
            f"{dup['near_threshold_cosine']}, proved on the stored pixels)")
    if s["learner"] is None:
        learner = "learning curve and acquisition: not computed (random-init encoder)"
    else:
        gap = s["finetuned_minus_learner_val_accuracy"]
        learner = ("probe learning curve " + ", ".join(f"{k}/class {v:.1%}" for k, v in s["curve"].items())
                   + (f" (the fine-tuned model is {gap:+.1%} above the probe on val)" if gap is not None else ""))
    return (f"label_budget: {issues['n_flagged']} of {issues['n_labelled']} labels look wrong ({judges}"
            + (f"; {issues['not_judged']}" if issues["not_judged"] else "") + f"); {dup['exact']} identical-pixel "
            f"duplicates, {near}; {learner}; {sum(s['wall_s'].values()):.1f} s")
