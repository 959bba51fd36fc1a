"""Notebook 02's literate cells are the package's couplings: exact minibatch OT, log-domain
Sinkhorn, the one-to-one pairing drawn from the plan, and the training loop with a pluggable
pairing (with the package's coupling it is ``train2d``, bit for bit)."""

import pytest
import torch

import gctm_mini as gm
from gctm_mini import couplings
from gctm_mini.training import Toy2DConfig, train2d
from tests.literate import defined_functions, literate_namespace

COMPARED = {
    "exact_ot_pairing",
    "sinkhorn_log",
    "greedy_assignment",
    "sinkhorn_pairs",
    "sinkhorn_coupling",
    "train_fm",
}


@pytest.fixture(scope="module")
def nb():
    return literate_namespace("02")


def _batch(seed: int, n: int = 96):
    g = torch.Generator().manual_seed(seed)
    return gm.make_dataset("moons")(n, g), torch.randn(n, 2, generator=g)


def test_every_literate_function_is_compared():
    assert set(defined_functions("02")) == COMPARED


@pytest.mark.parametrize("seed", range(4))
def test_exact_ot_pairing_equals_package(nb, seed):
    x0, x1 = _batch(seed)
    assert torch.equal(nb["exact_ot_pairing"](x0, x1), couplings.exact_ot_permutation(x0, x1))


@pytest.mark.parametrize("eps", [0.003, 0.05, 1.0])
@pytest.mark.parametrize("max_iter, tol", [(100, 1e-3), (37, 0.0)])
def test_sinkhorn_log_equals_package(nb, eps, max_iter, tol):
    x0, x1 = _batch(1, 80)
    C = couplings.pairwise_cost(x0, x1[:64])  # a rectangular plan too
    mine = nb["sinkhorn_log"](C, eps, max_iter, tol)
    assert torch.equal(mine, couplings.sinkhorn_log(C, eps, max_iter=max_iter, tol=tol, log=True))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ties", [False, True])
def test_greedy_assignment_equals_package(nb, seed, ties):
    """The same assignment, also where several columns propose one row with equal scores."""
    g = torch.Generator().manual_seed(seed)
    score = (
        torch.randint(0, 3, (70, 70), generator=g).float()
        if ties
        else torch.randn(70, 70, generator=g)
    )
    rows = nb["greedy_assignment"](score)
    assert torch.equal(rows, couplings.greedy_assignment(score))
    assert sorted(rows.tolist()) == list(range(70))


@pytest.mark.parametrize("eps", [0.001, 0.05, 3.0])
def test_sinkhorn_pairs_and_coupling_equal_package(nb, eps):
    x0, x1 = _batch(2)
    log_p = couplings.sinkhorn_log(couplings.pairwise_cost(x0, x1), eps, log=True)
    mine = nb["sinkhorn_pairs"](log_p, torch.Generator().manual_seed(5))
    theirs = couplings.sinkhorn_pairs(log_p, generator=torch.Generator().manual_seed(5), log=True)
    assert torch.equal(mine, theirs)
    a0, a1 = nb["sinkhorn_coupling"](x0, x1, eps, generator=torch.Generator().manual_seed(6))
    b0, b1, _ = gm.couple(x0, x1, "sinkhorn", reg=eps, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a0, b0) and torch.equal(a1, b1)


@pytest.mark.parametrize("coupling", ["independent", "ot", "sinkhorn"])
def test_training_loop_with_package_coupling_is_train2d(nb, coupling):
    pair = {
        "independent": lambda a, b: (a, b),
        "ot": lambda a, b: (a, b[nb["exact_ot_pairing"](a, b)]),
        "sinkhorn": nb["sinkhorn_coupling"],
    }[coupling]
    cfg = Toy2DConfig(data="moons", coupling=coupling, steps=15, hidden=32, depth=2, seed=4)
    ema = nb["train_fm"](cfg, pair)
    run = train2d(cfg, progress=False)
    for a, b in zip(ema.state_dict().values(), run.ema.state_dict().values(), strict=True):
        assert torch.equal(a, b)
