"""gctm_mini: Generalized Consistency Trajectory Models and the FM / CM / CTM / BCM family,
as a small, tested PyTorch reference.

Conventions (fixed): X0 is the data at t = 0, X1 the source at t = 1, and
``x_t = (1 − t)·X0 + t·X1``; generation integrates from t = 1 down to t = 0.
"""

from . import (
    assets,
    checks,
    consistency,
    couplings,
    data2d,
    interpolant,
    metrics,
    oracle,
    sampling,
    solvers,
    timegrid,
    training,
)
from .checkpoint import load_checkpoint
from .couplings import couple, exact_ot_permutation, sinkhorn_log
from .data2d import GaussianMixture, as_sampler, make_dataset
from .interpolant import conditional_velocity, interpolate, sigma_from_t, t_from_sigma
from .models import build_model, mlp_spec
from .oracle import GaussianMixtureOracle
from .parameterization import CouplingMoments, FlowMapModel
from .sampling import sample_multistep, sample_ode
from .solvers import integrate, integrate_per_sample

__version__ = "0.1.0"

__all__ = [
    "assets",
    "checks",
    "consistency",
    "couplings",
    "data2d",
    "interpolant",
    "metrics",
    "oracle",
    "sampling",
    "solvers",
    "timegrid",
    "training",
    "CouplingMoments",
    "FlowMapModel",
    "GaussianMixture",
    "GaussianMixtureOracle",
    "as_sampler",
    "build_model",
    "conditional_velocity",
    "couple",
    "exact_ot_permutation",
    "integrate",
    "integrate_per_sample",
    "interpolate",
    "load_checkpoint",
    "make_dataset",
    "mlp_spec",
    "sample_multistep",
    "sample_ode",
    "sigma_from_t",
    "sinkhorn_log",
    "t_from_sigma",
]
