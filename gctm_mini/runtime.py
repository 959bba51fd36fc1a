"""Where code runs: device choice (cuda → mps → cpu), a check that a named device exists, and a
one-line description for logs."""

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


def check_device(name: str) -> str:
    """Return ``name`` if it is a device that exists here (``cpu``, ``cuda``, ``cuda:N``,
    ``mps``); raise ``ValueError`` naming what is available otherwise."""
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"unknown device {name!r}; expected cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ValueError(f"device {name!r} needs a CUDA GPU and there is none here; use cpu")
        if dev.index is not None and dev.index >= n:
            raise ValueError(f"device {name!r} does not exist: {n} CUDA device(s) here (cuda:0…)")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(
                f"device {name!r} needs Apple's MPS backend, not available here; use cpu"
            )
    elif dev.type != "cpu":
        raise ValueError(f"unsupported device {name!r}; expected cpu, cuda, cuda:N or mps")
    return name
