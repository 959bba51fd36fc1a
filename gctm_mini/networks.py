r"""Networks :math:`F_\theta(x, c_t, c_s)` that take a sample and two time labels.

Time labels are :math:`c = 0.25\log\sigma` (see :class:`gctm_mini.parameterization.FlowMapModel`).
Both t and s go through the same Fourier features; the 2D toy network is an MLP on
``[x, emb(c_t), emb(c_s)]``.
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


class TwoTimeMLP(nn.Module):
    """MLP on ``[x, emb(c_t), emb(c_s)]`` with SiLU; the output layer starts at zero.

    Args:
        dim: data dimension d; ``hidden``: width; ``depth``: hidden layers;
        ``emb_dim``: Fourier features per time; ``dropout``: after each hidden activation
        but the last (:class:`~gctm_mini.randomness.SampleDropout`, masks keyed per sample
        by the training losses).
    """

    def __init__(
        self,
        dim: int = 2,
        hidden: int = 256,
        depth: int = 4,
        emb_dim: int = 32,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.embed = FourierTimeEmbedding(emb_dim)
        layers: list[nn.Module] = [nn.Linear(dim + 2 * emb_dim, hidden), nn.SiLU()]
        for _ in range(depth - 1):
            layers += [SampleDropout(dropout)] if dropout > 0 else []
            layers += [nn.Linear(hidden, hidden), nn.SiLU()]
        self.body = nn.Sequential(*layers)
        self.out = nn.Linear(hidden, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, c_t: Tensor, c_s: Tensor) -> Tensor:
        h = torch.cat([x, self.embed(c_t), self.embed(c_s)], dim=1)
        return self.out(self.body(h))
