"""Notebook 01's literate cells are the package's code: the FM loss, the training step and
loop (same seed → the same run as ``train2d``, bit for bit) and the Euler/Heun samplers."""

import pytest
import torch

import gctm_mini as gm
from gctm_mini.training import Toy2DConfig, train2d
from tests.literate import defined_functions, literate_namespace

COMPARED = {"fm_loss", "train_fm", "ema_update", "fm_train_step", "euler_sample", "heun_sample"}


@pytest.fixture(scope="module")
def nb():
    return literate_namespace("01")


def _model(seed: int, moments=None):
    torch.manual_seed(seed)
    m = gm.build_model(gm.mlp_spec(2, 32, 2), moments or gm.CouplingMoments(0.7, 1.1, 0.2))
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return m


def test_every_literate_function_is_compared():
    assert set(defined_functions("01")) == COMPARED


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fm_loss_equals_package_loss(nb, seed):
    g = torch.Generator().manual_seed(seed)
    x0, x1 = torch.randn(64, 2, generator=g) * 2, torch.randn(64, 2, generator=g)
    t = torch.rand(64, generator=g)
    t[:3] = torch.tensor([0.0, 1.0, 1e-5])
    moments = gm.CouplingMoments.estimate(x0, x1) if seed else None
    model = _model(seed, moments)
    assert torch.equal(nb["fm_loss"](model, x0, x1, t), gm.losses.fm_loss(model, x0, x1, t))


def test_ema_update_equals_package_ema(nb):
    model, ema = _model(0), gm.ema.EMA(_model(1), 0.9)
    mine = gm.ema.EMA(_model(1), 0.9).model
    ema.update(model)
    nb["ema_update"](mine, model, 0.9)
    for a, b in zip(mine.state_dict().values(), ema.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("fm_times", ["uniform", "lognormal"])
def test_training_loop_with_package_step_is_train2d(nb, fm_times):
    """The same seed gives the same loss at every step and the same weights as train2d."""
    cfg = Toy2DConfig(
        method="fm",
        data="gmm",
        steps=25,
        hidden=32,
        depth=2,
        log_every=1,
        seed=3,
        fm_times=fm_times,
    )
    run = train2d(cfg, progress=False)
    model, ema, losses = nb["train_fm"](cfg, nb["fm_train_step"], nb["fm_loss"])
    assert losses == [r["loss"] for r in run.history]
    for mine, theirs in ((model, run.model), (ema, run.ema)):
        for a, b in zip(mine.state_dict().values(), theirs.state_dict().values(), strict=True):
            assert torch.equal(a, b)


@pytest.mark.parametrize("nfe", [1, 2, 3, 4, 7, 8])
def test_samplers_equal_sample_ode(nb, nfe):
    model = _model(4).eval()
    x1 = torch.randn(50, 2, generator=torch.Generator().manual_seed(nfe))
    with torch.no_grad():
        for name, method in (("euler_sample", "euler"), ("heun_sample", "heun")):
            mine = nb[name](model._velocity, x1, nfe)
            assert torch.equal(mine, gm.sample_ode(model, x1, nfe, method)), (name, nfe)


def test_one_exact_euler_step_lands_on_the_data_mean(nb):
    data = gm.make_dataset("gmm")
    oracle = gm.GaussianMixtureOracle(data)
    x1 = torch.randn(100, 2, dtype=torch.float64)
    one = nb["euler_sample"](oracle.velocity, x1, 1)
    mean = (data.weights[:, None] * data.means).sum(0)
    assert float((one - mean).abs().max()) < 1e-12
