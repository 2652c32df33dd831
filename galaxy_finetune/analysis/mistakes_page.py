"""reports/errors.html: every test mistake on one self-contained page (thumbnails embedded, no network).

Mistakes are grouped by (true, predicted) cell, largest cell first (ties in class order), and within a cell
by confidence, most confident first.
"""
from __future__ import annotations

import base64
import html

import numpy as np
import pandas as pd


STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
.label { color: #a61e1e; } .note { color: #555; font-size: 0.9em; }
.cell { display: flex; flex-wrap: wrap; gap: 10px; }
.mistake { width: 200px; border: 1px solid #ddd; border-radius: 4px; padding: 6px; font-size: 0.8em; }
.mistake img { width: 96px; height: 96px; image-rendering: pixelated; display: block; margin-bottom: 4px; }
.mistake table { border-collapse: collapse; width: 100%; }
.mistake td { padding: 0 2px; } .mistake td.p { text-align: right; font-variant-numeric: tabular-nums; }
tr.true td { color: #2b8a3e; font-weight: bold; } tr.pred td { color: #c92a2a; font-weight: bold; }
nav a { margin-right: 1em; }
"""


def mistake_cells(table: pd.DataFrame, probs: np.ndarray, classes: list[str]) -> list[tuple[str, str, pd.DataFrame]]:
    """[(true, pred, rows)] of the mistakes, largest cell first (ties by class order); rows most confident first."""
    rows = table.assign(confidence=probs.max(1), prob_row=np.arange(len(table)))
    rows = rows[rows["true_label"] != rows["pred_label"]]
    order = {c: i for i, c in enumerate(classes)}
    cells = [(true, pred, group.sort_values(["confidence", "id_str"], ascending=[False, True], kind="stable"))
             for (true, pred), group in rows.groupby(["true_label", "pred_label"], sort=False)]
    return sorted(cells, key=lambda cell: (-len(cell[2]), order[cell[0]], order[cell[1]]))


def mistakes_html(table: pd.DataFrame, probs: np.ndarray, classes: list[str], thumbnails: dict[str, bytes],
                  run_label: str, extra_section: tuple[str, str, list[str]] | None = None) -> str:
    """The page: a heading per (true, predicted) cell, then a card per mistake (thumbnail, id, probabilities);
    `extra_section` (anchor id, link text, html lines: e.g. labels/issues.errors_page_section's labels that look
    wrong) goes last, linked from the navigation."""
    cells = mistake_cells(table, probs, classes)
    n_wrong = sum(len(rows) for _, _, rows in cells)
    esc = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>Test-set mistakes</title>", f"<style>{STYLE}</style></head><body>",
             f"<h1>Every test-set mistake: {n_wrong} of {len(table)} galaxies</h1>",
             f'<p class="label">{esc(run_label)}</p>',
             '<p class="note">Grouped by (true class &rarr; predicted class), largest group first; within a group, '
             "most confident first. Green: the true class's probability; red: the predicted class's.</p>"]
    extra_link = f'<a href="#{esc(extra_section[0])}">{esc(extra_section[1])}</a>' if extra_section else ""
    if cells:
        parts.append("<nav>" + "".join(f'<a href="#cell-{i}">{esc(t)} &rarr; {esc(p)} ({len(r)})</a>'
                                        for i, (t, p, r) in enumerate(cells)) + extra_link + "</nav>")
    else:
        parts.append('<p id="no-mistakes">No mistakes: every test galaxy was classified correctly.</p>')
    for i, (true, pred, rows) in enumerate(cells):
        parts.append(f'<h2 id="cell-{i}" data-true="{esc(true)}" data-pred="{esc(pred)}">{esc(true)} &rarr; '
                     f"{esc(pred)}: {len(rows)} galax{'y' if len(rows) == 1 else 'ies'}</h2>")
        parts.append('<div class="cell">')
        for row in rows.itertuples():
            image = base64.b64encode(thumbnails[row.id_str]).decode("ascii")
            lines = []
            for c, name in enumerate(classes):
                kind = ' class="true"' if name == true else ' class="pred"' if name == pred else ""
                lines.append(f'<tr{kind}><td>{esc(name)}</td><td class="p">{probs[row.prob_row, c]:.3f}</td></tr>')
            parts.append(f'<div class="mistake" data-id="{esc(row.id_str)}" data-true="{esc(true)}" '
                         f'data-pred="{esc(pred)}"><img alt="galaxy {esc(row.id_str)}" '
                         f'src="data:image/png;base64,{image}"><b>{esc(row.id_str)}</b><br>'
                         f"confidence {row.confidence:.3f}<table>{''.join(lines)}</table></div>")
        parts.append("</div>")
    parts += [f"<nav>{extra_link}</nav>"] if extra_link and not cells else []
    parts += extra_section[2] if extra_section else []
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
