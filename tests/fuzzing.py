"""What a fuzzed call may do, checked in one place (used by ``test_fuzz_*.py``).

A call on any input either

* returns a result whose tensors and numbers are all finite (:func:`assert_finite`), or
* raises one of the package's error types (:data:`CLEAR_ERRORS`) from one of the package's
  own ``raise`` statements, with a one-line message (:func:`assert_clear_error`),

and it ends within a time limit (:func:`time_limit`). Anything else — another exception type,
an exception from inside torch, NumPy or POT, a message over several lines, a NaN or an
infinity handed back, a call that runs on — fails.

Tensors are built from a few drawn integers (:func:`make_tensor`), so hypothesis shrinks a
failure to a readable description: shape, dtype and fill (``"nan"``, ``"huge"``, …).
"""

from __future__ import annotations

import contextlib
import linecache
import math
import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import fields, is_dataclass
from datetime import timedelta
from pathlib import Path

import torch
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

import gctm_mini
from gctm_mini._optional import MissingExtraError
from gctm_mini.checkpoint import CheckpointError
from gctm_mini.evaluation import MetricUnavailableError
from gctm_mini.models import build_model, mlp_spec
from gctm_mini.parameterization import CouplingMoments

PACKAGE = Path(gctm_mini.__file__).resolve().parent

CLEAR_ERRORS = (
    ValueError,
    TypeError,
    CheckpointError,
    MetricUnavailableError,
    MissingExtraError,
    FileNotFoundError,
)
"""The error types the public API documents for bad input."""

_SUPPRESS = [
    HealthCheck.too_slow,
    HealthCheck.data_too_large,
    HealthCheck.filter_too_much,
    HealthCheck.function_scoped_fixture,
]
settings.register_profile(
    "gctm-ci",
    max_examples=12,
    deadline=timedelta(seconds=20),
    database=None,
    derandomize=True,
    suppress_health_check=_SUPPRESS,
)
settings.register_profile(
    "gctm-long",
    max_examples=400,
    deadline=timedelta(seconds=20),
    database=None,
    suppress_health_check=_SUPPRESS,
    print_blob=True,
)
settings.register_profile(
    "gctm-explore",
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=_SUPPRESS,
    phases=[Phase.explicit, Phase.generate],
    report_multiple_bugs=True,
)
PROFILE = {"long": "gctm-long", "explore": "gctm-explore"}.get(
    os.environ.get("GCTM_FUZZ"), "gctm-ci"
)
FUZZ = settings(settings.get_profile(PROFILE))
"""Decorator for every fuzz test: ``GCTM_FUZZ=long`` selects the deep profile."""

CALL_LIMIT_S = 30.0
"""A call still running after this many seconds counts as a hang (the machine may be loaded,
so the limit is generous; the examples are tiny and take milliseconds)."""


class Hang(BaseException):  # noqa: N818 — not an ``Exception``: no ``except Exception`` eats it
    """Raised into a call that ran past :data:`CALL_LIMIT_S`."""


@contextlib.contextmanager
def time_limit(seconds: float = CALL_LIMIT_S) -> Iterator[None]:
    """Interrupt the block with :class:`Hang` after ``seconds`` (SIGALRM; main thread only)."""

    def ring(signum, frame):
        raise Hang(f"the call ran longer than {seconds:g} s")

    old = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def raised_by_package(err: BaseException) -> bool:
    """True if ``err`` left a ``raise`` statement in the package's own code (not a library)."""
    tb = err.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    path = Path(tb.tb_frame.f_code.co_filename).resolve()
    if PACKAGE not in path.parents:
        return False
    return linecache.getline(str(path), tb.tb_lineno).strip().startswith("raise")


def error_problem(err: BaseException) -> str | None:
    """Why ``err`` is not a clear error (``None`` if it is one)."""
    if isinstance(err, Hang):
        return "hang"
    if not isinstance(err, CLEAR_ERRORS):
        return f"unexpected {type(err).__name__}"
    msg = str(err)
    if not msg.strip():
        return f"{type(err).__name__} with an empty message"
    if "\n" in msg.strip():
        return f"{type(err).__name__} message of {len(msg.strip().splitlines())} lines"
    if not raised_by_package(err):
        return f"{type(err).__name__} raised inside a library, not by the package's checks"
    return None


def assert_clear_error(err: BaseException) -> None:
    problem = error_problem(err)
    if problem is not None:
        raise AssertionError(f"{problem}: {type(err).__name__}: {err}") from err


def nonfinite(value, where: str = "result") -> str | None:
    """The first place in ``value`` (tensors, numbers, containers, dataclasses) holding NaN or
    ±inf, or ``None``."""
    if torch.is_tensor(value):
        inexact = value.is_floating_point() or value.is_complex()
        if inexact and value.numel() and not bool(torch.isfinite(value).all()):
            return f"{where} (tensor {tuple(value.shape)} {value.dtype})"
        return None
    if isinstance(value, bool | int | str) or value is None:
        return None
    if isinstance(value, float | complex):
        return None if math.isfinite(abs(value)) else f"{where} = {value}"
    if isinstance(value, dict):
        for k, v in value.items():
            found = nonfinite(v, f"{where}[{k!r}]")
            if found:
                return found
        return None
    if isinstance(value, list | tuple):
        for i, v in enumerate(value):
            found = nonfinite(v, f"{where}[{i}]")
            if found:
                return found
        return None
    if is_dataclass(value):
        for f in fields(value):
            found = nonfinite(getattr(value, f.name), f"{where}.{f.name}")
            if found:
                return found
        return None
    if hasattr(value, "item") and callable(value.item):  # NumPy scalars
        return nonfinite(value.item(), where)
    return None


def assert_finite(value, where: str = "result") -> None:
    found = nonfinite(value, where)
    if found:
        raise AssertionError(f"silent non-finite value in {found}")


OK, ERROR = "ok", "error"


def call(fn: Callable, *args, finite: bool = True, **kwargs):
    """Run ``fn(*args, **kwargs)`` under :func:`time_limit`; return ``(OK, result)`` with the
    result checked finite (unless ``finite=False``) or ``(ERROR, err)`` for a clear error.
    Anything else fails the test."""
    try:
        with time_limit():
            out = fn(*args, **kwargs)
    except Hang as err:
        raise AssertionError(f"hang: {err}") from None
    except Exception as err:
        assert_clear_error(err)
        return ERROR, err
    if finite:
        assert_finite(out)
    return OK, out


# --- strategies -----------------------------------------------------------------------------

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16)
ALL_DTYPES = (*FLOAT_DTYPES, torch.bfloat16, torch.int64, torch.int32, torch.uint8, torch.bool)
ALL_DTYPES = (*ALL_DTYPES, torch.complex64)
FILLS = ("normal", "zeros", "ones", "huge", "tiny", "negative", "big", "nan", "inf", "-inf")
FILLS = (*FILLS, "max", "min")  # 1e300 and 1e-300: float64's extremes (±inf / 0 in float32)
GOOD_FILLS = ("normal", "zeros", "ones", "tiny", "negative", "big")


def make_tensor(shape: tuple[int, ...], dtype: torch.dtype, fill: str, seed: int) -> torch.Tensor:
    """A tensor of ``shape`` and ``dtype`` filled as ``fill`` says, from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    x = {
        "zeros": x * 0,
        "ones": torch.ones_like(x),
        "huge": x * 1e30,
        "max": x * 1e300,
        "min": x * 1e-300,
        "tiny": x * 1e-30,
        "negative": -x.abs() - 0.5,
        "big": x * 1e4,
    }.get(fill, x)
    if fill in ("nan", "inf", "-inf") and x.numel():
        i = int(torch.randint(0, x.numel(), (1,), generator=g))
        x.view(-1)[i] = float(fill)
    if dtype.is_complex:
        return torch.complex(x, x).to(dtype)
    if not dtype.is_floating_point:
        x = torch.nan_to_num(x, nan=0.0, posinf=1e9, neginf=-1e9).clamp(-1e9, 1e9)
        return (x.round() if dtype != torch.bool else x > 0).to(dtype)
    return x.to(dtype)


@st.composite
def tensors(
    draw,
    shape=None,
    dtypes=ALL_DTYPES,
    fills=FILLS,
    shapes=None,
) -> torch.Tensor:
    """A tensor: ``shape`` (or one of ``shapes``), a dtype of ``dtypes``, a fill of ``fills``."""
    if shape is None:
        shape = draw(st.sampled_from(shapes)) if shapes else draw(shape_st())
    dtype = draw(st.sampled_from(dtypes))
    fill = draw(st.sampled_from(fills))
    return make_tensor(tuple(shape), dtype, fill, draw(st.integers(0, 2**16)))


def shape_st(max_dims: int = 3, max_side: int = 5):
    return st.lists(st.integers(0, max_side), min_size=0, max_size=max_dims).map(tuple)


def good(shape, dtype=torch.float32, fills=GOOD_FILLS):
    """Valid tensors of ``shape``."""
    return tensors(shape=shape, dtypes=(dtype,), fills=fills)


def any_of(good_strategy, *bad):
    """``good_strategy`` about half the time, else one of the ``bad`` strategies."""
    return st.one_of(good_strategy, good_strategy, *bad)


ODD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from(["", "x", "1", "0.5", "nan", "euler"]),
    st.just([0.5]),
    st.just({"a": 1}),
    st.complex_numbers(max_magnitude=2, allow_nan=False, allow_infinity=False),
)
"""Values of the wrong kind for a number, a name or a tensor argument."""

FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 1.0, -0.0, 0.5, 1e-300, 1e30, -1e30, 2.0, -1.0]),
)
INTS = st.one_of(st.integers(-3, 6), st.sampled_from([2**63, -(2**63), 10**30]))


def numbers(lo: float, hi: float):
    """Valid floats in ``[lo, hi]`` half the time, else any number or odd value."""
    valid = st.floats(lo, hi, allow_nan=False, allow_infinity=False)
    return st.one_of(valid, valid, FLOATS, INTS, ODD_VALUES)


def counts(lo: int, hi: int):
    """Valid ints in ``[lo, hi]`` half the time, else any number or odd value."""
    valid = st.integers(lo, hi)
    return st.one_of(valid, valid, INTS, FLOATS, ODD_VALUES)


def names(valid):
    """One of the ``valid`` names half the time, else another string or odd value."""
    return st.one_of(st.sampled_from(list(valid)), st.text(max_size=6), ODD_VALUES)


# ---------------------------------------------------------------- small fixed models


def toy(bidirectional: bool = False):
    """A small 2D flow-map model with visibly non-zero output (fixed weights)."""
    torch.manual_seed(0)
    model = build_model(mlp_spec(hidden=16, depth=2, bidirectional=bidirectional)).eval()
    torch.nn.init.normal_(model.net.out.weight, std=0.3)
    return model.requires_grad_(False)


def image_model():
    """A small 3×8×8 U-Net flow-map model (fixed weights)."""
    torch.manual_seed(0)
    spec = {
        "net": "unet",
        "data_shape": [3, 8, 8],
        "net_kwargs": {
            "img_resolution": 8,
            "model_channels": 8,
            "channel_mult": [1],
            "num_blocks": 1,
            "attn_resolutions": [],
            "dropout": 0.0,
        },
    }
    return build_model(spec, CouplingMoments(0.25, 1.0, 0.0)).eval().requires_grad_(False)
