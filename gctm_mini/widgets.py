"""Interactive explorers (ipywidgets) over trained 2D models and couplings.

* :class:`FlowMapExplorer` (the t→s widget) — sliders for t, s, γ and the number of jumps. It
  shows a fixed cloud of points at time t, their learned jump to s (γ-sampling with that many
  jumps; one deterministic jump for γ = 0 and 1 step), the learned-velocity ODE path from t
  to s, and — for Gaussian-mixture data — the exact flow map, with the errors read out.
* :class:`GammaExplorer` — γ and NFE of γ-sampling from noise, with W2 to fresh data.
* :class:`CouplingExplorer` — independent / exact OT / Sinkhorn pairings of one batch, with
  Sinkhorn's ε and the transport cost.

Nothing is trained on a slider move; everything is a few batched forward passes. All drawing
goes through ``update(...)``, which works without a display (the tests call it directly);
``widget()`` wires it to the controls.

A redraw takes about a second, so the sliders update on release (``continuous_update=False``)
rather than on every step of a drag. The figure is shown as a PNG in an ``Image`` widget
rather than captured by an ``Output`` widget: it needs nothing but core widgets and their
synced ``value``, so it behaves the same in JupyterLab (ipywidgets 8), Colab (ipywidgets 7)
and without a front end (what the tests check).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch
from torch import Tensor

from ._optional import require
from .oracle import GaussianMixtureOracle
from .parameterization import FlowMapModel
from .plots import METHOD_COLORS, color_of
from .sampling import gamma_sampling
from .solvers import integrate


@dataclass
class JumpResult:
    """What one slider setting produced (all ``(n, 2)`` tensors on the CPU)."""

    t: float
    s: float
    gamma: float
    steps: int
    x_t: Tensor
    jump: Tensor
    ode_path: Tensor
    exact: Tensor | None
    jump_error: float | None
    ode_error: float | None

    def readout(self) -> str:
        txt = f"t = {self.t:.2f} → s = {self.s:.2f}, γ = {self.gamma:.2f}, {self.steps} jump(s)"
        if self.exact is not None:
            txt += (
                f" | mean ‖learned − exact‖: jump {self.jump_error:.3f},"
                f" ODE (40 Heun steps) {self.ode_error:.3f}"
            )
        return txt


class _Explorer:
    """Shared plumbing: a figure, an ``update(**values)`` method, and slider wiring."""

    fig = None
    ax = None

    def _axes(self):
        if self.fig is None:
            self.fig, self.ax = plt.subplots(figsize=(5, 5))
            plt.close(self.fig)
        return self.ax

    def _controls(self) -> dict:
        raise NotImplementedError

    dpi = 90

    def png(self) -> bytes:
        """The current figure as PNG bytes (``dpi`` pixels per inch)."""
        buf = io.BytesIO()
        self.fig.savefig(buf, format="png", dpi=self.dpi)
        return buf.getvalue()

    def widget(self):
        """Controls wired to ``update``: ``VBox([HBox(controls), Label(read-out), Image(figure)])``.

        Works with ipywidgets 7.6+ and 8; a slider's new value redraws once, on release.
        """
        w = require("ipywidgets", "the interactive explorers")

        controls = self._controls()
        label = w.Label()
        image = w.Image(format="png")

        def redraw(_=None):
            r = self.update(**{k: v.value for k, v in controls.items()})
            label.value = r.readout() if hasattr(r, "readout") else str(r)
            image.value = self.png()
            image.width = str(round(self.fig.get_figwidth() * self.dpi))  # no stretching

        for v in controls.values():
            v.observe(redraw, names="value")
        redraw()
        return w.VBox([w.HBox(list(controls.values())), label, image])


class FlowMapExplorer(_Explorer):
    """Explore G(x, t, s) of a trained 2D model.

    Args:
        model: a flow-map model (``G``, ``_velocity``), e.g. :func:`gctm_mini.assets.load_shipped`.
        data: the data set X0 (a :class:`~gctm_mini.data2d.Dataset2D`); if it is a Gaussian
            mixture the exact flow map is shown too.
        n: points in the cloud; ``seed`` fixes them; ``lim`` the plot range.
    """

    def __init__(self, model: FlowMapModel, data, n: int = 300, seed: int = 0, lim: float = 3.0):
        g = torch.Generator().manual_seed(seed)
        self.model = model.eval()
        self.x0 = data(n, g)
        self.x1 = torch.randn(n, 2, generator=g)
        self.oracle = GaussianMixtureOracle(data) if hasattr(data, "covs") else None
        self.lim = lim

    @torch.no_grad()
    def compute(self, t: float, s: float, gamma: float = 0.0, steps: int = 1) -> JumpResult:
        """Jump the cloud from t to s; ``s`` is clipped to ``t`` (forward maps only)."""
        t, s = float(t), min(float(s), float(t))
        if not 0.0 <= s <= t <= 1.0:
            raise ValueError(f"need 0 ≤ s ≤ t ≤ 1; got t={t}, s={s}")
        xt = (1 - t) * self.x0 + t * self.x1
        if s == t:
            jump, path = xt, xt[None].repeat(2, 1, 1)
        else:
            times = torch.linspace(t, s, int(steps) + 1)
            jump = gamma_sampling(self.model, xt, times, gamma, torch.Generator().manual_seed(1))
            _, path = integrate(
                self.model._velocity, xt, torch.linspace(t, s, 41), "heun", return_path=True
            )
        exact = jump_err = ode_err = None
        if self.oracle is not None:
            exact = self.oracle.flow_map(xt, t, s, steps=60).float()
            jump_err = float((jump - exact).norm(dim=1).mean())
            ode_err = float((path[-1] - exact).norm(dim=1).mean())
        return JumpResult(t, s, float(gamma), int(steps), xt, jump, path, exact, jump_err, ode_err)

    def draw(self, r: JumpResult, ax) -> None:
        ax.clear()
        p = r.ode_path.numpy()
        ax.plot(p[:, :80, 0], p[:, :80, 1], color=color_of("fm"), alpha=0.25, lw=0.8)
        ax.scatter(
            r.x_t[:, 0], r.x_t[:, 1], s=6, c=METHOD_COLORS["source"], label=f"x_t (t = {r.t:.2f})"
        )
        if r.exact is not None:
            ax.scatter(
                r.exact[:, 0],
                r.exact[:, 1],
                s=14,
                facecolors="none",
                edgecolors="k",
                linewidths=0.6,
                label="exact G(x, t, s)",
            )
        ax.scatter(r.jump[:, 0], r.jump[:, 1], s=6, c=color_of("gctm"), label="learned jump")
        ax.plot([], [], color=color_of("fm"), label="learned ODE path")
        ax.set(xlim=(-self.lim, self.lim), ylim=(-self.lim, self.lim), aspect="equal")
        ax.set_title(r.readout(), fontsize=8)
        ax.legend(loc="lower left", fontsize=7)

    def update(
        self, t: float = 1.0, s: float = 0.0, gamma: float = 0.0, steps: int = 1
    ) -> JumpResult:
        """Recompute and redraw for one slider setting; returns the numbers shown."""
        r = self.compute(t, s, gamma, steps)
        self.draw(r, self._axes())
        return r

    def _controls(self) -> dict:
        w = require("ipywidgets", "the interactive explorers")

        return {
            "t": w.FloatSlider(
                value=1.0, min=0.0, max=1.0, step=0.01, description="t", continuous_update=False
            ),
            "s": w.FloatSlider(
                value=0.0, min=0.0, max=1.0, step=0.01, description="s", continuous_update=False
            ),
            "gamma": w.FloatSlider(
                value=0.0, min=0.0, max=1.0, step=0.05, description="γ", continuous_update=False
            ),
            "steps": w.IntSlider(
                value=1, min=1, max=8, description="jumps", continuous_update=False
            ),
        }


class GammaExplorer(_Explorer):
    """γ-sampling from noise with a chosen γ and number of jumps; W2 to fresh data read out."""

    def __init__(self, model: FlowMapModel, data, n: int = 1000, seed: int = 0, lim: float = 3.0):
        g = torch.Generator().manual_seed(seed)
        self.model, self.lim = model.eval(), lim
        self.x1 = torch.randn(n, *model.data_shape, generator=g)
        self.ref = data(n, g)

    @torch.no_grad()
    def update(self, gamma: float = 0.0, nfe: int = 1) -> str:
        from .metrics import w2

        x = gamma_sampling(
            self.model, self.x1, int(nfe), float(gamma), torch.Generator().manual_seed(1)
        )
        text = f"γ = {gamma:.2f}, NFE = {int(nfe)}: W2 to data {w2(x, self.ref):.3f}"
        ax = self._axes()
        ax.clear()
        ax.scatter(
            self.ref[:, 0], self.ref[:, 1], s=3, c=METHOD_COLORS["data"], alpha=0.3, label="data"
        )
        ax.scatter(x[:, 0], x[:, 1], s=3, c=color_of("gctm"), label="samples")
        ax.set(xlim=(-self.lim, self.lim), ylim=(-self.lim, self.lim), aspect="equal")
        ax.set_title(text, fontsize=9)
        ax.legend(loc="lower left", fontsize=7)
        return text

    def _controls(self) -> dict:
        w = require("ipywidgets", "the interactive explorers")

        return {
            "gamma": w.FloatSlider(
                value=0.0, min=0.0, max=1.0, step=0.05, description="γ", continuous_update=False
            ),
            "nfe": w.IntSlider(value=1, min=1, max=8, description="NFE", continuous_update=False),
        }


class CouplingExplorer(_Explorer):
    """Pairs of one batch under independent, exact-OT or Sinkhorn coupling."""

    def __init__(self, data, n: int = 64, seed: int = 0, lim: float = 3.0):
        g = torch.Generator().manual_seed(seed)
        self.x0, self.x1, self.lim = data(n, g), torch.randn(n, 2, generator=g), lim

    def update(self, coupling: str = "ot", reg: float = 0.05) -> str:
        from .couplings import couple, transport_cost
        from .plots import plot_pairs

        with torch.random.fork_rng():
            torch.manual_seed(0)
            a, b, info = couple(self.x0, self.x1, coupling, reg=float(reg))
        text = f"{coupling}" + (f" (ε = {reg:.3f})" if coupling == "sinkhorn" else "")
        text += f": mean ‖X0 − X1‖² = {transport_cost(a, b):.3f}"
        ax = self._axes()
        ax.clear()
        plot_pairs(ax, a, b, "", color_of(coupling), self.lim)
        ax.set_title(text, fontsize=9)
        return text

    def _controls(self) -> dict:
        w = require("ipywidgets", "the interactive explorers")

        return {
            "coupling": w.Dropdown(
                options=["independent", "ot", "sinkhorn"], value="ot", description="coupling"
            ),
            "reg": w.FloatLogSlider(
                value=0.05,
                base=10,
                min=-3,
                max=1,
                step=0.1,
                description="ε",
                continuous_update=False,
            ),
        }
