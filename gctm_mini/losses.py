r"""Training losses.

**Flow matching / DSM** (docs/conventions.md §4): with :math:`x_t = (1 - t)X_0 + tX_1`,

.. math::
    L_\text{FM} = \frac{\|g_\theta(x_t, t, t) - X_0\|^2}{c_\text{out}(t)^2},

summed over the coordinates of a sample (a squared norm, as written) and averaged over the
batch. The sum matters next to the consistency losses, whose per-sample pseudo-Huber norm
grows like √d: with a per-coordinate *mean* the FM term would shrink by a factor d on
images and training collapses to the trivial fixed point G(x, t, s) = x, v = 0. It equals a velocity regression
:math:`\|v_\theta(x_t, t) - (X_1 - X_0)\|^2 / \kappa(t)^2` because
:math:`g - X_0 = -t\,(v_\theta - (X_1 - X_0))` and :math:`c_\text{out} = t\kappa`. We evaluate it
through the network's own target, :math:`\|F_\theta - (aX_0 - c_\text{skip}X_1)/\kappa\|^2`
(:math:`a = (1 - c_\text{skip}\bar t)/t`), which has no 0/0 at small t.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .parameterization import FlowMapModel
from .randomness import Draws
from .timegrid import check_grid
from .validation import (
    MAX_SIZE,
    broadcast_time,
    check_choice,
    check_count,
    check_finite,
    check_real,
)

FM_TIME_SAMPLERS = ("lognormal", "uniform", "beta31")


def sample_fm_times(
    batch: int,
    kind: str = "lognormal",
    device=None,
    rng: Draws | None = None,
    source_prob: float = 0.0,
) -> Tensor:
    r"""Training times for the FM loss, ``(batch,)`` in (0, 1].

    - ``"lognormal"``: :math:`\log\sigma \sim \mathcal N(-1.2, 1.2^2)`, :math:`t = \sigma/(1+\sigma)` (EDM; generation);
    - ``"uniform"``: :math:`t \sim U(0, 1)`;
    - ``"beta31"``: :math:`t \sim \mathrm{Beta}(3, 1)` (image-to-image, mass near the source).

    With ``source_prob`` = p each time is instead exactly t = 1 (the source end) with
    probability p. A continuous law never draws t = 1, and for a *deterministic* paired
    coupling (X1 = H(X0), ε = 0) the velocity there, :math:`v(y, 1) = y - E[X_0 \mid X_1 = y]`,
    is not the limit of :math:`v(x, t)` as t → 1 (for t < 1, x_t determines X0), so only an
    atom at t = 1 trains the start of every trajectory the model is later run from. (The
    reference code draws FM times on the fine grid, whose top node t = 1 carries the
    probability 1 − F(t_{M−1}).)

    ``rng`` (:class:`~gctm_mini.randomness.Draws`) supplies the randomness (default: torch's global RNG).
    """
    check_choice(kind, FM_TIME_SAMPLERS, "FM time sampler")
    batch = check_count(batch, "batch", maximum=MAX_SIZE)
    source_prob = check_real(source_prob, "source_prob", ge=0.0, le=1.0)
    rng = rng or Draws()
    if kind == "lognormal":
        sigma = torch.exp(-1.2 + 1.2 * rng.randn(batch))
        t = sigma / (1 + sigma)
    elif kind == "uniform":
        t = rng.rand(batch)
    else:
        t = rng.rand(batch) ** (1 / 3)  # inverse CDF of Beta(3, 1)
    t = t.clamp(1e-5, 1.0)
    if source_prob > 0:
        t = torch.where(rng.rand(batch) < source_prob, torch.ones_like(t), t)
    return t.to(device)


def fm_loss(model: FlowMapModel, x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
    r"""Flow-matching loss :math:`\|g_\theta(x_t,t,t) - X_0\|^2 / c_\text{out}(t)^2` (sum over
    coordinates, mean over the batch), a scalar.

    Args:
        model: the flow-map model.
        x0: data ``(B, *D)``; x1: coupled source ``(B, *D)``; t: ``(B,)`` in [0, 1]
            (the loss is finite at t = 0; training draws t in (0, 1]).

    Raises ``ValueError`` (one line) for mismatched shapes, NaN/inf in x0, x1 or t, data
    beyond :func:`data_limit`, t outside [0, 1], or tensors on another device than the model;
    floating inputs of another dtype are cast to the model's. The value checks cost one
    host–device synchronization (:func:`check_loss_inputs`). The loss itself is not checked:
    from valid inputs it is finite unless the weights diverged, which the training loops
    detect and report.
    """
    x0, x1, t, _ = check_loss_inputs(model, x0, x1, t)
    c = model.coefficients(t, x0)
    tb = broadcast_time(t, x0)
    xt = (1 - tb) * x0 + tb * x1
    target = (c["a"] * x0 - c["c_skip"] * x1) / c["kappa"]
    label = model.label(t)
    pred = model.net(c["c_in"] * xt, label, label)
    return (pred - target).pow(2).flatten(1).sum(1).mean()


def data_limit(dtype: torch.dtype) -> float:
    r"""Largest :math:`|x|` the losses accept for a model computing in ``dtype``:
    :math:`\text{finfo.max}^{1/4}` (4.3e9 in float32, 1.3e77 in float64). A loss squares
    residuals of the data's scale divided by :math:`\kappa \ge 10^{-4}`; well inside this
    bound those squares stay finite, so a non-finite loss always means diverged weights."""
    return float(torch.finfo(dtype).max) ** 0.25


_ABSENT = object()
"""Default of the arguments a loss does not take (``None`` itself is a bad input)."""


def check_loss_inputs(
    model: FlowMapModel,
    x0: Tensor,
    x1: Tensor,
    t: Tensor = _ABSENT,
    grid: Tensor = _ABSENT,
    models: tuple = (),
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """The checks every loss makes at its boundary, returning the inputs in the model's dtype.

    Types, shapes and devices are checked without synchronizing; values (x0 and x1 finite with
    ``|x| ≤`` :func:`data_limit`, ``t`` in [0, 1], ``grid`` ascending from 0 to 1) in one
    ``bool``, the only synchronization; what is wrong is looked up only on failure. ``models``
    are further networks the loss evaluates (EMA, teacher), which must share the model's sample
    shape.
    """
    named = [("x0", x0), ("x1", x1)]
    named += [(k, v) for k, v in (("t", t), ("grid", grid)) if v is not _ABSENT]
    t = None if t is _ABSENT else t
    grid = None if grid is _ABSENT else grid
    for name, v in named:
        if not torch.is_tensor(v):
            raise TypeError(f"{name} must be a torch.Tensor; got {type(v).__name__}")
        if not v.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor; got dtype {v.dtype}")
    shape = tuple(model.data_shape)
    if x0.dim() < 2 or tuple(x0.shape[1:]) != shape or x0.shape[0] == 0:
        raise ValueError(
            f"x0 must have shape (B, {', '.join(map(str, shape))}); got {tuple(x0.shape)}"
        )
    if x1.shape != x0.shape:
        raise ValueError(f"x1 must have the shape of x0, {tuple(x0.shape)}; got {tuple(x1.shape)}")
    B = x0.shape[0]
    if t is not None and t.shape != (B,):
        raise ValueError(f"t must have shape ({B},), one time per sample; got {tuple(t.shape)}")
    if grid is not None and (grid.dim() != 1 or grid.shape[0] < 2):
        raise ValueError(f"grid must have shape (N + 1,) with N ≥ 1; got {tuple(grid.shape)}")
    for other in models:
        if not isinstance(other, FlowMapModel) or tuple(other.data_shape) != shape:
            got = getattr(other, "data_shape", type(other).__name__)
            raise ValueError(
                f"every network of the loss must be a FlowMapModel of sample shape {shape}; got {got}"
            )
    ref = model._weights_like()
    for name, v in named:
        if v.device != ref.device:
            raise ValueError(f"{name} is on {v.device} but the model is on {ref.device}")
    lim = data_limit(ref.dtype)
    ok = (x0.abs() <= lim).all() & (x1.abs() <= lim).all()  # False for NaN as well
    if t is not None:
        ok = ok & ((t >= 0) & (t <= 1)).all()
    if grid is not None:
        ok = ok & (grid[1:] > grid[:-1]).all() & (grid[0] == 0) & (grid[-1] == 1)
    if not bool(ok):  # the only synchronization; find what is wrong only on failure
        for name, v in (("x0", x0), ("x1", x1)):
            check_finite(v, name)
            if float(v.abs().max()) > lim:
                raise ValueError(
                    f"{name} has values up to {float(v.abs().max()):.3g}; the losses take "
                    f"|x| ≤ {lim:.3g} for a {ref.dtype} model (rescale the data)"
                )
        if grid is not None:
            check_grid(grid)
        if t is None:  # cannot happen: a check above failed
            raise ValueError("the loss inputs failed their checks")
        check_finite(t, "t")
        raise ValueError(
            f"t must lie in [0, 1]; got values in [{float(t.min()):.4g}, {float(t.max()):.4g}]"
        )
    cast = [v.to(ref.dtype) if v is not None else None for v in (x0, x1, t, grid)]
    return cast[0], cast[1], cast[2], cast[3]
