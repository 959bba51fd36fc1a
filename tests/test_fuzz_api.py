"""Fuzzing the public API: on any input, a finite result of the documented shape or a clear
one-line error from the package's own checks — never another exception, a silent NaN/inf or a
hang (:mod:`fuzzing` says exactly what is allowed).

The default profile runs a few examples per function (the file takes well under a minute);
``GCTM_FUZZ=long python -m pytest tests/test_fuzz_api.py`` runs a deep sweep.
"""

from __future__ import annotations

import io
import math

import torch
from fuzzing import (
    FLOAT_DTYPES,
    FLOATS,
    FUZZ,
    INTS,
    ODD_VALUES,
    OK,
    any_of,
    call,
    counts,
    good,
    image_model,
    names,
    numbers,
    tensors,
    toy,
)
from hypothesis import given
from hypothesis import strategies as st

from gctm_mini import couplings, interpolant, metrics, timegrid
from gctm_mini.checkpoint import load_checkpoint, load_raw, save_checkpoint
from gctm_mini.consistency import (
    bcm_loss,
    cd_loss,
    ct_loss,
    ctm_loss,
    gctm_loss,
    ict_index_probs,
    pseudo_huber,
)
from gctm_mini.data2d import (
    DATASETS,
    Circles,
    GaussianMixture,
    Moons,
    Spirals,
    StandardGaussian,
    as_sampler,
    make_dataset,
)
from gctm_mini.degradations import TASKS, Degradation, gaussian_kernel
from gctm_mini.editing import (
    interpolate_through_source,
    invert_ode,
    paste_guide,
    sdedit,
    slerp,
    stroke_guide,
)
from gctm_mini.evaluation import frechet_distance, psnr_ssim
from gctm_mini.losses import FM_TIME_SAMPLERS, fm_loss, sample_fm_times
from gctm_mini.models import build_model, mlp_spec
from gctm_mini.oracle import GaussianMixtureOracle
from gctm_mini.parameterization import CouplingMoments
from gctm_mini.restoration import dps_ode, restore_supervised, trajectory_start, zero_shot_restore
from gctm_mini.sampling import (
    SAMPLERS,
    bcm_interpolate,
    bcm_invert,
    bcm_round_trip,
    bcm_zigzag,
    gamma_sampling,
    make_sampler,
    sample_multistep,
    sample_ode,
)
from gctm_mini.solvers import METHODS, integrate, integrate_per_sample, nfe_of, steps_for_nfe
from gctm_mini.train_images import ImageConfig, make_config
from gctm_mini.training import Toy2DConfig

M, BI, IMG = toy(), toy(True), image_model()
B = 4

# --- strategies for the arguments ---------------------------------------------------------

SHAPES_2D = [(B, 2), (1, 2), (0, 2), (3, 2), (B, 3), (B,), (), (B, 2, 1), (5, 2)]
SHAPES_IMG = [(2, 3, 8, 8), (1, 3, 8, 8), (0, 3, 8, 8), (2, 1, 8, 8), (2, 3, 7, 7), (2, 3, 8)]
SHAPES_IMG += [(2, 3, 4, 4), (2, 3, 2, 2), (2, 3, 16, 16)]

points = any_of(good((B, 2)), tensors(shapes=SHAPES_2D))
"""A batch of 2-D points for the toy model: valid (B, 2) floats half the time."""
images = any_of(good((2, 3, 8, 8)), tensors(shapes=SHAPES_IMG))
times = st.one_of(numbers(0.0, 1.0), tensors(shapes=[(B,), (), (1,), (B, 1), (3,)]))
"""A time argument: a float in [0, 1] half the time, else anything."""
descending = st.one_of(
    st.integers(-1, 6),
    st.lists(st.floats(-0.5, 1.5), min_size=0, max_size=5),
    st.just([1.0, 0.5, 0.0]),
    st.just([1.0, 0.0]),
    tensors(shapes=[(3,), (1,), (2, 2)], dtypes=FLOAT_DTYPES),
    ODD_VALUES,
)
"""Sampler time lists: a number of jumps, a list, a tensor, or an odd value."""
grids = st.one_of(
    st.just(timegrid.fine_grid(4, dtype=torch.float32)),
    st.just(timegrid.fine_grid(2, dtype=torch.float32)),
    st.just(torch.linspace(0, 1, 5)),
    tensors(shapes=[(5,), (1,), (0,), (2, 3)], dtypes=FLOAT_DTYPES),
    st.just(torch.tensor([0.0, 0.7, 0.3, 1.0])),
    st.just(torch.tensor([0.2, 0.5, 1.0])),
    st.just(torch.tensor([0.0, 0.5, 2.0])),
    ODD_VALUES,
)
"""Time grids for the consistency losses: valid EDM grids, or bad ones."""


def expect_like(out, x: torch.Tensor) -> None:
    assert torch.is_tensor(out) and out.shape == x.shape, (tuple(out.shape), tuple(x.shape))


# --- couplings ------------------------------------------------------------------------------


@FUZZ
@given(
    x0=points,
    x1=points,
    coupling=names(couplings.COUPLINGS),
    reg=numbers(1e-3, 1.0),
    pairing=names(couplings.PAIRINGS),
    cost=names(couplings.COSTS),
    normalize=st.one_of(st.booleans(), ODD_VALUES),
    max_iter=counts(1, 50),
    tol=numbers(0.0, 1e-2),
)
def test_couple_returns_a_pairing_of_its_inputs_or_a_clear_error(
    x0, x1, coupling, reg, pairing, cost, normalize, max_iter, tol
):
    kind, out = call(
        couplings.couple,
        x0,
        x1,
        coupling,
        reg=reg,
        pairing=pairing,
        normalize_cost=normalize,
        cost=cost,
        max_iter=max_iter,
        tol=tol,
    )
    if kind == OK:
        a, b, info = out
        assert a.shape == x0.shape and b.shape == x1.shape
        if info.pairing in ("permutation", "identity"):  # every sample used exactly once
            assert torch.equal(a.flatten(1).sort(0).values, x0.flatten(1).sort(0).values)
            assert torch.equal(b.flatten(1).sort(0).values, x1.flatten(1).sort(0).values)


@FUZZ
@given(x0=points, x1=points)
def test_exact_ot_permutation_is_a_permutation_or_a_clear_error(x0, x1):
    kind, perm = call(couplings.exact_ot_permutation, x0, x1)
    if kind == OK:
        assert sorted(perm.tolist()) == list(range(x0.shape[0]))


@FUZZ
@given(
    cost=any_of(
        good((3, 3)), tensors(shapes=[(3, 3), (2, 3, 3), (0, 3), (3,), (), (4, 2), (1, 1)])
    ),
    reg=numbers(1e-3, 10.0),
    a=st.one_of(st.none(), tensors(shapes=[(3,), (2,), (2, 3)])),
    max_iter=counts(1, 50),
    tol=numbers(0.0, 1e-3),
    log=st.booleans(),
)
def test_sinkhorn_log_returns_a_finite_plan_or_a_clear_error(cost, reg, a, max_iter, tol, log):
    kind, plan = call(couplings.sinkhorn_log, cost, reg, a, None, max_iter, tol, log)
    if kind == OK:
        assert plan.shape == cost.shape
        if not log:
            assert bool((plan >= 0).all())


@FUZZ
@given(
    plan=tensors(shapes=[(3, 3), (2, 4, 4), (3, 2), (0, 3), (3,), (1, 1)]),
    pairing=names(couplings.PAIRINGS),
    log=st.booleans(),
)
def test_sinkhorn_pairs_returns_valid_rows_or_a_clear_error(plan, pairing, log):
    kind, rows = call(couplings.sinkhorn_pairs, plan, pairing, log=log)
    if kind == OK:
        assert rows.shape == (*plan.shape[:-2], plan.shape[-1])
        assert bool((rows >= 0).all()) and bool((rows < plan.shape[-2]).all())
        if pairing == "permutation":
            assert bool((rows.sort(-1).values == torch.arange(plan.shape[-1])).all())


@FUZZ
@given(x0=points, x1=points, cost=names(couplings.COSTS), normalize=st.booleans())
def test_pairwise_cost_is_finite_and_nonnegative_or_a_clear_error(x0, x1, cost, normalize):
    kind, C = call(couplings.pairwise_cost, x0, x1, cost, normalize)
    if kind == OK:
        assert C.shape == (x0.shape[0], x1.shape[0]) and bool((C >= 0).all())


@FUZZ
@given(x1=points, eps=FLOATS)
def test_perturb_source_is_finite_or_a_clear_error(x1, eps):
    kind, out = call(couplings.perturb_source, x1, eps)
    if kind == OK:
        expect_like(out, x1)


# --- interpolant and time grids -------------------------------------------------------------


@FUZZ
@given(x0=points, x1=points, t=times)
def test_interpolate_is_finite_with_the_data_shape_or_a_clear_error(x0, x1, t):
    kind, out = call(interpolant.interpolate, x0, x1, t)
    if kind == OK:
        expect_like(out, x0)
    kind, out = call(interpolant.conditional_velocity, x0, x1)
    if kind == OK:
        expect_like(out, x0)


@FUZZ
@given(t=st.one_of(FLOATS, tensors(shapes=[(3,), ()]), ODD_VALUES))
def test_sigma_and_t_convert_or_give_a_clear_error(t):
    kind, sigma = call(interpolant.sigma_from_t, t, finite=False)
    if kind == OK:  # σ(1) = ∞ is the documented exact value; nothing else may be non-finite
        tt = torch.as_tensor(t, dtype=sigma.dtype)
        assert bool((torch.isfinite(sigma) | (tt == 1)).all()) and not bool(sigma.isnan().any())
    kind, back = call(interpolant.t_from_sigma, t, finite=False)
    if kind == OK:
        assert not bool(back.isnan().any()) and bool(((back >= 0) & (back <= 1)).all())


def _grid_ok(g, n=None):
    assert g.dim() == 1 and bool((g[1:] > g[:-1]).all()), g
    assert float(g[0]) >= 0 and float(g[-1]) <= 1
    if n is not None:
        assert g.shape[0] == n


@FUZZ
@given(
    M=counts(1, 64),
    sigma_min=numbers(1e-3, 0.1),
    sigma_max=numbers(1.0, 500.0),
    rho=numbers(1.0, 10.0),
    shift=numbers(0.0, 0.99),
)
def test_fine_grid_is_an_ascending_grid_in_0_1_or_a_clear_error(
    M, sigma_min, sigma_max, rho, shift
):
    kind, g = call(timegrid.fine_grid, M, sigma_min, sigma_max, rho, shift=shift)
    if kind == OK:
        _grid_ok(g, M + 1)
        assert float(g[0]) == 0 and float(g[-1]) == 1


@FUZZ
@given(k=counts(1, 32), t_lo=numbers(0.0, 0.99), sigma_max=numbers(1.0, 500.0), rho=FLOATS)
def test_edm_times_is_an_ascending_grid_or_a_clear_error(k, t_lo, sigma_max, rho):
    kind, g = call(timegrid.edm_times, k, t_lo, sigma_max, rho)
    if kind == OK:
        _grid_ok(g, k + 1)


@FUZZ
@given(fine=st.one_of(grids, st.just(timegrid.fine_grid(16))), N=counts(1, 16), steps=counts(1, 16))
def test_coarse_and_uniform_grids_or_a_clear_error(fine, N, steps):
    kind, g = call(timegrid.coarse_grid, fine, N)
    if kind == OK:
        _grid_ok(g, N + 1)
    kind, g = call(timegrid.uniform_grid, steps)
    if kind == OK:
        assert g.shape == (steps + 1,) and float(g[0]) == 1 and float(g[-1]) == 0


@FUZZ
@given(
    steps=counts(1, 16),
    t_start=numbers(0.0, 1.0),
    t_end=numbers(0.0, 1.0),
)
def test_uniform_grid_stays_in_0_1_or_gives_a_clear_error(steps, t_start, t_end):
    kind, g = call(timegrid.uniform_grid, steps, t_start, t_end)
    if kind == OK:
        assert g.shape == (steps + 1,) and bool(((g >= 0) & (g <= 1)).all())


@FUZZ
@given(step=counts(0, 10**6), start=counts(1, 8), every=counts(0, 1000), cap=counts(1, 1024))
def test_curriculum_N_is_a_count_between_start_and_cap_or_a_clear_error(step, start, every, cap):
    kind, n = call(timegrid.curriculum_N, step, start, every, cap)
    if kind == OK:
        assert isinstance(n, int) and 1 <= n <= max(start, cap)


@FUZZ
@given(grid=grids, batch=counts(1, 8))
def test_draw_tsu_gives_ordered_indices_or_a_clear_error(grid, batch):
    kind, out = call(timegrid.draw_tsu, grid, batch)
    if kind == OK:
        t, s, u = out
        assert t.shape == s.shape == u.shape == (batch,)
        assert bool((t > u).all()) and bool((u >= s).all()) and bool((s >= 0).all())
        assert bool((t < grid.shape[0]).all())


# --- the model ------------------------------------------------------------------------------


@FUZZ
@given(x=points, t=times, s=times, bi=st.booleans())
def test_flow_map_G_g_velocity_are_finite_in_the_input_dtype_or_a_clear_error(x, t, s, bi):
    model = BI if bi else M
    for fn, args in ((model.G, (x, t, s)), (model.g, (x, t, s)), (model.velocity, (x, t))):
        kind, out = call(fn, *args)
        if kind == OK:
            expect_like(out, x)
            assert out.dtype == x.dtype


@FUZZ
@given(x=images, t=times, s=times)
def test_image_flow_map_is_finite_or_a_clear_error(x, t, s):
    kind, out = call(IMG.G, x, t, s)
    if kind == OK:
        expect_like(out, x)


@FUZZ
@given(
    x0=points,
    x1=points,
    eps=FLOATS,
    per_coordinate=st.booleans(),
)
def test_coupling_moments_estimate_is_finite_and_positive_or_a_clear_error(
    x0, x1, eps, per_coordinate
):
    kind, mom = call(CouplingMoments.estimate, x0, x1, eps, per_coordinate)
    if kind == OK:
        assert bool((torch.as_tensor(mom.v1) >= 0).all())


@FUZZ
@given(
    dim=counts(1, 3),
    hidden=counts(1, 16),
    depth=counts(1, 3),
    emb_dim=counts(2, 8),
    dropout=numbers(0.0, 0.5),
    sigma_max=numbers(1.0, 100.0),
)
def test_build_model_from_a_spec_or_a_clear_error(dim, hidden, depth, emb_dim, dropout, sigma_max):
    spec = {
        "net": "mlp",
        "net_kwargs": {
            "dim": dim,
            "hidden": hidden,
            "depth": depth,
            "emb_dim": emb_dim,
            "dropout": dropout,
        },
        "data_shape": [dim],
        "sigma_min": 0.002,
        "sigma_max": sigma_max,
    }
    kind, model = call(build_model, spec, finite=False)
    if kind == OK:
        kind, out = call(model.eval().G, torch.randn(2, dim), 1.0, 0.0)
        assert kind == OK and out.shape == (2, dim)


# --- solvers and samplers -------------------------------------------------------------------


@FUZZ
@given(
    x=points,
    times=st.one_of(grids, st.just(torch.linspace(1, 0, 4)), tensors(shapes=[(3,)])),
    method=names(METHODS),
    path=st.booleans(),
)
def test_integrate_is_finite_or_a_clear_error(x, times, method, path):
    kind, out = call(integrate, M.velocity, x, times, method, return_path=path)
    if kind == OK:
        end = out[0] if path else out
        expect_like(end, x)
    kind, n = call(nfe_of, times, method)
    if kind == OK:
        assert isinstance(n, int) and n >= 1


@FUZZ
@given(nfe=counts(1, 100), method=names(METHODS))
def test_steps_for_nfe_is_a_positive_count_or_a_clear_error(nfe, method):
    kind, k = call(steps_for_nfe, nfe, method)
    if kind == OK:
        assert isinstance(k, int) and k >= 1


@FUZZ
@given(
    x=points,
    grid=grids,
    start=st.one_of(
        st.just(torch.tensor([0, 1, 2, 4])),
        tensors(shapes=[(B,), (3,)], dtypes=(torch.int64, torch.float32, torch.bool)),
    ),
    end=st.one_of(st.just(torch.tensor([4, 0, 2, 1])), tensors(shapes=[(B,)])),
    method=names(METHODS),
)
def test_integrate_per_sample_is_finite_or_a_clear_error(x, grid, start, end, method):
    kind, out = call(integrate_per_sample, M.velocity, x, grid, start, end, method)
    if kind == OK:
        expect_like(out, x)


@FUZZ
@given(x1=points, nfe=counts(1, 8), method=names(METHODS), path=st.booleans())
def test_sample_ode_is_finite_in_the_input_dtype_or_a_clear_error(x1, nfe, method, path):
    kind, out = call(sample_ode, M, x1, nfe, method, path)
    if kind == OK:
        end = out[0] if path else out
        expect_like(end, x1)
        assert end.dtype == x1.dtype


@FUZZ
@given(x1=points, jumps=descending, gamma=numbers(0.0, 1.0), bi=st.booleans())
def test_multistep_and_gamma_sampling_are_finite_or_a_clear_error(x1, jumps, gamma, bi):
    model = BI if bi else M
    kind, out = call(sample_multistep, model, x1, jumps)
    if kind == OK:
        expect_like(out, x1)
    kind, out = call(gamma_sampling, model, x1, jumps, gamma, torch.Generator().manual_seed(0))
    if kind == OK:
        expect_like(out, x1)


@FUZZ
@given(kind_=names(SAMPLERS), gamma=numbers(0.0, 1.0), nfe=counts(1, 4), x1=points)
def test_make_sampler_samples_or_gives_a_clear_error(kind_, gamma, nfe, x1):
    kind, sampler = call(make_sampler, M, kind_, gamma, finite=False)
    if kind == OK:
        kind, out = call(sampler, x1, nfe)
        if kind == OK:
            expect_like(out, x1)


@FUZZ
@given(
    x0=points,
    jumps=st.one_of(
        st.integers(-1, 4),
        st.lists(st.floats(-0.5, 1.5), max_size=4),
        st.just([0.02, 0.5, 1.0]),
        ODD_VALUES,
    ),
    t_start=numbers(0.001, 0.5),
    bi=st.booleans(),
)
def test_bcm_inversion_is_finite_or_a_clear_error(x0, jumps, t_start, bi):
    model = BI if bi else M
    kind, z = call(bcm_invert, model, x0, jumps, t_start, torch.Generator().manual_seed(0))
    if kind == OK:
        expect_like(z, x0)
    kind, out = call(bcm_round_trip, model, x0, jumps, t_start)
    if kind == OK:
        expect_like(out[1], x0)


@FUZZ
@given(
    x1=points,
    tlist=st.one_of(st.lists(st.floats(-0.5, 1.5), max_size=3), st.just([0.5, 0.2]), ODD_VALUES),
    t_start=numbers(0.001, 0.1),
    weights=st.one_of(
        st.just(torch.tensor([0.0, 0.5, 1.0])),
        tensors(shapes=[(3,), (), (2, 2)]),
        st.just([0.0, 1.0]),
        ODD_VALUES,
    ),
    steps=counts(1, 3),
)
def test_bcm_zigzag_and_interpolation_are_finite_or_a_clear_error(
    x1, tlist, t_start, weights, steps
):
    kind, out = call(bcm_zigzag, BI, x1, tlist, t_start)
    if kind == OK:
        expect_like(out, x1)
    xb = torch.randn(B, 2)
    kind, out = call(bcm_interpolate, BI, x1, xb, weights, steps, steps, t_start)
    if kind == OK:
        assert out.shape[1:] == x1.shape


# --- losses -------------------------------------------------------------------------------


def _loss_ok(kind, out):
    if kind == OK:
        loss, logs = out if isinstance(out, tuple) else (out, {})
        assert loss.dim() == 0
        assert all(isinstance(v, float) for v in logs.values())


@FUZZ
@given(
    x0=points,
    x1=points,
    t=st.one_of(good((B,)).map(lambda t: t.abs().clamp(0, 1)), tensors(shapes=[(B,), (3,), ()])),
    bi=st.booleans(),
)
def test_fm_loss_is_a_finite_scalar_or_a_clear_error(x0, x1, t, bi):
    _loss_ok(*call(fm_loss, BI if bi else M, x0, x1, t))


@FUZZ
@given(
    batch=counts(1, 16),
    kind_=names(FM_TIME_SAMPLERS),
    source_prob=numbers(0.0, 1.0),
)
def test_sample_fm_times_lie_in_0_1_or_a_clear_error(batch, kind_, source_prob):
    kind, t = call(sample_fm_times, batch, kind_, None, None, source_prob)
    if kind == OK:
        assert t.shape == (batch,) and bool(((t > 0) & (t <= 1)).all())


@FUZZ
@given(x0=points, x1=points, grid=grids, which=st.sampled_from(["gctm", "ct", "cd", "ctm", "bcm"]))
def test_consistency_losses_are_finite_scalars_or_a_clear_error(x0, x1, grid, which):
    torch.manual_seed(0)
    model, teacher = (BI if which == "bcm" else M), M
    fn = {
        "gctm": lambda: gctm_loss(model, model, x0, x1, grid),
        "ct": lambda: ct_loss(model, x0, x1, grid),
        "cd": lambda: cd_loss(model, model, teacher, x0, x1, grid),
        "ctm": lambda: ctm_loss(model, model, teacher, x0, x1, grid),
        "bcm": lambda: bcm_loss(model, x0, x1, grid),
    }[which]
    _loss_ok(*call(fn))


@FUZZ
@given(
    delta=tensors(shapes=[(B, 2), (B,), (0, 2), ()]),
    c=FLOATS,
    weight=st.one_of(st.none(), tensors(shapes=[(B, 1), (B, 2), (3,)])),
)
def test_pseudo_huber_is_finite_and_nonnegative_or_a_clear_error(delta, c, weight):
    # documented: values are not checked (a training-step building block); NaN/inf in delta,
    # a weight that is not positive or residuals whose squares overflow pass through to the
    # loss, where training stops on them
    valid = delta.is_floating_point() and bool(torch.isfinite(delta).all())
    if weight is not None:
        valid = valid and weight.dtype == delta.dtype
        valid = valid and bool(torch.isfinite(weight).all()) and bool((weight > 0).all())
    if valid and delta.numel():
        r = delta / weight if weight is not None and delta.dim() >= 2 else delta
        valid = float(r.abs().max()) < 1e18
    kind, d = call(pseudo_huber, delta, c, weight, finite=valid)
    if kind == OK and valid:
        assert d.shape == (delta.shape[0],) and bool((d >= 0).all())


@FUZZ
@given(grid=grids, p_mean=FLOATS, p_std=FLOATS)
def test_ict_index_probs_is_a_distribution_or_a_clear_error(grid, p_mean, p_std):
    kind, p = call(ict_index_probs, grid, p_mean, p_std)
    if kind == OK:
        assert p.shape == (grid.shape[0] - 1,) and bool((p >= 0).all())
        assert abs(float(p.sum()) - 1) < 1e-4


# --- metrics --------------------------------------------------------------------------------


@FUZZ
@given(x=points, y=points, n_proj=counts(1, 64), seed=INTS, bandwidth=FLOATS)
def test_distances_are_finite_and_nonnegative_or_a_clear_error(x, y, n_proj, seed, bandwidth):
    kind, d = call(metrics.w2, x, y)
    if kind == OK:
        assert isinstance(d, float) and d >= 0
    kind, d = call(metrics.sliced_w2, x, y, n_proj, seed)
    if kind == OK:
        assert isinstance(d, float) and d >= 0
    kind, d = call(metrics.mmd2, x, y, (bandwidth,))
    if kind == OK:
        assert isinstance(d, float)


@FUZZ
@given(
    path=tensors(shapes=[(3, B, 2), (1, B, 2), (3, B), (3, 0, 2), (4, 2, 3, 3)]),
    times=st.one_of(
        st.just(torch.tensor([1.0, 0.5, 0.0])),
        tensors(shapes=[(3,), (4,), (1,)]),
    ),
)
def test_straightness_is_finite_and_nonnegative_or_a_clear_error(path, times):
    kind, s = call(metrics.straightness, path, times)
    if kind == OK:
        assert isinstance(s, float) and s >= 0


@FUZZ
@given(
    nfes=st.one_of(st.lists(counts(1, 3), max_size=3), ODD_VALUES, st.integers()),
    n=counts(2, 16),
    seeds=counts(1, 2),
    metric=names(metrics.METRICS),
    data=st.one_of(st.just(make_dataset("moons")), st.sampled_from(["moons", "nope"]), ODD_VALUES),
)
def test_quality_by_nfe_and_data_floor_are_finite_or_a_clear_error(nfes, n, seeds, metric, data):
    sampler = make_sampler(M, "flowmap")
    kind, rep = call(metrics.quality_by_nfe, sampler, data, nfes, n, seeds, metric)
    if kind == OK:
        assert set(rep.values) == {int(k) for k in nfes}
    kind, f = call(metrics.data_floor, data, n, seeds, metric)
    if kind == OK:
        assert isinstance(f, float)


# --- degradations, restoration, editing -----------------------------------------------------


@FUZZ
@given(
    task=names(TASKS),
    sigma=numbers(0.0, 2.0),
    x=images,
    step=numbers(0.1, 1.5),
    iters=counts(0, 3),
)
def test_degradations_are_finite_with_the_image_shape_or_a_clear_error(task, sigma, x, step, iters):
    kind, op = call(Degradation, task, sigma, finite=False)
    if kind != OK:
        return
    g = torch.Generator().manual_seed(0)
    kind, y = call(op, x, g)
    if kind == OK:
        expect_like(y, x)
    for fn in (op.clean, op.adjoint, op.back_project):
        kind, out = call(fn, x)
        if kind == OK:
            expect_like(out, x)
    kind, out = call(op.project, x, x, step, iters)
    if kind == OK:
        expect_like(out, x)


@FUZZ
@given(sigma=FLOATS, size=st.one_of(st.none(), INTS, ODD_VALUES))
def test_gaussian_kernel_is_normalized_or_a_clear_error(sigma, size):
    kind, k = call(gaussian_kernel, sigma, size)
    if kind == OK:
        assert k.dim() == 2 and k.shape[0] == k.shape[1] and abs(float(k.sum()) - 1) < 1e-4


@FUZZ
@given(
    y=images,
    task=st.sampled_from(["sr2", "deblur", "inpaint"]),
    nfe=counts(1, 2),
    eta=numbers(0.0, 1.0),
    t_start=numbers(0.01, 1.0),
    eps=numbers(0.0, 0.1),
    zeta=numbers(0.0, 2.0),
)
def test_restoration_is_finite_with_the_image_shape_or_a_clear_error(
    y, task, nfe, eta, t_start, eps, zeta
):
    op = Degradation(task)
    kind, out = call(restore_supervised, IMG, y, nfe, eps, None, op, 2)
    if kind == OK:
        expect_like(out, y)
    kind, out = call(zero_shot_restore, IMG, y, op, nfe, eta, 2, None, t_start)
    if kind == OK:
        expect_like(out, y)
    kind, out = call(dps_ode, IMG, y, op, nfe, zeta, None, t_start)
    if kind == OK:
        expect_like(out, y)
    kind, out = call(trajectory_start, op, y, t_start)
    if kind == OK:
        expect_like(out, y)


@FUZZ
@given(
    guide=images,
    t=numbers(0.01, 1.0),
    nfe=counts(1, 3),
    steps=counts(1, 3),
    w=numbers(0.0, 1.0),
    other=images,
)
def test_editing_is_finite_with_the_image_shape_or_a_clear_error(guide, t, nfe, steps, w, other):
    kind, out = call(sdedit, IMG, guide, t, nfe)
    if kind == OK:
        expect_like(out, guide)
    kind, out = call(invert_ode, IMG, guide, steps)
    if kind == OK:
        expect_like(out, guide)
    kind, out = call(slerp, guide, other, w)
    if kind == OK:
        expect_like(out, guide)
    kind, out = call(interpolate_through_source, IMG, guide, other, [w], steps)
    if kind == OK:
        assert out.shape == (1, *guide.shape)


@FUZZ
@given(
    images_=images,
    donors=images,
    strokes=counts(0, 3),
    width=counts(1, 4),
    size=st.one_of(st.none(), counts(1, 8)),
)
def test_guides_are_images_of_the_input_shape_or_a_clear_error(
    images_, donors, strokes, width, size
):
    kind, out = call(stroke_guide, images_, None, strokes, width)
    if kind == OK:
        expect_like(out, images_)
    kind, out = call(paste_guide, images_, donors, size)
    if kind == OK:
        expect_like(out, images_)


# --- evaluation -----------------------------------------------------------------------------


@FUZZ
@given(pred=images, target=images)
def test_psnr_ssim_are_numbers_or_a_clear_error(pred, target):
    kind, out = call(psnr_ssim, pred, target, finite=False)
    if kind == OK:
        psnr, ssim = out
        assert math.isfinite(ssim) and not math.isnan(psnr)
        if math.isinf(psnr):  # documented: an image identical to its target (after clamping)
            assert psnr > 0 and bool((pred.clamp(-1, 1) == target.clamp(-1, 1)).any())


@FUZZ
@given(
    fa=any_of(good((6, 3)), tensors(shapes=[(6, 3), (1, 3), (6, 4), (6,), (0, 3), (3, 5)])),
    fb=any_of(good((5, 3)), tensors(shapes=[(5, 3), (2, 3)])),
)
def test_frechet_distance_is_finite_and_nonnegative_or_a_clear_error(fa, fb):
    kind, d = call(frechet_distance, fa, fb)
    if kind == OK:
        assert isinstance(d, float) and d > -1e-6 * (1 + abs(d))


# --- data sets and configs ------------------------------------------------------------------


@FUZZ
@given(name=names(DATASETS), n=counts(1, 16))
def test_make_dataset_samples_finite_points_or_a_clear_error(name, n):
    kind, ds = call(make_dataset, name, finite=False)
    if kind == OK:
        kind, x = call(ds, n)
        if kind == OK:
            assert x.shape[0] == n and x.dim() == 2
    kind, ds = call(as_sampler, name, finite=False)


@FUZZ
@given(
    weights=st.one_of(st.just([0.5, 0.5]), st.lists(FLOATS, max_size=3), ODD_VALUES),
    means=st.one_of(
        st.just([[0.0, 0.0], [1.0, 1.0]]),
        tensors(shapes=[(2, 2), (1, 2), (0, 2), (2,)], dtypes=(torch.float64,)),
    ),
    covs=st.one_of(st.just(0.1), FLOATS, tensors(shapes=[(2, 2, 2), (2,), ()])),
    noise=FLOATS,
    scale=FLOATS,
    dim=counts(1, 3),
)
def test_data_set_constructors_give_finite_samples_or_a_clear_error(
    weights, means, covs, noise, scale, dim
):
    builders = [
        lambda: GaussianMixture(weights, means, covs),
        lambda: Moons(noise, scale),
        lambda: Spirals(noise, scale),
        lambda: Circles(noise),
        lambda: StandardGaussian(dim),
    ]
    for build in builders:
        kind, ds = call(build, finite=False)
        if kind == OK:
            kind, x = call(ds, 8, torch.Generator().manual_seed(0))
            if kind == OK:
                assert x.shape[0] == 8


@FUZZ
@given(x=points, t=times, s=times)
def test_the_oracle_is_finite_or_a_clear_error(x, t, s):
    oracle = GaussianMixtureOracle(make_dataset("8gaussians"))
    for fn, args in (
        (oracle.velocity, (x, t)),
        (oracle.posterior_mean, (x, t)),
        (oracle.log_density, (x, t)),
        (lambda *a: oracle.flow_map(*a, steps=4), (x, t, s)),
    ):
        kind, out = call(fn, *args)
        if kind == OK:
            assert out.shape[0] == x.shape[0]


CONFIG_VALUES = st.one_of(FLOATS, INTS, ODD_VALUES, st.text(max_size=5))


@FUZZ
@given(
    d=st.dictionaries(
        st.one_of(
            st.sampled_from([f for f in Toy2DConfig.__dataclass_fields__]),
            st.text(min_size=1, max_size=4),
        ),
        CONFIG_VALUES,
        max_size=4,
    )
)
def test_toy2d_config_from_any_dict_is_valid_or_a_clear_error(d):
    kind, cfg = call(lambda: Toy2DConfig.from_dict(d).validate(), finite=False)
    if kind == OK:
        assert math.isfinite(cfg.lr) and cfg.steps >= 1


@FUZZ
@given(
    d=st.dictionaries(
        st.one_of(
            st.sampled_from([f for f in ImageConfig.__dataclass_fields__]),
            st.text(min_size=1, max_size=4),
        ),
        CONFIG_VALUES,
        max_size=4,
    ),
    overrides=st.lists(st.text(max_size=12), max_size=2),
)
def test_image_config_from_any_dict_is_valid_or_a_clear_error(d, overrides):
    kind, cfg = call(lambda: ImageConfig.from_dict({"steps": 1, **d}).validate(), finite=False)
    kind, cfg = call(make_config, "patches_cpu", overrides, finite=False)


# --- checkpoints ----------------------------------------------------------------------------


def _checkpoint_bytes() -> bytes:
    spec = mlp_spec(hidden=4, depth=1)
    model = build_model(spec)
    buf = io.BytesIO()
    torch.save({"format": "gctm_mini", "version": 1, "spec": spec, "ema": model.state_dict()}, buf)
    return buf.getvalue()


CKPT = _checkpoint_bytes()


@FUZZ
@given(
    cut=st.integers(0, len(CKPT)),
    flips=st.lists(st.tuples(st.integers(0, len(CKPT) - 1), st.integers(1, 255)), max_size=3),
)
def test_a_truncated_or_corrupted_checkpoint_loads_or_gives_a_clear_error(tmp_path, cut, flips):
    data = bytearray(CKPT[:cut] if cut < len(CKPT) else CKPT)
    for i, v in flips:
        if i < len(data):
            data[i] ^= v
    path = tmp_path / "c.pt"
    path.write_bytes(bytes(data))
    kind, model = call(load_checkpoint, path, finite=False)
    if kind == OK:
        kind, out = call(model.G, torch.randn(2, 2), 1.0, 0.0)
        assert kind == OK


@FUZZ
@given(
    key=st.sampled_from(["spec", "ema", "config", "version", "format", "checksum"]),
    sub=st.sampled_from(["net", "net_kwargs", "data_shape", "sigma_min", "sigma_max", None]),
    value=st.one_of(CONFIG_VALUES, st.just({"hidden": -1}), st.just([2, 2]), st.just({})),
    nan_weights=st.booleans(),
)
def test_a_checkpoint_with_odd_entries_loads_or_gives_a_clear_error(
    tmp_path, key, sub, value, nan_weights
):
    spec = mlp_spec(hidden=4, depth=1)
    model = build_model(spec)
    ema = model.state_dict()
    if nan_weights:
        ema["net.out.weight"] = ema["net.out.weight"] + float("nan")
    payload = {"spec": spec, "ema": ema, "config": {"method": "fm", "data": "moons"}}
    if key == "spec" and sub is not None:
        payload["spec"] = {**spec, sub: value}
    elif key in ("spec", "ema", "config"):
        payload[key] = value
    save_checkpoint(tmp_path, payload)
    if key in ("version", "format", "checksum"):
        raw = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
        raw[key] = value
        torch.save(raw, tmp_path / "checkpoint.pt")
    kind, model = call(load_checkpoint, tmp_path, finite=False)
    if kind == OK:
        kind, out = call(model.G, torch.randn(2, *model.data_shape), 1.0, 0.0)
        assert kind == OK
    call(load_raw, tmp_path, finite=False)
