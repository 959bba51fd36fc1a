"""Where GCTM's continuous t snaps on the grid: the nearest node, or one node up (reference code).

    python benchmarks/t_snap.py [--parts translation2d,generation2d,images] [--seeds 3]
                                [--tasks sr2,deblur,...] [--out FILE] [--quick]

``t_snap`` (:func:`gctm_mini.timegrid.draw_tsu`) decides how often GCTM trains long jumps from
the source end: "up" draws t = 1 about four times as often as "nearest". This trains the same
config with both settings and several training seeds and measures the one-jump (NFE = 1)
quality:

* ``translation2d`` — 8 Gaussians → moons (``train2d``, ``source=8gaussians``, GCTM defaults):
  W2 (exact, n = 2048 points, mean over 3 evaluation draws) to fresh moons; ``floor`` is
  the data–data W2 at the same n;
* ``generation2d`` — N(0, I) → moons, the same measurement (the 2D noise → data defaults);
* ``images`` — the ``{task}_cpu`` image-to-image configs on the offline photo patches: PSNR
  of ``G(X1, 1, 0)`` (EMA weights; ε-perturbed source where the config has ε) against the
  ``--n`` held-out test patches; ``floor`` is the PSNR of the degraded input itself.

Every run is one row of ``benchmarks/results/t_snap.csv`` (or ``--out``), written as soon as
it finishes (an interrupted call continues where it stopped), with its wall time and the
machine's 1-minute load average. ``t_snap_summary.csv`` beside it holds mean ± std over the
training seeds per setting, the difference up − nearest, and whether that difference is
beyond the noise: ``|Δ| > 2·sqrt(sd_up²/k + sd_nearest²/k)``.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import time
from pathlib import Path

import torch

from gctm_mini.checkpoint import write_csv
from gctm_mini.data2d import make_dataset
from gctm_mini.degradations import TASKS, Degradation
from gctm_mini.evaluation import psnr_ssim
from gctm_mini.images import PhotoPatches
from gctm_mini.metrics import quality_by_nfe
from gctm_mini.restoration import restore_supervised
from gctm_mini.runtime import describe
from gctm_mini.sampling import make_sampler
from gctm_mini.timegrid import T_SNAPS
from gctm_mini.train_images import make_config, train_images
from gctm_mini.training import Toy2DConfig, train2d

OUT = Path(__file__).parent / "results"
PARTS = ("translation2d", "generation2d", "images")
SOURCES_2D = {"translation2d": "8gaussians", "generation2d": "gaussian"}


def run_2d(part: str, snap: str, seed: int, quick: bool) -> dict:
    """One GCTM run on moons from the part's source; W2 at NFE 1 and the data floor."""
    source = SOURCES_2D[part]
    cfg = Toy2DConfig(method="gctm", data="moons", source=source, t_snap=snap, seed=seed)
    if quick:
        cfg.steps = 50
    res = train2d(cfg, progress=False)
    n = 256 if quick else 2048
    rep = quality_by_nfe(
        make_sampler(res.ema, "flowmap"),
        make_dataset("moons"),
        [1],
        n=n,
        seeds=3,
        source=make_dataset(source) if source != "gaussian" else None,
    )
    return {
        "config": f"{source}->moons",
        "metric": "w2",
        "value": rep.values[1],
        "floor": rep.floor,
    }


def test_patches(n: int) -> torch.Tensor:
    x0 = PhotoPatches("test").images
    return x0[torch.randperm(len(x0), generator=torch.Generator().manual_seed(0))[:n]]


def run_image(task: str, snap: str, seed: int, x0: torch.Tensor, quick: bool) -> dict:
    """One ``{task}_cpu`` run; one-jump PSNR on the held-out patches and the input's PSNR."""
    overrides = [f"t_snap={snap}", f"seed={seed}", "sample_every=0"]
    if quick:
        overrides += ["steps=4", "model_channels=16", "batch_size=8"]
    cfg = make_config(f"{task}_cpu", overrides)
    res = train_images(cfg, None, progress=False, device="cpu")
    y_in = Degradation(task)(x0, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = restore_supervised(
            res.ema, y_in, 1, eps=cfg.eps, generator=torch.Generator().manual_seed(2)
        )
    return {
        "config": f"{task}_cpu",
        "metric": "psnr",
        "value": psnr_ssim(out, x0)[0],
        "floor": psnr_ssim(y_in, x0)[0],
    }


def summarize(rows: list[dict]) -> list[dict]:
    """Mean ± std over seeds per (part, config, snap); Δ = up − nearest and its noise test."""
    groups: dict[tuple[str, str], dict[str, list[float]]] = {}
    for r in rows:
        groups.setdefault((r["part"], r["config"]), {}).setdefault(r["snap"], []).append(
            float(r["value"])
        )
    out = []
    for (part, config), by_snap in groups.items():
        if set(by_snap) != set(T_SNAPS):
            continue
        stats = {}
        for snap, v in by_snap.items():
            k = len(v)
            mean = sum(v) / k
            sd = math.sqrt(sum((x - mean) ** 2 for x in v) / (k - 1)) if k > 1 else float("nan")
            stats[snap] = (mean, sd, k)
        (mu, su, ku), (mn, sn, kn) = stats["up"], stats["nearest"]
        delta = mu - mn
        noise = 2 * math.sqrt(su**2 / ku + sn**2 / kn)
        better = "up" if (delta < 0) == (part != "images") else "nearest"
        out.append(
            {
                "part": part,
                "config": config,
                "metric": next(r["metric"] for r in rows if r["config"] == config),
                "seeds": min(ku, kn),
                "nearest_mean": round(mn, 4),
                "nearest_std": round(sn, 4),
                "up_mean": round(mu, 4),
                "up_std": round(su, 4),
                "delta_up_minus_nearest": round(delta, 4),
                "noise_2se": round(noise, 4),
                "verdict": f"{better} better" if abs(delta) > noise else "within noise",
            }
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--parts", default=",".join(PARTS))
    ap.add_argument("--seeds", type=int, default=3, help="training seeds per setting")
    ap.add_argument("--tasks", default=",".join(TASKS), help="image-to-image tasks")
    ap.add_argument("--n", type=int, default=512, help="held-out test patches")
    ap.add_argument("--out", type=Path, default=OUT / "t_snap.csv")
    ap.add_argument("--quick", action="store_true", help="a few steps per run (smoke test)")
    args = ap.parse_args()
    parts = [p for p in args.parts.split(",") if p]
    for p in parts:
        if p not in PARTS:
            raise SystemExit(f"unknown part {p!r}; choose from {', '.join(PARTS)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    if args.out.exists():
        with open(args.out, newline="") as f:
            rows = list(csv.DictReader(f))
    done = {(r["part"], r["config"], r["snap"], int(r["seed"])) for r in rows}
    print(f"machine: {describe('cpu')}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    x0 = test_patches(16 if args.quick else args.n) if "images" in parts else None
    jobs = []
    for part in parts:
        configs = args.tasks.split(",") if part == "images" else [part]
        for config in configs:
            for seed in range(args.seeds):
                for snap in T_SNAPS:
                    jobs.append((part, config, snap, seed))
    for part, config, snap, seed in jobs:
        name = f"{config}_cpu" if part == "images" else f"{SOURCES_2D[part]}->moons"
        if (part, name, snap, seed) in done:
            continue
        t0 = time.perf_counter()
        if part == "images":
            r = run_image(config, snap, seed, x0, args.quick)
        else:
            r = run_2d(part, snap, seed, args.quick)
        row = {
            "part": part,
            "snap": snap,
            "seed": seed,
            **r,
            "value": round(r["value"], 4),
            "floor": round(r["floor"], 4),
            "seconds": round(time.perf_counter() - t0, 1),
            "load1": round(os.getloadavg()[0], 2),
        }
        rows.append(row)
        write_csv(args.out, rows)
        print(
            f"{part:>13} {row['config']:>18} {snap:>7} seed {seed}: {row['metric']} "
            f"{row['value']:.4f} (floor/input {row['floor']:.4f})  {row['seconds']:.0f} s, "
            f"load {row['load1']}",
            flush=True,
        )
    summary = summarize(rows)
    if summary:
        path = args.out.with_name(args.out.stem + "_summary.csv")
        write_csv(path, summary)
        for s in summary:
            print(
                f"{s['config']:>18} {s['metric']}: nearest {s['nearest_mean']:.4f} ± "
                f"{s['nearest_std']:.4f} | up {s['up_mean']:.4f} ± {s['up_std']:.4f} | "
                f"Δ {s['delta_up_minus_nearest']:+.4f} (2 s.e. {s['noise_2se']:.4f}): "
                f"{s['verdict']}"
            )
        print(f"wrote {args.out} and {path}")


if __name__ == "__main__":
    main()
