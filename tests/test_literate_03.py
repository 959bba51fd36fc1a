"""The literate cells of notebook 03 compute what the package computes: every function they
define is compared here with the package function it mirrors (same inputs and draws → same
values and gradients), so the notebook cannot drift from the code the benchmarks run."""

import pytest
import torch

import gctm_mini as gm
from gctm_mini import consistency
from gctm_mini.randomness import Draws
from gctm_mini.timegrid import fine_grid
from tests.literate import defined_functions, literate_namespace

COMPARED = {
    "interpolate",
    "sigma",
    "huber_c",
    "pseudo_huber",
    "ict_index_probs",
    "cd_loss",
    "my_ct_loss",
}


@pytest.fixture(scope="module")
def nb():
    return literate_namespace("03")


def test_every_literate_function_of_notebook_03_is_compared_here():
    assert set(defined_functions("03")) == COMPARED


def model_with_dropout(p=0.2, seed=0):
    torch.manual_seed(seed)
    model = gm.build_model(gm.mlp_spec(2, 32, 2, dropout=p), gm.CouplingMoments(v0=0.6))
    return model.train()


def batch(n=64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=g) * 0.8 + 0.3, torch.randn(n, 2, generator=g)


def loss_and_grads(model, fn):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(9)  # any pass outside the seeded dropout keys draws from here
    out = fn()
    loss = out[0] if isinstance(out, tuple) else out
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


def assert_same(a, b):
    (la, ga), (lb, gb) = a, b
    assert torch.allclose(la, lb, rtol=1e-6, atol=1e-7), (la, lb)
    for u, v in zip(ga, gb, strict=True):
        assert torch.allclose(u, v, rtol=1e-5, atol=1e-7)


def test_interpolant_sigma_and_distance_match_the_package(nb):
    x0, x1 = batch(8)
    t = torch.tensor([0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99, 1.0])
    assert torch.equal(nb["interpolate"](x0, x1, t), gm.interpolate(x0, x1, t))
    for smax in (80.0, 500.0):
        assert torch.equal(nb["sigma"](t, smax), consistency._sigma(t, smax))
    assert torch.equal(nb["sigma"](t), consistency._sigma(t))
    images = torch.zeros(3, 3, 8, 8)
    assert nb["huber_c"](x0) == consistency.huber_c(x0)
    assert nb["huber_c"](images) == consistency.huber_c(images)
    delta = torch.randn(5, 3, 4, 4)
    assert torch.equal(nb["pseudo_huber"](delta, 0.01), consistency.pseudo_huber(delta, 0.01))


@pytest.mark.parametrize("N", [1, 4, 16])
@pytest.mark.parametrize("shift", [0.0, 0.37])
def test_ict_interval_probabilities_match_the_package(nb, N, shift):
    grid = fine_grid(N, dtype=torch.float32, shift=shift)
    assert torch.equal(nb["ict_index_probs"](grid), consistency.ict_index_probs(grid))
    assert torch.equal(
        nb["ict_index_probs"](grid, -0.5, 1.0), consistency.ict_index_probs(grid, -0.5, 1.0)
    )


@pytest.mark.parametrize("p", [0.0, 0.2])
def test_cd_loss_of_the_notebook_is_the_package_cd_loss(nb, p):
    model = model_with_dropout(p)
    target = model_with_dropout(p, seed=1).eval()
    teacher = model_with_dropout(0.0, seed=2).eval()
    x0, x1 = batch()
    grid = fine_grid(16, dtype=torch.float32, shift=0.3)

    def run(fn):
        return loss_and_grads(
            model,
            lambda: fn(
                model, target, teacher, x0, x1, grid, Draws(torch.Generator().manual_seed(5))
            ),
        )

    assert_same(run(nb["cd_loss"]), run(lambda *a: consistency.cd_loss(*a[:6], rng=a[6])))
    assert not target.training  # the target network's mode is left as it was


@pytest.mark.parametrize("p", [0.0, 0.2])
@pytest.mark.parametrize("sigma_max", [80.0, 500.0])
def test_ct_loss_of_the_notebook_is_the_package_ct_loss(nb, p, sigma_max):
    model = model_with_dropout(p)
    x0, x1 = batch()
    for N in (1, 4, 16):
        grid = fine_grid(N, dtype=torch.float32, sigma_max=sigma_max, shift=0.6)

        def run(fn, grid=grid, N=N):
            return loss_and_grads(
                model,
                lambda: fn(model, x0, x1, grid, sigma_max, Draws(torch.Generator().manual_seed(N))),
            )

        assert_same(run(nb["my_ct_loss"]), run(lambda *a: consistency.ct_loss(*a[:5], rng=a[5])))


def test_the_notebook_ct_loss_uses_the_global_stream_as_the_package_does(nb):
    model = model_with_dropout(0.0)
    x0, x1 = batch()
    grid = fine_grid(8, dtype=torch.float32)
    torch.manual_seed(11)
    mine = nb["my_ct_loss"](model, x0, x1, grid)
    after_mine = torch.rand(())
    torch.manual_seed(11)
    ref = consistency.ct_loss(model, x0, x1, grid)[0]
    assert torch.equal(mine, ref) and torch.equal(after_mine, torch.rand(()))
