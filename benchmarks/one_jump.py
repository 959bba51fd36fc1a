"""What each 2D training knob does to GCTM's one-jump quality (W2 at NFE 1).

    python benchmarks/one_jump.py --variants base,ema999 [--seeds 0,1,2] [--workers 2]
        [--eval-draws 10]

Every variant is a set of :class:`~gctm_mini.training.Toy2DConfig` overrides on top of the
GCTM exact-OT run with the earlier 2D defaults (``base``: no one-jump share); ``a+b``
combines variants. Each (variant, data set, seed) trains once and is scored by the exact
W2 between n = 4096 one-jump samples and 4096 fresh data points (the evaluation draw of
seed k is the same for every variant, so differences between variants are paired), beside
the data–data floor at the same n (mean of 5 draws). Training runs one per core with one
torch thread each. Rows are appended to ``benchmarks/results/one_jump.csv`` as they
finish; the summary (mean ± std over seeds, ratio to the floor) is printed at the end.

One evaluation draw varies by 0.02–0.04 in W2 on its own (the data–data W2 of single draws
ranges 0.07–0.14 on checkerboard), as much as most knobs change. ``--eval-draws E`` scores
each trained model on E evaluation draws instead (seed k: generators ``40_000 + 100 k + j``,
j < E) and records, beside the mean W2, the data–data floor on the same E reference sets;
those rows go to ``benchmarks/results/one_jump_draws.csv`` and the summary divides by the
floor of the same draws.
"""

from __future__ import annotations

import argparse
import csv
import math
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
import torch

from gctm_mini.data2d import make_dataset
from gctm_mini.methods import DEFAULT_LAM_2D
from gctm_mini.metrics import data_floor, floor_values, quality_by_nfe
from gctm_mini.sampling import make_sampler
from gctm_mini.training import Toy2DConfig, train2d

OUT = Path(__file__).parent / "results"
DATASETS = ("moons", "8gaussians", "checkerboard")
BASE = {  # the earlier 2D GCTM defaults, pinned (the current ones are jump25+lr4e3+lam2+euler+ncap8+xff3)
    "method": "gctm",
    "coupling": "ot",
    "jump_prob": 0.0,
    "lr": 2e-3,
    "lam": 1.0,
    "ema_solver": "heun",
    "n_cap": 16,
    "x_fourier": 0.0,
}
VARIANTS: dict[str, dict] = {
    "base": {},
    # the package's current 2D GCTM defaults (every auto value left to Toy2DConfig.validate)
    "defaults": {
        "jump_prob": -1.0,
        "lr": 0.0,
        "lam": DEFAULT_LAM_2D,
        "ema_solver": "auto",
        "n_cap": 0,
        "x_fourier": -1.0,
    },
    "smoke": {"steps": 30},
    "ema999": {"ema_decay": 0.999},
    "ema995": {"ema_decay": 0.995},
    "ncap32": {"n_cap": 32},
    "ncap8": {"n_cap": 8},
    "nstart8": {"n_start": 8, "n_cap": 32},
    "lam2": {"lam": 2.0},
    "lam25": {"lam": 2.5},
    "lam3": {"lam": 3.0},
    "lam05": {"lam": 0.5},
    "lam15": {"lam": 1.5},
    "bs512": {"batch_size": 512},
    "bs128": {"batch_size": 128},
    "bs64": {"batch_size": 64},
    "lr1e3": {"lr": 1e-3},
    "lr4e3": {"lr": 4e-3},
    "steps4000": {"steps": 4000},
    "steps4400": {"steps": 4400},
    "steps5000": {"steps": 5000},
    "steps8000": {"steps": 8000},
    "steps1500": {"steps": 1500},
    "steps2000": {"steps": 2000},
    "steps3000": {"steps": 3000},
    "lognormal": {"fm_times": "lognormal"},
    "unweighted": {"weighted": False},
    "h128": {"hidden": 128},
    "h192": {"hidden": 192},
    "h512": {"hidden": 512},
    "d3": {"depth": 3},
    "d5": {"depth": 5},
    "h224": {"hidden": 224},
    "nojitter": {"grid_jitter": False},
    "jump10": {"jump_prob": 0.1},
    "jump25": {"jump_prob": 0.25},
    "jump35": {"jump_prob": 0.35},
    "jump50": {"jump_prob": 0.5},
    # the one-jump samples' u at 0: their target is the EMA solve 1 → 0 (distillation)
    "ju0": {"jump_u": "zero"},
    # entropic OT (Sinkhorn, ε = 0.05 of the mean cost, pairs drawn as a permutation)
    "sinkhorn": {"coupling": "sinkhorn"},
    # pseudo-Huber c of the consistency term on 2D points (default 0.00054·√2 ≈ 0.00076)
    "hc01": {"huber_c": 0.01},
    "hc05": {"huber_c": 0.05},
    # 32 random Fourier features of x (frequencies ~ N(0, σ²), fixed) beside x in the MLP's input;
    # rows before the package option (Toy2DConfig.x_fourier) came from a screen subclass of the
    # same network whose weights were initialized in another order
    "xff1": {"x_fourier": 1.0},
    "xff3": {"x_fourier": 3.0},
    "xff6": {"x_fourier": 6.0},
    "xff2": {"x_fourier": 2.0},
    "xff4": {"x_fourier": 4.0},
    # number of Fourier frequencies of x (the network's x_freqs, 32 by default; not a config knob)
    "ff16": {"x_freqs": 16},
    "ff64": {"x_freqs": 64},
    "snapup": {"t_snap": "up"},
    # optimizer screens: the peak learning rate, no decay (config fields); Adam's β2, the cosine
    # schedule's final fraction of the peak (0.05 by default), clipping the gradient's norm
    # before each Adam step (screen hooks)
    "lr6e3": {"lr": 6e-3},
    "b2_99": {"adam_beta2": 0.99},
    "b2_95": {"adam_beta2": 0.95},
    "lrend0": {"lr_end": 0.0},
    "lrend20": {"lr_end": 0.2},
    "lrend50": {"lr_end": 0.5},
    "nodecay": {"lr_decay": False},
    "clip1": {"grad_clip": 1.0},
    # the EMA teacher's solve t → u by Euler steps instead of Heun's
    "euler": {"ema_solver": "euler"},
}
SAMPLE_EMAS: tuple[float, ...] = ()
"""Slower EMAs kept beside the run's own (which is also the ODE teacher) and scored too
(``--sample-emas``)."""


def _install_hooks(over: dict) -> dict:
    """Apply the non-config keys of a variant; returns the dict that collects sampling EMAs."""
    import gctm_mini.consistency as cons
    import gctm_mini.training as tr
    from gctm_mini.ema import EMA

    if "huber_c" in over:  # c = HUBER_SCALE·√d with d = 2 (each job runs in its own process)
        cons.HUBER_SCALE = over.pop("huber_c") / math.sqrt(2)

    if "x_freqs" in over:
        freqs, spec_of = over.pop("x_freqs"), tr.model_spec

        def model_spec(cfg):
            spec = spec_of(cfg)
            spec["net_kwargs"]["x_freqs"] = freqs
            return spec

        tr.model_spec = model_spec

    if {"adam_beta2", "grad_clip"} & set(over):
        beta2, clip, adam = (
            over.pop("adam_beta2", 0.999),
            over.pop("grad_clip", 0.0),
            tr.torch.optim.Adam,
        )

        class ScreenAdam(adam):
            def __init__(self, params, **kw):
                params = list(params)
                super().__init__(params, betas=(0.9, beta2), **kw)
                self.clipped = params

            def step(self, closure=None):
                if clip > 0:
                    torch.nn.utils.clip_grad_norm_(self.clipped, clip)
                return super().step(closure)

        tr.torch.optim.Adam = ScreenAdam

    if "lr_end" in over:
        end, schedule = over.pop("lr_end"), tr.lr_factor
        tr.lr_factor = lambda cfg, step: schedule(cfg, step, end=end)

    slow: dict = {}

    class SlowEMAs(EMA):
        def __init__(self, model, d):
            super().__init__(model, d)
            slow.update({k: EMA(model, k) for k in SAMPLE_EMAS})

        def update(self, model):
            super().update(model)
            for e in slow.values():
                e.update(model)

    tr.EMA = SlowEMAs
    return slow


def parse_variant(name: str) -> dict:
    """A named variant, or ``a+b`` for the union of named variants (later ones win)."""
    out: dict = {}
    for part in name.split("+"):
        if part not in VARIANTS:
            raise SystemExit(f"unknown variant {part!r}; choose from: {', '.join(VARIANTS)}")
        out.update(VARIANTS[part])
    return out


def draws_base(seed: int) -> int:
    """First generator seed of training seed ``seed``'s evaluation draws (``--eval-draws``)."""
    return 40_000 + 100 * seed


FLOOR_CACHE = OUT / "one_jump_draws_floor.csv"
"""Floors of the ``--eval-draws`` reference sets, one row per (data, seed, n, draws)."""


def draws_floor(data: str, seed: int, n: int, draws: int) -> float:
    """Mean data–data W2 on the reference sets of training seed ``seed``'s evaluation draws
    (computed once, then read from :data:`FLOOR_CACHE`)."""
    key = {"data": data, "seed": str(seed), "n": str(n), "draws": str(draws)}
    if FLOOR_CACHE.exists():
        with FLOOR_CACHE.open() as f:
            for row in csv.DictReader(f):
                if all(row[k] == v for k, v in key.items()):
                    return float(row["floor"])
    vals = floor_values(make_dataset(data), n, draws, "w2", draws_base(seed))
    floor = float(np.mean(vals))
    new = not FLOOR_CACHE.exists()
    with FLOOR_CACHE.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[*key, "floor", "floor_std"])
        if new:
            w.writeheader()
        w.writerow({**key, "floor": floor, "floor_std": float(np.std(vals))})
    return floor


def run_job(job: tuple[str, str, int, int, int]) -> list[dict]:
    variant, data, seed, n, draws = job
    torch.set_num_threads(1)
    over = parse_variant(variant)
    slow = _install_hooks(over)
    cfg = Toy2DConfig(**{**BASE, **over, "data": data, "seed": seed})
    cfg.ckpt_every = cfg.log_every = 10**9
    res = train2d(cfg, progress=False)
    rows = []
    models = {cfg.ema_decay: res.ema, **{k: e.model for k, e in slow.items()}}
    for decay, model in models.items():
        rep = quality_by_nfe(
            make_sampler(model, "flowmap"),
            make_dataset(data),
            [1],
            n=n,
            seeds=draws,
            base_seed=30_000 + seed if draws == 1 else draws_base(seed),
            floor=float("nan"),
        )
        extra = (
            {}
            if draws == 1
            else {"eval_draws": draws, "floor_same_refs": draws_floor(data, seed, n, draws)}
        )
        rows.append(
            {
                "variant": variant if decay == cfg.ema_decay else f"{variant}|sema{decay}",
                "data": data,
                "seed": seed,
                "steps": cfg.steps,
                "train_seconds": round(res.seconds, 2),
                "seconds_per_step": res.seconds / cfg.steps,
                "w2_nfe1": rep.values[1],
                **extra,
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--variants", default="base")
    ap.add_argument("--data", default=",".join(DATASETS))
    ap.add_argument("--seeds", default="0,1,2", help="training seeds, e.g. 0,1,2")
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--eval-draws", type=int, default=1, help="evaluation draws per model")
    ap.add_argument("--csv", default="", help="default: one_jump.csv, or one_jump_draws.csv")
    ap.add_argument(
        "--sample-emas", default="", help="e.g. 0.995,0.999: also score these sampling EMAs"
    )
    args = ap.parse_args()
    global SAMPLE_EMAS
    SAMPLE_EMAS = tuple(float(x) for x in args.sample_emas.split(",") if x)
    variants, datasets = args.variants.split(","), args.data.split(",")
    for v in variants:
        parse_variant(v)
    jobs = [
        (v, d, s, args.n, args.eval_draws)
        for s in map(int, args.seeds.split(","))
        for v in variants
        for d in datasets
    ]
    name = "one_jump.csv" if args.eval_draws == 1 else "one_jump_draws.csv"
    path = Path(args.csv or OUT / name)
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows = []
    with mp.get_context("fork").Pool(args.workers, maxtasksperchild=1) as pool:
        for job_rows in pool.imap_unordered(run_job, jobs):
            for row in job_rows:
                rows.append(row)
                new = not path.exists()
                with path.open("a", newline="") as f:
                    w = csv.DictWriter(f, fieldnames=list(row))
                    if new:
                        w.writeheader()
                    w.writerow(row)
                print(
                    f"[{time.perf_counter() - t0:6.0f} s] {row['variant']:>20} {row['data']:>12} "
                    f"seed {row['seed']}: W2@1 {row['w2_nfe1']:.4f} "
                    f"({1e3 * row['seconds_per_step']:.1f} ms/step)",
                    flush=True,
                )
    if args.eval_draws == 1:
        floors = {d: data_floor(make_dataset(d), args.n, seeds=5) for d in datasets}
    else:  # the floor of the same reference sets, averaged like the models' scores
        floors = {
            d: float(np.mean([r["floor_same_refs"] for r in rows if r["data"] == d]))
            for d in datasets
        }
    print(f"\nfloors (n = {args.n}): " + ", ".join(f"{d} {f:.4f}" for d, f in floors.items()))
    for v in sorted({r["variant"] for r in rows}, key=lambda x: (x.split("|")[0], x)):
        cells = []
        for d in datasets:
            w = np.array([r["w2_nfe1"] for r in rows if r["variant"] == v and r["data"] == d])
            cells.append(f"{w.mean():.4f} ± {w.std():.4f} ({w.mean() / floors[d]:.2f}×)")
        print(f"{v:>20}: " + " | ".join(cells))


if __name__ == "__main__":
    main()
