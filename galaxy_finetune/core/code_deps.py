"""Which of this package's modules a script or module reaches through its imports (lazy imports included).

Read from the source (ast), nothing is imported. The checkpoint fingerprint hashes the training code
found this way, and a test checks that each stage's code deps in dvc.yaml are exactly these modules.
Subpackages' `__init__.py` files hold docstrings only, so they are not counted as code.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "galaxy_finetune"
PACKAGE_DIR = Path(__file__).resolve().parents[1]


def module_file(name: str) -> Path | None:
    """The file of the package's module `name` (dotted, e.g. galaxy_finetune.data.store), None if not a module."""
    if not name.startswith(f"{PACKAGE}."):
        return None
    path = PACKAGE_DIR.joinpath(*name.split(".")[1:]).with_suffix(".py")
    return path if path.is_file() else None


def _imported(path: Path) -> set[Path]:
    """The package's module files that `path` imports anywhere in its body."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {module_file(a.name) for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # from galaxy_finetune.data import store (a module) or from galaxy_finetune.data.store import X
            found |= {module_file(f"{node.module}.{a.name}") or module_file(node.module) for a in node.names}
    return found - {None}


def package_modules(script: str | Path) -> list[Path]:
    """The package's module files that `script` (a file path) reaches, itself included if it is one, sorted."""
    start = Path(script).resolve()
    seen, todo = set(), [start]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo += list(_imported(path))
    return sorted(p for p in seen if PACKAGE_DIR in p.parents)
