"""Training methods as small objects: which loss, which time grid at which step, and what
extra state (a teacher, an EMA target network) each one carries.

=======  ====================================  =======================  ====================
method   loss (:mod:`~gctm_mini.consistency`)  time grid                needs
=======  ====================================  =======================  ====================
fm       :func:`~gctm_mini.losses.fm_loss`     none (t from fm_times)   —
cd       :func:`cd_loss`                       EDM grid, fixed N=cd_n   FM teacher, EMA target
ct       :func:`ct_loss` (iCT)                 EDM grid, N curriculum   —
ctm      :func:`ctm_loss`                      EDM grid, N curriculum   FM teacher
gctm     :func:`gctm_loss`                     EDM grid, N curriculum   — (own EMA velocity)
bcm      :func:`bcm_loss`                      EDM grid, N curriculum   bidirectional model
=======  ====================================  =======================  ====================

Grids are re-jittered every step by default (``grid_jitter``; see :meth:`TrainingMethod.grid`).

A config object passed here needs the fields of :class:`MethodFields` (the 2D and image
configs both have them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .consistency import JUMP_US, bcm_loss, cd_loss, ct_loss, ctm_loss, gctm_loss
from .ema import EMA
from .interpolant import SIGMA_MIN
from .losses import FM_TIME_SAMPLERS, fm_loss, sample_fm_times
from .parameterization import FlowMapModel
from .randomness import Draws
from .solvers import METHODS as ODE_METHODS
from .timegrid import T_SNAPS, curriculum_N, fine_grid
from .validation import check_fields, knob

METHODS = ("fm", "cd", "ct", "ctm", "gctm", "bcm")
NEEDS_TEACHER = ("cd", "ctm")
DEFAULT_STEPS_2D = {"fm": 12000, "cd": 3000, "ct": 4000, "ctm": 3000, "gctm": 2500, "bcm": 4000}
"""Steps a 2D run takes when ``steps = 0`` (about a minute each on a 2-core CPU; GCTM, exact OT: 51–53 s idle)."""
DEFAULT_JUMP_PROB_2D = 0.25
"""GCTM's share of one-jump samples, (t, s) = (1, 0), in a 2D noise → data run
(``jump_prob = -1``, auto). Measured with the exact-OT coupling at 2500 steps: W2 at NFE 1
fell on moons, 8 gaussians and checkerboard for every seed tried
(``benchmarks/one_jump.py``; docs/benchmarks/peers.md), for about 15 % more time per step."""
DEFAULT_LR_2D = {"fm": 2e-3, "cd": 2e-3, "ct": 2e-3, "ctm": 2e-3, "gctm": 4e-3, "bcm": 2e-3}
"""Adam learning rate of a 2D run when ``lr = 0`` (auto). GCTM's 4·10⁻³ (with λ = 2, :data:`DEFAULT_LAM_2D`) lowered W2 at NFE 1 in eight of nine paired
runs over moons, 8 gaussians and checkerboard (``benchmarks/one_jump.py``)."""
DEFAULT_LAM_2D = 2.0
"""GCTM's λ (weight of the consistency term) in a 2D run; see :data:`DEFAULT_LR_2D`."""
DEFAULT_EMA_SOLVER_2D = "euler"
"""GCTM's EMA solve t → u in a 2D run from Gaussian noise with the exact-OT coupling
(``ema_solver = "auto"``). The paper solves with Heun; there, one Euler step per grid
interval gave the same one-jump W2 (paired differences within ±0.005 on moons, 8 gaussians
and checkerboard, 3 training seeds × 10 evaluation draws, ``benchmarks/one_jump.py``) for half
the velocity calls: OT-coupled paths are nearly straight. With the independent coupling the
paths curve and Euler with N ≤ 8 is far worse (moons, 2 seeds: one-jump W2 0.42 against
0.16), so every other run (independent or Sinkhorn coupling, translation, images) keeps Heun."""
DEFAULT_N_CAP_2D = 8
"""GCTM's largest number of grid intervals in a 2D run from Gaussian noise with the exact-OT
coupling (``n_cap = 0``, auto; :data:`N_CAP` otherwise): with the Euler teacher, N ≤ 8 gave
the one-jump W2 of N ≤ 16 within ±0.002 (``benchmarks/one_jump.py``, 3 training seeds × 10
draws) and shortens the longest solves of the last third of the run. See
docs/benchmarks/peers.md."""
DEFAULT_X_FOURIER_2D = 3.0
"""σ of the random Fourier features of x that GCTM's MLP reads in a 2D run from Gaussian noise
with the exact-OT coupling (``x_fourier = -1``, auto; 0, x alone, otherwise):
:class:`~gctm_mini.networks.RandomFourierFeatures`, 32 frequencies. Paired against x alone
over five training seeds × 10 draws (``benchmarks/one_jump.py``, variant ``defaults``), W2 at
NFE 1 fell on moons (−0.010 to −0.016 per seed) and checkerboard (−0.002 to −0.007),
8 gaussians moved −0.003 to +0.010, at the same time per step. See docs/benchmarks/peers.md."""
N_CAP = 16
"""The N curriculum's cap where ``n_cap`` is not set otherwise (all but 2D GCTM from noise with OT)."""


@dataclass
class MethodFields:
    """The knobs every method reads (mixed into the run configs); each field's meaning and
    valid range are declared with it (:func:`~gctm_mini.validation.knob`)."""

    method: str = knob("fm", "training method", choices=METHODS, what="method")
    steps: int = knob(0, "training steps (2D runs: 0 = the method's default)", ge=0)
    fm_times: str = knob(
        "uniform", "how FM times t are drawn", choices=FM_TIME_SAMPLERS, what="FM time sampler"
    )
    fm_source_prob: float = knob(
        0.0, "share of FM times set exactly to t = 1, the source", ge=0.0, le=1.0
    )
    lam: float = knob(1.0, "λ of GCTM: loss = λ·consistency + FM", ge=0.0)
    weighted: bool = knob(True, "GCTM: divide the consistency error by c_out(t)(1 − s/t)")
    n_start: int = knob(4, "N curriculum: grid intervals at step 0", ge=1)
    n_cap: int = knob(N_CAP, "N curriculum: largest number of grid intervals (≥ n_start)", ge=1)
    n_double_every: int = knob(
        0, "N curriculum: steps between doublings of N (0 = auto: reach n_cap at the end)", ge=0
    )
    cd_n: int = knob(16, "CD: fixed number of grid intervals", ge=1)
    target_decay: float = knob(0.95, "CD: EMA decay of the target network", ge=0.0, lt=1.0)
    sigma_max: float = knob(
        80.0, "σ_max: t = 1 clamped to σ = t/(1 − t) = σ_max (> σ_min)", gt=SIGMA_MIN
    )
    grid_jitter: bool = knob(True, "shift the grid's interior nodes randomly every step")
    t_snap: str = knob(
        "auto",
        "GCTM: snap the drawn t to the nearest grid node or one node up (timegrid.draw_tsu); "
        "auto = up for 2D translation, nearest otherwise",
        choices=("auto", *T_SNAPS),
        what="t snap",
    )
    jump_prob: float = knob(
        0.0, "GCTM: share of samples trained on the one-jump map, (t, s) = (1, 0)", ge=0.0, le=1.0
    )
    jump_u: str = knob(
        "uniform",
        "GCTM: u of the one-jump samples, uniform on the grid below 1 or zero (distil the EMA "
        "solve 1 → 0)",
        choices=JUMP_US,
        what="jump_u",
    )
    ema_solver: str = knob(
        "heun",
        "GCTM: ODE method of the EMA solve t → u (Heun as in the paper; Euler: half the calls)",
        choices=ODE_METHODS,
        what="ema_solver (ODE method)",
    )

    def check_method_fields(self) -> None:
        """Raise ``ValueError`` for any field outside its declared range (an unknown method, a
        decay ≥ 1, NaN, …) and for inconsistent method knobs; resolve ``t_snap="auto"``
        (:meth:`auto_t_snap`)."""
        check_fields(self)
        if self.t_snap == "auto":
            self.t_snap = self.auto_t_snap()
        if self.n_cap < self.n_start:
            raise ValueError(
                f"n_cap must be ≥ n_start; got n_start={self.n_start}, n_cap={self.n_cap}"
            )
        teacher = getattr(self, "teacher", "")
        if teacher and self.method not in NEEDS_TEACHER:
            raise ValueError(
                f"teacher is used only by {', '.join(NEEDS_TEACHER)}; got teacher={teacher!r} "
                f"with method {self.method!r}"
            )

    def auto_t_snap(self) -> str:
        """The measured better :func:`~gctm_mini.timegrid.draw_tsu` snap for this config
        (``benchmarks/t_snap.py``, one-jump quality over seeds): ``"up"`` when a 2D config
        translates from a second data set (``source`` other than ``"gaussian"``),
        ``"nearest"`` otherwise. See :func:`~gctm_mini.timegrid.draw_tsu` for the numbers."""
        return "up" if getattr(self, "source", "gaussian") != "gaussian" else "nearest"


def double_every(cfg) -> int:
    """Curriculum period K: ``cfg.n_double_every``, or (0 = auto) so that N reaches ``n_cap``
    in the last of ``log2(n_cap / n_start) + 1`` equal phases of the run."""
    if cfg.n_double_every > 0:
        return cfg.n_double_every
    phases = int(round(math.log2(max(1, cfg.n_cap // cfg.n_start)))) + 1
    return max(1, cfg.steps // phases)


class TrainingMethod:
    """Loss and per-step state of one method (see the module table)."""

    def __init__(self, cfg, model: FlowMapModel, teacher: FlowMapModel | None = None) -> None:
        if cfg.method not in METHODS:
            raise ValueError(f"unknown method {cfg.method!r}; choose one of: {', '.join(METHODS)}")
        if cfg.method in NEEDS_TEACHER and teacher is None:
            raise ValueError(f"method {cfg.method!r} needs a trained FM teacher")
        if (cfg.method == "bcm") != model.bidirectional:
            raise ValueError("bcm needs a bidirectional model and other methods a forward one")
        self.cfg = cfg
        self.teacher = teacher.eval().requires_grad_(False) if teacher is not None else None
        self.target = EMA(model, cfg.target_decay) if cfg.method == "cd" else None
        self._grids: dict[int, Tensor] = {}

    def n_intervals(self, step: int) -> int:
        """N, the number of grid intervals at ``step`` (fixed for CD, doubling otherwise)."""
        if self.cfg.method == "cd":
            return self.cfg.cd_n
        return curriculum_N(step, self.cfg.n_start, double_every(self.cfg), self.cfg.n_cap)

    def grid(self, step: int, rng: Draws | None = None) -> Tensor:
        """The EDM grid in t with N intervals, ascending from 0 to 1, ``(N + 1,)``.

        With ``grid_jitter`` the interior nodes are shifted by a fresh δ ~ U(0, 1) of an
        interval each call (:func:`~gctm_mini.timegrid.fine_grid`), so that over training
        every t, s, u in (0, 1) is visited, not only the nodes of one fixed grid.
        """
        N = self.n_intervals(step)
        if self.cfg.grid_jitter:
            shift = (rng or Draws()).uniform()
            return fine_grid(N, sigma_max=self.cfg.sigma_max, dtype=torch.float32, shift=shift)
        if N not in self._grids:
            self._grids[N] = fine_grid(N, sigma_max=self.cfg.sigma_max, dtype=torch.float32)
        return self._grids[N]

    def loss(
        self,
        model: FlowMapModel,
        ema: FlowMapModel,
        x0: Tensor,
        x1: Tensor,
        step: int,
        rng: Draws | None = None,
    ) -> tuple[Tensor, dict]:
        """The method's loss on one coupled batch; ``rng`` supplies every random draw."""
        cfg, m = self.cfg, self.cfg.method
        rng = rng or Draws()
        if m == "fm":
            t = sample_fm_times(x0.shape[0], cfg.fm_times, x0.device, rng, cfg.fm_source_prob)
            with rng.dropout(model):
                loss = fm_loss(model, x0, x1, t)
            return loss, {"fm": loss.item()}
        grid = self.grid(step, rng).to(x0.device)
        if m == "gctm":
            return gctm_loss(
                model,
                ema,
                x0,
                x1,
                grid,
                lam=cfg.lam,
                fm_times=cfg.fm_times,
                weighted=cfg.weighted,
                fm_source_prob=cfg.fm_source_prob,
                t_snap=cfg.t_snap,
                jump_prob=cfg.jump_prob,
                jump_u=cfg.jump_u,
                solver=cfg.ema_solver,
                rng=rng,
            )
        if m == "ct":
            return ct_loss(model, x0, x1, grid, cfg.sigma_max, rng=rng)
        if m == "bcm":
            return bcm_loss(model, x0, x1, grid, cfg.sigma_max, rng=rng)
        if m == "cd":
            return cd_loss(model, self.target.model, self.teacher, x0, x1, grid, rng=rng)
        return ctm_loss(
            model,
            ema,
            self.teacher,
            x0,
            x1,
            grid,
            fm_times=cfg.fm_times,
            fm_source_prob=cfg.fm_source_prob,
            rng=rng,
        )

    def after_step(self, model: FlowMapModel) -> None:
        if self.target is not None:
            self.target.update(model)

    def state_dict(self) -> dict:
        return {"target": self.target.state_dict()} if self.target is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.target is not None:
            self.target.load_state_dict(state["target"])
