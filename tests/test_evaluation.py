"""Metrics that need downloaded weights fail with a clear message, never a wrong number."""

import sys
import types

import pytest
import torch

from gctm_mini.evaluation import MetricUnavailableError, fid, lpips_distance, psnr_ssim


@pytest.fixture
def images():
    g = torch.Generator().manual_seed(0)
    return torch.rand(4, 3, 16, 16, generator=g) * 2 - 1, torch.rand(
        4, 3, 16, 16, generator=g
    ) * 2 - 1


def offline_module(name: str, attr: str) -> types.ModuleType:
    """A stand-in package whose ``attr`` fails as a download without internet would."""
    fake = types.ModuleType(name)

    def offline(**kwargs):
        raise OSError("could not download the pretrained weights")

    setattr(fake, attr, offline)
    return fake


def test_fid_without_torch_fidelity_says_how_to_get_it(monkeypatch, images):
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)  # import fails
    with pytest.raises(
        MetricUnavailableError,
        match=r"FID needs torch-fidelity.*pip install \"gctm-mini\[metrics\]\"",
    ):
        fid(*images)


def test_fid_without_inception_weights_is_a_clear_error(monkeypatch, images):
    monkeypatch.setitem(
        sys.modules, "torch_fidelity", offline_module("torch_fidelity", "calculate_metrics")
    )
    with pytest.raises(MetricUnavailableError, match="Inception weights unavailable"):
        fid(*images)


def test_lpips_without_the_package_or_weights_is_a_clear_error(monkeypatch, images):
    monkeypatch.setitem(sys.modules, "lpips", None)
    with pytest.raises(
        MetricUnavailableError, match=r"LPIPS needs lpips.*pip install \"gctm-mini\[metrics\]\""
    ):
        lpips_distance(*images)
    monkeypatch.setitem(sys.modules, "lpips", offline_module("lpips", "LPIPS"))
    with pytest.raises(MetricUnavailableError, match="backbone weights"):
        lpips_distance(*images)


def test_lpips_passes_images_in_minus_one_one_and_averages(monkeypatch, images):
    seen = {}

    class FakeLPIPS:  # a stand-in metric: mean absolute difference per image
        def __init__(self, net, verbose):
            seen["net"] = net

        def __call__(self, a, b):
            seen["range"] = (float(a.min()), float(a.max()))
            return (a - b).abs().mean(dim=(1, 2, 3), keepdim=True)

    fake = types.ModuleType("lpips")
    fake.LPIPS = FakeLPIPS
    monkeypatch.setitem(sys.modules, "lpips", fake)
    x, y = images
    d = lpips_distance(x, y, net="vgg")
    assert seen["net"] == "vgg" and seen["range"][0] >= -1 and seen["range"][1] <= 1
    assert d == pytest.approx(float((x - y).abs().mean()), rel=1e-6)
    with pytest.raises(ValueError, match="one shape"):
        lpips_distance(x, y[:2])


def test_psnr_ssim_and_rfd_order_closer_images_first(images):
    x, y = images
    near = (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(
        -1, 1
    )
    assert psnr_ssim(near, x)[0] > psnr_ssim(y, x)[0]
    assert psnr_ssim(near, x)[1] > psnr_ssim(y, x)[1]
