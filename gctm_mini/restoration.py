r"""Image restoration: supervised (a GCTM trained on pairs) and zero-shot (an unconditional
GCTM plus the measurement), with a DPS-style baseline on the learned velocity ODE.

**Supervised** (GCTM paper): train with the paired coupling X1 = H(X0) (``--config sr2_cpu``
etc.) and restore in one jump, :math:`\hat x_0 = G_\theta(y, 1, 0)` (:func:`restore_supervised`).

**Zero-shot GCTM** (:func:`zero_shot_restore`). The exact algorithm of the GCTM paper (its
Alg. 4) is not public; this is the form used here. With an unconditional model, a
measurement :math:`y = H(X_0)` and times :math:`1 = t_0 > t_1 > \dots > t_K = 0` (NFE = K):

.. math::
    \hat x_0 &= G_\theta(x_{t_i}, t_i, 0) &&\text{(one-jump estimate, 1 NFE)}\\
    \tilde x_0 &= \Pi_y(\hat x_0) &&\text{(measurement consistency)}\\
    \hat\varepsilon &= (x_{t_i} - (1 - t_i)\hat x_0) / t_i &&\text{(the source the jump implies)}\\
    x_{t_{i+1}} &= (1 - t_{i+1})\,\tilde x_0 + t_{i+1}\big(\sqrt{1-\eta^2}\,\hat\varepsilon + \eta z\big),

and the answer is :math:`\Pi_y(\hat x_0)` after the last jump. :math:`\Pi_y` copies the observed
pixels for inpainting and takes Landweber steps :math:`x \leftarrow x + H^\top(y - Hx)` for the
linear operators (SR, deblur); the last step iterates it to convergence on the
measurement. The start :math:`x_{t_0}` is pure source noise. η = 0 keeps the source of the
trajectory (deterministic); η > 0 injects fresh noise.

**DPS-style baseline** (:func:`dps_ode`, same NFE): Euler steps of the learned velocity with
the diffusion-posterior-sampling correction
:math:`x \leftarrow x + h\,v_\theta(x, t) - \zeta\,\nabla_x\|y - H(\hat x_0(x))\|` where
:math:`\hat x_0(x) = x - t\,v_\theta(x, t)`, as in Chung et al. (2023) for this interpolant.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .degradations import Degradation
from .parameterization import FlowMapModel
from .randomness import noise_like
from .timegrid import uniform_grid


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

    x1 = y_input
    if eps > 0:
        x1 = x1 + eps * noise_like(x1, generator)
    x0_hat = sample_multistep(model, x1, nfe)
    if consistency is None:
        return x0_hat
    y = y_input * consistency.mask(y_input) if consistency.task == "inpaint" else y_input
    return consistency.project(x0_hat, y, iters=iters)


@torch.no_grad()
def zero_shot_restore(
    model: FlowMapModel,
    y: Tensor,
    op: Degradation,
    nfe: int = 4,
    eta: float = 0.0,
    final_iters: int = 50,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Zero-shot restoration with an unconditional flow-map model (module docstring).

    Args:
        model: unconditional model (noise → images), e.g. trained with ``--config patches_cpu``.
        y: the measurement ``H(x0)`` (for inpainting: the masked image), ``(B, C, H, W)``.
        op: the degradation (:class:`~gctm_mini.degradations.Degradation`).
        nfe: number of jumps K; ``eta``: fresh-noise fraction; ``final_iters``: projection
            iterations after the last jump.
    """
    times = uniform_grid(nfe, dtype=y.dtype).to(y.device)
    x = noise_like(y, generator)
    x0_hat = x
    for i in range(nfe):
        t, tn = float(times[i]), float(times[i + 1])
        x0_hat = model.G(x, t, 0.0)
        if tn == 0.0:
            break
        eps_hat = (x - (1 - t) * x0_hat) / t
        if eta > 0:
            z = noise_like(y, generator)
            eps_hat = (1 - eta**2) ** 0.5 * eps_hat + eta * z
        x = (1 - tn) * op.project(x0_hat, y) + tn * eps_hat
    return op.project(x0_hat, y, iters=final_iters)


def dps_ode(
    model: FlowMapModel,
    y: Tensor,
    op: Degradation,
    nfe: int = 4,
    zeta: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """DPS-style baseline: Euler on the learned velocity with a measurement-gradient step.

    ``zeta`` scales the normalized gradient of :math:`\\|y - H(\\hat x_0(x))\\|` (per image).
    Each step costs one network evaluation plus its backward pass.
    """
    times = uniform_grid(nfe, dtype=y.dtype).to(y.device)
    x = noise_like(y, generator)
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
    return x.detach()


def restoration_table(
    restored: dict[str, Tensor], target: Tensor
) -> dict[str, tuple[float, float]]:
    """PSNR/SSIM of each named restoration against ``target`` (scikit-image, data range 2)."""
    from .evaluation import psnr_ssim

    return {name: psnr_ssim(x, target) for name, x in restored.items()}
