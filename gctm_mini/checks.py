"""Automatic checks for the classroom exercises: each one runs a student's function on cases
with known answers and, when it is wrong, says *what* is wrong (time direction, shapes,
stop-gradient, boundary condition, …) instead of printing a bare assertion.

Every check returns ``True`` and prints a one-line success message, or raises
:class:`CheckFailed` with the diagnosis. Notebooks call them right after an exercise cell.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
from collections.abc import Callable

import torch
from torch import Tensor


class CheckFailed(AssertionError):  # noqa: N818 - reads as a verdict in notebooks
    """The student's function is wrong; the message says how."""


def _ok(name: str) -> bool:
    print(f"✓ {name}: correct")
    return True


def _close(a, b, tol=1e-5) -> bool:
    return (
        torch.is_tensor(a)
        and a.shape == b.shape
        and bool(torch.allclose(a.double(), b.double(), atol=tol, rtol=tol))
    )


def _call(fn: Callable, *args, what: str):
    try:
        return fn(*args)
    except NotImplementedError:
        raise
    except Exception as err:  # noqa: BLE001 - turn any crash into a diagnosis
        hint = ""
        if "must match the size" in str(err):
            hint = (
                " — per-sample times of shape (B,) must be reshaped to (B, 1, …) to "
                "broadcast over the data"
            )
        raise CheckFailed(f"{what} raised {type(err).__name__}: {err}{hint}") from err


def check_interpolant(fn: Callable[[Tensor, Tensor, Tensor | float], Tensor]) -> bool:
    """``fn(x0, x1, t)`` must return :math:`x_t = (1 - t)X_0 + tX_1` for float or ``(B,)`` t."""
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    at0 = _call(fn, x0, x1, 0.0, what="interpolate(x0, x1, 0.0)")
    if _close(at0, x1):
        raise CheckFailed(
            "time direction swapped: at t = 0 you returned X1 (the source); "
            "the data X0 lives at t = 0 and the source X1 at t = 1"
        )
    if not _close(at0, x0):
        raise CheckFailed("at t = 0 the interpolant must equal X0 (the data)")
    if not _close(_call(fn, x0, x1, 1.0, what="interpolate(x0, x1, 1.0)"), x1):
        raise CheckFailed("at t = 1 the interpolant must equal X1 (the source)")
    mid = _call(fn, x0, x1, 0.25, what="interpolate(x0, x1, 0.25)")
    if not _close(mid, 0.75 * x0 + 0.25 * x1):
        raise CheckFailed(
            "x_t must be linear in t: (1 − t)·X0 + t·X1 (check the weights at t = 0.25)"
        )
    t = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    try:
        per = fn(x0, x1, t)
    except RuntimeError as err:
        raise CheckFailed(
            f"per-sample times of shape (B,) must broadcast over the data: reshape "
            f"t to (B, 1, …) before multiplying ({err})"
        ) from err
    if not _close(per, (1 - t[:, None]) * x0 + t[:, None] * x1):
        raise CheckFailed(
            "with per-sample t of shape (B,), sample i must use t[i]; reshape t to (B, 1)"
        )
    return _ok("interpolant")


def check_fm_target(fn: Callable[[Tensor, Tensor], Tensor]) -> bool:
    """``fn(x0, x1)`` must return the conditional velocity :math:`dx_t/dt = X_1 - X_0`."""
    g = torch.Generator().manual_seed(1)
    x0, x1 = torch.randn(4, 2, generator=g), torch.randn(4, 2, generator=g)
    out = _call(fn, x0, x1, what="fm_target(x0, x1)")
    if _close(out, x0 - x1):
        raise CheckFailed(
            "sign flipped: x_t moves from X0 (t = 0) to X1 (t = 1), so dx_t/dt = X1 − X0"
        )
    if not _close(out, x1 - x0):
        raise CheckFailed("the FM regression target is the time derivative of (1 − t)X0 + tX1")
    return _ok("flow-matching target")


def check_ot_pairing(fn: Callable[[Tensor, Tensor], Tensor]) -> bool:
    """``fn(x0, x1)`` must return ``perm`` with ``x1[perm[i]]`` paired to ``x0[i]``, minimizing
    the total squared Euclidean distance."""
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        x0, x1 = torch.randn(6, 2, generator=g), torch.randn(6, 2, generator=g) + 0.5
        perm = torch.as_tensor(_call(fn, x0, x1, what="ot_pairing(x0, x1)")).long()
        if perm.shape != (6,) or sorted(perm.tolist()) != list(range(6)):
            raise CheckFailed(
                "return a permutation of 0…B−1: every source sample used exactly once "
                "(no repeats, none dropped)"
            )
        C = torch.cdist(x0.double(), x1.double()) ** 2
        cost = float(C[torch.arange(6), perm].sum())
        best = min(
            sum(float(C[i, p[i]]) for i in range(6)) for p in itertools.permutations(range(6))
        )
        if cost > best + 1e-9:
            E = C.sqrt()
            be = min(
                sum(float(E[i, p[i]]) for i in range(6)) for p in itertools.permutations(range(6))
            )
            if abs(float(E[torch.arange(6), perm].sum()) - be) < 1e-9:
                raise CheckFailed(
                    "your pairing is optimal for the Euclidean distance; the OT "
                    "coupling here uses the *squared* Euclidean cost"
                )
            inv = torch.argsort(perm)
            if abs(float(C[torch.arange(6), inv].sum()) - best) < 1e-9:
                raise CheckFailed("the permutation is inverted: perm[i] must index x1 for x0[i]")
            raise CheckFailed(f"total squared distance {cost:.4f} is above the optimum {best:.4f}")
    return _ok("minibatch OT pairing")


def check_flow_map(fn: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]) -> bool:
    """``fn(x, t, s, g)`` must return :math:`G = \\tfrac st x + (1 - \\tfrac st) g` with
    :math:`G(x, t, t) = x` exactly, also at t = s = 0."""
    g0 = torch.Generator().manual_seed(2)
    x, g = torch.randn(6, 2, generator=g0), torch.randn(6, 2, generator=g0)
    t = torch.tensor([0.9, 0.5, 0.3, 0.0, 1.0, 0.7])
    s = torch.tensor([0.9, 0.5, 0.3, 0.0, 0.0, 0.2])
    out = _call(fn, x, t, s, g, what="flow_map(x, t, s, g)")
    if not torch.is_tensor(out) or out.shape != x.shape:
        raise CheckFailed(f"return a tensor shaped like x {tuple(x.shape)}")
    if not bool(torch.isfinite(out).all()):
        raise CheckFailed(
            "NaN/inf: at t = s = 0, s/t is 0/0 — define the ratio as 1 when t = 0 "
            "so that G(x, 0, 0) = x"
        )
    if not torch.equal(out[:4], x[:4]):
        raise CheckFailed("boundary condition broken: G(x, t, t) must return x exactly (s/t = 1)")
    ref = (s / t.clamp_min(1e-12))[4:, None] * x[4:] + (1 - s[4:, None] / t[4:, None]) * g[4:]
    if _close(
        out[4:], (1 - s[4:, None] / t[4:, None]) * x[4:] + (s[4:, None] / t[4:, None]) * g[4:]
    ):
        raise CheckFailed(
            "x and g are swapped: the skip weight on x is s/t (G → x as s → t) and G(x, t, 0) = g"
        )
    if not _close(out[4:], ref):
        raise CheckFailed("G(x, t, s) = (s/t)·x + (1 − s/t)·g; G(x, t, 0) must equal g")
    return _ok("flow-map parameterization")


def check_pseudo_huber(fn: Callable[[Tensor, float], Tensor]) -> bool:
    """``fn(delta, c)`` must return the per-sample ``sqrt(‖Δ‖² + c²) − c``, shape ``(B,)``."""
    d = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]])
    out = _call(fn, d, 0.1, what="pseudo_huber(delta, c)")
    ref = (d.pow(2).sum(1) + 0.01).sqrt() - 0.1
    if torch.is_tensor(out) and out.shape == d.shape:
        raise CheckFailed(
            "element-wise: the distance takes the norm over the whole sample and "
            "returns one number per sample, shape (B,)"
        )
    if torch.is_tensor(out) and out.dim() == 0:
        raise CheckFailed("return one value per sample (shape (B,)), not the batch mean")
    if _close(out, d.pow(2).sum(1)):
        raise CheckFailed("that is the squared norm; pseudo-Huber is sqrt(‖Δ‖² + c²) − c")
    if not _close(out, ref):
        raise CheckFailed("pseudo-Huber: sqrt(‖Δ‖² + c²) − c per sample (it is 0 at Δ = 0)")
    return _ok("pseudo-Huber distance")


def check_gctm_target(fn: Callable) -> bool:
    """``fn(model, ema, x_t, t_idx, u_idx, s, grid)`` must return the GCTM target
    :math:`\\mathrm{sg}\\,G_\\theta(\\mathrm{Heun}_{v_{ema}}(x_t, t \\to u), u, s)`: the ODE with the
    **EMA** velocity, the jump with the **current** weights, no gradient."""
    from .models import build_model, mlp_spec
    from .parameterization import CouplingMoments
    from .solvers import integrate_per_sample
    from .timegrid import fine_grid

    torch.manual_seed(0)
    model = build_model(mlp_spec(2, 16, 2), CouplingMoments())
    ema = build_model(mlp_spec(2, 16, 2), CouplingMoments())
    for p, q in zip(model.parameters(), ema.parameters(), strict=True):
        torch.nn.init.normal_(p, std=0.3)
        torch.nn.init.normal_(q, std=0.3)
    grid = fine_grid(4, dtype=torch.float32)
    x = torch.randn(8, 2)
    t_idx = torch.tensor([4, 4, 3, 3, 2, 4, 3, 2])
    u_idx = torch.tensor([2, 3, 1, 2, 1, 0, 0, 1])
    s = grid[torch.tensor([1, 0, 0, 1, 0, 0, 0, 1])]

    def reference(ode_net, jump_net):
        with torch.no_grad():
            xu = integrate_per_sample(ode_net._velocity, x, grid, t_idx, u_idx, "heun")
            return jump_net._G(xu, grid[u_idx], s)

    out = _call(fn, model, ema, x, t_idx, u_idx, s, grid, what="gctm_target(...)")
    if torch.is_tensor(out) and out.requires_grad:
        raise CheckFailed(
            "the target carries gradients: compute it under torch.no_grad() "
            "(stop-gradient) so only the student is trained"
        )
    if _close(out, reference(ema, model), 1e-4):
        return _ok("GCTM target")
    if _close(out, reference(model, model), 1e-4):
        raise CheckFailed("the ODE from t to u must use the EMA model's velocity (the teacher)")
    if _close(out, reference(ema, ema), 1e-4) or _close(out, reference(model, ema), 1e-4):
        raise CheckFailed(
            "the jump u → s must use the current weights (stop-gradient), not the "
            "EMA: in GCTM the EMA is the ODE teacher, not the target network"
        )
    raise CheckFailed("target = G_current(Heun_EMA(x_t, t → u), u, s); check the times you pass")


def check_gamma_renoise(fn: Callable) -> bool:
    """``fn(x_s, s_prime, t_next, gamma, z)`` must return
    :math:`(1 - t_{n})\\,(x_{s'}/(1 - s') + \\gamma\\,\\sigma(t_{n})\\,z)` with σ(t) = t/(1 − t)."""
    g = torch.Generator().manual_seed(3)
    x, z = torch.randn(5, 2, generator=g), torch.randn(5, 2, generator=g)
    tn, gamma = 0.6, 0.5
    sig_n = tn / (1 - tn)
    sig_s = math.sqrt(1 - gamma**2) * sig_n
    sp = sig_s / (1 + sig_s)
    out = _call(fn, x, sp, tn, gamma, z, what="renoise(...)")
    ref = (1 - tn) * (x / (1 - sp) + gamma * sig_n * z)
    if _close(out, x / (1 - sp) + gamma * sig_n * z):
        raise CheckFailed("missing the (1 − t_next) factor: x_t = (1 − t)(X0 + σ(t) X1)")
    if _close(out, (1 - tn) * (x / (1 - sp) + gamma * tn * z)):
        raise CheckFailed("the noise scale is σ(t_next) = t_next / (1 − t_next), not t_next")
    if _close(out, (1 - tn) * (x / (1 - sp) + gamma * z)):
        raise CheckFailed("scale the fresh noise by γ·σ(t_next)")
    if not _close(out, ref):
        raise CheckFailed("re-noise: (1 − t_next)·(x / (1 − s') + γ·σ(t_next)·z)")
    return _ok("γ-sampling re-noising")


def check_degradation(fn: Callable[[Tensor], Tensor], task: str = "inpaint") -> bool:
    """``fn(x)`` must match :class:`gctm_mini.degradations.Degradation` (deterministic part)."""
    from .degradations import Degradation

    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(4)) * 2 - 1
    out = _call(fn, x, what=f"{task} operator")
    ref = Degradation(task).clean(x)
    if not torch.is_tensor(out) or out.shape != x.shape:
        raise CheckFailed(f"return a batch shaped like the input {tuple(x.shape)} (B, C, H, W)")
    if task == "inpaint":
        m = Degradation(task).mask(x)
        if _close(out, x * (1 - m)):
            raise CheckFailed("the mask is inverted: keep the border, remove the centre box")
        if not _close(out, ref):
            raise CheckFailed(
                "zero the centre box (rows and columns H/4 … H − H/4) and keep the rest"
            )
    elif not _close(out, ref, 1e-4):
        if out.shape == x.shape and _close(out[:1], ref[:1], 1e-4):
            raise CheckFailed(
                "the first image is right but not the others: do not loop over a "
                "fixed index — operate on the whole batch"
            )
        raise CheckFailed(f"{task}: compare your output with Degradation('{task}').clean(x)")
    if not _close(_call(fn, x[1:2], what="operator on one image"), ref[1:2], 1e-4):
        raise CheckFailed("the result for one image must not depend on the rest of the batch")
    return _ok(f"{task} operator")


def check_one_jump_sampler(fn: Callable) -> bool:
    """``fn(model, x1)`` must return the one-jump sample :math:`G_\\theta(X_1, 1, 0)` (NFE = 1)."""
    from .models import build_model, mlp_spec
    from .parameterization import CouplingMoments

    torch.manual_seed(0)
    model = build_model(mlp_spec(2, 16, 2), CouplingMoments()).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.3)
    calls = []
    orig = model._G

    def counting(x, t, s):
        calls.append((float(t.flatten()[0]), float(s.flatten()[0])))
        return orig(x, t, s)

    model._G = counting
    x1 = torch.randn(8, 2)
    out = _call(fn, model, x1, what="one_jump(model, x1)")
    model._G = orig
    with torch.no_grad():
        ref = model.G(x1, 1.0, 0.0)
    if calls and calls[0] == (0.0, 1.0):
        raise CheckFailed(
            "time direction: generation jumps from t = 1 (source) to s = 0 (data), "
            "i.e. G(x1, 1, 0), not G(x1, 0, 1)"
        )
    if len(calls) > 1:
        raise CheckFailed(f"one jump means one network evaluation (NFE = 1); you made {len(calls)}")
    if not _close(out, ref, 1e-5):
        raise CheckFailed("one jump: return model.G(x1, 1.0, 0.0)")
    return _ok("one-jump sampler")


def check_bidirectional_map(fn: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]) -> bool:
    """``fn(x, t, s, u_bar)`` must return :math:`x + (s - t)\\,\\bar u` for any s, t in [0, 1]
    (both directions; G(x, t, t) = x exactly)."""
    g = torch.Generator().manual_seed(5)
    x, u = torch.randn(5, 2, generator=g), torch.randn(5, 2, generator=g)
    t = torch.tensor([0.0, 0.3, 0.8, 0.5, 1.0])
    s = torch.tensor([1.0, 0.3, 0.1, 0.5, 0.0])
    out = _call(fn, x, t, s, u, what="bidirectional_map(x, t, s, u_bar)")
    ref = x + (s - t)[:, None] * u
    if not torch.is_tensor(out) or out.shape != x.shape:
        raise CheckFailed(
            f"return a tensor shaped like x {tuple(x.shape)}; reshape (B,) times to (B, 1)"
        )
    if not bool(torch.isfinite(out).all()):
        raise CheckFailed(
            "NaN/inf: the average-velocity form has no division by t — it must work at t = 0"
        )
    if not (torch.equal(out[1], x[1]) and torch.equal(out[3], x[3])):
        raise CheckFailed("boundary condition broken: G(x, t, t) must return x exactly")
    if _close(out, x + (t - s)[:, None] * u):
        raise CheckFailed(
            "time direction: moving from t to s adds (s − t)·ū, so inversion (s > t) "
            "moves along +ū and generation (s < t) along −ū"
        )
    if not _close(out, ref):
        raise CheckFailed("G(x, t, s) = x + (s − t)·ū")
    return _ok("bidirectional flow map")


# ---------------------------------------------------------------- notebooks 01 and 02


def _small_flow_model(seed: int = 0, moments=None):
    """A small forward flow-map model with visibly non-zero output (for the checks)."""
    from .models import build_model, mlp_spec
    from .parameterization import CouplingMoments

    torch.manual_seed(seed)
    model = build_model(mlp_spec(2, 16, 2), moments or CouplingMoments(0.5, 1.0, 0.0))
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return model


def _fm_variant(model, x0: Tensor, x1: Tensor, t: Tensor, kind: str) -> Tensor:
    """The FM loss and typical wrong versions of it, in the velocity form."""
    tb = t[:, None]
    xt = tb * x0 + (1 - tb) * x1 if kind == "time" else (1 - tb) * x0 + tb * x1
    u = x0 - x1 if kind == "sign" else x1 - x0
    v = model.velocity(xt, t)
    c = model.coefficients(t, x0)
    w = {"plain": 1.0, "c_out": c["c_out"] ** 2}.get(kind, c["kappa"] ** 2)
    per = (v - u).pow(2) / w
    return per.mean(1).mean() if kind == "coord_mean" else per.sum(1).mean()


def check_fm_loss(fn: Callable) -> bool:
    r"""``fn(model, x0, x1, t)`` must return the FM loss of :func:`gctm_mini.losses.fm_loss`:
    the batch mean of :math:`\|v_\theta(x_t, t) - (X_1 - X_0)\|^2 / \kappa(t)^2` (summed over
    coordinates), :math:`x_t = (1 - t)X_0 + tX_1`, a scalar that carries gradients."""
    from .losses import fm_loss

    model = _small_flow_model()
    g = torch.Generator().manual_seed(11)
    x0 = torch.randn(6, 2, generator=g) * 0.7 + 0.3
    x1 = torch.randn(6, 2, generator=g)
    t = torch.tensor([0.05, 0.3, 0.5, 0.7, 0.95, 1.0])
    out = _call(fn, model, x0, x1, t, what="fm_loss(model, x0, x1, t)")
    if not torch.is_tensor(out):
        raise CheckFailed(f"return the loss as a tensor (a scalar); got {type(out).__name__}")
    if out.dim() != 0:
        raise CheckFailed(
            f"return one number, the mean over the batch; got shape {tuple(out.shape)} "
            "(sum over coordinates, then average over samples)"
        )
    if not out.requires_grad:
        raise CheckFailed(
            "the loss carries no gradient: do not compute it under torch.no_grad() or "
            "detach it — the training step differentiates it"
        )
    ref = fm_loss(model, x0, x1, t)
    if _close(out, ref, 1e-4):
        out.backward()
        grads = [p.grad for p in model.parameters()]
        if any(gr is None for gr in grads) or not any(bool(gr.abs().sum() > 0) for gr in grads):
            raise CheckFailed("the loss does not depend on the network's weights")
        return _ok("flow-matching loss")
    with torch.no_grad():
        wrong = {
            k: _fm_variant(model, x0, x1, t, k)
            for k in ("time", "sign", "plain", "coord_mean", "c_out")
        }
    if _close(out, wrong["time"], 1e-4):
        raise CheckFailed(
            "time direction swapped: x_t = (1 − t)·X0 + t·X1 puts the data X0 at t = 0 and "
            "the source X1 at t = 1"
        )
    if _close(out, wrong["sign"], 1e-4):
        raise CheckFailed("sign flipped: x_t moves from X0 to X1, so the target is X1 − X0")
    if _close(out, wrong["plain"], 1e-4):
        raise CheckFailed(
            "that is the plain velocity regression; the package's loss divides each sample's "
            "squared error by κ(t)² (c_out = t·κ), which is what ‖g − X0‖²/c_out² becomes"
        )
    if _close(out, wrong["coord_mean"], 1e-4):
        raise CheckFailed(
            "sum the squared error over the coordinates of a sample (a squared norm), then "
            "average over the batch; you averaged over coordinates"
        )
    if _close(out, wrong["c_out"], 1e-4):
        raise CheckFailed(
            "divide by κ(t)² = (c_out/t)², not by c_out²: in the velocity form the t² of "
            "g − X0 = −t·(v − (X1 − X0)) cancels"
        )
    raise CheckFailed(
        f"your loss is {float(out):.5f}, the FM loss is {float(ref):.5f}: check x_t, the "
        "target X1 − X0 and the weight 1/κ(t)²"
    )


def check_fm_train_step(fn: Callable) -> bool:
    r"""``fn(loss_fn, model, ema_model, opt, x0, x1, t, decay)`` must take one optimizer step on
    ``loss_fn(model, x0, x1, t)`` and then move every EMA parameter towards the new weights,
    :math:`\bar\theta \leftarrow \mu\bar\theta + (1 - \mu)\theta`, returning the loss of the
    batch (a float, computed before the step)."""
    import copy

    from .losses import fm_loss

    def setup():
        model = _small_flow_model(1)
        ema = copy.deepcopy(model).requires_grad_(False)
        with torch.no_grad():  # an EMA that differs from the weights shows how it is updated
            for p in ema.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(3)))
        return model, ema, torch.optim.Adam(model.parameters(), lr=1e-2)

    g = torch.Generator().manual_seed(12)
    batches = [
        (torch.randn(8, 2, generator=g), torch.randn(8, 2, generator=g), torch.rand(8, generator=g))
        for _ in range(2)
    ]
    mu = 0.9

    def params(m):
        return [p.detach().clone() for p in m.parameters()]

    def same(a, b):
        return all(_close(x, y, 1e-5) for x, y in zip(a, b, strict=True))

    # the reference: two steps, and the states that typical mistakes lead to
    model, ema, opt = setup()
    ema0, theta0 = params(ema), params(model)
    ref_losses, after_one = [], None
    for k, (x0, x1, t) in enumerate(batches):
        loss = fm_loss(model, x0, x1, t)
        ref_losses.append(loss.item())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if k == 0:
            theta1, ema_old_weights = (
                params(model),
                [mu * e + (1 - mu) * p for e, p in zip(ema0, theta0, strict=True)],
            )
            ema_swapped = [(1 - mu) * e + mu * p for e, p in zip(ema0, theta1, strict=True)]
        with torch.no_grad():
            for e, p in zip(ema.parameters(), model.parameters(), strict=True):
                e.lerp_(p, 1 - mu)
        if k == 0:
            after_one = params(ema)
    theta2, ema2 = params(model), params(ema)

    model, ema, opt = setup()
    outs = []
    for k, (x0, x1, t) in enumerate(batches):
        out = _call(
            fn, fm_loss, model, ema, opt, x0, x1, t, mu, what="train_step(loss_fn, model, ...)"
        )
        outs.append(out)
        if k == 0:
            got_theta, got_ema = params(model), params(ema)
            if same(got_theta, theta0):
                if not same(got_ema, ema0):
                    raise CheckFailed(
                        "the online model did not move but the EMA did: the loss, backward() "
                        "and opt.step() act on `model`; the EMA copy is only averaged"
                    )
                raise CheckFailed(
                    "the weights did not change: compute the loss, call backward() and opt.step()"
                )
            if not same(got_theta, theta1):
                raise CheckFailed(
                    "after one step the weights differ from one Adam step on loss_fn(model, "
                    "x0, x1, t): use the batch and the loss function you are given"
                )
            if same(got_ema, ema0):
                raise CheckFailed("the EMA parameters did not move: update them after the step")
            if same(got_ema, theta1):
                raise CheckFailed(
                    "the EMA became a copy of the weights; it must move only a fraction "
                    "1 − decay towards them: θ̄ ← decay·θ̄ + (1 − decay)·θ"
                )
            if same(got_ema, ema_swapped):
                raise CheckFailed(
                    "EMA weights swapped: keep `decay` of the old average and add (1 − decay) "
                    "of the new weights"
                )
            if same(got_ema, ema_old_weights):
                raise CheckFailed(
                    "the EMA was updated from the weights before the optimizer step; "
                    "update it after opt.step(), from the new weights"
                )
            if not same(got_ema, after_one):
                raise CheckFailed("EMA update: θ̄ ← decay·θ̄ + (1 − decay)·θ for every parameter")
    if not same(params(model), theta2):
        raise CheckFailed(
            "the first step is right but the second is not: gradients accumulate across "
            "steps unless you zero them (opt.zero_grad()) before backward()"
        )
    if not same(params(ema), ema2):
        raise CheckFailed("EMA update: θ̄ ← decay·θ̄ + (1 − decay)·θ for every parameter")
    for out, ref in zip(outs, ref_losses, strict=True):
        if torch.is_tensor(out) and out.numel() == 1:
            out = float(out)
        if not isinstance(out, float):
            raise CheckFailed(
                f"return the batch's loss as a Python float (loss.item()); got {type(out).__name__}"
            )
        if not math.isclose(out, ref, rel_tol=1e-5, abs_tol=1e-7):
            raise CheckFailed(
                f"returned loss {out:.5f}, but the batch's loss before the step is {ref:.5f}"
            )
    return _ok("training step (Adam + EMA)")


def _multiple_choice(fn: Callable[[], str], name: str, options: dict, correct: str, why: str):
    """Check a multiple-choice answer ``fn() -> letter``; explain the right one when wrong."""
    got = _call(fn, what=f"{name}()")
    letter = str(got).strip().lower().strip("()") if got is not None else ""
    if letter not in options:
        raise CheckFailed(f"answer with one of the letters {', '.join(options)}; got {got!r}")
    if letter != correct:
        raise CheckFailed(f"not ({letter}) {options[letter]}. {why}")
    print(f"✓ {name}: ({correct}) {options[correct]} — {why}")
    return True


def check_one_euler_step(fn: Callable[[], str]) -> bool:
    """``fn()`` returns the letter of what one Euler step of the exact FM velocity from t = 1
    to t = 0 makes of the source cloud."""
    options = {
        "a": "a blurred copy of the data distribution",
        "b": "the source cloud, unchanged",
        "c": "one single point, the data mean E[X0]",
        "d": "exact samples of the data",
    }
    why = (
        "At t = 1, x_t = X1 says nothing about X0, so v(x, 1) = E[X1 − X0 | X1 = x] = "
        "x − E[X0], and the Euler step x − 1·v(x, 1) = E[X0] is the same for every x."
    )
    return _multiple_choice(fn, "one Euler step from t = 1", options, "c", why)


def check_sinkhorn_log(fn: Callable) -> bool:
    r"""``fn(C, eps, n_iter)`` must return :math:`\log P` of the entropic OT plan between
    uniform marginals (rows 1/n, columns 1/m) after ``n_iter`` log-domain Sinkhorn
    iterations, ``(n, m)``, finite also for small ε (compared after convergence)."""
    from .couplings import sinkhorn_log

    g = torch.Generator().manual_seed(13)
    a, b = (
        torch.randn(5, 2, generator=g, dtype=torch.float64),
        torch.randn(7, 2, generator=g, dtype=torch.float64),
    )
    C = torch.cdist(a, b) ** 2
    eps = 0.3
    ref = sinkhorn_log(C, eps, max_iter=2000, tol=0.0, log=True)
    out = _call(fn, C, eps, 500, what="sinkhorn_log(C, eps, n_iter)")
    if not torch.is_tensor(out) or out.shape != C.shape:
        shape = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
        if torch.is_tensor(out) and out.shape == C.T.shape:
            raise CheckFailed(
                f"shape {shape}: rows index the n data points, columns the m source points; "
                f"return ({C.shape[0]}, {C.shape[1]})"
            )
        raise CheckFailed(f"return log P shaped like C {tuple(C.shape)}; got {shape}")
    out = out.double()
    if not bool(torch.isfinite(out).all()):
        raise CheckFailed("log P must be finite (a plan's entries are positive)")
    if bool((out >= 0).all()) and abs(float(out.sum()) - 1) < 1e-3:
        raise CheckFailed("you returned the plan P; return its logarithm log P")
    if _close(out, sinkhorn_log(C, 1.0, max_iter=2000, tol=0.0, log=True), 1e-5):
        raise CheckFailed("ε is missing: the kernel is exp(−C/ε), so divide the cost by ε")
    P = out.exp()
    rows, cols = P.sum(1), P.sum(0)
    if not _close(cols, torch.full_like(cols, 1 / 7), 1e-6):
        raise CheckFailed(
            f"the columns of P must sum to 1/m = {1 / 7:.4f} (the source marginal); they sum "
            f"to {cols.min():.4f} … {cols.max():.4f}: alternate both updates, f then g"
        )
    if not _close(rows, torch.full_like(rows, 1 / 5), 1e-6):
        raise CheckFailed(
            f"the rows of P must sum to 1/n = {1 / 5:.4f} (the data marginal); they sum to "
            f"{rows.min():.4f} … {rows.max():.4f}: alternate both updates"
        )
    if float((P * C).sum()) > float(C.mean()):
        raise CheckFailed(
            "the plan favours expensive pairs: the Gibbs kernel is exp(−C/ε), not exp(+C/ε)"
        )
    if not _close(out, ref, 1e-6):
        raise CheckFailed(
            "the marginals are right but the plan is not the entropic OT plan of C at this ε: "
            "log P_ij = f_i + g_j − C_ij/ε + log a_i + log b_j"
        )
    C32 = (torch.rand(6, 6, generator=g) * 2).float()
    small = _call(fn, C32, 1e-3, 300, what="sinkhorn_log(C, 1e-3, 300)")
    if not (torch.is_tensor(small) and bool(torch.isfinite(small).all())):
        raise CheckFailed(
            "NaN/inf at ε = 1e-3: exp(−C/ε) underflows to 0 in float32 — work with the log "
            "potentials and torch.logsumexp, never with exp(−C/ε) itself"
        )
    Ps = small.double().exp()
    if not _close(Ps.sum(0), torch.full((6,), 1 / 6, dtype=torch.float64), 1e-4):
        raise CheckFailed(
            "at ε = 1e-3 the column sums are not 1/m: keep everything in the log domain"
        )
    return _ok("log-domain Sinkhorn")


def check_distinct_fraction(fn: Callable[[], float]) -> bool:
    """``fn()`` returns the expected fraction of a large batch that is drawn at least once
    when each of n source points draws its data partner uniformly *with replacement*."""
    got = _call(fn, what="distinct_fraction()")
    try:
        x = float(got)
    except (TypeError, ValueError) as err:
        raise CheckFailed(f"return a number between 0 and 1; got {got!r}") from err
    right = 1 - math.exp(-1)
    why = (
        "each data point is missed by all n draws with probability (1 − 1/n)^n → 1/e, so a "
        f"fraction 1 − 1/e ≈ {right:.3f} is used at least once"
    )
    if abs(x - right) < 0.01:
        print(f"✓ distinct fraction: {x:.3f} — {why}")
        return True
    if abs(x - math.exp(-1)) < 0.01:
        raise CheckFailed(f"{x:.3f} is the fraction never drawn; {why}")
    raise CheckFailed(f"{x:.3f} is not it: {why}")


# ------------------------------------------------------------------ notebooks 03 and 04


def _first_tensor(out):
    return out[0] if isinstance(out, tuple) else out


def check_ct_loss(fn: Callable) -> bool:
    """``fn(model, x0, x1, grid, sigma_max, rng)`` must return the consistency-training loss of
    :func:`gctm_mini.consistency.ct_loss` (the scalar, or ``(loss, logs)``): for the same draws
    the same value and the same gradient, also with dropout in the network.

    The loss: interval n drawn from iCT's distribution and a dropout seed (the function's first
    lines), both points :math:`x_{t_{n+1}}, x_{t_n}` from the same pair (X0, X1), student
    :math:`G_\\theta(x_{t_{n+1}}, t_{n+1}, 0)`, target :math:`\\mathrm{sg}\\,G_\\theta(x_{t_n}, t_n, 0)`
    with the current weights and the student's dropout masks, weight
    :math:`1/(\\sigma(t_{n+1}) - \\sigma(t_n))`, per-sample pseudo-Huber, batch mean.
    """
    from .consistency import _sigma, ct_loss, huber_c, ict_index_probs
    from .models import build_model, mlp_spec
    from .parameterization import CouplingMoments
    from .randomness import Draws
    from .timegrid import fine_grid

    torch.manual_seed(0)
    model = build_model(mlp_spec(2, 32, 2, dropout=0.3), CouplingMoments(v0=0.5))
    g = torch.Generator().manual_seed(6)
    x0, x1 = torch.randn(64, 2, generator=g), torch.randn(64, 2, generator=g)
    grid = fine_grid(8, dtype=torch.float32)
    params = list(model.parameters())

    def run(f):
        model.zero_grad(set_to_none=True)
        loss = _first_tensor(f(model, x0, x1, grid, 80.0, Draws(torch.Generator().manual_seed(7))))
        grads = None
        if torch.is_tensor(loss) and loss.dim() == 0 and loss.requires_grad:
            grads = torch.autograd.grad(loss, params, allow_unused=True)
        return loss, grads

    def same(a, b) -> bool:
        (la, ga), (lb, gb) = a, b
        if not (_close(la, lb, 1e-5) and ga is not None and gb is not None):
            return False
        return all(
            (u is None and v is None) or (u is not None and v is not None and _close(u, v, 1e-4))
            for u, v in zip(ga, gb, strict=True)
        )

    # stage 1: no dropout (eval mode), so every variant below is computable exactly
    model.eval()
    try:
        got = run(lambda *a: fn(*a))
    except NotImplementedError:
        raise
    except Exception as err:  # noqa: BLE001 - turn any crash into a diagnosis
        raise CheckFailed(f"my_ct_loss(...) raised {type(err).__name__}: {err}") from err
    loss = got[0]
    if not torch.is_tensor(loss) or loss.dim() != 0:
        raise CheckFailed(
            "return one number (a 0-dim tensor): the batch mean of the weighted per-sample "
            "distances"
        )
    if not loss.requires_grad:
        raise CheckFailed(
            "the loss carries no gradient: only the target goes under torch.no_grad(), the "
            "student's jump must stay differentiable"
        )
    ref = run(lambda *a: ct_loss(*a[:4], a[4], rng=a[5]))
    if not same(got, ref):
        rng = Draws(torch.Generator().manual_seed(7))
        n = rng.categorical(ict_index_probs(grid), x0.shape[0])
        t_hi, t_lo = grid[n + 1], grid[n]
        zero = torch.zeros_like(t_lo)
        c = huber_c(x0)

        def xt(t):
            return (1 - t[:, None]) * x0 + t[:, None] * x1

        lam = 1.0 / (_sigma(t_hi) - _sigma(t_lo))

        def d(delta, elementwise=False):
            if elementwise:
                return ((delta.pow(2) + c * c).sqrt() - c).sum(1)
            return (delta.pow(2).sum(1) + c * c).sqrt() - c

        def variant(student_t, target_t, weight, *, sg=True, elementwise=False, reduce="mean"):
            def f(*_):
                with torch.no_grad() if sg else contextlib.nullcontext():
                    target = model._G(xt(target_t), target_t, zero)
                student = model._G(xt(student_t), student_t, zero)
                per = d(student - target, elementwise)
                w = weight if weight is not None else 1.0
                return (w * per).mean() if reduce == "mean" else (w * per).sum()

            return run(f)

        diagnoses = [
            (
                variant(t_hi, t_lo, lam, sg=False),
                "the target carries gradients: compute G_θ(x_{t_n}, t_n, 0) under "
                "torch.no_grad() (stop-gradient), so that only the student is pulled",
            ),
            (
                variant(t_lo, t_hi, 1.0 / (_sigma(t_hi) - _sigma(t_lo))),
                "time direction swapped: the student jumps from the noisier point "
                "x_{t_{n+1}} (larger t) and the target is taken at t_n",
            ),
            (
                variant(t_hi, t_lo, lam, elementwise=True),
                "element-wise: the pseudo-Huber distance takes the norm over the whole "
                "sample, sqrt(‖Δ‖² + c²) − c, one number per sample",
            ),
            (
                variant(t_hi, t_lo, None),
                "missing weight: scale each sample by 1/(σ(t_{n+1}) − σ(t_n))",
            ),
            (
                variant(t_hi, t_lo, 1.0 / (t_hi - t_lo)),
                "wrong weight: iCT divides by the gap in σ = t/(1 − t), "
                "1/(σ(t_{n+1}) − σ(t_n)), not by the gap in t",
            ),
            (
                variant(t_hi, t_lo, _sigma(t_hi) - _sigma(t_lo)),
                "wrong weight: divide by σ(t_{n+1}) − σ(t_n), do not multiply",
            ),
            (
                variant(t_hi, t_lo, lam, reduce="sum"),
                "average over the batch (mean), not the sum",
            ),
        ]
        for v, msg in diagnoses:
            if same(got, v):
                raise CheckFailed(msg)
        if _close(got[0], ref[0], 1e-5):
            raise CheckFailed(
                "the value is right but the gradient is not: only the target goes under "
                "torch.no_grad(); the student pass must be differentiable"
            )
        raise CheckFailed(
            "CT loss: mean over the batch of d(G_θ(x_{t_{n+1}}, t_{n+1}, 0) − "
            "sg G_θ(x_{t_n}, t_n, 0)) / (σ(t_{n+1}) − σ(t_n)), both points from the same "
            "(X0, X1), d the per-sample pseudo-Huber distance with c = huber_c(x0)"
        )
    # stage 2: with dropout both passes must see the same masks
    model.train()
    if not same(run(lambda *a: fn(*a)), run(lambda *a: ct_loss(*a[:4], a[4], rng=a[5]))):
        raise CheckFailed(
            "right without dropout, wrong with it: the student and the target must see the "
            "same dropout masks — run both passes under the step's dropout seed (the `seed` "
            "drawn at the top)"
        )
    return _ok("CT loss")


_CT_N1 = {
    "a": "no: with N = 1 the only interval is [0, 1], so there is no ODE step in the loss at all",
    "c": "no: the boundary condition fixes G(x, 0, 0) = x only at t = 0; at t = 1 the "
    "target pulls G(X1, 1, 0) towards the data, not towards X1",
    "d": "no: under the independent coupling X1 carries no information about its partner "
    "X0, so no function of X1 can return it",
}


def check_ct_n1_answer(fn: Callable[[], str]) -> bool:
    """``fn()`` returns the letter of the right answer to notebook 03's question: what does CT
    with N = 1 teach the one-jump map? (b: one point, the centre of the data)."""
    ans = _call(fn, what="the answer function")
    if not isinstance(ans, str) or ans.strip().lower() not in ("a", "b", "c", "d"):
        raise CheckFailed(f"answer with one letter, 'a', 'b', 'c' or 'd'; got {ans!r}")
    ans = ans.strip().lower()
    if ans != "b":
        raise CheckFailed(_CT_N1[ans])
    print(
        "With N = 1 the grid is {0, 1}: the target is G(x_0, 0, 0) = X0 itself and the student "
        "sees x_1 = X1, independent of X0. The loss E d(G(X1, 1, 0) − X0) is smallest when "
        "every X1 goes to the one point with the smallest mean distance to the data."
    )
    return _ok("CT at N = 1")


_CTM_U = {
    "b": "no: with u just below t the teacher takes one short step and the target is the EMA "
    "network's own jump G_θ⁻(x_u, u, s) — bootstrapping, as in CD",
    "c": "no: u lies in [s, t), and u = 0 is allowed only when s = 0; then it is the case u = s",
    "d": "no: u decides how much of the target is teacher ODE (t → u) and how much network "
    "jump (u → s)",
}


def check_ctm_u_answer(fn: Callable[[], str]) -> bool:
    """``fn()`` returns the letter of the right answer to notebook 04's question: which u makes
    CTM's target pure teacher ODE? (a: u = s)."""
    ans = _call(fn, what="the answer function")
    if not isinstance(ans, str) or ans.strip().lower() not in ("a", "b", "c", "d"):
        raise CheckFailed(f"answer with one letter, 'a', 'b', 'c' or 'd'; got {ans!r}")
    ans = ans.strip().lower()
    if ans != "a":
        raise CheckFailed(_CTM_U[ans])
    print(
        "With u = s the inner jump is G_θ⁻(x_s, s, s) = x_s exactly (the boundary condition), "
        "so the target is the teacher's ODE solution from t to s: distillation, accurate but "
        "a long teacher solve. As u → t it becomes the network's own jump (bootstrapping)."
    )
    return _ok("CTM's u")


def check_gamma_sampler(fn: Callable) -> bool:
    """``fn(model, x, times, gamma, noise)`` must be CTM's γ-sampler
    (:func:`gctm_mini.sampling.gamma_sampling`): for each step jump to s' with
    :math:`\\sigma(s') = \\sqrt{1-\\gamma^2}\\,\\sigma(t_{i+1})`, re-noise to :math:`t_{i+1}` with
    ``z = noise(x)``; a jump that lands on t = 0 draws no noise. Same noise → same samples."""
    from .oracle import ExactGaussianFlow
    from .randomness import noise_like
    from .sampling import gamma_sampling

    flow = ExactGaussianFlow([0.5, -0.3], [[0.4, 0.1], [0.1, 0.3]])

    class Counting:
        def __init__(self):
            self.calls: list[tuple[float, float]] = []

        def G(self, x, t, s):
            self.calls.append((float(t), float(s)))
            return flow.G(x, t, s)

    x = torch.randn(300, 2, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    times = torch.tensor([1.0, 0.7, 0.4, 0.0], dtype=torch.float64)

    def sig(t):
        return t / (1 - t)

    for gamma in (0.5, 0.0, 1.0):
        model, draws = Counting(), []
        gen = torch.Generator().manual_seed(9)

        def noise(v, gen=gen, draws=draws):
            z = noise_like(v, gen)
            draws.append(z)
            return z

        out = _call(fn, model, x, times, gamma, noise, what=f"gamma_sampler(..., gamma={gamma})")
        ref = gamma_sampling(flow, x, times, gamma, torch.Generator().manual_seed(9))
        if model.calls and model.calls[0][1] > model.calls[0][0]:
            raise CheckFailed(
                "time direction: sampling runs from t = 1 (source) down to 0; call "
                "model.G(x, t_i, s) with s ≤ t_i"
            )
        if len(model.calls) != len(times) - 1:
            raise CheckFailed(
                f"one jump per step: {len(times) - 1} steps make {len(times) - 1} calls of "
                f"model.G (NFE = number of steps); you made {len(model.calls)}"
            )
        if not torch.is_tensor(out) or out.shape != x.shape:
            raise CheckFailed(f"return the final state, shaped like x {tuple(x.shape)}")
        if gamma == 0.5:
            for (t, s), tn in zip(model.calls[:-1], times[1:-1].tolist(), strict=True):
                want = math.sqrt(1 - gamma**2) * sig(tn) / (1 + math.sqrt(1 - gamma**2) * sig(tn))
                if abs(s - tn) < 1e-9:
                    raise CheckFailed(
                        "jump past t_{i+1}: to s' with σ(s') = sqrt(1 − γ²)·σ(t_{i+1}), "
                        "below t_{i+1}, then re-noise back up to t_{i+1}"
                    )
                if abs(s - math.sqrt(1 - gamma**2) * tn) < 1e-9:
                    raise CheckFailed(
                        "scale σ(s') = s'/(1 − s'), not s': σ(s') = sqrt(1 − γ²)·σ(t_{i+1}), "
                        "then s' = σ(s')/(1 + σ(s'))"
                    )
                if abs(s - want) > 1e-6:
                    raise CheckFailed(
                        f"the jump from t = {t:g} should land on s' = {want:.4f} "
                        f"(σ(s') = sqrt(1 − γ²)·σ(t_next)); you jumped to s = {s:.4f}"
                    )
            if model.calls[-1][1] != 0.0:
                raise CheckFailed("the last jump lands on t = 0: call model.G(x, t, 0)")
        if len(draws) == len(times) - 1:
            raise CheckFailed(
                "the jump that lands on t = 0 adds no noise: draw z only when t_{i+1} > 0 "
                "(an extra draw shifts every later sample's noise)"
            )
        if _close(out, ref, 1e-6):
            continue
        if gamma == 0.0:
            raise CheckFailed(
                "γ = 0 must be deterministic jumps along the trajectory: "
                "x ← G(x, t_i, t_{i+1}) (the re-noising adds nothing)"
            )
        raise CheckFailed(
            f"γ = {gamma:g}: after the jump to s', re-noise to t_{{i+1}}: "
            "x ← (1 − t_{i+1})·(x / (1 − s') + γ·σ(t_{i+1})·z), σ(t) = t/(1 − t)"
        )
    return _ok("γ-sampler")


# ------------------------------------------------------------------ notebook 05: the GCTM loss


def _masks(model, rng, seed: int):
    """The dropout masks of one training pass, keyed by ``seed`` (same seed → same masks)."""
    return rng.dropout(model, seed)


def gctm_pieces(
    fm_times: str = "uniform", t_snap: str = "nearest", jump_prob: float = 0.0
) -> dict[str, Callable]:
    """The given pieces of the GCTM-loss exercise, as the package computes them:

    * ``draw(grid, batch, rng) -> (t_idx, s_idx, u_idx)`` — :func:`~gctm_mini.timegrid.draw_tsu`
      with ``t_snap``, then a share ``jump_prob`` of the samples set to (t, s) = (1, 0) with u
      uniform below 1, in the order :func:`~gctm_mini.consistency.gctm_loss` draws them;
    * ``solve(v, x, grid, start_idx, end_idx)`` — Heun along the grid
      (:func:`~gctm_mini.solvers.integrate_per_sample`);
    * ``fm(model, x0, x1, rng, seed)`` — the FM term with times from ``rng`` (``fm_times``)
      and its own dropout masks (``seed + 1``), as :func:`~gctm_mini.consistency.gctm_loss`
      draws them after the consistency term.
    """
    from .losses import fm_loss, sample_fm_times
    from .solvers import integrate_per_sample
    from .timegrid import draw_tsu

    def fm(model, x0, x1, rng, seed):
        t = sample_fm_times(x0.shape[0], fm_times, x0.device, rng)
        with _masks(model, rng, seed + 1) if hasattr(rng, "dropout") else _nullcontext():
            return fm_loss(model, x0, x1, t)

    def draw(grid, batch, rng):
        t_idx, s_idx, u_idx = draw_tsu(grid, batch, rng, t_snap)
        if jump_prob > 0:
            N = grid.shape[0] - 1
            jump = rng.rand(batch).to(grid.device) < jump_prob
            u_jump = (rng.rand(batch).to(grid.device) * N).long().clamp(max=N - 1)
            t_idx = torch.where(jump, torch.full_like(t_idx, N), t_idx)
            s_idx = torch.where(jump, torch.zeros_like(s_idx), s_idx)
            u_idx = torch.where(jump, u_jump, u_idx)
        return t_idx, s_idx, u_idx

    return {
        "draw": draw,
        "solve": lambda v, x, grid, i, j: integrate_per_sample(v, x, grid, i, j, "heun"),
        "fm": fm,
    }


def _nullcontext():
    import contextlib

    return contextlib.nullcontext()


def _gctm_variant(model, ema, x0, x1, grid, rng, lam, pieces, mistake: str | None = None):
    """GCTM's loss with one typical ``mistake`` built in (``None``: the correct loss)."""
    from .consistency import huber_c

    draw, solve, fm = pieces["draw"], pieces["solve"], pieces["fm"]
    t_idx, s_idx, u_idx = draw(grid, x0.shape[0], rng)
    t, s, u = grid[t_idx], grid[s_idx], grid[u_idx]
    tb = t.reshape(-1, *([1] * (x0.dim() - 1)))
    xt = (1 - tb) * x1 + tb * x0 if mistake == "interpolant" else (1 - tb) * x0 + tb * x1
    teacher = model if mistake == "model_ode" else ema
    start, end = (u_idx, t_idx) if mistake == "solve_backwards" else (t_idx, u_idx)
    with torch.no_grad():
        xu = solve(teacher._velocity, xt, grid, start, end)
    seed = rng.seed()
    jumper = ema if mistake == "ema_target" else model
    with _masks(model, rng, seed), torch.set_grad_enabled(mistake == "target_grad"):
        target = jumper._G(xu, u, s)
    with _masks(model, rng, seed):
        student = model._G(xt, t, s)
    c_out = model.coefficients(t, x0)["c_out"]
    ratio = (1 - s / t).reshape(tb.shape)
    w = {
        "unweighted": torch.ones_like(c_out),
        "c_out_only": c_out,
        "ratio_only": ratio,
        "w_squared": (c_out * ratio) ** 2,
        "times_w": 1 / (c_out * ratio),
    }.get(mistake, c_out * ratio)
    delta, c = (student - target) / w, huber_c(x0)
    if mistake == "elementwise_mean":
        cons = ((delta.pow(2) + c * c).sqrt() - c).mean()
    elif mistake == "elementwise_sum":
        cons = ((delta.pow(2) + c * c).sqrt() - c).flatten(1).sum(1).mean()
    elif mistake == "squared":
        cons = delta.flatten(1).pow(2).sum(1).mean()
    else:
        cons = ((delta.flatten(1).pow(2).sum(1) + c * c).sqrt() - c).mean()
    l_fm = fm(model, x0, x1, rng, seed)
    if mistake == "no_fm":
        return lam * cons
    if mistake == "lam_on_fm":
        return cons + lam * l_fm
    return lam * cons + l_fm


_GCTM_MISTAKES = {
    "interpolant": "time direction: x_t = (1 − t)·X0 + t·X1 puts the data X0 at t = 0 and the "
    "source X1 at t = 1; you swapped them",
    "solve_backwards": "time direction: the ODE runs from t down to u (start at t_idx, end at "
    "u_idx), not from u up to t",
    "model_ode": "the ODE from t to u must use the EMA model's velocity (ema._velocity): in "
    "GCTM the EMA is the teacher that solves the ODE",
    "ema_target": "the target jump u → s must use the current weights (model._G under "
    "torch.no_grad(), a stop-gradient), not the EMA: in GCTM the EMA is the ODE teacher, "
    "not the target network",
    "elementwise_mean": "element-wise pseudo-Huber: the distance takes the norm over the whole "
    "sample, sqrt(‖Δ/w‖² + c²) − c, one number per sample, then the batch mean",
    "elementwise_sum": "element-wise pseudo-Huber summed over coordinates: take the norm over "
    "the whole sample first, sqrt(‖Δ/w‖² + c²) − c",
    "squared": "that is the squared norm; GCTM's distance is pseudo-Huber, "
    "sqrt(‖Δ/w‖² + c²) − c with c = 0.00054·√d",
    "unweighted": "missing weight: divide the residual by w = c_out(t)·(1 − s/t) before "
    "taking the distance",
    "c_out_only": "the weight is w = c_out(t)·(1 − s/t); the factor (1 − s/t) is missing",
    "ratio_only": "the weight is w = c_out(t)·(1 − s/t); the factor c_out(t) is missing",
    "w_squared": "divide the residual by w = c_out(t)·(1 − s/t) once, not by w²",
    "times_w": "divide the residual by w = c_out(t)·(1 − s/t); you multiplied by it",
    "no_fm": "the FM term is missing: L = λ·L_GCTM + L_FM (it keeps the EMA velocity, the "
    "teacher, accurate)",
    "lam_on_fm": "λ multiplies the consistency term: L = λ·L_GCTM + L_FM",
}


def check_gctm_loss(fn: Callable) -> bool:
    """``fn(model, ema, x0, x1, grid, rng, lam, draw=…, solve=…, fm=…)`` must return GCTM's loss
    exactly as :func:`~gctm_mini.consistency.gctm_loss` computes it from the same ``rng``
    (a :class:`~gctm_mini.randomness.Draws`), given the pieces of :func:`gctm_pieces`:

    .. math::
        \\lambda\\,E\\,d\\Big(\\frac{G_\\theta(x_t, t, s) - \\mathrm{sg}\\,G_\\theta(x_u, u, s)}
        {c_\\text{out}(t)(1 - s/t)}\\Big) + L_\\text{FM}, \\quad
        x_u = \\mathrm{Heun}_{v_\\text{ema}}(x_t, t \\to u).

    The value must agree (up to float rounding), the gradients into the weights too, no
    gradient may reach the EMA, and the dropout masks of the student and the target must
    agree.
    """
    from .consistency import gctm_loss
    from .models import build_model, mlp_spec
    from .parameterization import CouplingMoments
    from .randomness import Draws
    from .timegrid import fine_grid

    pieces = gctm_pieces("uniform")
    g0 = torch.Generator().manual_seed(7)
    x0 = 0.8 * torch.randn(48, 2, generator=g0) + 0.3
    x1 = torch.randn(48, 2, generator=g0)

    def nets(dropout: float):
        torch.manual_seed(1234)  # any pass on torch's global RNG sees the same numbers
        out = []
        for k in range(2):
            m = build_model(mlp_spec(2, 32, 2, dropout=dropout), CouplingMoments(0.6, 1.0, 0.1))
            gk = torch.Generator().manual_seed(11 + k)
            with torch.no_grad():
                for p in m.parameters():
                    p.copy_(0.3 * torch.randn(p.shape, generator=gk))
            out.append(m.train())
        out[1].requires_grad_(True)  # a gradient leaking into the ODE solve shows up here
        return out

    def student(grid, seed, lam, dropout):
        model, ema = nets(dropout)
        rng = Draws(torch.Generator().manual_seed(seed))
        loss = _call(
            functools.partial(fn, **pieces),
            model,
            ema,
            x0,
            x1,
            grid,
            rng,
            lam,
            what="gctm_loss(model, ema, x0, x1, grid, rng, lam, draw=…, solve=…, fm=…)",
        )
        return loss, model, ema

    def reference(grid, seed, lam, dropout, mistake=None, package=True):
        model, ema = nets(dropout)
        rng = Draws(torch.Generator().manual_seed(seed))
        if package and mistake is None:
            loss, _ = gctm_loss(model, ema, x0, x1, grid, lam=lam, fm_times="uniform", rng=rng)
        else:
            loss = _gctm_variant(model, ema, x0, x1, grid, rng, lam, pieces, mistake)
        return loss, model

    def grads(model):
        return [p.grad if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]

    with torch.random.fork_rng():
        grid = fine_grid(8, dtype=torch.float32)
        out, model, ema = student(grid, 0, 1.0, 0.0)
        if not torch.is_tensor(out):
            raise CheckFailed(f"return the loss as a scalar tensor; got {type(out).__name__}")
        if out.dim() != 0:
            raise CheckFailed(
                f"return one scalar (the batch mean of the per-sample distances plus the FM "
                f"term); got shape {tuple(out.shape)}"
            )
        if not bool(torch.isfinite(out)):
            raise CheckFailed(
                "the loss is NaN/inf: a 0/0 — s/t at t = s = 0, or dividing by a weight that "
                "is 0 there. Use the given draw (it keeps t > u ≥ s and t > 0), compute jumps "
                "with model._G (which defines G(x, t, t) = x) and w = c_out(t)·(1 − s/t) only "
                "at the drawn times"
            )
        if not out.requires_grad:
            raise CheckFailed(
                "no gradient reaches the weights: only the target (and the ODE solve) go "
                "under torch.no_grad(); the student jump G_θ(x_t, t, s) and the FM term "
                "must carry gradients"
            )
        ref, ref_model = reference(grid, 0, 1.0, 0.0)
        if not _close(out.detach(), ref.detach(), 1e-4):
            for mistake, why in _GCTM_MISTAKES.items():
                if mistake == "lam_on_fm":
                    continue
                with torch.no_grad():
                    alt, _ = reference(grid, 0, 1.0, 0.0, mistake)
                if _close(out.detach(), alt, 1e-4):
                    raise CheckFailed(why)
            raise CheckFailed(
                f"the loss is {float(out):.6f}, GCTM's is {float(ref):.6f} for the same draws: "
                "draw in the package's order (times with draw, the Heun solve t → u, "
                "seed = rng.seed(), target and student under that seed's masks, then the FM "
                "term fm(model, x0, x1, rng, seed)) and check each piece against the equation"
            )
        out.backward()
        ref.backward()
        if any(bool(p.grad is not None and p.grad.abs().max() > 0) for p in ema.parameters()):
            raise CheckFailed(
                "gradients flow through the ODE solve into the EMA model: solve t → u under "
                "torch.no_grad() (the teacher is not trained by this loss)"
            )
        if not all(_close(a, b, 1e-4) for a, b in zip(grads(model), grads(ref_model), strict=True)):
            alt, alt_model = reference(grid, 0, 1.0, 0.0, "target_grad")
            alt.backward()
            if all(_close(a, b, 1e-4) for a, b in zip(grads(model), grads(alt_model), strict=True)):
                raise CheckFailed(
                    "the target carries gradients: compute sg G_θ(x_u, u, s) under "
                    "torch.no_grad() (stop-gradient) so that only the student jump is trained"
                )
            raise CheckFailed("the value is right but the gradients into the weights are not")
        for lam in (2.5, 0.4):
            out, _, _ = student(grid, 1, lam, 0.0)
            ref, _ = reference(grid, 1, lam, 0.0)
            if not _close(out.detach(), ref.detach(), 1e-4):
                with torch.no_grad():
                    alt, _ = reference(grid, 1, lam, 0.0, "lam_on_fm")
                if _close(out.detach(), alt, 1e-4):
                    raise CheckFailed(_GCTM_MISTAKES["lam_on_fm"])
                raise CheckFailed(f"with λ = {lam} the loss is wrong: L = λ·L_GCTM + L_FM")
        out, _, _ = student(grid, 2, 1.0, 0.3)
        ref, _ = reference(grid, 2, 1.0, 0.3)
        if not _close(out.detach(), ref.detach(), 1e-4):
            raise CheckFailed(
                "with dropout in the network the loss differs: the student and the target "
                "must see the same dropout masks — draw seed = rng.seed() once and run both "
                "passes under that seed's masks"
            )
        grid16 = fine_grid(16, dtype=torch.float32)
        out, _, _ = student(grid16, 3, 1.0, 0.0)
        ref, _ = reference(grid16, 3, 1.0, 0.0)
        if not _close(out.detach(), ref.detach(), 1e-4):
            raise CheckFailed("right on an 8-interval grid but wrong on a 16-interval one")
        # the run's draw: t snapped one node up and half the samples on the one jump (1, 0)
        model, ema = nets(0.0)
        out = _call(
            functools.partial(fn, **gctm_pieces("uniform", "up", 0.5)),
            model,
            ema,
            x0,
            x1,
            grid16,
            Draws(torch.Generator().manual_seed(4)),
            1.0,
            what="gctm_loss(model, ema, x0, x1, grid, rng, lam, draw=…, solve=…, fm=…)",
        )
        model_r, ema_r = nets(0.0)
        ref, _ = gctm_loss(
            model_r,
            ema_r,
            x0,
            x1,
            grid16,
            fm_times="uniform",
            t_snap="up",
            jump_prob=0.5,
            rng=Draws(torch.Generator().manual_seed(4)),
        )
        if not _close(out.detach(), ref.detach(), 1e-4):
            raise CheckFailed(
                "right with the plain (t, s, u) draw but wrong when the given draw returns "
                "one-jump samples (t, s) = (1, 0): call draw(grid, B, rng) once and read t, s "
                "and u off the indices it returns"
            )
    return _ok("GCTM loss")


def _explained_choice(answer, options: dict[str, str], right: str, why: str, name: str) -> bool:
    """A letter answer whose ``options`` map each wrong letter to why it is wrong."""
    ans = str(answer).strip().strip("()").lower()
    if ans not in options:
        letters = ", ".join(options)
        raise CheckFailed(f"answer with one letter ({letters}); got {answer!r}")
    if ans != right:
        raise CheckFailed(f"not ({ans}): {options[ans]} — the answer is ({right}): {why}")
    return _ok(name)


def check_gctm_u_equals_s(answer: str) -> bool:
    """Multiple choice (notebook 05): when the draw gives u = s, what does GCTM's target become?

    (a) x_t itself; (b) the EMA's Heun solution of the ODE from t to s; (c) the current
    model's jump from u to 0; (d) zero. Right: (b).
    """
    options = {
        "a": "x_t is where the student starts, not where the target ends",
        "b": "",
        "c": "the target jumps to s, and with u = s that jump has length zero",
        "d": "the target is a point in data space, not a residual",
    }
    why = (
        "G(x, s, s) = x, so the target is sg G_θ(x_s, s, s) = x_s, the EMA velocity's Heun "
        "solution from t down to s; the loss then regresses the jump G_θ(x_t, t, s) on the "
        "model's own ODE solution (distillation from the EMA teacher, with no second jump)"
    )
    return _explained_choice(answer, options, "b", why, "u = s")


def check_gctm_weight_question(answer: str) -> bool:
    """Multiple choice (notebook 05): without GCTM's weight, which (t, s) pairs does training
    nearly ignore? Right: (b) short jumps s → t and small t, where w = c_out(t)(1 − s/t) → 0."""
    options = {
        "a": "long jumps from t ≈ 1 to s = 0 have w of order c_out(1), the largest weights",
        "b": "",
        "c": "w changes from sample to sample, so it is not a constant factor",
        "d": "u only moves the target along the trajectory; w does not depend on u",
    }
    why = (
        "the network's output enters G(x, t, s) scaled by w = c_out(t)(1 − s/t), so the "
        "residual and its gradient shrink with w: short jumps (s → t) and small t, where "
        "w → 0, would contribute almost nothing"
    )
    return _explained_choice(answer, options, "b", why, "the weight c_out(t)(1 − s/t)")


# ------------------------------------------------------------------ notebook 06: BCM inversion


def _bcm_invert_variant(model, x0, k, t_start, generator, mistake=None):
    """BCM inversion with one typical ``mistake`` built in (``None``: the correct one)."""
    from .randomness import noise_like
    from .timegrid import edm_times

    if mistake == "uniform_grid":
        times = torch.linspace(t_start, 1.0, k + 1)
    elif mistake == "from_zero":
        times = edm_times(k, 0.0, model.sigma_max)
    else:
        times = edm_times(k, t_start, model.sigma_max)
    if mistake == "one_jump":
        times = times[[0, -1]]
    z = noise_like(x0, generator)
    t0 = float(times[0]) if mistake != "from_zero" else t_start
    x = {
        "no_noise": x0,
        "added_noise": x0 + t0 * z,
        "unit_noise": (1 - t0) * x0 + z,
    }.get(mistake, (1 - t0) * x0 + t0 * z)
    for i in range(len(times) - 1):
        x = model.G(x, float(times[i]), float(times[i + 1]))
    return x


_INVERT_MISTAKES = {
    "no_noise": "start from the slightly noised point (1 − t0)·x0 + t0·z (z from the "
    "generator), as BCM does, not from x0 itself",
    "added_noise": "the noised point lies on the path: (1 − t0)·x0 + t0·z, not x0 + t0·z",
    "unit_noise": "scale the noise by t0: (1 − t0)·x0 + t0·z",
    "uniform_grid": "the k jumps follow the EDM ρ-grid from t0 to 1 "
    "(gm.timegrid.edm_times(k, t_start, model.sigma_max)), not a uniform grid",
    "from_zero": "the jumps start at t0 = t_start, where the noised point lives, not at t = 0",
    "one_jump": "make k jumps, one per interval of the grid, not one jump from t0 to 1",
}


def check_bcm_invert(fn: Callable) -> bool:
    """``fn(model, x0, k, t_start, generator)`` must invert data to the source as
    :func:`~gctm_mini.sampling.bcm_invert` does: noise to
    :math:`x = (1 - t_0)X_0 + t_0 z` (z drawn once with ``generator``), then k jumps
    :math:`x \\leftarrow G(x, t_i, t_{i+1})` forward in time along the EDM ρ-grid
    ``edm_times(k, t_start, model.sigma_max)``, ending at t = 1."""
    from .models import build_model, mlp_spec
    from .parameterization import CouplingMoments
    from .sampling import bcm_invert

    with torch.random.fork_rng():
        model = build_model(mlp_spec(2, 16, 2, bidirectional=True), CouplingMoments(0.5, 1.0))
        gm_ = torch.Generator().manual_seed(21)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(0.3 * torch.randn(p.shape, generator=gm_))
        model.eval()
        x0 = 0.7 * torch.randn(24, 2, generator=torch.Generator().manual_seed(22))
        calls: list[tuple[float, float]] = []
        public_G = model.G

        def recording_G(x, t, s):
            calls.append(
                (float(torch.as_tensor(t).flatten()[0]), float(torch.as_tensor(s).flatten()[0]))
            )
            return public_G(x, t, s)

        for k, t_start in ((1, 0.02), (2, 0.02), (4, 0.05)):
            calls.clear()
            model.G = recording_G
            try:
                out = _call(
                    fn,
                    model,
                    x0,
                    k,
                    t_start,
                    torch.Generator().manual_seed(5),
                    what=f"invert(model, x0, k={k}, t_start={t_start}, generator)",
                )
                again = fn(model, x0, k, t_start, torch.Generator().manual_seed(5))
            finally:
                del model.G
            ref = bcm_invert(model, x0, k, t_start, torch.Generator().manual_seed(5))
            if not torch.is_tensor(out) or out.shape != x0.shape:
                raise CheckFailed(f"return the latents shaped like x0 {tuple(x0.shape)}")
            if not bool(torch.isfinite(out).all()):
                raise CheckFailed("NaN/inf in the latents")
            if calls and any(s < t for t, s in calls):
                raise CheckFailed(
                    "time direction: inversion runs forward in time, from the data end t0 "
                    "to the source t = 1 — every jump G(x, t, s) needs s > t"
                )
            if calls and calls[-1][1] != 1.0:
                raise CheckFailed(
                    f"the last jump must land on t = 1 (the source); it lands on {calls[-1][1]:g}"
                )
            if not torch.equal(out, again):
                raise CheckFailed(
                    "two calls with equally seeded generators differ: draw the noise z with "
                    "the given generator (e.g. gm.randomness.noise_like(x0, generator))"
                )
            if _close(out, ref, 1e-5):
                continue
            for mistake, why in _INVERT_MISTAKES.items():
                alt = _bcm_invert_variant(
                    model, x0, k, t_start, torch.Generator().manual_seed(5), mistake
                )
                if _close(out, alt, 1e-5):
                    raise CheckFailed(why)
            raise CheckFailed(
                f"with k = {k} jumps and t_start = {t_start} the latents differ from BCM's "
                "inversion: noise once with the generator, then jump along "
                "edm_times(k, t_start, model.sigma_max)"
            )
    return _ok("BCM inversion")


def check_bcm_latent_question(answer: str) -> bool:
    """Multiple choice (notebook 06): if G were the exact flow map, how would the inverted
    latents be distributed? Right: (c) exactly N(0, I)."""
    options = {
        "a": "an exact flow map moves every point all the way to t = 1, the source",
        "b": "the noise at t0 is what makes the start an exact sample of the marginal at t0",
        "c": "",
        "d": "an exact flow map composes: k exact jumps equal one exact jump",
    }
    why = (
        "the slightly noised point (1 − t0)X0 + t0·z is an exact sample of the marginal p_t0, "
        "and an exact flow map carries p_t0 to p_1, the source N(0, I), whatever the number "
        "of jumps; so the distance of the latents to N(0, I), read against the floor between "
        "two N(0, I) samples, measures the model's error"
    )
    return _explained_choice(answer, options, "c", why, "latents of an exact flow map")


# ---------------------------------------------------------- notebook 07: multistep jumps


def check_multistep_sampler(fn: Callable) -> bool:
    """``fn(model, x1, nfe)`` must jump along the equal grid :math:`t_k = 1 - k/K`,
    :math:`x \\leftarrow G_\\theta(x, t_k, t_{k+1})` for k = 0 … K − 1 (K = ``nfe`` network
    evaluations), starting from the source ``x1`` at t = 1 and ending at t = 0."""
    from .models import build_model, mlp_spec
    from .parameterization import CouplingMoments
    from .sampling import sample_multistep

    torch.manual_seed(0)
    model = build_model(mlp_spec(2, 16, 2), CouplingMoments()).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x1 = torch.randn(8, 2, generator=torch.Generator().manual_seed(3))
    for K in (1, 2, 4, 3):
        calls: list[tuple[Tensor, float, float]] = []
        G = model.G

        def recording(x, t, s, G=G, calls=calls):
            t_, s_ = float(torch.as_tensor(t).flatten()[0]), float(torch.as_tensor(s).flatten()[0])
            calls.append((x.detach().clone(), t_, s_))
            if s_ > t_:
                raise CheckFailed(
                    f"time direction: generation jumps from t = 1 (source) down to 0 (data); "
                    f"you called G(x, {t_:g}, {s_:g}) with s > t"
                )
            return G(x, t, s)

        model.G = recording
        try:
            out = _call(fn, model, x1, K, what=f"multistep(model, x1, {K})")
        finally:
            del model.G
        with torch.no_grad():
            ref = sample_multistep(model, x1, K)
        if len(calls) != K:
            raise CheckFailed(
                f"NFE = {K} means {K} jump(s), one network evaluation each; you made {len(calls)}"
            )
        if K > 1 and all(s == 0.0 for _, _, s in calls):
            raise CheckFailed(
                "every jump lands on s = 0: each jump must end at the next time of the grid, "
                "t_{k+1}, where the following jump starts (jumping to 0 and starting again "
                "from a larger t needs fresh noise: that is CM multistep, not a flow map)"
            )
        if K > 1 and all(torch.equal(x, x1) for x, _, _ in calls):
            raise CheckFailed(
                "chain the jumps: each jump starts where the previous one landed, not from x1"
            )
        times = [t for _, t, _ in calls] + [calls[-1][2]]
        want = [1 - k / K for k in range(K + 1)]
        if any(abs(a - b) > 1e-6 for a, b in zip(times, want, strict=True)):
            got = ", ".join(f"{v:.3g}" for v in times)
            raise CheckFailed(
                f"K = {K} equal jumps visit the times 1, 1 − 1/K, …, 0; yours visited {got}"
            )
        if not _close(out, ref, 1e-5):
            raise CheckFailed(f"return the state after the last jump (at t = 0); K = {K}")
    return _ok("multistep flow-map sampler")


def check_precondition_t0_question(answer: str) -> bool:
    """Multiple choice (notebook 07): at t = 0 what are c_skip and c_out, and what is
    g(x, 0, 0)? Right: (b) c_skip = 1, c_out = 0, so g(x, 0, 0) = x whatever the network."""
    options = {
        "a": "with c_skip = 0 the input x would be ignored exactly where x_0 is the data itself",
        "b": "",
        "c": "c_skip is the regression of X0 on x_t, which at t = 0 is X0 itself: slope 1",
        "d": "c_in = 1/√V_0 = 1/√v0 is finite and non-zero at t = 0",
    }
    why = (
        "at t = 0, x_t = X0, so the best linear guess of X0 from x_t is x_t itself "
        "(c_skip = (v0·1 + 0)/v0 = 1) and the residual X0 − c_skip x_t is 0 (c_out = 0): "
        "g(x, 0, 0) = x for any network output, which is the boundary condition built in"
    )
    return _explained_choice(answer, options, "b", why, "preconditioning at t = 0")


# ------------------------------------------------------------ notebook 10: latent paths


def check_slerp(fn: Callable) -> bool:
    """``fn(a, b, w)`` must interpolate the latents ``a, b: (B, *D)`` on the sphere, per
    sample over all its coordinates: with :math:`\\cos\\Omega = \\langle a, b\\rangle /
    (\\|a\\|\\|b\\|)`, :math:`\\frac{\\sin((1-w)\\Omega)}{\\sin\\Omega} a +
    \\frac{\\sin(w\\Omega)}{\\sin\\Omega} b` (w = 0 → a, w = 1 → b)."""
    from .editing import slerp

    g = torch.Generator().manual_seed(11)
    a, b = torch.randn(3, 1, 6, 6, generator=g), torch.randn(3, 1, 6, 6, generator=g)
    for w in (0.0, 1.0):
        out = _call(fn, a, b, w, what=f"slerp(a, b, {w:g})")
        if not torch.is_tensor(out) or out.shape != a.shape:
            shape = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
            raise CheckFailed(f"return a tensor shaped like a {tuple(a.shape)}; got {shape}")
        if not _close(out, a if w == 0.0 else b, 1e-4):
            raise CheckFailed(f"endpoints: w = 0 must give a and w = 1 must give b (w = {w:g})")
    mid = _call(fn, a, b, 0.5, what="slerp(a, b, 0.5)")
    if _close(mid, 0.5 * (a + b), 1e-4):
        raise CheckFailed(
            "that is the straight line (lerp): its midpoint of two independent Gaussian "
            "latents is about 1/√2 as long as either, i.e. not a typical latent; bend along "
            "the sphere with the angle Ω between a and b"
        )
    one = _call(fn, a[1:2], b[1:2], 0.3, what="slerp on one sample")
    if not _close(_call(fn, a, b, 0.3, what="slerp(a, b, 0.3)")[1:2], one, 1e-4):
        raise CheckFailed(
            "one angle per sample: flatten each sample (x.flatten(1)) and sum over its "
            "coordinates only, not over the whole batch"
        )
    u = a / a.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    v = b / b.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    for w in (0.25, 0.5, 0.8):
        out = _call(fn, u, v, w, what=f"slerp(a, b, {w:g})")
        if not torch.allclose(out.flatten(1).norm(dim=1), torch.ones(3), atol=1e-4):
            raise CheckFailed(
                "two unit latents must stay on the unit sphere at every w: weight them with "
                "sin((1 − w)Ω)/sin Ω and sin(wΩ)/sin Ω"
            )
        if not _close(out, slerp(u, v, w), 1e-4):
            raise CheckFailed(
                f"slerp(a, b, {w:g}) differs from sin((1−w)Ω)/sinΩ·a + sin(wΩ)/sinΩ·b"
            )
    return _ok("slerp")


def check_lerp_norm_answer(value: float) -> bool:
    """Numeric question (notebook 10): the norm of the lerp midpoint (a + b)/2 of two
    independent N(0, I) latents in d = 784 dimensions, as a fraction of the norm of one
    latent. Right: 1/√2 ≈ 0.707 (within 0.02)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise CheckFailed(f"answer with a number; got {value!r}") from None
    right = 1 / math.sqrt(2)
    why = (
        "a and b are independent, so ‖a + b‖² ≈ ‖a‖² + ‖b‖² = 2d and ‖(a + b)/2‖ ≈ √(2d)/2 "
        "= √d/√2: the midpoint is 1/√2 ≈ 0.71 as long as a typical latent, far inside the "
        "shell where N(0, I) puts its mass"
    )
    if abs(v - right) <= 0.02:
        print(f"✓ lerp midpoint norm: {right:.3f} — {why}")
        return True
    if abs(v - 1.0) <= 0.02:
        raise CheckFailed(f"1 is what slerp keeps, not lerp — {why}")
    if abs(v - 0.5) <= 0.02:
        raise CheckFailed(f"0.5 would hold if a = b; independent latents add in quadrature — {why}")
    raise CheckFailed(f"not {v:g} — {why}")


# ------------------------------------------------------------ notebook 09: zero-shot restoration


def _zero_shot_variant(model, y, op, nfe, x_start, t_start, mistake=None):
    """:func:`gctm_mini.restoration.zero_shot_restore` (η = 0) from a given start, or one of
    its typical mistakes."""
    times = torch.linspace(t_start, 0.0, nfe + 1)
    x, x0_hat = x_start, x_start
    for i in range(nfe):
        t, tn = float(times[i]), float(times[i + 1])
        x0_hat = model.G(x, t, 0.0)
        if tn == 0.0:
            break
        eps_hat = x_start if mistake == "start_noise" else (x - (1 - t) * x0_hat) / t
        x0_next = x0_hat if mistake == "no_projection" else op.project(x0_hat, y)
        x = (1 - tn) * x0_next + tn * eps_hat
    if mistake == "no_final":
        return x0_hat
    return op.project(x0_hat, y, iters=1 if mistake == "one_final" else 50)


def check_zero_shot_restore(fn: Callable) -> bool:
    """``fn(model, y, op, nfe, x_start, t_start)`` must run zero-shot restoration with an
    unconditional flow map (η = 0): for the K = ``nfe`` times :math:`t_i = t_0(1 - i/K)`,
    :math:`\\hat x_0 = G_\\theta(x_{t_i}, t_i, 0)`, :math:`\\hat\\varepsilon = (x_{t_i} - (1 - t_i)
    \\hat x_0)/t_i`, :math:`x_{t_{i+1}} = (1 - t_{i+1})\\,\\Pi_y(\\hat x_0) + t_{i+1}\\hat
    \\varepsilon`, and return :math:`\\Pi_y(\\hat x_0)` after the last jump with 50 projection
    iterations (``op.project(x0_hat, y, iters=50)``) — as
    :func:`gctm_mini.restoration.zero_shot_restore`."""
    from .degradations import Degradation
    from .models import build_model
    from .parameterization import CouplingMoments
    from .restoration import trajectory_start, zero_shot_restore

    spec = {
        "net": "unet",
        "net_kwargs": dict(
            img_resolution=8, in_channels=1, out_channels=1, model_channels=8,
            channel_mult=[1, 2], num_blocks=1, attn_resolutions=[], dropout=0.0,
        ),
        "data_shape": [1, 8, 8],
        "sigma_max": 80.0,
        "bidirectional": False,
    }  # fmt: skip
    torch.manual_seed(0)
    model = build_model(spec, CouplingMoments(0.3, 1.0, 0.05)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    x0 = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(5)) * 2 - 1
    mistakes = {
        "no_projection": "the data-consistency step is missing: project the one-jump estimate "
        "onto the measurement, op.project(x0_hat, y), before re-noising it to the next time",
        "start_noise": "re-noise with the source the jump implies, ε̂ = (x_t − (1 − t)·x̂0)/t, "
        "not with the starting noise: the trajectory must follow the current state",
        "no_final": "return the measurement-consistent answer: after the last jump project "
        "x̂0 once more, op.project(x0_hat, y, iters=50)",
        "one_final": "the last projection must converge on the measurement: 50 Landweber "
        "iterations (iters=50), not one",
    }
    for task, nfe, t0 in (
        ("inpaint", 3, 1.0),
        ("sr2", 2, 0.5),
        ("sr2", 1, 0.2),
        ("inpaint", 4, 0.6),
    ):
        op = Degradation(task)
        y = op.clean(x0)
        x_start = trajectory_start(op, y, t0, torch.Generator().manual_seed(7))
        calls: list[tuple[float, float]] = []
        G = model.G

        def recording(x, t, s, G=G, calls=calls):
            calls.append(
                (float(torch.as_tensor(t).flatten()[0]), float(torch.as_tensor(s).flatten()[0]))
            )
            return G(x, t, s)

        model.G = recording
        try:
            with torch.no_grad():
                out = _call(
                    fn, model, y, op, nfe, x_start, t0, what=f"zero_shot({task}, nfe={nfe})"
                )
        finally:
            del model.G
        with torch.no_grad():
            ref = zero_shot_restore(
                model, y, op, nfe, generator=torch.Generator().manual_seed(7), t_start=t0
            )
            if not _close(ref, _zero_shot_variant(model, y, op, nfe, x_start, t0), 1e-5):
                raise RuntimeError("check_zero_shot_restore is out of step with zero_shot_restore")
            if not torch.is_tensor(out) or out.shape != y.shape:
                raise CheckFailed(f"return restored images shaped like y {tuple(y.shape)}")
            if len(calls) != nfe:
                raise CheckFailed(
                    f"NFE = {nfe} means {nfe} calls of model.G; you made {len(calls)}"
                )
            if any(s != 0.0 for _, s in calls):
                raise CheckFailed("every jump goes to the data, s = 0: x̂0 = model.G(x, t_i, 0)")
            want = [t0 * (1 - i / nfe) for i in range(nfe)]
            if any(abs(a - b) > 1e-6 for (a, _), b in zip(calls, want, strict=True)):
                got = ", ".join(f"{t:.3g}" for t, _ in calls)
                raise CheckFailed(
                    f"the jumps start at t_0 = {t0:g} and go down in K equal steps "
                    f"t_i = t_0·(1 − i/K); you started them at {got}"
                )
            if _close(out, ref, 1e-4):
                continue
            for name, why in mistakes.items():
                if _close(out, _zero_shot_variant(model, y, op, nfe, x_start, t0, name), 1e-4):
                    raise CheckFailed(why)
        raise CheckFailed(
            f"{task}, NFE {nfe}, t_0 = {t0:g}: your restoration differs from zero_shot_restore "
            "(check the re-noising x = (1 − t_next)·Π_y(x̂0) + t_next·ε̂)"
        )
    return _ok("zero-shot restoration")


# ------------------------------------------------------------ notebook 08: the paired source


def check_paired_source(fn: Callable) -> bool:
    """``fn(x0, mask, hole_noise, z, eps)`` must build the translation source of the paired
    coupling, :math:`X_1 = m \\odot X_0 + (1 - m) \\odot \\zeta + \\varepsilon z`: the observed
    pixels of the target (mask ``m`` = 1), N(0, 1) noise ζ in the hole, and the source
    perturbation ε·z on every pixel — as ``Degradation("half")(x0, noise=hole_noise) + eps * z``
    (what :func:`gctm_mini.train_images.draw_image_batch` feeds the network)."""
    from .degradations import Degradation

    g = torch.Generator().manual_seed(8)
    x0 = torch.rand(4, 1, 8, 8, generator=g) * 2 - 1
    hole, z = torch.randn(x0.shape, generator=g), torch.randn(x0.shape, generator=g)
    op = Degradation("half")
    m = op.mask(x0)
    eps = 0.3
    out = _call(fn, x0, m, hole, z, eps, what="paired_source(x0, mask, hole_noise, z, eps)")
    ref = op(x0, noise=hole) + eps * z
    if not torch.is_tensor(out) or out.shape != x0.shape:
        raise CheckFailed(f"return a batch shaped like x0 {tuple(x0.shape)}")
    if _close(out, ref):
        if not _close(_call(fn, x0, m, hole, z, 0.0, what="with eps = 0"), op(x0, noise=hole)):
            raise CheckFailed("with ε = 0 the source is the degraded image alone: scale z by eps")
        return _ok("paired source X1 = H(X0) + ε·z")
    variants = {
        "the mask is inverted: keep the pixels where mask = 1 (the upper half, observed) and put "
        "noise where mask = 0 (the hole)": (1 - m) * x0 + m * hole + eps * z,
        "the source perturbation ε·z is missing: add it to every pixel": op(x0, noise=hole),
        "ε·z goes on every pixel, not only in the hole: the observed half is perturbed too "
        "(that is what keeps the coupling from being deterministic there)": op(x0, noise=hole)
        + eps * z * (1 - m),
        "ε·z goes on every pixel, not only on the observed half": op(x0, noise=hole) + eps * z * m,
        "fill the hole with the noise ζ (hole_noise), not with zeros: the hole's content is a "
        "latent the model turns into a lower half": m * x0 + eps * z,
        "the hole holds the noise ζ alone, not the target's pixels plus noise: the network must "
        "never see the lower half it has to produce": m * x0 + (1 - m) * (x0 + hole) + eps * z,
        "multiply the noise by ε, not the image: X1 = m·X0 + (1 − m)·ζ + ε·z": eps
        * (m * x0 + (1 - m) * hole)
        + z,
    }
    for why, wrong in variants.items():
        if _close(out, wrong):
            raise CheckFailed(why)
    raise CheckFailed(
        "X1 = mask·x0 + (1 − mask)·hole_noise + eps·z; compare with "
        "Degradation('half')(x0, noise=hole_noise) + eps * z"
    )


def check_euler_regression_question(answer: str) -> bool:
    """Multiple choice (notebook 08): what does one Euler step of the FM ODE from the source
    y (t = 1 → 0) return? Right: (c) the regression E[X0 | X1 = y], since v(y, 1) =
    y − E[X0 | X1 = y]."""
    options = {
        "a": "a sample needs the trajectory: one step follows the velocity at t = 1 only, "
        "which is an average over every X0 paired with y",
        "b": "the velocity at t = 1 is not zero: X1 − X0 is the whole displacement",
        "c": "",
        "d": "y − v(y, 1) = E[X0 | y] does not depend on how the network is preconditioned",
    }
    why = (
        "v(x, t) = E[X1 − X0 | x_t = x]; at t = 1, x_1 = X1 = y, so v(y, 1) = y − E[X0 | y] and "
        "the step y − 1·v(y, 1) lands on E[X0 | y], the minimizer of the squared error: the "
        "regression, blurry where the answers disagree"
    )
    return _explained_choice(answer, options, "c", why, "one Euler step from the source")


def check_sample_vs_mean_answer(value: float) -> bool:
    """Numeric question (notebook 09): how many dB of PSNR does one *exact* posterior sample
    lose to the posterior mean? Right: 10·log10(2) ≈ 3.01 dB (within 0.1): a sample X̃ and
    X0 are independent given y, so E‖X̃ − X0‖² = 2·E‖X0 − E[X0 | y]‖²."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise CheckFailed(f"answer with a number of dB; got {value!r}") from None
    right = 10 * math.log10(2)
    why = (
        "given y, a posterior sample X̃ and the truth X0 are independent draws from the same "
        "p(X0 | y), so E‖X̃ − X0‖² = 2·tr Cov(X0 | y) while the mean's error is tr Cov(X0 | y): "
        "twice the MSE, 10·log10(2) ≈ 3.01 dB less PSNR (the mean of K samples loses "
        "10·log10(1 + 1/K))"
    )
    if abs(v - right) <= 0.1:
        print(f"✓ sample vs mean: {right:.2f} dB — {why}")
        return True
    if abs(v + right) <= 0.1:
        raise CheckFailed(f"the sign: the sample *loses* PSNR to the mean — {why}")
    if abs(v) <= 0.1:
        raise CheckFailed(f"a sample is not as good as the mean in squared error — {why}")
    if abs(v - 6.02) <= 0.1:
        raise CheckFailed(f"6 dB would be four times the MSE; it is twice — {why}")
    raise CheckFailed(f"not {v:g} dB — {why}")
