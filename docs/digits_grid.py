"""The README's digit figure: one GCTM jump against flow matching's ODE, on MNIST.

    python docs/digits_grid.py       # writes docs/assets/digits.png (CPU, under a minute)

Uses only the shipped checkpoints (``mnist_gctm``: GCTM, one jump G(X1, 1, 0);
``mnist_fm``: flow matching, Euler with 1 step and Heun with 4 steps = 7 network
evaluations). The same 32 source noises X1 go through each sampler; the title of each panel
gives the share of 1,000 samples (same sampler, fresh noise) that the shipped digit
classifier reads with confidence ≥ 0.9, and their digit FD to the held-out digits
(``gctm_mini.digits``; not Inception FID).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from gctm_mini.assets import load_shipped  # noqa: E402
from gctm_mini.digits import reference_digits, score_digits  # noqa: E402
from gctm_mini.sampling import sample_multistep, sample_ode  # noqa: E402
from gctm_mini.solvers import nfe_of, steps_for_nfe  # noqa: E402
from gctm_mini.timegrid import uniform_grid  # noqa: E402

OUT = Path(__file__).resolve().parent / "assets" / "digits.png"


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=OUT, help="PNG to write")
    p.add_argument("--n", type=int, default=1000, help="samples scored per panel")
    args = p.parse_args(argv)

    gctm, fm = load_shipped("mnist_gctm"), load_shipped("mnist_fm")
    heun_nfe = nfe_of(uniform_grid(steps_for_nfe(8, "heun")), "heun")
    panels = [
        ("FM, 1 Euler step", lambda x: sample_ode(fm, x, 1, "euler"), 1),
        ("GCTM, one jump", lambda x: sample_multistep(gctm, x, 1), 1),
        ("FM, Heun ODE", lambda x: sample_ode(fm, x, 8, "heun"), heun_nfe),
    ]
    shown = torch.randn(32, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    scored = torch.randn(args.n, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    ref = reference_digits()
    fig, axes = plt.subplots(1, 3, figsize=(9, 2.5))
    with torch.no_grad():
        for ax, (title, sample, nfe) in zip(axes, panels, strict=True):
            x = torch.cat([sample(scored[i : i + 250]) for i in range(0, args.n, 250)])
            s = score_digits(x, ref)
            grid = sample(shown).clamp(-1, 1).view(4, 8, 28, 28).permute(0, 2, 1, 3)
            ax.imshow(grid.reshape(4 * 28, 8 * 28), cmap="gray_r", vmin=-1, vmax=1)
            ax.set_title(
                f"{title} (NFE {nfe})\n{s.confident:.0%} confident, digit FD {s.fd:.0f}",
                fontsize=9,
            )
            ax.axis("off")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")
    return args.out


if __name__ == "__main__":
    main()
