r"""Editing and latent manipulation with an unconditional flow-map model.

**SDEdit-like editing** (GCTM's Alg. 5): put a rough guide image at time t with the
interpolant and jump to the data,

.. math::
    x_t = (1 - t)\,x_\text{guide} + t\,z, \qquad \hat x_0 = G_\theta(x_t, t, 0),

so small t keeps the guide (faithful, but its artefacts stay) and large t lets the model
redraw it (realistic, but less like the guide) — :func:`sdedit`.

**Interpolation through the source**: invert two images to t = 1 with the learned velocity
ODE (Heun, t from 0 up to 1), interpolate the latents on the sphere (slerp keeps a Gaussian
latent's norm), and jump back with :math:`G_\theta(z, 1, 0)` — :func:`interpolate_through_source`.

Guides for the notebooks: :func:`stroke_guide` paints coarse colour strokes, :func:`paste_guide`
pastes a patch of another image.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .parameterization import FlowMapModel
from .randomness import noise_like
from .solvers import integrate


@torch.no_grad()
def sdedit(
    model: FlowMapModel,
    guide: Tensor,
    t: float,
    nfe: int = 1,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Edit ``guide: (B, C, H, W)`` by noising to time ``t`` and jumping back in ``nfe`` jumps."""
    if not 0.0 < t <= 1.0:
        raise ValueError(f"t must lie in (0, 1]; got {t}")
    z = noise_like(guide, generator)
    x = (1 - t) * guide + t * z
    times = torch.linspace(t, 0.0, nfe + 1)
    for k in range(nfe):
        x = model.G(x, float(times[k]), float(times[k + 1]))
    return x


@torch.no_grad()
def invert_ode(model: FlowMapModel, x0: Tensor, steps: int = 20) -> Tensor:
    """Data → source with the learned velocity: Heun from t = 0 to 1 (``2·steps`` NFE).

    Solved in the model's dtype, returned in ``x0``'s."""
    x = model.prepare(x0, "x0")
    return integrate(model._velocity, x, torch.linspace(0.0, 1.0, steps + 1).to(x), "heun").to(
        x0.dtype
    )


def slerp(a: Tensor, b: Tensor, w: float) -> Tensor:
    """Spherical interpolation of two batches of latents (per sample, over all coordinates)."""
    fa, fb = a.flatten(1), b.flatten(1)
    cos = (fa * fb).sum(1) / (fa.norm(dim=1) * fb.norm(dim=1)).clamp_min(1e-12)
    om = torch.arccos(cos.clamp(-1 + 1e-7, 1 - 1e-7))[:, None]
    out = (torch.sin((1 - w) * om) * fa + torch.sin(w * om) * fb) / torch.sin(om)
    return out.view_as(a)


@torch.no_grad()
def interpolate_through_source(
    model: FlowMapModel, a: Tensor, b: Tensor, weights: Tensor, inv_steps: int = 20
) -> Tensor:
    """``(K, B, C, H, W)``: images between ``a`` and ``b`` for each weight in ``weights``."""
    za, zb = invert_ode(model, a, inv_steps), invert_ode(model, b, inv_steps)
    return torch.stack([model.G(slerp(za, zb, float(w)), 1.0, 0.0) for w in weights])


def stroke_guide(
    images: Tensor, generator: torch.Generator | None = None, strokes: int = 4, width: int = 6
) -> Tensor:
    """A crude 'painting' of each image: coarse blocks of its mean colours plus a few flat
    colour strokes — the kind of rough input SDEdit turns into a realistic image."""
    B, C, H, W = images.shape
    coarse = torch.nn.functional.avg_pool2d(images, 8)
    guide = torch.nn.functional.interpolate(coarse, size=(H, W), mode="nearest")
    g = generator or torch.Generator().manual_seed(0)
    for _ in range(strokes):
        colour = torch.rand(B, C, 1, 1, generator=g) * 2 - 1
        r = int(torch.randint(0, H - width, (1,), generator=g))
        horizontal = torch.zeros(1, 1, H, W)
        horizontal[..., r : r + width, :] = 1
        guide = guide * (1 - horizontal) + colour * horizontal
    return guide.clamp(-1, 1)


def paste_guide(images: Tensor, donors: Tensor, size: int | None = None) -> Tensor:
    """Paste the centre of each donor image onto each image (a visible, badly blended patch)."""
    H, W = images.shape[-2:]
    size = size or H // 2
    r, c = (H - size) // 2, (W - size) // 2
    out = images.clone()
    out[..., r : r + size, c : c + size] = donors[..., r : r + size, c : c + size]
    return out
