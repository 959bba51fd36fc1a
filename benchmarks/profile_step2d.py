"""Where the time of one 2D GCTM training step goes.

    python benchmarks/profile_step2d.py [--data moons] [--coupling ot] [--steps 200]
                                        [--threads 1,2] [--config base]

Runs the real training step (``draw_pairs`` → ``TrainingMethod.loss`` → backward → Adam →
EMA) of a GCTM run and times its parts by wrapping the functions the step calls:

=====================  ==========================================================
part                   what is timed
=====================  ==========================================================
data draw              drawing X0 and X1 (``draw_pairs`` minus the coupling)
coupling               ``couple`` (exact OT: POT's ``ot.emd`` on a B × B cost)
(t, s, u) draw         ``draw_tsu`` and the jittered grid
EMA Heun solve         ``integrate_per_sample`` with the EMA velocity, t → u
target forward         :math:`G_\\theta(x_u, u, s)` under ``no_grad``
student forward        :math:`G_\\theta(x_t, t, s)`
FM forward             the FM loss's forward pass
backward               ``loss.backward()``
optimizer              Adam step and learning-rate schedule
EMA update             the EMA lerp over the parameters
other                  the rest (RNG forks, weights, pseudo-Huber, Python glue)
=====================  ==========================================================

Each thread count in ``--threads`` is measured in turn, in blocks of 10 steps that
alternate between the counts, so a shared machine's load falls on all of them alike. The
curriculum is set to its last phase (N = ``n_cap``), the most expensive one. An FM step
(one forward and backward) is timed alongside for scale. ``--config final`` profiles the
2D defaults as shipped, ``--config base`` the earlier defaults (batch 256, 256 × 4).
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
from gctm_mini.models import build_model, mlp_spec
from gctm_mini.parameterization import FlowMapModel
from gctm_mini.runtime import describe

PARTS = (
    "data draw",
    "coupling",
    "(t, s, u) draw",
    "EMA Heun solve",
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
    cons.integrate_per_sample = clock.wrap(cons.integrate_per_sample, "EMA Heun solve")
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
    model = build_model(mlp_spec(2, cfg.hidden, cfg.depth, sigma_max=cfg.sigma_max), moments)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default="moons")
    ap.add_argument("--coupling", default="ot")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--config", choices=("final", "base"), default="final")
    args = ap.parse_args()
    counts = [int(x) for x in args.threads.split(",")]
    over = {"batch_size": 256, "hidden": 256, "depth": 4} if args.config == "base" else {}
    cfg = tr.Toy2DConfig(
        method="gctm", data=args.data, coupling=args.coupling, steps=10**6, **over
    ).validate()
    cfg.n_start = cfg.n_cap  # last curriculum phase: the longest EMA solves
    fm_cfg = tr.Toy2DConfig(method="fm", data=args.data, steps=10**6, **over).validate()
    clocks = {n: Clock() for n in counts}
    fm_clocks = {n: Clock() for n in counts}
    runs = {n: build(cfg) for n in counts}
    fm_runs = {n: build(fm_cfg) for n in counts}
    instrument_clock = Clock()  # the wrappers report to whichever clock is current
    instrument(instrument_clock)
    done = 0
    for n in counts:  # warm-up (first calls allocate)
        torch.set_num_threads(n)
        for k in range(5):
            step(Clock(), cfg, runs[n], k)
    while done < args.steps:
        for n in counts:
            torch.set_num_threads(n)
            for k in range(done, done + 10):
                _swap(instrument_clock, clocks[n])
                step(instrument_clock, cfg, runs[n], k)
                _swap(instrument_clock, fm_clocks[n])
                step(instrument_clock, fm_cfg, fm_runs[n], k)
        done += 10
    print(f"machine: {describe('cpu')} (threads varied below); load is shared, compare columns")
    print(
        f"GCTM step, {args.data}, coupling {cfg.coupling}, batch {cfg.batch_size}, "
        f"MLP {cfg.hidden}×{cfg.depth}, N = {cfg.n_cap}, {done} steps per column\n"
    )
    head = f"{'part':>16} | " + " | ".join(f"{n} thread(s) ms   %" for n in counts)
    print(head)
    print("-" * len(head))
    totals = {n: sum(clocks[n].total.values()) for n in counts}
    for p in PARTS:
        cells = []
        for n in counts:
            ms = 1e3 * clocks[n].total.get(p, 0.0) / done
            cells.append(f"{ms:13.2f} {100 * ms / (1e3 * totals[n] / done):5.1f}")
        print(f"{p:>16} | " + " | ".join(cells))
    print("-" * len(head))
    print(
        f"{'GCTM step':>16} | "
        + " | ".join(f"{1e3 * totals[n] / done:13.2f} {100.0:5.1f}" for n in counts)
    )
    fm = {n: 1e3 * sum(fm_clocks[n].total.values()) / done for n in counts}
    print(f"{'FM step':>16} | " + " | ".join(f"{fm[n]:13.2f}      " for n in counts))
    c = clocks[counts[0]].counts
    print(
        f"\nEMA solve: {c['velocity calls'] / done:.1f} velocity calls per step on "
        f"{c['velocity rows'] / done:.0f} rows in all (batch {cfg.batch_size}); "
        "the network runs on every row once more for the student, the target and FM."
    )


def _swap(current: Clock, target: Clock) -> None:
    """Point the instrumented wrappers (bound to ``current``) at ``target``'s accumulators."""
    current.total, current.counts, current.stack = target.total, target.counts, target.stack


if __name__ == "__main__":
    main()
