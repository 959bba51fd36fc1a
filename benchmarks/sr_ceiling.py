"""The regression yardstick for supervised SR×2: the same network trained by plain MSE.

    python benchmarks/sr_ceiling.py [--steps 1200] [--lr 3e-4] [--out FILE] [--quick]

With ε = 0 and a linear H the exact one-jump map G(H(x), 1, 0) is the conditional mean
E[X0 | H(X0)] (see ``gctm_mini.restoration``), so its PSNR can at best match the best
regression. This trains the ``sr2_cpu`` network and preconditioning on exactly that
regression, ``E‖G_θ(H(x), 1, 0) − x‖²`` (batch 16, EMA 0.99, Adam), and reports the gain over
bicubic on the benchmark's 256 held-out patches every ``--every`` steps, alone and followed by
the measurement projection. Writes ``benchmarks/results/sr_ceiling.csv`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from tqdm import tqdm

from gctm_mini.checkpoint import write_csv
from gctm_mini.degradations import Degradation
from gctm_mini.ema import EMA
from gctm_mini.evaluation import psnr_ssim
from gctm_mini.images import PhotoPatches
from gctm_mini.models import build_model
from gctm_mini.runtime import describe
from gctm_mini.train_images import (
    build_image_data,
    estimate_image_moments,
    image_spec,
    make_config,
)

OUT = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--every", type=int, default=200)
    ap.add_argument("--n", type=int, default=256, help="test patches")
    ap.add_argument(
        "--out",
        type=Path,
        default=OUT / "sr_ceiling.csv",
        help="CSV to write; give another file for other settings to keep the committed table",
    )
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    steps, every, n = (4, 2, 16) if args.quick else (args.steps, args.every, args.n)
    x0 = PhotoPatches("test").images
    x0 = x0[torch.randperm(len(x0), generator=torch.Generator().manual_seed(0))[:n]]
    op = Degradation("sr2")
    y = op(x0)
    bicubic = psnr_ssim(y, x0)[0]
    cfg = make_config("sr2_cpu", ["model_channels=16"] if args.quick else [])
    ds = build_image_data(cfg)
    print(f"machine: {describe('cpu')}; train {ds.describe()}; {n} held-out patches")
    torch.manual_seed(cfg.seed)
    model = build_model(image_spec(cfg, 3), estimate_image_moments(cfg, ds))
    ema = EMA(model, cfg.ema_decay)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    rows, t0 = [], time.perf_counter()
    for step in tqdm(range(1, steps + 1), desc="regression sr2", mininterval=10.0):
        x = ds.images[torch.randint(0, len(ds.images), (cfg.batch_size,), generator=gen)]
        loss = (model.G(op(x), 1.0, 0.0) - x).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema.update(model)
        if step % every == 0 or step == steps:
            with torch.no_grad():
                out = ema.model.G(y, 1.0, 0.0)
                raw = psnr_ssim(out, x0)[0] - bicubic
                dc = psnr_ssim(op.project(out, y, iters=50), x0)[0] - bicubic
            sec = time.perf_counter() - t0
            rows.append(
                {
                    "step": step,
                    "gain_db": round(raw, 3),
                    "gain_dc_db": round(dc, 3),
                    "seconds": round(sec, 1),
                }
            )
            tqdm.write(
                f"step {step:5d}: {raw:+.2f} dB over bicubic, {dc:+.2f} dB with the "
                f"projection ({sec:.0f} s)"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_csv(args.out, rows)
    print(f"bicubic {bicubic:.2f} dB; wrote {args.out}")


if __name__ == "__main__":
    main()
