"""Which accelerator ('gpu' | 'cpu') and precision a Trainer runs with, the torch device for code that runs
without a Trainer (embed, galaxy-similar), how many DataLoader workers feed it, and the name of the device."""
from __future__ import annotations

import platform

import torch

from galaxy_finetune.core.errors import PipelineError


def resolve_accelerator(accelerator: str, precision: str) -> tuple[str, str]:
    """('gpu' | 'cpu', precision) for the Trainer from train.accelerator ('auto' | 'gpu' | 'cpu').

    A GPU asked for but absent is an error; 'auto' precision is bf16-mixed on a GPU, 32 on a CPU."""
    has_gpu = torch.cuda.is_available()
    if accelerator == "gpu" and not has_gpu:
        raise PipelineError("train.accelerator: 'gpu' but no CUDA GPU is visible; use auto (falls back to CPU) or cpu")
    resolved = "gpu" if has_gpu and accelerator != "cpu" else "cpu"
    if precision == "auto":
        precision = "bf16-mixed" if resolved == "gpu" else "32"
    return resolved, precision


def torch_device(accelerator: str = "auto") -> torch.device:
    """The torch device for train.accelerator ('auto' | 'gpu' | 'cpu'), resolved as a Trainer's accelerator is."""
    return torch.device("cuda" if resolve_accelerator(accelerator, "auto")[0] == "gpu" else "cpu")


def loader_workers(requested: int | str, accelerator: str) -> int:
    """DataLoader workers: on a GPU, 4 keep it fed while the page cache warms; on CPU a batch is one
    slice of the memory map, cheaper than shipping it between processes."""
    if requested != "auto":
        return int(requested)
    return 4 if accelerator == "gpu" else 0


def device_name(accelerator: str) -> str:
    """What the accelerator is: the GPU model, or the CPU and its thread count."""
    if accelerator == "gpu":
        return torch.cuda.get_device_name(0)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
