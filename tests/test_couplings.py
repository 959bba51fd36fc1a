import itertools
import math
import threading
import time

import numpy as np
import ot
import pytest
import torch

from gctm_mini.couplings import (
    couple,
    exact_ot_permutation,
    greedy_assignment,
    pairwise_cost,
    perturb_source,
    sinkhorn_log,
    sinkhorn_pairs,
    squared_distances,
    transport_cost,
)
from gctm_mini.data2d import make_dataset

EPS_SWEEP = [0.05, 0.01, 0.005, 0.001]


def _moons_batches(seeds: int, n: int = 256):
    """``seeds`` moons batches ``(seeds, n, 2)`` with Gaussian sources, and their normalized costs."""
    data = make_dataset("moons")
    x0 = torch.stack([data(n, torch.Generator().manual_seed(s)) for s in range(seeds)])
    x1 = torch.randn(seeds, n, 2, generator=torch.Generator().manual_seed(10_000))
    C = torch.stack([pairwise_cost(a, b) for a, b in zip(x0, x1, strict=True)])
    return x0, x1, C


def _is_permutation(rows: torch.Tensor) -> bool:
    n = rows.shape[-1]
    return bool((rows.sort(-1).values == torch.arange(n)).all())


def _within(seconds: float, fn):
    """Run ``fn()`` in a daemon thread; return what it raised (or None), fail if it hangs."""
    out = {}

    def target():
        try:
            fn()
            out["exc"] = None
        except Exception as exc:  # noqa: BLE001 - the caller inspects it
            out["exc"] = exc

    th = threading.Thread(target=target, daemon=True)
    start = time.perf_counter()
    th.start()
    th.join(seconds)
    assert not th.is_alive(), f"call did not return within {seconds} s"
    assert time.perf_counter() - start < seconds
    return out["exc"]


@pytest.mark.parametrize("seed", range(5))
def test_exact_ot_equals_bruteforce_minimum_over_permutations(seed):
    g = torch.Generator().manual_seed(seed)
    x0, x1 = torch.randn(7, 3, generator=g), torch.randn(7, 3, generator=g)
    C = squared_distances(x0.double(), x1.double())
    best = min(sum(float(C[i, p[i]]) for i in range(7)) for p in itertools.permutations(range(7)))
    perm = exact_ot_permutation(x0, x1)
    assert sorted(perm.tolist()) == list(range(7))
    assert sum(float(C[i, perm[i]]) for i in range(7)) == pytest.approx(best, rel=1e-10)


def test_squared_distances():
    a, b = torch.randn(5, 2, 2), torch.randn(4, 2, 2)
    ref = ((a[:, None] - b[None]) ** 2).flatten(2).sum(-1)
    assert torch.allclose(squared_distances(a, b), ref, atol=1e-5)


@pytest.mark.parametrize("reg", [1.0, 0.1, 0.02])
def test_sinkhorn_matches_pot_sinkhorn_log(reg):
    g = torch.Generator().manual_seed(0)
    x0, x1 = (
        torch.randn(40, 2, generator=g, dtype=torch.float64),
        torch.randn(30, 2, generator=g, dtype=torch.float64),
    )
    C = squared_distances(x0, x1)
    C = C / C.max()
    a, b = np.full(40, 1 / 40), np.full(30, 1 / 30)
    ref = ot.bregman.sinkhorn_log(a, b, C.numpy(), reg, numItermax=20000, stopThr=1e-12)
    ours = sinkhorn_log(C, reg, max_iter=20000, tol=1e-12)
    assert np.allclose(ours.numpy(), ref, atol=1e-8)
    assert torch.allclose(ours.sum(1), torch.full((40,), 1 / 40, dtype=torch.float64), atol=1e-10)


def test_sinkhorn_is_batched_over_leading_dimensions():
    C = torch.rand(3, 8, 8, dtype=torch.float64)
    batched = sinkhorn_log(C, 0.1, max_iter=2000, tol=1e-12)
    for k in range(3):
        assert torch.allclose(batched[k], sinkhorn_log(C[k], 0.1, max_iter=2000, tol=1e-12))


@pytest.mark.parametrize("eps", EPS_SWEEP)
def test_permutation_pairing_is_one_to_one_for_every_eps(eps):
    # 50 moons batches of 256 solved together; both the plan and the log-plan forms
    # (a few Sinkhorn iterations suffice: one-to-one must hold for any plan)
    _, _, C = _moons_batches(50)
    g = torch.Generator().manual_seed(1)
    log_plan = sinkhorn_log(C, eps, max_iter=2, tol=0.0, log=True)
    plan = log_plan.exp()  # float32: the small entries underflow to 0
    for k in range(50):
        assert _is_permutation(sinkhorn_pairs(plan[k], "permutation", generator=g)), k
    rows = sinkhorn_pairs(log_plan, "permutation", generator=g, log=True)
    assert rows.shape == (50, 256) and _is_permutation(rows)


def test_couple_sinkhorn_is_one_to_one_at_small_eps():
    x0, x1, _ = _moons_batches(1)
    for eps in (0.005, 0.001):
        a, b, info = couple(x0[0], x1[0], "sinkhorn", reg=eps)
        assert info.distinct_x0 == 256 and info.distinct_x1 == 256
        assert torch.equal(a.sort(0).values, x0[0].sort(0).values)


@pytest.mark.slow
@pytest.mark.parametrize("eps", EPS_SWEEP)
def test_couple_sinkhorn_is_one_to_one_on_20_moons_batches(eps):
    # couple() end to end at its defaults (100 iterations); 50 batches: the test above
    x0, x1, _ = _moons_batches(20)
    g = torch.Generator().manual_seed(2)
    for k in range(20):
        info = couple(x0[k], x1[k], "sinkhorn", reg=eps, generator=g)[2]
        assert info.distinct_x0 == 256, (k, info)


def test_permutation_pairing_tends_to_exact_ot_as_eps_shrinks():
    g = torch.Generator().manual_seed(0)
    n = 16
    x0, x1 = make_dataset("moons")(n, g).double(), torch.randn(n, 2, generator=g).double()
    C = squared_distances(x0, x1)
    perm = exact_ot_permutation(x0, x1)  # x1[perm[i]] pairs with x0[i]
    ot_cost = float(C[torch.arange(n), perm].mean())
    mean_ratio = []
    for eps in (0.1, 0.01, 0.001):
        log_plan = sinkhorn_log(C / C.mean(), eps, max_iter=5000, tol=1e-7, log=True)
        rows = sinkhorn_pairs(log_plan.expand(20, n, n), "permutation", generator=g, log=True)
        assert _is_permutation(rows)
        ratio = C[rows, torch.arange(n)].mean(-1) / ot_cost  # 20 draws
        assert bool((ratio >= 1 - 1e-12).all())  # exact OT is the minimum
        mean_ratio.append(float(ratio.mean()))
    assert mean_ratio[0] > mean_ratio[1] > mean_ratio[2]
    assert mean_ratio[0] > 1.1 and mean_ratio[2] < 1.005
    assert ot_cost < 0.5 * float(C.diagonal().mean())


def test_greedy_assignment_is_a_permutation_even_with_ties():
    assert sorted(greedy_assignment(torch.zeros(9, 9)).tolist()) == list(range(9))
    s = torch.randn(50, 50)
    assert sorted(greedy_assignment(s).tolist()) == list(range(50))


def test_multinomial_pairing_may_repeat_and_says_so():
    plan = torch.full((16, 16), 1 / 256)
    rows = sinkhorn_pairs(plan, "multinomial", generator=torch.Generator().manual_seed(0))
    assert rows.shape == (16,) and torch.unique(rows).numel() < 16


@pytest.mark.parametrize("coupling", ["independent", "ot", "sinkhorn", "paired"])
def test_couple_uses_every_sample_once(coupling):
    x0, x1 = torch.randn(32, 2), torch.randn(32, 2)
    a, b, info = couple(x0, x1, coupling)
    assert info.distinct_x0 == 32 and info.distinct_x1 == 32
    assert torch.equal(a.sort(0).values, x0.sort(0).values)
    assert torch.equal(b.sort(0).values, x1.sort(0).values)


def test_ot_and_sinkhorn_shorten_the_paths():
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(256, 2, generator=g) + 2, torch.randn(256, 2, generator=g)
    base = transport_cost(x0, x1)
    ot_cost = transport_cost(*couple(x0, x1, "ot")[:2])
    sk_cost = transport_cost(*couple(x0, x1, "sinkhorn", reg=0.01)[:2])
    assert ot_cost < sk_cost < base
    assert sk_cost < 1.1 * ot_cost


def test_coupling_errors_are_clear():
    with pytest.raises(ValueError, match="unknown coupling"):
        couple(torch.randn(4, 2), torch.randn(4, 2), "ot2")
    with pytest.raises(ValueError, match="equal batch"):
        couple(torch.randn(4, 2), torch.randn(5, 2), "ot")
    with pytest.raises(ValueError, match="pairing"):
        sinkhorn_pairs(torch.ones(3, 3), "sorted")
    with pytest.raises(ValueError, match="reg"):
        sinkhorn_log(torch.ones(3, 3), 0.0)
    with pytest.raises(ValueError, match="eps"):
        perturb_source(torch.ones(3, 2), -0.1)


def test_perturbation_has_the_stated_variance():
    x1 = torch.zeros(200_000, 2)
    assert float(perturb_source(x1, 0.05).var()) == pytest.approx(0.05**2, rel=0.02)
    assert perturb_source(x1, 0.0) is x1


def test_greedy_assignment_never_reuses_a_row_when_free_rows_score_minus_inf():
    # the finite-sentinel mask once let a taken row beat a free row at -inf
    s = torch.full((6, 6), -math.inf)
    s[0] = 0.0  # every column prefers row 0; the others are impossible
    assert _is_permutation(greedy_assignment(s))
    assert _is_permutation(greedy_assignment(torch.full((2, 5, 5), -math.inf)))
    plan = torch.zeros(6, 6)
    plan[0] = 1.0  # positive mass in every column, only in row 0
    assert _is_permutation(sinkhorn_pairs(plan, "permutation"))


def test_greedy_assignment_is_batched_and_matches_single_problems():
    s = torch.randn(4, 30, 30)
    batched = greedy_assignment(s)
    for k in range(4):
        assert torch.equal(batched[k], greedy_assignment(s[k]))


def test_couple_is_scale_invariant_and_works_for_huge_inputs():
    x0, x1, _ = _moons_batches(1, 128)
    x0, x1 = x0[0], x1[0]
    small = couple(x0, x1, "sinkhorn", reg=0.01, generator=torch.Generator().manual_seed(0))
    s = 2.0**64  # ≈ 1.8e19: squared distances overflow float32
    big = couple(x0 * s, x1 * s, "sinkhorn", reg=0.01, generator=torch.Generator().manual_seed(0))
    assert torch.equal(big[0], small[0] * s) and big[2].distinct_x0 == 128
    for scale in (1e19, 1e30):
        a, b, info = couple(x0 * scale, x1 * scale, "sinkhorn", reg=0.01)
        assert info.distinct_x0 == 128
        ot_cost = transport_cost(*couple(x0, x1, "ot")[:2])
        assert transport_cost(a / scale, b / scale) < 1.5 * ot_cost
    assert torch.equal(
        exact_ot_permutation(x0.double() * 1e200, x1.double() * 1e200), exact_ot_permutation(x0, x1)
    )


def test_euclidean_absolute_cost_is_the_reference_rule():
    x0, x1 = torch.randn(5, 3), torch.randn(7, 3) + 4
    C = pairwise_cost(x0, x1, "euclidean", normalize=False)
    assert torch.allclose(C, torch.cdist(x0, x1), atol=1e-5)
    assert torch.allclose(
        pairwise_cost(x0, x1, normalize=False), squared_distances(x0, x1), atol=1e-4
    )
    Cn = pairwise_cost(x0, x1)
    assert float(Cn.mean()) == pytest.approx(1.0, rel=1e-6)
    a, b, info = couple(
        x0[:5],
        x1[:5],
        "sinkhorn",
        cost="euclidean",
        normalize_cost=False,
        reg=0.01,
        max_iter=30,
        tol=0.0,
        pairing="multinomial",
    )
    assert info.pairing == "multinomial" and a.shape == (5, 3) and torch.equal(b, x1[:5])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: couple(torch.randn(8, 2), torch.randn(8, 2), "sinkhorn", reg=math.nan), "reg"),
        (lambda: couple(torch.randn(8, 2), torch.randn(8, 2), "sinkhorn", reg=math.inf), "reg"),
        (lambda: couple(torch.randn(8, 2), torch.randn(8, 2), "sinkhorn", reg=-1.0), "reg"),
        (lambda: sinkhorn_log(torch.rand(4, 4), math.nan), "reg"),
        (lambda: sinkhorn_log(torch.rand(4, 4), math.inf), "reg"),
        (lambda: sinkhorn_log(torch.full((4, 4), math.nan), 0.1), "cost contains"),
        (lambda: sinkhorn_log(torch.full((4, 4), math.inf), 0.1), "cost contains"),
        (lambda: sinkhorn_log(torch.full((4, 4), 1e30), 1e-10), "overflows"),
        (lambda: sinkhorn_log(torch.rand(4, 4), 0.1, max_iter=0), "max_iter"),
        (lambda: sinkhorn_log(torch.rand(4, 4), 0.1, a=torch.zeros(4)), "marginal a"),
        (lambda: couple(torch.full((8, 2), math.nan), torch.randn(8, 2), "sinkhorn"), "NaN"),
        (lambda: couple(torch.randn(8, 2), torch.full((8, 2), math.inf), "ot"), "NaN"),
        (
            lambda: couple(
                torch.randn(8, 2) * 1e19, torch.randn(8, 2), "sinkhorn", normalize_cost=False
            ),
            "overflows",
        ),
        (
            lambda: couple(
                torch.randn(8, 2) * 1e30, torch.randn(8, 2), "sinkhorn", normalize_cost=False
            ),
            "overflows",
        ),
        (lambda: couple(torch.randn(8, 2), torch.randn(8, 2), "sinkhorn", cost="l1"), "cost"),
        (lambda: sinkhorn_pairs(torch.zeros(8, 8), "permutation"), "positive mass"),
        (lambda: sinkhorn_pairs(torch.zeros(8, 8), "multinomial"), "positive mass"),
        (lambda: sinkhorn_pairs(torch.full((8, 8), math.nan), "permutation"), "NaN"),
        (lambda: sinkhorn_pairs(-torch.ones(8, 8), "permutation"), "nonnegative"),
        (lambda: sinkhorn_pairs(torch.full((8, 8), math.nan), log=True), "NaN"),
        (lambda: sinkhorn_pairs(torch.full((8, 8), -math.inf), log=True), "positive mass"),
        (lambda: greedy_assignment(torch.full((8, 8), math.nan)), "NaN"),
        (lambda: greedy_assignment(torch.zeros(8, 7)), "square"),
    ],
)
def test_degenerate_sinkhorn_inputs_fail_clearly_in_bounded_time(call, match):
    exc = _within(5.0, call)
    assert isinstance(exc, ValueError), repr(exc)
    assert match in str(exc) and "\n" not in str(exc)
