"""Pictures: sample clouds, trajectories, velocity fields, density strips, quality vs NFE,
and animations (matplotlib ``to_jshtml``). Time direction in every figure: t = 1 is the
source, t = 0 the data. Each method keeps one colour across all notebooks
(:data:`METHOD_COLORS`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib import animation
from torch import Tensor

METHOD_COLORS = {
    "data": "#444444",
    "source": "#9e9e9e",
    "fm": "#1f77b4",
    "fm_euler": "#1f77b4",
    "fm_heun": "#17becf",
    "cd": "#ff7f0e",
    "ct": "#d62728",
    "ctm": "#9467bd",
    "gctm": "#2ca02c",
    "gctm_ot": "#2ca02c",
    "gctm_independent": "#98df8a",
    "bcm": "#8c564b",
    "exact": "#000000",
    "independent": "#1f77b4",
    "ot": "#2ca02c",
    "sinkhorn": "#ff7f0e",
}


def color_of(name: str) -> str:
    """The project colour of a method / coupling name (grey if unknown)."""
    return METHOD_COLORS.get(name, METHOD_COLORS.get(name.split("_")[0], "#7f7f7f"))


def _np(x: Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)


def plot_samples(
    ax, x: Tensor, title: str = "", color: str = "#1f77b4", lim: float = 3.0, s: float = 2.0
):
    """Scatter ``x: (n, 2)`` on a square ``[-lim, lim]²`` axis."""
    p = _np(x)
    ax.scatter(p[:, 0], p[:, 1], s=s, c=color, alpha=0.6, linewidths=0)
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", title=title)
    ax.set_xticks([])
    ax.set_yticks([])
    return ax


def plot_trajectories(
    ax, path: Tensor, n_show: int = 64, title: str = "", color: str = "#1f77b4", lim: float = 3.0
):
    """Draw ``path: (K + 1, B, 2)`` (from t = 1 at index 0 to t = 0 at the end) for ``n_show`` samples.

    Start points (source, t = 1) are grey, end points (t = 0) in ``color``.
    """
    p = _np(path)[:, :n_show]
    ax.plot(p[:, :, 0], p[:, :, 1], color=color, alpha=0.35, lw=0.8)
    ax.scatter(p[0, :, 0], p[0, :, 1], s=6, c=METHOD_COLORS["source"], label="t = 1 (source)")
    ax.scatter(p[-1, :, 0], p[-1, :, 1], s=6, c=color, label="t = 0 (data)")
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", title=title)
    return ax


def plot_velocity_fields(
    fields: Mapping[str, Callable[[Tensor, Tensor], Tensor]],
    times: Sequence[float],
    lim: float = 3.0,
    grid: int = 17,
    size: float = 2.4,
):
    """Quiver plots of several velocity fields ``v(x, t)`` (rows) at several times (columns)."""
    xs = torch.linspace(-lim, lim, grid)
    X, Y = torch.meshgrid(xs, xs, indexing="xy")
    pts = torch.stack([X.flatten(), Y.flatten()], 1)
    fig, axes = plt.subplots(
        len(fields), len(times), figsize=(size * len(times), size * len(fields)), squeeze=False
    )
    for r, (name, v) in enumerate(fields.items()):
        for c, t in enumerate(times):
            with torch.no_grad():
                vel = _np(v(pts, torch.full((len(pts),), float(t))))
            ax = axes[r, c]
            ax.quiver(
                _np(X),
                _np(Y),
                vel[:, 0].reshape(grid, grid),
                vel[:, 1].reshape(grid, grid),
                color=color_of(name),
                scale=None,
                width=0.006,
            )
            ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"t = {t:g}")
            if c == 0:
                ax.set_ylabel(name)
    fig.suptitle("velocity v(x, t) (arrows point towards larger t, i.e. to the source)")
    fig.tight_layout()
    return fig


def plot_density_strip(
    snapshots: Sequence[tuple[float, Tensor]],
    lim: float = 3.0,
    bins: int = 60,
    size: float = 1.8,
    title: str = "",
):
    """2D histograms of the marginal at several times: ``snapshots = [(t, x_t), …]``."""
    fig, axes = plt.subplots(
        1, len(snapshots), figsize=(size * len(snapshots), size + 0.3), squeeze=False
    )
    for ax, (t, x) in zip(axes[0], snapshots, strict=True):
        p = _np(x)
        ax.hist2d(p[:, 0], p[:, 1], bins=bins, range=[[-lim, lim], [-lim, lim]], cmap="viridis")
        ax.set(aspect="equal", title=f"t = {t:.2f}")
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_quality_vs_nfe(
    ax, results: Mapping[str, Mapping[int, float]], floor: float | None = None, metric: str = "W2"
):
    """Lines of ``results[method][nfe]`` on a log-NFE axis, with the data–data floor dashed."""
    for name, vals in results.items():
        k = sorted(vals)
        ax.plot(k, [vals[i] for i in k], "o-", color=color_of(name), label=name)
    if floor is not None:
        ax.axhline(floor, ls="--", color="k", lw=1, label="data–data floor")
    ax.set(
        xscale="log", xlabel="NFE (network evaluations)", ylabel=metric, title=f"{metric} vs NFE"
    )
    ax.legend(fontsize=8)
    return ax


def animate_path(
    path: Tensor,
    times: Sequence[float],
    lim: float = 3.0,
    color: str = "#1f77b4",
    size: float = 3.0,
    interval: int = 80,
) -> animation.FuncAnimation:
    """Animation of a sample cloud along ``path: (K + 1, B, 2)``; use ``.to_jshtml()`` in a notebook."""
    p = _np(path)
    fig, ax = plt.subplots(figsize=(size, size))
    sc = ax.scatter(p[0, :, 0], p[0, :, 1], s=2, c=color)
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ttl = ax.set_title(f"t = {times[0]:.2f}")

    def update(k: int):
        sc.set_offsets(p[k])
        ttl.set_text(f"t = {float(times[k]):.2f}")
        return sc, ttl

    anim = animation.FuncAnimation(fig, update, frames=len(p), interval=interval, blit=False)
    plt.close(fig)
    return anim


def plot_pairs(
    ax, x0: Tensor, x1: Tensor, title: str = "", color: str = "#1f77b4", lim: float = 3.0
):
    """Segments from each source point ``x1[i]`` (grey) to its data partner ``x0[i]`` (coloured)."""
    a, b = _np(x0), _np(x1)
    ax.plot(
        np.stack([b[:, 0], a[:, 0]]), np.stack([b[:, 1], a[:, 1]]), color=color, alpha=0.4, lw=0.7
    )
    ax.scatter(b[:, 0], b[:, 1], s=5, c=METHOD_COLORS["source"])
    ax.scatter(a[:, 0], a[:, 1], s=5, c=color)
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", title=title)
    ax.set_xticks([])
    ax.set_yticks([])
    return ax


SAMPLER_STYLES = {"euler": ":", "heun": "-.", "gamma": "-", "flowmap": "--"}
"""Line style per sampler kind (:data:`gctm_mini.sampling.SAMPLERS`), so that one method's
samplers share its colour and differ by style."""


def plot_reports(
    ax,
    entries: Sequence[tuple[str, object, str, str]],
    metric: str = "W2",
    title: str = "",
):
    """Quality by NFE with error bars for several :class:`~gctm_mini.metrics.NFEReport`.

    ``entries``: ``(label, report, method, sampler)`` — colour from the method
    (:data:`METHOD_COLORS`), line style from the sampler kind (:data:`SAMPLER_STYLES`), error
    bars the std over the report's seeds. The first report's data–data floor (mean ± std) is
    drawn as a grey band. NFE on a log axis with the NFE values as ticks.
    """
    nfes: set[int] = set()
    for label, rep, method, sampler in entries:
        k = sorted(rep.values)
        nfes.update(k)
        ax.errorbar(
            k,
            [rep.values[i] for i in k],
            yerr=[rep.stds[i] for i in k],
            color=color_of(method),
            ls=SAMPLER_STYLES.get(sampler, "-"),
            marker="o",
            ms=4,
            capsize=3,
            label=label,
        )
    if entries:
        rep = entries[0][1]
        ax.axhspan(
            rep.floor - rep.floor_std,
            rep.floor + rep.floor_std,
            color="0.85",
            label=f"data–data floor (n = {rep.n})",
        )
    ticks = sorted(nfes)
    ax.set(
        xscale="log",
        xlabel="NFE (network evaluations)",
        ylabel=f"{metric} (mean ± std over seeds)",
        title=title or f"{metric} vs NFE",
    )
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(k) for k in ticks])
    ax.minorticks_off()
    ax.legend(fontsize=7)
    return ax


def plot_band(
    ax,
    steps: Sequence[float],
    runs: Sequence[Sequence[float]],
    label: str,
    color: str = "#1f77b4",
    ls: str = "-",
):
    """Mean over runs (one list per run, all at ``steps``) as a line, ± std as a band."""
    a = np.asarray(runs, dtype=float)
    m, s = a.mean(0), a.std(0)
    ax.plot(steps, m, color=color, ls=ls, label=label)
    ax.fill_between(steps, m - s, m + s, color=color, alpha=0.2, lw=0)
    return ax


def mark_steps(ax, steps: Sequence[float], label: str = "", color: str = "0.4"):
    """Vertical dotted lines at ``steps`` (e.g. where the curriculum doubles N)."""
    for k, x in enumerate(steps):
        ax.axvline(x, color=color, ls=":", lw=1, label=label if k == 0 and label else None)
    return ax


def plot_normal_qq(ax, z: Tensor, title: str = "", labels: Sequence[str] | None = None):
    """Normal Q-Q plot: the sorted coordinates of ``z: (n, d)`` against N(0, 1) quantiles
    :math:`\\Phi^{-1}((i - 1/2)/n)`, one line style per coordinate, with the line y = x that
    N(0, 1) samples follow (e.g. latents from BCM's inversion, which should be N(0, I))."""
    p = torch.as_tensor(_np(z), dtype=torch.float64)
    if p.dim() != 2 or p.shape[0] < 2:
        raise ValueError(f"z must have shape (n, d) with n ≥ 2; got {tuple(p.shape)}")
    n = p.shape[0]
    q = torch.special.ndtri((torch.arange(1, n + 1, dtype=torch.float64) - 0.5) / n)
    styles = ["-", "--", ":", "-."]
    for k in range(p.shape[1]):
        label = labels[k] if labels is not None else f"coordinate {k + 1}"
        ax.plot(q, p[:, k].sort().values, styles[k % 4], color=color_of("bcm"), lw=1.4, label=label)
    lim = float(max(q.abs().max(), p.abs().max()))
    ax.plot([-lim, lim], [-lim, lim], color="k", lw=0.8, label="N(0, 1)")
    ax.set(xlabel="N(0, 1) quantile", ylabel="sample quantile", title=title, aspect="equal")
    ax.legend(fontsize=8)
    return ax
