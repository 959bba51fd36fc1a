"""Robustness sweep: bad and unusual inputs across the public API and the command line.

Every case is one call with one argument replaced by a bad or unusual value (a shape, dtype,
NaN/inf, a huge or tiny scale, a time outside [0, 1], a wrong type, a bad name, a damaged
checkpoint, a command-line argument list), and what happened is classified as

* **clear error** — one of the package's error types, raised by the package's own checks, with
  a one-line message (command line: status 2, or 1 for a failed run, and one line on stderr);
* **correct result** — a finite result of the documented shape for an input that has a meaning;
* **silent wrong answer** — NaN/inf handed back, a result of the wrong shape, or a result for an
  input that has no meaning (a time of 1.5, a negative count, …);
* **hang** — still running after the time limit (the case runs in a worker process, which is
  killed and replaced);
* **traceback / misleading error** — any other exception, an exception from inside torch,
  NumPy or Python rather than the package's checks, or a message over several lines;
* **data loss** — a command changed or removed a file it only reads (a checkpoint, a notebook).

Usage (from the repository root)::

    python benchmarks/robustness_sweep.py                 # all cases, a table of counts
    python benchmarks/robustness_sweep.py --json out.json # also every case's outcome
    python benchmarks/robustness_sweep.py --list          # the cases, not run

The sweep only uses the public API, so it runs against any checkout of the package
(``PYTHONPATH=that/checkout``) and the counts of two versions can be compared.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import linecache
import math
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path

import numpy as np
import torch

ACCEPT, REFUSE, EITHER = "accept", "refuse", "either"
OUTCOMES = (
    "clear error",
    "correct result",
    "silent wrong answer",
    "hang",
    "traceback/misleading error",
    "data loss",
)
LIMIT_S = 60.0


@dataclass
class Case:
    """One call: ``run()`` returns the result; ``expect`` says whether the input has a meaning
    (``accept``), has none (``refuse``) or may do either (``either``); ``check(result)``
    returns a problem with a result, or ``None``."""

    group: str
    name: str
    run: Callable[[], object]
    expect: str
    check: Callable[[object], str | None] | None = None
    cli: bool = False
    protect: Callable[[], list[Path]] | None = None
    allow_inf: bool = False


# --- classification --------------------------------------------------------------------------


def _package_dir() -> Path:
    import gctm_mini

    return Path(gctm_mini.__file__).resolve().parent


def clear_error(err: BaseException) -> str | None:
    """``None`` for a clear error, else what is wrong with it."""
    from gctm_mini.checkpoint import CheckpointError

    kinds = (ValueError, TypeError, CheckpointError, FileNotFoundError)
    try:
        from gctm_mini._optional import MissingExtraError
        from gctm_mini.evaluation import MetricUnavailableError

        kinds = (*kinds, MissingExtraError, MetricUnavailableError)
    except ImportError:
        pass
    if not isinstance(err, kinds):
        return f"unexpected {type(err).__name__}"
    msg = str(err).strip()
    if not msg or "\n" in msg:
        return "empty or multi-line message"
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return "no traceback"
    path = Path(tb.tb_frame.f_code.co_filename).resolve()
    if _package_dir() not in path.parents:
        return f"raised inside {path.name}, not by the package"
    if not linecache.getline(str(path), tb.tb_lineno).strip().startswith("raise"):
        return "raised by Python inside the package, not by its checks"
    return None


def nonfinite(value, allow_inf: bool = False) -> bool:
    """True if ``value`` (tensors, numbers, containers, dataclasses) holds NaN or ±inf."""
    if torch.is_tensor(value):
        if not (value.is_floating_point() or value.is_complex()) or value.numel() == 0:
            return False
        bad = torch.isnan(value) if allow_inf else ~torch.isfinite(value)
        return bool(bad.any())
    if isinstance(value, np.ndarray):
        return nonfinite(torch.as_tensor(value), allow_inf)
    if isinstance(value, bool | int | str) or value is None:
        return False
    if isinstance(value, float | complex | np.floating):
        v = abs(complex(value))
        return math.isnan(v) or (not allow_inf and math.isinf(v))
    if isinstance(value, dict):
        return any(nonfinite(v, allow_inf) for v in value.values())
    if isinstance(value, list | tuple):
        return any(nonfinite(v, allow_inf) for v in value)
    if is_dataclass(value):
        return any(nonfinite(getattr(value, f.name), allow_inf) for f in fields(value))
    return False


def digest(paths: list[Path]) -> dict[str, str | None]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None for p in paths
    }


def classify(case: Case) -> tuple[str, str]:
    """``(outcome, detail)`` of running ``case`` (in this process)."""
    protected = case.protect() if case.protect else []
    before = digest(protected)
    if case.cli:
        outcome, detail = _classify_cli(case)
    else:
        outcome, detail = _classify_call(case)
    if protected and digest(protected) != before:
        changed = [p for p, h in before.items() if digest([Path(p)])[p] != h]
        return "data loss", f"changed or removed {changed}"
    return outcome, detail


def _classify_call(case: Case) -> tuple[str, str]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = case.run()
    except Exception as err:
        problem = clear_error(err)
        text = f"{type(err).__name__}: {' '.join(str(err).split())[:160]}"
        if problem is None:
            note = " (a valid input refused)" if case.expect == ACCEPT else ""
            return "clear error", text + note
        return "traceback/misleading error", f"{problem}: {text}"
    if nonfinite(out, case.allow_inf):
        return "silent wrong answer", "NaN/inf in the result"
    if case.expect == REFUSE:
        return "silent wrong answer", "a result for an input that has no meaning"
    if case.check is not None:
        problem = case.check(out)
        if problem:
            return "silent wrong answer", problem
    return "correct result", ""


def _classify_cli(case: Case) -> tuple[str, str]:
    err_buf, out_buf = io.StringIO(), io.StringIO()
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stderr(err_buf),
            contextlib.redirect_stdout(out_buf),
        ):
            warnings.simplefilter("ignore")
            try:
                rc = case.run()
            except SystemExit as exc:
                rc = exc.code if isinstance(exc.code, int) else 2
    except Exception as err:
        return "traceback/misleading error", f"{type(err).__name__}: {str(err)[:160]}"
    err = err_buf.getvalue()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if rc == 0:
        if case.expect == REFUSE:
            return "silent wrong answer", "status 0 for a bad argument list"
        return "correct result", ""
    if rc in (1, 2) and len(lines) == 1 and "error" in lines[0]:
        note = " (a valid input refused)" if case.expect == ACCEPT else ""
        return "clear error", f"status {rc}: {lines[0][:160]}{note}"
    return "traceback/misleading error", f"status {rc}, stderr {err.strip()[:200]!r}"


# --- value catalogs ----------------------------------------------------------------------------


def tensor_variants(good: torch.Tensor, ints: str = EITHER) -> Iterator[tuple[str, object, str]]:
    """Bad and unusual versions of the batch ``good: (B, *D)``."""
    B, D = good.shape[0], tuple(good.shape[1:])
    g = torch.Generator().manual_seed(1)

    def like(shape):
        return torch.randn(shape, generator=g, dtype=good.dtype).clamp(-1, 1)

    def poke(value):
        x = good.clone()
        x.view(-1)[0] = value
        return x

    yield "float64", good.double(), ACCEPT
    yield "float16", good.half(), ACCEPT
    yield "bfloat16", good.bfloat16(), EITHER
    yield "int64", good.round().long(), ints
    yield "bool", good > 0, EITHER
    yield "complex64", good.to(torch.complex64), REFUSE
    yield "one NaN", poke(math.nan), REFUSE
    yield "one +inf", poke(math.inf), REFUSE
    yield "one -inf", poke(-math.inf), REFUSE
    yield "values 1e30", good * 1e30, EITHER
    yield "float64 values 1e300", good.double() * 1e300, EITHER
    yield "values 1e-30", good * 1e-30, ACCEPT
    yield "all zeros", torch.zeros_like(good), EITHER
    yield "all negative", -good.abs() - 0.1, ACCEPT
    yield "empty batch", like((0, *D)), REFUSE
    yield "batch of 1", like((1, *D)), ACCEPT
    yield "odd batch 3", like((3, *D)), ACCEPT
    yield "wrong sample shape", like((B, *D[:-1], D[-1] + 1)), REFUSE
    yield "no batch dim", like(D), REFUSE
    yield "0-d", torch.tensor(0.5), REFUSE
    yield "extra dim", like((B, *D, 1)), REFUSE
    yield "nested list", good.tolist(), EITHER
    yield "numpy array", good.numpy(), EITHER
    yield "None", None, REFUSE
    yield "string", "x", REFUSE


def number_variants(lo: float, hi: float, lo_open=False, hi_open=False):
    """Numbers around the valid range ``[lo, hi]`` (open ends as given) and wrong kinds."""

    def valid(v: float) -> bool:
        if not math.isfinite(v):
            return False
        above = v > lo if lo_open else v >= lo
        below = v < hi if hi_open else v <= hi
        return above and below

    mid = lo + 0.5 * (hi - lo) if math.isfinite(hi - lo) else (lo + 1 if math.isfinite(lo) else 0.5)
    values = [lo, hi, mid, lo - 1, hi + 1, math.nan, math.inf, -math.inf, 1e30, -1e30, 1e-300]
    labels = set()
    for v in values:
        if f"{v:g}" in labels:
            continue
        labels.add(f"{v:g}")
        yield f"{v:g}", v, ACCEPT if valid(v) else REFUSE
    yield "string", f"{mid:g}", REFUSE
    yield "None", None, REFUSE
    yield "True", True, REFUSE
    yield "complex", complex(mid, 1), REFUSE
    yield "list", [mid], REFUSE
    yield "numpy float32", np.float32(mid), ACCEPT if valid(float(np.float32(mid))) else REFUSE


def count_variants(lo: int, hi: int | None = None):
    def valid(v):
        return v >= lo and (hi is None or v <= hi)

    for v in sorted({lo, lo + 1, lo - 1, 0, -1}):
        yield str(v), v, ACCEPT if valid(v) else REFUSE
    yield "float 2.5", 2.5, REFUSE
    yield "float 2.0", 2.0, EITHER
    yield "True", True, REFUSE
    yield "string", "2", REFUSE
    yield "None", None, REFUSE
    yield "10^30", 10**30, REFUSE if hi is not None else EITHER
    yield "numpy int64", np.int64(lo + 1), ACCEPT if valid(lo + 1) else REFUSE


def time_variants(B: int, lo_open=False):
    yield "0", 0.0, REFUSE if lo_open else ACCEPT
    yield "1", 1.0, ACCEPT
    yield "0.5", 0.5, ACCEPT
    yield "-0.1", -0.1, REFUSE
    yield "1.1", 1.1, REFUSE
    yield "NaN", math.nan, REFUSE
    yield "inf", math.inf, REFUSE
    yield "1e-30", 1e-30, ACCEPT
    yield "tensor (B,)", torch.linspace(0.1, 0.9, B), ACCEPT
    yield "tensor (B,) with 1.5", torch.full((B,), 1.5), REFUSE
    yield "tensor (B,) with NaN", torch.full((B,), math.nan), REFUSE
    yield "tensor wrong length", torch.rand(B + 1), REFUSE
    yield "tensor (B, 1)", torch.rand(B, 1), REFUSE
    yield "0-d tensor", torch.tensor(0.5), ACCEPT
    yield "int tensor", torch.ones(B, dtype=torch.long), EITHER
    yield "string", "0.5", REFUSE
    yield "None", None, REFUSE
    yield "complex", 0.5 + 1j, REFUSE
    yield "numpy float64", np.float64(0.5), ACCEPT


def name_variants(valid: list[str]):
    for v in valid:
        yield repr(v), v, ACCEPT
    yield "empty", "", REFUSE
    yield "unknown", "nope", REFUSE
    yield "upper case", valid[0].upper() if valid[0].upper() != valid[0] else "X", REFUSE
    yield "None", None, REFUSE
    yield "int", 3, REFUSE
    yield "list", [valid[0]], REFUSE


# --- checks of results -------------------------------------------------------------------------


def shape_of(ref_shape):
    def check(out):
        out = out[0] if isinstance(out, tuple) else out
        if not torch.is_tensor(out) or tuple(out.shape) != tuple(ref_shape):
            got = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
            return f"shape {got}, expected {tuple(ref_shape)}"
        return None

    return check


def same_shape_as_input(param: str):
    """The result has the shape of the (tensor) argument ``param`` of the call."""

    def make(kwargs):
        v = kwargs[param]
        return shape_of(v.shape) if torch.is_tensor(v) else None

    return make


def ascending_grid(n=None):
    def check(g):
        if not torch.is_tensor(g) or g.dim() != 1 or bool((g[1:] <= g[:-1]).any()):
            return "not an ascending grid"
        if float(g[0]) < 0 or float(g[-1]) > 1 or (n is not None and g.shape[0] != n):
            return "grid outside [0, 1] or of the wrong length"
        return None

    return check


def nonnegative_number(out):
    if not isinstance(out, float) or out < -1e-9 * (1 + abs(out)):
        return f"not a non-negative float: {out!r}"
    return None


def scalar_loss(out):
    loss = out[0] if isinstance(out, tuple) else out
    if not torch.is_tensor(loss) or loss.dim() != 0:
        return "not a scalar tensor"
    return None


# --- the cases ---------------------------------------------------------------------------------


def sweep_call(cases, group, fn, base: dict, param: str, variants, check=None, **kw):
    """One case per variant of ``param`` (the other arguments from ``base``)."""
    for label, value, expect in variants:
        kwargs = {**base, param: value}
        chk = check(kwargs) if callable(check) and getattr(check, "per_call", False) else check

        def run(kwargs=kwargs):
            return fn(**kwargs)

        cases.append(Case(group, f"{param} = {label}", run, expect, chk, **kw))


def per_call(make):
    make.per_call = True
    return make


def api_cases(cases: list[Case], work: Path) -> None:
    import gctm_mini as gm
    from gctm_mini import consistency, couplings, interpolant, metrics, timegrid
    from gctm_mini.data2d import Circles, GaussianMixture, Moons, Spirals, make_dataset
    from gctm_mini.degradations import Degradation, gaussian_kernel
    from gctm_mini.editing import invert_ode, paste_guide, sdedit, slerp, stroke_guide
    from gctm_mini.evaluation import frechet_distance, psnr_ssim
    from gctm_mini.losses import fm_loss, sample_fm_times
    from gctm_mini.models import build_model, mlp_spec
    from gctm_mini.parameterization import CouplingMoments
    from gctm_mini.restoration import dps_ode, restore_supervised, zero_shot_restore
    from gctm_mini.sampling import (
        bcm_interpolate,
        bcm_invert,
        bcm_round_trip,
        bcm_zigzag,
        gamma_sampling,
        make_sampler,
        sample_multistep,
        sample_ode,
    )
    from gctm_mini.solvers import integrate, integrate_per_sample, nfe_of, steps_for_nfe

    torch.manual_seed(0)
    model = build_model(mlp_spec(hidden=16, depth=2)).eval().requires_grad_(False)
    torch.nn.init.normal_(model.net.out.weight, std=0.3)
    bi = build_model(mlp_spec(hidden=16, depth=2, bidirectional=True)).eval()
    bi.requires_grad_(False)
    img_spec = {
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
    img = build_model(img_spec, CouplingMoments(0.25, 1.0, 0.0)).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    B = 6
    X0, X1 = torch.randn(B, 2, generator=g), torch.randn(B, 2, generator=g)
    Y = torch.rand(2, 3, 8, 8, generator=g) * 2 - 1
    T = torch.rand(B, generator=g)
    grid = timegrid.fine_grid(4, dtype=torch.float32)
    moons = make_dataset("moons")
    add = cases.append

    def pair_check(kwargs):
        x0 = kwargs["x0"]
        if not torch.is_tensor(x0):
            return None

        def check(out):
            a, b, _ = out
            if a.shape != x0.shape:
                return "pair of the wrong shape"
            return None

        return check

    # couplings
    for coupling in ("ot", "sinkhorn"):
        base = dict(x0=X0, x1=X1, coupling=coupling)
        for p in ("x0", "x1"):
            sweep_call(
                cases,
                f"couple {coupling}",
                couplings.couple,
                base,
                p,
                tensor_variants(base[p]),
                per_call(pair_check),
            )
    base = dict(x0=X0, x1=X1, coupling="sinkhorn")
    sweep_call(
        cases,
        "couple",
        couplings.couple,
        base,
        "coupling",
        name_variants(["independent", "ot", "sinkhorn"]),
    )
    sweep_call(
        cases, "couple", couplings.couple, base, "reg", number_variants(0, 1e6, lo_open=True)
    )
    sweep_call(
        cases,
        "couple",
        couplings.couple,
        base,
        "pairing",
        name_variants(["permutation", "multinomial"]),
    )
    sweep_call(
        cases, "couple", couplings.couple, base, "cost", name_variants(["sqeuclidean", "euclidean"])
    )
    sweep_call(cases, "couple", couplings.couple, base, "max_iter", count_variants(1))
    sweep_call(cases, "couple", couplings.couple, base, "tol", number_variants(0, 1e6))
    sweep_call(
        cases,
        "couple",
        couplings.couple,
        base,
        "normalize_cost",
        [
            ("True", True, ACCEPT),
            ("False", False, ACCEPT),
            ("string", "no", REFUSE),
            ("None", None, REFUSE),
        ],
    )
    cost = couplings.pairwise_cost(X0, X1)
    sweep_call(
        cases,
        "sinkhorn_log",
        couplings.sinkhorn_log,
        dict(cost=cost, reg=0.1),
        "cost",
        tensor_variants(cost),
        per_call(same_shape_as_input("cost")),
    )
    sweep_call(
        cases,
        "sinkhorn_log",
        couplings.sinkhorn_log,
        dict(cost=cost, reg=0.1),
        "reg",
        number_variants(0, 1e6, lo_open=True),
    )
    plan = couplings.sinkhorn_log(cost, 0.1)
    sweep_call(
        cases,
        "sinkhorn_pairs",
        couplings.sinkhorn_pairs,
        dict(plan=plan),
        "plan",
        tensor_variants(plan),
    )
    sweep_call(
        cases,
        "exact_ot_permutation",
        couplings.exact_ot_permutation,
        dict(x0=X0, x1=X1),
        "x1",
        tensor_variants(X1),
    )
    sweep_call(
        cases,
        "perturb_source",
        couplings.perturb_source,
        dict(x1=X1, eps=0.1),
        "x1",
        tensor_variants(X1),
        per_call(same_shape_as_input("x1")),
    )
    sweep_call(
        cases,
        "perturb_source",
        couplings.perturb_source,
        dict(x1=X1, eps=0.1),
        "eps",
        number_variants(0, 1e6),
    )

    # interpolant and grids
    base = dict(x0=X0, x1=X1, t=0.5)
    for p in ("x0", "x1"):
        sweep_call(
            cases,
            "interpolate",
            interpolant.interpolate,
            base,
            p,
            tensor_variants(base[p]),
            per_call(same_shape_as_input(p)),
        )
    sweep_call(
        cases,
        "interpolate",
        interpolant.interpolate,
        base,
        "t",
        time_variants(B),
        shape_of(X0.shape),
    )
    sweep_call(
        cases,
        "conditional_velocity",
        interpolant.conditional_velocity,
        dict(x0=X0, x1=X1),
        "x1",
        tensor_variants(X1),
        per_call(same_shape_as_input("x1")),
    )
    for label, v, e in time_variants(B):
        add(
            Case(
                "sigma_from_t",
                f"t = {label}",
                lambda v=v: interpolant.sigma_from_t(v),
                e,
                allow_inf=True,
            )
        )
    for label, v, e in number_variants(0, math.inf):
        e = ACCEPT if label == "inf" else e
        add(Case("t_from_sigma", f"sigma = {label}", lambda v=v: interpolant.t_from_sigma(v), e))
    base = dict(M=8)
    sweep_call(
        cases, "fine_grid", timegrid.fine_grid, base, "M", count_variants(1), ascending_grid()
    )
    sweep_call(
        cases,
        "fine_grid",
        timegrid.fine_grid,
        base,
        "sigma_min",
        number_variants(0, 80, lo_open=True, hi_open=True),
        ascending_grid(9),
    )
    sweep_call(
        cases,
        "fine_grid",
        timegrid.fine_grid,
        base,
        "sigma_max",
        number_variants(0.002, 1e6, lo_open=True),
        ascending_grid(9),
    )
    sweep_call(
        cases,
        "fine_grid",
        timegrid.fine_grid,
        base,
        "rho",
        number_variants(0, 100, lo_open=True),
        ascending_grid(9),
    )
    sweep_call(
        cases,
        "fine_grid",
        timegrid.fine_grid,
        base,
        "shift",
        number_variants(0, 1, hi_open=True),
        ascending_grid(9),
    )
    sweep_call(
        cases,
        "edm_times",
        timegrid.edm_times,
        dict(k=4),
        "t_lo",
        number_variants(0, 1, hi_open=True),
        ascending_grid(5),
    )
    sweep_call(
        cases, "edm_times", timegrid.edm_times, dict(k=4), "k", count_variants(1), ascending_grid()
    )
    fine = timegrid.fine_grid(8)
    sweep_call(
        cases,
        "coarse_grid",
        timegrid.coarse_grid,
        dict(fine=fine, N=4),
        "N",
        [*count_variants(1, 8), ("3 (not a divisor)", 3, REFUSE)],
        ascending_grid(),
    )
    sweep_call(
        cases,
        "coarse_grid",
        timegrid.coarse_grid,
        dict(fine=fine, N=4),
        "fine",
        [
            ("descending", fine.flip(0), REFUSE),
            ("list", fine.tolist(), EITHER),
            ("with NaN", fine * math.nan, REFUSE),
            ("1 entry", fine[:1], REFUSE),
        ],
        ascending_grid(5),
    )
    sweep_call(
        cases, "uniform_grid", timegrid.uniform_grid, dict(steps=4), "steps", count_variants(1)
    )
    sweep_call(
        cases,
        "uniform_grid",
        timegrid.uniform_grid,
        dict(steps=4),
        "t_start",
        number_variants(0, 1),
    )
    sweep_call(
        cases, "curriculum_N", timegrid.curriculum_N, dict(step=0), "step", count_variants(0)
    )
    sweep_call(
        cases,
        "curriculum_N",
        timegrid.curriculum_N,
        dict(step=10**6, double_every=1),
        "cap",
        count_variants(1),
    )
    sweep_call(
        cases, "draw_tsu", timegrid.draw_tsu, dict(grid=grid, batch=4), "batch", count_variants(1)
    )
    sweep_call(
        cases,
        "draw_tsu",
        timegrid.draw_tsu,
        dict(grid=grid, batch=4),
        "grid",
        [
            ("descending", grid.flip(0), REFUSE),
            ("NaN", grid * math.nan, REFUSE),
            ("list", grid.tolist(), EITHER),
            ("2-D", grid[None], REFUSE),
            ("from 0.2", torch.tensor([0.2, 0.5, 1.0]), REFUSE),
        ],
    )

    # the model
    for which, m in (("G", model.G), ("g", model.g)):
        base = dict(x=X1, t=0.8, s=0.2)
        sweep_call(
            cases,
            f"model.{which}",
            m,
            base,
            "x",
            tensor_variants(X1, ints=REFUSE),
            per_call(same_shape_as_input("x")),
        )
        sweep_call(cases, f"model.{which}", m, base, "t", time_variants(B), shape_of(X1.shape))
        later = ("1", "tensor (B,)", "int tensor")  # s > t = 0.8: the map runs forward only
        sweep_call(
            cases,
            f"model.{which}",
            m,
            base,
            "s",
            [(lab, v, REFUSE if lab in later else e) for lab, v, e in time_variants(B)],
            shape_of(X1.shape),
        )
    sweep_call(cases, "model.velocity", model.velocity, dict(x=X1, t=0.5), "t", time_variants(B))
    sweep_call(
        cases,
        "bidirectional G",
        bi.G,
        dict(x=X1, t=0.2, s=0.8),
        "s",
        time_variants(B),
        shape_of(X1.shape),
    )
    sweep_call(
        cases,
        "CouplingMoments.estimate",
        CouplingMoments.estimate,
        dict(x0=X0, x1=X1),
        "x0",
        tensor_variants(X0),
    )
    sweep_call(
        cases,
        "CouplingMoments.estimate",
        CouplingMoments.estimate,
        dict(x0=X0, x1=X1),
        "eps",
        number_variants(0, 1e6),
    )
    spec = mlp_spec(hidden=8, depth=1)
    for key, variants in (
        ("hidden", count_variants(1, 4096)),
        ("depth", count_variants(1, 16)),
        ("dropout", number_variants(0, 1, hi_open=True)),
        ("emb_dim", [("odd 3", 3, REFUSE), *count_variants(2, 64)]),
    ):
        for label, v, e in variants:
            if key == "emb_dim" and isinstance(v, int) and not isinstance(v, bool) and v % 2:
                e = REFUSE
            s = {**spec, "net_kwargs": {**spec["net_kwargs"], key: v}}
            add(Case("build_model", f"net_kwargs {key} = {label}", lambda s=s: build_model(s), e))
    for key, variants in (
        ("net", name_variants(["mlp"])),
        (
            "data_shape",
            [
                ("[3]", [3], REFUSE),
                ("[]", [], REFUSE),
                ("None", None, REFUSE),
                ("[-2]", [-2], REFUSE),
                ("'ab'", "ab", REFUSE),
            ],
        ),
        ("sigma_max", number_variants(0.002, 1e6, lo_open=True)),
        ("sigma_min", number_variants(0, 80, lo_open=True, hi_open=True)),
    ):
        for label, v, e in variants:
            s = {**spec, key: v}
            add(Case("build_model", f"{key} = {label}", lambda s=s: build_model(s), e))

    # solvers and samplers
    times = torch.linspace(1, 0, 5)
    base = dict(v=model.velocity, x=X1, times=times)
    sweep_call(
        cases,
        "integrate",
        integrate,
        base,
        "x",
        tensor_variants(X1, ints=REFUSE),
        per_call(same_shape_as_input("x")),
    )
    sweep_call(
        cases,
        "integrate",
        integrate,
        base,
        "times",
        [
            ("ascending", times.flip(0), ACCEPT),
            ("with 1.5", torch.tensor([1.5, 0.0]), REFUSE),
            ("NaN", times * math.nan, REFUSE),
            ("one time", times[:1], REFUSE),
            ("not monotone", torch.tensor([1.0, 0.2, 0.5]), REFUSE),
            ("list", times.tolist(), EITHER),
            ("string", "1,0", REFUSE),
            ("complex", times.to(torch.complex64), REFUSE),
        ],
        shape_of(X1.shape),
    )
    sweep_call(cases, "integrate", integrate, base, "method", name_variants(["euler", "heun"]))
    sweep_call(
        cases,
        "integrate",
        integrate,
        dict(v=lambda x, t: x[:, :1], x=X1, times=times),
        "method",
        [("velocity of the wrong shape", "euler", REFUSE)],
    )
    sweep_call(
        cases,
        "integrate",
        integrate,
        dict(v=lambda x, t: x * math.nan, x=X1, times=times),
        "method",
        [("velocity returning NaN", "euler", REFUSE)],
    )
    idx = torch.tensor([0, 1, 2, 3, 4, 4])
    base = dict(v=model.velocity, x=X1, grid=grid, start_idx=idx, end_idx=idx.flip(0))
    sweep_call(
        cases,
        "integrate_per_sample",
        integrate_per_sample,
        base,
        "start_idx",
        [
            ("valid", idx, ACCEPT),
            ("out of range", idx + 5, REFUSE),
            ("negative", idx - 1, REFUSE),
            ("float", idx.float(), REFUSE),
            ("wrong length", idx[:3], REFUSE),
            ("list", idx.tolist(), REFUSE),
        ],
        shape_of(X1.shape),
    )
    sweep_call(
        cases,
        "integrate_per_sample",
        integrate_per_sample,
        base,
        "grid",
        [("descending", grid.flip(0), REFUSE), ("NaN", grid * math.nan, REFUSE)],
    )
    sweep_call(
        cases,
        "nfe_of",
        nfe_of,
        dict(times=times, method="heun"),
        "times",
        [("string", "1,0", REFUSE), ("one time", times[:1], REFUSE), ("list", [1.0, 0.0], EITHER)],
    )
    sweep_call(
        cases, "steps_for_nfe", steps_for_nfe, dict(nfe=4, method="heun"), "nfe", count_variants(1)
    )
    base = dict(model=model, x1=X1, nfe=4)
    sweep_call(
        cases,
        "sample_ode",
        sample_ode,
        base,
        "x1",
        tensor_variants(X1, ints=REFUSE),
        per_call(same_shape_as_input("x1")),
    )
    sweep_call(cases, "sample_ode", sample_ode, base, "nfe", count_variants(1))
    sweep_call(cases, "sample_ode", sample_ode, base, "method", name_variants(["euler", "heun"]))
    jump_variants = [
        ("int 2", 2, ACCEPT),
        ("int 0", 0, REFUSE),
        ("int -1", -1, REFUSE),
        ("list", [1.0, 0.5, 0.0], ACCEPT),
        ("ascending", [0.0, 1.0], REFUSE),
        ("with 1.5", [1.5, 0.0], REFUSE),
        ("with NaN", [1.0, math.nan, 0.0], REFUSE),
        ("one time", [1.0], REFUSE),
        ("string", "2", REFUSE),
        ("None", None, REFUSE),
        ("True", True, REFUSE),
        ("float 2.0", 2.0, REFUSE),
        ("tensor", torch.tensor([1.0, 0.0]), ACCEPT),
        ("2-D tensor", torch.ones(2, 2), REFUSE),
        ("repeated time", [1.0, 0.5, 0.5, 0.0], REFUSE),
    ]
    base = dict(model=model, x1=X1, times=2)
    sweep_call(
        cases,
        "sample_multistep",
        sample_multistep,
        base,
        "times",
        jump_variants,
        shape_of(X1.shape),
    )
    sweep_call(
        cases,
        "sample_multistep",
        sample_multistep,
        base,
        "x1",
        tensor_variants(X1, ints=REFUSE),
        per_call(same_shape_as_input("x1")),
    )
    base = dict(model=model, x=X1, times=2, gamma=0.5)
    sweep_call(
        cases, "gamma_sampling", gamma_sampling, base, "times", jump_variants, shape_of(X1.shape)
    )
    sweep_call(
        cases,
        "gamma_sampling",
        gamma_sampling,
        base,
        "gamma",
        number_variants(0, 1),
        shape_of(X1.shape),
    )
    sweep_call(
        cases,
        "gamma_sampling",
        gamma_sampling,
        base,
        "x",
        tensor_variants(X1, ints=REFUSE),
        per_call(same_shape_as_input("x")),
    )
    sweep_call(
        cases,
        "make_sampler",
        make_sampler,
        dict(model=model, kind="gamma"),
        "gamma",
        number_variants(0, 1),
    )
    sweep_call(
        cases,
        "make_sampler",
        make_sampler,
        dict(model=model, kind="gamma"),
        "kind",
        name_variants(["euler", "heun", "flowmap", "gamma"]),
    )
    base = dict(model=bi, x0=X0, times=2, t_start=0.02)
    sweep_call(
        cases,
        "bcm_invert",
        bcm_invert,
        base,
        "x0",
        tensor_variants(X0, ints=REFUSE),
        per_call(same_shape_as_input("x0")),
    )
    sweep_call(
        cases,
        "bcm_invert",
        bcm_invert,
        base,
        "t_start",
        number_variants(0, 1, lo_open=True, hi_open=True),
        shape_of(X0.shape),
    )
    sweep_call(
        cases,
        "bcm_invert",
        bcm_invert,
        base,
        "times",
        [
            ("int 2", 2, ACCEPT),
            ("int 0", 0, REFUSE),
            ("descending", [1.0, 0.0], REFUSE),
            ("string", "2", REFUSE),
            ("with 1.5", [0.02, 1.5], REFUSE),
        ],
        shape_of(X0.shape),
    )
    sweep_call(
        cases,
        "bcm_invert",
        bcm_invert,
        dict(model=model, x0=X0),
        "times",
        [("forward model", 2, REFUSE)],
    )
    sweep_call(
        cases, "bcm_round_trip", bcm_round_trip, dict(model=bi, x0=X0, k=2), "k", count_variants(1)
    )
    sweep_call(
        cases,
        "bcm_zigzag",
        bcm_zigzag,
        dict(model=bi, x1=X1, times=[0.5]),
        "times",
        [
            ("[0.5]", [0.5], ACCEPT),
            ("[]", [], ACCEPT),
            ("[1.5]", [1.5], REFUSE),
            ("[NaN]", [math.nan], REFUSE),
            ("int", 3, REFUSE),
            ("string", "0.5", REFUSE),
        ],
        shape_of(X1.shape),
    )
    sweep_call(
        cases,
        "bcm_interpolate",
        bcm_interpolate,
        dict(model=bi, xa=X0, xb=X1, weights=torch.tensor([0.0, 0.5, 1.0])),
        "weights",
        [
            ("tensor", torch.tensor([0.0, 0.5, 1.0]), ACCEPT),
            ("list", [0.0, 1.0], EITHER),
            ("NaN", torch.tensor([math.nan]), REFUSE),
            ("string", "0.5", REFUSE),
            ("None", None, REFUSE),
        ],
    )
    sweep_call(
        cases,
        "bcm_interpolate",
        bcm_interpolate,
        dict(model=bi, xa=X0, xb=X1, weights=torch.tensor([0.5])),
        "xb",
        [("another batch size", X1[:3], REFUSE), ("NaN", X1 * math.nan, REFUSE)],
    )

    # losses
    base = dict(model=model, x0=X0, x1=X1, t=T)
    for p in ("x0", "x1"):
        sweep_call(
            cases, "fm_loss", fm_loss, base, p, tensor_variants(base[p], ints=REFUSE), scalar_loss
        )
    sweep_call(
        cases,
        "fm_loss",
        fm_loss,
        base,
        "t",
        [
            (lab, v, e if torch.is_tensor(v) and v.shape == (B,) else REFUSE)
            for lab, v, e in time_variants(B)
        ],
        scalar_loss,
    )
    sweep_call(cases, "sample_fm_times", sample_fm_times, dict(batch=4), "batch", count_variants(1))
    sweep_call(
        cases,
        "sample_fm_times",
        sample_fm_times,
        dict(batch=4),
        "kind",
        name_variants(["lognormal", "uniform", "beta31"]),
    )
    sweep_call(
        cases,
        "sample_fm_times",
        sample_fm_times,
        dict(batch=4),
        "source_prob",
        number_variants(0, 1),
    )
    losses = {
        "gctm_loss": lambda x0, x1, grid: consistency.gctm_loss(model, model, x0, x1, grid),
        "ct_loss": lambda x0, x1, grid: consistency.ct_loss(model, x0, x1, grid),
        "cd_loss": lambda x0, x1, grid: consistency.cd_loss(model, model, model, x0, x1, grid),
        "ctm_loss": lambda x0, x1, grid: consistency.ctm_loss(model, model, model, x0, x1, grid),
        "bcm_loss": lambda x0, x1, grid: consistency.bcm_loss(bi, x0, x1, grid),
    }
    bad_grids = [
        ("descending", grid.flip(0), REFUSE),
        ("NaN", grid * math.nan, REFUSE),
        ("not from 0", torch.tensor([0.2, 0.5, 1.0]), REFUSE),
        ("list", grid.tolist(), EITHER),
        ("one node", grid[:1], REFUSE),
        ("2 nodes", torch.tensor([0.0, 1.0]), ACCEPT),
    ]
    for name, fn in losses.items():
        base = dict(x0=X0, x1=X1, grid=grid)
        sweep_call(cases, name, fn, base, "x0", tensor_variants(X0, ints=REFUSE), scalar_loss)
        sweep_call(cases, name, fn, base, "grid", bad_grids, scalar_loss)
    delta = X0 - X1
    sweep_call(
        cases,
        "pseudo_huber",
        consistency.pseudo_huber,
        dict(delta=delta, c=0.01),
        "c",
        number_variants(0, 1e6),
    )
    sweep_call(
        cases,
        "pseudo_huber",
        consistency.pseudo_huber,
        dict(delta=delta, c=0.01, weight=torch.ones(B, 1)),
        "weight",
        [
            ("per sample", torch.ones(B, 1), ACCEPT),
            ("wrong shape", torch.ones(3, 2), REFUSE),
            ("string", "1", REFUSE),
        ],
    )
    sweep_call(
        cases,
        "ict_index_probs",
        consistency.ict_index_probs,
        dict(grid=grid),
        "p_std",
        number_variants(0, 1e3, lo_open=True),
    )
    sweep_call(
        cases,
        "ict_index_probs",
        consistency.ict_index_probs,
        dict(grid=grid),
        "p_mean",
        number_variants(-50, 50),
    )

    # metrics
    for fn in (metrics.w2, metrics.sliced_w2, metrics.mmd2):
        base = dict(x=X0, y=X1)
        sweep_call(
            cases,
            fn.__name__,
            fn,
            base,
            "y",
            [
                (lab, v, EITHER if lab == "batch of 1" and fn is metrics.mmd2 else e)
                for lab, v, e in tensor_variants(X1)
            ],
        )
    sweep_call(
        cases,
        "sliced_w2",
        metrics.sliced_w2,
        dict(x=X0, y=X1),
        "n_proj",
        count_variants(1),
        nonnegative_number,
    )
    sweep_call(cases, "sliced_w2", metrics.sliced_w2, dict(x=X0, y=X1), "seed", count_variants(0))
    sweep_call(
        cases,
        "mmd2",
        metrics.mmd2,
        dict(x=X0, y=X1),
        "bandwidths",
        [
            ("(0.5,)", (0.5,), ACCEPT),
            ("()", (), REFUSE),
            ("(0,)", (0.0,), REFUSE),
            ("(1e-300,)", (1e-300,), ACCEPT),
            ("(NaN,)", (math.nan,), REFUSE),
            ("0.5 (not a list)", 0.5, EITHER),
            ("string", "0.5", REFUSE),
            ("(None,)", (None,), REFUSE),
        ],
    )
    path = torch.stack([X1, (X0 + X1) / 2, X0])
    pt = torch.tensor([1.0, 0.5, 0.0])
    sweep_call(
        cases,
        "straightness",
        metrics.straightness,
        dict(path=path, times=pt),
        "path",
        [
            ("1e300", path.double() * 1e300, EITHER),
            ("NaN", path * math.nan, REFUSE),
            ("2-D", path[0], REFUSE),
            ("one time", path[:1], REFUSE),
            ("int", path.long(), EITHER),
            ("empty batch", path[:, :0], REFUSE),
            ("bool", path > 0, EITHER),
            ("list", path.tolist(), REFUSE),
        ],
        nonnegative_number,
    )
    sweep_call(
        cases,
        "straightness",
        metrics.straightness,
        dict(path=path, times=pt),
        "times",
        [
            ("equal ends", torch.tensor([1.0, 0.5, 1.0]), REFUSE),
            ("tiny spacing", torch.tensor([1e-300, 2e-300, 3e-300], dtype=torch.float64), EITHER),
            ("NaN", pt * math.nan, REFUSE),
            ("wrong length", pt[:2], REFUSE),
            ("bool", torch.tensor([True, False, True]), REFUSE),
        ],
        nonnegative_number,
    )
    sampler = make_sampler(model, "flowmap")
    base = dict(sampler=sampler, data=moons, nfes=[1], n=8, seeds=1)
    sweep_call(
        cases,
        "quality_by_nfe",
        metrics.quality_by_nfe,
        base,
        "nfes",
        [
            ("[1, 2]", [1, 2], ACCEPT),
            ("[]", [], REFUSE),
            ("[0]", [0], REFUSE),
            ("int 1", 1, REFUSE),
            ("string", "1", REFUSE),
            ("[1.5]", [1.5], REFUSE),
        ],
    )
    sweep_call(cases, "quality_by_nfe", metrics.quality_by_nfe, base, "n", count_variants(1))
    sweep_call(
        cases,
        "quality_by_nfe",
        metrics.quality_by_nfe,
        base,
        "data",
        [
            ("name", "moons", EITHER),
            ("unknown name", "nope", REFUSE),
            ("None", None, REFUSE),
            ("NaN data", lambda n, g=None: torch.full((n, 2), math.nan), REFUSE),
        ],
    )
    sweep_call(
        cases,
        "quality_by_nfe",
        metrics.quality_by_nfe,
        base,
        "sampler",
        [
            ("returns NaN", lambda x, k: x * math.nan, REFUSE),
            ("returns wrong shape", lambda x, k: x[:, :1], REFUSE),
            ("not callable", 3, REFUSE),
        ],
    )
    sweep_call(
        cases,
        "data_floor",
        metrics.data_floor,
        dict(data=moons, n=8, seeds=1),
        "seeds",
        count_variants(1),
    )
    sweep_call(
        cases,
        "data_floor",
        metrics.data_floor,
        dict(data=moons, n=8, seeds=1),
        "metric",
        name_variants(["w2", "sliced_w2", "mmd2"]),
    )
    sweep_call(
        cases,
        "mean_std",
        metrics.mean_std,
        dict(values=[1.0]),
        "values",
        [
            ("[]", [], REFUSE),
            ("[NaN]", [math.nan], REFUSE),
            ("[1e308, 1e308]", [1e308, 1e308], EITHER),
            ("string", "1", REFUSE),
            ("[1, 2]", [1, 2], ACCEPT),
        ],
    )

    # degradations, restoration, editing
    for task in ("sr2", "deblur", "inpaint", "colorize"):
        op = Degradation(task)
        sweep_call(
            cases,
            f"Degradation({task!r})",
            op,
            dict(x=Y),
            "x",
            tensor_variants(Y, ints=REFUSE),
            per_call(same_shape_as_input("x")),
        )
    op = Degradation("deblur")
    sweep_call(
        cases,
        "Degradation.project",
        op.project,
        dict(x_hat=Y, y=Y),
        "step",
        number_variants(0, 1e6, lo_open=True),
    )
    sweep_call(
        cases, "Degradation.project", op.project, dict(x_hat=Y, y=Y), "iters", count_variants(0)
    )
    sweep_call(
        cases, "Degradation", Degradation, dict(task="deblur"), "sigma", number_variants(0, 100)
    )
    sweep_call(
        cases,
        "Degradation",
        Degradation,
        dict(task="deblur"),
        "task",
        name_variants(["sr2", "sr4", "deblur", "inpaint", "colorize", "edges"]),
    )
    sweep_call(
        cases,
        "gaussian_kernel",
        gaussian_kernel,
        dict(sigma=1.0),
        "size",
        [
            ("None", None, ACCEPT),
            ("5", 5, ACCEPT),
            ("4 (even)", 4, REFUSE),
            ("0", 0, REFUSE),
            ("10^9", 10**9, REFUSE),
            ("2.0", 2.0, REFUSE),
        ],
    )
    sweep_call(
        cases, "gaussian_kernel", gaussian_kernel, dict(sigma=1.0), "sigma", number_variants(0, 100)
    )
    sr = Degradation("sr2")
    base = dict(model=img, y=Y, op=sr, nfe=1)
    sweep_call(
        cases,
        "zero_shot_restore",
        zero_shot_restore,
        base,
        "y",
        tensor_variants(Y, ints=REFUSE),
        per_call(same_shape_as_input("y")),
    )
    sweep_call(cases, "zero_shot_restore", zero_shot_restore, base, "eta", number_variants(0, 1))
    sweep_call(
        cases,
        "zero_shot_restore",
        zero_shot_restore,
        base,
        "t_start",
        number_variants(0, 1, lo_open=True),
    )
    sweep_call(
        cases,
        "zero_shot_restore",
        zero_shot_restore,
        base,
        "op",
        [("a string", "sr2", REFUSE), ("None", None, REFUSE)],
    )
    sweep_call(cases, "dps_ode", dps_ode, base, "zeta", number_variants(0, 1e3))
    sweep_call(cases, "dps_ode", dps_ode, base, "nfe", count_variants(1))
    base = dict(model=img, y_input=Y)
    sweep_call(cases, "restore_supervised", restore_supervised, base, "eps", number_variants(0, 10))
    sweep_call(
        cases,
        "restore_supervised",
        restore_supervised,
        base,
        "y_input",
        tensor_variants(Y, ints=REFUSE),
        per_call(same_shape_as_input("y_input")),
    )
    base = dict(model=img, guide=Y, t=0.5)
    sweep_call(cases, "sdedit", sdedit, base, "t", number_variants(0, 1, lo_open=True))
    sweep_call(cases, "sdedit", sdedit, base, "nfe", count_variants(1))
    sweep_call(
        cases,
        "sdedit",
        sdedit,
        base,
        "guide",
        tensor_variants(Y, ints=REFUSE),
        per_call(same_shape_as_input("guide")),
    )
    sweep_call(cases, "invert_ode", invert_ode, dict(model=img, x0=Y), "steps", count_variants(1))
    sweep_call(cases, "slerp", slerp, dict(a=Y, b=Y * 0.5, w=0.5), "w", number_variants(0, 1))
    sweep_call(
        cases,
        "slerp",
        slerp,
        dict(a=Y, b=Y * 0.5, w=0.5),
        "b",
        [
            ("identical float16", Y.half(), EITHER),
            ("another shape", Y[:1], REFUSE),
            ("zeros", torch.zeros_like(Y), EITHER),
            ("NaN", Y * math.nan, REFUSE),
        ],
    )
    sweep_call(cases, "stroke_guide", stroke_guide, dict(images=Y), "width", count_variants(1, 7))
    sweep_call(
        cases,
        "stroke_guide",
        stroke_guide,
        dict(images=Y),
        "images",
        [("4x4", Y[..., :4, :4], REFUSE), ("3-D", Y[0], REFUSE), ("NaN", Y * math.nan, REFUSE)],
    )
    sweep_call(
        cases,
        "paste_guide",
        paste_guide,
        dict(images=Y, donors=Y.flip(0)),
        "size",
        [
            ("None", None, ACCEPT),
            ("0", 0, REFUSE),
            ("100", 100, REFUSE),
            ("-2", -2, REFUSE),
            ("4", 4, ACCEPT),
            ("string", "4", REFUSE),
        ],
    )
    sweep_call(
        cases,
        "paste_guide",
        paste_guide,
        dict(images=Y, donors=Y.flip(0)),
        "donors",
        [("another shape", Y[..., :4, :4], REFUSE), ("another batch", Y[:1], REFUSE)],
    )

    # evaluation
    base = dict(pred=Y, target=Y * 0.5)
    sweep_call(
        cases,
        "psnr_ssim",
        psnr_ssim,
        base,
        "pred",
        [(lab, v, e) for lab, v, e in tensor_variants(Y, ints=EITHER)],
    )
    add(
        Case(
            "psnr_ssim",
            "identical images (documented +inf PSNR)",
            lambda: psnr_ssim(Y, Y),
            ACCEPT,
            allow_inf=True,
        )
    )
    fa, fb = torch.randn(8, 3, generator=g), torch.randn(9, 3, generator=g)
    sweep_call(
        cases,
        "frechet_distance",
        frechet_distance,
        dict(fa=fa, fb=fb),
        "fa",
        [(lab, v, EITHER if lab == "batch of 1" else e) for lab, v, e in tensor_variants(fa)],
    )

    # data sets
    for label, v, e in name_variants(list(gm.data2d.DATASETS)):
        add(Case("make_dataset", f"name = {label}", lambda v=v: make_dataset(v)(4), e))
    for label, v, e in count_variants(1):
        add(Case("dataset(n)", f"n = {label}", lambda v=v: moons(v), e))
    for key, ctor, variants in (
        ("noise", Moons, number_variants(0, 1e3)),
        ("scale", lambda scale: Moons(scale=scale), number_variants(0, 1e3, lo_open=True)),
        ("turns", lambda turns: Spirals(turns=turns), number_variants(-1e3, 1e3)),
        ("noise", Circles, number_variants(0, 1e3)),
    ):
        for label, v, e in variants:
            add(
                Case(
                    f"{getattr(ctor, '__name__', 'data set')}",
                    f"{key} = {label}",
                    lambda v=v, ctor=ctor: ctor(v)(8),
                    e,
                )
            )
    for label, args, e in (
        ("valid", ([0.5, 0.5], [[0, 0], [1, 1]], 0.1), ACCEPT),
        ("no components", ([], torch.zeros(0, 2), 0.1), REFUSE),
        ("NaN mean", ([1.0], [[math.nan, 0.0]], 0.1), REFUSE),
        ("NaN covariance", ([1.0], [[0.0, 0.0]], math.nan), REFUSE),
        ("negative weight", ([-1.0, 2.0], [[0, 0], [1, 1]], 0.1), REFUSE),
        ("string weights", ("ab", [[0, 0], [1, 1]], 0.1), REFUSE),
        ("singular covariance", ([1.0], [[0.0, 0.0]], [[[1.0, 1.0], [1.0, 1.0]]]), REFUSE),
        ("means 1-D", ([1.0], [0.0, 0.0], 0.1), REFUSE),
    ):
        add(Case("GaussianMixture", label, lambda a=args: GaussianMixture(*a)(8), e))

    # configs from dicts
    from gctm_mini.train_images import ImageConfig
    from gctm_mini.training import Toy2DConfig

    bad_values = [
        ("NaN", math.nan),
        ("-1", -1),
        ("string", "x"),
        ("None", None),
        ("list", [1]),
        ("True", True),
        ("1e30", 1e30),
        ("2^70", 2**70),
    ]
    for cls, extra in ((Toy2DConfig, {}), (ImageConfig, {"steps": 1})):
        for f in fields(cls):
            for label, v in bad_values:
                d = {**extra, f.name: v}

                def run(cls=cls, d=d):
                    return cls.from_dict(d).validate()

                add(Case(f"{cls.__name__}.from_dict", f"{f.name} = {label}", run, EITHER))
        for label, d in (
            ("unknown key", {"nope": 1}),
            ("key with a line break", {"a\nb": 1}),
            ("non-string key", {1: 2}),
            ("not a dict", [1]),
        ):
            add(
                Case(
                    f"{cls.__name__}.from_dict",
                    label,
                    lambda cls=cls, d=d: cls.from_dict(d).validate(),
                    REFUSE,
                )
            )

    checkpoint_cases(cases, work)


def checkpoint_cases(cases: list[Case], work: Path) -> None:
    from gctm_mini.checkpoint import load_checkpoint, save_checkpoint
    from gctm_mini.models import build_model, mlp_spec

    spec = mlp_spec(hidden=4, depth=1)
    good = work / "ckpt_good"
    save_checkpoint(good, {"spec": spec, "ema": build_model(spec).state_dict(), "config": {}})
    raw = (good / "checkpoint.pt").read_bytes()
    add = cases.append

    def from_bytes(name: str, data: bytes, expect: str = REFUSE):
        path = work / f"ckpt_{len(cases)}.pt"
        path.write_bytes(data)
        add(Case("load_checkpoint", name, lambda p=path: load_checkpoint(p), expect))

    for frac in (0.0, 0.1, 0.5, 0.9, 0.99):
        from_bytes(f"truncated to {frac:.0%}", raw[: int(len(raw) * frac)])
    for pos in (0.2, 0.5, 0.8, 0.95):
        data = bytearray(raw)
        i = int(len(data) * pos)
        data[i] ^= 0xFF
        from_bytes(f"one byte flipped at {pos:.0%}", bytes(data), EITHER)
    from_bytes("a JSON file", b'{"format": "gctm_mini"}')
    from_bytes("random bytes", os.urandom(4096))
    buf = io.BytesIO()
    torch.save({"a": 1}, buf)
    from_bytes("another torch file", buf.getvalue())

    def payload(name: str, expect: str = REFUSE, **changes):
        path = work / f"ckpt_dir_{len(cases)}"
        ema = build_model(spec).state_dict()
        p = {"spec": spec, "ema": ema, "config": {}}
        for k, v in changes.items():
            if k == "nan_weights":
                ema["net.out.weight"] = ema["net.out.weight"] + math.nan
            elif k.startswith("spec_"):
                p["spec"] = {**spec, k[5:]: v}
            else:
                p[k] = v
        save_checkpoint(path, p)
        add(Case("load_checkpoint", name, lambda p=path: load_checkpoint(p), expect))

    payload("NaN weights", nan_weights=True)
    payload("spec not a dict", spec=[1])
    payload("ema not a dict", ema=3)
    payload("config not a dict", config=[1])
    payload("spec net unknown", spec_net="transformer")
    payload("spec data_shape [3]", spec_data_shape=[3])
    payload("spec hidden 10^9", spec_net_kwargs={**spec["net_kwargs"], "hidden": 10**9})
    payload("spec hidden -1", spec_net_kwargs={**spec["net_kwargs"], "hidden": -1})
    payload("spec sigma_max NaN", spec_sigma_max=math.nan)
    payload("missing ema", ema=None)

    def resave(name, key, value):
        path = work / f"ckpt_re_{len(cases)}"
        shutil.copytree(good, path)
        data = torch.load(path / "checkpoint.pt", weights_only=True)
        data[key] = value
        torch.save(data, path / "checkpoint.pt")
        add(Case("load_checkpoint", name, lambda p=path: load_checkpoint(p), REFUSE))

    resave("version a list", "version", [1])
    resave("version a string", "version", "1")
    resave("version 99", "version", 99)
    resave("format wrong", "format", "other")
    resave("checksum wrong", "checksum", "0" * 64)
    add(Case("load_checkpoint", "missing path", lambda: load_checkpoint(work / "nope"), REFUSE))
    add(
        Case(
            "load_checkpoint",
            "empty directory",
            lambda: load_checkpoint(Path(tempfile.mkdtemp(dir=work))),
            REFUSE,
        )
    )
    add(
        Case(
            "load_checkpoint", "which = 'nope'", lambda: load_checkpoint(good, which="nope"), REFUSE
        )
    )


def cli_cases(cases: list[Case], work: Path) -> None:
    from gctm_mini import cli

    add = cases.append
    run = work / "run2d"
    tiny = ["--steps", "2", "--batch-size", "8", "--hidden", "8", "--depth", "1", "--quiet"]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert cli.main(["train2d", *tiny, "--ckpt-every", "2", "--out", str(run)]) == 0
    ckpt = run / "checkpoint.pt"

    def protect_run():
        return [ckpt, run / "config.json"]

    def argv_case(group, name, argv, expect, protect=protect_run, cwd=None):
        def go(argv=argv):
            old = os.getcwd()
            os.chdir(cwd or work)
            try:
                return cli.main(list(argv))
            finally:
                os.chdir(old)

        add(Case(group, name, go, expect, cli=True, protect=protect))

    # train2d: every flag with a bad value, on a fresh --out
    flags = {
        "--lr": ["nan", "-1", "0", "x", "1e400"],
        "--steps": ["-1", "1.5", "x", ""],
        "--batch-size": ["0", "-2", "1.5", "99999999999999999999"],
        "--method": ["nope", "", "FM"],
        "--data": ["nope", "", "moons,circles"],
        "--coupling": ["paired", "nope"],
        "--ema-decay": ["1", "1.5", "-0.1", "nan"],
        "--seed": ["-1", "1e3", "9223372036854775808"],
        "--sigma-max": ["0", "0.001", "inf"],
        "--n-start": ["0", "8"],
        "--eps": ["-1", "inf"],
        "--sinkhorn-reg": ["0", "-1", "nan"],
        "--grid-jitter": ["maybe", "2"],
        "--teacher": ["missing_dir", str(ckpt)],
        "--config": ["missing.json", str(ckpt), str(run / "log.csv")],
        "--hidden": ["0", "-1"],
        "--fm-source-prob": ["2", "-0.5"],
    }
    for flag, values in flags.items():
        for v in values:
            out = work / f"t2d_{len(cases)}"
            argv_case(
                "train2d", f"{flag} {v!r}", ["train2d", *tiny, flag, v, "--out", str(out)], REFUSE
            )
    for extra in (
        ["--coupling", "ot"],
        ["--coupling", "sinkhorn"],
        ["--method", "gctm"],
        ["--method", "bcm"],
        ["--method", "ct"],
        ["--lr", "1e30"],
    ):
        out = work / f"t2d_{len(cases)}"
        argv_case(
            "train2d",
            " ".join(extra),
            ["train2d", *tiny, *extra, "--out", str(out)],
            EITHER if extra[1] == "1e30" else ACCEPT,
        )
    argv_case("train2d", "--out an existing file", ["train2d", *tiny, "--out", str(ckpt)], REFUSE)
    argv_case(
        "train2d",
        "--out the run with another config",
        ["train2d", *tiny, "--lr", "0.5", "--out", str(run)],
        REFUSE,
    )

    # eval2d
    ev = ["eval2d", str(run), "--n", "8", "--seeds", "1"]
    for flag, v, e in (
        ("--nfe", "1,2", ACCEPT),
        ("--nfe", "0", REFUSE),
        ("--nfe", "x", REFUSE),
        ("--nfe", "", REFUSE),
        ("--n", "1", REFUSE),
        ("--n", "-5", REFUSE),
        ("--seeds", "0", REFUSE),
        ("--sampler", "nope", REFUSE),
        ("--gamma", "2", REFUSE),
        ("--gamma", "nan", REFUSE),
        ("--sampler", "heun", ACCEPT),
        ("--json", str(ckpt), REFUSE),
        ("--json", str(run), REFUSE),
        ("--json", str(work), REFUSE),
        ("--json", str(work / "res.json"), ACCEPT),
        ("--json", str(run / "config.json"), REFUSE),
    ):
        argv_case("eval2d", f"{flag} {Path(v).name if '/' in v else v!r}", [*ev, flag, v], e)
    for target, e in (
        (work / "missing", REFUSE),
        (run / "log.csv", REFUSE),
        (run / "config.json", REFUSE),
        (work, REFUSE),
    ):
        argv_case("eval2d", f"dir = {target.name}", ["eval2d", str(target), "--n", "8"], e)

    # export
    for dest, e in (
        (work / "ema.pt", ACCEPT),
        (ckpt, REFUSE),
        (run, REFUSE),
        (run / "config.json", REFUSE),
        (work / "sub" / "x.pt", ACCEPT),
    ):
        for half in ([], ["--half"]):
            argv_case(
                "export",
                f"dest = {dest.name} {' '.join(half)}",
                ["export", str(run), str(dest), *half],
                e,
            )
    argv_case(
        "export", "missing run", ["export", str(work / "missing"), str(work / "x.pt")], REFUSE
    )

    # train (images) and eval (images)
    tiny_img = [
        "model_channels=8",
        "channel_mult=1",
        "num_blocks=1",
        "attn_resolutions=",
        "image_size=8",
        "batch_size=2",
        "steps=1",
        "sample_every=0",
        "ckpt_every=1",
    ]
    for sets, e in (
        ([], ACCEPT),
        (["lr=nan"], REFUSE),
        (["steps=0"], REFUSE),
        (["batch_size=3", "grad_accum=2"], REFUSE),
        (["method=nope"], REFUSE),
        (["task=sr2"], REFUSE),
        (["image_size=6"], REFUSE),
        (["channel_mult=0"], REFUSE),
        (["attn_resolutions=3"], REFUSE),
        (["dropout=2"], REFUSE),
        (["noequals"], REFUSE),
        (["=1"], REFUSE),
        (["amp=bf16"], REFUSE),
        (["nope=1"], REFUSE),
        (["seed=-1"], REFUSE),
        (["data=folder:/nonexistent"], REFUSE),
        (["data=cifar10"], REFUSE),
        (["method=cd"], REFUSE),
        (["teacher=missing"], REFUSE),
    ):
        out = work / f"img_{len(cases)}"
        argv_case(
            "train",
            " ".join(sets) or "tiny",
            [
                "train",
                "--config",
                "patches_cpu",
                "--quiet",
                "--out",
                str(out),
                "--set",
                *tiny_img,
                *sets,
            ],
            e,
        )
    for config, e in (
        ("nope", REFUSE),
        (str(work / "missing.json"), REFUSE),
        (str(run / "config.json"), REFUSE),
        (str(ckpt), REFUSE),
    ):
        argv_case(
            "train",
            f"--config {Path(config).name}",
            ["train", "--config", config, "--out", str(work / "imgx"), "--quiet"],
            e,
        )
    for dev in ("cuda:7", "tpu", "mps"):
        argv_case(
            "train",
            f"--device {dev}",
            [
                "train",
                "--config",
                "patches_cpu",
                "--out",
                str(work / "imgd"),
                "--device",
                dev,
                "--quiet",
                "--set",
                *tiny_img,
            ],
            REFUSE,
        )
    argv_case("eval", "a 2D run", ["eval", str(run), "--num", "4", "--no-grid"], REFUSE)
    argv_case("eval", "--num 2", ["eval", str(run), "--num", "2"], REFUSE)
    argv_case("eval", "missing", ["eval", str(work / "missing"), "--num", "4"], REFUSE)

    # demo, classroom, the top level
    argv_case("demo", "--steps 0", ["demo", "--steps", "0", "--out", str(work / "demo")], REFUSE)
    argv_case("demo", "--n 1", ["demo", "--n", "1", "--out", str(work / "demo")], REFUSE)
    argv_case(
        "demo",
        "--out a file",
        ["demo", "--steps", "1", "--n", "4", "--quiet", "--out", str(ckpt)],
        REFUSE,
    )
    for argv, e in (
        ([], REFUSE),
        (["nope"], REFUSE),
        (["--version"], REFUSE),
        (["train2d"], REFUSE),
        (["eval2d"], REFUSE),
        (["export", "a"], REFUSE),
        (["classroom"], REFUSE),
        (["classroom", "grade"], REFUSE),
        (["--help"], ACCEPT),
        (["train2d", "--help"], ACCEPT),
    ):
        argv_case("top level", " ".join(argv) or "(nothing)", argv, e)
    nbdir = work / "nbs"
    nbdir.mkdir(exist_ok=True)
    contents = {
        "empty": "",
        "a list": "[]",
        "cells not a list": '{"cells": 1}',
        "cell metadata not a dict": '{"cells": [{"metadata": 1}]}',
        "graded cell, outputs not a list": '{"cells": [{"metadata": {"nbgrader": {"grade": true}}, "outputs": 1}]}',
        "graded cell without grade_id": '{"cells": [{"metadata": {"nbgrader": {"grade": true}}, "outputs": []}]}',
        "not JSON": "not json",
        "binary": "\x00\xff",
    }
    for label, text in contents.items():
        nb = nbdir / f"{len(cases)}.ipynb"
        nb.write_text(text, encoding="utf-8", errors="surrogateescape")
        argv_case(
            "classroom grade",
            label,
            ["classroom", "grade", str(nb), "--no-run"],
            REFUSE,
            protect=lambda nb=nb: [nb],
        )
    check = {
        "cell_type": "code",
        "source": "check()",
        "metadata": {"nbgrader": {"grade": True, "grade_id": "check-ex1", "points": 1}},
        "outputs": [{"output_type": "stream", "name": "stdout", "text": "✓ ex1\n"}],
    }
    nb = nbdir / "graded.ipynb"
    nb.write_text(
        json.dumps({"cells": [check], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
    )
    argv_case(
        "classroom grade",
        "--csv the notebook itself",
        ["classroom", "grade", str(nb), "--no-run", "--csv", str(nb)],
        REFUSE,
        protect=lambda: [nb],
    )
    argv_case(
        "classroom grade",
        "--csv a directory",
        ["classroom", "grade", str(nb), "--no-run", "--csv", str(nbdir)],
        REFUSE,
        protect=lambda: [nb],
    )
    argv_case(
        "classroom grade",
        "--csv a new file",
        ["classroom", "grade", str(nb), "--no-run", "--csv", str(work / "g.csv")],
        ACCEPT,
        protect=lambda: [nb],
    )
    argv_case(
        "classroom grade",
        "missing notebook",
        ["classroom", "grade", str(nbdir / "missing.ipynb"), "--no-run"],
        REFUSE,
    )

    # real processes: the status and the stderr a shell sees
    for argv, status in (
        (["train2d", "--lr", "nan", "--out", "x"], 2),
        ([], 2),
        (["eval2d", str(work / "missing")], 2),
        (["--help"], 0),
    ):

        def go(argv=argv):
            env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
            env["PYTHONPATH"] = os.pathsep.join(
                [str(Path(_package_dir()).parent), env.get("PYTHONPATH", "")]
            )
            p = subprocess.run(
                [sys.executable, "-m", "gctm_mini", *argv],
                capture_output=True,
                text=True,
                cwd=work,
                env=env,
                timeout=LIMIT_S,
            )
            sys.stderr.write(p.stderr)
            return p.returncode

        add(
            Case(
                "subprocess",
                " ".join(argv) or "(nothing)",
                go,
                REFUSE if status else ACCEPT,
                cli=True,
            )
        )


def build_cases(work: Path) -> list[Case]:
    torch.manual_seed(0)
    cases: list[Case] = []
    api_cases(cases, work)
    cli_cases(cases, work)
    return cases


# --- running: a worker process that can be killed when a case hangs -----------------------------


def worker(work: Path) -> None:
    """Build the cases in a fresh ``work`` directory of its own, then read case indices on
    stdin and answer one JSON line per case on the original stdout."""
    reply = os.fdopen(os.dup(1), "w", buffering=1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    torch.set_num_threads(1)
    work.mkdir(parents=True)
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        cases = build_cases(work)
    names = [[c.group, c.name, c.expect] for c in cases]
    reply.write(json.dumps({"ready": names}) + "\n")
    for line in sys.stdin:
        i = int(line)
        t0 = time.perf_counter()
        try:
            outcome, detail = classify(cases[i])
        except BaseException as err:  # the classifier itself must never take the worker down
            outcome, detail = "traceback/misleading error", f"{type(err).__name__}: {err}"
        reply.write(
            json.dumps(
                {"i": i, "outcome": outcome, "detail": detail, "seconds": time.perf_counter() - t0}
            )
            + "\n"
        )


class Worker:
    count = 0

    def __init__(self, work: Path) -> None:
        Worker.count += 1
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", str(work / f"worker{Worker.count}")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
        )
        self.names = json.loads(self._read(900))["ready"]

    def _read(self, timeout: float) -> str:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the worker died")
        return line

    def run(self, i: int, timeout: float) -> dict:
        self.proc.stdin.write(f"{i}\n")
        self.proc.stdin.flush()
        return json.loads(self._read(timeout))

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", help="write every case's outcome here")
    p.add_argument("--list", action="store_true", help="list the cases, do not run them")
    p.add_argument("--limit", type=float, default=LIMIT_S, help="seconds before a case is a hang")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(Path(args.worker))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        w = Worker(work)
        names = w.names
        if args.list:
            w.kill()
            for group, name, expect in names:
                print(f"{group:28} {name:45} {expect}")
            print(f"{len(names)} cases")
            return None
        results = []
        for i, (group, name, expect) in enumerate(names):
            try:
                r = w.run(i, args.limit)
            except (TimeoutError, RuntimeError) as err:
                hang = isinstance(err, TimeoutError)
                r = {
                    "i": i,
                    "outcome": "hang" if hang else "traceback/misleading error",
                    "detail": f"no answer after {args.limit:g} s" if hang else "the process died",
                    "seconds": args.limit,
                }
                w.kill()
                w = Worker(work)
            results.append({"group": group, "case": name, "expect": expect, **r})
        w.kill()
    counts = Counter(r["outcome"] for r in results)
    import gctm_mini

    print(
        f"gctm_mini from {Path(gctm_mini.__file__).parent}; {len(results)} cases in "
        f"{time.perf_counter() - t0:.0f} s"
    )
    for outcome in OUTCOMES:
        print(f"{outcome:28} {counts.get(outcome, 0):5d}")
    refused = [r for r in results if "valid input refused" in r["detail"]]
    print(f"(of the clear errors, {len(refused)} refused an input marked valid)")
    print()
    for r in results:
        if (
            r["outcome"] not in ("clear error", "correct result")
            or "valid input refused" in r["detail"]
        ):
            print(f"{r['outcome']:28} {r['group']} | {r['case']} | {r['detail'][:200]}")
    if args.json:
        Path(args.json).write_text(json.dumps({"counts": dict(counts), "cases": results}, indent=1))
    return None


if __name__ == "__main__":
    main()
