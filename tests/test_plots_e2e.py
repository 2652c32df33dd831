"""End to end: two tiny `dvc repro` commits, then `dvc metrics diff`, `dvc plots show` and `dvc plots diff`.

Every test reads the session's two commits (`pipeline_two_runs`: the first run, then the sweep's lr experiment
applied over it).
"""
import configparser
import json
import re
import shutil
import subprocess

import pytest
import yaml

from galaxy_finetune.analysis.figures import FIGURES
from tests.pipeline_repo import ROOT, run

# with pytest-xdist: the modules that share the session's tiny dvc repro run on one worker
pytestmark = [pytest.mark.xdist_group("pipeline"), pytest.mark.slow]  # the tiny project's `dvc repro`

TEMPLATE = ROOT / ".dvc" / "plots_template.html"
VEGA_DIV = re.compile(r'<div id = "(?P<id>[^"]+)">\s*<script type = "text/javascript">\s*var spec = ')
IMAGE_DIV = re.compile(r'<div\s+id="(?P<id>[^"]+)"[^>]*>\s*<p>(?P<path>[^<]+)</p>(?P<body>.*?)</div>\s*</div>', re.S)


def declared_plots() -> tuple[list[str], list[str]]:
    """(vega plot ids, image plot paths) from dvc.yaml's top-level plots."""
    plots = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    vega = [next(iter(p)) for p in plots if isinstance(p, dict)]
    images = [p for p in plots if isinstance(p, str) and p.endswith(".png")]
    return vega, images


def vega_specs(html: str) -> dict[str, dict]:
    decoder = json.JSONDecoder()
    return {m["id"]: decoder.raw_decode(html, m.end())[0] for m in VEGA_DIV.finditer(html)}


def image_plots(html: str) -> dict[str, list[str]]:
    return {m["path"]: re.findall(r'<img src="([^"]+)"', m["body"]) for m in IMAGE_DIV.finditer(html)}


# ---- static checks: no pipeline run needed ----

def test_dvc_yaml_image_plots_are_exactly_the_figure_registry():
    vega, images = declared_plots()
    assert sorted(images) == sorted(f"plots/{f.file}" for f in FIGURES)
    assert len(set(images)) == len(images)
    assert {"confusion", "confusion_normalized", "residuals", "training_loss", "training_accuracy",
            "accuracy_coverage", "embedding_map"} <= set(vega)


def test_html_template_inlines_the_pinned_vega_scripts():
    config = configparser.ConfigParser()
    config.read(ROOT / ".dvc" / "config")
    assert (ROOT / ".dvc" / config["plots"]["html_template"]).resolve() == TEMPLATE.resolve()
    page = TEMPLATE.read_text()
    assert "{plot_divs}" in page and "{scripts}" not in page  # DVC's CDN <script> tags are never inserted
    assert not re.search(r"<script[^>]+src=", page)
    pinned = json.loads((ROOT / "package.json").read_text())["dependencies"]
    locked = json.loads((ROOT / "package-lock.json").read_text())["packages"]
    for name in ("vega", "vega-lite", "vega-embed"):
        assert locked[f"node_modules/{name}"]["version"] == pinned[name]
        assert f"<!-- {name}@{pinned[name]} " in page, f"template not rebuilt after pinning {name}@{pinned[name]}"
    assert len(page) > 500_000  # the three minified bundles


# ---- the pipeline, twice ----

@pytest.fixture(scope="module")
def repo(pipeline_two_runs):
    return pipeline_two_runs


def test_analyse_outputs_are_in_git_and_stage_is_up_to_date(repo):
    repo, env = repo
    tracked = run(["git", "ls-files"], repo, env).stdout.split()
    for path in ["metrics/metrics.json", "metrics/residuals.json", "metrics/coverage.csv", "metrics/anomalies.csv",
                 "metrics/embedding_map.csv", "reports/summary.md", "reports/errors.html",
                 *(f"plots/{f.file}" for f in FIGURES)]:
        assert path in tracked
    status = run(["dvc", "status", "analyse"], repo, env).stdout
    assert "changed" not in status, status


def test_metrics_diff_lists_the_changed_keys(repo):
    repo, env = repo
    diff = json.loads(run(["dvc", "metrics", "diff", "HEAD~1", "HEAD", "--json"], repo, env).stdout)
    changed = diff["metrics/metrics.json"]
    assert {"log_loss", "brier", "accuracy_ci95_low", "provenance.lr"} <= set(changed), sorted(changed)
    assert (changed["provenance.lr"]["old"], changed["provenance.lr"]["new"]) == (0.001, 0.002)
    table = run(["dvc", "metrics", "diff", "HEAD~1", "HEAD", "--md"], repo, env).stdout
    assert re.search(r"\| metrics/metrics.json +\| log_loss +\|", table), table


def not_computed(repo) -> set[str]:
    """The plots a run leaves empty on purpose: with a random-init encoder the label budget's probe draws no curve
    and simulates no acquisition (its summary says why), so learning_curve holds only the fine-tuned model's
    curve, once galaxy-label-curve has collected it."""
    summary = json.loads((repo / "metrics/label_budget/summary.json").read_text())
    if summary["learner"] is not None:
        return set()
    return {"active_learning"} | (set() if (repo / "metrics/finetuned_curve.csv").is_file() else {"learning_curve"})


def test_plots_show_holds_every_plot_with_data(repo, tmp_path):
    repo, env = repo
    run(["dvc", "plots", "show", "-o", str(tmp_path / "show")], repo, env)
    html = (tmp_path / "show" / "index.html").read_text()
    vega, images = declared_plots()
    specs = vega_specs(html)
    assert sorted(specs) == sorted(vega)
    empty = not_computed(repo)
    assert empty == {"active_learning", "learning_curve"}  # a random init, and no fine-tuned curve collected
    for plot_id, spec in specs.items():
        values = spec.get("data", {}).get("values", [])  # DVC leaves "data" out of a plot with none
        assert (len(values) > 0) == (plot_id not in empty), plot_id
    shown = image_plots(html)
    assert sorted(shown) == sorted(images)
    for path, sources in shown.items():
        assert len(sources) == 1 and (tmp_path / "show" / sources[0]).stat().st_size > 5000, path
    assert "cdn.jsdelivr.net" not in html and "vegaEmbed" in html


def test_galaxy_label_curve_draws_the_fine_tuned_curve_in_the_learning_curve_plot(repo, tmp_path, capsys):
    from galaxy_finetune.labels.finetuned_curve import main
    from tests.pipeline_repo import copy_repo

    repo, env = repo
    copy = copy_repo(repo, tmp_path / "copy")
    main(["--repo", str(copy)])  # galaxy-label-curve, in this process
    out = capsys.readouterr().out
    budget = json.loads((copy / "metrics/label_budget/summary.json").read_text())
    assert f"{budget['train_labels']} labels" in out and "the fit needs at least 3" in out
    run(["dvc", "plots", "show", "-o", str(tmp_path / "show")], copy, env)
    curve = vega_specs((tmp_path / "show" / "index.html").read_text())["learning_curve"]
    assert budget["train_labels"] in {int(float(row["n_labels"])) for row in curve["data"]["values"]}
    assert not_computed(copy) == {"active_learning"}


def test_plots_diff_overlays_two_commits(repo, tmp_path):
    repo, env = repo
    run(["dvc", "plots", "diff", "HEAD~1", "-o", str(tmp_path / "diff")], repo, env)
    html = (tmp_path / "diff" / "index.html").read_text()
    specs = vega_specs(html)
    assert sorted(specs) == sorted(declared_plots()[0])
    empty = not_computed(repo)
    for plot_id, spec in specs.items():
        revs = {row["rev"] for row in spec.get("data", {}).get("values", [])}
        assert revs == (set() if plot_id in empty else {"HEAD~1", "workspace"}), plot_id
    for path, sources in image_plots(html).items():
        assert len(sources) == 2, path  # one image per revision, side by side


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(not CHROMIUM, reason="no chromium: `apt-get install chromium` to check the page renders")
def test_page_renders_offline_in_headless_chromium(repo, tmp_path):
    repo, env = repo
    run(["dvc", "plots", "show", "-o", str(tmp_path / "show")], repo, env)
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-quic", "--no-first-run", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=15000",
         "--proxy-server=127.0.0.1:9", "--dump-dom", (tmp_path / "show" / "index.html").as_uri()],
        capture_output=True, text=True, timeout=120)
    dom = proc.stdout
    assert 'id="vega-missing"' not in dom  # the template's warning, written only when vegaEmbed is undefined
    for plot_id in declared_plots()[0]:
        start = dom.index(f'id="{plot_id}"')
        following = dom[start:start + 20000]
        assert 'class="vega-embed' in following and ("<canvas" in following or "<svg" in following), plot_id
