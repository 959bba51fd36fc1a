r"""Networks :math:`F_\theta(x, c_t, c_s)` that take a sample and two time labels.

Time labels are :math:`c = 0.25\log\sigma` (see :class:`gctm_mini.parameterization.FlowMapModel`).
Both t and s go through the same Fourier features; the 2D toy network is an MLP on
``[x, emb(c_t), emb(c_s)]``, optionally with random Fourier features of x as well
(:class:`RandomFourierFeatures`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .randomness import SampleDropout


class FourierTimeEmbedding(nn.Module):
    r"""Deterministic Fourier features :math:`[\cos(2\pi f_k c), \sin(2\pi f_k c)]_k` of a label ``c: (B,)``.

    Frequencies :math:`f_k` are geometric between ``min_freq`` and ``max_freq``; output ``(B, dim)``.
    """

    def __init__(self, dim: int = 32, min_freq: float = 0.25, max_freq: float = 16.0) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"embedding dim must be even; got {dim}")
        freqs = torch.exp(torch.linspace(math.log(min_freq), math.log(max_freq), dim // 2))
        self.register_buffer("freqs", 2 * math.pi * freqs)

    def forward(self, c: Tensor) -> Tensor:
        arg = c[:, None].float() * self.freqs[None]
        return torch.cat([arg.cos(), arg.sin()], dim=1)


X_FREQ_SEED = 0
"""Seed of the generator that draws B of :class:`RandomFourierFeatures`: every run, seed and
process with the same σ and size gets the same B, so a model spec fixes the function."""


class RandomFourierFeatures(nn.Module):
    r"""Random Fourier features of a sample, :math:`[x, \sin 2\pi xB, \cos 2\pi xB]`.

    :math:`B \in \mathbb{R}^{d \times m}` holds fixed :math:`\mathcal N(0, \sigma^2)` draws
    (from a generator seeded with :data:`X_FREQ_SEED`; a buffer, so checkpoints carry it).
    ``x: (B, d)`` → ``(B, d + 2m)``; in a :class:`~gctm_mini.parameterization.FlowMapModel`,
    x is the network's input :math:`c_\text{in}(t)\,x_t`. A plain MLP fits smooth functions
    of x first; these features let it bend at the scale 1/σ, which the one-jump map from a
    Gaussian needs where it splits between modes (``benchmarks/one_jump.py``, variants
    ``xff*``).
    """

    def __init__(self, dim: int, n_freq: int, sigma: float) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(X_FREQ_SEED)
        freqs = sigma * torch.randn(dim, n_freq, generator=gen, device="cpu")
        self.register_buffer("freqs", freqs)
        self.out_dim = dim + 2 * n_freq

    def forward(self, x: Tensor) -> Tensor:
        z = 2 * math.pi * x @ self.freqs
        return torch.cat([x, z.sin(), z.cos()], dim=1)


class TwoTimeMLP(nn.Module):
    """MLP on ``[x, emb(c_t), emb(c_s)]`` with SiLU; the output layer starts at zero.

    Args:
        dim: data dimension d; ``hidden``: width; ``depth``: hidden layers;
        ``emb_dim``: Fourier features per time; ``dropout``: after each hidden activation
        but the last (:class:`~gctm_mini.randomness.SampleDropout`, masks keyed per sample
        by the training losses); ``x_fourier``: σ of random Fourier features of x, which
        then replace x in the input (:class:`RandomFourierFeatures`, ``x_freqs`` frequencies;
        0 = x alone, the default and what every spec without the key means).
    """

    def __init__(
        self,
        dim: int = 2,
        hidden: int = 256,
        depth: int = 4,
        emb_dim: int = 32,
        dropout: float = 0.0,
        x_fourier: float = 0.0,
        x_freqs: int = 32,
    ) -> None:
        super().__init__()
        self.embed = FourierTimeEmbedding(emb_dim)
        self.x_features = RandomFourierFeatures(dim, x_freqs, x_fourier) if x_fourier > 0 else None
        x_dim = self.x_features.out_dim if self.x_features is not None else dim
        layers: list[nn.Module] = [nn.Linear(x_dim + 2 * emb_dim, hidden), nn.SiLU()]
        for _ in range(depth - 1):
            layers += [SampleDropout(dropout)] if dropout > 0 else []
            layers += [nn.Linear(hidden, hidden), nn.SiLU()]
        self.body = nn.Sequential(*layers)
        self.out = nn.Linear(hidden, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, c_t: Tensor, c_s: Tensor) -> Tensor:
        if self.x_features is not None:
            x = self.x_features(x)
        h = torch.cat([x, self.embed(c_t), self.embed(c_s)], dim=1)
        return self.out(self.body(h))
