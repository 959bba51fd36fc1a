"""Restoration on the 1,000 held-out MNIST digits: SR×4, a σ = 2 blur, the centre box.

    python benchmarks/restoration.py [--quick] [--steps N] [--nfe K] [--subsets S]

For each task (the degradations of the configs ``mnist_sr4``, ``mnist_deblur``,
``mnist_inpaint``): the degraded input; back-projection without any network
(Landweber steps onto {x : Hx = y}; for inpainting the hole at mid-grey); the regression
g(y, 1, 1) (the supervised model's own FM prediction, the conditional mean); supervised GCTM,
one jump, alone and followed by the measurement projection (``+ consistency``); zero-shot
GCTM with the shipped unconditional ``mnist_gctm`` — one posterior sample in K jumps, and the
mean of K one-jump samples (the posterior-mean estimate, same NFE) — and the DPS-style
baseline on the same model's velocity at K NFE. The supervised models are trained here with
the ``mnist_<task>`` configs (warm-started from ``mnist_gctm``; ``--steps`` overrides their
length). Zero-shot start times and DPS's (start, ζ) are chosen per task and method on
``--n-val`` *training* digits, never on the held-out ones.

Scores: PSNR and SSIM (scikit-image, data range 2), the digit classifier's accuracy against
the true labels (is the digit kept?), and generation time per image on this machine. The
held-out split is shuffled once and cut into ``--subsets`` disjoint subsets, each with its
own degradation noise and sampling noise; every number is the mean ± std over the subsets,
and ``gain`` is the PSNR over the degraded input on the same digits.
Writes ``benchmarks/results/restoration.csv``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch

from gctm_mini.assets import load_shipped
from gctm_mini.checkpoint import write_csv
from gctm_mini.degradations import Degradation
from gctm_mini.digits import digit_accuracy
from gctm_mini.evaluation import psnr_ssim
from gctm_mini.images import MnistDigits
from gctm_mini.restoration import (
    choose_dps_settings,
    choose_start_time,
    dps_ode,
    restore_supervised,
    zero_shot_restore,
)
from gctm_mini.runtime import describe
from gctm_mini.train_images import degradation_of, make_config, train_images

OUT = Path(__file__).parent / "results"
TASKS = ("sr4", "deblur", "inpaint")
START_TIMES = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
ZETAS = (0.3, 1.0, 3.0, 10.0)


def choose_settings(prior, op: Degradation, x_val: torch.Tensor, nfe: int, quick: bool) -> dict:
    """Zero-shot start times and DPS's (start, ζ), chosen on validation digits."""
    starts = (0.05, 1.0) if quick else START_TIMES
    zetas = (1.0,) if quick else ZETAS
    y_val = op.clean(x_val)

    def zero_shot(k: int, draws: int) -> Callable[[float], torch.Tensor]:
        def restore(t0: float) -> torch.Tensor:
            g = torch.Generator().manual_seed(0)
            return zero_shot_restore(prior, y_val, op, nfe=k, draws=draws, t_start=t0, generator=g)

        return restore

    with torch.no_grad():
        sample_t0, _ = choose_start_time(zero_shot(nfe, 1), x_val, starts)
        mean_t0, _ = choose_start_time(zero_shot(1, nfe), x_val, starts)
    dps_t0, zeta = choose_dps_settings(prior, y_val, op, x_val, nfe, zetas, starts)
    return {"sample_t0": sample_t0, "mean_t0": mean_t0, "dps_t0": dps_t0, "zeta": zeta}


def methods(op: Degradation, sup, prior, nfe: int, settings: dict) -> dict:
    """``{(method, nfe): restore(y_in, y, generator)}``; y_in is the network input, y the
    measurement."""
    s = settings
    return {
        ("degraded input", 0): lambda y_in, y, g: y_in.clamp(-1, 1),
        ("back-projection", 0): lambda y_in, y, g: op.back_project(y),
        ("regression g(y, 1, 1)", 1): lambda y_in, y, g: sup.g(y_in, 1.0, 1.0),
        ("supervised GCTM", 1): lambda y_in, y, g: restore_supervised(sup, y_in, 1),
        ("supervised GCTM + consistency", 1): lambda y_in, y, g: restore_supervised(
            sup, y_in, 1, consistency=op
        ),
        ("zero-shot GCTM, one sample", nfe): lambda y_in, y, g: zero_shot_restore(
            prior, y, op, nfe=nfe, t_start=s["sample_t0"], generator=g
        ),
        (f"zero-shot GCTM, mean of {nfe} samples", nfe): lambda y_in, y, g: zero_shot_restore(
            prior, y, op, nfe=1, draws=nfe, t_start=s["mean_t0"], generator=g
        ),
        ("DPS-style ODE", nfe): lambda y_in, y, g: dps_ode(
            prior, y, op, nfe=nfe, zeta=s["zeta"], t_start=s["dps_t0"], generator=g
        ),
    }


def score_task(restorers: dict, x: torch.Tensor, labels: torch.Tensor, op, k: int):
    """Per method, the per-subset (psnr, gain, ssim, accuracy, ms/image) rows."""
    scores: dict = {key: [] for key in restorers}
    for subset, idx in enumerate(torch.arange(len(x)).chunk(k)):
        x0, lab = x[idx], labels[idx]
        y_in = op(x0, generator=torch.Generator().manual_seed(100 + subset))
        y = op.clean(x0)
        base = None
        for key, restore in restorers.items():
            g = torch.Generator().manual_seed(200 + subset)
            t0 = time.perf_counter()
            with torch.no_grad():  # dps_ode turns gradients on for its own step
                out = restore(y_in, y, g).detach()
            ms = 1000 * (time.perf_counter() - t0) / len(x0)
            p, ssim = psnr_ssim(out, x0)
            base = p if base is None else base  # the first method is the degraded input
            scores[key].append((p, p - base, ssim, digit_accuracy(out, lab), ms))
    return scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    ap.add_argument("--steps", type=int, default=None, help="supervised training steps per task")
    ap.add_argument("--nfe", type=int, default=4, help="zero-shot / DPS budget K")
    ap.add_argument("--n", type=int, default=1000, help="held-out digits (at most 1,000)")
    ap.add_argument("--subsets", type=int, default=4, help="disjoint subsets for mean ± std")
    ap.add_argument("--n-val", type=int, default=64, help="training digits that choose t0, ζ")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n, steps = (32, 3) if args.quick else (args.n, args.steps)
    subsets = 2 if args.quick else args.subsets
    held = MnistDigits("test")
    if not 1 <= n <= len(held.images) or not 1 <= subsets <= n:
        raise SystemExit(f"--n must be in [1, {len(held.images)}] and --subsets in [1, n]")
    order = torch.randperm(len(held.images), generator=torch.Generator().manual_seed(0))[:n]
    x, labels = held.images[order], held.labels[order]
    train = MnistDigits("train").images
    x_val = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(1))]
    x_val = x_val[: 16 if args.quick else args.n_val]
    prior = load_shipped("mnist_gctm").eval()
    print(f"machine: {describe('cpu')}; {n} held-out digits in {subsets} subsets")
    rows = []
    for task in TASKS:
        over = [f"steps={steps}", f"ckpt_every={steps}"] if steps else []
        cfg = make_config(f"mnist_{task}", over)
        op = degradation_of(cfg)
        run = train_images(cfg, None, progress=False, device="cpu")
        settings = choose_settings(prior, op, x_val, args.nfe, args.quick)
        print(
            f"{task}: supervised {cfg.steps} steps in {run.seconds:.0f} s; chosen on "
            f"training digits: {settings}",
            flush=True,
        )
        restorers = methods(op, run.ema.eval(), prior, args.nfe, settings)
        for (method, nfe), per in score_task(restorers, x, labels, op, subsets).items():
            v = torch.tensor(per, dtype=torch.float64)
            m, s = v.mean(0), (v.std(0) if len(v) > 1 else torch.zeros(5))
            rows.append(
                {
                    "task": task,
                    "method": method,
                    "nfe": nfe,
                    "psnr": round(float(m[0]), 3),
                    "psnr_std": round(float(s[0]), 3),
                    "gain": round(float(m[1]), 3),
                    "gain_std": round(float(s[1]), 3),
                    "ssim": round(float(m[2]), 4),
                    "ssim_std": round(float(s[2]), 4),
                    "accuracy": round(float(m[3]), 4),
                    "accuracy_std": round(float(s[3]), 4),
                    "ms_per_image": round(float(m[4]), 2),
                    "settings": str(settings),
                    "supervised_steps": cfg.steps,
                }
            )
            print(
                f"{task:>8} {method:>34} NFE {nfe}: PSNR {m[0]:.2f} ± {s[0]:.2f}  gain "
                f"{m[1]:+.2f} ± {s[1]:.2f}  SSIM {m[2]:.3f}  accuracy {m[3]:.3f} ± {s[3]:.3f}  "
                f"{m[4]:.1f} ms/image",
                flush=True,
            )
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / ("restoration_quick.csv" if args.quick else "restoration.csv")
    write_csv(path, rows)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
