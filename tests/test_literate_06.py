"""Notebook 06's literate cells compute what the package computes: the bidirectional map,
BCM's time probabilities and loss, one training step, the round trip and zigzag sampling, each
held equal to the package function it mirrors (same seed → same tensors)."""

from dataclasses import replace

import pytest
import torch

import gctm_mini as gm
from gctm_mini import consistency, sampling
from gctm_mini.randomness import Draws
from gctm_mini.timegrid import edm_times, fine_grid
from gctm_mini.training import Toy2DConfig, train2d
from tests.literate import defined_functions, literate_namespace

COMPARED = {
    "bidirectional_G",
    "sigma",
    "ict_index_probs",
    "tau_probs",
    "bcm_loss",
    "train_step",
    "regenerate",
    "round_trip",
    "zigzag",
}


@pytest.fixture(scope="module")
def ns():
    return literate_namespace("06")


def draws(seed: int) -> Draws:
    return Draws(torch.Generator().manual_seed(seed))


def bcm_model(dropout: float = 0.0, seed: int = 0):
    """A bidirectional model with random (non-zero) weights, in train mode."""
    moments = gm.CouplingMoments(torch.tensor([0.8, 0.3]), 1.0, torch.tensor([0.1, 0.0]))
    m = gm.build_model(gm.mlp_spec(2, 32, 2, dropout=dropout, bidirectional=True), moments)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return m.train()


def batch(seed: int, n: int = 64):
    g = torch.Generator().manual_seed(seed)
    return gm.make_dataset("moons")(n, g), torch.randn(n, 2, generator=g)


def test_every_literate_function_is_compared_here():
    assert set(defined_functions("06")) == COMPARED


def test_bidirectional_map_is_the_models_in_both_directions(ns):
    model = bcm_model().eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(50, 2, generator=g)
    t, s = torch.rand(50, generator=g), torch.rand(50, generator=g)  # s > t and s < t
    t[:5], s[5:10] = 0.0, 1.0
    with torch.no_grad():
        assert torch.equal(ns["bidirectional_G"](model, x, t, s), model._G(x, t, s))


def test_sigma_and_ict_probabilities_match_the_package(ns):
    grid = fine_grid(16, dtype=torch.float32, shift=0.4)
    for sm in (80.0, 500.0):
        assert torch.equal(ns["sigma"](grid, sm), consistency._sigma(grid, sm))
    assert torch.equal(ns["ict_index_probs"](grid), consistency.ict_index_probs(grid))


def test_tau_probabilities_match_bcm_tau_probs(ns):
    probs = consistency.ict_index_probs(fine_grid(8, dtype=torch.float32))
    n = torch.arange(8)  # every interval, the last one included
    assert torch.equal(ns["tau_probs"](probs, n), consistency.bcm_tau_probs(probs, n))


@pytest.mark.parametrize("dropout, N", [(0.0, 4), (0.3, 16)])
def test_bcm_loss_is_the_packages_bit_for_bit(ns, dropout, N):
    grid = fine_grid(N, dtype=torch.float32, shift=0.25)
    x0, x1 = batch(2)
    model = bcm_model(dropout, seed=3)
    mine, logs = ns["bcm_loss"](model, x0, x1, grid, 80.0, draws(4))
    mine.backward()
    model_r = bcm_model(dropout, seed=3)
    ref, ref_logs = consistency.bcm_loss(model_r, x0, x1, grid, 80.0, rng=draws(4))
    ref.backward()
    assert torch.equal(mine, ref) and logs == ref_logs
    for p, q in zip(model.parameters(), model_r.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad)


def test_train_step_in_train2ds_loop_gives_train2ds_losses_and_weights(ns):
    cfg = Toy2DConfig(method="bcm", steps=2, hidden=32, depth=2, log_every=1).validate()
    ref = train2d(replace(cfg), progress=False)
    data, source = gm.as_sampler(cfg.data), gm.as_sampler(cfg.source)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    moments = gm.training.estimate_moments(cfg, data, source, gen)
    spec = gm.mlp_spec(2, cfg.hidden, cfg.depth, sigma_max=cfg.sigma_max, bidirectional=True)
    model = gm.build_model(spec, moments)
    ema = gm.ema.EMA(model, cfg.ema_decay)
    method = gm.methods.TrainingMethod(cfg, model)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: gm.training.lr_factor(cfg, k))
    rows = []
    for step in range(cfg.steps):
        x0, x1 = gm.training.draw_pairs(cfg, data, source, gen)
        rows.append(ns["train_step"](model, ema, opt, sched, method, x0, x1, step, ns["bcm_loss"]))
    assert [(loss, logs["ct"], logs["soft"]) for loss, logs in rows] == [
        (r["loss"], r["ct"], r["soft"]) for r in ref.history
    ]
    for p, q in zip(ema.model.parameters(), ref.ema.parameters(), strict=True):
        assert torch.equal(p, q)


def test_regenerate_is_sample_multistep(ns):
    model = bcm_model().eval()
    z = torch.randn(40, 2, generator=torch.Generator().manual_seed(5))
    times = edm_times(4, 0.02, model.sigma_max).flip(0).clone()
    times[-1] = 0.0
    assert torch.equal(
        ns["regenerate"](model, z, times), sampling.sample_multistep(model, z, times)
    )


@pytest.mark.parametrize("k", [1, 3, 8])
def test_round_trip_with_bcm_invert_is_bcm_round_trip(ns, k):
    model = bcm_model().eval()
    x0, _ = batch(6, 40)
    mine = ns["round_trip"](
        model, x0, k, 0.02, torch.Generator().manual_seed(7), sampling.bcm_invert
    )
    ref = sampling.bcm_round_trip(model, x0, k, 0.02, torch.Generator().manual_seed(7))
    for a, b in zip(mine, ref, strict=True):
        assert torch.equal(a, b)


def test_zigzag_is_bcm_zigzag(ns):
    model = bcm_model().eval()
    x1 = torch.randn(40, 2, generator=torch.Generator().manual_seed(8))
    for times in ([0.5], [0.8, 0.6, 0.3]):
        mine = ns["zigzag"](model, x1, times, 0.02, torch.Generator().manual_seed(9))
        ref = sampling.bcm_zigzag(model, x1, times, 0.02, torch.Generator().manual_seed(9))
        assert torch.equal(mine, ref)
