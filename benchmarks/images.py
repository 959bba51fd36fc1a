"""Image training and sampling speed on the machine it runs on (CPU here, same script on a GPU).

    python benchmarks/images.py [--device cuda] [--quick]

1. Training throughput (images/s, median of timed steps after warm-up) of one GCTM step
   for the tiny CPU U-Net and the paper U-Net, at the configs' batch sizes (paper: 128 on a
   GPU, 8 on a CPU so that it finishes).
2. Sampling: one jump (NFE = 1) against a Heun ODE solve with the learned velocity at
   35 NFE (18 steps), on the same model and batch, measured side by side; the ratio is the
   speed-up of one-step generation.
Writes ``benchmarks/results/images.csv``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from gctm_mini.checkpoint import write_csv
from gctm_mini.methods import TrainingMethod
from gctm_mini.models import build_model
from gctm_mini.parameterization import CouplingMoments
from gctm_mini.randomness import Draws
from gctm_mini.runtime import describe
from gctm_mini.sampling import sample_multistep, sample_ode
from gctm_mini.train_images import image_spec, make_config
from gctm_mini.unet import count_parameters

OUT = Path(__file__).parent / "results"


def time_steps(cfg, device, batch: int, steps: int) -> float:
    model = build_model(image_spec(cfg, 3), CouplingMoments(0.25, 1.0, 0.0)).to(device).train()
    ema = build_model(image_spec(cfg, 3), CouplingMoments(0.25, 1.0, 0.0)).to(device).eval()
    method = TrainingMethod(cfg, model)
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    x0 = torch.rand(batch, 3, 32, 32, device=device) * 2 - 1
    times = []
    for k in range(steps + 2):
        x1 = torch.randn_like(x0)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss, _ = method.loss(model, ema, x0, x1, 10_000, Draws.for_step(0, k, device=device))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return batch / sorted(times[2:])[len(times[2:]) // 2]


@torch.no_grad()
def time_sampling(model, device, batch: int, repeat: int = 3) -> tuple[float, float]:
    x1 = torch.randn(batch, *model.data_shape, device=device)

    def clock(fn):
        fn()
        ts = []
        for _ in range(repeat):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            ts.append(time.perf_counter() - t0)
        return sorted(ts)[len(ts) // 2]

    return clock(lambda: sample_multistep(model, x1, 1)), clock(
        lambda: sample_ode(model, x1, 35, "heun")
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    device = torch.device(args.device)
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"machine: {describe(device)}")
    rows = []
    for name, overrides, batch in (
        ("tiny", ["net=tiny"], 32),
        ("paper", ["net=paper"], 128 if device.type == "cuda" else 8),
    ):
        cfg = make_config("patches_cpu", overrides + ["n_cap=16"])
        n_params = count_parameters(build_model(image_spec(cfg, 3)).net)
        ips = time_steps(cfg, device, batch, 2 if args.quick else 6)
        model = build_model(image_spec(cfg, 3), CouplingMoments(0.25, 1.0, 0.0)).to(device).eval()
        one, ode = time_sampling(model, device, 16 if args.quick else 64)
        rows.append(
            {
                "net": name,
                "params_M": round(n_params / 1e6, 2),
                "train_batch": batch,
                "train_images_per_s": round(ips, 2),
                "sample_batch": 16 if args.quick else 64,
                "nfe1_s": round(one, 4),
                "heun35_s": round(ode, 4),
                "speedup": round(ode / one, 1),
            }
        )
        r = rows[-1]
        print(
            f"{name:>5}: {r['params_M']} M params | train {r['train_images_per_s']} img/s (batch {batch}) | "
            f"sampling {r['sample_batch']} images: NFE 1 {r['nfe1_s']} s vs Heun 35 NFE {r['heun35_s']} s "
            f"→ {r['speedup']}× faster"
        )
    write_csv(OUT / "images.csv", rows)
    print(f"wrote {OUT / 'images.csv'}")


if __name__ == "__main__":
    main()
