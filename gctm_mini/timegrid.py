r"""Time grids (docs/conventions.md §3): the EDM ρ-grid, coarse sub-grids, the N curriculum and the
per-sample (t, s, u) draw of GCTM training.

Fine grid (M intervals, ρ = 7):

.. math::
    \sigma_i = \big(\sigma_{\min}^{1/\rho} + \tfrac{i}{M}(\sigma_{\max}^{1/\rho}
    - \sigma_{\min}^{1/\rho})\big)^{\rho}, \quad t_i = \sigma_i / (1 + \sigma_i),

with :math:`t_0 = 0` and :math:`t_M = 1` forced, so the grid runs from data (0) to source (1).
A coarse grid with N intervals takes every (M/N)-th point; N follows a doubling curriculum.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .interpolant import SIGMA_MAX, SIGMA_MIN
from .validation import MAX_SIZE, check_count, check_finite, check_real

MAX_INTERVALS = 2**20
"""Most intervals a grid may have (the curriculum caps N at 1024; beyond 2^20 a request is a
typo, and float32 could not tell the nodes apart anyway)."""


def check_grid(grid: Tensor, name: str = "grid") -> Tensor:
    """Require a training grid: a finite floating ``(N + 1,)`` tensor, N ≥ 1, strictly
    ascending from exactly 0 to exactly 1. Returns ``grid``."""
    if not torch.is_tensor(grid) or grid.dim() != 1 or grid.shape[0] < 2:
        shape = tuple(grid.shape) if torch.is_tensor(grid) else type(grid).__name__
        raise ValueError(f"{name} must be a tensor of shape (N + 1,) with N ≥ 1; got {shape}")
    check_finite(grid, name)
    if not grid.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor; got dtype {grid.dtype}")
    if not bool((grid[1:] > grid[:-1]).all() & (grid[0] == 0) & (grid[-1] == 1)):
        raise ValueError(
            f"{name} must ascend strictly from 0 to 1; got {[round(v, 4) for v in grid.tolist()]}"
        )
    return grid


def fine_grid(
    M: int = 1024,
    sigma_min: float = SIGMA_MIN,
    sigma_max: float = SIGMA_MAX,
    rho: float = 7.0,
    dtype: torch.dtype = torch.float64,
    shift: float = 0.0,
) -> Tensor:
    """The EDM ρ-grid mapped to t ∈ [0, 1]: ``(M + 1,)`` ascending, ``t[0] = 0``, ``t[M] = 1``.

    ``shift`` δ ∈ [0, 1) moves every interior node from position i/M to (i − δ)/M in the
    ρ-space (the end nodes stay at 0 and 1). Training with a fresh δ per batch lets a
    coarse grid cover every time, so G(x, t, s) is learned between the nodes too; δ = 0 is
    the reference grid.
    """
    M = check_count(M, "M (grid intervals)", maximum=MAX_INTERVALS)
    sigma_min = check_real(sigma_min, "sigma_min", gt=0.0)
    sigma_max = check_real(sigma_max, "sigma_max", gt=0.0)
    if not sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max; got {sigma_min}, {sigma_max}")
    rho = check_real(rho, "rho", ge=0.1, le=100.0)  # beyond: σ_min^(1/ρ) under- or overflows
    shift = check_real(shift, "shift", ge=0.0, lt=1.0)
    i = torch.arange(M + 1, dtype=torch.float64)
    i[1:M] -= shift
    a, b = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigma = (a + i / M * (b - a)) ** rho
    t = sigma / (1 + sigma)
    t[0], t[-1] = 0.0, 1.0
    t = t.to(dtype)
    if bool((t[1:] <= t[:-1]).any()):  # nodes that coincide in float64 or in ``dtype``
        raise ValueError(
            f"the grid's nodes are not distinct in {dtype} (M = {M}, sigma_min = {sigma_min:g}, "
            f"sigma_max = {sigma_max:g}, rho = {rho:g}); use fewer intervals or a wider σ range"
        )
    return t


def edm_times(k: int, t_lo: float = 0.0, sigma_max: float = SIGMA_MAX, rho: float = 7.0) -> Tensor:
    """``k + 1`` ascending times from ``t_lo`` to 1 with EDM ρ-spacing (dense near ``t_lo``).

    ``t_lo = 0`` gives :func:`fine_grid` with ``M = k``; ``t_lo > 0`` starts the ρ-grid at
    σ(t_lo) (used for inversion from a slightly noised data point). float32.
    """
    t_lo = check_real(t_lo, "t_lo", ge=0.0, lt=1.0)
    sig_lo = t_lo / (1 - t_lo) if t_lo > 0 else SIGMA_MIN
    g = fine_grid(k, sigma_min=sig_lo, sigma_max=sigma_max, rho=rho, dtype=torch.float32)
    g[0] = t_lo
    return g


def coarse_grid(fine: Tensor, N: int) -> Tensor:
    """Every ``(M/N)``-th point of ``fine`` (``(M + 1,)``): a grid with N intervals, ``(N + 1,)``."""
    check_grid(fine, "fine")
    M = fine.shape[0] - 1
    N = check_count(N, "N")
    if M % N != 0:
        raise ValueError(f"N must divide M = {M}; got N = {N}")
    return fine[:: M // N].clone()


def uniform_grid(
    steps: int, t_start: float = 1.0, t_end: float = 0.0, dtype=torch.float32
) -> Tensor:
    """``steps + 1`` equally spaced times from ``t_start`` to ``t_end``, both in [0, 1]
    (sampling grids)."""
    steps = check_count(steps, "steps", maximum=MAX_INTERVALS)
    t_start = check_real(t_start, "t_start", ge=0.0, le=1.0)
    t_end = check_real(t_end, "t_end", ge=0.0, le=1.0)
    return torch.linspace(t_start, t_end, steps + 1, dtype=dtype)


def curriculum_N(step: int, start: int = 4, double_every: int = 50_000, cap: int = 1024) -> int:
    """Number of coarse intervals at training iteration ``step``: ``min(start·2^(step // K), cap)``."""
    step = check_count(step, "step", 0)
    start = check_count(start, "start")
    double_every = check_count(double_every, "double_every", 0)
    cap = check_count(cap, "cap")
    if double_every == 0:
        return min(start, cap)
    doublings = step // double_every
    if doublings >= cap.bit_length():  # start·2^doublings ≥ 2^bit_length > cap
        return cap
    return min(start * 2**doublings, cap)


T_SNAPS = ("nearest", "up")
"""How :func:`draw_tsu` snaps the continuous t to a grid node."""


def draw_tsu(
    grid: Tensor, batch: int, rng=None, snap: str = "nearest"
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Per-sample grid indices ``(t_idx, s_idx, u_idx)`` with ``t > u ≥ s`` (docs/conventions.md §3).

    - s-index in {0, …, N−1} with :math:`P(s) \propto 1 - t_s`;
    - :math:`t = \lambda + (1 - \lambda)\,t_s`, :math:`\lambda \sim \mathrm{Beta}(1.2, 2)`, snapped
      to a grid index (``snap``) and then raised to at least ``s_idx + 1``;
    - u-index uniform in {s, …, t − 1} (u = s allowed: the target is then the pure ODE solution).

    ``snap="nearest"`` takes the nearest node. ``snap="up"`` takes the nearest node's index
    + 1 (capped at N), which is what the reference code (1202kbs/GCTM, ``discretizations.py``)
    does in effect: its test ``distance < t`` compares the distance to the nearest node with
    t itself, which holds unless the nearest node is t = 0, so it always moves one node up.
    At N = 4, σ_max = 80 (fixed grid) "up" trains t = 1 in 11.6 % of draws and one-interval
    jumps (t − s = 1) in 33 %; "nearest" in 2.7 % and 80 %. At σ_max = 500 (image-to-image):
    2.7 % / 41 % vs 0.6 % / 90 %.

    Args:
        grid: coarse grid ``(N + 1,)`` ascending from 0 to 1.
        batch: number of samples B.
        rng: a :class:`~gctm_mini.randomness.Draws` (default: torch's global RNG).
        snap: ``"nearest"`` or ``"up"`` (see above; :data:`T_SNAPS`).

    Returns:
        three ``(B,)`` ``long`` tensors on ``grid``'s device.
    """
    from .randomness import Draws

    check_grid(grid)
    batch = check_count(batch, "batch", maximum=MAX_SIZE)
    if snap not in T_SNAPS:
        raise ValueError(f"snap must be one of {', '.join(T_SNAPS)}; got {snap!r}")
    rng = rng or Draws()
    N = grid.shape[0] - 1
    dev = grid.device
    s_idx = rng.categorical(1 - grid[:N], batch).to(dev)
    lam = rng.beta(1.2, 2.0, batch).to(dev, grid.dtype)
    t_cont = lam + (1 - lam) * grid[s_idx]
    hi = torch.bucketize(t_cont, grid).clamp(1, N)  # grid[hi - 1] < t_cont <= grid[hi]
    nearer_low = (t_cont - grid[hi - 1]) < (grid[hi] - t_cont)
    nearest = hi - nearer_low.long()
    t_idx = (nearest + 1).clamp(max=N) if snap == "up" else nearest
    t_idx = torch.maximum(t_idx, s_idx + 1)
    u_idx = s_idx + (rng.rand(batch).to(dev) * (t_idx - s_idx)).long()
    u_idx = torch.minimum(u_idx, t_idx - 1)
    return t_idx, s_idx, u_idx
