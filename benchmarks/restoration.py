"""Restoration on held-out photo patches: SR×2, deblurring, inpainting.

    python benchmarks/restoration.py [--quick] [--steps N] [--nfe K] [--lpips]

For each task: the degraded input; back-projection from it without any network
(``projection``: Landweber steps onto {x : Hx = y}; for inpainting the observed pixels with
the hole at 0, mid-grey); the
regression baseline (the supervised model's conditional mean g(H(x), 1, 1)); supervised GCTM,
one jump, alone and followed by the same projection (``supervised_gctm_dc``); zero-shot GCTM
with the shipped unconditional patch model (``gctm_patches``) at 1 and K jumps; the DPS-style
baseline on the same model's velocity at K NFE. Zero-shot GCTM and DPS start their trajectory
at a time t₀ chosen per task, method and NFE on ``--n-val`` *training* patches
(``choose_start_time``; printed), never on the test photo. PSNR/SSIM (scikit-image) on ``n`` held-out test patches and wall
time per image, all measured in one run on this machine (``--lpips``: also LPIPS, where its
weights can be fetched). The supervised models are trained
here with the ``{task}_cpu`` configs (``--steps`` overrides their length).
Writes ``benchmarks/results/restoration.csv`` (task, method, nfe, psnr, ssim, seconds).
"""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

import torch

from gctm_mini.assets import load_shipped
from gctm_mini.checkpoint import write_csv
from gctm_mini.degradations import Degradation
from gctm_mini.evaluation import lpips_distance, psnr_ssim
from gctm_mini.images import PhotoPatches
from gctm_mini.restoration import (
    choose_start_time,
    dps_ode,
    restore_supervised,
    zero_shot_restore,
)
from gctm_mini.runtime import describe
from gctm_mini.train_images import make_config, train_images

OUT = Path(__file__).parent / "results"
TASKS = ("sr2", "deblur", "inpaint")


def timed(fn, n: int):
    t0 = time.perf_counter()
    out = fn()
    return out, (time.perf_counter() - t0) / n


def zero_shot_methods(prior, op: Degradation, nfe: int) -> dict:
    """``{(method, nfe): restore(y, t_start)}`` for the zero-shot methods at budgets 1 and K."""

    def gctm(k):
        return lambda y, t0: zero_shot_restore(
            prior, y, op, nfe=k, t_start=t0, generator=torch.Generator().manual_seed(2)
        )

    def dps(y, t0):
        return dps_ode(
            prior, y, op, nfe=nfe, t_start=t0, generator=torch.Generator().manual_seed(2)
        )

    return {**{("zeroshot_gctm", k): gctm(k) for k in sorted({1, nfe})}, ("dps", nfe): dps}


def choose_start_times(methods: dict, op: Degradation, x_val: torch.Tensor) -> dict:
    """t₀ for each zero-shot method, chosen on validation patches."""
    y_val = op.clean(x_val)
    chosen = {}
    for key, restore in methods.items():
        t0, scores = choose_start_time(functools.partial(restore, y_val), x_val)
        chosen[key] = t0
        table = "  ".join(f"{t:g}: {p:.2f}" for t, p in scores.items())
        print(f"{op.task:>8} {key[0]:>16} NFE {key[1]:>2}: t0 = {t0:g}   (validation {table})")
    return chosen


def evaluate_task(op: Degradation, sup, prior, x0: torch.Tensor, x_val: torch.Tensor, nfe: int):
    """``{(method, nfe): (restored, seconds per image)}`` for one degradation."""
    n = len(x0)
    y_in = op(x0, generator=torch.Generator().manual_seed(1))
    y = op.clean(x0)
    zero_shot = zero_shot_methods(prior, op, nfe)
    t_start = choose_start_times(zero_shot, op, x_val)
    with torch.no_grad():
        out = {
            ("degraded", 0): (y_in, 0.0),
            ("projection", 0): timed(lambda: op.back_project(y), n),
            ("regression", 1): timed(lambda: sup.g(y_in, 1.0, 1.0), n),
            ("supervised_gctm", 1): timed(lambda: restore_supervised(sup, y_in, 1), n),
            ("supervised_gctm_dc", 1): timed(
                lambda: restore_supervised(sup, y_in, 1, consistency=op), n
            ),
        }
    for key, restore in zero_shot.items():
        out[key] = timed(lambda restore=restore, key=key: restore(y, t_start[key]), n)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--steps", type=int, default=None, help="supervised training steps per task")
    ap.add_argument("--nfe", type=int, default=8, help="zero-shot / DPS budget")
    ap.add_argument("--n", type=int, default=256, help="test patches")
    ap.add_argument("--n-val", type=int, default=64, help="training patches to choose t0 on")
    ap.add_argument(
        "--lpips", action="store_true", help="add an lpips column (needs: pip install lpips)"
    )
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    n = 16 if args.quick else args.n
    steps = 4 if args.quick else args.steps
    x0 = PhotoPatches("test").images
    x0 = x0[torch.randperm(len(x0), generator=torch.Generator().manual_seed(0))[:n]]
    x_val = PhotoPatches("train").images
    x_val = x_val[torch.randperm(len(x_val), generator=torch.Generator().manual_seed(3))]
    x_val = x_val[: 8 if args.quick else args.n_val]
    prior = load_shipped("gctm_patches")
    if args.lpips:  # fail now, with a clear MetricUnavailableError, not after training
        lpips_distance(x0[:2], x0[:2])
    print(f"machine: {describe('cpu')}; {n} held-out patches ({PhotoPatches('test').describe()})")
    rows = []
    for task in TASKS:
        op = Degradation(task)
        overrides = ["sample_every=0"] + ([f"steps={steps}"] if steps else [])
        if args.quick:
            overrides += ["model_channels=16", "batch_size=8"]
        cfg = make_config(f"{task}_cpu", overrides)
        sup = train_images(cfg, None, progress=False, device="cpu")
        results = evaluate_task(op, sup.ema, prior, x0, x_val, args.nfe)
        for (method, nfe), (x, sec) in results.items():
            p, s = psnr_ssim(x, x0)
            rows_extra = {"lpips": round(lpips_distance(x, x0), 4)} if args.lpips else {}
            rows.append(
                {
                    "task": task,
                    "method": method,
                    "nfe": nfe,
                    "psnr": round(p, 3),
                    "ssim": round(s, 4),
                    "seconds": round(sec, 5),
                    **rows_extra,
                }
            )
            print(
                f"{task:>8} {method:>16} NFE {nfe:>2}: PSNR {p:6.2f} dB  SSIM {s:.3f}  "
                f"{sec * 1e3:7.2f} ms/image",
                flush=True,
            )
        print(f"{task:>8} supervised model: {cfg.steps} steps in {sup.seconds:.0f} s")
    write_csv(OUT / "restoration.csv", rows)
    print(f"wrote {OUT / 'restoration.csv'}")


if __name__ == "__main__":
    main()
