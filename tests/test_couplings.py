import itertools

import numpy as np
import ot
import pytest
import torch

from gctm_mini.couplings import (
    couple,
    exact_ot_permutation,
    greedy_assignment,
    perturb_source,
    sinkhorn_log,
    sinkhorn_pairs,
    squared_distances,
    transport_cost,
)


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


def test_permutation_pairing_is_one_to_one_and_tends_to_exact_ot():
    g = torch.Generator().manual_seed(3)
    x0, x1 = torch.randn(64, 2, generator=g), torch.randn(64, 2, generator=g)
    C = squared_distances(x0.double(), x1.double())
    plan = sinkhorn_log(C / C.mean(), 1e-3, max_iter=5000, tol=1e-10)
    rows = sinkhorn_pairs(plan, "permutation", generator=g)
    assert sorted(rows.tolist()) == list(range(64))  # nothing repeated, nothing dropped
    # ε → 0: the entropic plan concentrates on the exact OT permutation
    perm = exact_ot_permutation(x0, x1)  # x1[perm[i]] pairs with x0[i]
    ot_cost = float(C[torch.arange(64), perm].mean())
    indep_cost = float(C.diagonal().mean())
    assert float(C[rows, torch.arange(64)].mean()) == pytest.approx(ot_cost, rel=0.05)
    assert ot_cost < 0.5 * indep_cost


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
