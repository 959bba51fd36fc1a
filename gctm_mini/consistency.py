r"""Consistency-family losses: CD, CT (iCT), CTM, GCTM and BCM (docs/conventions.md §3–§4).

All losses act on a coupled batch ``(x0, x1)`` of shape ``(B, *D)`` and return
``(loss, logs)``; every per-sample quantity (times, ODE solves, targets) is a tensor op over
the batch. Shared pieces:

* distance — per-sample pseudo-Huber :math:`d(\Delta) = \sqrt{\|\Delta\|^2 + c^2} - c`,
  :math:`c = 0.00054\sqrt{d}` (d = numel of one sample); with a weight w the residual is
  normalized first, :math:`d(\Delta / w)`, which for a scalar w equals the reference form
  :math:`(\sqrt{\|\Delta\|^2 + (cw)^2} - cw) / w`.
* stop-gradient targets use the **current** weights under ``torch.no_grad`` and the **same
  dropout masks** as the student pass: both run under one seed of the step's
  :class:`~gctm_mini.randomness.Draws` (:meth:`~gctm_mini.randomness.Draws.dropout`), and
  every other pass in training mode (the FM term, CTM's and BCM's extra jumps) under its own
  seed of the same step, so each sample's masks are those of the global batch however it is
  split over processes and micro-batches.
* "map to time 0 with frozen weights" (CTM, BCM) lets the gradient flow through the input
  but not into the parameters (:func:`frozen`).

Method summary (t > u ≥ s are times on a coarse EDM grid; X0 data, X1 source):

=====  =====================================  ==============================  ==============
name   student                                target                           ODE teacher
=====  =====================================  ==============================  ==============
CD     G_θ(x_{t_{n+1}}, t_{n+1}, 0)            G_θ⁻(x̂_{t_n}, t_n, 0) (train)     FM model, 1 Heun step
CT     G_θ(x_{t_{n+1}}, t_{n+1}, 0)            sg G_θ(x_{t_n}, t_n, 0), same X1  none
CTM    G_sg(G_θ(x_t, t, s), s, 0)              G_sg(G_ema(x_u, u, s), s, 0)      FM model, Heun t → u
GCTM   G_θ(x_t, t, s)                          sg G_θ(x_u, u, s)                 own EMA velocity, Heun t → u
BCM    G_θ(x_{t_{n+1}}, t_{n+1}, 0) and        sg G_θ(x_{t_n}, t_n, 0)           none
       G_sg(G_θ(x_{t_{n+1}}, t_{n+1}, τ), τ, 0)  (τ on either side of t_{n+1})
=====  =====================================  ==============================  ==============

CTM, GCTM add the FM loss (DSM) to keep the velocity; GCTM's total is
:math:`\lambda L_\text{GCTM} + L_\text{FM}`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from .interpolant import SIGMA_MAX
from .losses import check_loss_inputs, fm_loss, sample_fm_times
from .parameterization import FlowMapModel
from .randomness import Draws
from .solvers import METHODS
from .solvers import _integrate_per_sample as integrate_per_sample  # unchecked: a diverged

# model must reach the training loop's divergence check as a non-finite loss, not an error
from .timegrid import check_grid, draw_tsu
from .validation import broadcast_time, check_choice, check_real

# The losses solve the ODE with the unchecked solver: a diverged network must reach the
# training loop's divergence check as a non-finite loss, not as an error from the solver.

JUMP_US = ("uniform", "zero")
"""Where the one-jump samples of :func:`gctm_loss` put u (``jump_u``)."""
HUBER_SCALE = 0.00054


def huber_c(x: Tensor) -> float:
    r""":math:`c = 0.00054\sqrt{d}` for samples like ``x: (B, *D)``."""
    return HUBER_SCALE * math.sqrt(x[0].numel())


def pseudo_huber(delta: Tensor, c: float, weight: Tensor | None = None) -> Tensor:
    r"""Per-sample pseudo-Huber distance :math:`\sqrt{\|\Delta/w\|^2 + c^2} - c`, shape ``(B,)``.

    The norm runs over *all* coordinates of a sample (not element-wise). ``weight`` broadcasts
    to ``delta`` (a per-sample scalar or a per-coordinate scale) and is positive; ``c`` ≥ 0.
    The values are not checked (that would cost a synchronization per call): a NaN/inf in
    ``delta`` — a diverged network — passes through to the loss, where the training loops
    detect it, and so does the overflow of residuals beyond :math:`\sqrt{\text{finfo.max}}`
    (1.8e19 in float32), which valid inputs (:func:`~gctm_mini.losses.check_loss_inputs`)
    stay far below.
    """
    c = check_real(c, "c", ge=0.0, le=1e18)  # c² must stay finite in float32
    if not torch.is_tensor(delta) or delta.dim() < 2 or not delta.is_floating_point():
        got = (
            f"{tuple(delta.shape)} {delta.dtype}"
            if torch.is_tensor(delta)
            else type(delta).__name__
        )
        raise ValueError(f"delta must be a floating batch (B, *D); got {got}")
    if weight is not None:
        bad = not torch.is_tensor(weight) or not weight.is_floating_point()
        if bad or not _broadcasts(weight.shape, delta.shape):
            got = tuple(weight.shape) if torch.is_tensor(weight) else type(weight).__name__
            raise ValueError(
                f"weight must broadcast to delta's shape {tuple(delta.shape)}; got {got}"
            )
        delta = delta / weight
    return (delta.flatten(1).pow(2).sum(1) + c * c).sqrt() - c


def _broadcasts(shape: torch.Size, target: torch.Size) -> bool:
    try:
        return torch.broadcast_shapes(shape, target) == target
    except RuntimeError:
        return False


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Temporarily stop gradients into ``model``'s parameters (gradients still flow through inputs)."""
    flags = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    try:
        yield model
    finally:
        for p, f in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(f)


@contextlib.contextmanager
def train_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Temporarily put ``model`` in training mode (dropout on); its mode is restored after."""
    was = model.training
    model.train()
    try:
        yield model
    finally:
        model.train(was)


def _xt(x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
    tb = broadcast_time(t, x0)
    return (1 - tb) * x0 + tb * x1


def _gctm_weight(model: FlowMapModel, t: Tensor, s: Tensor, like: Tensor) -> Tensor:
    """:math:`w = c_\\text{out}(t)(1 - s/t)`, broadcast to ``like`` (t > 0 here)."""
    c_out = model.coefficients(t, like)["c_out"]
    return c_out * broadcast_time(1 - s / t, like)


def gctm_loss(
    model: FlowMapModel,
    ema: FlowMapModel,
    x0: Tensor,
    x1: Tensor,
    grid: Tensor,
    *,
    lam: float = 1.0,
    fm_times: str = "lognormal",
    weighted: bool = True,
    solver: str = "heun",
    fm_source_prob: float = 0.0,
    t_snap: str = "nearest",
    jump_prob: float = 0.0,
    jump_u: str = "uniform",
    rng: Draws | None = None,
) -> tuple[Tensor, dict]:
    r"""GCTM: teacher-free trajectory consistency plus FM (docs/conventions.md §3–§4).

    1. draw per-sample grid indices t > u ≥ s (:func:`~gctm_mini.timegrid.draw_tsu`); with
       probability ``jump_prob`` a sample instead trains the one-jump map: t = 1, s = 0 and
       u uniform on the grid below 1;
    2. :math:`x_t = (1-t)X_0 + tX_1`; :math:`x_u` = Heun from t to u along ``grid`` with the
       **EMA** velocity (no grad; Euler on a step landing at 0);
    3. target :math:`\mathrm{sg}\,G_\theta(x_u, u, s)` (current weights, same dropout as the
       student), student :math:`G_\theta(x_t, t, s)`;
    4. :math:`L = \lambda\, E\,d\big((G_\theta(x_t,t,s) - \text{target}) / w\big) + L_\text{FM}`,
       :math:`w = c_\text{out}(t)(1 - s/t)` if ``weighted``.

    Args:
        grid: coarse grid ``(N + 1,)`` ascending from 0 to 1 (the curriculum's current N).
        fm_source_prob: probability of an FM time exactly at the source, t = 1
            (:func:`~gctm_mini.losses.sample_fm_times`).
        t_snap: how t is snapped to the grid (:func:`~gctm_mini.timegrid.draw_tsu`).
        jump_prob: share of samples with (t, s) = (1, 0). The (t, s, u) draw alone almost
            never pairs t = 1 with s = 0 (under 0.1 % of samples for N ≥ 8), yet one-step
            generation evaluates exactly :math:`G_\theta(X_1, 1, 0)`; the reference code has
            no such share.
        jump_u: u of the one-jump samples: ``"uniform"`` on the grid below 1, or ``"zero"``
            (u = 0: the target is the EMA solve from 1 all the way to 0, plain distillation of
            the EMA flow, since :math:`G_\theta(x, 0, 0) = x`).
        rng: the step's :class:`~gctm_mini.randomness.Draws` (default: torch's global RNG).
    """
    x0, x1, _, grid = check_loss_inputs(model, x0, x1, grid=grid, models=(ema,))
    check_choice(solver, METHODS, "ODE method")
    check_choice(jump_u, JUMP_US, "jump_u")
    lam = check_real(lam, "lam", ge=0.0)
    rng = rng or Draws()
    B = x0.shape[0]
    g = grid.to(x0)
    t_idx, s_idx, u_idx = draw_tsu(grid.to(x0.device), B, rng, t_snap)
    if jump_prob > 0:
        N = grid.shape[0] - 1
        jump = rng.rand(B).to(x0.device) < jump_prob
        u_jump = (rng.rand(B).to(x0.device) * N).long().clamp(max=N - 1)
        if jump_u == "zero":
            u_jump = torch.zeros_like(u_jump)
        t_idx = torch.where(jump, torch.full_like(t_idx, N), t_idx)
        s_idx = torch.where(jump, torch.zeros_like(s_idx), s_idx)
        u_idx = torch.where(jump, u_jump, u_idx)
    t, s, u = g[t_idx], g[s_idx], g[u_idx]
    xt = _xt(x0, x1, t)
    with torch.no_grad():
        xu = integrate_per_sample(ema._velocity, xt, g, t_idx, u_idx, solver)
    seed = rng.seed()
    with rng.dropout(model, seed), torch.no_grad():
        target = model._G(xu, u, s)
    with rng.dropout(model, seed):
        student = model._G(xt, t, s)
    w = _gctm_weight(model, t, s, x0) if weighted else None
    l_cons = pseudo_huber(student - target, huber_c(x0), w).mean()
    t_fm = sample_fm_times(B, fm_times, x0.device, rng, fm_source_prob)
    with rng.dropout(model, seed + 1):
        l_fm = fm_loss(model, x0, x1, t_fm)
    return lam * l_cons + l_fm, {"consistency": l_cons.item(), "fm": l_fm.item()}


def ict_index_probs(grid: Tensor, p_mean: float = -1.1, p_std: float = 2.0) -> Tensor:
    r"""iCT's discretized log-normal over intervals n = 0…N−1 of ``grid``:
    :math:`p(n) \propto \mathrm{erf}\big(\tfrac{\log\sigma_{n+1} - P_\text{mean}}{\sqrt2 P_\text{std}}\big)
    - \mathrm{erf}\big(\tfrac{\log\sigma_n - P_\text{mean}}{\sqrt2 P_\text{std}}\big)`, σ clamped to
    [σ_min-ish, σ_max]."""
    check_grid(grid)
    p_mean = check_real(p_mean, "p_mean")
    p_std = check_real(p_std, "p_std", gt=0.0)
    sig = _sigma(grid.double())
    logs = torch.log(sig.clamp_min(1e-12))
    cdf = torch.erf((logs - p_mean) / (math.sqrt(2) * p_std))
    p = (cdf[1:] - cdf[:-1]).clamp_min(0)
    if not float(p.sum()) > 0:
        raise ValueError(
            f"the log-normal (p_mean = {p_mean:g}, p_std = {p_std:g}) puts no mass on the grid's "
            "intervals"
        )
    return (p / p.sum()).float()


def _sigma(t: Tensor, sigma_max: float = SIGMA_MAX) -> Tensor:
    """σ = t / (1 − t), with t = 1 mapped to ``sigma_max`` (the grid's clamp)."""
    return torch.where(t >= 1, torch.full_like(t, sigma_max), t / (1 - t).clamp_min(1e-12))


def ct_loss(
    model: FlowMapModel,
    x0: Tensor,
    x1: Tensor,
    grid: Tensor,
    sigma_max: float = SIGMA_MAX,
    rng: Draws | None = None,
) -> tuple[Tensor, dict]:
    r"""Consistency training, iCT flavour (Song & Dhariwal 2024), in this project's time.

    For interval n ~ iCT's log-normal, with the **same** X1 on both sides:
    :math:`x_{t_{n+1}}` and :math:`x_{t_n}` from the interpolant; student
    :math:`G_\theta(x_{t_{n+1}}, t_{n+1}, 0)`, target :math:`\mathrm{sg}\,G_\theta(x_{t_n}, t_n, 0)`
    (current weights, same dropout; no EMA target); pseudo-Huber weighted by
    :math:`\lambda_n = 1/(\sigma_{n+1} - \sigma_n)` (σ at t = 1 clamped to σ_max).
    """
    x0, x1, _, grid = check_loss_inputs(model, x0, x1, grid=grid)
    sigma_max = check_real(sigma_max, "sigma_max", gt=0.0)
    rng = rng or Draws()
    B = x0.shape[0]
    g = grid.to(x0)
    n = rng.categorical(ict_index_probs(grid), B).to(x0.device)
    t_hi, t_lo = g[n + 1], g[n]
    seed = rng.seed()
    with rng.dropout(model, seed), torch.no_grad():
        target = model._G(_xt(x0, x1, t_lo), t_lo, torch.zeros_like(t_lo))
    with rng.dropout(model, seed):
        student = model._G(_xt(x0, x1, t_hi), t_hi, torch.zeros_like(t_hi))
    lam = 1.0 / (_sigma(t_hi, sigma_max) - _sigma(t_lo, sigma_max))
    loss = (lam * pseudo_huber(student - target, huber_c(x0))).mean()
    return loss, {"consistency": loss.item()}


def cd_loss(
    model: FlowMapModel,
    target_model: FlowMapModel,
    teacher: FlowMapModel,
    x0: Tensor,
    x1: Tensor,
    grid: Tensor,
    rng: Draws | None = None,
) -> tuple[Tensor, dict]:
    r"""Consistency distillation (Song et al. 2023) from a flow-matching teacher.

    n uniform in {0…N−1}; :math:`x_{t_{n+1}}` from the interpolant; :math:`\hat x_{t_n}` = one
    Heun step of the **teacher's** velocity (Euler if :math:`t_n = 0`); student
    :math:`G_\theta(x_{t_{n+1}}, t_{n+1}, 0)`, target :math:`G_{\theta^-}(\hat x_{t_n}, t_n, 0)` with
    the EMA target network θ⁻; pseudo-Huber distance.

    The target network runs in **train mode with the student's dropout masks** (one seed for
    both passes), as in openai/consistency_models (its target model is put in train mode,
    and the RNG state taken before the student pass is restored before the target pass), so
    that student and target differ only by the weights and the teacher step, not by dropout.
    """
    x0, x1, _, grid = check_loss_inputs(model, x0, x1, grid=grid, models=(target_model, teacher))
    rng = rng or Draws()
    B = x0.shape[0]
    g = grid.to(x0)
    n = rng.randint(0, g.shape[0] - 1, B).to(x0.device)
    x_hi = _xt(x0, x1, g[n + 1])
    seed = rng.seed()
    with torch.no_grad():
        x_lo = integrate_per_sample(teacher._velocity, x_hi, g, n + 1, n, "heun")
        with train_mode(target_model), rng.dropout(target_model, seed):
            target = target_model._G(x_lo, g[n], torch.zeros_like(g[n]))
    with rng.dropout(model, seed):
        student = model._G(x_hi, g[n + 1], torch.zeros_like(g[n]))
    loss = pseudo_huber(student - target, huber_c(x0)).mean()
    return loss, {"consistency": loss.item()}


def ctm_loss(
    model: FlowMapModel,
    target_model: FlowMapModel,
    teacher: FlowMapModel,
    x0: Tensor,
    x1: Tensor,
    grid: Tensor,
    *,
    fm_times: str = "lognormal",
    fm_source_prob: float = 0.0,
    rng: Draws | None = None,
) -> tuple[Tensor, dict]:
    r"""CTM (Kim et al. 2024) without the GAN term: anytime-to-anytime jumps from a teacher.

    t-index uniform in {1…N}, s uniform in {0…t−1}, u uniform in {s…t−1};
    :math:`x_u` = Heun t → u with the **teacher's** velocity; target
    :math:`G_{\theta^-}(x_u, u, s)` with the EMA network θ⁻ (``target_model``); both sides
    mapped to time 0 by :math:`G_{\mathrm{sg}(\theta)}(\cdot, s, 0)` (the online weights,
    frozen: gradients flow through the student's input only; one dropout mask for both
    sides); pseudo-Huber; plus the FM/DSM loss with weight 1.

    Differences from the reference code (sony/ctm, ``karras_diffusion.py`` with its default
    ``ctm_estimate_outer_type="target_model_sg"``, ``ctm_target_inner_type="model_sg"``):

    * **network roles.** There the estimate's outer map to time 0 and the target's outer map
      use the EMA target network (μ = 0.999), and the target's inner jump the *online*
      network under stop-gradient. Here the roles are swapped: both outer maps use the
      online weights, the inner target jump the EMA copy. Both choices send the two sides
      through one and the same outer map, so they differ only through the inner jumps.
      Here θ⁻ is the run's sampling EMA (``ema_decay``, 0.99 in the 2D configs), not a
      separate slow target network; it lags the online weights by about 1/(1 − μ) steps,
      so as the shared outer map it would compare both sides through a map older than the
      one being trained, which matters in the short runs of this package. The inner target
      jump from the EMA copy is CD's target network (Song et al. 2023). The two role
      assignments have not been compared by measurement here.
    * **DSM weight.** The reference scales the DSM term adaptively, by
      :math:`\|\nabla_w L_\text{CTM}\| / \|\nabla_w L_\text{DSM}\|` at the network's last
      layer w (a second gradient per step, tied to one layer of its U-Nets). Here the
      weight is fixed to 1, as GCTM's reference weighs its FM term by a fixed λ: both terms
      are already scaled by the same preconditioning (``c_out``), the objective stays a fixed
      function of θ, and the loss works for any network without naming its last layer.
    """
    x0, x1, _, grid = check_loss_inputs(model, x0, x1, grid=grid, models=(target_model, teacher))
    rng = rng or Draws()
    B = x0.shape[0]
    g = grid.to(x0)
    N = g.shape[0] - 1
    dev = x0.device
    t_idx = rng.randint(1, N + 1, B).to(dev)
    s_idx = (rng.rand(B).to(dev) * t_idx).long()
    u_idx = s_idx + (rng.rand(B).to(dev) * (t_idx - s_idx)).long()
    t, s, u = g[t_idx], g[s_idx], g[u_idx]
    zero = torch.zeros_like(s)
    xt = _xt(x0, x1, t)
    with torch.no_grad():
        xu = integrate_per_sample(teacher._velocity, xt, g, t_idx, u_idx, "heun")
        seed = rng.seed()
        target = target_model._G(xu, u, s)
        with rng.dropout(model, seed):
            target0 = model._G(target, s, zero)
    with rng.dropout(model, seed + 1):
        student_s = model._G(xt, t, s)
    with frozen(model), rng.dropout(model, seed):
        student0 = model._G(student_s, s, zero)
    l_cons = pseudo_huber(student0 - target0, huber_c(x0)).mean()
    t_fm = sample_fm_times(B, fm_times, dev, rng, fm_source_prob)
    with rng.dropout(model, seed + 2):
        l_fm = fm_loss(model, x0, x1, t_fm)
    return l_cons + l_fm, {"consistency": l_cons.item(), "fm": l_fm.item()}


def bcm_tau_probs(probs: Tensor, n: Tensor) -> Tensor:
    r"""Per-sample probabilities of BCM's jump target τ = grid[j], ``(B, N)``.

    j runs over the grid points 0…N−1 with the iCT interval probabilities ``probs: (N,)``,
    except :math:`j = n + 1` (τ would equal the start time :math:`t_{n+1}`), for intervals
    ``n: (B,)``. For n = N − 1 the start is the grid's end point N, outside the support, so
    nothing is removed. Rows are not normalized (the sampler normalizes).
    """
    cols = torch.arange(probs.shape[0], device=probs.device)
    return torch.where(cols[None, :] == (n + 1)[:, None], torch.zeros_like(probs), probs)


def bcm_loss(
    model: FlowMapModel,
    x0: Tensor,
    x1: Tensor,
    grid: Tensor,
    sigma_max: float = SIGMA_MAX,
    rng: Draws | None = None,
) -> tuple[Tensor, dict]:
    r"""Bidirectional consistency (Li & He 2024), in this project's time convention.

    One network for both directions (``model.bidirectional``: :math:`G(x,t,s) = x + (s-t)\bar u_\theta`).
    Interval n is drawn as in iCT; with the same X1 on both sides the target is
    :math:`y = \mathrm{sg}\,G_\theta(x_{t_n}, t_n, 0)` (current weights), and

    * CT term: :math:`d\big(G_\theta(x_{t_{n+1}}, t_{n+1}, 0), y\big) / (\sigma_{n+1} - \sigma_n)`;
    * soft term: jump to a grid time :math:`\tau \ne t_{n+1}` drawn from the same iCT
      distribution — on either side of :math:`t_{n+1}` — and back to the data end through
      frozen weights (the gradient flows through the jump's output):
      :math:`d\big(G_{\mathrm{sg}(\theta)}(G_\theta(x_{t_{n+1}}, t_{n+1}, \tau), \tau, 0), y\big)
      / |\sigma(\tau) - \sigma_{n+1}|`.

    Loss = CT + soft, as in the BCM reference code (``BCM/cm/karras_diffusion.py``). Unlike
    that code, which fine-tunes an iCT model and never samples the last interval, we train
    from scratch and keep it, so the one-jump map from t = 1 is learned.
    """
    if not model.bidirectional:
        raise ValueError("BCM needs a bidirectional model (build it with bidirectional=True)")
    x0, x1, _, grid = check_loss_inputs(model, x0, x1, grid=grid)
    sigma_max = check_real(sigma_max, "sigma_max", gt=0.0)
    rng = rng or Draws()
    B = x0.shape[0]
    g = grid.to(x0)
    dev = x0.device
    probs = ict_index_probs(grid).to(dev)
    n = rng.categorical(probs, B).to(dev)
    j = rng.categorical_rows(bcm_tau_probs(probs, n)).to(dev)
    t_hi, t_lo, tau = g[n + 1], g[n], g[j]
    zero = torch.zeros_like(t_hi)
    x_hi = _xt(x0, x1, t_hi)
    seed = rng.seed()
    with rng.dropout(model, seed), torch.no_grad():
        y = model._G(_xt(x0, x1, t_lo), t_lo, zero)
    with rng.dropout(model, seed):
        direct = model._G(x_hi, t_hi, zero)
    with rng.dropout(model, seed + 1):
        jumped = model._G(x_hi, t_hi, tau)
    with frozen(model), rng.dropout(model, seed + 2):
        back = model._G(jumped, tau, zero)
    sig_hi = _sigma(t_hi, sigma_max)
    c = huber_c(x0)
    l_ct = (pseudo_huber(direct - y, c) / (sig_hi - _sigma(t_lo, sigma_max))).mean()
    l_soft = (pseudo_huber(back - y, c) / (_sigma(tau, sigma_max) - sig_hi).abs()).mean()
    return l_ct + l_soft, {"ct": l_ct.item(), "soft": l_soft.item()}
