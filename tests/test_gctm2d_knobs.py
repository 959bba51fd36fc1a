"""GCTM's one-jump share (``jump_prob``) and the CPU thread choice of 2D runs."""

from dataclasses import replace

import pytest
import torch

import gctm_mini.consistency as cons
from gctm_mini.consistency import gctm_loss
from gctm_mini.methods import MethodFields
from gctm_mini.models import build_model, mlp_spec
from gctm_mini.parameterization import CouplingMoments
from gctm_mini.randomness import Draws
from gctm_mini.runtime import resolve_threads, torch_threads
from gctm_mini.solvers import integrate_per_sample
from gctm_mini.timegrid import fine_grid
from gctm_mini.training import Toy2DConfig, train2d


def _models():
    torch.manual_seed(0)
    model = build_model(mlp_spec(2, 32, 2), CouplingMoments())
    torch.nn.init.normal_(model.net.out.weight, std=0.1)
    ema = build_model(mlp_spec(2, 32, 2), CouplingMoments()).eval()
    ema.load_state_dict(model.state_dict())
    return model, ema


def _solve_spy(monkeypatch):
    """Record the (start, end) grid indices of every EMA solve gctm_loss runs."""
    seen = []
    original = cons.integrate_per_sample

    def spy(v, x, grid, start, end, method="heun"):
        seen.append((start.clone(), end.clone()))
        return original(v, x, grid, start, end, method)

    monkeypatch.setattr(cons, "integrate_per_sample", spy)
    return seen


def _G_spy(monkeypatch, model, grad: bool):
    """Record ``(x, t, s, G)`` of every flow-map call made with autograd on (``grad``: the
    student's) or off (the target's)."""
    calls = []
    G = type(model)._G

    def record(self, x, t, s):
        out = G(self, x, t, s)
        if torch.is_grad_enabled() == grad:
            calls.append((x.clone(), t.clone(), s.clone(), out))
        return out

    monkeypatch.setattr(type(model), "_G", record)
    return calls


def test_jump_prob_one_trains_only_the_one_jump_map_from_the_source(monkeypatch):
    seen = _solve_spy(monkeypatch)
    model, ema = _models()
    student_calls = _G_spy(monkeypatch, model, grad=True)
    grid = fine_grid(8, dtype=torch.float32)
    x0, x1 = torch.randn(256, 2), torch.randn(256, 2)
    gctm_loss(model, ema, x0, x1, grid, jump_prob=1.0, rng=Draws(torch.Generator().manual_seed(1)))
    (_, t, s, _), ((start, end),) = student_calls[-1], seen
    assert bool((t == 1).all()) and bool((s == 0).all())
    assert bool((start == 8).all())
    # u covers the whole grid below t = 1
    assert set(end.tolist()) == set(range(8))


def test_jump_u_zero_distils_the_whole_ema_solve_from_the_source(monkeypatch):
    seen = _solve_spy(monkeypatch)
    model, ema = _models()
    targets = _G_spy(monkeypatch, model, grad=False)
    grid = fine_grid(8, dtype=torch.float32)
    x0, x1 = torch.randn(256, 2), torch.randn(256, 2)
    rng = Draws(torch.Generator().manual_seed(1))
    gctm_loss(model, ema, x0, x1, grid, jump_prob=1.0, jump_u="zero", rng=rng)
    ((start, end),) = seen
    assert bool((start == 8).all()) and bool((end == 0).all())
    # the target is G(x_u, 0, 0) = x_u: the EMA Heun solve from X1 at t = 1 down to 0
    xu, u, s, target = targets[-1]
    assert bool((u == 0).all()) and bool((s == 0).all())
    with torch.no_grad():
        full = integrate_per_sample(
            ema._velocity, x1, grid, torch.full((256,), 8), torch.zeros(256, dtype=torch.long)
        )
    torch.testing.assert_close(target, full)
    torch.testing.assert_close(xu, full)


def test_jump_u_is_checked():
    model, ema = _models()
    grid = fine_grid(4, dtype=torch.float32)
    x = torch.randn(8, 2)
    with pytest.raises(ValueError, match="unknown jump_u 'one'; choose one of: uniform, zero"):
        gctm_loss(model, ema, x, x, grid, jump_prob=0.5, jump_u="one")
    with pytest.raises(ValueError, match="unknown jump_u"):
        MethodFields(jump_u="one").check_method_fields()


def test_jump_prob_zero_leaves_the_draws_and_the_loss_unchanged(monkeypatch):
    model, ema = _models()
    grid = fine_grid(8, dtype=torch.float32)
    x0, x1 = torch.randn(128, 2), torch.randn(128, 2)

    def loss(**kw):
        return gctm_loss(
            model, ema, x0, x1, grid, rng=Draws(torch.Generator().manual_seed(3)), **kw
        )[0]

    assert torch.equal(loss(), loss(jump_prob=0.0))
    assert not torch.equal(loss(), loss(jump_prob=0.5))


def test_jump_prob_share_matches_its_setting(monkeypatch):
    seen = _solve_spy(monkeypatch)
    model, ema = _models()
    grid = fine_grid(16, dtype=torch.float32)
    x0, x1 = torch.randn(4000, 2), torch.randn(4000, 2)
    gctm_loss(model, ema, x0, x1, grid, jump_prob=0.25, rng=Draws(torch.Generator().manual_seed(0)))
    start = seen[0][0]
    share = float((start == 16).float().mean())
    # without the share, t = 1 is drawn for well under 1 % of samples at N = 16
    assert abs(share - 0.25) < 0.03


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_jump_prob_outside_unit_interval_is_refused(bad):
    with pytest.raises(ValueError, match="jump_prob must be a number in"):
        MethodFields(jump_prob=bad).check_method_fields()


def test_jump_prob_auto_is_the_2d_default_from_noise_and_off_for_translation():
    from gctm_mini.methods import DEFAULT_JUMP_PROB_2D

    assert Toy2DConfig(method="gctm").validate().jump_prob == DEFAULT_JUMP_PROB_2D == 0.25
    assert Toy2DConfig(method="gctm", source="circles").validate().jump_prob == 0.0
    assert Toy2DConfig(method="gctm", jump_prob=0.0).validate().jump_prob == 0.0
    with pytest.raises(ValueError, match="jump_prob must be a number in"):
        Toy2DConfig(method="gctm", jump_prob=-0.5).validate()


def test_lr_auto_is_the_method_default_and_an_explicit_lr_is_kept():
    from gctm_mini.methods import DEFAULT_LAM_2D, DEFAULT_LR_2D

    assert Toy2DConfig(method="gctm").validate().lr == DEFAULT_LR_2D["gctm"] == 4e-3
    for method in ("fm", "ct", "bcm"):
        assert Toy2DConfig(method=method).validate().lr == 2e-3
    assert Toy2DConfig(method="gctm", lr=1e-3).validate().lr == 1e-3
    assert Toy2DConfig(method="gctm").lam == DEFAULT_LAM_2D == 2.0
    with pytest.raises(ValueError, match=r"lr must be a number in \(0, 1e\+38\] or 0"):
        Toy2DConfig(method="gctm", lr=-1e-3).validate()


def test_resolve_threads_auto_is_one_and_negative_is_refused():
    assert resolve_threads(0) == 1
    assert resolve_threads(3) == 3
    with pytest.raises(ValueError, match="threads must be"):
        resolve_threads(-1)
    with pytest.raises(ValueError, match="threads must be"):
        Toy2DConfig(threads=-2).validate()


def test_train2d_runs_with_the_configured_threads_and_restores_the_count():
    seen = []
    with torch_threads(2):
        train2d(
            Toy2DConfig(method="fm", steps=4, hidden=16, depth=1, log_every=2),
            progress=False,
            callback=lambda step, ema: seen.append(torch.get_num_threads()) or {},
            callback_every=2,
        )
        assert torch.get_num_threads() == 2
    assert seen == [1, 1]


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_ema_solver_knob_sets_the_ode_method_of_the_ema_solve(monkeypatch, solver):
    from gctm_mini.methods import TrainingMethod

    methods_seen = []
    original = cons.integrate_per_sample

    def spy(v, x, grid, start, end, method="heun"):
        methods_seen.append(method)
        return original(v, x, grid, start, end, method)

    monkeypatch.setattr(cons, "integrate_per_sample", spy)
    cfg = Toy2DConfig(method="gctm", ema_solver=solver, n_start=8, n_cap=8).validate()
    model, ema = _models()
    x0, x1 = torch.randn(64, 2), torch.randn(64, 2)
    TrainingMethod(cfg, model).loss(model, ema, x0, x1, 0, Draws(torch.Generator().manual_seed(2)))
    assert methods_seen == [solver]


@pytest.mark.parametrize(
    ("kw", "solver", "n_cap"),
    [
        ({"method": "gctm", "coupling": "ot"}, "euler", 8),  # from noise with OT: measured
        ({"method": "gctm", "coupling": "ot", "n_start": 16}, "euler", 16),  # ≥ n_start
        ({"method": "gctm"}, "heun", 16),  # independent coupling: curved paths, the paper's
        ({"method": "gctm", "coupling": "sinkhorn"}, "heun", 16),  # unmeasured: the paper's
        ({"method": "gctm", "coupling": "ot", "source": "8gaussians"}, "heun", 16),  # translation
        ({"method": "ct", "coupling": "ot"}, "euler", 16),  # other methods keep N ≤ 16
        ({"method": "gctm", "coupling": "ot", "ema_solver": "heun", "n_cap": 32}, "heun", 32),
    ],
)
def test_auto_ema_solver_and_n_cap_resolve_per_source_and_method(kw, solver, n_cap):
    cfg = Toy2DConfig(**kw).validate()
    assert (cfg.ema_solver, cfg.n_cap) == (solver, n_cap)
    assert cfg == replace(cfg).validate()  # resolving is idempotent: a stored config is final


def test_ema_solver_changes_the_target_and_is_refused_outside_its_choices():
    model, ema = _models()
    grid = fine_grid(8, dtype=torch.float32)
    x0, x1 = torch.randn(128, 2), torch.randn(128, 2)

    def loss(solver):
        rng = Draws(torch.Generator().manual_seed(3))
        return gctm_loss(model, ema, x0, x1, grid, solver=solver, rng=rng)[0]

    assert not torch.equal(loss("euler"), loss("heun"))
    with pytest.raises(ValueError, match="ema_solver") as err:
        Toy2DConfig(method="gctm", ema_solver="rk4").validate()
    assert "\n" not in str(err.value)
