"""Per-step random draws that do not depend on how the batch is split across processes.

A training step draws everything random (data indices, source noise, times, dropout seeds)
through one :class:`Draws` object. Each call generates the values for the **global** batch
from a generator seeded by ``(run seed, step)`` and returns this process's slice. Hence

* a run split over k processes (DDP) sees exactly the numbers a single process would see
  for the same global batch, so the losses agree;
* a resumed run needs nothing but the step number to continue the same random stream.

``Draws()`` without a generator uses torch's global RNG and no slicing (interactive use).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def step_seed(seed: int, step: int) -> int:
    """A 63-bit seed for step ``step`` of a run seeded with ``seed`` (SplitMix64 mixing)."""
    z = (seed * 0x9E3779B97F4A7C15 + step + 1) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) & 0x7FFFFFFFFFFFFFFF


def noise_like(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Standard normal noise of ``x``'s shape, dtype and device, drawn with ``generator``
    (a CPU generator, so a seeded result is the same on every device)."""
    return torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)


class Draws:
    """Random numbers for one step, generated for ``total`` samples and sliced at ``offset``.

    Args:
        generator: a seeded CPU ``torch.Generator`` (``None``: torch's global RNG).
        offset, total: this process's first sample and the global batch size (``None``: the
            requested size is the whole batch).
        device: where returned tensors live.
    """

    def __init__(
        self,
        generator: torch.Generator | None = None,
        offset: int = 0,
        total: int | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        self.gen = generator
        self.offset = offset
        self.total = total
        self.device = device

    @classmethod
    def for_step(
        cls,
        seed: int,
        step: int,
        offset: int = 0,
        total: int | None = None,
        device=None,
        stream: int = 0,
    ) -> Draws:
        """The draws of step ``step`` of a run seeded with ``seed``; ``stream`` separates
        independent uses within a step (e.g. 1 = data, 0 = the loss)."""
        g = torch.Generator().manual_seed(step_seed(seed * 1_000_003 + stream, step))
        return cls(g, offset, total, device)

    def _n(self, n: int) -> int:
        if self.total is None:
            return n
        if self.offset + n > self.total:
            raise ValueError(f"slice {self.offset}+{n} exceeds the global batch {self.total}")
        return self.total

    def _slice(self, full: Tensor, n: int) -> Tensor:
        out = full if self.total is None else full[self.offset : self.offset + n]
        return out.to(self.device) if self.device is not None else out

    def rand(self, n: int, *shape: int, dtype: torch.dtype = torch.float32) -> Tensor:
        """U(0, 1) of shape ``(n, *shape)``."""
        return self._slice(torch.rand((self._n(n), *shape), generator=self.gen, dtype=dtype), n)

    def randn(self, n: int, *shape: int, dtype: torch.dtype = torch.float32) -> Tensor:
        """N(0, 1) of shape ``(n, *shape)``."""
        return self._slice(torch.randn((self._n(n), *shape), generator=self.gen, dtype=dtype), n)

    def randint(self, low: int, high: int, n: int) -> Tensor:
        """Integers uniform in ``[low, high)``, shape ``(n,)``."""
        return self._slice(torch.randint(low, high, (self._n(n),), generator=self.gen), n)

    def categorical(self, probs: Tensor, n: int) -> Tensor:
        """Indices drawn from ``probs: (K,)`` (normalized here), shape ``(n,)``, by inverse CDF."""
        cdf = torch.cumsum(probs.double().cpu() / probs.double().sum(), 0)
        u = torch.rand(self._n(n), generator=self.gen, dtype=torch.float64)
        idx = torch.searchsorted(cdf, u, right=True).clamp(max=len(cdf) - 1)
        return self._slice(idx, n)

    def categorical_rows(self, probs: Tensor) -> Tensor:
        """One index per row of ``probs: (n, K)`` (rows normalized here), by inverse CDF with
        one uniform per sample (sliced like every other draw)."""
        n = probs.shape[0]
        u = self._slice(torch.rand(self._n(n), generator=self.gen, dtype=torch.float64), n)
        p = probs.double()
        cdf = torch.cumsum(p / p.sum(1, keepdim=True), 1)
        idx = torch.searchsorted(cdf, u.to(cdf.device)[:, None], right=True).squeeze(1)
        return idx.clamp(max=probs.shape[1] - 1)

    def beta(self, a: float, b: float, n: int) -> Tensor:
        """Beta(a, b) draws, shape ``(n,)`` (numpy's sampler, seeded from this stream)."""
        seed = int(torch.randint(0, 2**62, (1,), generator=self.gen))
        full = torch.from_numpy(np.random.default_rng(seed).beta(a, b, size=self._n(n))).float()
        return self._slice(full, n)

    def seed(self) -> int:
        """One integer, the same on every process (e.g. for matching dropout masks)."""
        return int(torch.randint(0, 2**62, (1,), generator=self.gen))

    def uniform(self) -> float:
        """One U(0, 1) number, the same on every process."""
        return float(torch.rand((), generator=self.gen))
