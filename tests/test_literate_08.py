"""Notebook 08's literate cell (the solution of Exercise 1, the paired source of the
translation task) builds the source the training loop builds: ``Degradation("half")`` with
the hole noise, plus ε·z on every pixel (as :func:`gctm_mini.train_images.draw_image_batch`)."""

import pytest
import torch

from gctm_mini.degradations import Degradation
from gctm_mini.randomness import Draws
from gctm_mini.train_images import build_image_data, draw_image_batch, make_config
from tests.literate import defined_functions, literate_namespace

COMPARED = {"my_paired_source"}


@pytest.fixture(scope="module")
def ns():
    return literate_namespace("08")


def test_every_literate_function_is_compared_here():
    assert set(defined_functions("08")) == COMPARED


@pytest.mark.parametrize("eps", [0.0, 0.05, 0.7])
def test_my_paired_source_equals_the_degradation_plus_eps_z(ns, eps):
    g = torch.Generator().manual_seed(3)
    x0 = torch.rand(5, 1, 28, 28, generator=g) * 2 - 1
    hole, z = torch.randn(x0.shape, generator=g), torch.randn(x0.shape, generator=g)
    op = Degradation("half")
    mine = ns["my_paired_source"](x0, op.mask(x0), hole, z, eps)
    assert torch.equal(mine, op(x0, noise=hole) + eps * z)


def test_my_paired_source_builds_the_training_loops_source(ns):
    cfg = make_config("mnist_half")
    ds = build_image_data(cfg)
    x0, x1 = draw_image_batch(cfg, ds, Draws.for_step(cfg.seed, 0, stream=1), 8)
    rng = Draws.for_step(cfg.seed, 0, stream=1)  # the same stream, drawn in the same order
    rng.randint(0, len(ds), 8)
    hole = rng.randn(8, *x0.shape[1:])
    z = rng.randn(8, *x0.shape[1:])
    mine = ns["my_paired_source"](x0, Degradation("half").mask(x0), hole, z, cfg.eps)
    assert torch.allclose(mine, x1, atol=1e-6)
