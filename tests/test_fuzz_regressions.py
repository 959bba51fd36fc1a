"""The failures the fuzz tests found, pinned down one by one: each input below once gave a
traceback from inside torch or Python, a silent NaN/inf, a hang or lost data, and now gives one
clear line from the package's own checks or an exact finite result."""

from __future__ import annotations

import json
import math

import pytest
import torch
from fuzzing import Hang, error_problem, image_model, nonfinite, time_limit, toy

from gctm_mini import cli
from gctm_mini.checkpoint import load_checkpoint, save_checkpoint
from gctm_mini.consistency import ct_loss, ict_index_probs, pseudo_huber
from gctm_mini.couplings import perturb_source, sinkhorn_log
from gctm_mini.data2d import Moons, Spirals, make_dataset
from gctm_mini.degradations import gaussian_kernel
from gctm_mini.editing import sdedit, slerp, stroke_guide
from gctm_mini.evaluation import frechet_distance, psnr_ssim
from gctm_mini.interpolant import conditional_velocity, interpolate, sigma_from_t, t_from_sigma
from gctm_mini.losses import sample_fm_times
from gctm_mini.metrics import mean_std, mmd2, quality_by_nfe, sliced_w2, straightness, w2
from gctm_mini.models import build_model, mlp_spec
from gctm_mini.parameterization import CouplingMoments
from gctm_mini.restoration import restore_supervised
from gctm_mini.sampling import bcm_invert, gamma_sampling, sample_ode
from gctm_mini.solvers import integrate, nfe_of, steps_for_nfe
from gctm_mini.timegrid import curriculum_N, draw_tsu, edm_times, fine_grid, uniform_grid
from gctm_mini.training import Toy2DConfig

NAN, INF = math.nan, math.inf


M, BI, IMG = toy(), toy(True), image_model()
X = torch.randn(4, 2)
Y = torch.rand(2, 3, 8, 8) * 2 - 1
GRID = fine_grid(4, dtype=torch.float32)

REFUSED = {
    # numbers, names and containers of the wrong kind: once Python's or torch's own errors
    "sinkhorn tol complex": lambda: sinkhorn_log(torch.rand(3, 3), 0.1, tol=1j),
    "sigma_from_t None": lambda: sigma_from_t(None),
    "fine_grid M list": lambda: fine_grid([4]),
    "edm_times rho 0": lambda: edm_times(4, rho=0.0),
    "uniform_grid steps 10^30": lambda: uniform_grid(10**30),
    "curriculum_N complex": lambda: curriculum_N(1j),
    "draw_tsu grid list": lambda: draw_tsu([0.0, 0.5, 1.0], 4),
    "build_model sigma None": lambda: build_model({**mlp_spec(hidden=4), "sigma_max": None}),
    "build_model hidden -1": lambda: build_model(mlp_spec(hidden=-1)),
    "nfe_of times str": lambda: nfe_of("1,0", "euler"),
    "steps_for_nfe list": lambda: steps_for_nfe([1], "euler"),
    "sample_ode nfe 1.5": lambda: sample_ode(M, X, 1.5),
    "gamma_sampling gamma str": lambda: gamma_sampling(M, X, 2, "0.5"),
    "bcm_invert times str": lambda: bcm_invert(BI, X, "1"),
    "sample_fm_times batch 1.5": lambda: sample_fm_times(1.5),
    "ict_index_probs dict": lambda: ict_index_probs({"a": 1}),
    "sliced_w2 n_proj 2^63": lambda: sliced_w2(X, X, n_proj=2**63),
    "quality_by_nfe data name": lambda: quality_by_nfe(lambda x, k: x, "nope", [1], n=4, seeds=1),
    "restore eps str": lambda: restore_supervised(IMG, Y, eps="x"),
    "sdedit t dict": lambda: sdedit(IMG, Y, {"a": 1}),
    "make_dataset list": lambda: make_dataset(["moons"]),
    "config key with a line break": lambda: Toy2DConfig.from_dict({"a\nb": 1}),
    # tensors the computation cannot take: once a torch traceback
    "perturb_source int": lambda: perturb_source(torch.ones(4, 2, dtype=torch.long), 0.1),
    "conditional_velocity batches": lambda: conditional_velocity(X, X[:3]),
    "moments batches": lambda: CouplingMoments.estimate(X, torch.randn(5, 2)),
    "moments eps 1e200": lambda: CouplingMoments.estimate(X, X, eps=1e200),
    "ct_loss empty batch": lambda: ct_loss(M, X[:0], X[:0], GRID),
    "ct_loss grid None": lambda: ct_loss(M, X, X, None),
    "G with s None": lambda: M.G(X, 0.5, None),
    "integrate bool times": lambda: integrate(M.velocity, X, torch.tensor([True, False, False])),
    "pseudo_huber complex weight": lambda: pseudo_huber(X, 0.1, torch.ones(4, 1) * (1 + 1j)),
    "pseudo_huber weight shape": lambda: pseudo_huber(X, 0.1, torch.ones(4, 3)),
    "stroke_guide 4x4": lambda: stroke_guide(Y[..., :4, :4]),
    "frechet complex": lambda: frechet_distance(torch.randn(6, 3) * (1 + 1j), torch.randn(5, 3)),
    "gaussian_kernel sigma 1e6": lambda: gaussian_kernel(1e6),
    # silent NaN/inf or a silently wrong answer
    "sigma_from_t NaN": lambda: sigma_from_t(NAN),
    "t_from_sigma NaN": lambda: t_from_sigma(NAN),
    "ct_loss NaN data": lambda: ct_loss(M, X * NAN, X, GRID),
    "ct_loss data 1e30": lambda: ct_loss(M, X * 1e30, X, GRID),
    "ict_index_probs p_std 0": lambda: ict_index_probs(GRID, p_std=0.0),
    "moments of data at 1e30": lambda: CouplingMoments.estimate(X * 1e30, X),
    "perturb float16 overflow": lambda: perturb_source(X.half(), 1e5),
    "Spirals turns 1e185": lambda: Spirals(turns=-8e185)(8),
    "Moons noise 1e39": lambda: Moons(noise=1e39)(8),
    "mean_std empty": lambda: mean_std([]),
    "G float64 beyond float32": lambda: M.G(X.double() * 1e300, 1.0, 0.0),
    "sdedit nfe 0": lambda: sdedit(IMG, Y, 0.5, nfe=0),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_inputs_found_by_fuzzing_get_one_clear_line_from_the_package(name):
    try:
        with time_limit(60):
            out = REFUSED[name]()
    except Hang:
        pytest.fail(f"{name}: hang")
    except Exception as err:
        problem = error_problem(err)
        assert problem is None, f"{name}: {problem}: {type(err).__name__}: {err}"
        return
    pytest.fail(f"{name}: no error; returned {nonfinite(out) or 'a finite value'}")


def test_bfloat16_images_and_boolean_data_are_computed_not_a_traceback():
    psnr, ssim = psnr_ssim(Y.bfloat16(), (Y * 0.5).bfloat16())
    assert math.isfinite(psnr) and math.isfinite(ssim)
    a, b = X > 0, X < 0
    assert torch.equal(interpolate(a, b, 0.5), (a.float() + b.float()) / 2)


def test_half_precision_images_are_degraded_on_the_cpu():
    from gctm_mini.degradations import Degradation

    for task in ("sr2", "deblur"):
        y = Degradation(task)(Y.half())
        assert y.dtype == torch.float16 and y.shape == Y.shape
        assert torch.allclose(y.float(), Degradation(task)(Y.half().float()), atol=1e-2)


def test_curriculum_N_of_a_huge_step_is_the_cap_without_hanging():
    with time_limit(10):
        assert curriculum_N(10**30, start=4, double_every=1, cap=1024) == 1024
    assert curriculum_N(3, start=4, double_every=1, cap=1024) == 32


def test_distances_at_huge_and_tiny_scales_are_the_unit_distance_times_the_scale():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 2, generator=g).double(), torch.randn(16, 2, generator=g).double()
    fa, fb = torch.randn(8, 3, generator=g).double(), torch.randn(9, 3, generator=g).double()
    path = torch.stack([x, (x + y) / 2 + 0.1, y])
    times = torch.tensor([1.0, 0.5, 0.0])
    for k in (600, -600):  # powers of two: the scaled inputs are exact
        s = 2.0**k
        assert w2(x * s, y * s) == pytest.approx(w2(x, y) * s, rel=1e-12)
        assert sliced_w2(x * s, y * s) == pytest.approx(sliced_w2(x, y) * s, rel=1e-12)
    for k in (300, -300):  # quadratic in the scale: 2^±600 stays within float64
        s = 2.0**k
        assert straightness(path * s, times) == pytest.approx(
            straightness(path, times) * s * s, rel=1e-12
        )
        assert frechet_distance(fa * s, fb * s) == pytest.approx(
            frechet_distance(fa, fb) * s * s, rel=1e-9
        )
    with pytest.raises(ValueError, match="overflows float64"):  # 2^1200: beyond float64
        straightness(path * 2.0**600, times)


def test_mmd2_with_a_tiny_bandwidth_is_the_kernel_diagonal_term():
    # h → 0: k(a, b) = 1 if a = b else 0, so for distinct points MMD² → 0 exactly
    x, y = torch.randn(6, 2), torch.randn(5, 2)
    assert mmd2(x, y, bandwidths=(1e-300,)) == 0.0


def test_gaussian_kernel_of_a_tiny_sigma_is_the_delta():
    k = gaussian_kernel(1e-300)
    assert k.shape == (3, 3) and float(k[1, 1]) == 1.0 and float(k.sum()) == 1.0


def test_slerp_of_identical_half_precision_latents_is_the_latent():
    a = torch.randn(2, 3, 4, 4).half()
    out = slerp(a, a.clone(), 0.3)
    assert out.dtype == torch.float16 and bool(torch.isfinite(out).all())
    assert torch.allclose(out.float(), a.float(), atol=1e-2)


def test_a_checkpoint_with_nan_weights_is_refused(tmp_path):
    spec = mlp_spec(hidden=4, depth=1)
    ema = build_model(spec).state_dict()
    ema["net.out.weight"] = ema["net.out.weight"] + NAN
    save_checkpoint(tmp_path, {"spec": spec, "ema": ema})
    with pytest.raises(Exception) as info:
        load_checkpoint(tmp_path)
    assert error_problem(info.value) is None and "NaN/inf" in str(info.value)


def test_a_checkpoint_whose_version_is_not_a_number_is_one_clear_line(tmp_path):
    spec = mlp_spec(hidden=4, depth=1)
    save_checkpoint(tmp_path, {"spec": spec, "ema": build_model(spec).state_dict()})
    raw = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    raw["version"] = [1]
    torch.save(raw, tmp_path / "checkpoint.pt")
    with pytest.raises(Exception) as info:
        load_checkpoint(tmp_path)
    assert error_problem(info.value) is None and "version" in str(info.value)


# --- the command line: nothing it only reads is ever overwritten -----------------------------


@pytest.fixture(scope="module")
def run2d(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    cfg = ["--steps", "2", "--batch-size", "8", "--hidden", "8", "--depth", "1", "--quiet"]
    assert cli.main(["train2d", *cfg, "--ckpt-every", "2", "--out", str(out)]) == 0
    return out


def _main(argv, capsys) -> tuple[int, str]:
    try:
        rc = cli.main(argv)
    except SystemExit as exc:
        rc = exc.code
    err = capsys.readouterr().err
    return rc, err


def test_eval2d_json_never_overwrites_the_checkpoint_it_evaluates(run2d, capsys):
    before = (run2d / "checkpoint.pt").read_bytes()
    argv = ["eval2d", str(run2d), "--n", "4", "--seeds", "1", "--nfe", "1"]
    rc, err = _main([*argv, "--json", str(run2d / "checkpoint.pt")], capsys)
    assert rc == 2 and "overwrite" in err and len(err.strip().splitlines()) == 1, err
    assert (run2d / "checkpoint.pt").read_bytes() == before


@pytest.mark.parametrize("name", ["config.json", "log.csv"])
def test_eval2d_json_never_overwrites_a_file_of_the_run(run2d, capsys, name):
    before = (run2d / name).read_bytes()
    argv = ["eval2d", str(run2d), "--n", "4", "--seeds", "1", "--nfe", "1"]
    rc, err = _main([*argv, "--json", str(run2d / name)], capsys)
    assert rc == 2 and "overwrite" in err and len(err.strip().splitlines()) == 1, err
    assert (run2d / name).read_bytes() == before


@pytest.mark.parametrize("dest", ["run", "run/checkpoint.pt"])
def test_export_never_overwrites_the_run_it_exports(run2d, capsys, monkeypatch, dest):
    monkeypatch.chdir(run2d.parent)
    before = (run2d / "checkpoint.pt").read_bytes()
    rc, err = _main(["export", "run", dest, "--half"], capsys)
    assert rc == 2 and "overwrite" in err and len(err.strip().splitlines()) == 1, err
    assert (run2d / "checkpoint.pt").read_bytes() == before


def test_export_replaces_an_earlier_export(run2d, capsys, tmp_path):
    dest = tmp_path / "ema.pt"
    for _ in range(2):
        rc, err = _main(["export", str(run2d), str(dest)], capsys)
        assert rc == 0, err
    assert load_checkpoint(dest).data_shape == (2,)


@pytest.mark.parametrize(
    "content",
    [
        "[]",
        '{"cells": 1}',
        '{"cells": [{"metadata": 1}]}',
        '{"cells": [{"metadata": {"nbgrader": {"grade": true}}, "outputs": 1}]}',
    ],
)
def test_classroom_grade_of_a_file_that_is_not_a_notebook_is_one_line(
    tmp_path, capsys, monkeypatch, content
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nb.ipynb").write_text(content, encoding="utf-8", errors="surrogateescape")
    rc, err = _main(["classroom", "grade", "nb.ipynb", "--no-run"], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_classroom_grade_csv_never_overwrites_the_notebook(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    check = {
        "cell_type": "code",
        "metadata": {"nbgrader": {"grade": True, "grade_id": "check-ex1", "points": 1}},
        "outputs": [{"output_type": "stream", "name": "stdout", "text": "✓ ex1\n"}],
        "source": "check()",
    }
    nb = json.dumps({"cells": [check], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
    (tmp_path / "nb.ipynb").write_text(nb, encoding="utf-8")
    rc, err = _main(["classroom", "grade", "nb.ipynb", "--no-run", "--csv", "nb.ipynb"], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert (tmp_path / "nb.ipynb").read_text(encoding="utf-8") == nb


def test_fine_grid_refuses_a_rho_whose_powers_overflow():
    from gctm_mini.timegrid import fine_grid

    for rho in (1e-300, 101.0):
        with pytest.raises(ValueError, match="rho"):
            fine_grid(8, rho=rho)


def test_pseudo_huber_refuses_a_c_whose_square_overflows():
    from gctm_mini.consistency import pseudo_huber

    with pytest.raises(ValueError, match="c must"):
        pseudo_huber(torch.ones(2, 3), 1e30)
