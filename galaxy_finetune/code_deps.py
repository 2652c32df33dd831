"""Which of this package's modules a script or module reaches through its imports (lazy imports included).

Read from the source (ast), nothing is imported. The checkpoint fingerprint hashes the training code
found this way, and a test checks that each stage's code deps in dvc.yaml are exactly these modules.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "galaxy_finetune"
PACKAGE_DIR = Path(__file__).resolve().parent


def _imported(path: Path) -> set[str]:
    """Names of the package's modules that `path` imports anywhere in its body."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.startswith(f"{PACKAGE}.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == PACKAGE:  # from galaxy_finetune import sources
                names |= {f"{PACKAGE}.{a.name}" for a in node.names}
            elif node.module.startswith(f"{PACKAGE}."):
                names.add(node.module)
    return {n for n in names if (PACKAGE_DIR / f"{n.split('.', 1)[1]}.py").is_file()}


def package_modules(script: str | Path) -> list[Path]:
    """The package's module files that `script` (a file path) reaches, itself included if it is one, sorted."""
    start = Path(script).resolve()
    seen, todo = set(), [start]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo += [PACKAGE_DIR / f"{name.split('.', 1)[1]}.py" for name in _imported(path)]
    return sorted(p for p in seen if p.parent == PACKAGE_DIR)
