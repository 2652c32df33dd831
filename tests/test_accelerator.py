"""galaxy_finetune.core.accelerator: one answer to 'which device' for the Trainer and for code that runs without one."""
import pytest
import torch

from galaxy_finetune.core.accelerator import resolve_accelerator, torch_device
from galaxy_finetune.core.errors import PipelineError


def test_torch_device_follows_the_trainers_accelerator():
    for accelerator in ("auto", "cpu") + (("gpu",) if torch.cuda.is_available() else ()):
        expected = "cuda" if resolve_accelerator(accelerator, "auto")[0] == "gpu" else "cpu"
        assert torch_device(accelerator) == torch.device(expected)
    assert torch_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_a_gpu_asked_for_without_one_is_the_same_one_line_error():
    with pytest.raises(PipelineError, match="train.accelerator: 'gpu' but no CUDA GPU is visible"):
        torch_device("gpu")
