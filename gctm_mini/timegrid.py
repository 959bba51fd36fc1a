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
    if M < 1:
        raise ValueError(f"M must be ≥ 1; got {M}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max; got {sigma_min}, {sigma_max}")
    if not 0.0 <= shift < 1.0:
        raise ValueError(f"shift must lie in [0, 1); got {shift}")
    i = torch.arange(M + 1, dtype=torch.float64)
    i[1:M] -= shift
    a, b = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigma = (a + i / M * (b - a)) ** rho
    t = sigma / (1 + sigma)
    t[0], t[-1] = 0.0, 1.0
    return t.to(dtype)


def edm_times(k: int, t_lo: float = 0.0, sigma_max: float = SIGMA_MAX, rho: float = 7.0) -> Tensor:
    """``k + 1`` ascending times from ``t_lo`` to 1 with EDM ρ-spacing (dense near ``t_lo``).

    ``t_lo = 0`` gives :func:`fine_grid` with ``M = k``; ``t_lo > 0`` starts the ρ-grid at
    σ(t_lo) (used for inversion from a slightly noised data point). float32.
    """
    if not 0.0 <= t_lo < 1.0:
        raise ValueError(f"t_lo must lie in [0, 1); got {t_lo}")
    sig_lo = t_lo / (1 - t_lo) if t_lo > 0 else SIGMA_MIN
    g = fine_grid(k, sigma_min=sig_lo, sigma_max=sigma_max, rho=rho, dtype=torch.float32)
    g[0] = t_lo
    return g


def coarse_grid(fine: Tensor, N: int) -> Tensor:
    """Every ``(M/N)``-th point of ``fine`` (``(M + 1,)``): a grid with N intervals, ``(N + 1,)``."""
    M = fine.shape[0] - 1
    if N < 1 or M % N != 0:
        raise ValueError(f"N must divide M = {M}; got N = {N}")
    return fine[:: M // N].clone()


def uniform_grid(
    steps: int, t_start: float = 1.0, t_end: float = 0.0, dtype=torch.float32
) -> Tensor:
    """``steps + 1`` equally spaced times from ``t_start`` to ``t_end`` (sampling grids)."""
    if steps < 1:
        raise ValueError(f"steps must be ≥ 1; got {steps}")
    return torch.linspace(t_start, t_end, steps + 1, dtype=dtype)


def curriculum_N(step: int, start: int = 4, double_every: int = 50_000, cap: int = 1024) -> int:
    """Number of coarse intervals at training iteration ``step``: ``min(start·2^(step // K), cap)``."""
    if step < 0:
        raise ValueError(f"step must be ≥ 0; got {step}")
    if double_every <= 0:
        return min(start, cap)
    return int(min(start * 2 ** (step // double_every), cap))


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
