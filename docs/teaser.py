"""The README's teaser figure: one GCTM jump against flow matching's ODE, on moons.

    python docs/teaser.py            # writes docs/assets/teaser.png (CPU, a few seconds)

Uses only the shipped 2D checkpoints (``fm_moons``: flow matching, independent coupling;
``gctm_moons``: GCTM, exact-OT coupling, no teacher). The same 2048 source points X1 go
through FM's learned ODE with 1 Euler step and with 100, and through one GCTM jump
G(X1, 1, 0); each panel gives the exact W2 to fresh data points (mean over 3 draws of
2048), with the data–data floor at that sample size.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from gctm_mini.assets import load_shipped  # noqa: E402
from gctm_mini.data2d import make_dataset  # noqa: E402
from gctm_mini.metrics import data_floor, w2  # noqa: E402
from gctm_mini.plots import color_of  # noqa: E402
from gctm_mini.sampling import sample_multistep, sample_ode  # noqa: E402

OUT = Path(__file__).resolve().parent / "assets" / "teaser.png"


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=OUT, help="PNG to write")
    p.add_argument("--n", type=int, default=2048, help="points per panel and for W2")
    args = p.parse_args(argv)

    torch.manual_seed(0)
    data = make_dataset("moons")
    x1 = torch.randn(args.n, 2, generator=torch.Generator().manual_seed(1))
    refs = [data(args.n, torch.Generator().manual_seed(2 + k)) for k in range(3)]
    ref = refs[0]
    floor = data_floor(data, args.n, seeds=3)
    fm, gctm = load_shipped("fm_moons"), load_shipped("gctm_moons")
    with torch.no_grad():
        panels = [
            ("FM, ODE: 1 Euler step (NFE 1)", sample_ode(fm, x1, 1), "fm"),
            ("FM, ODE: 100 Euler steps (NFE 100)", sample_ode(fm, x1, 100), "fm"),
            ("GCTM, one jump G(X1, 1, 0) (NFE 1)", sample_multistep(gctm, x1, 1), "gctm"),
        ]

    fig, axes = plt.subplots(1, 3, figsize=(9.6, 3.4), sharex=True, sharey=True)
    for ax, (title, x, method) in zip(axes, panels, strict=True):
        ax.scatter(*ref.T, s=2, c=color_of("data"), alpha=0.25, linewidths=0, label="data")
        ax.scatter(*x.T, s=2, c=color_of(method), alpha=0.6, linewidths=0, label="generated")
        dist = sum(w2(x, r) for r in refs) / len(refs)
        ax.set_title(f"{title}\nW2 to data {dist:.3f} (floor {floor:.3f})", fontsize=9)
        ax.set_xlim(-2.5, 3.0)
        ax.set_ylim(-2.0, 2.5)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].legend(loc="lower left", fontsize=7, markerscale=4, frameon=False)
    fig.suptitle(
        "From Gaussian noise (t = 1) to moons (t = 0): the ODE needs many steps, GCTM one jump",
        fontsize=10,
    )
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KB)")
    return args.out


if __name__ == "__main__":
    main()
