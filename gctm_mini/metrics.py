r"""Distances between two sample sets, each read against the data–data floor.

- exact :math:`W_2`: :math:`\big(\min_{P} \sum_{ij} P_{ij}\|x_i - y_j\|^2\big)^{1/2}` over couplings of
  the two empirical measures, solved with POT (``ot.emd2``, float64);
- sliced :math:`W_2`: root mean over random directions θ of the 1-D :math:`W_2^2` of the projections;
- MMD² (unbiased) with a sum of Gaussian kernels at several bandwidths.

Two finite samples of the *same* distribution are not at distance 0: :func:`data_floor`
measures that floor at the same sample size, and every report puts it beside the model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import ot
import torch
from torch import Tensor

from .validation import check_batch, check_choice, check_count, check_finite


def w2(x: Tensor, y: Tensor) -> float:
    """Exact 2-Wasserstein distance between the empirical measures of ``x: (n, d)`` and ``y: (m, d)``."""
    check_batch(x, name="x")
    check_batch(y, tuple(x.shape[1:]), name="y")
    a = x.detach().flatten(1).double().cpu().numpy()
    b = y.detach().flatten(1).double().cpu().numpy()
    M = ot.dist(a, b)  # squared Euclidean
    n, m = len(a), len(b)
    cost = ot.emd2(np.full(n, 1 / n), np.full(m, 1 / m), M, numItermax=max(100_000, 50 * n * m))
    return float(np.sqrt(max(cost, 0.0)))


def sliced_w2(x: Tensor, y: Tensor, n_proj: int = 512, seed: int = 0) -> float:
    """Sliced W2 with ``n_proj`` ≥ 1 random unit directions (equal sample sizes)."""
    check_batch(x, name="x")
    check_batch(y, tuple(x.shape[1:]), name="y")
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"sliced_w2 needs equal sample sizes; got {x.shape[0]} and {y.shape[0]} points"
        )
    check_count(n_proj, "n_proj")
    g = torch.Generator().manual_seed(seed)
    d = x[0].numel()
    theta = torch.randn(d, n_proj, generator=g, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    px = (x.detach().flatten(1).double().cpu() @ theta).sort(0).values
    py = (y.detach().flatten(1).double().cpu() @ theta).sort(0).values
    return float((px - py).pow(2).mean().sqrt())


def mmd2(x: Tensor, y: Tensor, bandwidths: Sequence[float] = (0.1, 0.2, 0.5, 1.0, 2.0)) -> float:
    r"""Unbiased MMD² with :math:`k(a, b) = \sum_h \exp(-\|a - b\|^2 / (2h^2))` (can dip below 0).

    The unbiased estimator averages over pairs of distinct points, so each set needs at
    least 2 points; ``bandwidths`` h must be finite and > 0 (at least one).
    """
    check_batch(x, name="x")
    check_batch(y, tuple(x.shape[1:]), name="y")
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError(
            f"mmd2 needs at least 2 points per set (it averages over distinct pairs); "
            f"got {x.shape[0]} and {y.shape[0]}"
        )
    bandwidths = [float(h) for h in bandwidths]
    if not bandwidths or not all(math.isfinite(h) and h > 0 for h in bandwidths):
        raise ValueError(f"bandwidths must be finite numbers > 0 (at least one); got {bandwidths}")
    a, b = x.detach().flatten(1).double().cpu(), y.detach().flatten(1).double().cpu()

    def k(u: Tensor, v: Tensor) -> Tensor:
        d2 = torch.cdist(u, v).pow(2)
        return sum(torch.exp(-d2 / (2 * h * h)) for h in bandwidths)

    n, m = len(a), len(b)
    kxx, kyy, kxy = k(a, a), k(b, b), k(a, b)
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(sxx + syy - 2 * kxy.mean())


def straightness(path: Tensor, times: Tensor) -> float:
    r"""How far ODE trajectories are from straight constant-speed lines (0 = perfectly straight).

    For a path :math:`x_{t_0}, …, x_{t_K}` (``path: (K + 1, B, *D)``, ``times: (K + 1,)``) with
    segment velocities :math:`u_k = (x_{t_{k+1}} - x_{t_k}) / (t_{k+1} - t_k)` and the chord
    velocity :math:`\bar u = (x_{t_K} - x_{t_0}) / (t_K - t_0)`:

    .. math::
        S = E\Big[\textstyle\sum_k |t_{k+1} - t_k|\,\|u_k - \bar u\|^2\Big] \,/\, |t_K - t_0|,

    the discrete form of Liu et al.'s :math:`\int_0^1 E\|(X_1 - X_0) - v(x_t, t)\|^2 dt` along
    the trajectories. A straight path can be integrated exactly by one Euler step.
    """
    if path.dim() < 3 or times.shape != (path.shape[0],) or path.shape[0] < 2:
        raise ValueError(
            f"path must be (K + 1, B, *D) with K ≥ 1 and times (K + 1,); got path "
            f"{tuple(path.shape)} and times {tuple(times.shape)}"
        )
    check_finite(path, "path")
    check_finite(times, "times")
    d = times[1:] - times[:-1]
    if not (bool((d > 0).all()) or bool((d < 0).all())):
        raise ValueError(f"times must be strictly monotone; got {times.tolist()}")
    p = path.detach().flatten(2).double().cpu()
    tt = times.detach().double().cpu()
    h = tt[1:] - tt[:-1]
    u = (p[1:] - p[:-1]) / h[:, None, None]
    chord = (p[-1] - p[0]) / (tt[-1] - tt[0])
    dev = (u - chord[None]).pow(2).sum(-1)  # (K, B)
    return float((h.abs()[:, None] * dev).sum(0).mean() / (tt[-1] - tt[0]).abs())


METRICS: dict[str, Callable[[Tensor, Tensor], float]] = {
    "w2": w2,
    "sliced_w2": sliced_w2,
    "mmd2": mmd2,
}


def floor_values(
    data: Callable[..., Tensor],
    n: int,
    seeds: int = 3,
    metric: str = "w2",
    base_seed: int = 20_000,
) -> list[float]:
    """The data–data floor seed by seed: ``metric(fresh_k, ref_k)`` for k < ``seeds``.

    ``ref_k`` is the reference set :func:`quality_by_nfe` draws for seed k (the first n points
    of ``data`` from a generator seeded ``base_seed + k``) and ``fresh_k`` the next n points of
    the same stream, an independent sample. So the floor is measured by the same protocol and
    against the same reference sets as the models it is printed beside. ``seeds`` ≥ 1;
    ``n`` ≥ 1 (≥ 2 for ``mmd2``).
    """
    check_choice(metric, METRICS, "metric")
    check_count(seeds, "seeds")
    check_count(n, "n", 2 if metric == "mmd2" else 1)
    vals = []
    for k in range(seeds):
        g = torch.Generator().manual_seed(base_seed + k)
        ref = data(n, g)
        vals.append(METRICS[metric](data(n, g), ref))
    return vals


def data_floor(
    data: Callable[..., Tensor],
    n: int,
    seeds: int = 3,
    metric: str = "w2",
    base_seed: int = 20_000,
) -> float:
    """Mean of :func:`floor_values`: two independent n-point samples of ``data``, ``seeds`` times."""
    return float(np.mean(floor_values(data, n, seeds, metric, base_seed)))


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and (population) standard deviation of a list of per-seed results."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std())


def format_pm(mean: float, std: float, digits: int = 3) -> str:
    """``"0.142 ± 0.006"``: how every table of the course prints a result over seeds."""
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


@dataclass
class NFEReport:
    """Quality by NFE: ``values[nfe]`` is the mean over seeds, ``stds[nfe]`` the spread; the
    floor likewise (``floor ± floor_std``, same seeds and reference sets)."""

    metric: str
    n: int
    seeds: int
    floor: float
    values: dict[int, float] = field(default_factory=dict)
    stds: dict[int, float] = field(default_factory=dict)
    floor_std: float = 0.0

    def pm(self, nfe: int, digits: int = 3) -> str:
        """``"mean ± std"`` at ``nfe``."""
        return format_pm(self.values[nfe], self.stds[nfe], digits)

    def to_json(self) -> dict:
        return {
            "metric": self.metric,
            "n": self.n,
            "seeds": self.seeds,
            "floor": self.floor,
            "floor_std": self.floor_std,
            self.metric: {str(k): v for k, v in self.values.items()},
            "std": {str(k): v for k, v in self.stds.items()},
        }

    def table(self, label: str = "model") -> str:
        head = f"{'NFE':>5} | {label + f' ({self.seeds} seeds)':>22} | ratio to floor"
        rows = [
            f"{nfe:>5} | {self.pm(nfe):>22} | {v / self.floor:6.2f}×"
            for nfe, v in self.values.items()
        ]
        fl = format_pm(self.floor, self.floor_std)
        return "\n".join([head, *rows, f"floor | {fl:>22} | (data vs data, n={self.n})"])


def quality_by_nfe(
    sampler: Callable[[Tensor, int], Tensor],
    data: Callable[..., Tensor],
    nfes: Sequence[int],
    n: int = 4096,
    seeds: int = 3,
    metric: str = "w2",
    source: Callable[..., Tensor] | None = None,
    base_seed: int = 20_000,
    floor: float | None = None,
    floor_std: float = 0.0,
) -> NFEReport:
    """Evaluate ``sampler(x1, nfe) -> x0`` against fresh data at each NFE.

    For each seed k: draw the reference set of n data points and n source points
    (``source(n, g)``, default N(0, I)) from a generator seeded ``base_seed + k``, generate at
    every NFE, and measure ``metric``; report mean ± std over seeds with the data–data floor
    measured on the same reference sets (:func:`floor_values`). Pass ``floor`` (and
    ``floor_std``) from an earlier report on the same data, n, seeds and metric to skip
    recomputing it.
    """
    check_choice(metric, METRICS, "metric")
    check_count(seeds, "seeds")
    check_count(n, "n", 2 if metric == "mmd2" else 1)
    if len(nfes) == 0:
        raise ValueError("nfes must list at least one NFE")
    for k in nfes:
        check_count(k, "every NFE")
    fn = METRICS[metric]
    per: dict[int, list[float]] = {int(k): [] for k in nfes}
    for k in range(seeds):
        g = torch.Generator().manual_seed(base_seed + k)
        ref = data(n, g)
        x1 = source(n, g) if source is not None else torch.randn(n, *ref.shape[1:], generator=g)
        for nfe in per:
            with torch.no_grad():
                out = sampler(x1, nfe)
            per[nfe].append(fn(out, ref))
    if floor is None:
        floor, floor_std = mean_std(floor_values(data, n, seeds, metric, base_seed))
    return NFEReport(
        metric,
        n,
        seeds,
        floor,
        {k: mean_std(v)[0] for k, v in per.items()},
        {k: mean_std(v)[1] for k, v in per.items()},
        floor_std,
    )
