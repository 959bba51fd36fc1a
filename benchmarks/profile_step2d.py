"""Where the time of one 2D GCTM training step goes.

    python benchmarks/profile_step2d.py [--data moons] [--coupling ot] [--steps 200]
        [--columns "1 thread:threads=1" "2 threads:threads=2"]

Runs the real training step (``draw_pairs`` → ``TrainingMethod.loss`` → backward → Adam →
EMA) of a GCTM run and times its parts by wrapping the functions the step calls:

=====================  ==========================================================
part                   what is timed
=====================  ==========================================================
data draw              drawing X0 and X1 (``draw_pairs`` minus the coupling)
coupling               ``couple`` (exact OT: POT's ``ot.emd`` on a B × B cost)
(t, s, u) draw         ``draw_tsu`` and the jittered grid
EMA solve              ``integrate_per_sample`` with the EMA velocity, t → u (Heun or Euler)
target forward         :math:`G_\\theta(x_u, u, s)` under ``no_grad``
student forward        :math:`G_\\theta(x_t, t, s)`
FM forward             the FM loss's forward pass
backward               ``loss.backward()``
optimizer              Adam step and learning-rate schedule
EMA update             the EMA lerp over the parameters
other                  the rest (RNG forks, weights, pseudo-Huber, Python glue)
=====================  ==========================================================

Each column is a thread count and/or config overrides on the 2D defaults (e.g.
``"jump:threads=1,jump_prob=0.25"``); the columns run in alternating blocks of 10 steps, so
a shared machine's load falls on all of them alike. The curriculum is set to its last phase
(N = ``n_cap``), the most expensive one. An FM step (one forward and backward, same batch
and network) is timed alongside for scale.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from contextlib import contextmanager

import torch

import gctm_mini.consistency as cons
import gctm_mini.training as tr
from gctm_mini.data2d import as_sampler
from gctm_mini.ema import EMA
from gctm_mini.methods import TrainingMethod
from gctm_mini.models import build_model
from gctm_mini.parameterization import FlowMapModel
from gctm_mini.runtime import describe

PARTS = (
    "data draw",
    "coupling",
    "(t, s, u) draw",
    "EMA solve",
    "target forward",
    "student forward",
    "FM forward",
    "backward",
    "optimizer",
    "EMA update",
    "other",
)


class Clock:
    """Accumulates seconds per part; nested parts are subtracted from their parent."""

    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)
        self.stack: list[list] = []
        self.counts: dict[str, int] = defaultdict(int)

    @contextmanager
    def part(self, name: str):
        frame = [name, 0.0]  # [name, seconds of nested parts]
        self.stack.append(frame)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            dt = time.perf_counter() - t0
            self.stack.pop()
            self.total[name] += dt - frame[1]
            if self.stack:
                self.stack[-1][1] += dt

    def wrap(self, fn, name):
        def inner(*a, **k):
            with self.part(name(*a, **k) if callable(name) else name):
                return fn(*a, **k)

        return inner


def instrument(clock: Clock) -> None:
    """Wrap the functions one GCTM step calls (module attributes, so the real code runs)."""
    tr.couple = clock.wrap(tr.couple, "coupling")
    cons.draw_tsu = clock.wrap(cons.draw_tsu, "(t, s, u) draw")
    cons.integrate_per_sample = clock.wrap(cons.integrate_per_sample, "EMA solve")
    cons.fm_loss = clock.wrap(cons.fm_loss, "FM forward")
    G = FlowMapModel._G

    def timed_G(self, x, t, s):
        with clock.part("student forward" if torch.is_grad_enabled() else "target forward"):
            return G(self, x, t, s)

    FlowMapModel._G = timed_G
    velocity = FlowMapModel._velocity

    def counted_velocity(self, x, t):
        clock.counts["velocity rows"] += x.shape[0]
        clock.counts["velocity calls"] += 1
        return velocity(self, x, t)

    FlowMapModel._velocity = counted_velocity


def build(cfg: tr.Toy2DConfig):
    cfg.validate()
    data, source = as_sampler(cfg.data), as_sampler(cfg.source)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    moments = tr.estimate_moments(cfg, data, source, gen)
    model = build_model(tr.model_spec(cfg), moments)
    ema = EMA(model, cfg.ema_decay)
    method = TrainingMethod(cfg, model)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: tr.lr_factor(cfg, k))
    return data, source, gen, model, ema, method, opt, sched


def step(clock: Clock, cfg, parts, k: int) -> None:
    data, source, gen, model, ema, method, opt, sched = parts
    with clock.part("data draw"):
        x0, x1 = tr.draw_pairs(cfg, data, source, gen)
    with clock.part("other"):
        loss, _ = method.loss(model, ema.model, x0, x1, k)
    with clock.part("backward"):
        opt.zero_grad(set_to_none=True)
        loss.backward()
    with clock.part("optimizer"):
        opt.step()
        sched.step()
    with clock.part("EMA update"):
        ema.update(model)


def parse_column(spec: str) -> tuple[str, int, dict]:
    """``"label:key=value,…"`` → (label, threads, config overrides); ``threads`` is special."""
    label, _, rest = spec.partition(":")
    over: dict = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        field = tr.Toy2DConfig.__dataclass_fields__.get(key)
        if key != "threads" and field is None:
            raise SystemExit(f"unknown config field {key!r} in column {spec!r}")
        typ = int if key == "threads" else type(getattr(tr.Toy2DConfig(), key))
        over[key] = typ(value) if typ is not bool else value.lower() in ("1", "true", "yes")
    return label, int(over.pop("threads", 1)), over


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", default="moons")
    ap.add_argument("--coupling", default="ot")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument(
        "--columns",
        nargs="+",
        default=["1 thread:threads=1", "2 threads:threads=2"],
        help='columns to compare, each "label:key=value,…" (threads or Toy2DConfig fields)',
    )
    args = ap.parse_args()
    columns = [parse_column(c) for c in args.columns]
    cfgs, fm_cfgs = {}, {}
    for label, _, over in columns:
        cfg = tr.Toy2DConfig(
            method="gctm", data=args.data, coupling=args.coupling, steps=10**6, **over
        ).validate()
        cfg.n_start = cfg.n_cap  # last curriculum phase: the longest EMA solves
        cfgs[label] = cfg
        fm_over = {k: v for k, v in over.items() if k in ("batch_size", "hidden", "depth")}
        fm_cfgs[label] = tr.Toy2DConfig(
            method="fm", data=args.data, steps=10**6, **fm_over
        ).validate()
    clocks = {c[0]: Clock() for c in columns}
    fm_clocks = {c[0]: Clock() for c in columns}
    runs = {label: build(cfgs[label]) for label in cfgs}
    fm_runs = {label: build(fm_cfgs[label]) for label in cfgs}
    current = Clock()  # the wrappers report to whichever accumulators are swapped in
    instrument(current)
    for label, threads, _ in columns:  # warm-up (first calls allocate)
        torch.set_num_threads(threads)
        for k in range(5):
            step(Clock(), cfgs[label], runs[label], k)
    done = 0
    while done < args.steps:
        for label, threads, _ in columns:
            torch.set_num_threads(threads)
            for k in range(done, done + 10):
                _swap(current, clocks[label])
                step(current, cfgs[label], runs[label], k)
                _swap(current, fm_clocks[label])
                step(current, fm_cfgs[label], fm_runs[label], k)
        done += 10
    print(f"machine: {describe('cpu')} (threads set per column); columns measured side by side")
    for label, threads, _ in columns:
        c = cfgs[label]
        print(
            f"  {label}: {threads} thread(s), {args.data}, coupling {c.coupling}, batch "
            f"{c.batch_size}, MLP {c.hidden}×{c.depth}, N = {c.n_cap}, jump_prob {c.jump_prob}"
        )
    print(f"{done} steps per column, in alternating blocks of 10\n")
    width = max(14, *(len(c[0]) for c in columns))
    head = f"{'part':>16} | " + " | ".join(f"{c[0]:>{width}} ms     %" for c in columns)
    print(head)
    print("-" * len(head))
    totals = {c[0]: sum(clocks[c[0]].total.values()) / done for c in columns}
    for p in PARTS:
        cells = []
        for label, _, _ in columns:
            ms = 1e3 * clocks[label].total.get(p, 0.0) / done
            cells.append(f"{ms:{width + 3}.2f} {100 * ms / (1e3 * totals[label]):5.1f}")
        print(f"{p:>16} | " + " | ".join(cells))
    print("-" * len(head))
    print(
        f"{'GCTM step':>16} | "
        + " | ".join(f"{1e3 * totals[c[0]]:{width + 3}.2f} {100.0:5.1f}" for c in columns)
    )
    fm = {c[0]: 1e3 * sum(fm_clocks[c[0]].total.values()) / done for c in columns}
    print(f"{'FM step':>16} | " + " | ".join(f"{fm[c[0]]:{width + 3}.2f}      " for c in columns))
    for label, _, _ in columns:
        n = clocks[label].counts
        print(
            f"\n{label}: EMA solve {n['velocity calls'] / done:.1f} velocity calls per step on "
            f"{n['velocity rows'] / done:.0f} rows in all (batch {cfgs[label].batch_size})"
        )


def _swap(current: Clock, target: Clock) -> None:
    """Point the instrumented wrappers (bound to ``current``) at ``target``'s accumulators."""
    current.total, current.counts, current.stack = target.total, target.counts, target.stack


if __name__ == "__main__":
    main()
