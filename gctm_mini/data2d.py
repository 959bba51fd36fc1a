r"""Two-dimensional toy distributions for X0 (data) or X1 (a second source for translation).

Every data set is a sampler ``n -> (n, 2)`` tensor; any such callable is accepted wherever
a data set is expected (see :func:`as_sampler`). Gaussian mixtures (including
``"8gaussians"``) expose their weights, means and covariances, so the analytic oracle
(:mod:`gctm_mini.oracle`) can compute their exact velocity and flow map.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .validation import MAX_SIZE, check_count, check_finite, check_real

Sampler = Callable[[int], Tensor]


class Dataset2D:
    """Base class: a named sampler. ``sample(n, generator=None) -> (n, 2)`` float32."""

    name = "dataset"

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError

    def __call__(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        n = check_count(n, "n", maximum=MAX_SIZE)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator; got {type(generator).__name__}")
        x = self.sample(n, generator)
        if not bool(torch.isfinite(x).all()):
            raise ValueError(
                f"{self!r} drew values beyond {x.dtype}'s range (noise or scale too large)"
            )
        return x

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class GaussianMixture(Dataset2D):
    r"""Mixture :math:`\sum_k w_k\,\mathcal N(\mu_k, \Sigma_k)` in d dimensions.

    Args:
        weights: ``(K,)`` positive (normalized here).
        means: ``(K, d)``.
        covs: ``(K, d, d)`` symmetric positive definite, or ``(K,)`` / float for isotropic
            :math:`\sigma_k^2 I`.
    """

    name = "gmm"

    def __init__(self, weights: Sequence[float] | Tensor, means, covs) -> None:
        w = _float64(weights, "weights").flatten()
        mu = _float64(means, "means")
        if mu.dim() != 2 or mu.shape[0] != w.shape[0] or 0 in mu.shape:
            raise ValueError(
                f"means must have shape (K, d) with K = {w.shape[0]} weights and d ≥ 1; "
                f"got {tuple(mu.shape)}"
            )
        if bool((w <= 0).any()):
            raise ValueError("weights must be positive and finite")
        K, d = mu.shape
        c = _float64(covs, "covs")
        if c.dim() == 0:
            c = c.expand(K)
        if c.dim() == 1:
            c = c[:, None, None] * torch.eye(d, dtype=torch.float64)
        if c.shape != (K, d, d):
            raise ValueError(f"covs must have shape ({K}, {d}, {d}); got {tuple(c.shape)}")
        if not torch.allclose(c, c.transpose(-1, -2)):
            raise ValueError("covariances must be symmetric")
        if bool((torch.linalg.eigvalsh(c) <= 0).any()):
            raise ValueError("covariances must be positive definite")
        self.weights, self.means, self.covs = w / w.sum(), mu, c.contiguous()
        chol, info = torch.linalg.cholesky_ex(self.covs)
        if bool((info != 0).any()):
            raise ValueError("covariances must be positive definite (Cholesky failed)")
        self._chol = chol

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        x = self.means[k] + (self._chol[k] @ z[:, :, None]).squeeze(-1)
        return x.float()

    def mean(self) -> Tensor:
        return (self.weights[:, None] * self.means).sum(0)

    def covariance(self) -> Tensor:
        m = self.mean()
        dm = self.means - m
        return (self.weights[:, None, None] * (self.covs + dm[:, :, None] * dm[:, None, :])).sum(0)

    def __repr__(self) -> str:
        return f"GaussianMixture(K={len(self.weights)}, d={self.dim})"


def eight_gaussians(radius: float = 2.0, std: float = 0.15) -> GaussianMixture:
    """Eight equal Gaussians on a circle of ``radius`` (isotropic ``std``)."""
    ang = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    means = radius * torch.stack([ang.cos(), ang.sin()], 1)
    g = GaussianMixture(torch.ones(8), means, torch.full((8,), std**2))
    g.name = "8gaussians"
    return g


def _float64(values, name: str) -> Tensor:
    """``values`` (numbers, nested lists or a tensor) as a finite float64 tensor."""
    if torch.is_tensor(values):
        check_finite(values, name)
        return values.double()
    try:
        t = torch.as_tensor(values, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(
            f"{name} must be numbers or nested lists of numbers; got {values!r}"
        ) from None
    if isinstance(values, str | bytes | bool):
        raise TypeError(f"{name} must be numbers or nested lists of numbers; got {values!r}")
    return check_finite(t, name)


def _param(value, name: str, **bounds) -> float:
    return check_real(value, name, **bounds)


class Moons(Dataset2D):
    """Two interleaving half circles (as in scikit-learn's ``make_moons``), centred and scaled.

    Raw moons span x ∈ [−1, 2], y ∈ [−0.5, 1]; we subtract (0.5, 0.25) and multiply by
    ``scale`` so the cloud is roughly unit-variance. Gaussian noise ``noise`` is added before
    scaling.
    """

    name = "moons"

    def __init__(self, noise: float = 0.05, scale: float = 1.5) -> None:
        self.noise = _param(noise, "noise", ge=0.0)
        self.scale = _param(scale, "scale", gt=0.0)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        upper = torch.rand(n, generator=generator) < 0.5
        a = torch.rand(n, generator=generator) * math.pi
        x = torch.where(upper, a.cos(), 1 - a.cos())
        y = torch.where(upper, a.sin(), 0.5 - a.sin())
        p = torch.stack([x, y], 1) + self.noise * torch.randn(n, 2, generator=generator)
        return (p - torch.tensor([0.5, 0.25])) * self.scale


class Checkerboard(Dataset2D):
    """Uniform on the 8 dark squares of a 4×4 board spanning [−2, 2]²."""

    name = "checkerboard"

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        cell = torch.randint(0, 8, (n,), generator=generator)
        row = cell // 2
        col = 2 * (cell % 2) + (row % 2)
        u = torch.rand(n, 2, generator=generator)
        return torch.stack([col + u[:, 0], row + u[:, 1]], 1) - 2.0


class Spirals(Dataset2D):
    """Two interleaved Archimedean spirals with Gaussian noise."""

    name = "spirals"

    def __init__(self, noise: float = 0.05, turns: float = 1.5) -> None:
        self.noise = _param(noise, "noise", ge=0.0)
        self.turns = _param(turns, "turns", ge=-1e4, le=1e4)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        r = torch.rand(n, generator=generator).sqrt()
        theta = r * self.turns * 2 * math.pi
        arm = (torch.rand(n, generator=generator) < 0.5).float() * math.pi
        p = 2.0 * r[:, None] * torch.stack([(theta + arm).cos(), (theta + arm).sin()], 1)
        return p + self.noise * torch.randn(n, 2, generator=generator)


class Circles(Dataset2D):
    """Two concentric circles (radii 1 and 2, equal mass) with Gaussian noise."""

    name = "circles"

    def __init__(self, noise: float = 0.05) -> None:
        self.noise = _param(noise, "noise", ge=0.0)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        radius = 1.0 + (torch.rand(n, generator=generator) < 0.5).float()
        a = torch.rand(n, generator=generator) * 2 * math.pi
        p = radius[:, None] * torch.stack([a.cos(), a.sin()], 1)
        return p + self.noise * torch.randn(n, 2, generator=generator)


class StandardGaussian(Dataset2D):
    """N(0, I) in d dimensions: the default source X1."""

    name = "gaussian"

    def __init__(self, dim: int = 2) -> None:
        self.dim = check_count(dim, "dim", maximum=MAX_SIZE)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(n, self.dim, generator=generator)


def _gmm_demo() -> GaussianMixture:
    g = GaussianMixture(
        [0.5, 0.3, 0.2],
        [[-1.5, -0.5], [1.5, 0.8], [0.0, 1.8]],
        [[[0.10, 0.05], [0.05, 0.20]], [[0.15, -0.06], [-0.06, 0.10]], [[0.05, 0.0], [0.0, 0.05]]],
    )
    g.name = "gmm"
    return g


DATASETS: dict[str, Callable[[], Dataset2D]] = {
    "moons": Moons,
    "8gaussians": eight_gaussians,
    "checkerboard": Checkerboard,
    "spirals": Spirals,
    "circles": Circles,
    "gmm": _gmm_demo,
    "gaussian": StandardGaussian,
}


def make_dataset(name: str) -> Dataset2D:
    """Build a named 2D data set: one of :data:`DATASETS`."""
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return DATASETS[name]()


def as_sampler(data: str | Dataset2D | Sampler) -> Dataset2D:
    """Turn a name, a :class:`Dataset2D`, or any callable ``n -> (n, d)`` tensor into a data set.

    A plain callable is wrapped so that its output is checked (shape ``(n, d)``, finite).
    Its randomness is its own (a ``generator`` is not passed to it).
    """
    if isinstance(data, str):
        return make_dataset(data)
    if isinstance(data, Dataset2D):
        return data
    if callable(data):
        return _CallableDataset(data)
    raise TypeError(f"data must be a name, a Dataset2D or a callable n -> (n, d); got {type(data)}")


class _CallableDataset(Dataset2D):
    name = "custom"

    def __init__(self, fn: Sampler) -> None:
        self.fn = fn
        self.name = getattr(fn, "__name__", "custom")

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        x = self.fn(n)
        if not torch.is_tensor(x):
            x = _float64(x, "the data callable's output")
        if x.is_complex():
            raise TypeError(f"data callable must return real values; got dtype {x.dtype}")
        if x.dim() != 2 or x.shape[0] != n:
            raise ValueError(
                f"data callable must return an (n={n}, d) tensor; got {tuple(x.shape)}"
            )
        if not bool(torch.isfinite(x).all()):
            raise ValueError("data callable returned NaN/inf values")
        return x.float()
