"""The README and docs/: every relative link resolves, the README stays one screen, no docs page is an orphan.

For README.md, docs/*.md and benchmarks/RESULTS.md, every Markdown link and image (`[text](target)`,
`![alt](target)`, `[ref]: target`) that is not http(s)/mailto must name a file that exists (relative to the page),
and its `#anchor` must be a heading of the target page (or of the same page) under GitHub's slug rules. The checker
is tried on throwaway pages with broken links first, so a checker that finds nothing cannot pass unnoticed.
"""
from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_LINES = 300
EXTERNAL = ("http://", "https://", "mailto:", "ftp://")

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
# [text](target) or ![alt](target), text with one level of nested brackets, target optionally in <...> and/or
# followed by a "title"
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
REFERENCE_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
HTML_ANCHOR = re.compile(r"<a\s[^>]*(?:name|id)=[\"']([^\"']+)[\"']", re.IGNORECASE)


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every line outside fenced code blocks, inline code spans blanked out."""
    out, fence = [], None
    for number, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)[0] * len(m.group(1))
            continue
        if fence is not None:
            if m and m.group(1).startswith(fence):
                fence = None
            continue
        out.append((number, CODE_SPAN.sub(lambda s: " " * len(s.group(0)), line)))
    return out


def heading_text(raw: str) -> str:
    """A heading's text as GitHub renders it, before slugging: links become their text, tags and code marks go."""
    text = re.sub(r"!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\([^)]*\)", r"\1", raw)
    text = re.sub(r"<[^>]+>", "", text)
    return text


def slug(text: str) -> str:
    """GitHub's anchor of a heading: lowercase, punctuation dropped (letters, digits, _, - and spaces stay),
    each space a hyphen."""
    text = heading_text(text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor of a page: its headings' slugs, repeated ones numbered -1, -2 ..., and explicit <a name/id>."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for _, line in prose_lines_with_code(text):
        m = HEADING.match(line)
        if m:
            base = slug(m.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
        found.update(HTML_ANCHOR.findall(line))
    return found


def prose_lines_with_code(text: str) -> list[tuple[int, str]]:
    """Like prose_lines, but code spans kept: a heading's `code` is part of its slug."""
    lines = text.splitlines()
    keep = {number for number, _ in prose_lines(text)}
    return [(n, lines[n - 1]) for n in sorted(keep)]


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every inline link, image and reference definition outside code."""
    out = []
    for number, line in prose_lines(text):
        for m in INLINE_LINK.finditer(line):
            out.append((number, m.group(1).strip("<>")))
        m = REFERENCE_DEF.match(line)
        if m:
            out.append((number, m.group(1).strip("<>")))
    return out


def broken_links(page: Path) -> list[str]:
    """One line per relative link of `page` that does not resolve: a missing file, or an anchor no heading has."""
    problems = []
    text = page.read_text(encoding="utf-8")
    for number, target in links(text):
        if target.lower().startswith(EXTERNAL):
            continue
        path_part, _, anchor = target.partition("#")
        dest = (page.parent / unquote(path_part)).resolve() if path_part else page
        where = f"{page.name}:{number}: ({target})"
        if not dest.exists():
            problems.append(f"{where}: {dest} does not exist")
            continue
        if anchor and dest.suffix.lower() == ".md":
            if unquote(anchor) not in anchors(dest.read_text(encoding="utf-8")):
                problems.append(f"{where}: no heading of {dest.name} has the anchor #{anchor}")
        elif anchor and dest.is_dir():
            problems.append(f"{where}: an anchor into a folder")
    return problems


def linked_pages(page: Path) -> set[Path]:
    """The local files `page` links to."""
    out = set()
    for _, target in links(page.read_text(encoding="utf-8")):
        path_part = target.partition("#")[0]
        if path_part and not target.lower().startswith(EXTERNAL):
            out.add((page.parent / unquote(path_part)).resolve())
    return out


def orphans(readme: Path, docs: Path) -> list[Path]:
    """docs pages linked neither from the README nor from the docs index (docs/README.md, itself linked from the
    README)."""
    index = docs / "README.md"
    reached = linked_pages(readme) | (linked_pages(index) if index.resolve() in linked_pages(readme) else set())
    return [p for p in sorted(docs.glob("*.md")) if p.resolve() not in reached]


def table_problems(page: Path) -> list[str]:
    """Each table must open with a header row and a delimiter row, and every row must have the header's cells:
    a row cut off from its table by a blank line starts a table without a header and is reported."""
    problems = []
    lines = prose_lines_with_code(page.read_text(encoding="utf-8"))
    block: list[tuple[int, str]] = []

    def cells(row: str) -> int:
        # GitHub splits cells at every unescaped pipe, inside code spans too
        return len(re.split(r"(?<!\\)\|", row.strip().strip("|")))

    def check(block):
        if not block:
            return
        (n0, head), rest = block[0], block[1:]
        if not rest or not re.fullmatch(r"\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?", rest[0][1].strip()):
            problems.append(f"{page.name}:{n0}: a table row without a header and delimiter row above it")
            return
        for n, row in rest:
            if cells(row) != cells(head):
                problems.append(f"{page.name}:{n}: {cells(row)} cells, the header has {cells(head)}")

    previous = 0
    for number, line in lines:
        if line.lstrip().startswith("|") and number == previous + 1 and block:
            block.append((number, line))
        elif line.lstrip().startswith("|"):
            check(block)
            block = [(number, line)]
        else:
            check(block)
            block = []
        previous = number
    check(block)
    return problems


def heading_problems(page: Path) -> list[str]:
    """One `#` title first, and no heading more than one level deeper than the one before it."""
    problems, level = [], 0
    for number, line in prose_lines_with_code(page.read_text(encoding="utf-8")):
        m = HEADING.match(line)
        if not m:
            continue
        new = len(m.group(1))
        if level == 0 and new != 1:
            problems.append(f"{page.name}:{number}: the first heading is not a # title")
        elif level and new == 1:
            problems.append(f"{page.name}:{number}: a second # title")
        elif new > level + 1 and level:
            problems.append(f"{page.name}:{number}: heading jumps from level {level} to {new}")
        level = new
    return problems


PAGES = [README, *sorted(DOCS.glob("*.md")), ROOT / "benchmarks" / "RESULTS.md"]


# --- the checker itself: it must find what is broken -------------------------------------------------------------

@pytest.mark.parametrize("heading, expected", [
    ("Which recipe runs, and why lpft is the default", "which-recipe-runs-and-why-lpft-is-the-default"),
    ("What happens when ...", "what-happens-when-"),
    ("Parameters (`params.yaml`)", "parameters-paramsyaml"),
    ("Your own galaxies: from a folder of images to `dvc exp show`",
     "your-own-galaxies-from-a-folder-of-images-to-dvc-exp-show"),
    ("The image store: why a numpy memory map (`python benchmarks/store_choice.py --n 5000`)",
     "the-image-store-why-a-numpy-memory-map-python-benchmarksstore_choicepy---n-5000"),
    ("A learning-rate sweep with DVC's queue", "a-learning-rate-sweep-with-dvcs-queue"),
    ("See [the docs](docs/README.md) **now**", "see-the-docs-now"),
])
def test_slug_follows_github(heading, expected):
    assert slug(heading) == expected


def test_repeated_headings_are_numbered():
    text = "# Notes\n\n## Setup\n\n## Setup\n\n```\n## Setup\n```\n\n## Setup\n"
    assert anchors(text) == {"notes", "setup", "setup-1", "setup-2"}


GOOD = "# Other\n\n## A section\n\n## A section\n"


@pytest.mark.parametrize("body, broken", [
    ("[fine](other.md#a-section) and [fine too](other.md#a-section-1) and [self](#page)", False),
    ("[image](pic.png) and ![image](pic.png) and [web](https://example.com/x#y) and [mail](mailto:a@b.c)", False),
    ("`[in code](missing.md)` and\n\n```\n[in a fence](missing.md)\n```", False),
    ("[missing file](nope.md)", True),
    ("![missing image](nope.png)", True),
    ("[missing anchor](other.md#no-such-section)", True),
    ("[third copy](other.md#a-section-2)", True),
    ("[missing anchor on this page](#nowhere)", True),
    ("[ref]: nope.md", True),
    ("| a | b |\n| --- | --- |\n| [x](nope.md#z) | y |", True),
])
def test_checker_finds_broken_links(tmp_path, body, broken):
    (tmp_path / "other.md").write_text(GOOD)
    (tmp_path / "pic.png").write_bytes(b"\x89PNG")
    page = tmp_path / "page.md"
    page.write_text(f"# Page\n\n{body}\n")
    problems = broken_links(page)
    assert bool(problems) == broken, problems


def test_checker_finds_orphans_long_readmes_and_split_tables(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (tmp_path / "README.md").write_text("# R\n\n[index](docs/README.md)\n")
    (docs / "README.md").write_text("# Index\n\n[a](a.md)\n")
    (docs / "a.md").write_text("# A\n")
    (docs / "b.md").write_text("# B\n")
    assert orphans(tmp_path / "README.md", docs) == [docs / "b.md"]
    (docs / "t.md").write_text("# T\n\n| a | b |\n| --- | --- |\n| 1 | 2 |\n\n| 3 | 4 |\n| 5 |\n")
    assert len(table_problems(docs / "t.md")) == 1  # the row after the blank line lost its header
    (docs / "h.md").write_text("# H\n\n### too deep\n\n## fine\n\n# again\n")
    assert len(heading_problems(docs / "h.md")) == 2


# --- the project's pages ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    problems = broken_links(page)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", [README, *sorted(DOCS.glob("*.md"))], ids=lambda p: str(p.relative_to(ROOT)))
def test_tables_and_headings_render(page):
    problems = table_problems(page) + heading_problems(page)
    assert not problems, "\n".join(problems)


def test_readme_is_one_screen_and_keeps_the_setup_commands():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/"
    # .ci/run runs the README's install and test commands: keep them verbatim in the quick start
    commands = [line.split("#")[0].strip() for line in lines]
    for command in ("pip install -r requirements.txt", "dvc repro", "pytest"):
        assert command in commands, f"README.md lost the line `{command}`"


def test_no_docs_page_is_an_orphan():
    assert (DOCS / "README.md").resolve() in linked_pages(README), "README.md does not link docs/README.md"
    lost = orphans(README, DOCS)
    assert not lost, f"linked neither from README.md nor from docs/README.md: {[p.name for p in lost]}"
