import pytest
import torch

from gctm_mini.data2d import GaussianMixture, eight_gaussians, make_dataset
from gctm_mini.oracle import GaussianMixtureOracle, gaussian_flow_map, gaussian_velocity
from gctm_mini.solvers import integrate

MU = torch.tensor([0.7, -0.4], dtype=torch.float64)
SIGMA = torch.tensor([[0.5, 0.2], [0.2, 0.3]], dtype=torch.float64)


def single_gaussian():
    return GaussianMixture([1.0], MU[None], SIGMA[None])


def test_oracle_velocity_equals_closed_form_for_one_gaussian():
    oracle = GaussianMixtureOracle(single_gaussian())
    x = torch.randn(64, 2, dtype=torch.float64)
    for t in (0.0, 0.1, 0.5, 0.9, 1.0):
        v = oracle.velocity(x, t)
        assert torch.allclose(v, gaussian_velocity(x, t, MU, SIGMA), atol=1e-10), t


def test_closed_form_velocity_is_conditional_expectation_monte_carlo():
    # v(x, t) = E[X1 − X0 | x_t = x]: regress X1 − X0 on x_t (linear for Gaussians)
    g = torch.Generator().manual_seed(0)
    n, t = 400_000, 0.4
    x0 = MU + torch.randn(n, 2, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(SIGMA).T
    x1 = torch.randn(n, 2, generator=g, dtype=torch.float64)
    xt = (1 - t) * x0 + t * x1
    A = torch.cat([xt, torch.ones(n, 1, dtype=torch.float64)], 1)
    coef = torch.linalg.lstsq(A, x1 - x0).solution
    probe = torch.tensor([[0.3, 0.1], [-0.5, 0.8]], dtype=torch.float64)
    mc = torch.cat([probe, torch.ones(2, 1, dtype=torch.float64)], 1) @ coef
    assert torch.allclose(mc, gaussian_velocity(probe, t, MU, SIGMA), atol=0.03)


def test_closed_form_flow_map_solves_the_ode_and_is_a_group():
    x = torch.randn(32, 2, dtype=torch.float64)
    times = torch.linspace(0.9, 0.05, 401, dtype=torch.float64)
    ode = integrate(lambda y, t: gaussian_velocity(y, t, MU, SIGMA), x, times, "heun")
    assert torch.allclose(ode, gaussian_flow_map(x, 0.9, 0.05, MU, SIGMA), atol=1e-5)
    mid = gaussian_flow_map(x, 0.9, 0.4, MU, SIGMA)
    assert torch.allclose(
        gaussian_flow_map(mid, 0.4, 0.05, MU, SIGMA),
        gaussian_flow_map(x, 0.9, 0.05, MU, SIGMA),
        atol=1e-12,
    )
    assert torch.allclose(gaussian_flow_map(x, 0.3, 0.3, MU, SIGMA), x, atol=1e-14)


def test_oracle_flow_map_matches_closed_form_for_one_gaussian():
    oracle = GaussianMixtureOracle(single_gaussian())
    x = torch.randn(50, 2, dtype=torch.float64)
    for t, s in ((1.0, 0.0), (0.8, 0.3), (0.5, 0.0), (0.2, 0.6)):
        assert torch.allclose(
            oracle.flow_map(x, t, s), gaussian_flow_map(x, t, s, MU, SIGMA), atol=1e-7
        ), (t, s)


def test_mixture_flow_map_is_converged_and_transports_marginals():
    oracle = GaussianMixtureOracle(make_dataset("gmm"))
    g = torch.Generator().manual_seed(1)
    x1 = torch.randn(2000, 2, generator=g, dtype=torch.float64)
    a = oracle.flow_map(x1, 1.0, 0.0, steps=200)
    b = oracle.flow_map(x1, 1.0, 0.0, steps=800)
    assert float((a - b).abs().max()) < 1e-6
    # the pushed-forward source has the data's moments and mode weights (W2 between finite
    # samples of separated modes is dominated by mode-count noise, so moments are the test)
    x1 = torch.randn(20000, 2, generator=g, dtype=torch.float64)
    push = oracle.flow_map(x1, 1.0, 0.0, steps=100)
    assert torch.allclose(push.mean(0), oracle.gmm.mean(), atol=0.03)
    assert torch.allclose(torch.cov(push.T), oracle.gmm.covariance(), atol=0.05)
    resp, _, _ = oracle._posterior(push, torch.zeros(len(push), dtype=torch.float64))
    assert torch.allclose(resp.mean(0), oracle.gmm.weights, atol=0.015)
    x1 = x1[:4]
    # per-sample (t, s), both directions, including the identity
    t = torch.tensor([0.9, 0.5, 0.3, 0.7])
    s = torch.tensor([0.1, 0.5, 0.8, 0.0])
    out = oracle.flow_map(x1[:4], t, s)
    assert torch.allclose(out[1], x1[1])
    back = oracle.flow_map(out, s, t)
    assert torch.allclose(back, x1[:4], atol=1e-6)


def test_eight_gaussians_exposes_parameters():
    g = eight_gaussians()
    assert g.weights.shape == (8,) and g.means.shape == (8, 2) and g.covs.shape == (8, 2, 2)
    x = g.sample(100_000, torch.Generator().manual_seed(0)).double()
    assert torch.allclose(x.mean(0), g.mean(), atol=0.02)
    assert torch.allclose(torch.cov(x.T), g.covariance(), atol=0.03)


def test_oracle_rejects_non_mixture_and_bad_input():
    with pytest.raises(TypeError):
        GaussianMixtureOracle(make_dataset("moons"))
    oracle = GaussianMixtureOracle(eight_gaussians())
    with pytest.raises(ValueError):
        oracle.velocity(torch.randn(3, 3), 0.5)
    with pytest.raises(ValueError):
        oracle.velocity(torch.full((3, 2), float("nan")), 0.5)
    with pytest.raises(ValueError):
        oracle.flow_map(torch.randn(3, 2), 1.2, 0.0)


def test_posterior_draws_have_the_closed_form_moments_of_one_gaussian():
    # X0 | x_t = x ~ N(μ + (1 − t)Σ C⁻¹(x − (1 − t)μ), Σ − (1 − t)²Σ C⁻¹Σ), C = (1 − t)²Σ + t²I
    oracle = GaussianMixtureOracle(single_gaussian())
    x = torch.tensor([[0.3, -1.0], [1.5, 0.2]], dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    for t in (0.2, 0.6, 1.0):
        C = (1 - t) ** 2 * SIGMA + t**2 * torch.eye(2, dtype=torch.float64)
        mean = MU + (1 - t) * (SIGMA @ torch.linalg.solve(C, (x - (1 - t) * MU).T)).T
        cov = SIGMA - (1 - t) ** 2 * SIGMA @ torch.linalg.solve(C, SIGMA)
        draws = oracle.sample_posterior(x, t, 200_000, g)
        assert draws.shape == (2, 200_000, 2)
        for b in range(2):
            assert torch.allclose(draws[b].mean(0), mean[b], atol=0.01), t
            assert torch.allclose(torch.cov(draws[b].T), cov, atol=0.01), t


def test_posterior_draws_of_a_mixture_average_to_the_posterior_mean_and_are_exact_at_t0():
    oracle = GaussianMixtureOracle(make_dataset("gmm"))
    g = torch.Generator().manual_seed(4)
    x = torch.tensor([[0.0, 0.5], [-1.0, 0.0], [1.0, 1.5]], dtype=torch.float64)
    draws = oracle.sample_posterior(x, 0.5, 100_000, g)
    assert torch.allclose(draws.mean(1), oracle.posterior_mean(x, 0.5), atol=0.01)
    assert torch.allclose(
        oracle.sample_posterior(x, 0.0, 3, g), x[:, None].expand(3, 3, 2), atol=1e-12
    )
    with pytest.raises(ValueError, match="draws"):
        oracle.sample_posterior(x, 0.5, 0)
