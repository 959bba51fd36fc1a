r"""Image restoration: supervised (a GCTM trained on pairs) and zero-shot (an unconditional
GCTM plus the measurement), with a DPS-style baseline on the learned velocity ODE.

**Supervised** (GCTM paper): train with the paired coupling X1 = H(X0) (``--config sr2_cpu``
etc.) and restore in one jump, :math:`\hat x_0 = G_\theta(y, 1, 0)` (:func:`restore_supervised`).

What that one jump aims at: with ε = 0 and a linear H, for t < 1 the interpolant
:math:`x_t = ((1 - t)I + tH)X_0` determines :math:`X_0`, so the exact trajectory from
:math:`x_1 = y` leaves along :math:`v(y, 1) = y - E[X_0 \mid X_1 = y]` and stays on the straight
line to :math:`E[X_0 \mid X_1 = y]`. The exact one-jump map is the conditional mean — PSNR can
at best match a regression — and the velocity for t < 1 is the ill-conditioned inverse
:math:`(H - I)((1 - t)I + tH)^{-1}x_t`, hard to learn (consistent with the paper's remark that
translation without the ε perturbation is unstable).

The same discontinuity means the start of every trajectory, :math:`v(y, 1) = y - E[X_0 \mid
X_1 = y]`, is *not* the limit of the velocity as t → 1: a continuous FM time law such as
Beta(3, 1) never trains it, and the one jump from y is then learned only by extrapolation in t.
The SR and deblurring configs therefore put 10 % of the FM times exactly on t = 1
(``fm_source_prob``, :func:`~gctm_mini.losses.sample_fm_times`).

**Zero-shot GCTM** (:func:`zero_shot_restore`). The exact algorithm of the GCTM paper (its
Alg. 4) is not public; this is the form used here. With an unconditional model, a
measurement :math:`y = H(X_0)` and times :math:`t_\text{start} = t_0 > t_1 > \dots > t_K = 0`
(uniform; NFE = K):

.. math::
    \hat x_0 &= G_\theta(x_{t_i}, t_i, 0) &&\text{(one-jump estimate, 1 NFE)}\\
    \tilde x_0 &= \Pi_y(\hat x_0) &&\text{(measurement consistency)}\\
    \hat\varepsilon &= (x_{t_i} - (1 - t_i)\hat x_0) / t_i &&\text{(the source the jump implies)}\\
    x_{t_{i+1}} &= (1 - t_{i+1})\,\tilde x_0 + t_{i+1}\big(\sqrt{1-\eta^2}\,\hat\varepsilon + \eta z\big),

and the answer is :math:`\Pi_y(\hat x_0)` after the last jump. :math:`\Pi_y` copies the observed
pixels for inpainting and takes Landweber steps :math:`x \leftarrow x + H^\top(y - Hx)` for the
linear operators (SR, deblur); the last step iterates it to convergence on the
measurement. η = 0 keeps the source of the trajectory (deterministic); η > 0 injects fresh
noise.

*Where the trajectory starts.* With :math:`t_\text{start} = 1` the start is pure source noise
(the model must invent everything; right when H hides whole regions, as in inpainting). With
:math:`t_\text{start} < 1` it is the interpolant of the network-free estimate,
:math:`x_{t_0} = (1 - t_0)\,\Pi_y^\infty(y) + t_0 z` (back-projection; "come closer, diffuse
faster", Chung et al. 2022): when H keeps most of the image, only a short stretch of the
trajectory is left to travel, and :math:`t_0` should match the error of that estimate.
:func:`choose_start_time` picks :math:`t_0` on validation images (never on the test set).

*A sample or the mean.* The answer is one posterior sample. ``draws = D`` averages D
trajectories from independent starts, an estimate of :math:`E[X_0 \mid y]` at D·K network
evaluations; PSNR rewards the mean (exact samples lose :math:`10\log_{10}2` dB to it).

**DPS-style baseline** (:func:`dps_ode`, same NFE; start and ζ from :func:`choose_dps_settings`): Euler steps of the learned velocity with
the diffusion-posterior-sampling correction
:math:`x \leftarrow x + h\,v_\theta(x, t) - \zeta\,\nabla_x\|y - H(\hat x_0(x))\|` where
:math:`\hat x_0(x) = x - t\,v_\theta(x, t)`, as in Chung et al. (2023) for this interpolant.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .degradations import Degradation
from .parameterization import FlowMapModel
from .randomness import noise_like
from .timegrid import uniform_grid
from .validation import MAX_SIZE, check_count, check_real

START_TIMES = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
"""Candidate start times t₀ for :func:`choose_start_time`."""


@torch.no_grad()
def restore_supervised(
    model: FlowMapModel,
    y_input: Tensor,
    nfe: int = 1,
    eps: float = 0.0,
    generator: torch.Generator | None = None,
    consistency: Degradation | None = None,
    iters: int = 50,
) -> Tensor:
    """One-jump (or ``nfe``-jump) restoration by a GCTM trained on pairs (X0, H(X0)).

    ``y_input`` is the degraded image as the model saw it in training (for inpainting, with the
    noise-filled hole); ``eps`` the source perturbation it was trained with.

    With ``consistency`` (the degradation H), the answer is also made consistent with the
    measurement — :math:`\\Pi_y(G_\\theta(y, 1, 0))` with ``iters`` Landweber steps (the
    projection of :func:`zero_shot_restore`; no extra network evaluation). The network supplies
    what H removed, the projection restores what H kept exactly.
    """
    from .sampling import sample_multistep

    check_count(nfe, "nfe", maximum=MAX_SIZE)
    check_count(iters, "iters", 0, MAX_SIZE)
    eps = check_real(eps, "eps", ge=0.0)
    _check_measurement(model, y_input, consistency, "y_input")
    x1 = y_input
    if eps > 0:
        x1 = x1 + eps * noise_like(x1, generator)
    x0_hat = sample_multistep(model, x1, nfe)
    if consistency is None:
        return x0_hat
    y = y_input * consistency.mask(y_input) if consistency.masked else y_input
    return consistency.project(x0_hat, y, iters=iters)


def trajectory_start(
    op: Degradation,
    y: Tensor,
    t_start: float,
    generator: torch.Generator | None = None,
    draws: int = 1,
) -> Tensor:
    r""":math:`x_{t_0}` for zero-shot restoration: pure source noise at ``t_start = 1``, else
    :math:`(1 - t_0)\,\Pi^\infty_y(y) + t_0 z` with the back-projected measurement
    (:meth:`~gctm_mini.degradations.Degradation.back_project`). With ``draws = D``, D starts
    per measurement, ``(D·B, C, H, W)`` (draw-major): the back-projection once, fresh z each."""
    t_start = _check_t_start(t_start)
    check_count(draws, "draws", maximum=MAX_SIZE)
    _check_op(op)
    op.check(y, "y")
    rep = (draws, *[1] * (y.dim() - 1))
    z = noise_like(y.repeat(rep), generator)
    if t_start == 1.0:
        return z
    return (1 - t_start) * op.back_project(y).repeat(rep) + t_start * z


@torch.no_grad()
def zero_shot_restore(
    model: FlowMapModel,
    y: Tensor,
    op: Degradation,
    nfe: int = 4,
    eta: float = 0.0,
    final_iters: int = 50,
    generator: torch.Generator | None = None,
    t_start: float = 1.0,
    draws: int = 1,
) -> Tensor:
    r"""Zero-shot restoration with an unconditional flow-map model (module docstring).

    Args:
        model: unconditional model (noise → images), e.g. trained with ``--config patches_cpu``.
        y: the measurement ``H(x0)`` (for inpainting: the masked image), ``(B, C, H, W)``.
        op: the degradation (:class:`~gctm_mini.degradations.Degradation`).
        nfe: number of jumps K ≥ 1; ``eta``: fresh-noise fraction, in [0, 1] — the
            re-noised source :math:`\sqrt{1-\eta^2}\,\hat\varepsilon + \eta z` keeps unit
            variance only there (η > 1 would need the square root of a negative number);
            ``final_iters``: projection iterations after the last jump (≥ 0); ``t_start``:
            where the trajectory starts, in (0, 1] (:func:`trajectory_start`); ``draws``: the
            number of independent trajectories (different start noise z) per measurement.

    With ``draws = 1`` the answer is one posterior *sample* (a sharp digit). With
    ``draws = D`` it is the mean of D such samples, a Monte-Carlo estimate of the posterior
    mean :math:`E[X_0 \mid y]`, the estimate with the least expected squared error (higher
    PSNR, blurrier image); it costs ``nfe × draws`` network evaluations per image, run as one
    batch of ``D·B`` images. The final projection is applied once, to the mean: Π_y is affine,
    so that equals the mean of the D projected samples.

    ``y`` must be a finite batch with the model's sample shape that ``op`` accepts.
    """
    check_count(draws, "draws", maximum=MAX_SIZE)
    check_count(nfe, "nfe", maximum=MAX_SIZE)
    check_count(final_iters, "final_iters", 0, MAX_SIZE)
    eta = check_real(eta, "eta (the fresh-noise fraction)", ge=0.0, le=1.0)
    t_start = _check_t_start(t_start)
    _check_op(op)
    _check_measurement(model, y, op, "y")
    times = uniform_grid(nfe, t_start, dtype=y.dtype).to(y.device)
    x = trajectory_start(op, y, t_start, generator, draws)  # D starts in one batch
    y_all = y.repeat(draws, *[1] * (y.dim() - 1))
    x0_hat = x
    for i in range(nfe):
        t, tn = float(times[i]), float(times[i + 1])
        x0_hat = model.G(x, t, 0.0)
        if tn == 0.0:
            break
        eps_hat = (x - (1 - t) * x0_hat) / t
        if eta > 0:
            z = noise_like(y_all, generator)
            eps_hat = (1 - eta**2) ** 0.5 * eps_hat + eta * z
        x = (1 - tn) * op.project(x0_hat, y_all) + tn * eps_hat
    # Π_y is affine: the projection of the mean is the mean of the projections
    return op.project(x0_hat.view(draws, *y.shape).mean(0), y, iters=final_iters)


def dps_ode(
    model: FlowMapModel,
    y: Tensor,
    op: Degradation,
    nfe: int = 4,
    zeta: float = 1.0,
    generator: torch.Generator | None = None,
    t_start: float = 1.0,
) -> Tensor:
    r"""DPS-style baseline: Euler on the learned velocity with a measurement-gradient step.

    ``zeta`` scales the gradient of :math:`\|y - H(\hat x_0(x))\|` (per image). Each step
    costs one network evaluation plus its backward pass. ``t_start`` as in
    :func:`zero_shot_restore`; ``nfe`` ≥ 1; ``zeta`` finite and ≥ 0.
    """
    check_count(nfe, "nfe", maximum=MAX_SIZE)
    zeta = check_real(zeta, "zeta", ge=0.0)
    t_start = _check_t_start(t_start)
    _check_op(op)
    _check_measurement(model, y, op, "y")
    times = uniform_grid(nfe, t_start, dtype=y.dtype).to(y.device)
    x = trajectory_start(op, y, t_start, generator)
    for i in range(nfe):
        t, tn = float(times[i]), float(times[i + 1])
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            v = model.velocity(x, t)
            x0_hat = x - t * v
            resid = (y - op.clean(x0_hat)).flatten(1).norm(dim=1)
            (grad,) = torch.autograd.grad(resid.sum(), x)
        with torch.no_grad():
            x = x + (tn - t) * v - zeta * grad
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"the DPS iterate is not finite (zeta = {zeta:g} too large?)")
    return x.detach()


def choose_start_time(
    restore: Callable[[float], Tensor],
    target: Tensor,
    candidates: Sequence[float] = START_TIMES,
) -> tuple[float, dict[float, float]]:
    """The start time with the best PSNR on **validation** images, and every candidate's PSNR.

    ``restore(t_start)`` restores the validation measurements, ``target`` is their truth
    (e.g. ``lambda t0: zero_shot_restore(model, y_val, op, nfe=1, t_start=t0)``).
    """
    from .evaluation import psnr_ssim

    if not candidates:
        raise ValueError("need at least one candidate start time")
    for t0 in candidates:
        _check_t_start(t0)
    scores = {float(t0): psnr_ssim(restore(float(t0)), target)[0] for t0 in candidates}
    return max(scores, key=scores.get), scores


def choose_dps_settings(
    model: FlowMapModel,
    y_val: Tensor,
    op: Degradation,
    target: Tensor,
    nfe: int,
    zetas: Sequence[float],
    start_times: Sequence[float] = START_TIMES,
    seed: int = 0,
) -> tuple[float, float]:
    """The (t₀, ζ) pair of :func:`dps_ode` with the best PSNR on **validation** images.

    Both are chosen together, over ``start_times × zetas`` (a ζ that diverges from any start is
    skipped), so the baseline gets its own best start rather than the zero-shot method's.
    ``y_val`` are the validation measurements (on the model's device), ``target`` their truth.
    """
    best: tuple[float, float, float] | None = None
    for zeta in zetas:

        def restore(t0: float, zeta: float = zeta) -> Tensor:
            g = torch.Generator().manual_seed(seed)
            return dps_ode(model, y_val, op, nfe=nfe, zeta=zeta, t_start=t0, generator=g).cpu()

        try:
            t0, scores = choose_start_time(restore, target, start_times)
        except ValueError:  # this ζ diverges from some start
            continue
        if best is None or scores[t0] > best[0]:
            best = (scores[t0], t0, float(zeta))
    if best is None:
        raise ValueError(f"every DPS step size in {tuple(zetas)} diverged on the validation images")
    return best[1], best[2]


def restoration_table(
    restored: dict[str, Tensor], target: Tensor
) -> dict[str, tuple[float, float]]:
    """PSNR/SSIM of each named restoration against ``target`` (scikit-image, data range 2)."""
    from .evaluation import psnr_ssim

    return {name: psnr_ssim(x, target) for name, x in restored.items()}


def _check_t_start(t_start: float) -> float:
    return check_real(t_start, "t_start", gt=0.0, le=1.0)


def _check_op(op) -> None:
    if not isinstance(op, Degradation):
        raise TypeError(f"op must be a Degradation (e.g. Degradation('sr2')); got {op!r}")


def _check_measurement(model: FlowMapModel, y: Tensor, op: Degradation | None, name: str) -> None:
    """``y`` is a measurement the operator accepts, shaped like the model's samples."""
    if op is not None:
        _check_op(op)
        op.check(y, name)
    shape = tuple(getattr(model, "data_shape", ()) or ())
    if shape and torch.is_tensor(y) and tuple(y.shape[1:]) != shape:
        raise ValueError(
            f"{name} must have the model's sample shape (B, {', '.join(map(str, shape))}); "
            f"got {tuple(y.shape)}"
        )
    if isinstance(model, FlowMapModel):
        model.prepare(y, name)
