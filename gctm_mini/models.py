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
from .validation import MAX_SIZE, check_count, check_real

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
    name, kwargs, shape, sigma_min, sigma_max, bidirectional = check_spec(spec)
    with torch.device(net_device) if net_device else contextlib.nullcontext():
        try:
            net = NETWORKS[name](**kwargs)
        except (TypeError, ValueError, RuntimeError) as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            raise ValueError(f"cannot build the {name!r} network from {kwargs}: {first}") from None
    return FlowMapModel(
        net,
        shape,
        moments,
        sigma_min=sigma_min,
        sigma_max=sigma_max,
        spec=dict(spec),
        bidirectional=bidirectional,
    )


_SIZE = {"maximum": MAX_SIZE}
MAX_X_FOURIER = 1000.0
"""Largest σ of the MLP's Fourier features of x (far beyond any useful one: at σ = 1000 the
features of unit-scale data are noise)."""


def check_spec(spec) -> tuple[str, dict, tuple[int, ...], float, float, bool]:
    """Validate a model spec; returns ``(net, net_kwargs, data_shape, sigma_min, sigma_max,
    bidirectional)`` or raises ``ValueError`` naming the bad entry.

    The built-in networks' keyword arguments are checked too (counts ≥ 1, dropout in
    [0, 1), an MLP's ``dim`` equal to the data shape, a U-Net's channels and resolution equal
    to the image shape), so a spec read from a damaged file cannot build a model that fails
    later with a shape error.
    """
    if not isinstance(spec, dict):
        raise ValueError(f"a model spec must be a dict; got {type(spec).__name__}")
    name = spec.get("net")
    if not isinstance(name, str) or name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; choose one of: {', '.join(NETWORKS)}")
    kwargs = spec.get("net_kwargs", {})
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise ValueError(f"net_kwargs must be a dict of keyword arguments; got {kwargs!r}")
    shape = spec.get("data_shape")
    if not isinstance(shape, list | tuple) or not shape:
        raise ValueError(f"data_shape must be a non-empty list of sizes; got {shape!r}")
    shape = tuple(check_count(v, "every data_shape entry", **_SIZE) for v in shape)
    sigma_min = check_real(spec.get("sigma_min", SIGMA_MIN), "sigma_min", gt=0.0)
    sigma_max = check_real(spec.get("sigma_max", SIGMA_MAX), "sigma_max", gt=sigma_min)
    bidirectional = spec.get("bidirectional", False)
    if not isinstance(bidirectional, bool):
        raise ValueError(f"bidirectional must be true or false; got {bidirectional!r}")
    if name == "mlp":
        keys = {"dim", "hidden", "depth", "emb_dim", "dropout", "x_fourier", "x_freqs"}
        _check_kwargs(kwargs, keys, name)
        for key in ("dim", "hidden", "depth", "emb_dim", "x_freqs"):
            if key in kwargs:
                check_count(kwargs[key], f"net_kwargs {key}", **_SIZE)
        if kwargs.get("emb_dim", 32) % 2:
            raise ValueError(f"net_kwargs emb_dim must be even; got {kwargs['emb_dim']}")
        if shape != (kwargs.get("dim", 2),):
            raise ValueError(
                f"data_shape {list(shape)} does not fit an MLP of dim {kwargs.get('dim', 2)}"
            )
        check_real(kwargs.get("dropout", 0.0), "net_kwargs dropout", ge=0.0, lt=1.0)
        check_real(kwargs.get("x_fourier", 0.0), "net_kwargs x_fourier", ge=0.0, le=MAX_X_FOURIER)
    elif name == "unet":
        keys = {"img_resolution", "in_channels", "out_channels", "model_channels"}
        keys |= {"channel_mult", "num_blocks", "attn_resolutions", "dropout", "emb_mult"}
        _check_kwargs(kwargs, keys, name)
        for key in ("img_resolution", "in_channels", "out_channels", "model_channels", "emb_mult"):
            if key in kwargs:
                check_count(kwargs[key], f"net_kwargs {key}", **_SIZE)
        check_count(kwargs.get("num_blocks", 4), "net_kwargs num_blocks", 0, MAX_SIZE)
        for key in ("channel_mult", "attn_resolutions"):
            v = kwargs.get(key, [1])
            if not isinstance(v, list | tuple) or (key == "channel_mult" and not v):
                raise ValueError(f"net_kwargs {key} must be a list of integers; got {v!r}")
            for m in v:
                check_count(m, f"every net_kwargs {key} entry", **_SIZE)
        check_real(kwargs.get("dropout", 0.1), "net_kwargs dropout", ge=0.0, lt=1.0)
        c, res = kwargs.get("in_channels", 3), kwargs.get("img_resolution", 32)
        if shape != (c, res, res) or kwargs.get("out_channels", 3) != c:
            raise ValueError(
                f"data_shape {list(shape)} does not fit a U-Net of {c} in, "
                f"{kwargs.get('out_channels', 3)} out channels at resolution {res}"
            )
    return name, kwargs, shape, sigma_min, sigma_max, bidirectional


def _check_kwargs(kwargs: dict, known: set[str], name: str) -> None:
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise ValueError(
            f"net_kwargs of {name!r} has unknown key(s) {', '.join(map(repr, unknown))}; "
            f"valid: {', '.join(sorted(known))}"
        )


def mlp_spec(
    dim: int = 2,
    hidden: int = 256,
    depth: int = 4,
    emb_dim: int = 32,
    dropout: float = 0.0,
    sigma_max: float = SIGMA_MAX,
    bidirectional: bool = False,
    x_fourier: float = 0.0,
) -> dict:
    """Spec of the 2D toy model: :class:`~gctm_mini.networks.TwoTimeMLP` on ``(dim,)`` samples.

    ``x_fourier`` > 0 adds random Fourier features of x with that σ
    (:class:`~gctm_mini.networks.RandomFourierFeatures`); at 0 the key is left out, so the spec
    is the one written before the option existed.
    """
    net_kwargs: dict = {
        "dim": dim,
        "hidden": hidden,
        "depth": depth,
        "emb_dim": emb_dim,
        "dropout": dropout,
    }
    if x_fourier:
        net_kwargs["x_fourier"] = x_fourier
    return {
        "net": "mlp",
        "net_kwargs": net_kwargs,
        "data_shape": [dim],
        "sigma_min": SIGMA_MIN,
        "sigma_max": sigma_max,
        "bidirectional": bidirectional,
    }
