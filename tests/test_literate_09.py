"""Notebook 09's literate cell (the solution of Exercise 1, zero-shot restoration) computes
what :func:`gctm_mini.restoration.zero_shot_restore` computes, from the same start."""

import pytest
import torch

from gctm_mini.models import build_model
from gctm_mini.parameterization import CouplingMoments
from gctm_mini.restoration import trajectory_start, zero_shot_restore
from gctm_mini.train_images import degradation_of, image_spec, make_config
from tests.literate import defined_functions, literate_namespace

COMPARED = {"my_zero_shot"}


@pytest.fixture(scope="module")
def ns():
    return literate_namespace("09")


@pytest.fixture(scope="module")
def digit_model():
    """The digit U-Net with random, visibly non-zero weights."""
    g = torch.Generator().manual_seed(0)
    model = build_model(image_spec(make_config("mnist_sr4"), 1), CouplingMoments(0.3, 1.0, 0.05))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def test_every_literate_function_is_compared_here():
    assert set(defined_functions("09")) == COMPARED


@pytest.mark.parametrize(
    "task, nfe, t_start",
    [("sr4", 1, 0.2), ("sr4", 3, 0.5), ("deblur", 2, 0.05), ("inpaint", 4, 1.0)],
)
def test_my_zero_shot_equals_zero_shot_restore(ns, digit_model, task, nfe, t_start):
    op = degradation_of(make_config(f"mnist_{task}"))
    x0 = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1
    y = op.clean(x0)
    x_start = trajectory_start(op, y, t_start, torch.Generator().manual_seed(2))
    with torch.no_grad():
        mine = ns["my_zero_shot"](digit_model, y, op, nfe, x_start, t_start)
        ref = zero_shot_restore(
            digit_model, y, op, nfe, t_start=t_start, generator=torch.Generator().manual_seed(2)
        )
    assert torch.allclose(mine, ref, atol=1e-6)
