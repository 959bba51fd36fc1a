"""Notebook 07's literate cells compute what the package computes: the preconditioning
coefficients, the flow map G assembled from the raw U-Net output, and the multistep sampler
(the solution of Exercise 1), each held equal to the package function it mirrors."""

import pytest
import torch

from gctm_mini.assets import load_shipped
from gctm_mini.models import build_model
from gctm_mini.parameterization import CouplingMoments, precondition
from gctm_mini.sampling import sample_multistep
from gctm_mini.train_images import image_spec, make_config
from tests.literate import defined_functions, literate_namespace

COMPARED = {"precondition_coefficients", "flow_map", "my_multistep"}


@pytest.fixture(scope="module")
def ns():
    return literate_namespace("07")


@pytest.fixture(scope="module")
def digit_model():
    """The MNIST U-Net with random, visibly non-zero weights and per-pixel moments."""
    g = torch.Generator().manual_seed(0)
    moments = CouplingMoments(
        0.2 + torch.rand(1, 28, 28, generator=g), 1.0, 0.1 * torch.rand(1, 28, 28, generator=g)
    )
    model = build_model(image_spec(make_config("mnist_cpu"), 1), moments).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return model


def test_every_literate_function_is_compared_here():
    assert set(defined_functions("07")) == COMPARED


@pytest.mark.parametrize("v0, v1, v01", [(0.27, 1.0, 0.03), (1.0, 1.0, 0.0), (0.5, 0.2, 0.25)])
def test_precondition_coefficients_equal_the_package(ns, v0, v1, v01):
    t = torch.cat(
        [torch.zeros(1), torch.rand(50, generator=torch.Generator().manual_seed(1)), torch.ones(1)]
    )
    mine = ns["precondition_coefficients"](t, v0, v1, v01)
    ref = precondition(t, *(torch.tensor(v) for v in (v0, v1, v01)))
    for k in ("c_in", "c_skip", "c_out"):
        assert torch.equal(mine[k], ref[k]), k


def test_flow_map_from_the_raw_network_equals_model_G(ns, digit_model):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(6, 1, 28, 28, generator=g)
    t = torch.tensor([1.0, 0.9, 0.5, 0.3, 0.0, 0.7])
    s = torch.tensor([0.0, 0.4, 0.5, 0.1, 0.0, 0.0])
    with torch.no_grad():
        mine = ns["flow_map"](digit_model, x, t, s)
        assert torch.equal(mine, digit_model.G(x, t, s))
    assert torch.equal(mine[2], x[2]) and torch.equal(mine[4], x[4])  # G(x, t, t) = x


def test_flow_map_equals_the_shipped_models_one_jump(ns):
    model = load_shipped("mnist_gctm").eval()
    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        mine = ns["flow_map"](model, x, torch.ones(4), torch.zeros(4))
        assert torch.allclose(mine, model.G(x, 1.0, 0.0), atol=1e-6)


@pytest.mark.parametrize("nfe", [1, 2, 3, 4])
def test_my_multistep_equals_sample_multistep(ns, digit_model, nfe):
    x1 = torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(nfe))
    with torch.no_grad():
        assert torch.allclose(
            ns["my_multistep"](digit_model, x1, nfe),
            sample_multistep(digit_model, x1, nfe),
            atol=1e-6,
        )
