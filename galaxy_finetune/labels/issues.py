"""Which given labels look wrong: confident learning (cleanlab) on out-of-fold predicted probabilities.

Every labelled galaxy gets class probabilities from a probe (a logistic regression on frozen pretrained encoder
features) that never saw its label: stratified k-fold, each fold predicted by the probe fitted on the others.
cleanlab's `find_label_issues` (prune by the estimated noise rates of the confident joint) flags the galaxies
whose given label the others contradict; they are ranked by cleanlab's label quality (normalized margin), most
suspect first. A flag is a prompt to look again, not a verdict: the probe's own mistakes look alike.
"""
from __future__ import annotations

import base64
import html

import numpy as np
import pandas as pd

from galaxy_finetune.training.probe import C_GRID

ISSUE_COLUMNS = ["rank", "id_str", "split", "given_label", "suggested_label", "p_given", "p_suggested", "quality",
                 "row"]


def out_of_fold_probs(features: np.ndarray, labels: np.ndarray, n_classes: int, folds: int = 5, seed: int = 0,
                      C: float | None = None) -> np.ndarray:
    """(N, C) probabilities of each row from a logistic regression fitted on the other folds (stratified k-fold;
    folds capped by the smallest class). C: the regression's strength; None picks it from the probe's grid by
    out-of-fold log loss of a first fold split."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels, int)
    folds = int(min(folds, np.bincount(labels, minlength=n_classes)[np.unique(labels)].min()))
    if folds < 2:
        raise ValueError("every class needs at least 2 labelled galaxies for out-of-fold probabilities")
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    if C is None:
        fit_idx, held = next(splitter.split(features, labels))
        losses = []
        for c in C_GRID:
            model = LogisticRegression(C=c, max_iter=2000).fit(features[fit_idx], labels[fit_idx])
            p = np.clip(model.predict_proba(features[held]), 1e-12, 1)
            cols = np.searchsorted(model.classes_, labels[held])
            losses.append(-np.log(p[np.arange(len(held)), np.clip(cols, 0, p.shape[1] - 1)]).mean())
        C = C_GRID[int(np.argmin(losses))]
    probs = np.zeros((len(labels), n_classes))
    for fit_idx, held in splitter.split(features, labels):
        model = LogisticRegression(C=C, max_iter=2000).fit(features[fit_idx], labels[fit_idx])
        probs[np.ix_(held, model.classes_)] = model.predict_proba(features[held])
    return probs


def find_suspects(galaxies: pd.DataFrame, probs: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """The label issues cleanlab finds among `galaxies` (id_str, label, split, row) given out-of-fold `probs`,
    most suspect first, with the label the probe suggests instead (columns ISSUE_COLUMNS)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    labels = galaxies["label"].to_numpy(int)
    flagged = find_label_issues(labels, probs, filter_by="prune_by_noise_rate", n_jobs=1)
    quality = get_label_quality_scores(labels, probs, method="normalized_margin")
    rows = np.flatnonzero(flagged)
    rows = rows[np.lexsort((rows, quality[rows]))]
    suggested = probs[rows].argmax(1)
    names = np.asarray(classes)
    return pd.DataFrame({
        "rank": np.arange(1, len(rows) + 1), "id_str": galaxies["id_str"].to_numpy()[rows],
        "split": galaxies["split"].to_numpy()[rows], "given_label": names[labels[rows]],
        "suggested_label": names[suggested], "p_given": np.round(probs[rows, labels[rows]], 4),
        "p_suggested": np.round(probs[rows, suggested], 4), "quality": np.round(quality[rows], 4),
        "row": galaxies["row"].to_numpy()[rows]}, columns=ISSUE_COLUMNS)


def issues_record(suspects: pd.DataFrame, n_labelled: int) -> dict:
    """metrics.json's label_issues: how many labels look wrong, and how that was decided."""
    return {"n_flagged": int(len(suspects)), "n_labelled": int(n_labelled),
            "share": round(len(suspects) / n_labelled, 4) if n_labelled else None,
            "method": "cleanlab find_label_issues (prune_by_noise_rate) on 5-fold out-of-fold probabilities of a "
                      "linear probe on frozen pretrained features",
            "most_suspect": suspects["id_str"].head(3).tolist()}


def suspects_html(suspects: pd.DataFrame, thumbnails: dict[str, bytes], shown: int = 60) -> list[str]:
    """The errors page's "labels that look wrong" section (its heading has id suspect-labels): a card per flagged
    galaxy (thumbnail, id, split, given and suggested label), most suspect first, at most `shown` of them."""
    esc = html.escape
    parts = [f'<h2 id="suspect-labels">Labels that look wrong: {len(suspects)} labelled galax'
             f"{'y' if len(suspects) == 1 else 'ies'} flagged</h2>",
             '<p class="note">Confident learning (cleanlab) on out-of-fold probabilities of a linear probe on the '
             "frozen pretrained encoder: each galaxy's label against what the other galaxies say. Most suspect "
             f"first{'' if len(suspects) <= shown else f'; the first {shown} shown, all in metrics/label_issues.csv'}"
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
    from pathlib import Path

    from galaxy_finetune.analysis.mistakes_page import thumbnail_png
    from galaxy_finetune.core.files import read_json, read_table
    from galaxy_finetune.data.store import galaxy_pixels

    folder = Path(label_budget_dir)
    summary = read_json(folder / "summary.json")
    suspects = read_table(folder / "label_issues.csv")
    head = suspects.head(shown)
    pixels = galaxy_pixels(store_dir, head["row"].tolist()) if len(head) else []
    thumbnails = {i: thumbnail_png(p) for i, p in zip(head["id_str"], pixels)}
    return ({"label_issues": summary["label_issues"], "duplicates": summary["duplicates"]},
            ("suspect-labels", f"labels that look wrong ({len(suspects)})", suspects_html(suspects, thumbnails, shown)))
