"""Wall-clock measurements shared by the benchmarks and the notebooks (never used by tests)."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import ot
import torch

from .couplings import couple, squared_distances, transport_cost


def time_call(fn: Callable[[], object], repeat: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeat`` runs (after ``warmup`` runs)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def coupling_costs(
    batch_sizes: Sequence[int],
    data: Callable[..., torch.Tensor],
    reg: float = 0.05,
    repeat: int = 3,
    seed: int = 0,
) -> list[dict]:
    """Time per batch and mean squared pair distance of each coupling at each batch size.

    Rows: ``{"batch", "coupling", "seconds", "cost"}`` for independent, exact OT (POT
    ``ot.emd``), Sinkhorn in torch (this package) and Sinkhorn in POT
    (``ot.bregman.sinkhorn_log``), both at most 100 iterations with marginal tolerance 1e-3 — all measured side by side in the same process.
    """
    rows = []
    for B in batch_sizes:
        g = torch.Generator().manual_seed(seed + B)
        x0, x1 = data(B, g), torch.randn(B, 2, generator=g)
        for name in ("independent", "ot", "sinkhorn"):
            sec = time_call(lambda n=name, a=x0, b=x1: couple(a, b, n, reg=reg), repeat)
            cost = transport_cost(*couple(x0, x1, name, reg=reg)[:2])
            rows.append({"batch": B, "coupling": name, "seconds": sec, "cost": cost})

        sec = time_call(lambda a=x0, b=x1: _pot_sinkhorn(a, b, reg), repeat)
        rows.append({"batch": B, "coupling": "sinkhorn_pot", "seconds": sec, "cost": float("nan")})
    return rows


def _pot_sinkhorn(x0: torch.Tensor, x1: torch.Tensor, reg: float):
    """POT's log-domain Sinkhorn on the same normalized cost, iteration cap and tolerance as ours."""
    C = squared_distances(x0.double(), x1.double())
    C = (C / C.mean()).numpy()
    w = np.full(len(C), 1 / len(C))
    with warnings.catch_warnings():  # "did not converge" is expected at a fixed iteration budget
        warnings.simplefilter("ignore")
        return ot.bregman.sinkhorn_log(w, w, C, reg, numItermax=100, stopThr=1e-3)
