"""Degradation operators, measurement projections, zero-shot and DPS-style restoration, editing."""

import pytest
import torch
import torch.nn.functional as F

from gctm_mini.degradations import RESTORATION_TASKS, TASKS, Degradation, gaussian_kernel
from gctm_mini.editing import interpolate_through_source, paste_guide, sdedit, slerp, stroke_guide
from gctm_mini.evaluation import psnr_ssim
from gctm_mini.images import PhotoPatches
from gctm_mini.models import build_model
from gctm_mini.parameterization import CouplingMoments
from gctm_mini.randomness import noise_like
from gctm_mini.restoration import (
    choose_dps_settings,
    choose_start_time,
    dps_ode,
    restore_supervised,
    trajectory_start,
    zero_shot_restore,
)


@pytest.fixture(scope="module")
def patches():
    return PhotoPatches("test").images[:16]


@pytest.mark.parametrize("task", TASKS)
def test_operators_are_batched_shape_preserving_and_in_range(task, patches):
    op = Degradation(task)
    y = op(patches, generator=torch.Generator().manual_seed(0))
    assert y.shape == patches.shape and torch.isfinite(y).all()
    # batched = one by one (no hidden per-sample state)
    assert torch.allclose(op.clean(patches)[3:4], op.clean(patches[3:4]), atol=1e-5)


def test_gaussian_kernel_and_blur_of_a_constant():
    k = gaussian_kernel(0.8)
    assert k.shape == (7, 7) and torch.isclose(k.sum(), torch.tensor(1.0))
    x = torch.full((1, 3, 16, 16), 0.3)
    assert torch.allclose(Degradation("deblur").clean(x), x, atol=1e-6)


def test_super_resolution_keeps_low_frequencies():
    x = torch.full((2, 3, 32, 32), -0.2)
    assert torch.allclose(Degradation("sr2").clean(x), x, atol=1e-5)
    with pytest.raises(ValueError, match="divisible"):
        Degradation("sr4").clean(torch.zeros(1, 3, 30, 30))


def test_inpainting_fills_the_centre_with_noise_and_keeps_the_rest(patches):
    op = Degradation("inpaint")
    y = op(patches, generator=torch.Generator().manual_seed(1))
    m = op.mask(patches)
    assert torch.equal(y * m, patches * m)
    hole = (y - patches)[(1 - m).bool().expand_as(y)]
    assert 0.8 < float(hole.std()) < 1.6  # N(0, 1) noise minus the image


@pytest.mark.parametrize("task", ["sr2", "sr4", "deblur", "inpaint"])
def test_adjoint_is_the_transpose(task):
    op = Degradation(task)
    g = torch.Generator().manual_seed(0)
    x, v = torch.randn(2, 3, 16, 16, generator=g), torch.randn(2, 3, 16, 16, generator=g)
    lhs = (op.clean(x) * v).sum()
    rhs = (x * op.adjoint(v)).sum()
    assert torch.isclose(lhs, rhs, rtol=1e-4)


@pytest.mark.parametrize("task", ["sr2", "deblur"])
def test_back_projection_moves_towards_the_measurement_and_beats_the_degraded_input(task, patches):
    op = Degradation(task)
    y = op.clean(patches)
    x = op.project(y, y, iters=50)
    assert (op.clean(x) - y).norm() < 0.5 * (op.clean(y) - y).norm()
    assert psnr_ssim(x, patches)[0] > psnr_ssim(y, patches)[0]


def test_back_project_is_landweber_from_the_measurement_and_identity_for_inpainting(patches):
    for task in ("sr2", "deblur"):
        op = Degradation(task)
        y = op.clean(patches)
        assert torch.equal(op.back_project(y, iters=7), op.project(y, y, iters=7))
    y = Degradation("inpaint").clean(patches)
    assert torch.equal(Degradation("inpaint").back_project(y), y)


def test_trajectory_start_is_noise_at_one_and_the_interpolant_of_back_projection_below(patches):
    op = Degradation("sr2")
    y = op.clean(patches)
    z = noise_like(y, torch.Generator().manual_seed(5))
    x1 = trajectory_start(op, y, 1.0, torch.Generator().manual_seed(5))
    assert torch.equal(x1, z)
    x = trajectory_start(op, y, 0.2, torch.Generator().manual_seed(5))
    assert torch.allclose(x, 0.8 * op.back_project(y) + 0.2 * z, atol=1e-6)
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="t_start"):
            trajectory_start(op, y, bad)


@pytest.mark.parametrize("task", ["sr2", "deblur", "inpaint"])
def test_zero_shot_from_a_late_start_tends_to_back_projection(task, patches):
    """G(x, t, 0) → x as t → 0: from t₀ ≈ 0 one jump leaves the back-projected measurement,
    which the final projection then refines as it would without a network."""
    x0 = F.interpolate(patches[:4], size=(16, 16), mode="bilinear", align_corners=False)
    op = Degradation(task)
    y = op.clean(x0)
    model = tiny_image_model()
    bp = op.project(op.back_project(y), y, iters=50)
    gen = torch.Generator().manual_seed(0)
    near = zero_shot_restore(model, y, op, nfe=1, t_start=1e-4, generator=gen)
    far = zero_shot_restore(model, y, op, nfe=1, t_start=0.5, generator=gen)
    assert (near - bp).norm() < 0.01 * (far - bp).norm()
    assert torch.isfinite(dps_ode(model, y, op, nfe=2, t_start=0.05)).all()


def test_choose_start_time_picks_the_best_validation_psnr(patches):
    noise = noise_like(patches, torch.Generator().manual_seed(0))

    def restore(t0):  # error grows with the distance from t0 = 0.02
        return patches + (abs(t0 - 0.02) + 1e-3) * noise

    t0, scores = choose_start_time(restore, patches, candidates=(0.005, 0.02, 0.1, 1.0))
    assert t0 == 0.02 and set(scores) == {0.005, 0.02, 0.1, 1.0}
    assert scores[0.02] == max(scores.values()) and scores[1.0] < scores[0.1]
    with pytest.raises(ValueError, match="candidate"):
        choose_start_time(restore, patches, candidates=())


def test_inpainting_projection_is_exact(patches):
    op = Degradation("inpaint")
    y = op.clean(patches)
    x = op.project(torch.zeros_like(patches), y)
    assert torch.equal(op.clean(x), y)


def test_unknown_task_and_nonlinear_projection_are_clear_errors():
    with pytest.raises(ValueError, match="unknown task"):
        Degradation("denoise")
    with pytest.raises(ValueError, match="projection"):
        Degradation("colorize").project(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))


def tiny_image_model():
    spec = {
        "net": "unet",
        "data_shape": [3, 16, 16],
        "net_kwargs": {
            "img_resolution": 16,
            "model_channels": 16,
            "channel_mult": [1, 2],
            "num_blocks": 1,
            "attn_resolutions": [8],
            "dropout": 0.0,
        },
    }
    return build_model(spec, CouplingMoments(0.25, 1.0, 0.0)).eval()


@pytest.mark.parametrize("task", RESTORATION_TASKS)
def test_zero_shot_restoration_is_measurement_consistent(task, patches):
    x0 = F.interpolate(patches, size=(16, 16), mode="bilinear", align_corners=False)
    op = Degradation(task)
    y = op.clean(x0)
    model = tiny_image_model()  # untrained: the result must still satisfy the measurement
    out = zero_shot_restore(model, y, op, nfe=3, generator=torch.Generator().manual_seed(0))
    assert out.shape == x0.shape and torch.isfinite(out).all()
    err = float((op.clean(out) - y).norm() / y.norm())
    assert err < (1e-6 if task == "inpaint" else 0.1), err
    dps = dps_ode(model, y, op, nfe=2)
    assert dps.shape == x0.shape and torch.isfinite(dps).all()


def test_zero_shot_mean_of_draws_is_the_mean_of_the_separate_trajectories(patches):
    """draws = D runs D trajectories as one batch: the same numbers as D separate calls whose
    start noise comes, in order, from the same generator; the mean stays consistent."""
    x0 = F.interpolate(patches[:3], size=(16, 16), mode="bilinear", align_corners=False)
    op = Degradation("inpaint")
    y = op.clean(x0)
    model = tiny_image_model()
    mean = zero_shot_restore(
        model, y, op, nfe=2, t_start=0.5, draws=3, generator=torch.Generator().manual_seed(4)
    )
    g = torch.Generator().manual_seed(4)
    starts = noise_like(y.repeat(3, 1, 1, 1), g).view(3, *y.shape)  # what the batch draws
    one_by_one = []
    for z in starts:
        x = (1 - 0.5) * op.back_project(y) + 0.5 * z
        x0_hat = model.G(x, 0.5, 0.0)
        eps = (x - 0.5 * x0_hat) / 0.5
        x = 0.75 * op.project(x0_hat, y) + 0.25 * eps
        one_by_one.append(op.project(model.G(x, 0.25, 0.0), y, iters=50))
    expected = torch.stack(one_by_one).mean(0)
    assert mean.shape == y.shape
    assert torch.allclose(mean, expected, atol=1e-5)
    assert torch.allclose(op.clean(mean), y, atol=1e-6)  # the mean of consistent samples
    single = zero_shot_restore(
        model, y, op, nfe=2, t_start=0.5, draws=1, generator=torch.Generator().manual_seed(4)
    )
    assert torch.allclose(single, torch.stack(one_by_one)[0], atol=1e-5)
    with pytest.raises(ValueError, match="draws"):
        zero_shot_restore(model, y, op, nfe=2, draws=0)


def test_choose_dps_settings_searches_start_and_step_together(patches, monkeypatch):
    """The pair with the best validation PSNR over the whole grid, not ζ at a fixed start;
    a ζ that diverges is skipped, and all diverging is a clear error."""
    import gctm_mini.restoration as restoration

    x = patches[:4]
    noise = noise_like(x, torch.Generator().manual_seed(0))

    def fake_dps(model, y, op, nfe, zeta, t_start, generator):  # best at (0.3, 3.0)
        if zeta > 50:
            raise ValueError("the DPS iterate is not finite")
        return x + (abs(t_start - 0.3) + abs(zeta - 3.0) + 1e-3) * noise

    monkeypatch.setattr(restoration, "dps_ode", fake_dps)
    op = Degradation("sr4")
    args = (None, op.clean(x), op, x, 4)
    assert choose_dps_settings(*args, zetas=(1.0, 3.0, 100.0), start_times=(0.1, 0.3, 1.0)) == (
        0.3,
        3.0,
    )
    with pytest.raises(ValueError, match="diverged"):
        choose_dps_settings(*args, zetas=(100.0,), start_times=(0.1, 0.3))


@pytest.mark.parametrize("task", RESTORATION_TASKS)
def test_supervised_restore_with_consistency_satisfies_the_measurement(task, patches):
    op = Degradation(task)
    x0 = patches[:4, :, :16, :16]
    y_in = op(x0, generator=torch.Generator().manual_seed(0))
    model = tiny_image_model()  # untrained: only the projection can make Hx = y
    raw = restore_supervised(model, y_in, nfe=1)
    out = restore_supervised(model, y_in, nfe=1, consistency=op)
    y = op.clean(x0)
    err_raw = float((op.clean(raw) - y).norm() / y.norm())
    err = float((op.clean(out) - y).norm() / y.norm())
    assert err < (1e-6 if task == "inpaint" else 0.2 * err_raw), (err, err_raw)
    if task == "inpaint":  # the hole keeps the network's answer
        m = op.mask(x0)
        assert torch.equal((1 - m) * out, (1 - m) * raw)


def test_supervised_restore_and_editing_run_on_a_model():
    model = tiny_image_model()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    assert restore_supervised(model, x, nfe=1).shape == x.shape
    assert torch.allclose(restore_supervised(model, x, nfe=1), model.G(x, 1.0, 0.0))
    e = sdedit(model, x, 0.5, generator=torch.Generator().manual_seed(0))
    assert e.shape == x.shape
    with pytest.raises(ValueError, match="t must"):
        sdedit(model, x, 0.0)
    w = torch.tensor([0.0, 0.5, 1.0])
    path = interpolate_through_source(model, x[:1], x[1:], w, inv_steps=4)
    assert path.shape == (3, 1, 3, 16, 16)
    assert stroke_guide(x).shape == x.shape and paste_guide(x, x.flip(0)).shape == x.shape


def test_slerp_endpoints_and_norm():
    a, b = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    assert torch.allclose(slerp(a, b, 0.0), a, atol=1e-5) and torch.allclose(
        slerp(a, b, 1.0), b, atol=1e-5
    )
    mid = slerp(a, b, 0.5)
    assert abs(float(mid.flatten(1).norm(dim=1).mean() / a.flatten(1).norm(dim=1).mean()) - 1) < 0.2


def test_digit_sketch_is_black_and_white_blocks_covering_the_ink():
    from gctm_mini.editing import digit_sketch

    x = -torch.ones(2, 1, 28, 28)
    x[0, 0, 10, 11] = 0.5  # one inked pixel → its 2×2 block, all white
    s = digit_sketch(x)
    assert set(s.unique().tolist()) <= {-1.0, 1.0}
    assert torch.equal(s[0, 0, 10:12, 10:12], torch.ones(2, 2))
    assert int((s[0] > 0).sum()) == 4 and bool((s[1] == -1).all())
    with pytest.raises(ValueError, match="divide"):
        digit_sketch(x, block=3)


def test_half_task_removes_the_lower_half_fills_it_with_noise_and_projects_exactly():
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    op = Degradation("half")
    m = op.mask(x)
    assert m[..., :14, :].eq(1).all() and m[..., 14:, :].eq(0).all()
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    y_in = op(x, noise=z)
    assert torch.equal(y_in[..., :14, :], x[..., :14, :])
    assert torch.equal(y_in[..., 14:, :], z[..., 14:, :])
    y = op.clean(x)
    assert torch.equal(op.project(torch.zeros_like(x), y), y) and op.masked and not op.linear
    assert torch.equal(op.adjoint(y), y * m)  # a mask is its own transpose


def test_blur_sigma_of_the_config_sets_the_deblur_operator():
    from gctm_mini.train_images import degradation_of, make_config

    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    strong = degradation_of(make_config("mnist_deblur"))
    assert strong.sigma == 2.0
    assert torch.equal(strong.clean(x), Degradation("deblur", sigma=2.0).clean(x))
    mild = degradation_of(make_config("mnist_deblur", ["blur_sigma=0.8"]))
    assert torch.equal(mild.clean(x), Degradation("deblur").clean(x))
    with pytest.raises(ValueError, match="blur_sigma"):
        make_config("mnist_deblur", ["blur_sigma=-1"])
