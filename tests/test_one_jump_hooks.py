"""The one-jump study's screen hooks (``benchmarks/one_jump.py``): variants that are not
config fields, applied inside a job's own process."""

import math

import pytest
import torch

import gctm_mini.consistency as cons
import gctm_mini.models as models
import gctm_mini.training as training
from gctm_mini.models import build_model, mlp_spec
from gctm_mini.parameterization import CouplingMoments


@pytest.fixture(scope="module")
def one_jump(load_script):
    return load_script("benchmarks/one_jump.py", "one_jump_benchmark")


def test_fourier_x_hook_feeds_sin_and_cos_of_random_frequencies(one_jump, monkeypatch):
    monkeypatch.setitem(models.NETWORKS, "mlp", models.NETWORKS["mlp"])  # restored afterwards
    monkeypatch.setattr(training, "EMA", training.EMA)  # _install_hooks also wraps the EMA
    over = one_jump.parse_variant("xff3")
    one_jump._install_hooks(over)
    assert over == {}  # the hook's key never reaches the config
    torch.manual_seed(0)
    model = build_model(mlp_spec(2, 32, 2), CouplingMoments())
    net = model.net
    assert net.body[0].in_features == 2 + 64 + 2 * 32  # x, 32 sin + 32 cos, two time embeddings
    # frequencies: fixed N(0, 3²) draws, the same in every process
    assert net.freqs.shape == (2, 32) and 2.0 < float(net.freqs.std()) < 4.0
    x = torch.randn(5, 2)
    c = torch.rand(5)
    z = 2 * math.pi * x @ net.freqs
    h = torch.cat([x, z.sin(), z.cos(), net.embed(c), net.embed(c)], dim=1)
    torch.testing.assert_close(net(x, c, c), net.out(net.body(h)))
    # the boundary condition still holds through the parameterization
    t = torch.full((5,), 0.7)
    torch.testing.assert_close(model.G(x, t, t), x)


def test_huber_c_hook_sets_the_2d_pseudo_huber_c(one_jump, monkeypatch):
    monkeypatch.setattr(cons, "HUBER_SCALE", cons.HUBER_SCALE)  # restored afterwards
    monkeypatch.setattr(training, "EMA", training.EMA)
    over = one_jump.parse_variant("hc05")
    one_jump._install_hooks(over)
    assert over == {}
    assert cons.huber_c(torch.zeros(3, 2)) == pytest.approx(0.05)
