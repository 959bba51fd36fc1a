r"""Per-step random draws that do not depend on how the batch is split across processes.

A training step draws everything random (data indices, source noise, times, dropout masks)
through one :class:`Draws` object. Each call generates the values for the **global** batch
from a generator seeded by ``(run seed, step)`` and returns this process's slice. Hence

* a run split over k processes (DDP) or k micro-batches sees exactly the numbers a single
  process would see for the same global batch, so the losses and gradients agree;
* a resumed run needs nothing but the step number to continue the same random stream.

``Draws()`` without a generator uses torch's global RNG and no slicing (interactive use).

**Dropout masks** follow the same rule. The networks use :class:`SampleDropout`; inside
:func:`dropout_masks` (or :meth:`Draws.dropout`) layer ℓ draws the keep-mask
:math:`m = \mathbb 1[U \ge p]`, :math:`U \sim U(0, 1)^{B \times D}`, for the whole global
batch from a generator seeded by (seed, ℓ) and keeps this process's rows. So every sample
gets the mask it would get in one process, and two passes under the same seed (a student
and its stop-gradient target) use the same mask per sample. The cost is a mask of the
global batch per layer and process, small next to the convolutions for the usual
processes × micro-batches (a counter-based integer hash that generates only the local rows
took about 6× longer per element than ``torch.rand`` in plain PyTorch on a CPU).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


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

    def dropout(self, model: nn.Module, seed: int | None = None):
        """:func:`dropout_masks` for ``model`` at this process's offset; ``seed`` defaults to a
        fresh :meth:`seed` (pass the same seed to two passes to give them the same masks)."""
        seed = self.seed() if seed is None else seed
        return dropout_masks(model, seed, self.offset, self.total)


class SampleDropout(nn.Module):
    """Dropout whose masks are rows of the global batch's masks (see the module docstring).

    Inside :func:`dropout_masks` the keep-mask of a batch ``x: (n, *D)`` is rows
    ``offset … offset + n − 1`` of a ``(total, *D)`` mask drawn by a generator seeded with
    (seed, layer index). Outside it (e.g. a user calling a model in train mode) it is plain
    ``F.dropout`` on torch's RNG. In eval mode or with ``p = 0`` it is the identity.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must lie in [0, 1); got {p}")
        self.p = float(p)
        self.keyed = False
        self.keys: tuple[int, int, int, int | None] = (0, 0, 0, None)  # seed, layer, offset, total

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        if not self.keyed:
            return F.dropout(x, self.p, True)
        return self._keyed(x)

    @torch.compiler.disable  # a generator per call: run eagerly; no re-compile per seed
    def _keyed(self, x: Tensor) -> Tensor:
        seed, layer, offset, total = self.keys
        n = x.shape[0]
        total = n if total is None else total
        if offset + n > total:
            raise ValueError(f"dropout slice {offset}+{n} exceeds the global batch {total}")
        g = torch.Generator(device=x.device).manual_seed(step_seed(seed, layer))
        u = torch.rand((total, *x.shape[1:]), generator=g, device=x.device)
        keep = u[offset : offset + n] >= self.p
        return x * keep.to(x.dtype) / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


@contextlib.contextmanager
def dropout_masks(
    model: nn.Module, seed: int, offset: int = 0, total: int | None = None
) -> Iterator[None]:
    """Run a block with every :class:`SampleDropout` of ``model`` keyed by ``seed``.

    A batch ``(n, *D)`` passed through ``model`` in the block is rows ``offset …
    offset + n − 1`` of a global batch of ``total`` samples (``None``: the batch is the whole
    batch); its masks are those rows of the global batch's masks, so any split of the batch
    over processes or micro-batches gives every sample the mask it has in the unsplit batch.
    Two passes under the same seed (student and stop-gradient target, also through two
    copies of one network such as a CD target network) draw identical masks.

    Any other random op in the block (a plain ``nn.Dropout`` in a user's network) runs on
    torch's RNG forked and seeded with ``seed``: same masks for same-shaped passes, but not
    sliced across processes. The outer RNG state and the layers' previous keys are restored.
    """
    layers = [m for m in model.modules() if isinstance(m, SampleDropout)]
    saved = [(m.keyed, m.keys) for m in layers]
    for k, m in enumerate(layers):
        m.keyed, m.keys = True, (seed, k, offset, total)
    params = next(model.parameters(), None)
    device = params.device if params is not None else torch.device("cpu")
    cuda = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=cuda, device_type="cuda" if cuda else "cpu"):
            # the generators this block can draw from, not torch.manual_seed: that also queues
            # a lazy seed for every uninitialized backend (CUDA, XPU, MTIA), formatting a stack
            # trace each time — about 0.3 ms a call on a CPU, 3 % of a 2D GCTM step (3 calls)
            torch.default_generator.manual_seed(seed)
            if device.type == "cuda":
                with torch.cuda.device(device):
                    torch.cuda.manual_seed(seed)
            elif device.type == "mps":
                torch.mps.manual_seed(seed)
            yield
    finally:
        for m, (keyed, keys) in zip(layers, saved, strict=True):
            m.keyed, m.keys = keyed, keys
