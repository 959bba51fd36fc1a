"""Generated MNIST digits by NFE, scored by the shipped digit classifier (CPU).

    OMP_NUM_THREADS=1 python benchmarks/digits.py [--n 1000] [--seeds 3] [--quick]
        [--models mnist_gctm,mnist_fm] [--jumps 1,2,4] [--euler 1,2,4,8,16] [--heun 4,8,16,35]

For the shipped ``mnist_gctm`` (flow-map jumps, NFE 1, 2, 4), ``mnist_fm`` (Euler and Heun
on its learned velocity) and ``mnist_ct`` where it is shipped: digit FD to the 1,000
held-out digits (Fréchet distance in the classifier's penultimate features — not Inception
FID), the share classified with confidence ≥ 0.9, and the smallest predicted-class share;
mean ± std over seeds, each seed a fresh draw of ``--n`` source noises shared by every
sampler. The floor row scores ``--n`` real training digits the same way (one subsample per
seed). Time per image: the seed-0 generation divided by n, on this machine's CPU with the
thread count printed (a shared machine: read ratios, not absolute times). Training wall time
from each checkpoint. Writes ``benchmarks/results/digits.csv`` and ``digits.png``
(sample grids). ``--models mnist_fm`` recomputes only that model's rows and keeps the other
models' rows already in the CSV.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from gctm_mini.assets import load_shipped, manifest, shipped_path
from gctm_mini.checkpoint import load_raw, write_csv
from gctm_mini.digits import load_digit_classifier, reference_digits, score_digits
from gctm_mini.images import MnistDigits
from gctm_mini.runtime import describe
from gctm_mini.sampling import sample_multistep, sample_ode
from gctm_mini.solvers import nfe_of, steps_for_nfe
from gctm_mini.timegrid import uniform_grid

OUT = Path(__file__).parent / "results"


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def train_seconds(name: str) -> tuple[float, str]:
    """Training wall time of a shipped model, with its warm start's time added."""
    data = load_raw(shipped_path(name))
    secs, note = float(data.get("seconds", 0.0)), f"{data.get('step')} steps"
    init = data.get("config", {}).get("init", "")
    if init:
        base = Path(init).name
        if f"{base}" in manifest():
            extra = float(load_raw(shipped_path(base)).get("seconds", 0.0))
            secs += extra
            note += f" + {base} ({extra / 60:.0f} min)"
    return secs, note


@torch.no_grad()
def sampler_table(args, models: list[str]) -> list[tuple[str, str, str, int, object]]:
    """``(model, sampler, label, nfe, fn(x1) → x0)`` for every row of the table."""
    rows = []
    for name in ("mnist_gctm", "mnist_ct"):
        if name not in models or name not in manifest() or not shipped_path(name).exists():
            continue
        m = load_shipped(name)
        for k in args.jumps:
            rows.append(
                (name, "flowmap", f"{k} jump(s)", k, lambda x, k=k, m=m: sample_multistep(m, x, k))
            )
    if "mnist_fm" in models:
        fm = load_shipped("mnist_fm")
        for k in args.euler:
            rows.append(
                ("mnist_fm", "euler", f"{k} steps", k, lambda x, k=k: sample_ode(fm, x, k, "euler"))
            )
        for k in args.heun:
            steps = steps_for_nfe(k, "heun")
            cost = nfe_of(uniform_grid(steps), "heun")
            rows.append(
                (
                    "mnist_fm",
                    "heun",
                    f"{steps} steps",
                    cost,
                    lambda x, k=k: sample_ode(fm, x, k, "heun"),
                )
            )
    return rows


PANELS = (
    ("mnist_gctm", "GCTM, 1 jump", lambda m, x: sample_multistep(m, x, 1)),
    ("mnist_gctm", "GCTM, 2 jumps", lambda m, x: sample_multistep(m, x, 2)),
    ("mnist_fm", "FM Euler, NFE 1", lambda m, x: sample_ode(m, x, 1, "euler")),
    ("mnist_fm", "FM Heun, NFE 7", lambda m, x: sample_ode(m, x, 8, "heun")),
    ("mnist_fm", "FM Heun, NFE 35", lambda m, x: sample_ode(m, x, 35, "heun")),
)


def grid_figure(panels: list[tuple[str, torch.Tensor]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torchvision.utils import make_grid

    fig, axes = plt.subplots(1, len(panels), figsize=(2.1 * len(panels), 2.4))
    for ax, (title, x) in zip(axes, panels, strict=True):
        g = make_grid((x[:36].clamp(-1, 1) + 1) / 2, nrow=6, padding=1, pad_value=1.0)
        ax.imshow(g[0].numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="fewer samplers, n = 200, 2 seeds")
    ap.add_argument("--jumps", type=_ints, default=[1, 2, 4], help="GCTM NFEs")
    ap.add_argument("--euler", type=_ints, default=[1, 2, 4, 8, 16], help="FM Euler NFEs")
    ap.add_argument("--heun", type=_ints, default=[4, 8, 16, 35], help="FM Heun NFE budgets")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--models", default="mnist_gctm,mnist_ct,mnist_fm", help="rows to recompute")
    args = ap.parse_args()
    n, seeds = (200, 2) if args.quick else (args.n, args.seeds)
    if args.quick:
        args.jumps, args.euler, args.heun = [1, 2], [1, 4], [8]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    print(
        f"machine: {describe(torch.device('cpu'))}; torch threads: {threads}; n={n}, {seeds} seeds"
    )
    clf = load_digit_classifier()
    ref = reference_digits()
    train = MnistDigits("train").images

    def summary(vals: list[float]) -> tuple[float, float]:
        t = torch.tensor(vals, dtype=torch.float64)
        return float(t.mean()), float(t.std()) if len(vals) > 1 else 0.0

    def row(model, sampler, label, nfe, scores, per_image, train_s, note):
        fd, conf, minc = (
            summary([getattr(s, k) for s in scores]) for k in ("fd", "confident", "min_class")
        )
        r = {
            "model": model,
            "sampler": sampler,
            "steps": label,
            "nfe": nfe,
            "n": n,
            "seeds": seeds,
            "digit_fd": round(fd[0], 3),
            "digit_fd_std": round(fd[1], 3),
            "confident_share": round(conf[0], 4),
            "confident_share_std": round(conf[1], 4),
            "min_class_share": round(minc[0], 4),
            "min_class_share_std": round(minc[1], 4),
            "ms_per_image": round(1000 * per_image, 3),
            "threads": threads,
            "train_minutes": round(train_s / 60, 1) if train_s else "",
            "train_note": note,
        }
        print(
            f"{model:>10} {sampler:>7} {label:>10} NFE {nfe:>2}: digit FD {fd[0]:7.2f} ± {fd[1]:.2f} | "
            f"confident {conf[0]:.3f} ± {conf[1]:.3f} | min class {minc[0]:.3f} | "
            f"{1000 * per_image:.2f} ms/image",
            flush=True,
        )
        return r

    rows = []
    floor_scores = []
    for k in range(seeds):
        g = torch.Generator().manual_seed(k)
        floor_scores.append(
            score_digits(train[torch.randperm(len(train), generator=g)[:n]], ref, clf)
        )
    rows.append(
        row(
            "real digits",
            "train split",
            "",
            0,
            floor_scores,
            0.0,
            0.0,
            "floor: n training vs held-out",
        )
    )
    noises = [
        torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(1000 + k))
        for k in range(seeds)
    ]
    train_time = {}
    for model, sampler, label, nfe, fn in sampler_table(args, args.models.split(",")):
        if model not in train_time:
            train_time[model] = train_seconds(model)
        scores, per_image = [], 0.0
        for k in range(seeds):
            t0 = time.perf_counter()
            x = torch.cat([fn(noises[k][i : i + 250]) for i in range(0, n, 250)])
            if k == 0:
                per_image = (time.perf_counter() - t0) / n
            scores.append(score_digits(x, ref, clf))
        secs, note = train_time[model]
        rows.append(row(model, sampler, label, nfe, scores, per_image, secs, note))
    csv = out / "digits.csv"
    if csv.exists():  # keep the rows of the models not recomputed
        import csv as csvlib

        with csv.open() as f:
            old = [r for r in csvlib.DictReader(f) if r["model"] not in {r["model"] for r in rows}]
        rows = rows[:1] + old + rows[1:]
        order = {"real digits": 0, "mnist_gctm": 1, "mnist_ct": 2, "mnist_fm": 3}
        rows = sorted(rows, key=lambda r: order.get(r["model"], 9))
    write_csv(csv, rows)
    panels = [
        (
            "real (held-out)",
            ref[torch.randperm(len(ref), generator=torch.Generator().manual_seed(0))],
        )
    ]
    x36 = torch.randn(36, 1, 28, 28, generator=torch.Generator().manual_seed(1000))
    with torch.no_grad():
        for name, title, fn in PANELS:
            if name not in manifest() or not shipped_path(name).exists():
                continue
            panels.append((title, fn(load_shipped(name), x36)))
    grid_figure(panels, out / "digits.png")
    print(f"wrote {out / 'digits.csv'} and {out / 'digits.png'}")


if __name__ == "__main__":
    main()
