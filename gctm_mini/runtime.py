"""Where code runs: device choice (cuda → mps → cpu), a check that a named device exists, CPU
threads for small jobs, and a one-line description for logs."""

from __future__ import annotations

import contextlib
import functools
import platform
from collections.abc import Callable, Iterator

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


SMALL_MODEL_THREADS = 1
"""Threads a small CPU job (``threads = 0``, auto) runs with: one.

A 2D step multiplies 256-row batches by 256 × 256 weights and spends the rest in Python,
POT's single-threaded ``ot.emd`` and small element-wise ops; a second intra-op thread has
little to split, and where the cores are shared (a class server, a laptop running other
work) OpenMP threads that wait on each other make the step an order of magnitude slower
(``benchmarks/profile_step2d.py``: about 20× on a loaded 2-core machine)."""


def resolve_threads(threads: int) -> int:
    """Threads to use: ``threads`` if ≥ 1, else (0 = auto) :data:`SMALL_MODEL_THREADS`."""
    if threads < 0:
        raise ValueError(f"threads must be ≥ 0 (0 = auto); got {threads}")
    return threads if threads > 0 else SMALL_MODEL_THREADS


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run a block with ``torch.set_num_threads(n)`` and restore the previous count after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def with_config_threads(fn: Callable) -> Callable:
    """Decorate ``fn(cfg, …)`` to run with ``resolve_threads(cfg.threads)`` torch threads
    (restored afterwards, also on an error)."""

    @functools.wraps(fn)
    def inner(cfg, *args, **kwargs):
        with torch_threads(resolve_threads(cfg.threads)):
            return fn(cfg, *args, **kwargs)

    return inner
