"""Input checks shared by every public function of the package.

Bad input must raise a clear error, never produce a wrong answer: wrong shapes, times
outside [0, 1], ``s > t`` for a forward (t → s, s ≤ t) map, NaN or infinite values, and
unknown option names all stop here with a message that says what was expected and what
was given. Configs declare each field with :func:`knob` (default, meaning, valid range) and
:func:`check_fields` checks them all.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Iterable, Mapping
from dataclasses import Field, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import Tensor


def check_finite(x: Tensor, name: str = "x") -> Tensor:
    """Raise ``ValueError`` if ``x`` holds NaN or ±inf (``TypeError`` if it is not a real
    tensor: complex values have no place in this package); return ``x`` unchanged."""
    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    if x.is_complex():
        raise TypeError(f"{name} must be a real tensor; got dtype {x.dtype}")
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} contains {bad} NaN/inf value(s); inputs must be finite")
    return x


def check_batch(x: Tensor, data_shape: tuple[int, ...] | None = None, name: str = "x") -> Tensor:
    """Check that ``x`` is a finite batch ``(B, *data_shape)`` with ``B ≥ 1``."""
    check_finite(x, name)
    if x.dim() < 2:
        raise ValueError(f"{name} must be a batch of shape (B, *D); got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (B = 0)")
    if data_shape is not None and tuple(x.shape[1:]) != tuple(data_shape):
        raise ValueError(
            f"{name} must have shape (B, {', '.join(map(str, data_shape))}); got {tuple(x.shape)}"
        )
    return x


def as_time(t: Tensor | float, batch: int, like: Tensor, name: str = "t") -> Tensor:
    """Return ``t`` as a ``(batch,)`` tensor on ``like``'s device and dtype, checked in [0, 1].

    ``t`` may be a Python float, a 0-d tensor, or a ``(batch,)`` tensor.
    """
    dtype = like.dtype if like.is_floating_point() else torch.float32
    if not torch.is_tensor(t):
        if isinstance(t, bool) or not isinstance(t, numbers.Real):
            raise TypeError(f"{name} must be a float or a tensor; got {type(t).__name__}")
        t = torch.tensor(float(t), dtype=dtype)
    if t.is_complex():
        raise TypeError(f"{name} must be real; got dtype {t.dtype}")
    t = t.to(device=like.device, dtype=dtype)
    if t.dim() == 0:
        t = t.expand(batch)
    elif t.dim() != 1 or t.shape[0] != batch:
        raise ValueError(
            f"{name} must be a scalar or have shape ({batch},); got shape {tuple(t.shape)}"
        )
    check_finite(t, name)
    if bool((t < 0).any()) or bool((t > 1).any()):
        lo, hi = float(t.min()), float(t.max())
        raise ValueError(f"{name} must lie in [0, 1]; got values in [{lo:.4g}, {hi:.4g}]")
    return t


def check_order(t: Tensor, s: Tensor, tname: str = "t", sname: str = "s") -> None:
    """Require ``0 ≤ s ≤ t ≤ 1`` element-wise (the forward, data-ward direction)."""
    if bool((s > t).any()):
        i = int(torch.nonzero(s > t)[0, 0])
        raise ValueError(
            f"{sname} must satisfy 0 ≤ {sname} ≤ {tname} ≤ 1 (time runs from the source at 1 "
            f"to the data at 0); got {tname}={float(t[i]):.4g}, {sname}={float(s[i]):.4g}"
        )


MAX_SIZE = 2**31 - 1
"""Largest count accepted where a count sizes a tensor (samples, grid intervals, projections):
beyond it a request is a typo, and torch would fail with an overflow or allocation error."""


def check_count(value: int, name: str, minimum: int = 1, maximum: int | None = None) -> int:
    """Require an ``int`` (not a bool) in ``[minimum, maximum]``, e.g. a number of steps, seeds
    or samples."""
    ok = not isinstance(value, bool) and isinstance(value, int | np.integer)
    if not ok or value < minimum or (maximum is not None and value > maximum):
        bound = f"≥ {minimum}" if maximum is None else f"in [{minimum}, {_num(maximum)}]"
        raise ValueError(f"{name} must be an integer {bound}; got {value!r}")
    return int(value)


def check_real(value, name: str, **bounds) -> float:
    """A real number (int, float or NumPy scalar; not a bool, string or complex) within
    ``bounds`` (see :func:`check_number`), as a Python ``float``."""
    return float(check_number(value, name, **bounds))


def real_tensor(
    values, name: str, dtype: torch.dtype = torch.float32, finite: bool = True
) -> Tensor:
    """``values`` (a tensor, a real number or a sequence of them) as a floating tensor of
    ``dtype`` (a floating tensor keeps its own dtype), checked finite unless ``finite=False``;
    one clear error otherwise."""
    if torch.is_tensor(values):
        if values.is_complex():
            raise TypeError(f"{name} must be real; got dtype {values.dtype}")
        if finite:
            check_finite(values, name)
        return values if values.is_floating_point() else values.to(dtype)
    if isinstance(values, bool | str | bytes) or not isinstance(values, numbers.Real | Iterable):
        raise TypeError(f"{name} must be a number, a list of numbers or a tensor; got {values!r}")
    items = [values] if isinstance(values, numbers.Real) else list(values)
    for v in items:
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise TypeError(f"{name} must hold real numbers; got {v!r}")
    out = torch.tensor([float(v) for v in items], dtype=dtype)
    if finite:
        check_finite(out, name)
    return out.reshape(()) if isinstance(values, numbers.Real) else out


def check_choice(value: str, choices: Iterable[str], what: str) -> str:
    """Raise ``ValueError`` naming the valid options if ``value`` is not one of ``choices``."""
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; choose one of: {', '.join(choices)}")
    return value


def mul_pow2(x, k: int):
    """``x · 2^k`` for a float or a tensor, exact while it stays in range, ``±inf`` (never an
    ``OverflowError``) beyond it — for undoing the power-of-two rescaling that keeps the
    distances of :mod:`gctm_mini.metrics` and friends free of overflow."""
    while k:
        step = max(-1000, min(1000, k))
        x = x * 2.0**step
        k -= step
    return x


def broadcast_time(t: Tensor, x: Tensor) -> Tensor:
    """Reshape a ``(B,)`` time to ``(B, 1, …, 1)`` so it broadcasts against ``x: (B, *D)``."""
    return t.reshape(t.shape[0], *([1] * (x.dim() - 1)))


# --- configuration fields ------------------------------------------------------------------
# A config is a dataclass whose fields are declared with :func:`knob`: a default, a one-line
# meaning (shown by ``--help``) and the field's valid range or choices. :func:`check_fields`
# sweeps every field against its declaration, so no field of a config goes unchecked.

_BOUNDS = ("ge", "gt", "le", "lt")


def knob(
    default,
    help: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: Iterable[str] | None = None,
    what: str | None = None,
    special: tuple = (),
):
    """A config field: ``default``, its meaning ``help`` and its valid values.

    Numbers: bounds ``ge`` (≥), ``gt`` (>), ``le`` (≤), ``lt`` (<), always finite; ``special``
    lists sentinel values allowed outside them (e.g. −1 = "from the preset"). Strings:
    ``choices`` (the error calls the field ``what``).
    """
    meta = {"help": help, "special": tuple(special), "what": what}
    meta.update({k: v for k, v in zip(_BOUNDS, (ge, gt, le, lt), strict=True) if v is not None})
    if choices is not None:
        meta["choices"] = tuple(choices)
    return field(default=default, metadata=meta)


def field_kind(f: Field) -> str:
    """``"int"``, ``"float"``, ``"str"`` or ``"bool"``: the declared type of a config field."""
    return f.type if isinstance(f.type, str) else f.type.__name__


def describe_range(meta: Mapping) -> str:
    """The valid range of a numeric field as text, e.g. ``"in [0, 1)"`` or ``"≥ 1"``."""
    lo = ("[", meta["ge"]) if "ge" in meta else ("(", meta["gt"]) if "gt" in meta else None
    hi = ("]", meta["le"]) if "le" in meta else (")", meta["lt"]) if "lt" in meta else None
    if lo and hi:
        text = f"in {lo[0]}{_num(lo[1])}, {_num(hi[1])}{hi[0]}"
    elif lo:
        text = f"{'≥' if lo[0] == '[' else '>'} {_num(lo[1])}"
    elif hi:
        text = f"{'≤' if hi[0] == ']' else '<'} {_num(hi[1])}"
    else:
        text = "finite"
    return text + "".join(f" or {_num(v)}" for v in meta.get("special", ()))


def _num(v: float) -> str:
    """A bound as text: ``2^63`` for large powers of two, else the shortest float form."""
    if isinstance(v, int) and v >= 2**20 and v & (v - 1) == 0:
        return f"2^{v.bit_length() - 1}"
    return f"{v:g}"


def check_number(value, name: str, integer: bool = False, **bounds) -> float | int:
    """Raise ``ValueError`` unless ``value`` is a finite number (an int if ``integer``) within
    ``bounds`` (``ge``, ``gt``, ``le``, ``lt``; ``special``: extra allowed values)."""
    rng = describe_range(bounds)
    expected = f"{name} must be {'an integer' if integer else 'a number'} {rng}; got {value!r}"
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ValueError(expected)
    value = int(value) if isinstance(value, numbers.Integral) else float(value)
    if value in bounds.get("special", ()):
        return value
    ok = isinstance(value, int) or math.isfinite(value)
    ok = ok and ("ge" not in bounds or value >= bounds["ge"])
    ok = ok and ("gt" not in bounds or value > bounds["gt"])
    ok = ok and ("le" not in bounds or value <= bounds["le"])
    ok = ok and ("lt" not in bounds or value < bounds["lt"])
    if not ok:
        raise ValueError(expected)
    return value


def check_fields(cfg) -> None:
    """Check every field of the dataclass ``cfg`` against its :func:`knob` declaration.

    Types first (a bool field takes only ``True``/``False``; an int field no float; a float
    field an int, converted in place), then ranges and choices.
    """
    for f in fields(cfg):
        value, kind, meta = getattr(cfg, f.name), field_kind(f), f.metadata
        if kind == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"{f.name} must be true or false; got {value!r}")
        elif kind == "str":
            if not isinstance(value, str):
                raise ValueError(f"{f.name} must be a string; got {value!r}")
            if "choices" in meta:
                check_choice(value, meta["choices"], meta["what"] or f.name)
        else:
            bounds = {k: meta[k] for k in (*_BOUNDS, "special") if k in meta}
            check_number(value, f.name, integer=kind == "int", **bounds)
            if kind == "float" and not isinstance(value, float):
                setattr(cfg, f.name, float(value))


def parse_bool(text: str, name: str = "value") -> bool:
    """``true/false``, ``yes/no``, ``1/0`` (any case) → bool; anything else is an error."""
    low = text.strip().lower()
    if low in ("1", "true", "yes"):
        return True
    if low in ("0", "false", "no"):
        return False
    raise ValueError(f"{name} takes true or false; got {text!r}")


def parse_field(text: str, kind: str, name: str):
    """Read the command-line text of a config field of type ``kind`` (see :func:`field_kind`)."""
    if kind == "bool":
        return parse_bool(text, name)
    if kind == "str":
        return text
    try:
        return int(text) if kind == "int" else float(text)
    except ValueError:
        expected = "an integer" if kind == "int" else "a number"
        raise ValueError(f"cannot read {name}={text!r}: expected {expected}") from None


def parse_int_list(text: str, name: str) -> list[int]:
    """``"1,2,2"`` → ``[1, 2, 2]``: a comma-separated list of positive integers."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise ValueError(
            f"{name} takes positive integers separated by commas (1,2,2); got {text!r}"
        )
    return values


def config_from_dict(cls, d, where: str = "the config"):
    """``cls(**d)`` for a config dataclass, refusing keys it does not have (not validated)."""
    if not isinstance(d, dict):
        raise ValueError(f"{where} must be an object of config keys; got {type(d).__name__}")
    known = [f.name for f in fields(cls)]
    unknown = sorted(map(str, set(d) - set(known)))
    if unknown:
        raise ValueError(
            f"unknown config key(s) in {where}: {', '.join(map(_printable, unknown))}; "
            f"valid keys: {', '.join(sorted(known))}"
        )
    return cls(**d)


def _printable(text: str) -> str:
    """``text`` as it is, or its ``repr`` if it holds line breaks or other unprintable
    characters (so that an error message stays one line)."""
    return text if text.isprintable() else repr(text)


def read_json(path: str | os.PathLike, what: str = "JSON file") -> dict:
    """A JSON object read from ``path``; one clear line if it is missing, malformed or not an
    object (``FileNotFoundError`` / ``ValueError``)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} {p} not found")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{what} {p} is not a text file") from None
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{what} {p} is not valid JSON (truncated or malformed?): {err.msg} at line "
            f"{err.lineno}, column {err.colno}"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(f"{what} {p} must hold a JSON object; got {type(data).__name__}")
    return data
