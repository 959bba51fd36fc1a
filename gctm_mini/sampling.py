r"""Samplers that turn source points X1 (t = 1) into data X0 (t = 0), and back (BCM).

- :func:`sample_ode`: the learned probability-flow ODE :math:`dx/dt = v_\theta(x, t)` with
  Euler or Heun on a uniform grid from 1 to 0 at a given NFE budget.
- :func:`sample_multistep`: deterministic flow-map jumps :math:`x \leftarrow G_\theta(x, t_i, t_{i+1})`
  on a time list (one jump :math:`G_\theta(X_1, 1, 0)` for NFE = 1).
- :func:`gamma_sampling`: CTM's γ-sampler, re-derived for the interpolant
  :math:`x_t = (1-t)X_0 + tX_1` (below).
- :func:`bcm_invert`, :func:`bcm_zigzag`, :func:`bcm_interpolate`: inversion, zigzag sampling
  and interpolation through the source with a bidirectional model.

Every sampler accepts any object with a ``G(x, t, s)`` method (a learned model or the exact
flow map of :mod:`gctm_mini.oracle`).

**γ-sampling.** With :math:`\sigma(t) = t/(1-t)`, a point at time t is
:math:`x_t = (1-t)(X_0 + \sigma(t) X_1)`. From :math:`t_i` jump to :math:`s'` with
:math:`\sigma(s') = \sqrt{1-\gamma^2}\,\sigma(t_{i+1})`, then re-noise:

.. math::
    x \leftarrow (1 - t_{i+1})\Big(\frac{G(x, t_i, s')}{1 - s'} + \gamma\,\sigma(t_{i+1})\,z\Big),
    \qquad z \sim \mathcal N(0, I).

If :math:`G(x, t_i, s')/(1-s') = X_0 + \sigma(s')X_1'` then the result is
:math:`(1-t_{i+1})(X_0 + \sigma(t_{i+1})X_1'')` with :math:`\sigma(s')^2 + \gamma^2\sigma(t_{i+1})^2 =
\sigma(t_{i+1})^2`: the marginal at :math:`t_{i+1}` is exact for an exact flow map and a
Gaussian source under the independent coupling (tested). γ = 0: deterministic jumps; γ = 1:
:math:`s' = 0` and fresh noise (CM multistep). A jump that lands on t = 0 adds no noise.
"""

from __future__ import annotations

import numbers

import torch
from torch import Tensor

from .parameterization import FlowMapModel
from .randomness import noise_like
from .solvers import integrate, steps_for_nfe
from .timegrid import MAX_INTERVALS, edm_times, uniform_grid
from .validation import check_batch, check_choice, check_count, check_real, real_tensor

SAMPLERS = ("euler", "heun", "flowmap", "gamma")


@torch.no_grad()
def sample_ode(
    model: FlowMapModel, x1: Tensor, nfe: int, method: str = "euler", return_path: bool = False
):
    """Integrate the learned velocity from t = 1 to 0 using at most ``nfe`` evaluations.

    Euler uses ``nfe`` uniform steps; Heun uses ``(nfe + 1) // 2`` steps (the last, landing on
    0, is an Euler step), so its true cost is ``2·steps − 1`` ≤ ``nfe``.

    ``x1: (B, *D)`` of any floating dtype: the ODE is solved in the model's dtype and the
    result (and path) returned in ``x1``'s.
    """
    if isinstance(model, FlowMapModel):
        x = model.prepare(x1, "x1")
    else:
        x = check_batch(x1, getattr(model, "data_shape", None), "x1")
    times = uniform_grid(steps_for_nfe(nfe, method), dtype=x.dtype).to(x.device)
    out = integrate(model._velocity, x, times, method, return_path=return_path)
    if return_path:
        return out[0].to(x1.dtype), out[1].to(x1.dtype)
    return out.to(x1.dtype)


@torch.no_grad()
def sample_multistep(model: FlowMapModel, x1: Tensor, times: Tensor | list[float] | int) -> Tensor:
    """Jump along ``times`` (descending, from 1 to 0) with the learned flow map.

    ``times`` may be an int K: K equal jumps (NFE = K). ``model`` is anything with ``G``.
    """
    _check_state(model, x1, "x1")
    times = _times(times, x1)
    if bool((times[1:] >= times[:-1]).any()):
        raise ValueError("times must be a strictly descending list of at least two times")
    x = x1
    for k in range(times.shape[0] - 1):
        x = model.G(x, times[k], times[k + 1])
    return x


def _times(times, like: Tensor) -> Tensor:
    """``times`` (an int K for K equal jumps from 1 to 0, a list or a tensor) as a 1-D tensor
    of at least two finite times in [0, 1], in ``like``'s floating dtype and on its device."""
    if isinstance(times, numbers.Integral) and not isinstance(times, bool):
        times = uniform_grid(check_count(times, "times (a number of jumps)", maximum=MAX_INTERVALS))
    times = real_tensor(times, "times")
    if times.dim() != 1 or times.shape[0] < 2:
        raise ValueError(
            f"times must be a list of at least two times; got shape {tuple(times.shape)}"
        )
    if bool(((times < 0) | (times > 1)).any()):
        raise ValueError(f"times must lie in [0, 1]; got {times.tolist()}")
    dtype = like.dtype if like.is_floating_point() else torch.float32
    return times.to(dtype=dtype, device=like.device)


def _check_state(model, x: Tensor, name: str) -> Tensor:
    """``x`` is a finite floating batch of ``model``'s sample shape."""
    check_batch(x, getattr(model, "data_shape", None), name)
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor; got dtype {x.dtype}")
    return x


def _check_t_start(t_start: float) -> float:
    return check_real(t_start, "t_start", gt=0.0, lt=1.0)


def _finite(x: Tensor, what: str) -> Tensor:
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{what} is not finite: the state overflowed {x.dtype}")
    return x


@torch.no_grad()
def gamma_sampling(
    model,
    x: Tensor,
    times: Tensor | list[float] | int,
    gamma: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """CTM's γ-sampling along descending ``times`` (see the module docstring).

    Args:
        model: anything with ``G(x, t, s)``.
        x: ``(B, *D)`` at ``times[0]``.
        times: descending list, or an int K for K equal jumps from 1 to 0 (NFE = K).
        gamma: in [0, 1]; 0 = deterministic, 1 = CM-style fresh noise each jump.

    Returns:
        the state at ``times[-1]``.
    """
    gamma = check_real(gamma, "gamma", ge=0.0, le=1.0)
    _check_state(model, x, "x")
    times = _times(times, x)
    if bool((times[1:] >= times[:-1]).any()):
        raise ValueError("gamma_sampling needs strictly descending times")
    for k in range(times.shape[0] - 1):
        t, tn = float(times[k]), float(times[k + 1])
        if tn == 0.0:
            x = model.G(x, t, 0.0)
            continue
        sig_n = tn / (1 - tn)
        sig_s = (1 - gamma**2) ** 0.5 * sig_n
        s = sig_s / (1 + sig_s)
        x = model.G(x, t, s)
        z = noise_like(x, generator)
        x = (1 - tn) * (x / (1 - s) + gamma * sig_n * z)
    return _finite(x, "the γ-sampling state")


@torch.no_grad()
def bcm_invert(
    model: FlowMapModel,
    x0: Tensor,
    times: Tensor | list[float] | int = 1,
    t_start: float = 0.02,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Invert data to the source with a bidirectional model, in ``len(times) − 1`` jumps.

    As in BCM the data point is first noised slightly, :math:`x = (1 - t_0)X_0 + t_0 z`
    (``t_start`` = t_0), then pushed forward in time :math:`x \leftarrow G(x, t_k, t_{k+1})` up to
    t = 1. ``times`` (ascending, ending at 1) or an int K for K jumps on the EDM ρ-grid from
    t_0 to 1 (:func:`~gctm_mini.timegrid.edm_times`; BCM's own inversion uses σ 0.07 → 15 → 80).
    """
    if not getattr(model, "bidirectional", False):
        raise ValueError("inversion needs a bidirectional model (method 'bcm')")
    _check_state(model, x0, "x0")
    t_start = _check_t_start(t_start)
    if isinstance(times, numbers.Integral) and not isinstance(times, bool):
        k = check_count(times, "times (a number of jumps)", maximum=MAX_INTERVALS)
        times = edm_times(k, t_start, model.sigma_max)
    times = _times(times, x0)
    if bool((times[1:] <= times[:-1]).any()):
        raise ValueError("inversion times must be strictly ascending")
    z = noise_like(x0, generator)
    t0 = float(times[0])
    x = (1 - t0) * x0 + t0 * z
    for k in range(times.shape[0] - 1):
        x = model.G(x, times[k], times[k + 1])
    return x


@torch.no_grad()
def bcm_round_trip(
    model: FlowMapModel,
    x0: Tensor,
    k: int,
    t_start: float = 0.02,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Invert ``x0`` in k jumps and regenerate along the same times in reverse (2k NFE).

    Returns ``(latent, reconstruction)``; the reconstruction error shrinks as k grows.
    """
    if not getattr(model, "bidirectional", False):
        raise ValueError("inversion needs a bidirectional model (method 'bcm')")
    k = check_count(k, "k", maximum=MAX_INTERVALS)
    times = edm_times(k, _check_t_start(t_start), model.sigma_max).to(x0.device)
    z = bcm_invert(model, x0, times, t_start, generator)
    back = times.flip(0).clone()
    back[-1] = 0.0
    return z, sample_multistep(model, z, back)


@torch.no_grad()
def bcm_zigzag(
    model: FlowMapModel,
    x1: Tensor,
    times: list[float],
    t_start: float = 0.02,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Zigzag sampling: denoise, amplify noise *with the network*, denoise again.

    :math:`\hat x_0 = G(X_1, 1, 0)`; then for each :math:`t_k` in ``times`` (descending, in
    (0, 1)): noise slightly to :math:`t_0` = ``t_start``, invert with the network
    :math:`x = G(\cdot, t_0, t_k)` and denoise :math:`\hat x_0 = G(x, t_k, 0)`. NFE = 1 + 2·len(times).
    """
    if not getattr(model, "bidirectional", False):
        raise ValueError("zigzag sampling needs a bidirectional model (method 'bcm')")
    t_start = _check_t_start(t_start)
    times = real_tensor(times, "times")
    if times.dim() > 1:
        raise ValueError(f"times must be a list of times; got shape {tuple(times.shape)}")
    for tk in times.reshape(-1).tolist():
        if not t_start < tk < 1:
            raise ValueError(f"zigzag times must lie in (t_start, 1); got {tk}")
    x = model.G(x1, 1.0, 0.0)
    for tk in times.reshape(-1).tolist():
        z = noise_like(x, generator)
        x = (1 - t_start) * x + t_start * z
        x = model.G(model.G(x, t_start, tk), tk, 0.0)
    return x


@torch.no_grad()
def bcm_interpolate(
    model: FlowMapModel,
    xa: Tensor,
    xb: Tensor,
    weights: Tensor,
    inv_steps: int = 2,
    gen_steps: int = 1,
    t_start: float = 0.02,
) -> Tensor:
    r"""Interpolate two data batches through the source: invert both, slerp, regenerate.

    ``xa, xb: (B, *D)``, ``weights: (K,)`` in [0, 1]; spherical interpolation
    :math:`z_\lambda = \frac{\sin((1-\lambda)\Omega)}{\sin\Omega} z_a + \frac{\sin(\lambda\Omega)}{\sin\Omega} z_b`
    keeps the Gaussian norm. Returns ``(K, B, *D)``.
    """
    _check_state(model, xa, "xa")
    _check_state(model, xb, "xb")
    if xa.shape != xb.shape:
        raise ValueError(
            f"xa and xb must have one shape; got {tuple(xa.shape)} and {tuple(xb.shape)}"
        )
    weights = real_tensor(weights, "weights").reshape(-1)
    inv_steps = check_count(inv_steps, "inv_steps", maximum=MAX_INTERVALS)
    gen_steps = check_count(gen_steps, "gen_steps", maximum=MAX_INTERVALS)
    g = torch.Generator().manual_seed(0)
    za = bcm_invert(model, xa, inv_steps, t_start, g)
    zb = bcm_invert(model, xb, inv_steps, t_start, g)
    a, b = za.flatten(1), zb.flatten(1)
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)
    omega = torch.arccos(cos.clamp(-1 + 1e-7, 1 - 1e-7))[:, None]
    out = []
    for lam in weights.tolist():
        z = (torch.sin((1 - lam) * omega) * a + torch.sin(lam * omega) * b) / torch.sin(omega)
        out.append(sample_multistep(model, z.view_as(za), gen_steps))
    return torch.stack(out)


DEFAULT_SAMPLER = {
    "fm": ("euler", 0.0),
    "cd": ("gamma", 1.0),
    "ct": ("gamma", 1.0),
    "ctm": ("flowmap", 0.0),
    "gctm": ("flowmap", 0.0),
    "bcm": ("gamma", 1.0),
}
"""How each method samples at NFE k by default: FM integrates its ODE; CMs (and BCM) only
learned jumps to 0, so they use CM multistep (γ = 1); CTM/GCTM jump deterministically."""


def make_sampler(model: FlowMapModel, kind: str, gamma: float = 0.0):
    """``sampler(x1, nfe) -> x0`` for ``kind`` in :data:`SAMPLERS` (for :func:`~gctm_mini.metrics.quality_by_nfe`).

    ``flowmap``: NFE equal jumps; ``gamma``: γ-sampling with NFE equal jumps; ``euler``/``heun``:
    the learned ODE.
    """
    check_choice(kind, SAMPLERS, "sampler")
    gamma = check_real(gamma, "gamma", ge=0.0, le=1.0)
    if kind == "flowmap":
        return lambda x1, nfe: sample_multistep(model, x1, nfe)
    if kind == "gamma":
        return lambda x1, nfe: gamma_sampling(model, x1, nfe, gamma)
    return lambda x1, nfe: sample_ode(model, x1, nfe, kind)
