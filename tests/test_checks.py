"""Every classroom check accepts the correct answer and rejects typical wrong ones with a
message that names the mistake."""

import pytest
import torch

from gctm_mini import checks
from gctm_mini.checks import CheckFailed
from gctm_mini.couplings import exact_ot_permutation
from gctm_mini.degradations import Degradation
from gctm_mini.solvers import integrate_per_sample


def rejects(check, fn, *words):
    with pytest.raises(CheckFailed) as err:
        check(fn)
    msg = str(err.value).lower()
    assert all(w.lower() in msg for w in words), msg


def interp(x0, x1, t):
    t = torch.as_tensor(t, dtype=x0.dtype)
    t = t.reshape(-1, *([1] * (x0.dim() - 1))) if t.dim() else t
    return (1 - t) * x0 + t * x1


def test_interpolant_check():
    assert checks.check_interpolant(interp)
    rejects(checks.check_interpolant, lambda x0, x1, t: interp(x1, x0, t), "direction")
    rejects(checks.check_interpolant, lambda x0, x1, t: (1 - t) * x0 + t * x1, "broadcast")
    rejects(
        checks.check_interpolant,
        lambda x0, x1, t: (
            (1 - t**2) * x0 + t**2 * x1 if not torch.is_tensor(t) else interp(x0, x1, t)
        ),
        "linear",
    )


def test_fm_target_check():
    assert checks.check_fm_target(lambda x0, x1: x1 - x0)
    rejects(checks.check_fm_target, lambda x0, x1: x0 - x1, "sign")


def test_ot_pairing_check():
    assert checks.check_ot_pairing(exact_ot_permutation)
    rejects(checks.check_ot_pairing, lambda x0, x1: torch.zeros(6, dtype=torch.long), "permutation")
    rejects(checks.check_ot_pairing, lambda x0, x1: torch.arange(6), "optimum")

    def euclid(x0, x1):  # optimal for the wrong cost
        import itertools

        E = torch.cdist(x0.double(), x1.double())
        best = min(
            itertools.permutations(range(6)), key=lambda p: sum(float(E[i, p[i]]) for i in range(6))
        )
        return torch.tensor(best)

    # on some batches the two costs agree; the check must catch the batches where they do not
    try:
        checks.check_ot_pairing(euclid)
    except CheckFailed as err:
        assert "squared" in str(err)


def flow_map(x, t, s, g):
    r = torch.where(t > 0, s / t.clamp_min(1e-12), torch.ones_like(t))[:, None]
    return r * x + (1 - r) * g


def test_flow_map_check():
    assert checks.check_flow_map(flow_map)
    rejects(
        checks.check_flow_map,
        lambda x, t, s, g: (s / t)[:, None] * x + (1 - s / t)[:, None] * g,
        "0/0",
    )
    rejects(checks.check_flow_map, lambda x, t, s, g: g, "boundary")
    rejects(
        checks.check_flow_map,
        lambda x, t, s, g: (
            flow_map(g, t, s, x)
            if False
            else torch.where(
                (t == s)[:, None],
                x,
                (1 - s / t.clamp_min(1e-12))[:, None] * x + (s / t.clamp_min(1e-12))[:, None] * g,
            )
        ),
        "swapped",
    )


def test_pseudo_huber_check():
    assert checks.check_pseudo_huber(lambda d, c: (d.pow(2).sum(1) + c * c).sqrt() - c)
    rejects(checks.check_pseudo_huber, lambda d, c: (d.pow(2) + c * c).sqrt() - c, "element-wise")
    rejects(
        checks.check_pseudo_huber,
        lambda d, c: ((d.pow(2).sum(1) + c * c).sqrt() - c).mean(),
        "per sample",
    )
    rejects(checks.check_pseudo_huber, lambda d, c: d.pow(2).sum(1), "squared norm")


def gctm_target(model, ema, x, t_idx, u_idx, s, grid, ode=None, jump=None, grad=False):
    ode, jump = ode or ema, jump or model
    ctx = torch.enable_grad() if grad else torch.no_grad()
    with ctx:
        xu = integrate_per_sample(ode._velocity, x, grid, t_idx, u_idx, "heun")
        return jump._G(xu, grid[u_idx], s)


def test_gctm_target_check():
    assert checks.check_gctm_target(gctm_target)
    rejects(checks.check_gctm_target, lambda m, e, *a: gctm_target(m, e, *a, grad=True), "no_grad")
    rejects(
        checks.check_gctm_target,
        lambda m, e, *a: gctm_target(m, e, *a, ode=m),
        "ema model's velocity",
    )
    rejects(
        checks.check_gctm_target, lambda m, e, *a: gctm_target(m, e, *a, jump=e), "current weights"
    )


def test_gamma_renoise_check():
    sig = lambda t: t / (1 - t)  # noqa: E731
    assert checks.check_gamma_renoise(
        lambda x, sp, tn, g, z: (1 - tn) * (x / (1 - sp) + g * sig(tn) * z)
    )
    rejects(
        checks.check_gamma_renoise,
        lambda x, sp, tn, g, z: x / (1 - sp) + g * sig(tn) * z,
        "(1 − t_next)",
    )
    rejects(
        checks.check_gamma_renoise,
        lambda x, sp, tn, g, z: (1 - tn) * (x / (1 - sp) + g * tn * z),
        "σ(t_next)",
    )


def test_degradation_check():
    op = Degradation("inpaint")
    assert checks.check_degradation(op.clean, "inpaint")
    rejects(
        lambda f: checks.check_degradation(f, "inpaint"), lambda x: x * (1 - op.mask(x)), "inverted"
    )
    blur = Degradation("deblur")
    assert checks.check_degradation(blur.clean, "deblur")
    rejects(lambda f: checks.check_degradation(f, "deblur"), lambda x: x, "deblur")


def test_one_jump_check():
    assert checks.check_one_jump_sampler(lambda m, x1: m.G(x1, 1.0, 0.0))
    rejects(
        checks.check_one_jump_sampler,
        lambda m, x1: m.G(m.G(x1, 1.0, 0.5), 0.5, 0.0),
        "one network evaluation",
    )

    def backwards(m, x1):
        return m._G(x1, torch.zeros(len(x1)), torch.ones(len(x1)))

    rejects(checks.check_one_jump_sampler, backwards, "direction")


def test_not_implemented_passes_through_unchanged():
    def stub(*a):
        raise NotImplementedError("write the interpolant")

    with pytest.raises(NotImplementedError):
        checks.check_interpolant(stub)


def test_bidirectional_map_check():
    f = lambda x, t, s, u: x + (s - t)[:, None] * u  # noqa: E731
    assert checks.check_bidirectional_map(f)
    rejects(
        checks.check_bidirectional_map, lambda x, t, s, u: x + (t - s)[:, None] * u, "direction"
    )
    rejects(checks.check_bidirectional_map, lambda x, t, s, u: x + (s - t) * u, "reshape")
    rejects(checks.check_bidirectional_map, lambda x, t, s, u: x * (s / t)[:, None] + u, "nan")


def gctm_loss_answer(model, ema, x0, x1, grid, rng, lam=1.0, *, draw, solve, fm, mistake=None):
    """A student's GCTM loss: right, or with one typical mistake."""
    from gctm_mini.checks import _masks

    t_idx, s_idx, u_idx = draw(grid, x0.shape[0], rng)
    t, s, u = grid[t_idx], grid[s_idx], grid[u_idx]
    tb = t[:, None]
    xt = (1 - tb) * x0 + tb * x1
    grad_ode = torch.enable_grad() if mistake == "ode_grad" else torch.no_grad()
    with grad_ode:
        xu = solve(ema._velocity, xt, grid, t_idx, u_idx)
    seed = rng.seed()
    grad_target = torch.enable_grad() if mistake in ("target_grad", "ode_grad") else torch.no_grad()
    with _masks(model, rng, seed), grad_target:
        target = model._G(xu, u, s)
    with _masks(model, rng, seed + (mistake == "masks")):
        student = model._G(xt, t, s)
    w = model.coefficients(t, x0)["c_out"] * (1 - s / t)[:, None]
    c = 0.00054 * 2**0.5
    if mistake == "reference_form":  # (sqrt(‖Δ‖² + (cw)²) − cw) / w, the same distance
        w1 = w[:, 0]
        d = ((student - target).pow(2).sum(1) + (c * w1) ** 2).sqrt() - c * w1
        cons = (d / w1).mean()
    elif mistake == "elementwise":
        cons = ((((student - target) / w).pow(2) + c * c).sqrt() - c).mean()
    elif mistake == "unweighted":
        cons = (((student - target).pow(2).sum(1) + c * c).sqrt() - c).mean()
    elif mistake == "nan":
        cons = ((((student - target) / (w * 0)).pow(2).sum(1) + c * c).sqrt() - c).mean()
    else:
        cons = ((((student - target) / w).pow(2).sum(1) + c * c).sqrt() - c).mean()
    if mistake == "ema_target":
        with torch.no_grad():
            cons = (
                cons * 0
                + ((((student - ema._G(xu, u, s)) / w).pow(2).sum(1) + c * c).sqrt() - c).mean()
            )
    l_fm = fm(model, x0, x1, rng, seed)
    return cons + lam * l_fm if mistake == "lam_on_fm" else lam * cons + l_fm


def test_gctm_loss_check_accepts_the_loss_and_names_each_mistake():
    assert checks.check_gctm_loss(gctm_loss_answer)
    assert checks.check_gctm_loss(
        lambda *a, **k: gctm_loss_answer(*a, **k, mistake="reference_form")
    )
    for mistake, words in {
        "elementwise": ("element-wise",),
        "unweighted": ("missing weight",),
        "nan": ("0/0",),
        "target_grad": ("stop-gradient",),
        "ode_grad": ("ode solve", "no_grad"),
        "lam_on_fm": ("λ multiplies",),
        "masks": ("dropout masks",),
    }.items():
        rejects(
            checks.check_gctm_loss,
            lambda *a, m=mistake, **k: gctm_loss_answer(*a, **k, mistake=m),
            *words,
        )


def test_gctm_loss_check_names_ema_target_and_time_direction():
    from gctm_mini.checks import _gctm_variant

    def variant(mistake):
        def fn(model, ema, x0, x1, grid, rng, lam=1.0, *, draw, solve, fm):
            pieces = {"draw": draw, "solve": solve, "fm": fm}
            return _gctm_variant(model, ema, x0, x1, grid, rng, lam, pieces, mistake)

        return fn

    assert checks.check_gctm_loss(variant(None))
    rejects(checks.check_gctm_loss, variant("ema_target"), "current weights", "not the ema")
    rejects(checks.check_gctm_loss, variant("model_ode"), "ema model's velocity")
    rejects(checks.check_gctm_loss, variant("interpolant"), "time direction")
    rejects(checks.check_gctm_loss, variant("solve_backwards"), "time direction")
    rejects(checks.check_gctm_loss, variant("c_out_only"), "(1 − s/t)")
    rejects(checks.check_gctm_loss, variant("no_fm"), "fm term")


def test_multiple_choice_checks_accept_the_answer_and_explain_it():
    assert checks.check_gctm_u_equals_s("b")
    assert checks.check_gctm_u_equals_s(" (B) ")
    rejects(checks.check_gctm_u_equals_s, "a", "the answer is (b)")
    rejects(checks.check_gctm_u_equals_s, "e", "one letter")
    assert checks.check_gctm_weight_question("b")
    rejects(checks.check_gctm_weight_question, "c", "w → 0")
    assert checks.check_bcm_latent_question("c")
    rejects(checks.check_bcm_latent_question, "b", "exact sample")


def test_bcm_invert_check_accepts_the_package_and_names_each_mistake():
    from gctm_mini.checks import _bcm_invert_variant
    from gctm_mini.sampling import bcm_invert

    assert checks.check_bcm_invert(bcm_invert)
    for mistake, words in {
        "no_noise": ("noised",),
        "added_noise": ("(1 − t0)·x0 + t0·z",),
        "uniform_grid": ("ρ-grid",),
        "from_zero": ("start at t0",),
        "one_jump": ("k jumps",),
    }.items():
        rejects(
            checks.check_bcm_invert,
            lambda m, x, k, t0, g, mi=mistake: _bcm_invert_variant(m, x, k, t0, g, mi),
            *words,
        )

    def backwards(model, x0, k, t_start, generator):
        x = bcm_invert(model, x0, k, t_start, generator)
        return model.G(model.G(x, 1.0, 0.5), 0.5, 1.0)

    rejects(checks.check_bcm_invert, backwards, "time direction")

    def fresh_noise(model, x0, k, t_start, generator):
        return bcm_invert(model, x0, k, t_start, None)

    rejects(checks.check_bcm_invert, fresh_noise, "generator")

    def stops_early(model, x0, k, t_start, generator):
        from gctm_mini.timegrid import edm_times

        times = edm_times(k, t_start, model.sigma_max)
        times[-1] = 0.9
        return bcm_invert(model, x0, times, t_start, generator)

    rejects(checks.check_bcm_invert, stops_early, "t = 1")
