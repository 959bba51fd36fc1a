"""Every classroom check accepts the correct answer and rejects typical wrong ones with a
message that names the mistake."""

import math

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


# ---------------------------------------------------------------- notebooks 01 and 02


def fm_velocity_form(model, x0, x1, t):
    tb = t[:, None]
    xt = (1 - tb) * x0 + tb * x1
    kappa = model.coefficients(t, x0)["kappa"]
    return ((model.velocity(xt, t) - (x1 - x0)).pow(2) / kappa**2).sum(1).mean()


def test_fm_loss_check_accepts_both_forms_and_names_mistakes():
    from gctm_mini.losses import fm_loss

    assert checks.check_fm_loss(fm_loss)
    assert checks.check_fm_loss(fm_velocity_form)
    for kind, words in [
        ("time", "time direction"),
        ("sign", "sign"),
        ("plain", "κ(t)²"),
        ("coord_mean", "sum the squared error"),
        ("c_out", "not by c_out²"),
    ]:
        rejects(
            checks.check_fm_loss,
            lambda m, a, b, t, k=kind: checks._fm_variant(m, a, b, t, k),
            words,
        )
    rejects(checks.check_fm_loss, lambda *a: fm_velocity_form(*a).detach(), "gradient")
    rejects(checks.check_fm_loss, lambda *a: fm_loss(*a).reshape(1).expand(6), "one number")
    rejects(
        checks.check_fm_loss,
        lambda m, a, b, t: (m.velocity((1 - t) * a + t * b, t) - (b - a)).pow(2).sum(1).mean(),
        "broadcast",
    )


def _step(loss_fn, model, ema, opt, x0, x1, t, decay, *, zero=True, ema_first=False, w=None):
    def average():
        with torch.no_grad():
            for e, p in zip(ema.parameters(), model.parameters(), strict=True):
                e.mul_(decay if w is None else w).add_(p, alpha=1 - (decay if w is None else w))

    if ema_first:
        average()
    loss = loss_fn(model, x0, x1, t)
    if zero:
        opt.zero_grad()
    loss.backward()
    opt.step()
    if not ema_first:
        average()
    return loss.item()


def test_fm_train_step_check_accepts_the_step_and_names_mistakes():
    assert checks.check_fm_train_step(_step)
    rejects(checks.check_fm_train_step, lambda *a: _step(*a, zero=False), "zero")
    rejects(checks.check_fm_train_step, lambda *a: _step(*a, ema_first=True), "after opt.step()")
    rejects(checks.check_fm_train_step, lambda *a: _step(*a, w=0.1), "swapped")
    rejects(checks.check_fm_train_step, lambda *a: _step(*a, w=0.0), "copy")
    rejects(checks.check_fm_train_step, lambda *a: _step(*a, w=1.0), "did not move")

    def ema_trained(loss_fn, model, ema, opt, x0, x1, t, decay):
        loss = loss_fn(ema.requires_grad_(True), x0, x1, t)
        loss.backward()
        with torch.no_grad():
            for p in ema.parameters():
                p -= 0.01 * p.grad
        return loss.item()

    rejects(checks.check_fm_train_step, ema_trained, "only averaged")
    rejects(checks.check_fm_train_step, lambda *a: (_step(*a), torch.zeros(2))[1], "float")
    rejects(checks.check_fm_train_step, lambda *a: _step(*a) + 1.0, "before the step")


def test_one_euler_step_question():
    assert checks.check_one_euler_step(lambda: "c")
    assert checks.check_one_euler_step(lambda: " (C) ")
    rejects(checks.check_one_euler_step, lambda: "a", "E[X0]")
    rejects(checks.check_one_euler_step, lambda: "e", "letters")


def _sinkhorn(C, eps, n_iter, *, sign=1.0, use_eps=True, log_out=True, both=True):
    n, m = C.shape
    la = torch.full((n,), -math.log(n), dtype=C.dtype)
    lb = torch.full((m,), -math.log(m), dtype=C.dtype)
    K = -sign * C / (eps if use_eps else 1.0)
    u, v = torch.zeros(n, dtype=C.dtype), torch.zeros(m, dtype=C.dtype)
    for _ in range(n_iter):
        u = -torch.logsumexp(K + (v + lb)[None], 1)
        if both:
            v = -torch.logsumexp(K + (u + la)[:, None], 0)
    out = K + (u + la)[:, None] + (v + lb)[None]
    return out if log_out else out.exp()


def _sinkhorn_naive(C, eps, n_iter):
    n, m = C.shape
    K = torch.exp(-C / eps)
    a, b = torch.full((n,), 1 / n, dtype=C.dtype), torch.full((m,), 1 / m, dtype=C.dtype)
    u = torch.ones(n, dtype=C.dtype)
    for _ in range(n_iter):
        v = b / (K.T @ u)
        u = a / (K @ v)
    return torch.log(u[:, None] * K * v[None])


def test_sinkhorn_check_accepts_log_domain_sinkhorn_and_names_mistakes():
    from gctm_mini.couplings import sinkhorn_log

    assert checks.check_sinkhorn_log(_sinkhorn)
    assert checks.check_sinkhorn_log(
        lambda C, e, n: sinkhorn_log(C, e, max_iter=n, tol=0, log=True)
    )
    rejects(checks.check_sinkhorn_log, lambda *a: _sinkhorn(*a, log_out=False), "logarithm")
    rejects(checks.check_sinkhorn_log, lambda *a: _sinkhorn(*a).T, "rows index")
    rejects(checks.check_sinkhorn_log, lambda *a: _sinkhorn(*a, use_eps=False), "ε is missing")
    rejects(checks.check_sinkhorn_log, lambda *a: _sinkhorn(*a, sign=-1.0), "exp(−C/ε)")
    rejects(checks.check_sinkhorn_log, lambda *a: _sinkhorn(*a, both=False), "columns")
    rejects(checks.check_sinkhorn_log, _sinkhorn_naive, "logsumexp")


def test_distinct_fraction_question():
    assert checks.check_distinct_fraction(lambda: 1 - math.exp(-1))
    rejects(checks.check_distinct_fraction, lambda: math.exp(-1), "never drawn")
    rejects(checks.check_distinct_fraction, lambda: 1.0, "1 − 1/e")
    rejects(checks.check_distinct_fraction, lambda: "most", "a number")


# ------------------------------------------------------------------ notebooks 03 and 04


def _masks(rng, model, seed):
    """Both passes under one dropout seed (the package's rule)."""
    from gctm_mini import consistency

    if hasattr(rng, "dropout"):
        return rng.dropout(model, seed)
    return consistency.same_randomness(seed)


def ct(
    model,
    x0,
    x1,
    grid,
    sigma_max,
    rng,
    *,
    sg=True,
    swap=False,
    weight="sigma",
    elementwise=False,
    shared_masks=True,
    reduce="mean",
):
    """A CT loss with one knob per typical mistake (defaults: the right loss)."""
    import contextlib

    from gctm_mini.consistency import _sigma, huber_c, ict_index_probs

    n = rng.categorical(ict_index_probs(grid), x0.shape[0])
    t_hi, t_lo = grid[n + 1], grid[n]
    seed = rng.seed()
    if swap:
        t_hi, t_lo = t_lo, t_hi
    zero = torch.zeros_like(t_lo)

    def masks():
        return _masks(rng, model, seed) if shared_masks else contextlib.nullcontext()

    with masks(), torch.no_grad() if sg else contextlib.nullcontext():
        target = model._G((1 - t_lo[:, None]) * x0 + t_lo[:, None] * x1, t_lo, zero)
    with masks():
        student = model._G((1 - t_hi[:, None]) * x0 + t_hi[:, None] * x1, t_hi, zero)
    delta, c = student - target, huber_c(x0)
    if elementwise:
        d = ((delta.pow(2) + c * c).sqrt() - c).sum(1)
    else:
        d = (delta.pow(2).sum(1) + c * c).sqrt() - c
    gap = _sigma(grid[n + 1], sigma_max) - _sigma(grid[n], sigma_max)
    w = {"sigma": 1 / gap, "none": 1.0, "t": 1 / (grid[n + 1] - grid[n]), "times": gap}[weight]
    return (w * d).mean() if reduce == "mean" else (w * d).sum()


def test_ct_loss_check_accepts_the_loss_and_names_each_typical_mistake():
    from gctm_mini.consistency import ct_loss

    assert checks.check_ct_loss(lambda m, x0, x1, g, smax, rng: ct_loss(m, x0, x1, g, smax, rng))
    assert checks.check_ct_loss(ct)
    with_knob = lambda **kw: lambda *a: ct(*a, **kw)  # noqa: E731
    rejects(checks.check_ct_loss, with_knob(sg=False), "no_grad", "stop-gradient")
    rejects(checks.check_ct_loss, with_knob(swap=True), "time direction")
    rejects(checks.check_ct_loss, with_knob(elementwise=True), "element-wise")
    rejects(checks.check_ct_loss, with_knob(weight="none"), "missing weight")
    rejects(checks.check_ct_loss, with_knob(weight="t"), "gap in σ")
    rejects(checks.check_ct_loss, with_knob(weight="times"), "do not multiply")
    rejects(checks.check_ct_loss, with_knob(reduce="sum"), "mean")
    rejects(checks.check_ct_loss, with_knob(shared_masks=False), "same dropout masks")
    rejects(checks.check_ct_loss, lambda *a: ct(*a).detach(), "no gradient")
    rejects(checks.check_ct_loss, lambda *a: ct(*a).reshape(1), "one number")
    rejects(checks.check_ct_loss, lambda *a: 2 * ct(*a), "CT loss:")


def test_multiple_choice_checks_accept_the_answer_and_explain_the_others():
    assert checks.check_ct_n1_answer(lambda: "b")
    assert checks.check_ct_n1_answer(lambda: " B ")
    rejects(checks.check_ct_n1_answer, lambda: "d", "independent coupling")
    rejects(checks.check_ct_n1_answer, lambda: "e", "one letter")
    rejects(checks.check_ct_n1_answer, lambda: 2, "one letter")
    assert checks.check_ctm_u_answer(lambda: "a")
    rejects(checks.check_ctm_u_answer, lambda: "b", "bootstrapping")
    with pytest.raises(NotImplementedError):
        checks.check_ctm_u_answer(lambda: (_ for _ in ()).throw(NotImplementedError()))


def gamma(model, x, times, g, noise, *, last_noise=False, linear_s=False, no_jump_past=False):
    """γ-sampling with one knob per typical mistake (defaults: the right sampler)."""
    times = [float(t) for t in times]
    for t, tn in zip(times[:-1], times[1:], strict=True):
        sig_n = tn / (1 - tn)
        s = (1 - g**2) ** 0.5 * sig_n
        s = s / (1 + s)
        if linear_s:
            s = (1 - g**2) ** 0.5 * tn
        if no_jump_past:
            s = tn
        if tn == 0.0 and not last_noise:
            x = model.G(x, t, 0.0)
            continue
        x = model.G(x, t, s)
        x = (1 - tn) * (x / (1 - s) + g * sig_n * noise(x))
    return x


def test_gamma_sampler_check_accepts_the_sampler_and_names_each_typical_mistake():
    assert checks.check_gamma_sampler(gamma)
    rejects(checks.check_gamma_sampler, lambda *a: gamma(*a, last_noise=True), "no noise")
    rejects(checks.check_gamma_sampler, lambda *a: gamma(*a, linear_s=True), "σ(s') = s'/(1 − s')")
    rejects(checks.check_gamma_sampler, lambda *a: gamma(*a, no_jump_past=True), "jump past")

    def backwards(model, x, times, g, noise):
        return model.G(x, 0.0, 1.0)

    rejects(checks.check_gamma_sampler, backwards, "direction")

    def one_jump(model, x, times, g, noise):
        return model.G(x, 1.0, 0.0)

    rejects(checks.check_gamma_sampler, one_jump, "one jump per step")

    def no_rescale(model, x, times, g, noise):
        times = [float(t) for t in times]
        for t, tn in zip(times[:-1], times[1:], strict=True):
            sig_n = tn / (1 - tn) if tn > 0 else 0.0
            s = (1 - g**2) ** 0.5 * sig_n
            s = s / (1 + s)
            x = model.G(x, t, s)
            if tn > 0:
                x = x + g * sig_n * noise(x)
        return x

    rejects(checks.check_gamma_sampler, no_rescale, "re-noise")


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


def test_gctm_loss_check_rejects_a_loss_that_ignores_the_given_draw():
    """A loss that draws (t, s, u) itself instead of calling the given draw agrees on the plain
    draw's cases but not on the run's draw with one-jump samples (t, s) = (1, 0)."""
    from gctm_mini.checks import _gctm_variant
    from gctm_mini.timegrid import draw_tsu

    def own_draw(model, ema, x0, x1, grid, rng, lam=1.0, *, draw, solve, fm):
        pieces = {"draw": lambda g, b, r: draw_tsu(g, b, r), "solve": solve, "fm": fm}
        return _gctm_variant(model, ema, x0, x1, grid, rng, lam, pieces)

    rejects(checks.check_gctm_loss, own_draw, "one-jump samples")


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


def test_multistep_sampler_check_accepts_the_sampler_and_names_each_typical_mistake():
    def multistep(model, x1, nfe):
        x = x1
        for k in range(nfe):
            x = model.G(x, 1 - k / nfe, 1 - (k + 1) / nfe)
        return x

    assert checks.check_multistep_sampler(multistep)

    def backwards(model, x1, nfe):
        x = x1
        for k in range(nfe):
            x = model.G(x, k / nfe, (k + 1) / nfe)
        return x

    def all_to_zero(model, x1, nfe):
        x = x1
        for k in range(nfe):
            x = model.G(x, 1 - k / nfe, 0.0)
        return x

    def unchained(model, x1, nfe):
        out = x1
        for k in range(nfe):
            out = model.G(x1, 1 - k / nfe, 1 - (k + 1) / nfe)
        return out

    def one_extra(model, x1, nfe):
        return (
            multistep(model, multistep(model, x1, nfe), 1) if nfe > 1 else multistep(model, x1, 1)
        )

    def uneven(model, x1, nfe):
        times = [1 - (k / nfe) ** 2 for k in range(nfe + 1)]
        x = x1
        for k in range(nfe):
            x = model.G(x, times[k], times[k + 1])
        return x

    rejects(checks.check_multistep_sampler, backwards, "time direction")
    rejects(checks.check_multistep_sampler, all_to_zero, "s = 0")
    rejects(checks.check_multistep_sampler, unchained, "chain")
    rejects(checks.check_multistep_sampler, one_extra, "jump(s)")
    rejects(checks.check_multistep_sampler, uneven, "equal jumps")
    rejects(checks.check_multistep_sampler, lambda m, x1, nfe: x1, "you made 0")


def test_slerp_check_accepts_slerp_and_names_lerp_and_a_batch_wide_angle():
    from gctm_mini.editing import slerp

    assert checks.check_slerp(slerp)
    rejects(checks.check_slerp, lambda a, b, w: (1 - w) * a + w * b, "lerp")

    def batch_angle(a, b, w):
        om = torch.arccos((a * b).sum() / (a.norm() * b.norm()))
        return (torch.sin((1 - w) * om) * a + torch.sin(w * om) * b) / torch.sin(om)

    rejects(checks.check_slerp, batch_angle, "per sample")
    rejects(checks.check_slerp, lambda a, b, w: a, "endpoints")

    def renormalised_lerp(a, b, w):  # right endpoints and norms, wrong path
        def norm(v):
            return v.flatten(1).norm(dim=1).view(-1, *[1] * (v.dim() - 1))

        m = (1 - w) * a + w * b
        return m / norm(m) * ((1 - w) * norm(a) + w * norm(b))

    rejects(checks.check_slerp, renormalised_lerp, "differs")


def test_notebook_07_and_10_questions_accept_the_answer_and_explain_the_others():
    assert checks.check_precondition_t0_question("b")
    for wrong in "acd":
        with pytest.raises(CheckFailed, match="the answer is"):
            checks.check_precondition_t0_question(wrong)
    assert checks.check_lerp_norm_answer(1 / math.sqrt(2))
    with pytest.raises(CheckFailed, match="slerp"):
        checks.check_lerp_norm_answer(1.0)
    with pytest.raises(CheckFailed, match="quadrature"):
        checks.check_lerp_norm_answer(0.5)
    with pytest.raises(CheckFailed, match="number"):
        checks.check_lerp_norm_answer("about a half")


def _zero_shot(model, y, op, nfe, x_start, t_start, project=True, final_iters=50, renoise=None):
    """Zero-shot restoration written out here, with switches for the typical mistakes."""
    x, x0_hat = x_start, x_start
    for i in range(nfe):
        t, tn = t_start * (1 - i / nfe), t_start * (1 - (i + 1) / nfe)
        x0_hat = model.G(x, t, 0.0)
        if i == nfe - 1:
            break
        eps_hat = (x - (1 - t) * x0_hat) / t if renoise is None else renoise
        x = (1 - tn) * (op.project(x0_hat, y) if project else x0_hat) + tn * eps_hat
    return op.project(x0_hat, y, iters=final_iters) if final_iters else x0_hat


def test_zero_shot_check_accepts_the_restoration_and_names_each_typical_mistake():
    assert checks.check_zero_shot_restore(_zero_shot)
    rejects(
        checks.check_zero_shot_restore,
        lambda m, y, op, k, xs, t0: _zero_shot(m, y, op, k, xs, t0, project=False),
        "data-consistency step is missing",
    )
    rejects(
        checks.check_zero_shot_restore,
        lambda m, y, op, k, xs, t0: _zero_shot(m, y, op, k, xs, t0, renoise=xs),
        "re-noise with the source the jump implies",
    )
    rejects(
        checks.check_zero_shot_restore,
        lambda m, y, op, k, xs, t0: _zero_shot(m, y, op, k, xs, t0, final_iters=0),
        "after the last jump",
    )
    rejects(
        checks.check_zero_shot_restore,
        lambda m, y, op, k, xs, t0: _zero_shot(m, y, op, k, xs, t0, final_iters=1),
        "iters=50",
    )

    def from_one(m, y, op, k, xs, t0):  # ignores t_start: jumps from t = 1
        return _zero_shot(m, y, op, k, xs, 1.0)

    rejects(checks.check_zero_shot_restore, from_one, "t_i = t_0")

    def to_next(m, y, op, k, xs, t0):  # jumps to the next time instead of to the data
        m.G(xs, t0, t0 * (1 - 1 / k))
        return _zero_shot(m, y, op, k, xs, t0)

    rejects(checks.check_zero_shot_restore, to_next, "calls of model.G")


def test_paired_source_check_accepts_the_source_and_names_each_typical_mistake():
    def source(x0, m, hole, z, eps):
        return m * x0 + (1 - m) * hole + eps * z

    assert checks.check_paired_source(source)
    rejects(
        checks.check_paired_source, lambda x0, m, h, z, e: (1 - m) * x0 + m * h + e * z, "inverted"
    )
    rejects(checks.check_paired_source, lambda x0, m, h, z, e: m * x0 + (1 - m) * h, "missing")
    rejects(
        checks.check_paired_source,
        lambda x0, m, h, z, e: m * x0 + (1 - m) * (h + e * z),
        "not only in the hole",
    )
    rejects(checks.check_paired_source, lambda x0, m, h, z, e: m * x0 + e * z, "not with zeros")
    rejects(
        checks.check_paired_source, lambda x0, m, h, z, e: x0 + (1 - m) * h + e * z, "never see"
    )
    rejects(checks.check_paired_source, lambda x0, m, h, z, e: source(x0, m, h, z, 0.05), "compare")
    rejects(checks.check_paired_source, lambda x0, m, h, z, e: x0[:1], "shaped like")


def test_notebook_08_and_09_questions_accept_the_answer_and_explain_the_others():
    assert checks.check_euler_regression_question("c")
    for wrong in "abd":
        with pytest.raises(CheckFailed, match="the answer is"):
            checks.check_euler_regression_question(wrong)
    assert checks.check_sample_vs_mean_answer(10 * math.log10(2))
    with pytest.raises(CheckFailed, match="sign"):
        checks.check_sample_vs_mean_answer(-3.0)
    with pytest.raises(CheckFailed, match="twice"):
        checks.check_sample_vs_mean_answer(0.0)
    with pytest.raises(CheckFailed, match="four times"):
        checks.check_sample_vs_mean_answer(6.0)
    with pytest.raises(CheckFailed, match="number"):
        checks.check_sample_vs_mean_answer("a lot")
