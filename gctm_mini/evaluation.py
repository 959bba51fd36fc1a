"""Evaluating image models: an offline proxy metric, FID where it can run, sample grids.

**Random-feature Fréchet distance (RFD) — not FID.** FID needs Inception weights from the
internet. Offline we use the same Fréchet formula on features of a *fixed, randomly
initialized* convolutional network (seeded, so every run uses the same features):

.. math::
    \\mathrm{RFD} = \\|\\mu_g - \\mu_r\\|^2 + \\mathrm{tr}\\big(\\Sigma_g + \\Sigma_r - 2(\\Sigma_g\\Sigma_r)^{1/2}\\big).

Random conv features are sensitive to colour, texture and blur, so RFD ranks models sensibly
on the same data, but its values are not comparable with published FIDs. Every report
includes the reference-vs-reference RFD (two halves of the reference set) as a floor.

**FID** (``fid=True``): through ``torch-fidelity`` (``pip install "gctm-mini[metrics]"``); it downloads
the Inception weights on first use, and where that is impossible a clear error says so.

**LPIPS** (:func:`lpips_distance`): through the ``lpips`` package (the ``metrics`` extra), whose
backbone (AlexNet or VGG) comes from torchvision's pretrained weights — fetched on first use;
where they cannot be, :class:`MetricUnavailableError` says so. PSNR and SSIM
(:func:`psnr_ssim`, scikit-image) need nothing.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ._optional import require
from .checkpoint import checkpoint_path, load_checkpoint
from .validation import check_finite, check_number, mul_pow2


class MetricUnavailableError(RuntimeError):
    """A metric that cannot run here (missing package or weights that cannot be fetched)."""


def random_feature_net(channels: int = 3, seed: int = 0) -> nn.Module:
    """A fixed random conv net: 4 stride-2 conv + ReLU layers, global average and std pooling
    → 512 features per image. Deterministic given ``seed``."""
    g = torch.Generator().manual_seed(seed)
    layers, c = [], channels
    for width in (64, 128, 128, 256):
        conv = nn.Conv2d(c, width, 3, stride=2, padding=1)
        with torch.no_grad():
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * (2 / (9 * c)) ** 0.5)
            conv.bias.zero_()
        layers += [conv, nn.ReLU()]
        c = width
    body = nn.Sequential(*layers).eval().requires_grad_(False)

    class Features(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = body

        def forward(self, x: Tensor) -> Tensor:
            h = self.body(x)
            return torch.cat([h.mean((2, 3)), h.std((2, 3))], dim=1)

    return Features()


FEATURE_MIN_SIZE = 17
"""Smallest image side for :func:`features`: four stride-2 convolutions must leave at least
2×2 positions, or the per-channel standard deviation is undefined (NaN)."""


def _check_images(x: Tensor, name: str, min_size: int = 1) -> None:
    check_finite(x, name)
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must be floating-point images in [−1, 1]; got dtype {x.dtype} "
            "(convert uint8 images with gctm_mini.images.to_unit_range)"
        )
    if x.dim() != 4 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a batch of images (N ≥ 1, C, H, W); got {tuple(x.shape)}")
    if min(x.shape[-2:]) < min_size:
        raise ValueError(
            f"{name} must be at least {min_size}×{min_size} pixels; got {x.shape[-2]}×{x.shape[-1]}"
        )


@torch.no_grad()
def features(x: Tensor, net: nn.Module | None = None, batch: int = 500) -> Tensor:
    """Random features ``(N, 512)`` of images ``x: (N, C, H, W)`` in [−1, 1] (float64);
    H, W ≥ :data:`FEATURE_MIN_SIZE`."""
    _check_images(x, "x", FEATURE_MIN_SIZE)
    net = net or random_feature_net(x.shape[1])
    return torch.cat(
        [net(x[i : i + batch].float().cpu()) for i in range(0, len(x), batch)]
    ).double()


def frechet_distance(fa: Tensor, fb: Tensor) -> float:
    """Fréchet distance between Gaussian fits of two feature sets ``(N, d)``, ``(M, d)``.

    Each set needs N ≥ 2 samples (a covariance needs two); N < d is allowed (a singular
    covariance is still positive semi-definite) but the estimate is then noisy.
    """
    for name, f in (("fa", fa), ("fb", fb)):
        check_finite(f, name)
        if f.dim() != 2 or f.shape[0] < 2:
            raise ValueError(
                f"{name} must be (N, d) features with N ≥ 2 samples (a covariance needs two); "
                f"got {tuple(f.shape)}"
            )
    if fa.shape[1] != fb.shape[1]:
        raise ValueError(f"feature sets differ in dimension: {fa.shape[1]} and {fb.shape[1]}")
    # FD(c·a, c·b) = c²·FD(a, b): compute at unit scale (s = 2^k ≥ max|f|, exact), so that
    # features at 1e200 (or 1e-200) neither overflow nor underflow
    fa, fb = fa.double(), fb.double()
    big = max(float(fa.abs().max()), float(fb.abs().max()))
    k = math.frexp(big)[1] if big > 0 else 0
    fa, fb = fa * 2.0**-k, fb * 2.0**-k
    mu_a, mu_b = fa.mean(0), fb.mean(0)
    ca, cb = torch.cov(fa.T).reshape(fa.shape[1], -1), torch.cov(fb.T).reshape(fb.shape[1], -1)
    # tr((Ca Cb)^{1/2}) via the eigenvalues of Ca^{1/2} Cb Ca^{1/2} (symmetric, PSD)
    try:
        w, v = torch.linalg.eigh(ca)
        sa = (v * w.clamp_min(0).sqrt()) @ v.T
        m = sa @ cb @ sa
        mid = torch.linalg.eigvalsh((m + m.T) / 2).clamp_min(0).sqrt().sum()
    except RuntimeError as err:  # torch.linalg.LinAlgError: no convergence
        raise ValueError(
            f"the feature covariances could not be decomposed ({str(err).splitlines()[0][:120]})"
        ) from None
    fd = mul_pow2(float((mu_a - mu_b).pow(2).sum() + ca.trace() + cb.trace() - 2 * mid), 2 * k)
    if not math.isfinite(fd):
        raise ValueError(f"the Fréchet distance overflows float64 (features up to {big:.3g})")
    return fd


def rfd(generated: Tensor, reference: Tensor) -> float:
    """Random-feature Fréchet distance between two image sets (see the module docstring);
    each needs at least 2 images of the same channels, at least 17×17."""
    _check_images(generated, "generated", FEATURE_MIN_SIZE)
    _check_images(reference, "reference", FEATURE_MIN_SIZE)
    if generated.shape[1] != reference.shape[1]:
        raise ValueError(
            f"generated and reference differ in channels: {generated.shape[1]} and "
            f"{reference.shape[1]}"
        )
    net = random_feature_net(generated.shape[1])
    return frechet_distance(features(generated, net), features(reference, net))


def fid(generated: Tensor, reference: Tensor) -> float:
    """FID with torch-fidelity (Inception weights must be downloadable or cached)."""
    torch_fidelity = require("torch_fidelity", "FID", error=MetricUnavailableError)

    class Wrap(torch.utils.data.Dataset):
        def __init__(self, x):
            self.x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return self.x[i]

    try:
        m = torch_fidelity.calculate_metrics(
            input1=Wrap(generated),
            input2=Wrap(reference),
            fid=True,
            verbose=False,
            cuda=torch.cuda.is_available(),
        )
    except Exception as err:  # no network for the Inception weights, etc.
        raise MetricUnavailableError(
            f"FID could not run here (Inception weights unavailable?): {err}"
        ) from err
    return float(m["frechet_inception_distance"])


def lpips_distance(x: Tensor, y: Tensor, net: str = "alex") -> float:
    """Mean LPIPS (Zhang et al. 2018) between two image batches ``(B, 3, H, W)`` in [−1, 1].

    Raises :class:`MetricUnavailableError` when the ``lpips`` package is missing or its
    backbone weights cannot be fetched (no internet and not cached).
    """
    if x.shape != y.shape or x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(
            f"LPIPS needs two RGB batches of one shape (B, 3, H, W); got {tuple(x.shape)} "
            f"and {tuple(y.shape)}"
        )
    lpips = require("lpips", "LPIPS", error=MetricUnavailableError)
    try:
        metric = lpips.LPIPS(net=net, verbose=False)
    except Exception as err:  # the pretrained backbone is downloaded on first use
        raise MetricUnavailableError(
            f"LPIPS could not load its {net} backbone weights (no internet and not cached?): {err}"
        ) from err
    with torch.no_grad():
        d = metric(x.float().cpu().clamp(-1, 1), y.float().cpu().clamp(-1, 1))
    return float(d.mean())


@torch.no_grad()
def generate(
    model,
    n: int,
    nfe: int,
    batch: int = 250,
    seed: int = 0,
    device=None,
    source: Tensor | None = None,
) -> Tensor:
    """``n`` samples with ``nfe`` deterministic jumps from seeded noise (or from ``source``)."""
    from .sampling import sample_multistep

    device = device or next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, n, batch):
        k = min(batch, n - i)
        x1 = (
            source[i : i + k]
            if source is not None
            else torch.randn(k, *model.data_shape, generator=g)
        )
        out.append(sample_multistep(model, x1.to(device), nfe).float().cpu())
    return torch.cat(out)


def evaluate_images(
    run: str | Path,
    nfes: list[int],
    num: int = 10_000,
    fid: bool = False,
    grid: bool = True,
    device: str | None = None,
    batch: int = 250,
) -> dict:
    """Score an image run by NFE: RFD (offline, with its floor), optional FID, sample grids.

    ``num`` ≥ 4 images per NFE (the floor compares two halves of the reference set, and a
    Fréchet distance needs ≥ 2 images a side), generated ``batch`` (≥ 1) at a time.
    """
    from .train_images import ImageConfig, build_image_data

    check_number(num, "num", integer=True, ge=4)
    check_number(batch, "batch", integer=True, ge=1)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_checkpoint(run, map_location=device)
    if len(model.data_shape) != 3:
        raise ValueError(
            f"{checkpoint_path(run)} is a 2D run (data shape {tuple(model.data_shape)}); "
            "evaluate it with the eval2d command, not eval"
        )
    cfg = ImageConfig(
        **{k: v for k, v in model.train_config.items() if k in ImageConfig.__dataclass_fields__}
    )
    try:
        ref_ds = build_image_data(cfg, "test")
    except (FileNotFoundError, ValueError):
        ref_ds = build_image_data(cfg, "train")
    ref = (
        ref_ds.images[:num]
        if hasattr(ref_ds, "images")
        else torch.stack([ref_ds[i] for i in range(min(num, len(ref_ds)))])
    )
    half = len(ref) // 2
    floor = rfd(ref[:half], ref[half : 2 * half])
    print(
        f"[eval] model: {checkpoint_path(run)}; reference: {ref_ds.describe()} ({len(ref)} images)"
    )
    print("[eval] RFD = Fréchet distance on fixed random conv features — an offline proxy, NOT FID")
    res = {
        "reference": ref_ds.describe(),
        "num": num,
        "rfd_floor": floor,
        "rfd": {},
        "fid": {},
        "seconds": {},
    }
    for k in nfes:
        t0 = time.perf_counter()
        x = generate(model, num, k, batch, device=device)
        res["seconds"][str(k)] = time.perf_counter() - t0
        res["rfd"][str(k)] = rfd(x, ref)
        line = f"NFE {k}: RFD {res['rfd'][str(k)]:.3f} (floor {floor:.3f}), {res['seconds'][str(k)]:.1f} s"
        if fid:
            res["fid"][str(k)] = globals()["fid"](x, ref)
            line += f", FID {res['fid'][str(k)]:.2f}"
        print("[eval] " + line)
        if grid:
            save_image = require("torchvision.utils", "sample grids").save_image

            path = (
                Path(run if Path(run).is_dir() else Path(run).parent)
                / "eval"
                / f"samples_nfe{k}.png"
            )
            path.parent.mkdir(parents=True, exist_ok=True)
            save_image((x[:64] + 1) / 2, path, nrow=8)
            res.setdefault("grids", {})[str(k)] = str(path)
    return res


def psnr_ssim(pred: Tensor, target: Tensor) -> tuple[float, float]:
    r"""Mean PSNR (dB) and SSIM over a batch ``(B, C, H, W)`` in [−1, 1] (scikit-image, data
    range 2, 7×7 SSIM window, so H, W ≥ 7).

    :math:`\mathrm{PSNR} = 10\log_{10}(2^2 / \mathrm{MSE})` per image: an image identical to
    its target (MSE = 0) has PSNR = +inf, and then so has the mean; that is the exact value,
    returned on purpose. SSIM is finite for any finite images (constant ones included).
    """
    skmetrics = require("skimage.metrics", "PSNR/SSIM")
    peak_signal_noise_ratio = skmetrics.peak_signal_noise_ratio
    structural_similarity = skmetrics.structural_similarity

    _check_images(pred, "pred", 7)
    _check_images(target, "target", 7)
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape; got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )
    p = pred.detach().double().clamp(-1, 1).permute(0, 2, 3, 1).cpu().numpy()
    t = target.detach().double().clamp(-1, 1).permute(0, 2, 3, 1).cpu().numpy()
    mse = ((p - t) ** 2).reshape(len(p), -1).mean(1)
    ps = [
        math.inf if e == 0 else peak_signal_noise_ratio(a, b, data_range=2.0)
        for a, b, e in zip(t, p, mse, strict=True)
    ]
    ss = [
        structural_similarity(a, b, data_range=2.0, channel_axis=-1)
        for a, b in zip(t, p, strict=True)
    ]
    return float(np.mean(ps)), float(np.mean(ss))
