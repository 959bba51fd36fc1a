"""Where code runs: device choice (cuda → mps → cpu) and a one-line description for logs."""

from __future__ import annotations

import platform

import torch


def pick_device(prefer: str | None = None) -> torch.device:
    """The best available device: CUDA, then Apple MPS, then CPU (or ``prefer`` if given)."""
    if prefer:
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def describe(device: torch.device | str) -> str:
    """E.g. ``"cpu (2 threads), torch 2.14.1, Python 3.11.7"`` or the GPU name."""
    device = torch.device(device)
    if device.type == "cuda":
        where = f"cuda ({torch.cuda.get_device_name(device)})"
    elif device.type == "cpu":
        where = f"cpu ({torch.get_num_threads()} threads)"
    else:
        where = device.type
    return f"{where}, torch {torch.__version__}, Python {platform.python_version()}"
