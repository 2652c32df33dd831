"""Each stage runs the package of its own checkout, never another clone's (issue 11, bug 2).

One environment, two clones: the package importable from the environment is the first clone's (here
through PYTHONPATH, which sits on sys.path before site-packages and so before any editable install), and
the second clone's package carries a marker. Run the way dvc.yaml runs it, a stage of the second clone
must import the second clone's package.
"""
import shlex
import sys
from pathlib import Path

import pytest
import yaml

from tests.pipeline_repo import make_repo, run

MARKER = "import sys; sys.stderr.write('galaxy_finetune from clone two\\n')\n"


def stage_commands(repo: Path) -> dict[str, list[str]]:
    """Each stage's command line from dvc.yaml, up to and including what names the script."""
    commands = {}
    for name, stage in yaml.safe_load((repo / "dvc.yaml").read_text())["stages"].items():
        argv = shlex.split(stage["cmd"])
        assert argv[0] == "python", f"{name}: {stage['cmd']}"
        head = argv[:3] if argv[1] == "-m" else argv[:2]
        commands[name] = [sys.executable, *head[1:]]
    return commands


@pytest.fixture(scope="module")
def clones(tmp_path_factory):
    root = tmp_path_factory.mktemp("clones")
    origin, env = make_repo(root / "origin")
    for name in ("one", "two"):
        run(["git", "clone", "-q", str(origin), str(root / name)], root, env)
    package = root / "two/galaxy_finetune/__init__.py"
    package.write_text(package.read_text() + MARKER)
    env = dict(env, PYTHONPATH=str(root / "one"))  # the environment's package: the other clone's
    return root / "one", root / "two", env


def test_every_stage_is_run_as_a_module_of_the_repo():
    root = Path(__file__).resolve().parents[1]
    for name, argv in stage_commands(root).items():
        assert argv[1:] == ["-m", f"stages.{name}"], f"{name}: run it as `python -m stages.{name}`"
        assert (root / "stages" / f"{name}.py").is_file()


@pytest.mark.slow  # git clones and a stage started in each
def test_a_stage_of_the_second_clone_imports_the_second_clones_package(clones):
    one, two, env = clones
    argv = stage_commands(two)["split"]
    proc = run([*argv, "--help"], two, env)
    assert "galaxy_finetune from clone two" in proc.stderr
    probe = "import galaxy_finetune; print(galaxy_finetune.__file__)"
    where = run([sys.executable, "-c", probe], two.parent, env).stdout.strip()
    assert where == str(one / "galaxy_finetune/__init__.py")  # the environment does point at the other clone
