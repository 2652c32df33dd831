"""Which given labels look wrong: confident learning (cleanlab) on probabilities from the best judge of each label.

A label may only be judged by a model that did not learn from it, so each split has its own judge:
- val and test: the fine-tuned model's own predictions (data/predictions/): it never trained on those labels, and
  it is the model the user has;
- train (labels.train_judge): `dynamics`, the fine-tuning run's training dynamics (training/dynamics.py: each
  galaxy's probabilities averaged over the steps that trained on it; a wrong label is hard to fit, Pleiss et al.
  2020); or `probe`, out-of-fold probabilities of a logistic regression on the starting encoder's frozen features
  (stratified k-fold: each galaxy predicted by the probe fitted on the other folds, so it never saw that label;
  pretrained encoders only); or `none`.
cleanlab's `find_label_issues` (prune by the estimated noise rates of the confident joint) runs on each judge's
galaxies apart (their probabilities are calibrated differently) and flags the labels the judge contradicts; they
are ranked by cleanlab's label quality (normalized margin), most suspect first. Each judge's record says what it
is, how often it agrees with the given labels, and how many disagreements its own error rate alone would give
if every label were right. A flag is a prompt to look again, not a verdict.
"""
from __future__ import annotations

import base64
import html
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from galaxy_finetune.core.files import read_json, read_table
from galaxy_finetune.core.gallery import thumbnail_png
from galaxy_finetune.core.stats import log_loss
from galaxy_finetune.data.store import galaxy_pixels

ISSUE_COLUMNS = ["rank", "id_str", "split", "given_label", "suggested_label", "p_given", "p_suggested", "quality",
                 "row", "judge"]
JUDGES = {
    "finetuned": "the fine-tuned model's out-of-sample predictions (it never trained on these labels)",
    "dynamics": "the fine-tuning run's training dynamics (each galaxy's probabilities averaged over the steps that "
                "trained on it; a wrong label is hard to fit: Pleiss et al. 2020)",
    "probe": "out-of-fold probabilities of a linear probe on the starting encoder's frozen features (each galaxy "
             "predicted by a probe fitted on the other folds)",
}


@dataclass
class Judged:
    """Galaxies (id_str, split, label, row) and the (N, C) probabilities one judge gives them."""
    judge: str
    galaxies: pd.DataFrame
    probs: np.ndarray
    folds: np.ndarray | None = None  # probe: the fold each galaxy was held out in

    @property
    def agreement(self) -> float:
        labels = self.galaxies["label"].to_numpy(int)
        return float(np.mean(self.probs.argmax(1) == labels)) if len(labels) else float("nan")


def class_probs(frame: pd.DataFrame, classes: list[str]) -> np.ndarray:
    """The (N, C) p_<class> columns of a predictions or training-dynamics table, in the classes' order."""
    missing = [f"p_{c}" for c in classes if f"p_{c}" not in frame.columns]
    if missing:
        raise ValueError(f"no column(s) {missing}: the table was written for other classes")
    return frame[[f"p_{c}" for c in classes]].to_numpy(float)


def finetuned_judged(predictions: pd.DataFrame, galaxies: pd.DataFrame, classes: list[str]) -> Judged:
    """The fine-tuned model's predictions (data/predictions/{val,test}.csv rows, by id_str) of `galaxies`."""
    by_id = predictions.set_index("id_str")
    missing = ~galaxies["id_str"].isin(by_id.index)
    if missing.any():
        raise ValueError(f"{int(missing.sum())} galaxies have no prediction, e.g. {galaxies['id_str'][missing].iloc[0]!r}")
    return Judged("finetuned", galaxies.reset_index(drop=True), class_probs(by_id.loc[galaxies["id_str"]], classes))


def dynamics_judged(dynamics: pd.DataFrame, galaxies: pd.DataFrame, classes: list[str]) -> Judged:
    """The training dynamics (models/finetuned/training_dynamics.csv) of the training `galaxies` that training saw
    (a galaxy no step trained on has no record and is left out)."""
    by_id = dynamics[dynamics["seen"] > 0].set_index("id_str")
    kept = galaxies[galaxies["id_str"].isin(by_id.index)].reset_index(drop=True)
    return Judged("dynamics", kept, class_probs(by_id.loc[kept["id_str"]], classes))


def probe_judged(features: np.ndarray, galaxies: pd.DataFrame, n_classes: int, folds: int = 5,
                 seed: int = 0) -> Judged:
    """Out-of-fold probe probabilities of `galaxies` (row i: features[i])."""
    probs, fold_of = out_of_fold_probs(features, galaxies["label"].to_numpy(int), n_classes, folds, seed,
                                       return_folds=True)
    return Judged("probe", galaxies.reset_index(drop=True), probs, fold_of)


def out_of_fold_probs(features: np.ndarray, labels: np.ndarray, n_classes: int, folds: int = 5, seed: int = 0,
                      C: float | None = None, return_folds: bool = False, fold_of: np.ndarray | None = None):
    """(N, C) probabilities of each row from a logistic regression that never saw the row's label: fitted on the
    other folds (stratified k-fold, folds capped by the smallest class), its strength C (None: picked from the
    probe's grid by held-out log loss within those other folds alone). With `return_folds` also the (N,) fold each
    row was held out in; `fold_of` reuses a fold assignment."""
    labels = np.asarray(labels, int)
    folds = int(min(folds, np.bincount(labels, minlength=n_classes)[np.unique(labels)].min()))
    if folds < 2:
        raise ValueError("every class needs at least 2 labelled galaxies for out-of-fold probabilities")
    if fold_of is None:
        fold_of = np.full(len(labels), -1)
        for k, (_, held) in enumerate(_stratified(folds, seed).split(features, labels)):
            fold_of[held] = k
    fold_of = np.asarray(fold_of, int)
    probs = np.zeros((len(labels), n_classes))
    with warnings.catch_warnings():  # a probe that stops at max_iter is still a fine judge; nothing to act on
        warnings.simplefilter("ignore")
        for k in np.unique(fold_of):
            fit_idx, held = np.flatnonzero(fold_of != k), np.flatnonzero(fold_of == k)
            strength = C if C is not None else _pick_C(features[fit_idx], labels[fit_idx], folds, seed)
            model = _logistic(strength).fit(features[fit_idx], labels[fit_idx])
            probs[np.ix_(held, model.classes_)] = model.predict_proba(features[held])
    return (probs, fold_of) if return_folds else probs


def _stratified(folds: int, seed: int):
    from sklearn.model_selection import StratifiedKFold

    return StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)


def _logistic(C: float):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, max_iter=2000)


def _pick_C(features: np.ndarray, labels: np.ndarray, folds: int, seed: int) -> float:
    """The probe grid's C with the lowest log loss on one held-out fold of these rows alone."""
    from galaxy_finetune.training.probe import C_GRID  # deferred: torch, which the analyse stage does not need

    smallest = np.bincount(labels)[np.unique(labels)].min()
    fit_idx, held = next(_stratified(int(max(2, min(folds, smallest))), seed).split(features, labels))
    losses = [log_loss(labels[held], _logistic(c).fit(features[fit_idx], labels[fit_idx]).predict_proba(features[held]),
                       labels=np.unique(labels[fit_idx])) for c in C_GRID]
    return C_GRID[int(np.argmin(losses))]


def find_suspects(judged: list[Judged], classes: list[str], filter_by: str = "prune_by_noise_rate") -> pd.DataFrame:
    """The label issues cleanlab finds (its `filter_by`) in each judge's galaxies (id_str, label, split, row), all
    judges together ranked by label quality, most suspect first, with the label the judge suggests instead
    (ISSUE_COLUMNS)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    names = np.asarray(classes)
    parts = []
    for j in judged:
        labels = j.galaxies["label"].to_numpy(int)
        if len(labels) < 2 or len(np.unique(labels)) < 2:
            continue
        with warnings.catch_warnings():  # cleanlab warns of classes with few examples; the record says how many
            warnings.simplefilter("ignore")
            flagged = find_label_issues(labels, j.probs, filter_by=filter_by, n_jobs=1)
            quality = get_label_quality_scores(labels, j.probs, method="normalized_margin")
        rows = np.flatnonzero(flagged)
        suggested = j.probs[rows].argmax(1)
        parts.append(pd.DataFrame({
            "id_str": j.galaxies["id_str"].to_numpy()[rows], "split": j.galaxies["split"].to_numpy()[rows],
            "given_label": names[labels[rows]], "suggested_label": names[suggested],
            "p_given": np.round(j.probs[rows, labels[rows]], 4), "p_suggested": np.round(j.probs[rows, suggested], 4),
            "quality": np.round(quality[rows], 4), "row": j.galaxies["row"].to_numpy()[rows], "judge": j.judge}))
    frame = (pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=ISSUE_COLUMNS[1:]))
    frame = frame.sort_values(["quality", "id_str"], kind="stable").reset_index(drop=True)
    frame.insert(0, "rank", np.arange(1, len(frame) + 1))
    return frame[ISSUE_COLUMNS]


def judge_records(judged: list[Judged], suspects: pd.DataFrame, accuracy: dict[str, float] | None = None) -> dict:
    """Per judge: what it is, which splits it judged, its galaxies, how often its prediction agrees with the given
    label (or `accuracy[judge]`, measured elsewhere), the disagreements that agreement alone gives if every label is
    right (expected_by_chance), and the flags cleanlab raised."""
    out = {}
    for j in judged:
        agree = (accuracy or {}).get(j.judge, j.agreement)
        n = len(j.galaxies)
        out[j.judge] = {"method": JUDGES[j.judge], "splits": sorted(j.galaxies["split"].unique().tolist()),
                        "galaxies": int(n), "agreement": round(agree, 4),
                        "expected_by_chance": int(round((1 - agree) * n)),
                        "n_flagged": int((suspects["judge"] == j.judge).sum())}
    return out


def issues_record(suspects: pd.DataFrame, n_labelled: int, judges: dict, not_judged: str | None = None,
                  filter_by: str = "prune_by_noise_rate") -> dict:
    """metrics.json's label_issues: how many labels look wrong, by which judge, and what that rests on."""
    return {"n_flagged": int(len(suspects)), "n_labelled": int(n_labelled),
            "share": round(len(suspects) / n_labelled, 4) if n_labelled else None,
            "method": f"cleanlab find_label_issues ({filter_by}) on each judge's probabilities",
            "judges": judges, "not_judged": not_judged,
            "most_suspect": suspects["id_str"].head(3).tolist()}


def judges_sentence(record: dict) -> str:
    """One sentence per judge: what judged which split, its agreement with the given labels, and the flags
    against what its own errors alone would give."""
    parts = [f"{', '.join(r['splits'])}: {r['method']}, agreeing with {r['agreement']:.1%} of the {r['galaxies']} "
             f"given labels (so about {r['expected_by_chance']} disagreements even if every label were right); "
             f"{r['n_flagged']} flagged" for r in record["judges"].values()]
    if record.get("not_judged"):
        parts.append(record["not_judged"])
    return ". ".join(parts) + "."


def suspects_html(suspects: pd.DataFrame, thumbnails: dict[str, bytes], record: dict, shown: int = 60) -> list[str]:
    """The errors page's "labels that look wrong" section (its heading has id suspect-labels): a card per flagged
    galaxy (thumbnail, id, split, given and suggested label), most suspect first, at most `shown` of them; `record`:
    summary.json's label_issues (what judged which split)."""
    esc = html.escape
    parts = [f'<h2 id="suspect-labels">Labels that look wrong: {len(suspects)} labelled galax'
             f"{'y' if len(suspects) == 1 else 'ies'} flagged</h2>",
             f'<p class="note">Confident learning (cleanlab). {html.escape(judges_sentence(record))} Most suspect '
             f"first{'' if len(suspects) <= shown else f'; the first {shown} shown, all in metrics/label_budget/label_issues.csv'}"
             ". A flag asks for a second look; it is not a verdict.</p>", '<div class="cell">']
    for row in suspects.head(shown).itertuples():
        image = base64.b64encode(thumbnails[row.id_str]).decode("ascii")
        parts.append(f'<div class="mistake suspect" data-id="{esc(row.id_str)}" data-given="{esc(row.given_label)}" '
                     f'data-suggested="{esc(row.suggested_label)}"><img alt="galaxy {esc(row.id_str)}" '
                     f'src="data:image/png;base64,{image}"><b>{esc(row.id_str)}</b> ({esc(row.split)})<table>'
                     f'<tr class="pred"><td>given {esc(row.given_label)}</td><td class="p">{row.p_given:.3f}</td></tr>'
                     f'<tr class="true"><td>suggested {esc(row.suggested_label)}</td><td class="p">'
                     f"{row.p_suggested:.3f}</td></tr></table></div>")
    parts.append("</div>")
    return parts


def errors_page_section(label_budget_dir, store_dir, shown: int = 60) -> tuple[dict, tuple[str, str, list[str]]]:
    """What the analyse stage takes from metrics/label_budget/: metrics.json's `label_issues` and `duplicates`,
    and the errors page's section of labels that look wrong (thumbnails from the store)."""
    folder = Path(label_budget_dir)
    summary = read_json(folder / "summary.json")
    suspects = read_table(folder / "label_issues.csv")
    head = suspects.head(shown)
    pixels = galaxy_pixels(store_dir, head["row"].tolist()) if len(head) else []
    thumbnails = {i: thumbnail_png(p) for i, p in zip(head["id_str"], pixels)}
    return ({"label_issues": summary["label_issues"], "duplicates": summary["duplicates"]},
            ("suspect-labels", f"labels that look wrong ({len(suspects)})", suspects_html(suspects, thumbnails, summary["label_issues"], shown)))
