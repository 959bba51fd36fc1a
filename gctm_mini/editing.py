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
pastes a patch of another image, :func:`digit_sketch` redraws a digit as a blocky
black-and-white pen drawing (hard edges, no grey levels: a crude hand-drawn stroke image).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .parameterization import FlowMapModel
from .randomness import noise_like
from .solvers import integrate
from .timegrid import MAX_INTERVALS
from .validation import MAX_SIZE, check_batch, check_count, check_real, real_tensor


def _check_images(x: Tensor, name: str) -> None:
    check_batch(x, name=name)
    if x.dim() != 4 or not x.is_floating_point():
        raise ValueError(
            f"{name} must be a floating batch (B, C, H, W); got {tuple(x.shape)} {x.dtype}"
        )


@torch.no_grad()
def sdedit(
    model: FlowMapModel,
    guide: Tensor,
    t: float,
    nfe: int = 1,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Edit ``guide: (B, C, H, W)`` by noising to time ``t`` in (0, 1] and jumping back to 0
    in ``nfe`` ≥ 1 jumps; the result has the guide's shape and dtype."""
    t = check_real(t, "t", gt=0.0, le=1.0)
    nfe = check_count(nfe, "nfe", maximum=MAX_INTERVALS)
    model.prepare(guide, "guide")
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
    steps = check_count(steps, "steps", maximum=MAX_INTERVALS)
    x = model.prepare(x0, "x0")
    return integrate(model._velocity, x, torch.linspace(0.0, 1.0, steps + 1).to(x), "heun").to(
        x0.dtype
    )


def slerp(a: Tensor, b: Tensor, w: float) -> Tensor:
    """Spherical interpolation of two batches of latents ``a, b: (B, *D)`` (per sample, over
    all coordinates) at weight ``w`` (0 → ``a``, 1 → ``b``; finite). Computed in float64 at
    unit scale, returned in ``a``'s dtype."""
    check_batch(a, name="a")
    check_batch(b, tuple(a.shape[1:]), name="b")
    if a.shape != b.shape or not (a.is_floating_point() and b.is_floating_point()):
        raise ValueError(
            f"a and b must be floating batches of one shape; got {tuple(a.shape)} {a.dtype} "
            f"and {tuple(b.shape)} {b.dtype}"
        )
    w = check_real(w, "w")
    fa, fb = a.flatten(1).double(), b.flatten(1).double()
    na, nb = fa.norm(dim=1, keepdim=True), fb.norm(dim=1, keepdim=True)
    scale = torch.maximum(na, nb).clamp_min(1e-300)
    fa, fb = fa / scale, fb / scale
    cos = (fa * fb).sum(1) / ((na / scale) * (nb / scale)).squeeze(1).clamp_min(1e-12)
    om = torch.arccos(cos.clamp(-1 + 1e-7, 1 - 1e-7))[:, None]
    out = (torch.sin((1 - w) * om) * fa + torch.sin(w * om) * fb) / torch.sin(om) * scale
    out = out.to(a.dtype)
    if not bool(torch.isfinite(out).all()):
        raise ValueError(f"slerp at w = {w:g} overflows {a.dtype}")
    return out.view_as(a)


@torch.no_grad()
def interpolate_through_source(
    model: FlowMapModel, a: Tensor, b: Tensor, weights: Tensor, inv_steps: int = 20
) -> Tensor:
    """``(K, B, C, H, W)``: images between ``a`` and ``b`` for each weight in ``weights``."""
    weights = real_tensor(weights, "weights").reshape(-1).tolist()
    za, zb = invert_ode(model, a, inv_steps), invert_ode(model, b, inv_steps)
    return torch.stack([model.G(slerp(za, zb, float(w)), 1.0, 0.0) for w in weights])


def stroke_guide(
    images: Tensor, generator: torch.Generator | None = None, strokes: int = 4, width: int = 6
) -> Tensor:
    """A crude 'painting' of each image: coarse blocks of its mean colours plus a few flat
    colour strokes — the kind of rough input SDEdit turns into a realistic image.

    ``images: (B, C, H, W)`` with H, W ≥ 8 (the coarse blocks are 8×8); ``strokes`` ≥ 0
    horizontal strokes of ``width`` rows, 1 ≤ width < H."""
    _check_images(images, "images")
    B, C, H, W = images.shape
    if min(H, W) < 8:
        raise ValueError(f"images must be at least 8×8 for the 8×8 colour blocks; got {H}×{W}")
    strokes = check_count(strokes, "strokes", 0, MAX_SIZE)
    width = check_count(width, "width", 1, H - 1)
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
    """Paste the centre of each donor image onto each image (a visible, badly blended patch):
    ``images`` and ``donors`` ``(B, C, H, W)`` of one shape, a ``size``-pixel square (default
    H // 2; 1 ≤ size ≤ min(H, W))."""
    _check_images(images, "images")
    _check_images(donors, "donors")
    if donors.shape != images.shape:
        raise ValueError(
            f"donors must have the images' shape {tuple(images.shape)}; got {tuple(donors.shape)}"
        )
    H, W = images.shape[-2:]
    size = max(1, H // 2) if size is None else check_count(size, "size", 1, min(H, W))
    r, c = (H - size) // 2, (W - size) // 2
    out = images.clone()
    out[..., r : r + size, c : c + size] = donors[..., r : r + size, c : c + size]
    return out


def digit_sketch(digits: Tensor, block: int = 2, threshold: float = 0.0) -> Tensor:
    """A crude pen drawing of each digit: ink where any pixel of a ``block``×``block`` cell
    is brighter than ``threshold``, drawn as full-white blocks on black.

    ``digits: (B, 1, H, W)`` in [−1, 1] with H, W divisible by ``block`` (≥ 1); returns
    ``(B, 1, H, W)`` with values in {−1, 1} — the strokes of the digit, thickened and
    pixelated, without the soft grey edges of real handwriting.
    """
    _check_images(digits, "digits")
    H, W = digits.shape[-2:]
    block = check_count(block, "block", 1, min(H, W))
    if H % block or W % block:
        raise ValueError(f"block must divide the image size {H}×{W}; got {block}")
    threshold = check_real(threshold, "threshold", ge=-1.0, lt=1.0)
    ink = torch.nn.functional.max_pool2d((digits > threshold).to(digits.dtype), block) > 0
    ink = torch.nn.functional.interpolate(ink.to(digits.dtype), scale_factor=block, mode="nearest")
    return ink * 2 - 1
