r"""Couplings q(X0, X1): which data point X0 travels with which source point X1.

- **independent**: X0 and X1 drawn independently (the batch order is already random).
- **exact minibatch OT**: the permutation σ minimizing :math:`\sum_i \|X_0^{(i)} - X_1^{(\sigma_i)}\|^2`,
  solved exactly with POT's network simplex (``ot.emd``).
- **entropic OT (Sinkhorn)**: the plan :math:`P = \arg\min \langle P, C\rangle - \varepsilon H(P)`
  with uniform marginals, computed in the log domain in torch (batched, GPU-ready);
  pairs are then drawn from P (see :func:`sinkhorn_pairs` for the two pairing rules).
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

from .validation import check_batch, check_choice

COUPLINGS = ("independent", "ot", "sinkhorn", "paired")
PAIRINGS = ("permutation", "multinomial")


def squared_distances(x0: Tensor, x1: Tensor) -> Tensor:
    r"""Cost matrix :math:`C_{ij} = \|x_0^{(i)} - x_1^{(j)}\|^2` on flattened samples, ``(n, m)``."""
    a, b = x0.flatten(1), x1.flatten(1)
    return (a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1)[None] - 2 * a @ b.T).clamp_min(0)


def exact_ot_permutation(x0: Tensor, x1: Tensor) -> Tensor:
    r"""Exact minibatch OT for equal batches: ``perm`` with ``x1[perm[i]]`` paired to ``x0[i]``.

    Solves :math:`\min_\sigma \sum_i \|x_0^{(i)} - x_1^{(\sigma_i)}\|^2` with ``ot.emd`` on the
    squared Euclidean cost (in float64). For uniform marginals on n points the optimal plan is
    a permutation matrix scaled by 1/n (Birkhoff), which is read off row by row.
    """
    check_batch(x0, name="x0")
    check_batch(x1, tuple(x0.shape[1:]), name="x1")
    n = x0.shape[0]
    if x1.shape[0] != n:
        raise ValueError(
            f"exact OT pairing needs equal batch sizes; got {n} data and {x1.shape[0]} source samples"
        )
    C = squared_distances(x0.double(), x1.double()).cpu().numpy()
    w = np.full(n, 1.0 / n)
    plan = ot.emd(w, w, C, numItermax=max(100_000, 50 * n * n))
    perm = torch.from_numpy(plan.argmax(axis=1)).to(x0.device)
    if torch.unique(perm).numel() != n:  # would mean a non-permutation vertex: never silently
        raise RuntimeError("ot.emd returned a plan that is not a permutation")
    return perm


def sinkhorn_log(
    cost: Tensor,
    reg: float,
    a: Tensor | None = None,
    b: Tensor | None = None,
    max_iter: int = 1000,
    tol: float = 1e-9,
) -> Tensor:
    r"""Entropic OT plan by log-domain Sinkhorn, in torch.

    Iterates the dual potentials :math:`f_i = -\varepsilon\,\mathrm{LSE}_j\big((g_j - C_{ij})/\varepsilon
    + \log b_j\big)`, :math:`g_j = -\varepsilon\,\mathrm{LSE}_i\big((f_i - C_{ij})/\varepsilon
    + \log a_i\big)` and returns :math:`P_{ij} = a_i b_j \exp((f_i + g_j - C_{ij})/\varepsilon)`
    (same convention as POT's ``ot.bregman.sinkhorn_log``). Stable for small ε.

    Args:
        cost: ``(…, n, m)``; leading dimensions are independent problems solved together.
        reg: ε > 0, in the units of ``cost``.
        a, b: marginals ``(…, n)`` and ``(…, m)``; uniform if omitted.
        max_iter: iteration cap; ``tol``: stop when the row-marginal error falls below it.

    Returns:
        the plan, same shape as ``cost``.
    """
    if reg <= 0:
        raise ValueError(f"reg (ε) must be > 0; got {reg}")
    if cost.dim() < 2:
        raise ValueError(f"cost must have shape (…, n, m); got {tuple(cost.shape)}")
    n, m = cost.shape[-2:]
    if a is None:
        a = cost.new_full(cost.shape[:-1], 1.0 / n)
    if b is None:
        b = cost.new_full((*cost.shape[:-2], m), 1.0 / m)
    log_a, log_b = a.log(), b.log()
    f = torch.zeros_like(log_a)
    g = torch.zeros_like(log_b)
    K = -cost / reg
    for it in range(max_iter):
        f = -reg * torch.logsumexp(K + (g / reg + log_b).unsqueeze(-2), dim=-1)
        g = -reg * torch.logsumexp(K + (f / reg + log_a).unsqueeze(-1), dim=-2)
        if it % 10 == 9 or it == max_iter - 1:
            log_p = K + (f / reg + log_a).unsqueeze(-1) + (g / reg + log_b).unsqueeze(-2)
            err = (log_p.exp().sum(-1) - a).abs().sum(-1).max()
            if float(err) < tol:
                break
    return (K + (f / reg + log_a).unsqueeze(-1) + (g / reg + log_b).unsqueeze(-2)).exp()


def sinkhorn_pairs(plan: Tensor, pairing: str = "permutation", generator=None) -> Tensor:
    """Draw, for every source sample j (a column of ``plan``), a data index ``idx[j]``.

    Two documented rules:

    - ``"permutation"`` (default, square plans): a random permutation that follows the plan
      — Gumbel noise is added to ``log P`` and the perturbed scores are rounded greedily to
      a one-to-one assignment (each round, every unassigned column proposes its best free row
      and each row accepts its best proposal). No sample is repeated or dropped. As ε → 0
      this returns the exact OT permutation.
    - ``"multinomial"``: the reference rule — each column draws a row from its own column of
      P, independently, *with replacement*: some data samples repeat and others are dropped.
      Use only when that is intended.

    Args:
        plan: ``(n, m)`` nonnegative, columns need not be normalized.

    Returns:
        ``(m,)`` long tensor of row indices.
    """
    check_choice(pairing, PAIRINGS, "pairing")
    n, m = plan.shape
    if pairing == "multinomial":
        probs = (plan / plan.sum(0, keepdim=True)).T
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)
    if n != m:
        raise ValueError(f"permutation pairing needs a square plan; got {n}×{m}")
    u = torch.rand(plan.shape, generator=generator, device=plan.device, dtype=plan.dtype)
    gumbel = -torch.log(-torch.log(u.clamp(1e-20, 1 - 1e-12)))
    score = torch.log(plan.clamp_min(1e-300)) + gumbel
    return greedy_assignment(score)


def greedy_assignment(score: Tensor) -> Tensor:
    """Round a square score matrix ``(n, n)`` to a one-to-one assignment, column → row.

    Vectorized rounds: every unassigned column proposes the free row with its highest score;
    every proposed row accepts the proposal with the highest score; repeat. Each round
    assigns at least one pair, so the loop ends after at most n rounds (a handful in
    practice). Returns ``rows: (n,)`` with ``rows[j]`` the row matched to column j.
    """
    n = score.shape[0]
    rows = torch.full((n,), -1, dtype=torch.long, device=score.device)
    row_free = torch.ones(n, dtype=torch.bool, device=score.device)
    neg = torch.finfo(score.dtype).min
    while bool((rows < 0).any()):
        open_cols = torch.nonzero(rows < 0).squeeze(1)
        s = score[:, open_cols].masked_fill(~row_free[:, None], neg)
        best_val, best_row = s.max(0)
        # each row accepts the proposing column with the largest score
        winner = torch.full((n,), neg, dtype=score.dtype, device=score.device)
        winner = winner.scatter_reduce(0, best_row, best_val, reduce="amax")
        accepted = best_val >= winner[best_row]
        # ties: keep the first column proposing to each row
        cand = open_cols[accepted]
        r = best_row[accepted]
        first = torch.full((n,), n, dtype=torch.long, device=score.device)
        first = first.scatter_reduce(0, r, cand, reduce="amin")
        keep = first[r] == cand
        rows[cand[keep]] = r[keep]
        row_free[r[keep]] = False
    return rows


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
    max_iter: int = 100,
    tol: float = 1e-3,
) -> tuple[Tensor, Tensor, CouplingInfo]:
    """Pair a data batch ``x0: (B, *D)`` with a source batch ``x1: (B, *D)``.

    Args:
        coupling: ``"independent"``, ``"ot"`` (exact), ``"sinkhorn"`` (entropic) or
            ``"paired"`` (rows are already pairs).
        reg: Sinkhorn ε, relative to the cost scale (the cost is divided by its mean when
            ``normalize_cost``; squared Euclidean).
        pairing: Sinkhorn pair rule, see :func:`sinkhorn_pairs`.
        max_iter, tol: Sinkhorn stops when the L1 error of the row marginals is below
            ``tol`` (checked every 10 iterations) or after ``max_iter`` iterations (the GCTM
            reference code runs a fixed 30).

    Returns:
        ``(x0_paired, x1_paired, info)``: row i of both is one pair. With the default rules
        every sample of both batches is used exactly once.
    """
    check_choice(coupling, COUPLINGS, "coupling")
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
    C = squared_distances(x0.float(), x1.float())
    if normalize_cost:
        C = C / C.mean().clamp_min(1e-12)
    plan = sinkhorn_log(C, reg, max_iter=max_iter, tol=tol)
    rows = sinkhorn_pairs(plan, pairing)
    return x0[rows], x1, CouplingInfo(coupling, pairing, int(torch.unique(rows).numel()), B)


def perturb_source(x1: Tensor, eps: float) -> Tensor:
    r""":math:`X_1 + \varepsilon z`, z ~ N(0, I): the Gaussian perturbation of the source.

    Remember to add ε² to the source variance in the preconditioning
    (:class:`gctm_mini.parameterization.CouplingMoments`).
    """
    if eps < 0 or not math.isfinite(eps):
        raise ValueError(f"eps must be a finite number ≥ 0; got {eps}")
    return x1 if eps == 0 else x1 + eps * torch.randn_like(x1)


def transport_cost(x0: Tensor, x1: Tensor) -> float:
    r"""Mean squared pair distance :math:`\frac1B\sum_i \|x_0^{(i)} - x_1^{(i)}\|^2` of a coupled batch."""
    return float((x0 - x1).flatten(1).pow(2).sum(1).mean())
