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

from .validation import (
    MAX_SIZE,
    check_batch,
    check_choice,
    check_count,
    check_finite,
    mul_pow2,
    real_tensor,
)


def _data(data):
    """A data set ``data(n, generator)``: a callable as it is, or a data set name."""
    if isinstance(data, str):
        from .data2d import make_dataset

        return make_dataset(data)
    if not callable(data):
        raise TypeError(
            f"data must be a data set name or a callable data(n, generator); got {data!r}"
        )
    return data


def w2(x: Tensor, y: Tensor) -> float:
    """Exact 2-Wasserstein distance between the empirical measures of ``x: (n, d)`` and ``y: (m, d)``."""
    check_batch(x, name="x")
    check_batch(y, tuple(x.shape[1:]), name="y")
    a, b, scale = _rescaled(x, y)
    M = ot.dist(a.numpy(), b.numpy())  # squared Euclidean
    n, m = len(a), len(b)
    cost = ot.emd2(np.full(n, 1 / n), np.full(m, 1 / m), M, numItermax=max(100_000, 50 * n * m))
    return _unscaled(float(np.sqrt(max(cost, 0.0))), scale, "w2")


def _rescaled(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, float]:
    """``(x/s, y/s, s)`` in float64 on the CPU, flattened, with ``s = 2^k ≥ max|x|, max|y|``
    (exact) and both sets shifted by their joint mean: the distances of this module scale
    with s and ignore a common shift, so they can be computed at unit scale, without the
    overflow (or underflow) of squaring data at 1e200 (or 1e-200)."""
    a = x.detach().flatten(1).double().cpu()
    b = y.detach().flatten(1).double().cpu()
    big = max(float(a.abs().max()), float(b.abs().max()))
    k = math.frexp(big)[1] if big > 0 else 0
    a, b = a * 2.0**-k, b * 2.0**-k
    mid = torch.cat([a, b]).mean(0)
    return a - mid, b - mid, k


def _unscaled(value: float, k: int, what: str) -> float:
    out = mul_pow2(value, k)
    if not math.isfinite(out):
        raise ValueError(f"{what} = {value:.6g} × 2^{k} overflows float64; rescale the data")
    return out


def sliced_w2(x: Tensor, y: Tensor, n_proj: int = 512, seed: int = 0) -> float:
    """Sliced W2 with ``n_proj`` ≥ 1 random unit directions (equal sample sizes)."""
    check_batch(x, name="x")
    check_batch(y, tuple(x.shape[1:]), name="y")
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"sliced_w2 needs equal sample sizes; got {x.shape[0]} and {y.shape[0]} points"
        )
    n_proj = check_count(n_proj, "n_proj", maximum=MAX_SIZE)
    seed = check_count(seed, "seed", 0, 2**63 - 1)
    g = torch.Generator().manual_seed(seed)
    d = x[0].numel()
    theta = torch.randn(d, n_proj, generator=g, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    a, b, scale = _rescaled(x, y)
    px = (a @ theta).sort(0).values
    py = (b @ theta).sort(0).values
    return _unscaled(float((px - py).pow(2).mean().sqrt()), scale, "sliced_w2")


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
    hs = real_tensor(bandwidths, "bandwidths", torch.float64).reshape(-1).tolist()
    if not hs or not all(h > 0 for h in hs):
        raise ValueError(f"bandwidths must be finite numbers > 0 (at least one); got {hs}")
    bandwidths = hs
    a, b = x.detach().flatten(1).double().cpu(), y.detach().flatten(1).double().cpu()

    def k(u: Tensor, v: Tensor) -> Tensor:  # exact differences: no cancellation at any scale
        d = torch.cdist(u, v, compute_mode="donot_use_mm_for_euclid_dist")
        return sum(torch.exp(-0.5 * (d / h) ** 2) for h in bandwidths)  # no h² underflow

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
    for name, v in (("path", path), ("times", times)):
        if not torch.is_tensor(v):
            raise TypeError(f"{name} must be a torch.Tensor; got {type(v).__name__}")
    if path.dim() < 3 or times.shape != (path.shape[0],) or path.shape[0] < 2:
        raise ValueError(
            f"path must be (K + 1, B, *D) with K ≥ 1 and times (K + 1,); got path "
            f"{tuple(path.shape)} and times {tuple(times.shape)}"
        )
    check_finite(path, "path")
    check_finite(times, "times")
    times = times.double()
    d = times[1:] - times[:-1]
    if not (bool((d > 0).all()) or bool((d < 0).all())):
        raise ValueError(f"times must be strictly monotone; got {times.tolist()}")
    if path.shape[1] == 0:
        raise ValueError("path holds no trajectories (B = 0)")
    # S(c·x) = c²·S(x), and S scales like 1/|t_K − t_0|: compute at unit scale, then rescale
    p = path.detach().flatten(2).double().cpu()
    big = float(p.abs().max())
    k = math.frexp(big)[1] if big > 0 else 0
    p = p * 2.0**-k
    tt = times.detach().double().cpu()
    span = float((tt[-1] - tt[0]).abs())
    tt = tt / span
    h = tt[1:] - tt[:-1]
    u = (p[1:] - p[:-1]) / h[:, None, None]
    chord = (p[-1] - p[0]) / (tt[-1] - tt[0])
    dev = (u - chord[None]).pow(2).sum(-1)  # (K, B)
    value = float((h.abs()[:, None] * dev).sum(0).mean())
    out = mul_pow2(value, 2 * k) / span
    if not math.isfinite(out):
        raise ValueError(
            f"straightness overflows float64 (path values up to {big:.3g} over a time span of "
            f"{span:.3g}); rescale the path or the times"
        )
    return out


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
    check_count(seeds, "seeds", maximum=MAX_SIZE)
    check_count(n, "n", 2 if metric == "mmd2" else 1, MAX_SIZE)
    data = _data(data)
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
    v = real_tensor(values, "values", torch.float64).reshape(-1)
    if v.numel() == 0:
        raise ValueError("mean_std needs at least one value")
    mean, std = float(v.mean()), float(v.std(unbiased=False))
    if not (math.isfinite(mean) and math.isfinite(std)):
        raise ValueError(f"the mean or spread of {v.numel()} values overflows float64")
    return mean, std


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
    check_count(seeds, "seeds", maximum=MAX_SIZE)
    check_count(n, "n", 2 if metric == "mmd2" else 1, MAX_SIZE)
    if isinstance(nfes, str | bytes) or not isinstance(nfes, Sequence | torch.Tensor):
        raise TypeError(f"nfes must be a list of NFEs, e.g. [1, 2, 4]; got {nfes!r}")
    if len(nfes) == 0:
        raise ValueError("nfes must list at least one NFE")
    nfes = [check_count(k, "every NFE", maximum=MAX_SIZE) for k in list(nfes)]
    if not callable(sampler):
        raise TypeError(f"sampler must be a callable sampler(x1, nfe); got {sampler!r}")
    data = _data(data)
    fn = METRICS[metric]
    per: dict[int, list[float]] = {int(k): [] for k in nfes}
    for k in range(seeds):
        g = torch.Generator().manual_seed(base_seed + k)
        ref = data(n, g)
        x1 = source(n, g) if source is not None else torch.randn(n, *ref.shape[1:], generator=g)
        for nfe in per:
            with torch.no_grad():
                out = sampler(x1, nfe)
            if not torch.is_tensor(out) or out.shape != ref.shape:
                got = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
                raise ValueError(
                    f"the sampler must return {tuple(ref.shape)} at NFE {nfe}; got {got}"
                )
            check_finite(out, f"the sampler's output at NFE {nfe}")
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
