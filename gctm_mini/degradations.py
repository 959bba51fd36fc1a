r"""Degradation operators H for restoration, and the image-to-image tasks built from them.

Each operator acts on a batch ``(B, C, H, W)`` in [−1, 1] and is a tensor op (no loop over
samples):

* ``sr2`` / ``sr4`` — bicubic down-sampling by 2 or 4 (antialiased) followed by bicubic
  up-sampling back to the input size: the low-resolution image on the full grid;
* ``deblur`` — Gaussian blur, σ = 0.8 pixels (7×7 kernel, reflect padding); σ = 0 is the
  identity, the σ → 0 limit of the blur;
* ``inpaint`` — a centre box (half the side) removed; the hole is filled with N(0, 1) noise
  (the measurement is the pixels outside the box);
* ``half`` — the lower half removed (rows H/2 … H), filled with N(0, 1) noise like
  ``inpaint``: the upper half of a digit has many possible lower halves, so the task has many
  answers (notebook 08's translation task).

The first three are linear, :math:`y = Hx`; :meth:`Degradation.adjoint` is :math:`H^\top` (by a
vector–Jacobian product, exact for a linear H) and :meth:`Degradation.project` moves an
estimate onto the measurement set, :math:`\hat x \leftarrow \hat x + H^\top (y - H\hat x)` scaled by a
step size (one Landweber step; for inpainting the exact projection, copy the observed pixels).

Translation tasks (not degradations in the restoration sense): ``colorize`` (luminance
repeated to 3 channels) and ``edges`` (Sobel edge magnitude, white edges on black).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .randomness import noise_like
from .validation import MAX_SIZE, check_count, check_finite, check_real

TASKS = ("sr2", "sr4", "deblur", "inpaint", "half", "colorize", "edges")
RESTORATION_TASKS = ("sr2", "sr4", "deblur", "inpaint", "half")
MASKED_TASKS = ("inpaint", "half")
"""Tasks that remove pixels (a mask; the hole of the network input is N(0, 1) noise)."""
MAX_KERNEL = 1025
"""Largest blur kernel side (σ ≤ 170 pixels): wider than any image this package trains on."""


def gaussian_kernel(sigma: float, size: int | None = None) -> Tensor:
    """Normalized 2-D Gaussian kernel ``(size, size)``; default size ``2⌈3σ⌉ + 1`` (odd).

    σ = 0 gives the discrete delta (1 at the centre, 0 elsewhere): the σ → 0 limit of the
    normalized Gaussian, so blurring with it is the identity.
    """
    sigma = check_real(sigma, "sigma (pixels)", ge=0.0, le=MAX_KERNEL // 6)
    size = 2 * math.ceil(3 * sigma) + 1 if size is None else size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be an odd integer ≥ 1 (a centred kernel); got {size!r}")
    if size > MAX_KERNEL:
        raise ValueError(f"kernel size must be ≤ {MAX_KERNEL} pixels; got {size}")
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    if sigma == 0:
        return (r[:, None].abs() + r[None, :].abs() == 0).float()
    k1 = torch.exp(-0.5 * (r / sigma) ** 2)  # not r²/(2σ²): 2σ² underflows for tiny σ
    k = k1[:, None] * k1[None, :]
    return (k / k.sum()).float()


def _finite(y: Tensor, what: str) -> Tensor:
    """``y`` unchanged; ``ValueError`` if it overflowed (images far outside [−1, 1])."""
    if not bool(torch.isfinite(y).all()):
        raise ValueError(f"{what} is not finite: the images overflow {y.dtype} (expected [−1, 1])")
    return y


def _check(x: Tensor, name: str = "images") -> None:
    check_finite(x, name)
    if x.dim() != 4 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a batch (B ≥ 1, C, H, W); got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor in [−1, 1]; got dtype {x.dtype}")


class Degradation:
    """A named operator ``y = H(x)`` with the tools a restoration method needs.

    Args:
        task: one of :data:`TASKS`.
        sigma: the ``deblur`` blur width in pixels, finite and ≥ 0 (0: the identity).

    Every method checks its images: a finite floating batch ``(B, C, H, W)``, with sizes the
    task can use (``sr2``/``sr4``: divisible by 2/4; ``deblur``: larger than the kernel
    radius; ``inpaint``: at least 4×4 so the centre box is not the whole image;
    ``colorize``/``edges``: 3 channels).
    """

    def __init__(self, task: str, sigma: float = 0.8) -> None:
        if not isinstance(task, str) or task not in TASKS:
            raise ValueError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
        self.task = task
        self._kernel = gaussian_kernel(sigma)  # validates sigma for every task
        self.sigma = float(sigma)
        if task != "deblur":
            self._kernel = None

    @property
    def linear(self) -> bool:
        return self.task in ("sr2", "sr4", "deblur")

    @property
    def masked(self) -> bool:
        """Whether H removes pixels (``inpaint``, ``half``): y is the observed pixels."""
        return self.task in MASKED_TASKS

    def mask(self, x: Tensor) -> Tensor:
        """1 on observed pixels, 0 in the hole (``inpaint``: the centre box; ``half``: the
        lower half, rows H/2 … H); ``(1, 1, H, W)``."""
        H, W = x.shape[-2:]
        m = torch.ones(1, 1, H, W, device=x.device, dtype=x.dtype)
        if self.task == "half":
            m[..., H // 2 :, :] = 0
        else:
            m[..., H // 4 : H - H // 4, W // 4 : W - W // 4] = 0
        return m

    def check(self, x: Tensor, name: str = "images") -> None:
        """Raise a one-line error unless ``x`` is a batch this operator can act on."""
        _check(x, name)
        C, H, W = x.shape[1:]
        if self.task in ("sr2", "sr4"):
            f = 2 if self.task == "sr2" else 4
            if H % f or W % f:
                raise ValueError(f"{self.task} needs sizes divisible by {f}; got {H}×{W}")
        elif self.task == "deblur":
            pad = self._kernel.shape[-1] // 2
            if min(H, W) <= pad:
                raise ValueError(
                    f"deblur with σ = {self.sigma} (radius {pad}) needs images larger than "
                    f"{pad}×{pad} for its reflect padding; got {H}×{W}"
                )
        elif self.masked:
            if min(H, W) < 4:
                raise ValueError(f"{self.task} needs images of at least 4×4; got {H}×{W}")
        elif C != 3:
            raise ValueError(f"{self.task} needs RGB images (C = 3); got C = {C}")

    def clean(self, x: Tensor) -> Tensor:
        """The deterministic part of H (for inpainting: the masked image, hole = 0)."""
        self.check(x)
        return _finite(self._clean(x), f"{self.task}(x)")

    def _clean(self, x: Tensor) -> Tensor:
        if x.dtype in (torch.float16, torch.bfloat16) and x.device.type == "cpu":
            # half-precision bicubic resampling and convolutions do not exist on the CPU
            return self._clean(x.float()).to(x.dtype)
        if self.task in ("sr2", "sr4"):
            f = 2 if self.task == "sr2" else 4
            H, W = x.shape[-2:]
            low = F.interpolate(
                x, scale_factor=1 / f, mode="bicubic", antialias=True, align_corners=False
            )
            return F.interpolate(low, size=(H, W), mode="bicubic", align_corners=False)
        if self.task == "deblur":
            k = self._kernel.to(x)
            C = x.shape[1]
            pad = k.shape[-1] // 2
            xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")
            return F.conv2d(xp, k.expand(C, 1, *k.shape), groups=C)
        if self.masked:
            return x * self.mask(x)
        if self.task == "colorize":
            lum = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
            return lum.expand(-1, x.shape[1], -1, -1).contiguous()
        sx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]], device=x.device, dtype=x.dtype)
        lum = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3] + 1) / 2
        p = F.pad(lum, (1, 1, 1, 1), mode="replicate")
        mag = (F.conv2d(p, sx[None, None]).pow(2) + F.conv2d(p, sx.T[None, None]).pow(2)).sqrt()
        edges = (mag / 2).clamp(0, 1) * 2 - 1
        return edges.expand(-1, x.shape[1], -1, -1).contiguous()

    def __call__(
        self, x: Tensor, generator: torch.Generator | None = None, noise: Tensor | None = None
    ) -> Tensor:
        """The degraded image X1 = H(X0) as a network input (inpainting hole → N(0, 1) noise,
        from ``noise`` if given, else drawn with ``generator``)."""
        self.check(x)
        y = self._clean(x)
        if self.masked:
            if noise is not None:
                check_finite(noise, "noise")
                if noise.shape != x.shape:
                    raise ValueError(
                        f"noise must have the shape of x, {tuple(x.shape)}; got {tuple(noise.shape)}"
                    )
            z = noise if noise is not None else noise_like(x, generator)
            y = y + (1 - self.mask(x)) * z.to(x)
        return _finite(y, f"{self.task}(x)")

    def adjoint(self, v: Tensor) -> Tensor:
        """:math:`H^\\top v` for a linear H (vector–Jacobian product of :meth:`clean`)."""
        if not (self.linear or self.masked):
            raise ValueError(f"{self.task} is not a linear measurement")
        self.check(v, "v")
        return _finite(self._adjoint(v), f"the adjoint of {self.task}")

    def _adjoint(self, v: Tensor) -> Tensor:
        x = torch.zeros_like(v, requires_grad=True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(self._clean(x), x, grad_outputs=v)
        return g

    def project(self, x_hat: Tensor, y: Tensor, step: float = 1.0, iters: int = 1) -> Tensor:
        """Move ``x_hat`` towards ``{x : Hx = y}``: exact for inpainting (copy the observed
        pixels of ``y``); ``iters`` Landweber steps :math:`x + \\eta H^\\top(y - Hx)` otherwise
        (many iterations from the degraded image give iterative back-projection).

        ``x_hat`` and ``y`` must have the same shape; ``step`` finite and > 0 (Landweber
        converges for step < 2/‖H‖², and ‖H‖ ≤ 1 here up to the bicubic kernels' overshoot);
        ``iters`` an integer ≥ 0."""
        self.check(x_hat, "x_hat")
        self.check(y, "y")
        if x_hat.shape != y.shape:
            raise ValueError(
                f"x_hat and y must have the same shape; got {tuple(x_hat.shape)} and {tuple(y.shape)}"
            )
        step = check_real(step, "step", gt=0.0)
        check_count(iters, "iters", 0, MAX_SIZE)
        if self.masked:
            m = self.mask(x_hat)
            return m * y + (1 - m) * x_hat
        if not self.linear:
            raise ValueError(
                f"{self.task} has no measurement projection (not a linear measurement)"
            )
        for _ in range(iters):
            x_hat = x_hat + step * self._adjoint(y - self._clean(x_hat))
        return _finite(x_hat, f"the {self.task} projection (step {step:g}, {iters} iterations)")

    def back_project(self, y: Tensor, iters: int = 50) -> Tensor:
        """The measurement-consistent estimate without any network: ``iters`` Landweber steps
        from ``y`` itself (iterative back-projection); for inpainting (``inpaint``, ``half``)
        ``y`` as it is (the observed pixels, hole at 0 = mid-grey)."""
        self.check(y, "y")
        check_count(iters, "iters", 0, MAX_SIZE)
        return self.project(y, y, iters=iters) if self.linear else y
