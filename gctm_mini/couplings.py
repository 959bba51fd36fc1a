r"""Couplings q(X0, X1): which data point X0 travels with which source point X1.

- **independent**: X0 and X1 drawn independently (the batch order is already random).
- **exact minibatch OT**: the permutation σ minimizing :math:`\sum_i \|X_0^{(i)} - X_1^{(\sigma_i)}\|^2`,
  solved exactly with POT's network simplex (``ot.emd``).
- **entropic OT (Sinkhorn)**: the plan :math:`P = \arg\min \langle P, C\rangle - \varepsilon H(P)`
  with uniform marginals, computed in the log domain in torch (batched, GPU-ready);
  pairs are then drawn from :math:`\log P` (see :func:`sinkhorn_pairs` for the two pairing
  rules; the default is one-to-one for every ε). The cost is the squared Euclidean distance
  divided by its batch mean, so ε is relative (:func:`pairwise_cost`; where and why this
  differs from the GCTM reference code: :func:`couple`).
- **paired**: (X0, X1) = (target, source) from a data set of pairs: the identity.
- **perturbation**: :math:`X_1 \leftarrow X_1 + \varepsilon z`, z ~ N(0, I) (add ε² to Var X1).

Every coupling returns ``(x0, x1)`` reordered so that row i of each is one pair.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import ot
import torch
from torch import Tensor

from .validation import check_batch, check_choice, check_count, check_finite, check_real, mul_pow2

COUPLINGS = ("independent", "ot", "sinkhorn", "paired")
PAIRINGS = ("permutation", "multinomial")
COSTS = ("sqeuclidean", "euclidean")


def squared_distances(x0: Tensor, x1: Tensor) -> Tensor:
    r"""Cost matrix :math:`C_{ij} = \|x_0^{(i)} - x_1^{(j)}\|^2` on flattened samples, ``(n, m)``.

    The plain formula, in the inputs' dtype: it overflows (inf) once the squared norms pass
    the dtype's range (|x| ≳ 1e19 in float32). :func:`pairwise_cost` is the safe form that
    :func:`couple` uses.
    """
    a, b = x0.flatten(1), x1.flatten(1)
    return (a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1)[None] - 2 * a @ b.T).clamp_min(0)


def pairwise_cost(
    x0: Tensor, x1: Tensor, cost: str = "sqeuclidean", normalize: bool = True
) -> Tensor:
    r"""Cost matrix ``(n, m)`` between ``x0: (n, *D)`` and ``x1: (m, *D)``, without overflow.

    ``cost="sqeuclidean"``: :math:`C_{ij} = \|x_0^{(i)} - x_1^{(j)}\|^2` (the default, the cost
    of :math:`W_2` and of exact OT); ``cost="euclidean"``: :math:`C_{ij} = \|x_0^{(i)} - x_1^{(j)}\|`
    (the cost of the GCTM reference code). With ``normalize`` the matrix is divided by its
    mean, so that a Sinkhorn ε is relative to the typical cost and means the same for data
    of any scale (an all-zero cost stays zero).

    Both batches are first divided by :math:`s = 2^k \ge \max|x|` (a power of two, exact) and
    shifted by their joint mean: C is translation invariant and :math:`C(x/s) = C(x)/s^p`
    (p = 2 or 1), so the normalized cost is finite for every finite input (1e30 included).
    Without ``normalize`` the absolute cost :math:`s^p\,C(x/s)` is returned, and if it
    overflows the dtype a ``ValueError`` says so. Computed in the inputs' dtype, float32 at
    least.
    """
    check_choice(cost, COSTS, "cost")
    check_batch(x0, name="x0")
    check_batch(x1, tuple(x0.shape[1:]), name="x1")
    dtype = x0.dtype if x0.is_floating_point() else torch.float32
    dtype = torch.promote_types(dtype, torch.float32)
    a, b = x0.flatten(1).to(dtype), x1.to(x0.device).flatten(1).to(dtype)
    big = float(torch.maximum(a.abs().max(), b.abs().max()))
    k = max(math.frexp(big)[1], -100) if big > 0 else 0  # big ≤ 2**k
    a, b = a * 2.0**-k, b * 2.0**-k  # exact: a power of two
    mid = torch.cat([a, b]).mean(0)
    C = squared_distances(a - mid, b - mid)
    p = 2
    if cost == "euclidean":
        C, p = C.sqrt(), 1
    if normalize:
        mean = C.mean()
        return C / mean if float(mean) > 0 else C
    C = mul_pow2(C, p * k)
    if not bool(torch.isfinite(C).all()):
        raise ValueError(
            f"the {cost} cost overflows {dtype} (largest |coordinate| {big:.3g}); "
            "rescale the data or use a normalized cost (normalize_cost=True)"
        )
    return C


def exact_ot_permutation(x0: Tensor, x1: Tensor) -> Tensor:
    r"""Exact minibatch OT for equal batches: ``perm`` with ``x1[perm[i]]`` paired to ``x0[i]``.

    Solves :math:`\min_\sigma \sum_i \|x_0^{(i)} - x_1^{(\sigma_i)}\|^2` with ``ot.emd`` on the
    squared Euclidean cost (in float64, normalized by its mean — the minimizer does not change,
    and any finite input works). For uniform marginals on n points the optimal plan is
    a permutation matrix scaled by 1/n (Birkhoff), which is read off row by row.
    """
    check_batch(x0, name="x0")
    check_batch(x1, tuple(x0.shape[1:]), name="x1")
    n = x0.shape[0]
    if x1.shape[0] != n:
        raise ValueError(
            f"exact OT pairing needs equal batch sizes; got {n} data and {x1.shape[0]} source samples"
        )
    C = pairwise_cost(x0.double(), x1.double()).cpu().numpy()
    w = np.full(n, 1.0 / n)
    plan = ot.emd(w, w, C, numItermax=max(100_000, 50 * n * n))
    perm = torch.from_numpy(plan.argmax(axis=1)).to(x0.device)
    if torch.unique(perm).numel() != n:  # would mean a non-permutation vertex: never silently
        raise RuntimeError("ot.emd returned a plan that is not a permutation")
    return perm


def _check_reg(reg: float) -> float:
    return check_real(reg, "reg (ε)", gt=0.0)


def _check_marginal(w: Tensor | None, shape: tuple[int, ...], like: Tensor, name: str) -> Tensor:
    if w is None:
        return like.new_full(shape, 1.0 / shape[-1])
    w = torch.as_tensor(w, dtype=like.dtype, device=like.device)
    if tuple(w.shape) != shape:
        raise ValueError(f"marginal {name} must have shape {shape}; got {tuple(w.shape)}")
    if not bool((torch.isfinite(w) & (w > 0)).all()):
        raise ValueError(f"marginal {name} must be finite and > 0 everywhere")
    return w


def sinkhorn_log(
    cost: Tensor,
    reg: float,
    a: Tensor | None = None,
    b: Tensor | None = None,
    max_iter: int = 1000,
    tol: float = 1e-9,
    log: bool = False,
) -> Tensor:
    r"""Entropic OT plan by log-domain Sinkhorn, in torch.

    Iterates the dual potentials :math:`f_i = -\varepsilon\,\mathrm{LSE}_j\big((g_j - C_{ij})/\varepsilon
    + \log b_j\big)`, :math:`g_j = -\varepsilon\,\mathrm{LSE}_i\big((f_i - C_{ij})/\varepsilon
    + \log a_i\big)` and returns :math:`P_{ij} = a_i b_j \exp((f_i + g_j - C_{ij})/\varepsilon)`
    (same convention as POT's ``ot.bregman.sinkhorn_log``). The potentials are kept divided
    by ε, so nothing overflows for any finite cost and ε. Stable for small ε.

    Args:
        cost: ``(…, n, m)`` finite; leading dimensions are independent problems solved together.
        reg: ε > 0 (finite), in the units of ``cost``.
        a, b: marginals ``(…, n)`` and ``(…, m)``, positive; uniform if omitted.
        max_iter: iteration cap (≥ 1); ``tol``: stop when the L1 error of the row marginals
            falls below it (checked every 10 iterations; ``tol=0`` runs all ``max_iter``).
        log: return :math:`\log P` instead of P. For small ε most entries of P underflow to 0
            (in float32 already below :math:`e^{-104}`); :math:`\log P` keeps their order, which
            is what a pairing drawn from the plan needs (:func:`sinkhorn_pairs` with ``log=True``).

    Returns:
        the plan (or its logarithm), same shape as ``cost``.
    """
    r = _check_reg(reg)
    if not torch.is_tensor(cost) or cost.dim() < 2 or 0 in cost.shape[-2:]:
        shape = tuple(cost.shape) if torch.is_tensor(cost) else type(cost).__name__
        raise ValueError(f"cost must be a tensor of shape (…, n, m) with n, m ≥ 1; got {shape}")
    check_finite(cost, "cost")
    if not cost.is_floating_point():
        cost = cost.float()
    max_iter = check_count(max_iter, "max_iter")
    tol = check_real(tol, "tol", ge=0.0)
    n, m = cost.shape[-2:]
    a = _check_marginal(a, tuple(cost.shape[:-1]), cost, "a")
    b = _check_marginal(b, (*cost.shape[:-2], m), cost, "b")
    K = -cost / r
    if not bool(torch.isfinite(K).all()):
        raise ValueError(
            f"cost / reg overflows {cost.dtype} (largest cost {float(cost.abs().max()):.3g}, "
            f"reg {r:.3g}); normalize the cost or raise reg"
        )
    log_a, log_b = a.log(), b.log()
    u = torch.zeros_like(log_a)  # f / ε
    v = torch.zeros_like(log_b)  # g / ε
    for it in range(max_iter):
        u = -torch.logsumexp(K + (v + log_b).unsqueeze(-2), dim=-1)
        v = -torch.logsumexp(K + (u + log_a).unsqueeze(-1), dim=-2)
        if it % 10 == 9 or it == max_iter - 1:
            log_p = K + (u + log_a).unsqueeze(-1) + (v + log_b).unsqueeze(-2)
            err = (log_p.exp().sum(-1) - a).abs().sum(-1).max()
            if float(err) < tol:
                break
    log_p = K + (u + log_a).unsqueeze(-1) + (v + log_b).unsqueeze(-2)
    if not bool(torch.isfinite(log_p).all()):  # cannot happen for finite K; never silently
        raise RuntimeError("Sinkhorn produced a non-finite plan")
    return log_p if log else log_p.exp()


def sinkhorn_pairs(
    plan: Tensor,
    pairing: str = "permutation",
    generator: torch.Generator | None = None,
    *,
    log: bool = False,
) -> Tensor:
    r"""Draw, for every source sample j (a column of ``plan``), a data index ``idx[j]``.

    Two documented rules:

    - ``"permutation"`` (default, square plans): a random permutation that follows the plan
      — Gumbel noise is added to :math:`\log P` and the perturbed scores are rounded greedily
      to a one-to-one assignment (:func:`greedy_assignment`). No sample is repeated or
      dropped, for every ε, and entries with P = 0 are used only when the one-to-one
      constraint leaves nothing else. As ε → 0 the plan concentrates on the exact OT
      permutation and so does the pairing.
    - ``"multinomial"``: each column draws a row from its own column of P, independently,
      *with replacement* (the GCTM reference rule): some data samples repeat and others are
      dropped. Expected distinct rows :math:`\sum_i \big(1 - \prod_j (1 - P_{ij}/\sum_k P_{kj})\big)`:
      about :math:`(1 - 1/e)\,n \approx 0.63\,n` while each column spreads over many rows, and
      n only once every column puts nearly all its mass on one row (ε far below the cost gap
      between neighbouring data points). Use only when that is intended.

    Args:
        plan: ``(…, n, m)`` nonnegative and finite, or with ``log=True`` its logarithm
            (``-inf`` = zero mass, no NaN or +inf), e.g. ``sinkhorn_log(C, ε, log=True)``.
            Leading dimensions are independent problems. Columns need not be normalized, but
            each needs positive mass.
        pairing: ``"permutation"`` or ``"multinomial"``.
        generator: the random generator (on the plan's device); torch's global one if omitted.

    Returns:
        ``(…, m)`` long tensor of row indices.
    """
    check_choice(pairing, PAIRINGS, "pairing")
    what = "log_plan" if log else "plan"
    if not torch.is_tensor(plan) or plan.dim() < 2 or 0 in plan.shape[-2:]:
        shape = tuple(plan.shape) if torch.is_tensor(plan) else type(plan).__name__
        raise ValueError(f"{what} must be a tensor of shape (…, n, m) with n, m ≥ 1; got {shape}")
    if plan.is_complex():
        raise TypeError(f"{what} must be real; got dtype {plan.dtype}")
    if not plan.is_floating_point():
        plan = plan.double()
    if log:
        if bool(torch.isnan(plan).any()) or bool((plan == math.inf).any()):
            raise ValueError(
                "log_plan must not contain NaN or +inf (a plan's log is finite or -inf)"
            )
        log_p = plan
    else:
        check_finite(plan, "plan")
        if bool((plan < 0).any()):
            raise ValueError(f"plan must be nonnegative; got a minimum of {float(plan.min()):.3g}")
        log_p = plan.log()
    if bool((log_p.amax(-2) == -math.inf).any()):
        raise ValueError(
            f"every column of the {what} needs positive mass; "
            f"{int((log_p.amax(-2) == -math.inf).sum())} column(s) are all zero"
        )
    n, m = log_p.shape[-2:]
    if pairing == "multinomial":
        probs = torch.softmax(log_p, dim=-2).transpose(-1, -2).reshape(-1, n)
        rows = torch.multinomial(probs, 1, generator=generator)
        return rows.reshape(*log_p.shape[:-2], m)
    if n != m:
        raise ValueError(f"permutation pairing needs a square plan; got {n}×{m}")
    u = torch.rand(log_p.shape, generator=generator, device=log_p.device, dtype=log_p.dtype)
    gumbel = -torch.log(-torch.log(u.clamp(1e-20, 1 - 1e-12)))
    return greedy_assignment(log_p + gumbel)


def greedy_assignment(score: Tensor) -> Tensor:
    """Round a square score matrix ``(…, n, n)`` to a one-to-one assignment, column → row.

    Vectorized rounds: every unassigned column proposes the free row with its highest
    score (taken rows are excluded by a boolean mask, never by a sentinel score, so a taken
    row cannot beat a free one); every proposed row accepts the proposal with the highest
    score (ties: the lowest column). Columns whose free rows all score ``-inf`` wait; once
    only such columns are left, they take the free rows in index order (any order is as
    good). Every proposal goes to a free row, so each round assigns at least one pair per
    unfinished problem and the loop ends after at most n rounds (a handful in practice);
    if a round ever assigned nothing, a ``RuntimeError`` would say so instead of looping.

    Args:
        score: ``(…, n, n)``, no NaN (``±inf`` allowed); leading dimensions are independent.

    Returns:
        ``rows: (…, n)`` long, ``rows[…, j]`` the row matched to column j (a permutation).
    """
    if not torch.is_tensor(score) or score.dim() < 2 or score.shape[-1] != score.shape[-2]:
        shape = tuple(score.shape) if torch.is_tensor(score) else type(score).__name__
        raise ValueError(f"score must be a square matrix (…, n, n); got {shape}")
    if score.is_complex():
        raise TypeError(f"score must be real; got dtype {score.dtype}")
    if not score.is_floating_point():
        score = score.double()
    if bool(torch.isnan(score).any()):
        raise ValueError(f"score contains {int(torch.isnan(score).sum())} NaN value(s)")
    lead, n = score.shape[:-2], score.shape[-1]
    s = score.reshape(-1, n, n)
    P, dev = s.shape[0], s.device
    rows = torch.full((P, n), -1, dtype=torch.long, device=dev)
    row_free = torch.ones(P, n, dtype=torch.bool, device=dev)
    col = torch.arange(n, device=dev).expand(P, n)
    prob = torch.arange(P, device=dev)[:, None].expand(P, n)
    for _ in range(n):
        open_col = rows < 0
        if not bool(open_col.any()):
            break
        masked = s.masked_fill(~row_free[:, :, None], -math.inf)
        best_val, best_row = masked.max(dim=1)  # (P, n): per column, best free row
        stuck = open_col & (best_val == -math.inf)  # argmax may name a taken row: never use
        only_stuck = (open_col & ~stuck).sum(1) == 0
        if bool(only_stuck.any()):  # finish these problems: free rows to columns, in order
            done = only_stuck[:, None] & open_col
            rank = open_col.long().cumsum(1) - 1
            free_rows = torch.argsort((~row_free).to(torch.uint8), dim=1, stable=True)
            rows = torch.where(done, free_rows.gather(1, rank.clamp_min(0)), rows)
            row_free &= ~only_stuck[:, None]
            open_col = open_col & ~done
        propose = open_col & ~stuck
        pr, pc, prow, pval = prob[propose], col[propose], best_row[propose], best_val[propose]
        key = pr * n + prow  # proposals to (problem, row)
        top = torch.full((P * n,), -math.inf, dtype=s.dtype, device=dev)
        top = top.scatter_reduce(0, key, pval, reduce="amax")
        ok = pval >= top[key]
        first = torch.full((P * n,), n, dtype=torch.long, device=dev)
        first = first.scatter_reduce(0, key[ok], pc[ok], reduce="amin")
        keep = ok & (first[key] == pc)
        if pr.numel() and not bool(keep.any()):
            raise RuntimeError("greedy assignment made no progress (this is a bug)")
        rows[pr[keep], pc[keep]] = prow[keep]
        row_free[pr[keep], prow[keep]] = False
    if bool((rows < 0).any()):
        raise RuntimeError(f"greedy assignment left columns unassigned after {n} rounds")
    return rows.reshape(*lead, n)


@dataclass
class CouplingInfo:
    """What a coupling did to a batch: the rule used and how many distinct samples it paired."""

    coupling: str
    pairing: str
    distinct_x0: int
    distinct_x1: int


def couple(
    x0: Tensor,
    x1: Tensor,
    coupling: str = "independent",
    *,
    reg: float = 0.05,
    pairing: str = "permutation",
    normalize_cost: bool = True,
    cost: str = "sqeuclidean",
    max_iter: int = 100,
    tol: float = 1e-3,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, CouplingInfo]:
    r"""Pair a data batch ``x0: (B, *D)`` with a source batch ``x1: (B, *D)``.

    Args:
        coupling: ``"independent"``, ``"ot"`` (exact), ``"sinkhorn"`` (entropic) or
            ``"paired"`` (rows are already pairs).
        reg: Sinkhorn ε, finite and > 0; relative to the cost scale when ``normalize_cost``
            (the cost is divided by its batch mean), absolute otherwise.
        pairing: Sinkhorn pair rule, see :func:`sinkhorn_pairs`.
        normalize_cost, cost: see :func:`pairwise_cost` (``"sqeuclidean"`` or ``"euclidean"``).
        max_iter, tol: Sinkhorn stops when the L1 error of the row marginals is below
            ``tol`` (checked every 10 iterations) or after ``max_iter`` iterations. Small ε
            needs more iterations (of the order of 1/ε): on a moons batch of 256 with the
            default 100, the pairing at ε = 0.001 is 1.7× the exact-OT cost (1.04× with
            1000 iterations), farther than at ε = 0.01 (1.09×).
        generator: random generator for the Sinkhorn pairing (global RNG if omitted).

    Returns:
        ``(x0_paired, x1_paired, info)``: row i of both is one pair. With the default rules
        every sample of both batches is used exactly once.

    Differences from the GCTM reference code (its ``OTCoupling``): there the cost is the
    *Euclidean* distance :math:`\|X_1 - X_0\|` in absolute units, ε = 0.01 absolute, a fixed
    30 Sinkhorn iterations, and every X1 draws its X0 from its row of the plan *with
    replacement*. Here, by default, the cost is the *squared* Euclidean distance divided by
    its batch mean, ε is relative to it, Sinkhorn runs to a marginal tolerance, and the
    pairing is one-to-one. Reasons: the squared cost is the one whose minibatch OT gives the
    straight, non-crossing paths of OT flow matching (and it is the cost of ``"ot"`` and of
    :math:`W_2`); a relative ε means the same on 2-D toys and on images of any scale; and
    drawing with replacement repeats and drops about a third of each batch over the whole
    useful range of ε (measured in notebook 02), shrinking the effective batch. The
    reference's rule is ``couple(x0, x1, "sinkhorn", cost="euclidean", normalize_cost=False,
    reg=0.01, max_iter=30, tol=0, pairing="multinomial")``.
    """
    check_choice(coupling, COUPLINGS, "coupling")
    if not isinstance(normalize_cost, bool):
        raise TypeError(f"normalize_cost must be True or False; got {normalize_cost!r}")
    check_batch(x0, name="x0")
    check_batch(x1, tuple(x0.shape[1:]), name="x1")
    if x0.shape[0] != x1.shape[0]:
        raise ValueError(f"x0 and x1 need equal batch sizes; got {x0.shape[0]} and {x1.shape[0]}")
    B = x0.shape[0]
    if coupling in ("independent", "paired"):
        return x0, x1, CouplingInfo(coupling, "identity", B, B)
    if coupling == "ot":
        perm = exact_ot_permutation(x0, x1)
        return x0, x1[perm], CouplingInfo(coupling, "permutation", B, B)
    check_choice(pairing, PAIRINGS, "pairing")
    r = _check_reg(reg)
    C = pairwise_cost(x0, x1, cost, normalize_cost)
    log_plan = sinkhorn_log(C, r, max_iter=max_iter, tol=tol, log=True)
    rows = sinkhorn_pairs(log_plan, pairing, generator, log=True).to(x0.device)
    distinct = int(torch.unique(rows).numel())
    if pairing == "permutation" and distinct != B:  # never silently
        raise RuntimeError(f"permutation pairing used {distinct} of {B} data samples")
    return x0[rows], x1, CouplingInfo(coupling, pairing, distinct, B)


def perturb_source(x1: Tensor, eps: float) -> Tensor:
    r""":math:`X_1 + \varepsilon z`, z ~ N(0, I): the Gaussian perturbation of the source.

    Remember to add ε² to the source variance in the preconditioning
    (:class:`gctm_mini.parameterization.CouplingMoments`).
    """
    eps = check_real(eps, "eps", ge=0.0)
    check_batch(x1, name="x1")
    if not x1.is_floating_point():
        raise TypeError(f"x1 must be a floating-point tensor; got dtype {x1.dtype}")
    if eps == 0:
        return x1
    out = x1 + eps * torch.randn_like(x1)
    if not bool(torch.isfinite(out).all()):
        raise ValueError(f"x1 + eps·z overflows {x1.dtype} (eps = {eps:g})")
    return out


def transport_cost(x0: Tensor, x1: Tensor) -> float:
    r"""Mean squared pair distance :math:`\frac1B\sum_i \|x_0^{(i)} - x_1^{(i)}\|^2` of a coupled batch."""
    check_batch(x0, name="x0")
    check_batch(x1, tuple(x0.shape[1:]), name="x1")
    if x0.shape[0] != x1.shape[0]:
        raise ValueError(f"x0 and x1 need equal batch sizes; got {x0.shape[0]} and {x1.shape[0]}")
    return float((x0 - x1).flatten(1).pow(2).sum(1).mean())
