"""The stage shell (galaxy_finetune.core.cli): quiet logs; each real warning once, on one line; one-line errors for the
stages and the commands alike."""
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from galaxy_finetune.inference import similar
from galaxy_finetune.inference.embeddings import write_embeddings
from galaxy_finetune.core.layout import STORE_IMAGES
from tests.pipeline_repo import checkout_env

# a one-epoch Lightning fit that draws every kind of noise: Lightning's adverts (litlogger, litmodels),
# the _pytree.py deprecation, Lightning's own warnings, and a warning of ours raised at every step
FIT = """
import sys, warnings
import torch, lightning as L
from galaxy_finetune.core.cli import quiet_logs
if sys.argv[1] == "quiet":
    quiet_logs()

class Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 2)

    def training_step(self, batch, batch_idx):
        warnings.warn("a warning of ours,\\n  over two lines")
        return self.layer(batch).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

L.Trainer(accelerator="cpu", max_epochs=1, enable_progress_bar=False, enable_model_summary=False,
          default_root_dir=sys.argv[2]).fit(Tiny(), torch.utils.data.DataLoader(torch.rand(8, 2), batch_size=4))
"""


def fit_stderr(mode: str, tmp_path) -> str:
    proc = subprocess.run([sys.executable, "-c", FIT, mode, str(tmp_path / mode)], capture_output=True, text=True,
                          env=checkout_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr


@pytest.mark.slow  # a stage's fit in a fresh interpreter, with its own stderr
def test_quiet_logs_drop_adverts_and_library_deprecations_but_keep_real_warnings(tmp_path):
    loud, quiet = fit_stderr("loud", tmp_path), fit_stderr("quiet", tmp_path)
    for noise in ("litlogger", "litmodels", "_pytree", "TPU available"):
        assert noise in loud  # the noise is really there without quiet_logs()
        assert noise not in quiet
    ours = [line for line in quiet.splitlines() if "a warning of ours" in line]
    assert ours == ["warning: a warning of ours, over two lines"]  # once (two steps raise it), one line, no source
    assert "warnings.warn(" not in quiet and ".py:" not in quiet
    lightning_warning = [line for line in quiet.splitlines() if "smaller than the logging interval" in line]
    assert len(lightning_warning) == 1 and lightning_warning[0].startswith("warning: ")  # kept, as one line


@pytest.fixture
def explore_inputs(tmp_path):
    """A tiny data/embeddings and data/store: ten galaxies, random features."""
    galaxies = pd.DataFrame({"id_str": [f"g{i}" for i in range(10)], "split": ["train"] * 6 + ["test"] * 4,
                             "label": 0, "label_name": "round", "row": range(10)})
    write_embeddings(tmp_path / "embeddings", galaxies, np.random.default_rng(0).normal(size=(10, 8)), 3)
    (tmp_path / "store").mkdir()
    np.save(tmp_path / "store" / STORE_IMAGES, np.zeros((10, 8, 8, 3), np.uint8))
    return ["--embeddings", str(tmp_path / "embeddings"), "--store", str(tmp_path / "store")]


@pytest.mark.parametrize("case", ["unwritable output", "bad k", "unknown query"])
def test_galaxy_similar_errors_are_one_line_through_the_shell(explore_inputs, tmp_path, capsys, case):
    (tmp_path / "blocker").write_text("a file where a folder should be")
    args = {"unwritable output": ["g0", "-o", str(tmp_path / "blocker" / "s.csv")],
            "bad k": ["g0", "-k", "0"], "unknown query": ["nothing-like-this"]}[case]
    with pytest.raises(SystemExit) as exit_:
        similar.main([*args, "--sheet", str(tmp_path / "s.png"), *explore_inputs])
    assert exit_.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert {"unwritable output": str(tmp_path / "blocker"), "bad k": "-k 0",
            "unknown query": "nothing-like-this: neither a galaxy id"}[case] in err[0]
    assert not (tmp_path / "s.png").exists()


def test_galaxy_similar_writes_the_table_and_the_sheet(explore_inputs, tmp_path, capsys):
    similar.main(["g0", "-k", "3", "-o", str(tmp_path / "s.csv"), "--sheet", str(tmp_path / "s.png"), *explore_inputs])
    assert pd.read_csv(tmp_path / "s.csv")["rank"].tolist() == [1, 2, 3] and (tmp_path / "s.png").is_file()
    assert capsys.readouterr().out.startswith("galaxy-similar: 3 galaxies like g0")
