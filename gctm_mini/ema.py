r"""Exponential moving average of weights: :math:`\bar\theta \leftarrow \mu\bar\theta + (1 - \mu)\theta`."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Keeps a frozen, eval-mode copy of ``model`` whose parameters track an EMA of it.

    Buffers (e.g. the coupling moments) are copied as they are. ``decay`` is μ.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1); got {decay}")
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        self.model.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for e, p in zip(self.model.parameters(), model.parameters(), strict=True):
            e.lerp_(p.detach(), 1.0 - self.decay)
        for e, b in zip(self.model.buffers(), model.buffers(), strict=True):
            e.copy_(b)

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state)
