"""Coupling cost per batch and the straightness it buys.

    python benchmarks/couplings.py [--quick]

Part 1 — time per batch (median of repeats) of exact OT (POT ``ot.emd``), Sinkhorn in torch
(this package, including drawing the one-to-one pairs from the plan) and POT's log-domain
Sinkhorn (the plan only), both at most 100 iterations with marginal tolerance 1e-3, for batch
sizes 64…1024, measured side by side in one process. Part 2 — FM on moons trained with each coupling
(same steps), and the straightness of its sampled ODE paths.
Writes ``benchmarks/results/couplings.csv``, ``couplings_straightness.csv`` and
``couplings.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from gctm_mini.checkpoint import write_csv
from gctm_mini.data2d import make_dataset  # noqa: E402
from gctm_mini.metrics import straightness  # noqa: E402
from gctm_mini.plots import color_of  # noqa: E402
from gctm_mini.runtime import describe  # noqa: E402
from gctm_mini.sampling import sample_ode  # noqa: E402
from gctm_mini.timing import coupling_costs  # noqa: E402
from gctm_mini.training import Toy2DConfig, train2d  # noqa: E402

OUT = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small sizes, few steps")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    sizes = [64, 256] if args.quick else [64, 128, 256, 512, 1024]
    steps = 300 if args.quick else 4000
    data = make_dataset("moons")
    print(f"machine: {describe('cpu')}")

    rows = coupling_costs(sizes, data, reg=0.05, repeat=5)
    write_csv(OUT / "couplings.csv", rows)
    print("batch | exact OT ms | Sinkhorn torch ms | Sinkhorn POT ms | cost indep / OT / Sinkhorn")
    for B in sizes:
        r = {x["coupling"]: x for x in rows if x["batch"] == B}
        print(
            f"{B:5d} | {1e3 * r['ot']['seconds']:11.2f} | {1e3 * r['sinkhorn']['seconds']:17.2f} | "
            f"{1e3 * r['sinkhorn_pot']['seconds']:15.2f} | {r['independent']['cost']:.3f} / "
            f"{r['ot']['cost']:.3f} / {r['sinkhorn']['cost']:.3f}"
        )

    x1 = torch.randn(2000, 2, generator=torch.Generator().manual_seed(0))
    srows = []
    for coupling in ("independent", "ot", "sinkhorn"):
        res = train2d(Toy2DConfig(data="moons", coupling=coupling, steps=steps), progress=False)
        _, path = sample_ode(res.ema, x1, 50, "euler", return_path=True)
        s = straightness(path, torch.linspace(1, 0, 51))
        srows.append(
            {"coupling": coupling, "steps": steps, "train_seconds": res.seconds, "straightness": s}
        )
        print(f"{coupling:>11}: straightness {s:.4f}, trained {steps} steps in {res.seconds:.1f} s")
    write_csv(OUT / "couplings_straightness.csv", srows)

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for name in ("ot", "sinkhorn", "sinkhorn_pot"):
        r = [x for x in rows if x["coupling"] == name]
        axes[0].plot(
            [x["batch"] for x in r],
            [1e3 * x["seconds"] for x in r],
            "o-",
            label=name,
            color=color_of(name) if name != "sinkhorn_pot" else "0.5",
        )
    axes[0].set(
        xscale="log",
        yscale="log",
        xlabel="batch size",
        ylabel="ms per batch",
        title="coupling cost per batch (CPU)",
    )
    axes[0].legend()
    axes[1].bar(
        [r["coupling"] for r in srows],
        [r["straightness"] for r in srows],
        color=[color_of(r["coupling"]) for r in srows],
    )
    axes[1].set(yscale="log", ylabel="straightness (0 = straight)", title="FM paths on moons")
    fig.tight_layout()
    fig.savefig(OUT / "couplings.png", dpi=80)
    print(f"wrote {OUT}/couplings.csv, couplings_straightness.csv, couplings.png")


if __name__ == "__main__":
    main()
