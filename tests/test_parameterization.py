import pytest
import torch

from gctm_mini.losses import fm_loss, sample_fm_times
from gctm_mini.models import build_model, mlp_spec
from gctm_mini.parameterization import CouplingMoments, FlowMapModel, precondition


def random_model(moments=None, dropout=0.0) -> FlowMapModel:
    model = build_model(mlp_spec(2, 32, 2, dropout=dropout), moments)
    for p in model.parameters():  # non-zero output layer so g depends on the network
        torch.nn.init.normal_(p, std=0.3)
    return model


def test_flow_map_identity_at_equal_times_exactly():
    model = random_model(CouplingMoments(torch.tensor([0.7, 1.3]), 1.0, 0.2))
    x = torch.randn(256, 2) * 3
    t = torch.rand(256)
    t[:5] = torch.tensor([0.0, 1.0, 1e-7, 0.5, 0.999999])
    assert torch.equal(model.G(x, t, t), x)


def test_one_jump_is_g_at_s_zero_and_velocity_is_x_minus_g_over_t():
    model = random_model(CouplingMoments(torch.tensor([0.7, 1.3]), 1.0, 0.1))
    x, t = torch.randn(64, 2), torch.rand(64) * 0.9 + 0.05
    assert torch.allclose(model.G(x, t, 0.0), model.g(x, t, 0.0))
    v = (x - model.g(x, t, t)) / t[:, None]
    assert torch.allclose(model.velocity(x, t), v, atol=1e-4, rtol=1e-4)
    assert torch.isfinite(model.velocity(x, torch.zeros(64))).all()


def test_flow_map_interpolates_between_x_and_g():
    model = random_model()
    x, t = torch.randn(16, 2), torch.full((16,), 0.8)
    s = torch.full((16,), 0.2)
    expected = 0.25 * x + 0.75 * model.g(x, t, s)
    assert torch.allclose(model.G(x, t, s), expected, atol=1e-6)


def test_preconditioning_is_the_regression_of_x0_on_xt_monte_carlo():
    # a correlated coupling: X1 = ρ X0/σ0 + sqrt(1−ρ²) Z  (per coordinate)
    g = torch.Generator().manual_seed(0)
    n = 400_000
    x0 = torch.randn(n, 1, generator=g, dtype=torch.float64) * 0.8
    x1 = 0.5 * x0 / 0.8 + (1 - 0.25) ** 0.5 * torch.randn(n, 1, generator=g, dtype=torch.float64)
    m = CouplingMoments.estimate(x0, x1)
    for t in (0.1, 0.5, 0.9):
        xt = (1 - t) * x0 + t * x1
        slope = float((xt * x0).mean() / (xt * xt).mean())
        resid_std = float((x0 - slope * xt).std())
        c = precondition(
            torch.tensor([[t]], dtype=torch.float64),
            *(torch.as_tensor(v).double() for v in (m.v0, m.v1, m.v01)),
        )
        assert float(c["c_skip"]) == pytest.approx(slope, rel=0.01)
        assert float(c["c_out"]) == pytest.approx(resid_std, rel=0.01)
        assert float(c["c_in"]) == pytest.approx(1 / float(xt.std()), rel=0.01)
        assert float(c["kappa"]) * t == pytest.approx(float(c["c_out"]), rel=1e-9)


def test_fm_loss_equals_weighted_data_prediction_error():
    model = random_model(CouplingMoments(torch.tensor([0.5, 2.0]), 1.0, 0.0))
    x0, x1 = torch.randn(128, 2), torch.randn(128, 2)
    t = torch.rand(128) * 0.8 + 0.1
    xt = (1 - t[:, None]) * x0 + t[:, None] * x1
    c = model.coefficients(t, x0)
    direct = ((model.g(xt, t, t) - x0) ** 2 / c["c_out"] ** 2).sum(1).mean()
    assert fm_loss(model, x0, x1, t).item() == pytest.approx(direct.item(), rel=1e-4)


def test_fm_time_samplers_stay_in_range():
    for kind in ("lognormal", "uniform", "beta31"):
        t = sample_fm_times(10_000, kind)
        assert (t > 0).all() and (t <= 1).all()
    assert float(sample_fm_times(100_000, "beta31").mean()) == pytest.approx(0.75, abs=0.01)
    with pytest.raises(ValueError, match="FM time sampler"):
        sample_fm_times(3, "cosine")


def test_fm_times_source_atom():
    """``source_prob`` puts that share of the times exactly on t = 1; without it none are."""
    assert not (sample_fm_times(100_000, "beta31") == 1.0).any()
    t = sample_fm_times(100_000, "beta31", source_prob=0.25)
    assert float((t == 1.0).float().mean()) == pytest.approx(0.25, abs=0.01)
    rest = t[t < 1.0]
    assert float(rest.mean()) == pytest.approx(0.75, abs=0.01)  # the continuous part is unchanged
    assert (sample_fm_times(50, "uniform", source_prob=1.0) == 1.0).all()
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="source_prob"):
            sample_fm_times(3, "beta31", source_prob=bad)


def test_fm_loss_at_the_source_is_a_regression_from_the_source():
    """At t = 1 (paired moments, no 0/0) the FM loss is the weighted squared error of
    g(X1, 1, 1) against X0, i.e. it trains the conditional mean E[X0 | X1]."""
    torch.manual_seed(0)
    x0 = torch.randn(64, 2)
    x1 = torch.stack([x0[:, 0], 0.3 * x0[:, 1] + 0.1 * torch.randn(64)], 1)  # a lossy H
    model = random_model(CouplingMoments.estimate(x0, x1))
    t = torch.ones(64)
    c = model.coefficients(t, x0)
    direct = ((model.g(x1, t, t) - x0) ** 2 / c["c_out"] ** 2).sum(1).mean()
    assert fm_loss(model, x0, x1, t).item() == pytest.approx(direct.item(), rel=1e-4)


@pytest.mark.parametrize(
    "x, t, s, match",
    [
        (torch.randn(4, 3), 0.5, 0.2, "shape"),
        (torch.randn(4), 0.5, 0.2, "shape"),
        (torch.randn(4, 2), 1.5, 0.2, r"\[0, 1\]"),
        (torch.randn(4, 2), 0.5, -0.1, r"\[0, 1\]"),
        (torch.randn(4, 2), 0.3, 0.5, "s ≤ t"),
        (torch.full((4, 2), float("nan")), 0.5, 0.2, "NaN"),
        (torch.randn(4, 2), torch.rand(3), 0.2, "shape"),
    ],
)
def test_bad_input_gives_clear_errors(x, t, s, match):
    model = random_model()
    with pytest.raises(ValueError, match=match):
        model.G(x, t, s)


def test_moments_must_fit_the_data_shape():
    with pytest.raises(ValueError, match="broadcast"):
        build_model(mlp_spec(2), CouplingMoments(torch.ones(3), 1.0, 0.0))
    with pytest.raises(ValueError, match="unknown network"):
        build_model({"net": "transformer", "data_shape": [2]})
