r"""Samplers that turn source points X1 (t = 1) into data X0 (t = 0).

- :func:`sample_ode`: the learned probability-flow ODE :math:`dx/dt = v_\theta(x, t)` with
  Euler or Heun on a uniform grid from 1 to 0 at a given NFE budget.
- :func:`sample_multistep`: deterministic flow-map jumps :math:`x \leftarrow G_\theta(x, t_i, t_{i+1})`
  on a time list (one jump :math:`G_\theta(X_1, 1, 0)` for NFE = 1).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .parameterization import FlowMapModel
from .solvers import integrate, steps_for_nfe
from .timegrid import uniform_grid
from .validation import check_batch, check_choice

SAMPLERS = ("euler", "heun", "flowmap")


@torch.no_grad()
def sample_ode(
    model: FlowMapModel, x1: Tensor, nfe: int, method: str = "euler", return_path: bool = False
):
    """Integrate the learned velocity from t = 1 to 0 using at most ``nfe`` evaluations.

    Euler uses ``nfe`` uniform steps; Heun uses ``(nfe + 1) // 2`` steps (the last, landing on
    0, is an Euler step), so its true cost is ``2·steps − 1`` ≤ ``nfe``.
    """
    check_batch(x1, model.data_shape, "x1")
    times = uniform_grid(steps_for_nfe(nfe, method), dtype=x1.dtype).to(x1.device)
    return integrate(model._velocity, x1, times, method, return_path=return_path)


@torch.no_grad()
def sample_multistep(model: FlowMapModel, x1: Tensor, times: Tensor | list[float] | int) -> Tensor:
    """Jump along ``times`` (descending, from 1 to 0) with the learned flow map.

    ``times`` may be an int K: K equal jumps (NFE = K).
    """
    check_batch(x1, model.data_shape, "x1")
    if isinstance(times, int):
        times = uniform_grid(times)
    times = torch.as_tensor(times, dtype=x1.dtype, device=x1.device)
    if times.dim() != 1 or times.shape[0] < 2 or bool((times[1:] >= times[:-1]).any()):
        raise ValueError("times must be a strictly descending list of at least two times")
    x = x1
    for k in range(times.shape[0] - 1):
        x = model.G(x, times[k], times[k + 1])
    return x


def make_sampler(model: FlowMapModel, kind: str):
    """``sampler(x1, nfe) -> x0`` for ``kind`` in :data:`SAMPLERS` (for :func:`~gctm_mini.metrics.quality_by_nfe`)."""
    check_choice(kind, SAMPLERS, "sampler")
    if kind == "flowmap":
        return lambda x1, nfe: sample_multistep(model, x1, nfe)
    return lambda x1, nfe: sample_ode(model, x1, nfe, kind)
