"""The stage shell (galaxy_finetune.cli): quiet logs; each real warning once, on one line."""
import subprocess
import sys

from tests.pipeline_repo import checkout_env

# a one-epoch Lightning fit that draws every kind of noise: Lightning's adverts (litlogger, litmodels),
# the _pytree.py deprecation, Lightning's own warnings, and a warning of ours raised at every step
FIT = """
import sys, warnings
import torch, lightning as L
from galaxy_finetune.cli import quiet_logs
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
