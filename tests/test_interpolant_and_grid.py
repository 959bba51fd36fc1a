import math

import pytest
import torch

from gctm_mini.interpolant import (
    conditional_velocity,
    interpolate,
    log_sigma_clamped,
    sigma_from_t,
    t_from_sigma,
)
from gctm_mini.timegrid import coarse_grid, curriculum_N, draw_tsu, fine_grid, uniform_grid


def test_interpolant_endpoints_follow_the_convention():
    x0, x1 = torch.randn(5, 3), torch.randn(5, 3)
    assert torch.equal(interpolate(x0, x1, 0.0), x0)  # data at t = 0
    assert torch.equal(interpolate(x0, x1, 1.0), x1)  # source at t = 1
    t = torch.rand(5)
    xt = interpolate(x0, x1, t)
    assert torch.allclose(xt, (1 - t[:, None]) * x0 + t[:, None] * x1)


def test_conditional_velocity_is_time_derivative_of_interpolant():
    x0, x1 = torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    h = 1e-6
    fd = (interpolate(x0, x1, 0.3 + h) - interpolate(x0, x1, 0.3 - h)) / (2 * h)
    assert torch.allclose(fd, conditional_velocity(x0, x1), atol=1e-8)


def test_sigma_t_roundtrip_and_edm_identity():
    t = torch.linspace(0, 0.99, 50, dtype=torch.float64)
    assert torch.allclose(t_from_sigma(sigma_from_t(t)), t)
    assert float(t_from_sigma(torch.tensor(math.inf))) == 1.0
    x0, x1 = torch.randn(50, 1, dtype=torch.float64), torch.randn(50, 1, dtype=torch.float64)
    xt = interpolate(x0, x1, t)
    assert torch.allclose(xt / (1 - t[:, None]), x0 + sigma_from_t(t)[:, None] * x1)


def test_log_sigma_is_finite_at_both_ends():
    v = log_sigma_clamped(torch.tensor([0.0, 0.5, 1.0]))
    assert torch.isfinite(v).all()
    assert v[0] == pytest.approx(math.log(0.002), rel=1e-5)
    assert v[2] == pytest.approx(math.log(80.0), rel=1e-5)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_interpolate_rejects_bad_times(bad):
    with pytest.raises(ValueError):
        interpolate(torch.randn(2, 2), torch.randn(2, 2), bad)


def test_interpolate_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        interpolate(torch.randn(2, 2), torch.randn(2, 3), 0.5)
    with pytest.raises(ValueError, match="batch"):
        interpolate(torch.randn(2, 2), torch.randn(3, 2), 0.5)


def test_fine_grid_matches_edm_formula_and_is_forced_to_0_and_1():
    M = 16
    g = fine_grid(M, 0.002, 80.0, 7.0)
    assert g.shape == (M + 1,) and g[0] == 0 and g[-1] == 1
    assert (g[1:] > g[:-1]).all()
    i = 5
    a, b = 0.002 ** (1 / 7), 80 ** (1 / 7)
    sigma = (a + i / M * (b - a)) ** 7
    assert float(g[i]) == pytest.approx(sigma / (1 + sigma), rel=1e-12)


def test_coarse_grid_takes_every_kth_point():
    g = fine_grid(1024)
    c = coarse_grid(g, 4)
    assert torch.equal(c, g[::256]) and c.shape == (5,)
    with pytest.raises(ValueError):
        coarse_grid(g, 3)


def test_curriculum_doubles_then_caps():
    assert [curriculum_N(k, 4, 10, 32) for k in (0, 9, 10, 25, 30, 1000)] == [4, 4, 8, 16, 32, 32]


def test_draw_tsu_respects_t_gt_u_ge_s_and_covers_range():
    grid = coarse_grid(fine_grid(1024), 16)
    t, s, u = draw_tsu(grid, 20000)
    assert (t > u).all() and (u >= s).all() and (s >= 0).all() and (t <= 16).all()
    assert (u == s).any() and (u > s).any()
    # P(s) ∝ 1 − t_s
    counts = torch.bincount(s, minlength=16).float()
    w = 1 - grid[:16]
    assert torch.allclose(counts / counts.sum(), (w / w.sum()).float(), atol=0.01)


def test_uniform_grid():
    g = uniform_grid(4)
    assert torch.allclose(g, torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))


def reference_snap(grid, t_cont):
    """The reference code's discretization, written out: nearest node, then one node up
    wherever the distance to it is below t."""
    dist, idx = (t_cont[:, None] - grid[None]).abs().min(dim=1)
    return torch.where(dist < t_cont, (idx + 1).clamp(max=grid.shape[0] - 1), idx)


@pytest.mark.parametrize("sigma_max", [80.0, 500.0])
def test_up_snap_reproduces_the_reference_discretization_and_nearest_the_nearest_node(sigma_max):
    from gctm_mini.randomness import Draws

    grid = fine_grid(4, sigma_max=sigma_max, dtype=torch.float64)
    B = 20000
    draws = {snap: draw_tsu(grid, B, Draws.for_step(0, 5), snap) for snap in ("nearest", "up")}
    rng = Draws.for_step(0, 5)  # the same stream, replayed by hand
    s_idx = rng.categorical(1 - grid[:4], B)
    lam = rng.beta(1.2, 2.0, B).double()
    t_cont = lam + (1 - lam) * grid[s_idx]
    nearest = (t_cont[:, None] - grid[None]).abs().argmin(dim=1)
    for snap, idx in (("nearest", nearest), ("up", reference_snap(grid, t_cont))):
        t, s, u = draws[snap]
        assert torch.equal(s, s_idx)
        assert torch.equal(t, torch.maximum(idx, s_idx + 1)), snap
        assert bool(((s <= u) & (u < t)).all())
    t_up, t_near = draws["up"][0], draws["nearest"][0]
    assert float((t_up == 4).double().mean()) > 3 * float((t_near == 4).double().mean())


def test_unknown_t_snap_is_a_clear_error():
    from gctm_mini.methods import MethodFields

    with pytest.raises(ValueError, match="nearest"):
        draw_tsu(fine_grid(4), 8, snap="down")
    with pytest.raises(ValueError, match="t snap"):
        MethodFields(t_snap="down").check_method_fields()


def test_t_snap_auto_is_up_for_2d_translation_and_nearest_otherwise():
    from gctm_mini.train_images import make_config
    from gctm_mini.training import Toy2DConfig

    assert Toy2DConfig(method="gctm", source="8gaussians").validate().t_snap == "up"
    assert Toy2DConfig(method="gctm").validate().t_snap == "nearest"  # noise → data
    assert Toy2DConfig(method="gctm", source="8gaussians", t_snap="nearest").validate().t_snap == (
        "nearest"
    )
    for name in ("patches_cpu", "sr2_cpu", "colorize_cpu", "cifar10"):
        assert make_config(name).t_snap == "nearest", name
