import pytest
import torch

from gctm_mini.data2d import make_dataset
from gctm_mini.oracle import ExactGaussianFlow, GaussianMixtureOracle
from gctm_mini.sampling import gamma_sampling, sample_multistep

MU = torch.tensor([1.0, -0.5], dtype=torch.float64)
SIGMA = torch.tensor([[0.3, 0.1], [0.1, 0.2]], dtype=torch.float64)


def marginal(t: float):
    """x_t = (1 − t) X0 + t X1 for Gaussian X0: mean and covariance."""
    return (1 - t) * MU, (1 - t) ** 2 * SIGMA + t**2 * torch.eye(2, dtype=torch.float64)


@pytest.mark.parametrize("gamma", [0.0, 0.3, 0.7, 1.0])
@pytest.mark.parametrize("times", [[1.0, 0.7, 0.4], [1.0, 0.8, 0.5, 0.2, 0.05]])
def test_gamma_sampling_keeps_every_marginal_exact_on_gaussian_data(gamma, times):
    flow = ExactGaussianFlow(MU, SIGMA)
    x1 = torch.randn(200_000, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for k in range(2, len(times) + 1):  # stop at every t_{i+1} in turn
        x = gamma_sampling(flow, x1, times[:k], gamma, torch.Generator().manual_seed(k))
        m, c = marginal(times[k - 1])
        assert torch.allclose(x.mean(0), m, atol=0.01), (gamma, times[:k])
        assert torch.allclose(torch.cov(x.T), c, atol=0.01), (gamma, times[:k])


def test_gamma_sampling_ending_at_zero_gives_the_data_and_gamma_zero_is_deterministic():
    flow = ExactGaussianFlow(MU, SIGMA)
    x1 = torch.randn(100_000, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x = gamma_sampling(flow, x1, [1.0, 0.6, 0.3, 0.0], 0.5)
    assert torch.allclose(x.mean(0), MU, atol=0.01)
    assert torch.allclose(torch.cov(x.T), SIGMA, atol=0.01)
    a = gamma_sampling(flow, x1[:10], 3, 0.0)
    assert torch.allclose(a, sample_multistep(flow, x1[:10], 3))  # γ = 0 is plain multistep
    assert torch.allclose(a, flow.G(x1[:10], 1.0, 0.0), atol=1e-10)  # exact map: jumps compose


def test_gamma_sampling_rejects_bad_arguments():
    flow = ExactGaussianFlow(MU, SIGMA)
    with pytest.raises(ValueError, match="gamma"):
        gamma_sampling(flow, torch.zeros(2, 2), 2, 1.5)
    with pytest.raises(ValueError, match="descending"):
        gamma_sampling(flow, torch.zeros(2, 2), [0.2, 0.5], 0.0)


def test_multistep_with_the_exact_mixture_flow_map_composes():
    oracle = GaussianMixtureOracle(make_dataset("gmm"))
    x1 = torch.randn(50, 2, dtype=torch.float64)
    one = oracle.G(x1, 1.0, 0.0)
    four = gamma_sampling(oracle, x1, [1.0, 0.7, 0.4, 0.1, 0.0], 0.0)
    assert torch.allclose(one, four, atol=1e-5)
