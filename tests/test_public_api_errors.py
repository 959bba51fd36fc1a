"""Bad input to the public API gets one clear line, never a hang, a raw library error or a
silent NaN; inputs that have a sensible meaning (float64 into a float32 model, σ = 0 blur)
work and say what they did."""

import math

import pytest
import torch

from gctm_mini.data2d import make_dataset
from gctm_mini.degradations import Degradation, gaussian_kernel
from gctm_mini.editing import invert_ode
from gctm_mini.evaluation import features, frechet_distance, psnr_ssim, rfd
from gctm_mini.losses import fm_loss
from gctm_mini.metrics import data_floor, mmd2, quality_by_nfe, sliced_w2, straightness, w2
from gctm_mini.models import build_model, mlp_spec
from gctm_mini.parameterization import CouplingMoments
from gctm_mini.restoration import dps_ode, restore_supervised, zero_shot_restore
from gctm_mini.sampling import gamma_sampling, sample_multistep, sample_ode
from gctm_mini.solvers import integrate

NAN, INF = math.nan, math.inf


def toy_model():
    torch.manual_seed(0)
    model = build_model(mlp_spec(hidden=32, depth=2)).eval()
    torch.nn.init.normal_(model.net.out.weight, std=0.3)  # not the zero-initialized identity
    return model


def image_model():
    torch.manual_seed(0)
    spec = {
        "net": "unet",
        "data_shape": [3, 16, 16],
        "net_kwargs": {
            "img_resolution": 16,
            "model_channels": 8,
            "channel_mult": [1],
            "num_blocks": 1,
            "attn_resolutions": [],
            "dropout": 0.0,
        },
    }
    return build_model(spec, CouplingMoments(0.25, 1.0, 0.0)).eval()


M = toy_model()
IMG = image_model()
X = torch.randn(8, 2)
T = torch.rand(8)
Y = torch.rand(2, 3, 16, 16) * 2 - 1
MOONS = make_dataset("moons")
GRID = torch.linspace(1, 0, 5)


BAD_INPUTS = {
    # fm_loss: shapes, values and times are checked at the boundary
    "fm_loss t > 1": (lambda: fm_loss(M, X, X, T + 1.5), ValueError, "t must lie in [0, 1]"),
    "fm_loss t < 0": (lambda: fm_loss(M, X, X, -T - 0.1), ValueError, "t must lie in [0, 1]"),
    "fm_loss t NaN": (lambda: fm_loss(M, X, X, T * NAN), ValueError, "t contains"),
    "fm_loss x0 NaN": (lambda: fm_loss(M, X * NAN, X, T), ValueError, "x0 contains"),
    "fm_loss x1 inf": (lambda: fm_loss(M, X, X * INF, T), ValueError, "x1 contains"),
    "fm_loss x1 shape": (lambda: fm_loss(M, X, X[:4], T), ValueError, "x1 must have the shape"),
    "fm_loss x0 dim": (lambda: fm_loss(M, X[:, :1], X[:, :1], T), ValueError, "x0 must have"),
    "fm_loss t shape": (lambda: fm_loss(M, X, X, T[:3]), ValueError, "t must have shape (8,)"),
    "fm_loss t int": (lambda: fm_loss(M, X, X, T.long()), TypeError, "floating-point"),
    "fm_loss device": (lambda: fm_loss(M, X.to("meta"), X, T), ValueError, "on meta"),
    # the model: dtype and device
    "G int x": (lambda: M.G(X.long(), 1.0, 0.0), TypeError, "floating-point"),
    "G complex x": (lambda: M.G(X.to(torch.complex64), 1.0, 0.0), TypeError, "floating-point"),
    "G device": (lambda: M.G(X.to("meta"), 1.0, 0.0), ValueError, "x is on meta"),
    "velocity int x": (lambda: M.velocity(X.int(), 0.5), TypeError, "floating-point"),
    "sample_ode int x1": (lambda: sample_ode(M, X.long(), 2), TypeError, "x1 must be a floating"),
    "integrate int x": (lambda: integrate(M.velocity, X.long(), GRID), TypeError, "floating"),
    # degradations
    "blur sigma < 0": (lambda: Degradation("deblur", sigma=-1.0), ValueError, "sigma"),
    "blur sigma NaN": (lambda: Degradation("deblur", sigma=NAN), ValueError, "sigma"),
    "blur sigma inf": (lambda: gaussian_kernel(INF), ValueError, "sigma"),
    "kernel even size": (lambda: gaussian_kernel(1.0, 4), ValueError, "odd"),
    "kernel size 0": (lambda: gaussian_kernel(1.0, 0), ValueError, "odd"),
    "degrade NaN": (lambda: Degradation("sr2")(Y * NAN), ValueError, "contains"),
    "degrade int": (lambda: Degradation("sr2").clean(Y.long()), TypeError, "floating"),
    "deblur tiny": (lambda: Degradation("deblur").clean(Y[..., :3, :3]), ValueError, "reflect"),
    "inpaint tiny": (lambda: Degradation("inpaint")(Y[..., :2, :2]), ValueError, "4×4"),
    "colorize 1 channel": (lambda: Degradation("colorize")(Y[:, :1]), ValueError, "C = 3"),
    "edges 1 channel": (lambda: Degradation("edges")(Y[:, :1]), ValueError, "C = 3"),
    "inpaint noise shape": (
        lambda: Degradation("inpaint")(Y, noise=torch.randn(1, 3, 16, 16)),
        ValueError,
        "noise must have the shape",
    ),
    "project shapes": (lambda: Degradation("sr2").project(Y, Y[:1]), ValueError, "same shape"),
    "project step NaN": (lambda: Degradation("deblur").project(Y, Y, step=NAN), ValueError, "step"),
    "project iters < 0": (
        lambda: Degradation("deblur").project(Y, Y, iters=-1),
        ValueError,
        "iters",
    ),
    "adjoint NaN": (lambda: Degradation("deblur").adjoint(Y * NAN), ValueError, "contains"),
    # restoration
    "zero-shot eta 2": (
        lambda: zero_shot_restore(IMG, Y, Degradation("sr2"), eta=2),
        ValueError,
        "eta",
    ),
    "zero-shot eta < 0": (
        lambda: zero_shot_restore(IMG, Y, Degradation("sr2"), eta=-0.1),
        ValueError,
        "eta",
    ),
    "zero-shot eta NaN": (
        lambda: zero_shot_restore(IMG, Y, Degradation("sr2"), eta=NAN),
        ValueError,
        "eta",
    ),
    "zero-shot nfe 0": (
        lambda: zero_shot_restore(IMG, Y, Degradation("sr2"), nfe=0),
        ValueError,
        "nfe",
    ),
    "zero-shot nfe 1.5": (
        lambda: zero_shot_restore(IMG, Y, Degradation("sr2"), nfe=1.5),
        ValueError,
        "nfe",
    ),
    "zero-shot t_start 0": (
        lambda: zero_shot_restore(IMG, Y, Degradation("sr2"), t_start=0.0),
        ValueError,
        "t_start",
    ),
    "zero-shot t_start > 1": (
        lambda: zero_shot_restore(IMG, Y, Degradation("sr2"), t_start=1.5),
        ValueError,
        "t_start",
    ),
    "zero-shot y shape": (
        lambda: zero_shot_restore(IMG, Y[..., :8, :8], Degradation("sr2")),
        ValueError,
        "model's sample shape",
    ),
    "zero-shot y not divisible": (
        lambda: zero_shot_restore(IMG, Y[..., :15, :15], Degradation("sr2")),
        ValueError,
        "divisible",
    ),
    "zero-shot y NaN": (
        lambda: zero_shot_restore(IMG, Y * NAN, Degradation("sr2")),
        ValueError,
        "contains",
    ),
    "zero-shot final_iters": (
        lambda: zero_shot_restore(IMG, Y, Degradation("sr2"), final_iters=-1),
        ValueError,
        "final_iters",
    ),
    "dps nfe 0": (lambda: dps_ode(IMG, Y, Degradation("sr2"), nfe=0), ValueError, "nfe"),
    "dps zeta NaN": (lambda: dps_ode(IMG, Y, Degradation("sr2"), zeta=NAN), ValueError, "zeta"),
    "supervised nfe 0": (lambda: restore_supervised(IMG, Y, nfe=0), ValueError, "nfe"),
    "supervised eps < 0": (lambda: restore_supervised(IMG, Y, eps=-1.0), ValueError, "eps"),
    "supervised y shape": (lambda: restore_supervised(IMG, Y[:, :1]), ValueError, "sample shape"),
    # metrics
    "mmd2 one point": (lambda: mmd2(X[:1], X), ValueError, "at least 2 points"),
    "mmd2 bandwidth 0": (lambda: mmd2(X, X, bandwidths=(0.0,)), ValueError, "bandwidths"),
    "mmd2 no bandwidth": (lambda: mmd2(X, X, bandwidths=()), ValueError, "bandwidths"),
    "sliced_w2 n_proj 0": (lambda: sliced_w2(X, X, n_proj=0), ValueError, "n_proj"),
    "sliced_w2 sizes": (lambda: sliced_w2(X, X[:3]), ValueError, "equal sample sizes"),
    "w2 dims": (lambda: w2(X, torch.randn(8, 3)), ValueError, "y must have shape"),
    "w2 NaN": (lambda: w2(X * NAN, X), ValueError, "contains"),
    "data_floor seeds 0": (lambda: data_floor(MOONS, 16, seeds=0), ValueError, "seeds"),
    "data_floor n 0": (lambda: data_floor(MOONS, 0), ValueError, "n must"),
    "data_floor mmd2 n 1": (lambda: data_floor(MOONS, 1, metric="mmd2"), ValueError, "n must"),
    "quality_by_nfe seeds 0": (
        lambda: quality_by_nfe(lambda x, k: x, MOONS, [1], n=8, seeds=0),
        ValueError,
        "seeds",
    ),
    "quality_by_nfe nfe 0": (
        lambda: quality_by_nfe(lambda x, k: x, MOONS, [0], n=8, seeds=1),
        ValueError,
        "NFE",
    ),
    "straightness equal ends": (
        lambda: straightness(torch.randn(3, 4, 2), torch.tensor([1.0, 0.5, 1.0])),
        ValueError,
        "strictly monotone",
    ),
    "straightness zero length": (
        lambda: straightness(torch.randn(3, 4, 2), torch.full((3,), 0.5)),
        ValueError,
        "strictly monotone",
    ),
    # evaluation
    "psnr NaN": (lambda: psnr_ssim(Y * NAN, Y), ValueError, "pred contains"),
    "psnr shapes": (lambda: psnr_ssim(Y, Y[:1]), ValueError, "same shape"),
    "psnr tiny": (lambda: psnr_ssim(Y[..., :4, :4], Y[..., :4, :4]), ValueError, "at least 7×7"),
    "features tiny": (lambda: features(Y), ValueError, "at least 17×17"),
    "frechet one sample": (
        lambda: frechet_distance(torch.randn(1, 5), torch.randn(9, 5)),
        ValueError,
        "N ≥ 2",
    ),
    "frechet dims": (
        lambda: frechet_distance(torch.randn(9, 5), torch.randn(9, 3)),
        ValueError,
        "dimension",
    ),
    "frechet NaN": (
        lambda: frechet_distance(torch.randn(9, 5) * NAN, torch.randn(9, 5)),
        ValueError,
        "contains",
    ),
    "rfd one image": (
        lambda: rfd(torch.rand(1, 3, 32, 32), torch.rand(4, 3, 32, 32)),
        ValueError,
        "N ≥ 2",
    ),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_raises_one_clear_line(name):
    call, exc, fragment = BAD_INPUTS[name]
    with pytest.raises(exc) as info:
        call()
    message = str(info.value)
    assert fragment in message and "\n" not in message, message


@pytest.mark.parametrize(
    "call",
    [
        lambda m, x: m.G(x, 1.0, 0.0),
        lambda m, x: m.g(x, 0.7, 0.2),
        lambda m, x: m.velocity(x, 0.5),
        lambda m, x: m(x, 0.9, 0.3),
        lambda m, x: sample_ode(m, x, 4, "heun"),
        lambda m, x: sample_ode(m, x, 3, "euler", return_path=True)[1],
        lambda m, x: sample_multistep(m, x, 3),
        lambda m, x: invert_ode(m, x, steps=3),
    ],
)
def test_float64_input_is_computed_in_the_model_dtype_and_returned_in_its_own(call):
    x = torch.randn(8, 2)
    out32, out64 = call(M, x), call(M, x.double())
    assert out64.dtype == torch.float64
    # float32 → float64 → float32 is exact, so the two answers are the same numbers
    assert torch.equal(out64, out32.double())


@pytest.mark.parametrize(
    "call",
    [
        lambda m, x: gamma_sampling(m, x, 3, 0.0),
        lambda m, x: integrate(m.velocity, x, GRID, "heun"),
    ],
)
def test_float64_input_to_generic_samplers_is_answered_in_float64(call):
    # the arithmetic between network calls runs in the input's dtype: equal up to rounding
    x = torch.randn(8, 2)
    out32, out64 = call(M, x), call(M, x.double())
    assert out64.dtype == torch.float64
    assert torch.allclose(out64, out32.double(), rtol=1e-5, atol=1e-6)


def test_half_precision_input_is_returned_in_half_precision():
    x = torch.randn(8, 2)
    out = M.G(x.half(), 1.0, 0.0)
    assert out.dtype == torch.float16
    assert torch.equal(out, M.G(x.half().float(), 1.0, 0.0).half())


def test_fm_loss_casts_float64_inputs_and_is_finite_at_both_ends_of_time():
    x0, x1 = torch.randn(8, 2), torch.randn(8, 2)
    t = torch.tensor([0.0, 1.0, 0.5, 0.5, 0.1, 0.9, 0.0, 1.0])
    loss = fm_loss(M, x0, x1, t)
    assert torch.isfinite(loss)
    assert torch.equal(fm_loss(M, x0.double(), x1.double(), t.double()), loss)


def test_deblur_with_sigma_zero_is_the_identity_and_the_limit_of_small_sigma():
    delta = torch.zeros(1, 1)
    delta[0, 0] = 1.0
    assert torch.equal(gaussian_kernel(0.0), delta)
    assert torch.equal(gaussian_kernel(0.0, 5)[2, 2], torch.tensor(1.0))
    assert float(gaussian_kernel(0.0, 5).sum()) == 1.0
    op = Degradation("deblur", sigma=0.0)
    assert torch.equal(op.clean(Y), Y)
    assert torch.equal(op.project(Y, Y), Y)
    # σ → 0: the normalized Gaussian tends to the delta
    assert torch.allclose(gaussian_kernel(0.05, 1), delta)
    assert torch.allclose(Degradation("deblur", sigma=0.05).clean(Y), Y, atol=1e-6)


def test_psnr_of_identical_images_is_inf_and_ssim_of_constant_images_is_finite():
    c = torch.zeros(2, 3, 16, 16)
    psnr, ssim = psnr_ssim(c, c)
    assert psnr == math.inf and ssim == pytest.approx(1.0)
    psnr, ssim = psnr_ssim(c, c + 0.5)  # MSE = 0.25 on a data range of 2
    assert psnr == pytest.approx(10 * math.log10(4 / 0.25)) and math.isfinite(ssim)


def test_smallest_legal_metric_inputs_work():
    x = torch.randn(2, 2)
    assert math.isfinite(mmd2(x, x + 1))
    assert w2(x[:1], x[1:]) == pytest.approx(float((x[0] - x[1]).norm()), rel=1e-6)
    assert math.isfinite(sliced_w2(x, x + 1, n_proj=1))
    f = torch.randn(2, 5, dtype=torch.float64)
    assert math.isfinite(frechet_distance(f, f + 1))
    assert features(torch.rand(2, 3, 17, 17)).isfinite().all()


def test_zero_shot_restore_accepts_eta_at_both_ends():
    op = Degradation("inpaint")
    y = op.clean(Y)
    for eta in (0.0, 1.0):
        out = zero_shot_restore(IMG, y, op, nfe=2, eta=eta, generator=torch.Generator())
        assert out.dtype == y.dtype and torch.isfinite(out).all()


# ------------------------------------------------------------ training entry points


def test_train2d_refuses_an_empty_run_directory(tmp_path, monkeypatch):
    """``out=""`` used to mean the current directory silently; it is refused in one line."""
    from gctm_mini.rundir import RunDirectoryError
    from gctm_mini.training import Toy2DConfig, train2d

    monkeypatch.chdir(tmp_path)
    with pytest.raises(RunDirectoryError, match="non-empty path"):
        train2d(Toy2DConfig(method="fm", steps=1), "", progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("lr", [1e39, 1e300])
def test_learning_rates_beyond_the_declared_range_are_refused(lr):
    """A learning rate beyond float32 used to overflow inside Adam (a raw torch error)."""
    from gctm_mini.train_images import ImageConfig
    from gctm_mini.training import Toy2DConfig

    with pytest.raises(ValueError, match="lr"):
        Toy2DConfig(method="fm", lr=lr).validate()
    with pytest.raises(ValueError, match="lr"):
        ImageConfig(lr=lr).validate()


def test_train_images_names_an_unknown_device():
    from gctm_mini.train_images import ImageConfig, train_images

    with pytest.raises(ValueError, match="unknown device 'foo'"):
        train_images(ImageConfig(steps=1), None, device="foo")
