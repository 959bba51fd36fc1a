"""The plotting helpers draw what they are given: error bars of the reported spread, the floor
band, one line style per sampler kind and one colour per method."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from gctm_mini import plots  # noqa: E402
from gctm_mini.metrics import NFEReport  # noqa: E402


def report(values, stds, floor=0.1, floor_std=0.01):
    return NFEReport("w2", 512, 5, floor, dict(values), dict(stds), floor_std)


def test_plot_reports_draws_means_stds_floor_band_styles_and_nfe_ticks():
    fig, ax = plt.subplots()
    a = report({1: 0.5, 2: 0.3, 4: 0.2}, {1: 0.05, 2: 0.02, 4: 0.01})
    b = report({1: 0.6, 4: 0.25}, {1: 0.0, 4: 0.03})
    plots.plot_reports(ax, [("CD, γ = 1", a, "cd", "gamma"), ("CT, jumps", b, "ct", "flowmap")])
    lines = [ln for ln in ax.get_lines() if ln.get_linestyle() != "None"]
    assert [list(ln.get_ydata()) for ln in lines] == [[0.5, 0.3, 0.2], [0.6, 0.25]]
    assert [ln.get_linestyle() for ln in lines] == ["-", "--"]
    assert lines[0].get_color() == plots.color_of("cd") and lines[1].get_color() == plots.color_of(
        "ct"
    )
    bars = [c for c in ax.collections if c.get_segments() and len(c.get_segments()) == 3]
    lengths = sorted(round(float(np.ptp(s[:, 1])), 6) for s in bars[0].get_segments())
    assert lengths == [0.02, 0.04, 0.1]  # 2 × std
    band = [p for p in ax.patches if "floor" in str(p.get_label())]
    assert len(band) == 1
    y = band[0].get_patch_transform().transform(band[0].get_path().vertices)[:, 1]
    assert np.isclose(y.min(), 0.09) and np.isclose(y.max(), 0.11)
    assert list(ax.get_xticks()) == [1, 2, 4] and ax.get_xscale() == "log"
    plt.close(fig)


def test_plot_band_and_mark_steps():
    fig, ax = plt.subplots()
    plots.plot_band(ax, [0, 1, 2], [[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]], "runs", "#ff0000")
    (line,) = ax.get_lines()
    assert list(line.get_ydata()) == [2.0, 2.0, 2.0]
    poly = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert np.isclose(poly.max(), 3.0) and np.isclose(poly.min(), 1.0)  # mean ± population std
    plots.mark_steps(ax, [10, 20], "N doubles")
    marks = ax.get_lines()[1:]
    assert [m.get_xdata()[0] for m in marks] == [10, 20]
    assert [m.get_label() for m in marks][0] == "N doubles" and marks[1].get_label().startswith("_")
    plt.close(fig)
