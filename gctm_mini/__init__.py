"""gctm_mini: Generalized Consistency Trajectory Models and the FM / CM / CTM / BCM family,
as a small, tested PyTorch reference.

Conventions (fixed): X0 is the data at t = 0, X1 the source at t = 1, and
``x_t = (1 − t)·X0 + t·X1``; generation integrates from t = 1 down to t = 0.
"""

import importlib.metadata as _metadata
import re as _re
from pathlib import Path as _Path

from . import (
    assets,
    checks,
    classroom,
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


def _read_version() -> str:
    """The package version: one source, ``[project] version`` in ``pyproject.toml``.

    An installed copy (wheel or ``pip install -e``) reads it from the package metadata; a
    source checkout used without installing reads ``pyproject.toml`` beside the package.
    """
    try:
        return _metadata.version("gctm-mini")
    except _metadata.PackageNotFoundError:
        pass
    pyproject = _Path(__file__).resolve().parent.parent / "pyproject.toml"
    if pyproject.is_file():
        text = pyproject.read_text(encoding="utf-8")
        project = _re.search(r"^\[project\]\s*$(.*?)(?=^\[)", text + "\n[", _re.M | _re.S)
        found = project and _re.search(r'^version\s*=\s*"([^"]+)"', project.group(1), _re.M)
        if found:
            return found.group(1)
    return "0+unknown"


__version__ = _read_version()

__all__ = [
    "assets",
    "checks",
    "classroom",
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
