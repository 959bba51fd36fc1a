r"""ODE solvers for the probability-flow ODE :math:`dx/dt = v(x, t)`.

Euler: :math:`x' = x + h\,v(x, t)`.
Heun (2nd order): :math:`\tilde x = x + h\,v(x, t)`, :math:`x' = x + \tfrac h2\,(v(x, t) +
v(\tilde x, t'))`, with :math:`h = t' - t`; a step that lands on t = 0 is a plain Euler
step (as in EDM), so a Heun solve of K steps ending at 0 costs 2K − 1 evaluations.

Two forms: :func:`integrate` follows one time grid for the whole batch;
:func:`integrate_per_sample` moves every sample along a shared grid from its own start
index to its own end index in one vectorized loop (used by consistency losses).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .validation import (
    MAX_SIZE,
    broadcast_time,
    check_batch,
    check_choice,
    check_count,
    check_finite,
)

VelocityFn = Callable[[Tensor, Tensor], Tensor]
"""``v(x: (B, *D), t: (B,)) -> (B, *D)``."""

METHODS = ("euler", "heun")


def _step(v: VelocityFn, x: Tensor, t: Tensor, t_next: Tensor, method: str) -> Tensor:
    """One step from per-sample ``t: (B,)`` to ``t_next: (B,)``."""
    h = broadcast_time(t_next - t, x)
    d = _velocity_of(v, x, t)
    x_euler = x + h * d
    if method == "euler":
        return x_euler
    corr = t_next > 0  # Heun correction everywhere except on steps landing at t = 0
    if not bool(corr.any()):
        return x_euler
    out = x_euler.clone()
    d2 = _velocity_of(v, x_euler[corr], t_next[corr])
    out[corr] = x[corr] + 0.5 * h[corr] * (d[corr] + d2)
    return out


def _velocity_of(v: VelocityFn, x: Tensor, t: Tensor) -> Tensor:
    """``v(x, t)``, refused with one line if it is not a tensor of ``x``'s shape."""
    d = v(x, t)
    if not torch.is_tensor(d) or d.shape != x.shape:
        got = tuple(d.shape) if torch.is_tensor(d) else type(d).__name__
        raise ValueError(f"the velocity must return the state's shape {tuple(x.shape)}; got {got}")
    return d


def nfe_of(times: Tensor, method: str) -> int:
    """Number of velocity evaluations of :func:`integrate` on ``times``."""
    check_choice(method, METHODS, "ODE method")
    times = _check_grid(times)
    K = times.shape[0] - 1
    if method == "euler":
        return K
    return 2 * K - int(float(times[-1]) == 0.0)


def steps_for_nfe(nfe: int, method: str) -> int:
    """Largest number of steps whose cost (ending at t = 0) is ≤ ``nfe`` evaluations."""
    check_choice(method, METHODS, "ODE method")
    nfe = check_count(nfe, "nfe", maximum=MAX_SIZE)
    return nfe if method == "euler" else (nfe + 1) // 2


def integrate(
    v: VelocityFn,
    x: Tensor,
    times: Tensor,
    method: str = "heun",
    return_path: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Solve :math:`dx/dt = v(x, t)` along ``times`` for the whole batch.

    Args:
        v: velocity ``v(x, t)`` with per-sample ``t: (B,)``.
        x: state at ``times[0]``, ``(B, *D)``, floating point; ``v`` must accept its dtype
            and device (``FlowMapModel.velocity`` accepts any floating dtype and answers in
            it; the unchecked ``_velocity`` needs the model's own dtype).
        times: ``(K + 1,)`` monotone grid in [0, 1] (descending = source → data).
        method: ``"euler"`` or ``"heun"``.
        return_path: also return the states at every grid time, ``(K + 1, B, *D)``.

    Returns:
        state at ``times[-1]`` (and the path if asked). A solution that is not finite (the
        velocity returned NaN/inf, or the state overflowed its dtype) raises ``ValueError``.
    """
    check_choice(method, METHODS, "ODE method")
    _check_state(x)
    times = _check_grid(times)
    path = [x] if return_path else None
    B = x.shape[0]
    for k in range(times.shape[0] - 1):
        t = times[k].to(x).expand(B)
        tn = times[k + 1].to(x).expand(B)
        x = _step(v, x, t, tn, method)
        if path is not None:
            path.append(x)
    out = (x, torch.stack(path)) if path is not None else x
    _check_solution(out[1] if path is not None else x)
    return out


def integrate_per_sample(
    v: VelocityFn,
    x: Tensor,
    grid: Tensor,
    start_idx: Tensor,
    end_idx: Tensor,
    method: str = "heun",
) -> Tensor:
    """Move each sample along ``grid`` from ``grid[start_idx[b]]`` to ``grid[end_idx[b]]``.

    One vectorized loop of ``max |start − end|`` iterations; at each iteration every sample
    not yet at its end index takes one grid step towards it (either direction), and the
    velocity is evaluated only on those samples. No Python loop over samples.

    Args:
        v: velocity with per-sample times.
        x: ``(B, *D)`` at the start times.
        grid: ``(N + 1,)`` ascending in [0, 1].
        start_idx, end_idx: ``(B,)`` integer indices into ``grid``.

    Returns:
        ``(B, *D)`` at the end times (unchanged where ``start_idx == end_idx``); a solution
        that is not finite raises ``ValueError``. The consistency losses call the unchecked
        :func:`_integrate_per_sample`, so that a diverging model reaches the training loop's
        divergence check as a non-finite loss.
    """
    check_choice(method, METHODS, "ODE method")
    _check_state(x)
    grid = _check_grid(grid)
    if bool((grid[1:] <= grid[:-1]).any()):
        raise ValueError("grid must be strictly ascending for integrate_per_sample")
    B = x.shape[0]
    for name, idx in (("start_idx", start_idx), ("end_idx", end_idx)):
        if (
            not torch.is_tensor(idx)
            or idx.shape != (B,)
            or idx.dtype not in (torch.int32, torch.int64)
        ):
            raise ValueError(f"{name} must be an integer tensor of shape ({B},)")
        if bool((idx < 0).any()) or bool((idx >= grid.shape[0]).any()):
            raise ValueError(f"{name} must index the grid (0 … {grid.shape[0] - 1})")
    return _check_solution(_integrate_per_sample(v, x, grid, start_idx, end_idx, method))


def _integrate_per_sample(
    v: VelocityFn,
    x: Tensor,
    grid: Tensor,
    start_idx: Tensor,
    end_idx: Tensor,
    method: str = "heun",
) -> Tensor:
    """:func:`integrate_per_sample` without the checks (for training loops)."""
    grid = grid.to(x)
    cur = start_idx.clone().long()
    end = end_idx.long()
    direction = torch.sign(end - cur)
    x = x.clone()
    for _ in range(int((end - cur).abs().max())):
        active = cur != end
        if not bool(active.any()):
            break
        nxt = cur + direction
        x[active] = _step(v, x[active], grid[cur[active]], grid[nxt[active]], method)
        cur = torch.where(active, nxt, cur)
    return x


def _check_state(x: Tensor) -> None:
    check_batch(x)
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor; got dtype {x.dtype}")


def _check_solution(x: Tensor) -> Tensor:
    if not bool(torch.isfinite(x).all()):
        raise ValueError(
            "the ODE solution is not finite: the velocity returned NaN/inf or the state "
            f"overflowed {x.dtype}"
        )
    return x


def _check_grid(times: Tensor) -> Tensor:
    if not torch.is_tensor(times) or times.dim() != 1 or times.shape[0] < 2:
        shape = tuple(times.shape) if torch.is_tensor(times) else type(times).__name__
        raise ValueError(f"times must be a 1-D tensor with at least two entries; got {shape}")
    check_finite(times, "times")
    if not times.is_floating_point():
        times = times.double()
    if bool(((times < 0) | (times > 1)).any()):
        raise ValueError("times must lie in [0, 1]")
    d = times[1:] - times[:-1]
    if not (bool((d < 0).all()) or bool((d > 0).all())):
        raise ValueError("times must be strictly monotone")
    return times
