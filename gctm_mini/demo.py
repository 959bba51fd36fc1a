"""The quick-start job: flow matching and GCTM on the moons data set, on the CPU, in about
90 seconds.

Trains FM (independent coupling) and GCTM (exact minibatch-OT coupling, no teacher) on
moons, prints the exact W2 between generated and fresh data points by NFE — FM's ODE with
Euler and Heun beside GCTM's deterministic jumps — with the data–data floor, and saves a
figure (samples, trajectories, W2 vs NFE) to ``OUT/demo.png``.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from .data2d import make_dataset  # noqa: E402
from .metrics import quality_by_nfe  # noqa: E402
from .plots import color_of, plot_quality_vs_nfe, plot_samples, plot_trajectories  # noqa: E402
from .rundir import prepare_output_dir, write_output  # noqa: E402
from .sampling import make_sampler, sample_multistep, sample_ode  # noqa: E402
from .training import Toy2DConfig, train2d  # noqa: E402

NFES = (1, 2, 4, 8, 100)
FM_STEPS, GCTM_STEPS = 5000, 1500


def run_demo(
    out: Path, steps: int | None = None, n: int = 2048, seeds: int = 3, progress: bool = True
) -> dict:
    """Run the demo; returns ``{"fm_euler": {nfe: w2}, "fm_heun": …, "gctm": …, "floor": F}``.

    ``steps`` scales both runs down (for smoke tests): FM trains ``steps`` and GCTM ``steps // 3``.
    """
    prepare_output_dir(out)
    t_start = time.perf_counter()
    fm_steps = steps or FM_STEPS
    gctm_steps = max(1, steps // 3) if steps else GCTM_STEPS
    print(f"[demo] device: cpu ({torch.get_num_threads()} threads); data: moons (generated)")
    print(f"[demo] training FM ({fm_steps} steps) and GCTM with OT coupling ({gctm_steps} steps) …")
    fm = train2d(
        Toy2DConfig(method="fm", data="moons", steps=fm_steps, ckpt_every=fm_steps),
        out / "fm",
        resume=False,
        progress=progress,
    )
    gctm = train2d(
        Toy2DConfig(
            method="gctm", data="moons", coupling="ot", steps=gctm_steps, ckpt_every=gctm_steps
        ),
        out / "gctm",
        resume=False,
        progress=progress,
    )
    print(
        f"[demo] trained FM in {fm.seconds:.1f} s and GCTM in {gctm.seconds:.1f} s; "
        f"evaluating exact W2 (n={n}, {seeds} seeds) …"
    )
    data = make_dataset("moons")
    euler = quality_by_nfe(make_sampler(fm.ema, "euler"), data, NFES, n=n, seeds=seeds)
    floor = euler.floor
    reports = {
        "fm_euler": euler,
        "fm_heun": quality_by_nfe(
            make_sampler(fm.ema, "heun"), data, NFES, n=n, seeds=seeds, floor=floor
        ),
        "gctm": quality_by_nfe(
            make_sampler(gctm.ema, "flowmap"), data, NFES[:4], n=n, seeds=seeds, floor=floor
        ),
    }
    print(
        f"\nmoons: exact W2 between {n} generated and {n} fresh data points (mean of {seeds} seeds)"
    )
    print(f"{'NFE':>5} | {'FM Euler':>9} | {'FM Heun':>9} | {'GCTM (OT)':>9}")
    for k in NFES:
        g = reports["gctm"].values.get(k)
        gtxt = f"{g:9.4f}" if g is not None else f"{'—':>9}"
        print(
            f"{k:>5} | {reports['fm_euler'].values[k]:9.4f} | {reports['fm_heun'].values[k]:9.4f} | {gtxt}"
        )
    print(f"{'floor':>5} | {floor:9.4f} | (data vs data at the same n)")

    fig, axes = plt.subplots(1, 5, figsize=(15, 3.2))
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(2000, 2, generator=g)
    plot_samples(axes[0], data(2000, g), "data (moons)", color_of("data"))
    plot_samples(axes[1], sample_ode(fm.ema, x1, 1, "euler"), "FM Euler, NFE = 1", color_of("fm"))
    plot_samples(axes[2], sample_multistep(gctm.ema, x1, 1), "GCTM (OT), NFE = 1", color_of("gctm"))
    _, path = sample_ode(fm.ema, x1[:200], 100, "euler", return_path=True)
    plot_trajectories(axes[3], path, 100, "FM ODE paths t=1 → 0", color_of("fm"))
    plot_quality_vs_nfe(axes[4], {k: r.values for k, r in reports.items()}, floor)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, dpi=80, format="png")
    plt.close(fig)
    write_output(out / "demo.png", png.getvalue())
    total = time.perf_counter() - t_start
    print(f"\n[demo] figure: {out / 'demo.png'}; total wall time {total:.0f} s")
    return {**{k: r.values for k, r in reports.items()}, "floor": floor, "seconds": total}
