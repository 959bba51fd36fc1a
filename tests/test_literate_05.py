"""Notebook 05's literate cells compute what the package computes: the (t, s, u) draw and the
one-jump share, the EMA teacher's Heun and Euler solves, the FM term, the GCTM loss (the solution of Exercise 1) and one training step,
each held equal to the package function it mirrors (same seed → same tensors)."""

from dataclasses import replace

import pytest
import torch

import gctm_mini as gm
from gctm_mini.consistency import gctm_loss
from gctm_mini.losses import fm_loss, sample_fm_times
from gctm_mini.randomness import Draws
from gctm_mini.solvers import _step, integrate_per_sample
from gctm_mini.timegrid import draw_tsu, fine_grid
from gctm_mini.training import Toy2DConfig, train2d
from tests.literate import defined_functions, literate_namespace

COMPARED = {
    "draw_tsu",
    "draw_times",
    "heun_step",
    "euler_step",
    "ema_solve",
    "fm_term",
    "my_gctm_loss",
    "train_step",
}


@pytest.fixture(scope="module")
def ns():
    return literate_namespace("05")


def draws(seed: int) -> Draws:
    return Draws(torch.Generator().manual_seed(seed))


def model_pair(dropout: float = 0.0, seed: int = 0):
    """A trained-looking (random, non-zero) model and a different EMA copy."""
    moments = gm.CouplingMoments(torch.tensor([0.8, 0.3]), 1.0, torch.tensor([0.1, 0.0]))
    nets = []
    for k in range(2):
        m = gm.build_model(gm.mlp_spec(2, 32, 2, dropout=dropout), moments)
        g = torch.Generator().manual_seed(100 * seed + k)
        with torch.no_grad():
            for p in m.parameters():
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
        nets.append(m.train())
    return nets


def batch(seed: int, n: int = 64):
    g = torch.Generator().manual_seed(seed)
    return gm.make_dataset("moons")(n, g), torch.randn(n, 2, generator=g)


def test_every_literate_function_is_compared_here():
    assert set(defined_functions("05")) == COMPARED


@pytest.mark.parametrize("snap", ["nearest", "up"])
@pytest.mark.parametrize("N, shift", [(4, 0.0), (16, 0.0), (16, 0.37), (64, 0.9)])
def test_draw_matches_timegrid_draw_tsu(ns, N, shift, snap):
    grid = fine_grid(N, dtype=torch.float32, shift=shift)
    mine = ns["draw_tsu"](grid, 500, draws(N), snap)
    ref = draw_tsu(grid, 500, draws(N), snap=snap)
    for a, b in zip(mine, ref, strict=True):
        assert torch.equal(a, b)


def test_draw_times_defaults_are_the_default_2d_gctm_run(ns):
    run = Toy2DConfig(method="gctm", coupling="ot").validate()  # the notebook's runs
    assert ns["RUN"] == run and run.jump_prob > 0 and run.ema_solver == "euler"
    grid = fine_grid(8, dtype=torch.float32)
    a = ns["draw_times"](grid, 300, draws(2))
    b = ns["draw_times"](grid, 300, draws(2), run.t_snap, run.jump_prob)
    for u, v in zip(a, b, strict=True):
        assert torch.equal(u, v)


@pytest.mark.parametrize("snap, jump_prob", [("nearest", 0.0), ("nearest", 0.25), ("up", 0.5)])
def test_draw_times_are_the_indices_gctm_loss_trains_on(ns, monkeypatch, snap, jump_prob):
    """The indices gctm_loss hands to its ODE solve (t_idx, u_idx) and the jumps it trains
    (s through model._G) are those of draw_times from the same rng."""
    seen = {}

    def spy(v, x, grid, start, end, method):
        seen["t"], seen["u"] = start.clone(), end.clone()
        return integrate_per_sample(v, x, grid, start, end, method)

    monkeypatch.setattr(gm.consistency, "integrate_per_sample", spy)
    grid = fine_grid(16, dtype=torch.float32, shift=0.2)
    model, ema = model_pair()
    x0, x1 = batch(3, 400)
    gctm_loss(model, ema, x0, x1, grid, t_snap=snap, jump_prob=jump_prob, rng=draws(5))
    t_idx, s_idx, u_idx = ns["draw_times"](grid, 400, draws(5), snap, jump_prob)
    assert torch.equal(seen["t"], t_idx) and torch.equal(seen["u"], u_idx)
    jumps = (t_idx == 16) & (s_idx == 0)
    if jump_prob == 0.0:
        assert float(jumps.float().mean()) < 0.01
    else:  # the share is drawn per sample: within 5 binomial standard deviations
        assert abs(float(jumps.float().mean()) - jump_prob) < 5 * (jump_prob / 400) ** 0.5


def test_heun_step_matches_the_solver_step_including_steps_onto_zero(ns):
    model, _ = model_pair()
    model.eval()
    x = torch.randn(6, 2)
    t = torch.tensor([0.9, 0.5, 0.2, 0.05, 0.3, 1.0])
    t_next = torch.tensor([0.7, 0.0, 0.1, 0.0, 0.6, 0.4])  # backwards, onto 0 and forwards
    with torch.no_grad():
        assert torch.equal(
            ns["heun_step"](model._velocity, x, t, t_next),
            _step(model._velocity, x, t, t_next, "heun"),
        )
        zero = torch.zeros(6)
        assert torch.equal(
            ns["heun_step"](model._velocity, x, t, zero),
            _step(model._velocity, x, t, zero, "heun"),
        )


def test_euler_step_matches_the_solver_step(ns):
    model, _ = model_pair()
    model.eval()
    x = torch.randn(6, 2)
    t = torch.tensor([0.9, 0.5, 0.2, 0.05, 0.3, 1.0])
    t_next = torch.tensor([0.7, 0.0, 0.1, 0.0, 0.6, 0.4])
    with torch.no_grad():
        assert torch.equal(
            ns["euler_step"](model._velocity, x, t, t_next),
            _step(model._velocity, x, t, t_next, "euler"),
        )


@pytest.mark.parametrize("method", ["euler", "heun"])
def test_ema_solve_matches_integrate_per_sample(ns, method):
    model, _ = model_pair()
    grid = fine_grid(16, dtype=torch.float32, shift=0.2)
    g = torch.Generator().manual_seed(3)
    start = torch.randint(0, 17, (200,), generator=g)
    end = torch.randint(0, 17, (200,), generator=g)  # either direction, some equal
    x = torch.randn(200, 2, generator=g)
    with torch.no_grad():
        mine = ns["ema_solve"](model._velocity, x, grid, start, end, method)
        ref = integrate_per_sample(model._velocity, x, grid, start, end, method)
        assert torch.equal(mine, ref)
        if method == ns["RUN"].ema_solver:  # the default is the default 2D run's solve
            assert torch.equal(ns["ema_solve"](model._velocity, x, grid, start, end), ref)


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_fm_term_matches_fm_loss_at_the_same_times_and_masks(ns, dropout):
    model, _ = model_pair(dropout)
    x0, x1 = batch(4)
    run = ns["RUN"]
    mine = ns["fm_term"](model, x0, x1, draws(5), 123)
    rng = draws(5)
    t = sample_fm_times(64, run.fm_times, None, rng, run.fm_source_prob)
    with rng.dropout(model, 124):
        ref = fm_loss(model, x0, x1, t)
    assert torch.equal(mine, ref)


@pytest.mark.parametrize("dropout, lam, N", [(0.0, 1.0, 4), (0.3, 1.0, 16), (0.0, 2.5, 8)])
def test_exercise_solution_is_gctm_loss_bit_for_bit(ns, dropout, lam, N):
    run = ns["RUN"]
    grid = fine_grid(N, dtype=torch.float32, shift=0.3)
    x0, x1 = batch(6)
    model, ema = model_pair(dropout, seed=1)
    torch.manual_seed(9)  # the EMA teacher in train mode draws its dropout from torch's RNG
    mine = ns["my_gctm_loss"](model, ema, x0, x1, grid, draws(7), lam)
    mine.backward()
    model_r, ema_r = model_pair(dropout, seed=1)
    torch.manual_seed(9)
    ref, _ = gctm_loss(
        model_r,
        ema_r,
        x0,
        x1,
        grid,
        lam=lam,
        fm_times=run.fm_times,
        fm_source_prob=run.fm_source_prob,
        t_snap=run.t_snap,
        jump_prob=run.jump_prob,
        solver=run.ema_solver,
        rng=draws(7),
    )
    ref.backward()
    assert torch.equal(mine, ref)
    for p, q in zip(model.parameters(), model_r.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad)
    assert all(p.grad is None for p in ema.parameters())


def test_exercise_solution_passes_its_check(ns):
    assert gm.checks.check_gctm_loss(ns["my_gctm_loss"])


def test_train_step_in_train2ds_loop_gives_train2ds_losses_and_weights(ns):
    """Three steps of the notebook's loop (train2d's set-up around train_step and the
    exercise's loss) against train2d itself: same losses and EMA weights, bit for bit."""
    cfg = Toy2DConfig(
        method="gctm", steps=2, hidden=32, depth=2, log_every=1, coupling="ot"
    ).validate()
    ref = train2d(replace(cfg), progress=False)
    data, source = gm.as_sampler(cfg.data), gm.as_sampler(cfg.source)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    moments = gm.training.estimate_moments(cfg, data, source, gen)
    model = gm.build_model(gm.training.model_spec(cfg), moments)
    ema = gm.ema.EMA(model, cfg.ema_decay)
    method = gm.methods.TrainingMethod(cfg, model)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: gm.training.lr_factor(cfg, k))
    losses = []
    for step in range(cfg.steps):
        x0, x1 = gm.training.draw_pairs(cfg, data, source, gen)
        losses.append(
            ns["train_step"](model, ema, opt, sched, method, x0, x1, step, ns["my_gctm_loss"])
        )
    assert losses == [r["loss"] for r in ref.history]
    for p, q in zip(ema.model.parameters(), ref.ema.parameters(), strict=True):
        assert torch.equal(p, q)
