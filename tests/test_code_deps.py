"""dvc.yaml's code deps of each stage are exactly the package modules the stage imports (lazily or not)."""
from pathlib import Path

import yaml

from galaxy_finetune.core.code_deps import package_modules

ROOT = Path(__file__).resolve().parents[1]


# the stages whose rerun is costly at survey scale list each module they import; the others their package folders
PER_FILE = {"store", "finetune_gpu", "predict", "embed"}


def stage_code_deps() -> dict[str, tuple[set[str], set[str]]]:
    """Per stage: (package modules its script reaches, galaxy_finetune/ files or folders dvc.yaml lists as deps)."""
    out = {}
    for name, stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
        script = ROOT / "stages" / f"{name}.py"
        assert f"stages/{name}.py" in stage["deps"], f"{name}: its script is not a dep"
        imported = {str(p.relative_to(ROOT)) for p in package_modules(script)}
        listed = {d for d in stage["deps"] if d.startswith("galaxy_finetune/")}
        out[name] = imported, listed
    return out


def test_every_stage_lists_exactly_the_modules_it_imports_or_their_folders():
    """A costly stage lists exactly the modules it imports; another exactly the folders they are in. Either way a
    change to a module the stage imports reruns it, and no listed dep is one it does not import from."""
    problems = []
    for name, (imported, listed) in stage_code_deps().items():
        expected = imported if name in PER_FILE else {str(Path(m).parent) for m in imported}
        if expected - listed:
            problems.append(f"{name}: add {sorted(expected - listed)}")
        if listed - expected:
            problems.append(f"{name}: remove {sorted(listed - expected)}")
    assert not problems, "dvc.yaml deps: " + "; ".join(problems)


def test_a_folder_dep_never_hashes_bytecode():
    assert "__pycache__" in (ROOT / ".dvcignore").read_text().split()


def test_import_closure_sees_lazy_and_package_level_imports(tmp_path):
    script = tmp_path / "script.py"
    script.write_text("from galaxy_finetune.data import sources\n\ndef later():\n    import galaxy_finetune.analysis.metrics\n")
    names = {p.name for p in package_modules(script)}
    assert {"sources.py", "metrics.py", "synthetic.py"} <= names  # synthetic: a lazy import inside sources
    assert "train.py" not in names


def test_predict_and_classify_do_not_import_the_trainer():
    package = ROOT / "galaxy_finetune" / "inference"
    for module in ("predict.py", "classify.py"):
        assert "train.py" not in {p.name for p in package_modules(package / module)}, module


def test_the_checkpoint_fingerprint_covers_the_finetune_stages_code():
    from galaxy_finetune.training.train import training_code

    imported, _ = stage_code_deps()["finetune_gpu"]
    # everything the stage imports shapes training, apart from the stage shell (argument parsing, logs)
    assert {str(p.relative_to(ROOT)) for p in training_code()} == imported - {"galaxy_finetune/core/cli.py"}
