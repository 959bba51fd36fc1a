r"""The flow-matching interpolant and the σ ↔ t change of variables.

Convention (fixed project-wide): X0 is the data / target at t = 0, X1 the source at t = 1.

.. math::
    x_t = (1 - t)\,X_0 + t\,X_1, \qquad \frac{d x_t}{dt} = X_1 - X_0 ,

and the marginal velocity is :math:`v(x, t) = E[X_1 - X_0 \mid x_t = x]
= (x - E[X_0 \mid x_t = x]) / t`.  The EDM link is :math:`\sigma = t / (1 - t)`,
:math:`t = \sigma / (1 + \sigma)`, so that :math:`x_t / (1 - t) = X_0 + \sigma X_1`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .validation import as_time, broadcast_time, check_batch, real_tensor

SIGMA_MIN = 0.002
"""Smallest noise level used in time embeddings and grids (EDM)."""
SIGMA_MAX = 80.0
"""Largest noise level for generation (EDM); image-to-image uses 500."""


def interpolate(x0: Tensor, x1: Tensor, t: Tensor | float) -> Tensor:
    r"""Point on the straight path: :math:`x_t = (1 - t) X_0 + t X_1`.

    Args:
        x0: data / target, ``(B, *D)``.
        x1: source (noise or conditioning image), ``(B, *D)``.
        t: ``float`` or ``(B,)`` in [0, 1].

    Returns:
        ``(B, *D)``.
    """
    x0, x1 = _pair(x0, x1)
    tb = broadcast_time(as_time(t, x0.shape[0], x0), x0)
    return (1 - tb) * x0 + tb * x1


def conditional_velocity(x0: Tensor, x1: Tensor) -> Tensor:
    r"""Velocity of the straight path, :math:`dx_t/dt = X_1 - X_0` (independent of t)."""
    x0, x1 = _pair(x0, x1)
    return x1 - x0


def _pair(x0: Tensor, x1: Tensor) -> tuple[Tensor, Tensor]:
    """Two finite batches of one shape; integer or boolean data as the default float dtype."""
    check_batch(x0, name="x0")
    check_batch(x1, tuple(x0.shape[1:]), name="x1")
    if x1.shape[0] != x0.shape[0]:
        raise ValueError(f"x0 and x1 need the same batch size; got {x0.shape[0]} and {x1.shape[0]}")
    as_float = [v if v.is_floating_point() else v.to(torch.get_default_dtype()) for v in (x0, x1)]
    return as_float[0], as_float[1]


def sigma_from_t(t: Tensor | float) -> Tensor:
    r""":math:`\sigma = t / (1 - t)` for t in [0, 1] (a number, a sequence or a tensor);
    :math:`t = 1` maps to ``inf``, the exact value. NaN and values outside [0, 1] are refused."""
    t = real_tensor(t, "t", torch.get_default_dtype())
    if bool(((t < 0) | (t > 1)).any()):
        raise ValueError(
            f"t must lie in [0, 1]; got values in [{float(t.min())}, {float(t.max())}]"
        )
    return t / (1 - t)


def t_from_sigma(sigma: Tensor | float) -> Tensor:
    r""":math:`t = \sigma / (1 + \sigma)` for σ ≥ 0 (a number, a sequence or a tensor);
    ``sigma = inf`` maps to 1. NaN and negative values are refused."""
    sigma = real_tensor(sigma, "sigma", torch.get_default_dtype(), finite=False)
    if bool(torch.isnan(sigma).any()) or bool((sigma < 0).any()):
        raise ValueError("sigma must be ≥ 0 (∞ allowed); got NaN or a negative value")
    return torch.where(torch.isinf(sigma), torch.ones_like(sigma), sigma / (1 + sigma))


def log_sigma_clamped(
    t: Tensor, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX
) -> Tensor:
    r""":math:`\log\sigma(t)` with σ clamped to ``[sigma_min, sigma_max]``.

    Safe at t = 0 and t = 1 (no ``log 0`` or ``log inf``): t is clamped to
    ``[t(σ_min), t(σ_max)]`` before the division. Used by the time embeddings, which take
    :math:`0.25 \log \sigma`.
    """
    lo = sigma_min / (1 + sigma_min)
    hi = sigma_max / (1 + sigma_max)
    tc = t.clamp(lo, hi)
    return torch.log(tc) - torch.log1p(-tc)


def t_of(sigma: float) -> float:
    """Scalar :math:`t = \\sigma / (1 + \\sigma)` (``math.inf`` → 1)."""
    return 1.0 if math.isinf(sigma) else sigma / (1.0 + sigma)
