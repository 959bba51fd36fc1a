"""Input checks shared by every public function of the package.

Bad input must raise a clear error, never produce a wrong answer: wrong shapes, times
outside [0, 1], ``s > t`` for a forward (t → s, s ≤ t) map, NaN or infinite values, and
unknown option names all stop here with a message that says what was expected and what
was given.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor


def check_finite(x: Tensor, name: str = "x") -> Tensor:
    """Raise ``ValueError`` if ``x`` holds NaN or ±inf; return ``x`` unchanged."""
    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} contains {bad} NaN/inf value(s); inputs must be finite")
    return x


def check_batch(x: Tensor, data_shape: tuple[int, ...] | None = None, name: str = "x") -> Tensor:
    """Check that ``x`` is a finite batch ``(B, *data_shape)`` with ``B ≥ 1``."""
    check_finite(x, name)
    if x.dim() < 2:
        raise ValueError(f"{name} must be a batch of shape (B, *D); got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (B = 0)")
    if data_shape is not None and tuple(x.shape[1:]) != tuple(data_shape):
        raise ValueError(
            f"{name} must have shape (B, {', '.join(map(str, data_shape))}); got {tuple(x.shape)}"
        )
    return x


def as_time(t: Tensor | float, batch: int, like: Tensor, name: str = "t") -> Tensor:
    """Return ``t`` as a ``(batch,)`` tensor on ``like``'s device and dtype, checked in [0, 1].

    ``t`` may be a Python float, a 0-d tensor, or a ``(batch,)`` tensor.
    """
    dtype = like.dtype if like.is_floating_point() else torch.float32
    if not torch.is_tensor(t):
        try:
            t = torch.tensor(float(t), dtype=dtype)
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must be a float or a tensor; got {type(t).__name__}") from err
    t = t.to(device=like.device, dtype=dtype)
    if t.dim() == 0:
        t = t.expand(batch)
    elif t.dim() != 1 or t.shape[0] != batch:
        raise ValueError(
            f"{name} must be a scalar or have shape ({batch},); got shape {tuple(t.shape)}"
        )
    check_finite(t, name)
    if bool((t < 0).any()) or bool((t > 1).any()):
        lo, hi = float(t.min()), float(t.max())
        raise ValueError(f"{name} must lie in [0, 1]; got values in [{lo:.4g}, {hi:.4g}]")
    return t


def check_order(t: Tensor, s: Tensor, tname: str = "t", sname: str = "s") -> None:
    """Require ``0 ≤ s ≤ t ≤ 1`` element-wise (the forward, data-ward direction)."""
    if bool((s > t).any()):
        i = int(torch.nonzero(s > t)[0, 0])
        raise ValueError(
            f"{sname} must satisfy 0 ≤ {sname} ≤ {tname} ≤ 1 (time runs from the source at 1 "
            f"to the data at 0); got {tname}={float(t[i]):.4g}, {sname}={float(s[i]):.4g}"
        )


def check_count(value: int, name: str, minimum: int = 1) -> int:
    """Require an ``int`` (not a bool) ≥ ``minimum``, e.g. a number of steps, seeds or samples."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer ≥ {minimum}; got {value!r}")
    return int(value)


def check_choice(value: str, choices: Iterable[str], what: str) -> str:
    """Raise ``ValueError`` naming the valid options if ``value`` is not one of ``choices``."""
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; choose one of: {', '.join(choices)}")
    return value


def broadcast_time(t: Tensor, x: Tensor) -> Tensor:
    """Reshape a ``(B,)`` time to ``(B, 1, …, 1)`` so it broadcasts against ``x: (B, *D)``."""
    return t.reshape(t.shape[0], *([1] * (x.dim() - 1)))
