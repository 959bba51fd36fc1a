"""GCTM against flow-matching peers on 2D data, at equal wall time and at equal steps.

    pip install 'gctm-mini[bench]'        # torchcfm, for the two peers below
    python benchmarks/peers.py [--seeds 5] [--data moons,8gaussians,checkerboard] [--quick]
    python benchmarks/peers.py --from-runs     # re-summarize peers_runs.csv (also a partial one)
    python benchmarks/peers.py --resume        # train only the seeds peers_runs.csv lacks
    python benchmarks/peers.py --head-to-head 10   # GCTM-OT NFE 1 vs OT-CFM NFE 8, 10 draws
    python benchmarks/peers.py --head-to-head 10 --from-runs   # its summary, from the CSV

Methods, all with one network: the project's :class:`~gctm_mini.networks.TwoTimeMLP` as
GCTM-OT's 2D default builds it (width, depth and random Fourier features of x,
:data:`~gctm_mini.methods.DEFAULT_X_FOURIER_2D`), with the same batch size, warm-up + cosine
schedule and EMA, all sampled from the EMA weights. The Adam learning rate is each method's
2D default: 4·10⁻³ for GCTM (tuned for its one jump by ``benchmarks/one_jump.py``), 2·10⁻³
for FM, which the two torchcfm runs share (not re-tuned):

================  ==========================================================  ============
label             what is trained                                              sampled by
================  ==========================================================  ============
gctm_ot           GCTM, exact minibatch-OT coupling (2D defaults)              flow-map jumps
gctm_independent  GCTM, independent coupling                                   flow-map jumps
fm                the project's FM (preconditioned, independent coupling)      Euler ODE
otcfm             torchcfm ``ExactOptimalTransportConditionalFlowMatcher``     Euler ODE
icfm              torchcfm ``ConditionalFlowMatcher``                          Euler ODE
================  ==========================================================  ============

**Time convention.** torchcfm writes the path from noise at τ = 0 to data at τ = 1,
:math:`x_\\tau = \\tau X_\\text{data} + (1 - \\tau) X_\\text{noise}`, and regresses
:math:`u = X_\\text{data} - X_\\text{noise}`. Ours is the same path with t = 1 − τ, so
:math:`dx/dt = -u`: the bridge (:func:`velocity_from_cfm`) is
:math:`v(x, t) = -u_\\theta(x, 1 - t)`, and a torchcfm model is then sampled by the project's
own Euler integrator from t = 1 to 0. Its network sees the same time labels as ours
(:math:`0.25\\log\\sigma(t)` of the project time t), so the network is the same function class.
torchcfm's σ (noise around the path) is 0, its default; its OT sampler draws the batch
from the plan with replacement, as torchcfm does.

**Budgets.** *Equal steps*: every method trains as many steps as GCTM-OT's default run.
*Equal wall time*: a method trains ``S_gctm · c_gctm / c_method`` steps, where c is the
per-step cost measured side by side, before training, in interleaved blocks of every
method's real step (the machine may be shared: a ratio of costs taken together is fair
where two wall times taken apart are not). The CSV keeps the cost-model seconds (steps × c)
and the measured training seconds.

**Evaluation.** :func:`~gctm_mini.metrics.quality_by_nfe`: exact W2 between n generated and n
fresh data points at NFE 1, 2, 4, 8; one evaluation draw per training seed (the same draw
for every method), mean ± std over training seeds; the data–data floor on the same
reference sets (each against a second fresh n-point draw). One draw's W2 varies by
0.02–0.04 on its own, so the ratio to the floor divides means taken over the same draws.

**Head to head** (``--head-to-head E``). One draw cannot settle a gap smaller than its own
noise: on moons the paired difference GCTM-OT NFE 1 − OT-CFM NFE 8 (the same reference set
and the same noise for both) has a standard deviation of about 0.01 from draw to draw, as
large as the gap. This mode retrains the two runs of ``peers_runs.csv`` that the claim is
about (GCTM-OT's default run and OT-CFM at its recorded equal-time steps; training is
deterministic, so they are the same models) and scores each on E draws (training seed k:
generators ``40_000 + 100 k + j``, j < E, as ``benchmarks/one_jump.py --eval-draws``) at
NFE 1 and 8, with the data–data floor of each draw. The summary pairs the two methods per
draw, averages the draws of a seed and reports mean ± standard error over seeds
(``peers_head_to_head.csv``).

Writes ``benchmarks/results/peers.csv``, ``peers_runs.csv`` (rewritten after every finished
job, so an interrupted run keeps its finished seeds; ``--from-runs`` summarizes them and
``--resume`` trains only the missing ones),
``peers_floor.csv`` and ``peers.png``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import multiprocessing as mp
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from gctm_mini.checkpoint import write_csv
from gctm_mini.data2d import as_sampler, make_dataset
from gctm_mini.ema import EMA
from gctm_mini.interpolant import SIGMA_MAX, SIGMA_MIN, log_sigma_clamped
from gctm_mini.methods import TrainingMethod
from gctm_mini.metrics import floor_values, quality_by_nfe
from gctm_mini.models import build_model
from gctm_mini.networks import TwoTimeMLP
from gctm_mini.runtime import describe
from gctm_mini.sampling import make_sampler
from gctm_mini.training import (
    Toy2DConfig,
    draw_pairs,
    estimate_moments,
    lr_factor,
    model_spec,
    train2d,
)

OUT = Path(__file__).parent / "results"
DATASETS = ("moons", "8gaussians", "checkerboard")
METHODS = ("gctm_ot", "gctm_independent", "fm", "otcfm", "icfm")
CFM = ("otcfm", "icfm")
NFES = (1, 2, 4, 8)
COLORS = {
    "gctm_ot": "#2ca02c",
    "gctm_independent": "#98df8a",
    "fm": "#1f77b4",
    "otcfm": "#ff7f0e",
    "icfm": "#d62728",
}
MISSING_TORCHCFM = (
    "benchmarks/peers.py needs torchcfm, the 'bench' extra: pip install 'gctm-mini[bench]' "
    "(or: pip install --no-deps torchcfm)"
)


# ----- the time-convention bridge ------------------------------------------------------
def velocity_from_cfm(u: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Tensor, Tensor], Tensor]:
    r"""Our velocity from a torchcfm-convention one: :math:`v(x, t) = -u(x, 1 - t)`.

    ``u(x: (B, *D), tau: (B,))`` points from noise (τ = 0) to data (τ = 1); the returned
    ``v(x, t)`` is the velocity of the project's ODE, data at t = 0 and source at t = 1.
    """

    def v(x: Tensor, t: Tensor) -> Tensor:
        return -u(x, 1 - t)

    return v


class CFMVelocity(nn.Module):
    """A torchcfm-trained network, seen by the project's samplers as a velocity model.

    ``forward(x, tau)`` is the network in torchcfm's convention (what its loss regresses on
    :math:`X_\\text{data} - X_\\text{noise}`); ``_velocity(x, t)`` is the bridge to ours
    (:func:`velocity_from_cfm`), which :func:`~gctm_mini.sampling.sample_ode` integrates.
    The network is fed the project's time label of t = 1 − τ.
    """

    def __init__(self, net: nn.Module, data_shape: Sequence[int] = (2,)) -> None:
        super().__init__()
        self.net = net
        self.data_shape = tuple(data_shape)
        self._v = velocity_from_cfm(self.forward)

    def label(self, t: Tensor) -> Tensor:
        return 0.25 * log_sigma_clamped(t, SIGMA_MIN, SIGMA_MAX)

    def forward(self, x: Tensor, tau: Tensor) -> Tensor:
        lab = self.label((1 - tau).clamp(0, 1))
        return self.net(x, lab, lab)

    def _velocity(self, x: Tensor, t: Tensor) -> Tensor:
        return self._v(x, t)


# ----- budgets --------------------------------------------------------------------------
def equal_time_steps(ref_steps: int, ref_cost: float, cost: float) -> int:
    """Steps a method with per-step ``cost`` (s) takes in the wall time of ``ref_steps``
    steps at ``ref_cost``: ``round(ref_steps · ref_cost / cost)``, at least 1."""
    if ref_steps < 1 or ref_cost <= 0 or cost <= 0:
        raise ValueError(
            f"need ref_steps ≥ 1 and positive costs; got {ref_steps}, {ref_cost}, {cost}"
        )
    return max(1, round(ref_steps * ref_cost / cost))


def interleaved_costs(
    steppers: Mapping[str, Callable[[int], None]],
    blocks: int = 5,
    block_steps: int = 20,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Median seconds per step of each ``stepper(k)``, measured in alternating blocks.

    Round r runs ``block_steps`` steps of every stepper in turn (step indices spread over
    the run by the caller's ``k``), so a change of machine load during the measurement falls
    on all methods alike. Returns ``{name: seconds per step}`` (median over the ``blocks``).
    """
    per: dict[str, list[float]] = {name: [] for name in steppers}
    for r in range(blocks):
        for name, stepper in steppers.items():
            t0 = clock()
            for j in range(block_steps):
                stepper(r * block_steps + j)
            per[name].append((clock() - t0) / block_steps)
    return {name: float(np.median(v)) for name, v in per.items()}


# ----- training -------------------------------------------------------------------------
def base_config(method: str, data: str, seed: int, quick: bool) -> Toy2DConfig:
    """The project's 2D run of ``method`` (its defaults, GCTM-OT's network; ``quick`` shrinks
    the steps)."""
    kw = {"gctm_ot": ("gctm", "ot"), "gctm_independent": ("gctm", "independent")}
    m, coupling = kw.get(method, ("fm", "independent"))
    net = Toy2DConfig(method="gctm", coupling="ot").validate().x_fourier  # one network for all
    cfg = Toy2DConfig(method=m, coupling=coupling, data=data, seed=seed, x_fourier=net).validate()
    if quick:
        cfg.steps = 200
    cfg.ckpt_every = cfg.log_every = 10**9
    return cfg


def gctm_recipe(quick: bool) -> str:
    """A short fingerprint of the GCTM-OT default run's settings (every config field but the
    data set and the seed), stored with each row so that ``--resume`` can refuse rows trained
    under other defaults."""
    cfg = asdict(base_config("gctm_ot", DATASETS[0], 0, quick))
    for key in ("data", "seed"):
        cfg.pop(key)
    return hashlib.sha1(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:10]


def _matcher(method: str):
    try:
        from torchcfm.conditional_flow_matching import (
            ConditionalFlowMatcher,
            ExactOptimalTransportConditionalFlowMatcher,
        )
    except ImportError:
        raise SystemExit(MISSING_TORCHCFM) from None
    cls = (
        ExactOptimalTransportConditionalFlowMatcher if method == "otcfm" else ConditionalFlowMatcher
    )
    return cls(sigma=0.0)


class CFMRun:
    """One torchcfm-trained run with the project's recipe (optimizer, schedule, EMA)."""

    def __init__(self, method: str, cfg: Toy2DConfig) -> None:
        self.cfg = cfg = replace(cfg).validate()  # fills lr = 0 with FM's default
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)  # torchcfm's OT sampler draws pairs with numpy
        self.gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.data, self.source = as_sampler(cfg.data), as_sampler(cfg.source)
        self.model = CFMVelocity(TwoTimeMLP(**model_spec(cfg)["net_kwargs"]))
        self.ema = EMA(self.model, cfg.ema_decay)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda k: lr_factor(cfg, k))
        self.matcher = _matcher(method)

    def step(self, k: int = 0) -> float:
        x_data = self.data(self.cfg.batch_size, self.gen)
        noise = self.source(self.cfg.batch_size, self.gen)
        # torchcfm: x0 = source (τ = 0), x1 = data (τ = 1)
        tau, xt, ut = self.matcher.sample_location_and_conditional_flow(noise, x_data)
        loss = (self.model(xt, tau) - ut).pow(2).sum(1).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
        self.ema.update(self.model)
        return float(loss.detach())

    def train(self) -> tuple[nn.Module, float]:
        t0 = time.perf_counter()
        for k in range(self.cfg.steps):
            self.step(k)
        return self.ema.model, time.perf_counter() - t0


class ProjectStepper:
    """The project's training step for ``cfg`` (as in :func:`train2d`), for cost calibration."""

    def __init__(self, cfg: Toy2DConfig) -> None:
        self.cfg = cfg
        torch.manual_seed(cfg.seed)
        self.gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.data, self.source = as_sampler(cfg.data), as_sampler(cfg.source)
        moments = estimate_moments(cfg, self.data, self.source, self.gen)
        self.model = build_model(model_spec(cfg), moments)
        self.ema = EMA(self.model, cfg.ema_decay)
        self.method = TrainingMethod(cfg, self.model)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)

    def step(self, k: int) -> None:
        x0, x1 = draw_pairs(self.cfg, self.data, self.source, self.gen)
        loss, _ = self.method.loss(self.model, self.ema.model, x0, x1, k)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.ema.update(self.model)


def calibrate(data: str, quick: bool, blocks: int) -> dict[str, float]:
    """Per-step cost of every method on ``data``, side by side (seconds per step)."""
    steppers = {}
    for m in METHODS:
        cfg = base_config(m, data, 0, quick)
        if m in CFM:
            run = CFMRun(m, cfg)
            steppers[m] = run.step
        else:
            st = ProjectStepper(cfg)
            span = max(1, cfg.steps // (blocks * 20))  # visit every curriculum phase
            steppers[m] = lambda k, st=st, span=span: st.step(k * span)
    interleaved_costs(steppers, blocks=1, block_steps=5)  # warm-up
    return interleaved_costs(steppers, blocks=blocks, block_steps=20)


def train_method(
    method: str, data: str, seed: int, quick: bool, steps: int
) -> tuple[nn.Module, float, str]:
    """Train ``method``'s 2D run for ``steps`` steps: (EMA model, training seconds, sampler
    kind — flow-map jumps for GCTM, the Euler ODE otherwise)."""
    cfg = replace(base_config(method, data, seed, quick), steps=steps)
    if method in CFM:
        model, seconds = CFMRun(method, cfg).train()
        return model, seconds, "euler"
    res = train2d(cfg, progress=False)
    return res.ema, res.seconds, "flowmap" if cfg.method == "gctm" else "euler"


def score_one_draw(
    model: nn.Module, kind: str, data: str, nfes: Sequence[int], n: int, base_seed: int
) -> dict[int, float]:
    """Exact W2 at each NFE on the one reference set (and noise) of generator ``base_seed``."""
    return quality_by_nfe(
        make_sampler(model, kind),
        make_dataset(data),
        nfes,
        n=n,
        seeds=1,
        base_seed=base_seed,
        floor=float("nan"),
    ).values


def run_job(job: tuple) -> list[dict]:
    """Train every method on one (data set, seed) at both budgets and score it."""
    data, seed, costs, n, quick = job
    torch.set_num_threads(1)
    ref = base_config("gctm_ot", data, seed, quick)
    budgets = {"equal_steps": {m: ref.steps for m in METHODS}}
    budgets["equal_time"] = {
        m: equal_time_steps(ref.steps, costs["gctm_ot"], costs[m]) for m in METHODS
    }
    rows, trained, recipe = [], {}, gctm_recipe(quick)
    for budget, steps_of in budgets.items():
        for m in METHODS:
            steps = steps_of[m]
            if (m, steps) not in trained:
                model, seconds, kind = train_method(m, data, seed, quick, steps)
                values = score_one_draw(model, kind, data, NFES, n, EVAL_BASE + seed)
                trained[(m, steps)] = (values, seconds, kind)
            values, seconds, kind = trained[(m, steps)]
            for nfe in NFES:
                rows.append(
                    {
                        "data": data,
                        "method": m,
                        "budget": budget,
                        "seed": seed,
                        "steps": steps,
                        "sampler": kind,
                        "nfe": nfe,
                        "w2": values[nfe],
                        "cost_per_step": costs[m],
                        "cost_model_seconds": steps * costs[m],
                        "train_seconds": seconds,
                        "gctm_recipe": recipe,
                    }
                )
    return rows


EVAL_BASE = 40_000
"""Training seed k is scored against the reference set drawn from generator ``EVAL_BASE + k``."""


# ----- head to head: the claim's two runs on many draws ---------------------------------
HEAD_NFES = (1, 8)


def head_draws_base(seed: int) -> int:
    """First generator of training seed ``seed``'s head-to-head draws (j-th: ``+ j``)."""
    return EVAL_BASE + 100 * seed


def equal_time_otcfm_steps(rows: list[dict], quick: bool) -> dict[str, int]:
    """OT-CFM's equal-time steps per data set, as recorded in ``peers_runs.csv`` (refused
    when those rows were trained under other GCTM defaults, like ``--resume``)."""
    finished_jobs(rows, quick)  # the same one-line refusals
    return {
        r["data"]: r["steps"] for r in rows if (r["method"], r["budget"]) == ("otcfm", "equal_time")
    }


def head_to_head_job(job: tuple) -> list[dict]:
    """Train GCTM-OT (default run) and OT-CFM (``otcfm_steps``) on one (data set, seed) and
    score both on ``draws`` evaluation draws at :data:`HEAD_NFES`, with each draw's floor."""
    data, seed, otcfm_steps, n, draws, quick = job
    torch.set_num_threads(1)
    steps_of = {"gctm_ot": base_config("gctm_ot", data, seed, quick).steps, "otcfm": otcfm_steps}
    base = head_draws_base(seed)
    floors = floor_values(make_dataset(data), n, draws, "w2", base)
    rows = []
    for m, steps in steps_of.items():
        model, _, kind = train_method(m, data, seed, quick, steps)
        for j in range(draws):
            values = score_one_draw(model, kind, data, HEAD_NFES, n, base + j)
            rows += [
                {
                    "data": data,
                    "seed": seed,
                    "draw": j,
                    "method": m,
                    "steps": steps,
                    "nfe": nfe,
                    "w2": values[nfe],
                    "floor": floors[j],
                }
                for nfe in HEAD_NFES
            ]
    return rows


def _standard_error(x: np.ndarray) -> float:
    """std / √len (ddof 1); NaN for a single value."""
    return float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")


def head_to_head_summary(rows: list[dict]) -> list[dict]:
    """Per data set: GCTM-OT at NFE 1 and 8, OT-CFM at NFE 8, and the paired differences.

    Each draw pairs the two methods (same reference set, same noise); a seed's value is the
    mean over its draws; reported: means over seeds, each difference's standard error over
    seeds (std / √seeds), the number of seeds where GCTM-OT's one jump is below, and the
    floor averaged over the same draws.
    """
    out = []
    for d in dict.fromkeys(r["data"] for r in rows):
        cell = {
            (r["method"], r["nfe"], r["seed"], r["draw"]): r["w2"] for r in rows if r["data"] == d
        }
        seeds = sorted({k[2] for k in cell})
        draws = sorted({k[3] for k in cell})
        g1, g8, o8 = (
            np.array([[cell[(m, nfe, s, j)] for j in draws] for s in seeds])
            for m, nfe in (("gctm_ot", 1), ("gctm_ot", 8), ("otcfm", 8))
        )  # (seeds, draws)
        d1, d8 = (g1 - o8).mean(axis=1), (g8 - o8).mean(axis=1)
        out.append(
            {
                "data": d,
                "seeds": len(seeds),
                "draws": len(draws),
                "gctm_ot_nfe1": float(g1.mean()),
                "gctm_ot_nfe8": float(g8.mean()),
                "otcfm_nfe8": float(o8.mean()),
                "diff": float(d1.mean()),
                "diff_se": _standard_error(d1),
                "seeds_below": int((d1 < 0).sum()),
                "diff_nfe8": float(d8.mean()),
                "diff_nfe8_se": _standard_error(d8),
                "floor": float(np.mean([r["floor"] for r in rows if r["data"] == d])),
            }
        )
    return out


def print_head_to_head(rows: list[dict]) -> None:
    """The head-to-head summary as a table."""
    draws = len({r["draw"] for r in rows})
    print(
        f"\nGCTM-OT against OT-CFM NFE 8 (equal wall time), {draws} draws per seed; "
        "differences paired per draw, mean ± standard error over seeds"
    )
    for r in head_to_head_summary(rows):
        print(
            f"  {r['data']:>12} (floor {r['floor']:.4f}): NFE 1 {r['gctm_ot_nfe1']:.4f} vs "
            f"{r['otcfm_nfe8']:.4f}: {r['diff']:+.4f} ± {r['diff_se']:.4f} (below on "
            f"{r['seeds_below']} of {r['seeds']} seeds); GCTM-OT NFE 8 {r['gctm_ot_nfe8']:.4f}: "
            f"{r['diff_nfe8']:+.4f} ± {r['diff_nfe8_se']:.4f}"
        )


def read_head_to_head(path: Path) -> list[dict]:
    """The rows of an earlier ``--head-to-head`` run, typed."""
    if not path.exists():
        raise SystemExit(f"{path} does not exist: run benchmarks/peers.py --head-to-head E first")
    with path.open() as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r.update({k: int(r[k]) for k in ("seed", "draw", "steps", "nfe")})
        r.update({k: float(r[k]) for k in ("w2", "floor")})
    return rows


def head_to_head(args, out: Path) -> None:
    """The ``--head-to-head`` mode: jobs per (data set, seed), rows and summary to CSV."""
    steps = equal_time_otcfm_steps(read_runs(out / "peers_runs.csv"), args.quick)
    datasets = args.data.split(",")
    missing = [d for d in datasets if d not in steps]
    if missing:
        raise SystemExit(
            f"peers_runs.csv has no equal-time OT-CFM run on {', '.join(missing)}: "
            "run benchmarks/peers.py for those data sets first"
        )
    jobs = [
        (d, s, steps[d], args.n, args.head_to_head, args.quick)
        for s in range(args.seeds)
        for d in datasets
    ]
    rows: list[dict] = []
    t0 = time.perf_counter()
    with mp.get_context("fork").Pool(args.workers, maxtasksperchild=1) as pool:
        for job_rows in pool.imap_unordered(head_to_head_job, jobs):
            rows.extend(job_rows)
            write_csv(out / "peers_head_to_head.csv", rows)
            print(
                f"[{time.perf_counter() - t0:6.0f} s] {job_rows[0]['data']} "
                f"seed {job_rows[0]['seed']} done",
                flush=True,
            )
    print_head_to_head(rows)
    print(f"\nwrote {out}/peers_head_to_head.csv")


def floor_rows(data: str, n: int, seeds: int = 5) -> list[dict]:
    """The data–data floor on the very reference sets the models are scored against: for
    training seed k, W2 between the reference set of generator ``EVAL_BASE + k`` and the next
    n points of the same stream (:func:`~gctm_mini.metrics.floor_values`)."""
    vals = floor_values(make_dataset(data), n, seeds, "w2", EVAL_BASE)
    return [{"data": data, "seed": k, "n": n, "w2": v} for k, v in enumerate(vals)]


# ----- reporting ------------------------------------------------------------------------
def summarize(rows: list[dict], floors: dict[str, float]) -> list[dict]:
    """Mean ± std over seeds for each (data, method, budget, nfe)."""
    keys = sorted({(r["data"], r["method"], r["budget"], r["nfe"]) for r in rows})
    out = []
    for d, m, b, nfe in keys:
        sel = [r for r in rows if (r["data"], r["method"], r["budget"], r["nfe"]) == (d, m, b, nfe)]
        w = np.array([r["w2"] for r in sel])
        out.append(
            {
                "data": d,
                "method": m,
                "budget": b,
                "nfe": nfe,
                "seeds": len(sel),
                "w2_mean": float(w.mean()),
                "w2_std": float(w.std()),
                "ratio_to_floor": float(w.mean() / floors[d]),
                "steps": sel[0]["steps"],
                "cost_model_seconds": float(np.mean([r["cost_model_seconds"] for r in sel])),
                "train_seconds": float(np.mean([r["train_seconds"] for r in sel])),
            }
        )
    return out


def plot(summary: list[dict], floors: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    datasets = list(floors)
    fig, axes = plt.subplots(2, len(datasets), figsize=(5 * len(datasets), 8), squeeze=False)
    for j, d in enumerate(datasets):
        ax = axes[0, j]
        for m in METHODS:
            sel = [
                r for r in summary if (r["data"], r["method"], r["budget"]) == (d, m, "equal_time")
            ]
            if not sel:
                continue
            ax.errorbar(
                [r["nfe"] for r in sel],
                [r["w2_mean"] for r in sel],
                yerr=[r["w2_std"] for r in sel],
                fmt="o-",
                color=COLORS[m],
                label=m,
                capsize=2,
            )
        ax.axhline(floors[d], ls="--", color="k", lw=1, label="data–data floor")
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="NFE (t = 1 source → t = 0 data)",
            ylabel="exact W2",
            title=f"{d}: W2 vs NFE, equal wall time",
        )
        ax.set_xticks(NFES, [str(k) for k in NFES])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.legend(fontsize=7)
        ax = axes[1, j]
        for m in METHODS:
            sel = [r for r in summary if (r["data"], r["method"], r["nfe"]) == (d, m, 1)]
            sel.sort(key=lambda r: r["cost_model_seconds"])
            if not sel:
                continue
            ax.errorbar(
                [r["cost_model_seconds"] for r in sel],
                [r["w2_mean"] for r in sel],
                yerr=[r["w2_std"] for r in sel],
                fmt="o-",
                color=COLORS[m],
                label=m,
                capsize=2,
            )
        ax.axhline(floors[d], ls="--", color="k", lw=1)
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="training wall time, s (steps × per-step cost)",
            ylabel="exact W2 at NFE 1",
            title=f"{d}: one step vs training time",
        )
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def read_runs(path: Path) -> list[dict]:
    """The per-run rows of an earlier (possibly unfinished) run, typed as :func:`run_job` makes them."""
    if not path.exists():
        raise SystemExit(
            f"{path} does not exist: run benchmarks/peers.py without --from-runs first"
        )
    ints, floats = (
        ("seed", "steps", "nfe"),
        ("w2", "cost_per_step", "cost_model_seconds", "train_seconds"),
    )
    with path.open() as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r.update({k: int(r[k]) for k in ints})
        r.update({k: float(r[k]) for k in floats})
    return rows


def finished_jobs(rows: list[dict], quick: bool) -> tuple[set, dict[str, dict[str, float]]]:
    """The (data, seed) jobs of an earlier run that are complete, and its per-step costs.

    A resumed run trains the missing seeds with the costs the earlier run calibrated (so every
    seed of a data set has the same equal-time budgets), and refuses rows whose GCTM-OT run
    is not the current default's (another length or another :func:`gctm_recipe`: the
    defaults changed, start afresh).
    """
    want = {(m, b, nfe) for m in METHODS for b in ("equal_steps", "equal_time") for nfe in NFES}
    steps = base_config("gctm_ot", DATASETS[0], 0, quick).steps  # the same for every set
    recipe = gctm_recipe(quick)
    have: dict[tuple, set] = {}
    costs: dict[str, dict[str, float]] = {}
    for r in rows:
        have.setdefault((r["data"], r["seed"]), set()).add((r["method"], r["budget"], r["nfe"]))
        costs.setdefault(r["data"], {})[r["method"]] = r["cost_per_step"]
        if (r["method"], r["budget"]) == ("gctm_ot", "equal_steps") and r["steps"] != steps:
            raise SystemExit(
                f"peers_runs.csv trained GCTM-OT for {r['steps']} steps, the defaults now "
                f"{steps}: run without --resume"
            )
        if r.get("gctm_recipe", "") != recipe:
            raise SystemExit(
                f"peers_runs.csv was trained under other 2D GCTM defaults (recipe "
                f"{r.get('gctm_recipe') or 'not recorded'}, now {recipe}): run without --resume"
            )
    return {job for job, got in have.items() if got >= want}, costs


def report(rows: list[dict], n: int, out: Path) -> None:
    """Floors on the seeds' own reference sets, the summary CSV, the plot and the table."""
    datasets = list(dict.fromkeys(r["data"] for r in rows))
    seeds = {d: sorted({r["seed"] for r in rows if r["data"] == d}) for d in datasets}
    frows = [
        r for d in datasets for r in floor_rows(d, n, max(seeds[d]) + 1) if r["seed"] in seeds[d]
    ]
    floors = {d: float(np.mean([r["w2"] for r in frows if r["data"] == d])) for d in datasets}
    summary = summarize(rows, floors)
    write_csv(out / "peers.csv", summary)
    write_csv(out / "peers_floor.csv", frows)
    plot(summary, floors, out / "peers.png")
    print(f"\nexact W2 (n = {n}), mean ± std over training seeds; floor on the same draws")
    for d in datasets:
        print(f"\n{d} (floor {floors[d]:.4f}; seeds {', '.join(map(str, seeds[d]))})")
        for budget in ("equal_time", "equal_steps"):
            for m in METHODS:
                sel = [
                    r for r in summary if (r["data"], r["method"], r["budget"]) == (d, m, budget)
                ]
                if sel:
                    cells = " | ".join(f"{r['w2_mean']:.3f} ± {r['w2_std']:.3f}" for r in sel)
                    print(f"  {budget:>11} {m:>16} ({sel[0]['steps']:>5} steps): {cells}")
    print(f"\nwrote {out}/peers.csv, peers_runs.csv, peers_floor.csv, peers.png")


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", default=",".join(DATASETS))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--n", type=int, default=4096, help="points per W2 evaluation")
    ap.add_argument("--workers", type=int, default=2, help="parallel (data set, seed) jobs")
    ap.add_argument("--quick", action="store_true", help="200 steps, n = 512, 1 seed (smoke)")
    ap.add_argument(
        "--from-runs",
        action="store_true",
        help="no training: summarize peers_runs.csv of an earlier, possibly unfinished, run",
    )
    ap.add_argument(
        "--resume",
        action="store_true",
        help="keep the finished (data set, seed) jobs of peers_runs.csv, train the rest",
    )
    ap.add_argument(
        "--head-to-head",
        type=int,
        default=0,
        metavar="E",
        help="retrain GCTM-OT and equal-time OT-CFM of peers_runs.csv, score on E draws each",
    )
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.head_to_head < 0:
        raise SystemExit(f"--head-to-head must be a number of draws ≥ 1; got {args.head_to_head}")
    if args.quick:
        args.n, args.seeds = 512, 1
    if args.from_runs and args.head_to_head:
        print_head_to_head(read_head_to_head(out / "peers_head_to_head.csv"))
        return
    if args.from_runs:
        report(read_runs(out / "peers_runs.csv"), args.n, out)
        return
    _matcher("icfm")  # fail at once, with one line, when torchcfm is missing
    if args.head_to_head:
        head_to_head(args, out)
        return
    datasets = args.data.split(",")
    for d in datasets:
        make_dataset(d)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    print(f"machine: {describe('cpu')}, {args.workers} job(s) at a time, 1 thread each")
    rows: list[dict] = []
    done: set = set()
    costs: dict[str, dict[str, float]] = {}
    if args.resume and (out / "peers_runs.csv").exists():
        old = read_runs(out / "peers_runs.csv")
        done, old_costs = finished_jobs(old, args.quick)
        rows = [r for r in old if (r["data"], r["seed"]) in done]  # other sets' rows too
        costs = {d: c for d, c in old_costs.items() if d in datasets and set(c) == set(METHODS)}
        print(f"resuming: {len(done)} finished job(s) kept, their per-step costs reused")
    for d in datasets:
        if d not in costs:
            costs[d] = calibrate(d, args.quick, blocks=2 if args.quick else 5)
        print(
            f"{d}: ms per step (side by side): "
            + ", ".join(f"{m} {1e3 * c:.1f}" for m, c in costs[d].items())
        )
    jobs = [
        (d, s, costs[d], args.n, args.quick)
        for s in range(args.seeds)
        for d in datasets
        if (d, s) not in done
    ]
    t0 = time.perf_counter()
    with mp.get_context("fork").Pool(args.workers, maxtasksperchild=1) as pool:
        for job_rows in pool.imap_unordered(run_job, jobs):
            rows.extend(job_rows)
            # after every job, so that an interrupted run keeps its finished seeds
            write_csv(out / "peers_runs.csv", rows)
            r0 = job_rows[0]
            print(
                f"[{time.perf_counter() - t0:6.0f} s] {r0['data']} seed {r0['seed']}: "
                + ", ".join(
                    f"{r['method']}@{r['budget'][6:]} {r['w2']:.3f}"
                    for r in job_rows
                    if r["nfe"] == 1
                ),
                flush=True,
            )
    report(rows, args.n, out)


if __name__ == "__main__":
    main()
