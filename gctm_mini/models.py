"""Build a :class:`~gctm_mini.parameterization.FlowMapModel` from a JSON-able spec.

A spec names the network and its keyword arguments, the data shape and the σ clamp::

    {"net": "mlp", "net_kwargs": {"dim": 2, "hidden": 256, "depth": 4},
     "data_shape": [2], "sigma_min": 0.002, "sigma_max": 80.0}

Checkpoints store the spec, so :func:`gctm_mini.checkpoint.load_checkpoint` can rebuild the
model before loading its weights (the coupling moments are buffers inside the weights).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn

from .interpolant import SIGMA_MAX, SIGMA_MIN
from .networks import TwoTimeMLP
from .parameterization import CouplingMoments, FlowMapModel
from .unet import TwoTimeUNet

NETWORKS: dict[str, Callable[..., nn.Module]] = {"mlp": TwoTimeMLP, "unet": TwoTimeUNet}


def register_network(name: str, factory: Callable[..., nn.Module]) -> None:
    """Make a network constructor available to :func:`build_model` under ``name``."""
    NETWORKS[name] = factory


def build_model(
    spec: dict, moments: CouplingMoments | None = None, net_device: str | None = None
) -> FlowMapModel:
    """Construct the model described by ``spec`` (see the module docstring).

    ``net_device="meta"`` creates the network's parameters without memory or initialization
    (shapes only, e.g. to check a checkpoint against the spec).
    """
    name = spec.get("net")
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; choose one of: {', '.join(NETWORKS)}")
    with torch.device(net_device) if net_device else contextlib.nullcontext():
        net = NETWORKS[name](**spec.get("net_kwargs", {}))
    return FlowMapModel(
        net,
        tuple(spec["data_shape"]),
        moments,
        sigma_min=spec.get("sigma_min", SIGMA_MIN),
        sigma_max=spec.get("sigma_max", SIGMA_MAX),
        spec=dict(spec),
        bidirectional=spec.get("bidirectional", False),
    )


def mlp_spec(
    dim: int = 2,
    hidden: int = 256,
    depth: int = 4,
    emb_dim: int = 32,
    dropout: float = 0.0,
    sigma_max: float = SIGMA_MAX,
    bidirectional: bool = False,
) -> dict:
    """Spec of the 2D toy model: :class:`~gctm_mini.networks.TwoTimeMLP` on ``(dim,)`` samples."""
    return {
        "net": "mlp",
        "net_kwargs": {
            "dim": dim,
            "hidden": hidden,
            "depth": depth,
            "emb_dim": emb_dim,
            "dropout": dropout,
        },
        "data_shape": [dim],
        "sigma_min": SIGMA_MIN,
        "sigma_max": sigma_max,
        "bidirectional": bidirectional,
    }
