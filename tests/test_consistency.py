import math

import pytest
import torch
from torch import nn

from gctm_mini.consistency import (
    bcm_loss,
    ct_loss,
    frozen,
    gctm_loss,
    huber_c,
    ict_index_probs,
    pseudo_huber,
)
from gctm_mini.models import build_model, mlp_spec
from gctm_mini.parameterization import CouplingMoments, FlowMapModel
from gctm_mini.randomness import Draws
from gctm_mini.timegrid import fine_grid


def test_pseudo_huber_is_per_sample_and_matches_the_weighted_reference_form():
    d = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    c = 0.1
    assert torch.allclose(pseudo_huber(d, c), torch.tensor([math.sqrt(25 + 0.01) - 0.1, 0.0]))
    # element-wise would give a different number: the norm runs over the whole sample
    elementwise = (d.pow(2) + c * c).sqrt().sub(c).sum(1)
    assert not torch.allclose(pseudo_huber(d, c), elementwise)
    w = torch.tensor([[0.5], [2.0]])
    ref = ((d.pow(2).sum(1) + (c * w[:, 0]) ** 2).sqrt() - c * w[:, 0]) / w[:, 0]
    assert torch.allclose(pseudo_huber(d, c, w), ref)
    assert huber_c(torch.zeros(4, 3, 32, 32)) == pytest.approx(0.00054 * math.sqrt(3072))


def dropout_model(p=0.5) -> FlowMapModel:
    return build_model(mlp_spec(2, 32, 3, dropout=p), CouplingMoments(1.0, 1.0, 0.0)).train()


def test_one_dropout_seed_reproduces_the_masks_and_leaves_the_outer_rng_alone():
    model = dropout_model()
    for prm in model.parameters():
        nn.init.normal_(prm, std=0.5)
    x, t, s = torch.randn(16, 2), torch.full((16,), 0.7), torch.full((16,), 0.2)
    torch.manual_seed(5)
    expected_next = torch.rand(3)
    torch.manual_seed(5)
    rng = Draws(torch.Generator().manual_seed(0))
    with rng.dropout(model, 123):
        a = model._G(x, t, s)
    with rng.dropout(model, 123):
        b = model._G(x, t, s)
    assert torch.equal(torch.rand(3), expected_next)  # outer stream untouched
    assert torch.equal(a, b)
    with rng.dropout(model, 124):
        assert not torch.equal(model._G(x, t, s), a)


class MaskRecorder(nn.Module):
    """A network that records the dropout mask of every forward pass."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.drop = nn.Dropout(0.5)
        self.masks = []

    def forward(self, x, ct, cs):
        mask = self.drop(torch.ones_like(x))
        self.masks.append(mask.detach().clone())
        return self.lin(x) * mask


def test_gctm_student_and_target_share_dropout_masks_and_ema_gets_no_gradient():
    model = FlowMapModel(MaskRecorder(), (2,)).train()
    ema = FlowMapModel(MaskRecorder(), (2,)).eval()
    x0, x1 = torch.randn(64, 2), torch.randn(64, 2)
    loss, _ = gctm_loss(model, ema, x0, x1, fine_grid(8, dtype=torch.float32))
    target_mask, student_mask, fm_mask = model.net.masks
    assert torch.equal(target_mask, student_mask)
    assert not torch.equal(student_mask, fm_mask)
    loss.backward()
    assert all(p.grad is None for p in ema.parameters())
    assert model.net.lin.weight.grad is not None


def test_gctm_target_and_ode_solve_carry_no_gradient(monkeypatch):
    model = build_model(mlp_spec(2, 32, 2), CouplingMoments())
    ema = build_model(mlp_spec(2, 32, 2), CouplingMoments()).eval()
    calls = []

    def spy(obj, name, tag):
        original = getattr(obj, name)

        def wrapped(*a, **k):
            out = original(*a, **k)
            calls.append((tag, out.requires_grad))
            return out

        monkeypatch.setattr(obj, name, wrapped)

    spy(model, "_G", "G")
    spy(ema, "_velocity", "ema_v")
    x0, x1 = torch.randn(32, 2), torch.randn(32, 2)
    gctm_loss(model, ema, x0, x1, fine_grid(8, dtype=torch.float32))
    g_calls = [c for c in calls if c[0] == "G"]
    assert g_calls == [("G", False), ("G", True)]  # target under stop-grad, then the student
    assert all(not rg for tag, rg in calls if tag == "ema_v")  # the ODE teacher: no grad


def test_frozen_lets_gradients_through_inputs_only():
    model = build_model(mlp_spec(2, 16, 2), CouplingMoments())
    for prm in model.parameters():
        nn.init.normal_(prm, std=0.3)
    x = torch.randn(4, 2, requires_grad=True)
    with frozen(model):
        y = model._G(x, torch.full((4,), 0.5), torch.zeros(4))
    y.sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())  # restored


def test_ict_index_probabilities_are_a_distribution_peaking_mid_grid():
    p = ict_index_probs(fine_grid(16))
    assert p.shape == (16,) and torch.isclose(p.sum(), torch.tensor(1.0)) and (p >= 0).all()
    assert 2 < int(p.argmax()) < 13


def test_ct_and_bcm_losses_are_finite_and_bcm_needs_a_bidirectional_model():
    x0, x1 = torch.randn(32, 2), torch.randn(32, 2)
    grid = fine_grid(8, dtype=torch.float32)
    fwd = build_model(mlp_spec(2, 16, 2), CouplingMoments())
    assert torch.isfinite(ct_loss(fwd, x0, x1, grid)[0])
    with pytest.raises(ValueError, match="bidirectional"):
        bcm_loss(fwd, x0, x1, grid)
    bi = build_model(mlp_spec(2, 16, 2, bidirectional=True), CouplingMoments())
    loss, logs = bcm_loss(bi, x0, x1, grid)
    assert torch.isfinite(loss) and set(logs) == {"ct", "soft"}


def test_bidirectional_form_equals_the_forward_form_and_is_identity_at_equal_times():
    fwd = build_model(mlp_spec(2, 32, 2), CouplingMoments(torch.tensor([0.6, 1.4]), 1.0, 0.1))
    for prm in fwd.parameters():
        nn.init.normal_(prm, std=0.3)
    bi = build_model(mlp_spec(2, 32, 2, bidirectional=True), CouplingMoments())
    bi.load_state_dict(fwd.state_dict())
    x = torch.randn(64, 2)
    t = torch.rand(64) * 0.9 + 0.1
    s = t * torch.rand(64)
    assert torch.allclose(bi.G(x, t, s), fwd.G(x, t, s), atol=1e-5)
    assert torch.equal(bi.G(x, t, t), x)
    assert torch.isfinite(bi.G(x, 0.0, 1.0)).all()  # inversion from the data end is defined
    with pytest.raises(ValueError, match="s ≤ t"):
        fwd.G(x, 0.2, 0.9)


@pytest.mark.slow
def test_gctm_learns_the_exact_flow_map_at_intermediate_times():
    """GCTM (no teacher) on a Gaussian mixture vs the oracle's exact G(x, t, s), x ~ p_t:
    mean error below 15 % of the mean displacement ‖G(x, t, s) − x‖ at every tested (t, s)."""
    from gctm_mini.data2d import make_dataset
    from gctm_mini.oracle import GaussianMixtureOracle
    from gctm_mini.training import Toy2DConfig, train2d

    res = train2d(Toy2DConfig(method="gctm", data="gmm"), progress=False)
    oracle = GaussianMixtureOracle(make_dataset("gmm"))
    for t, s in ((1.0, 0.0), (0.8, 0.3), (0.5, 0.1), (0.9, 0.6), (0.3, 0.0)):
        x = oracle.sample_xt(2000, t, torch.Generator().manual_seed(3))
        exact = oracle.flow_map(x, t, s, steps=100).float()
        learned = res.ema.G(x, t, s)
        rel = float((learned - exact).norm(dim=1).mean() / (exact - x).norm(dim=1).mean())
        assert rel < 0.15, (t, s, rel)


class ForcedIntervals(Draws):
    """Draws with every interval n = 0…N−1 in turn, recording the τ probabilities."""

    def __init__(self, N, repeat):
        super().__init__(torch.Generator().manual_seed(0))
        self.n = torch.arange(N).repeat(repeat)
        self.rows = None

    def categorical(self, probs, n):
        return self.n.clone()

    def categorical_rows(self, probs):
        self.rows = probs.clone()
        return super().categorical_rows(probs)


def test_bcm_tau_skips_only_the_start_time_and_keeps_t_lo_on_the_last_interval():
    """τ = grid[j], j ~ iCT probabilities over grid points 0…N−1 without j = n + 1; for the
    last interval (n + 1 = N, outside the support) nothing is removed."""
    N, repeat = 8, 1000
    grid = fine_grid(N, dtype=torch.float32)
    bi = build_model(mlp_spec(2, 16, 2, bidirectional=True), CouplingMoments())
    rng = ForcedIntervals(N, repeat)
    x = torch.zeros(N * repeat, 2)
    bcm_loss(bi, x, x, grid, rng=rng)
    probs = ict_index_probs(grid)
    rows = rng.rows[:N]  # sample n has interval n
    for n in range(N):
        expected = probs.clone()
        if n + 1 < N:
            expected[n + 1] = 0.0
        assert torch.equal(rows[n], expected), n
    assert rows[N - 1, N - 1] > 0  # t_lo of the last interval stays a possible τ
    # the sampler draws exactly these (normalized) probabilities: enumerate its uniforms
    u = (torch.arange(repeat, dtype=torch.float64) + 0.5) / repeat
    sampler = Draws()
    sampler._slice = lambda full, n: u.repeat(N)  # noqa: ARG005
    j = sampler.categorical_rows(rows.repeat_interleave(repeat, 0))
    for n in range(N):
        freq = torch.bincount(j[n * repeat : (n + 1) * repeat], minlength=N).double() / repeat
        target = rows[n].double() / rows[n].double().sum()
        assert torch.allclose(freq, target, atol=1.0 / repeat), n
        if n + 1 < N:
            assert freq[n + 1] == 0


def test_cd_target_network_runs_in_train_mode_with_the_students_masks():
    from gctm_mini.consistency import cd_loss
    from gctm_mini.randomness import SampleDropout

    class Recorder(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)
            self.drop = SampleDropout(0.5)
            self.masks = []

        def forward(self, x, ct, cs):
            mask = self.drop(torch.ones_like(x))
            self.masks.append(mask.detach().clone())
            return self.lin(x) * mask

    model = FlowMapModel(Recorder(), (2,)).train()
    target = FlowMapModel(Recorder(), (2,)).eval()
    teacher = build_model(mlp_spec(2, 16, 2), CouplingMoments()).eval()
    x0, x1 = torch.randn(64, 2), torch.randn(64, 2)
    cd_loss(model, target, teacher, x0, x1, fine_grid(8, dtype=torch.float32))
    (student_mask,), (target_mask,) = model.net.masks, target.net.masks
    assert not torch.equal(student_mask, torch.ones_like(student_mask))  # dropout was on
    assert torch.equal(target_mask, student_mask)
    assert not target.training  # the EMA copy is back in eval mode
