import math

import pytest
import torch

from gctm_mini.solvers import integrate, integrate_per_sample, nfe_of, steps_for_nfe


def linear_field(a: float):
    """dx/dt = a·x, exact flow x(s) = x(t)·exp(a (s − t))."""
    return lambda x, t: a * x


def test_heun_converges_at_second_order_and_euler_at_first():
    x = torch.ones(3, 2, dtype=torch.float64)
    exact = math.exp(-1.3 * (0.1 - 1.0))
    for method, order in (("euler", 1), ("heun", 2)):
        errs = []
        for K in (16, 32, 64):
            times = torch.linspace(1.0, 0.1, K + 1, dtype=torch.float64)
            out = integrate(linear_field(-1.3), x, times, method)
            errs.append(float((out - exact).abs().max()))
        rates = [math.log2(errs[i] / errs[i + 1]) for i in range(2)]
        assert all(abs(r - order) < 0.1 for r in rates), (method, rates)


def test_heun_uses_euler_on_the_step_landing_at_zero():
    calls = []

    def v(x, t):
        calls.append(t.clone())
        return -x

    times = torch.tensor([1.0, 0.5, 0.0])
    integrate(v, torch.ones(2, 1), times, "heun")
    assert len(calls) == 3 == nfe_of(times, "heun")
    assert all(bool((c > 0).all()) for c in calls)  # never evaluated at t = 0


def test_steps_for_nfe():
    assert steps_for_nfe(8, "euler") == 8
    assert steps_for_nfe(8, "heun") == 4  # 2·4 − 1 = 7 ≤ 8
    assert steps_for_nfe(1, "heun") == 1


def test_per_sample_integration_matches_individual_solves():
    grid = torch.linspace(0, 1, 9, dtype=torch.float64)
    field = lambda x, t: torch.sin(3 * t)[:, None] * x + t[:, None]  # noqa: E731
    x = torch.randn(6, 2, dtype=torch.float64)
    start = torch.tensor([8, 8, 5, 3, 4, 2])
    end = torch.tensor([0, 4, 5, 0, 7, 1])  # includes a no-op and an upward move
    out = integrate_per_sample(field, x, grid, start, end, "heun")
    for b in range(6):
        if start[b] == end[b]:
            assert torch.equal(out[b], x[b])
            continue
        lo, hi = sorted((int(start[b]), int(end[b])))
        times = grid[lo : hi + 1] if end[b] > start[b] else grid[lo : hi + 1].flip(0)
        ref = integrate(field, x[b : b + 1], times, "heun")
        assert torch.allclose(out[b], ref[0], atol=1e-12), b


def test_solver_errors_are_clear():
    with pytest.raises(ValueError, match="ODE method"):
        integrate(lambda x, t: x, torch.ones(1, 1), torch.tensor([1.0, 0.0]), "rk45")
    with pytest.raises(ValueError, match="monotone"):
        integrate(lambda x, t: x, torch.ones(1, 1), torch.tensor([1.0, 0.2, 0.5]), "euler")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        integrate(lambda x, t: x, torch.ones(1, 1), torch.tensor([1.5, 0.0]), "euler")
    with pytest.raises(ValueError, match="index"):
        integrate_per_sample(
            lambda x, t: x,
            torch.ones(2, 1),
            torch.linspace(0, 1, 3),
            torch.tensor([5, 1]),
            torch.tensor([0, 0]),
        )
