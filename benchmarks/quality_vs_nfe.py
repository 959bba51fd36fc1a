"""Quality by NFE for the whole 2D family, on three data sets, with training wall time.

    python benchmarks/quality_vs_nfe.py [--quick] [--data moons,8gaussians,checkerboard]

For each data set: FM (Euler and Heun ODE), CD and CT/iCT (CM multistep, γ = 1), CTM and
GCTM with independent and exact-OT couplings (deterministic jumps), BCM (γ = 1) — each
trained with its default steps on this machine's CPU. Exact W2 between n = 4096 generated
and 4096 fresh data points, mean of 3 seeds, with the data–data floor. Writes
``benchmarks/results/quality_vs_nfe.csv`` and ``quality_vs_nfe.png``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from gctm_mini.checkpoint import write_csv
from gctm_mini.data2d import make_dataset  # noqa: E402
from gctm_mini.metrics import quality_by_nfe  # noqa: E402
from gctm_mini.plots import plot_quality_vs_nfe  # noqa: E402
from gctm_mini.runtime import describe  # noqa: E402
from gctm_mini.sampling import DEFAULT_SAMPLER, make_sampler  # noqa: E402
from gctm_mini.training import Toy2DConfig, train2d  # noqa: E402

OUT = Path(__file__).parent / "results"
VARIANTS = [  # (label, method, coupling, sampler override)
    ("fm_euler", "fm", "independent", ("euler", 0.0)),
    ("fm_heun", "fm", "independent", ("heun", 0.0)),
    ("cd", "cd", "independent", None),
    ("ct", "ct", "independent", None),
    ("ctm", "ctm", "independent", None),
    ("gctm_independent", "gctm", "independent", None),
    ("gctm_ot", "gctm", "ot", None),
    ("bcm", "bcm", "independent", None),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="few steps, small n (a smoke run)")
    ap.add_argument("--data", default="moons,8gaussians,checkerboard")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    nfes, n, seeds = [1, 2, 4, 8], (512 if args.quick else 4096), (1 if args.quick else 3)
    print(f"machine: {describe('cpu')}; exact W2, n = {n}, {seeds} seed(s)")
    rows = []
    datasets = args.data.split(",")
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 4), squeeze=False)
    for ax, name in zip(axes[0], datasets, strict=True):
        data = make_dataset(name)
        trained: dict[tuple[str, str], tuple] = {}
        results = {}
        for label, method, coupling, override in VARIANTS:
            key = (method, coupling)
            if key not in trained:
                steps = 200 if args.quick else 0
                cfg = Toy2DConfig(method=method, data=name, coupling=coupling, steps=steps)
                teacher = trained[("fm", "independent")][0] if method in ("cd", "ctm") else None
                t0 = time.perf_counter()
                res = train2d(cfg, progress=False, teacher=teacher)
                trained[key] = (res.ema, time.perf_counter() - t0, cfg.steps)
            model, seconds, steps = trained[key]
            kind, gamma = override or DEFAULT_SAMPLER[method]
            rep = quality_by_nfe(make_sampler(model, kind, gamma), data, nfes, n=n, seeds=seeds)
            results[label] = rep.values
            for k in nfes:
                rows.append(
                    {
                        "data": name,
                        "method": label,
                        "sampler": kind,
                        "gamma": gamma,
                        "nfe": k,
                        "w2": rep.values[k],
                        "floor": rep.floor,
                        "train_seconds": round(seconds, 1),
                        "steps": steps,
                    }
                )
            print(
                f"{name:>12} {label:>17} ({steps} steps, {seconds:5.1f} s): "
                + "  ".join(f"NFE {k}: {rep.values[k]:.3f}" for k in nfes)
                + f"  | floor {rep.floor:.3f}",
                flush=True,
            )
        plot_quality_vs_nfe(ax, results, rep.floor)
        ax.set_title(f"{name}: exact W2 vs NFE")
    fig.tight_layout()
    fig.savefig(OUT / "quality_vs_nfe.png", dpi=80)
    write_csv(OUT / "quality_vs_nfe.csv", rows)
    print(f"wrote {OUT}/quality_vs_nfe.csv and .png")


if __name__ == "__main__":
    main()
