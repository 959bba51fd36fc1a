"""Optional dependencies: one place that imports them and says how to install them.

The core install (``pip install gctm-mini``) holds what ``import gctm_mini`` and the 2D path
need. Everything else belongs to an extra, and every import of such a package inside
``gctm_mini`` goes through :func:`require`, so a missing package is one clear line::

    MissingExtraError: CIFAR-10 needs torchvision, which is not installed: pip install "gctm-mini[notebooks]"

instead of a bare ``ModuleNotFoundError`` deep inside a call.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# top-level module name -> (distribution name on PyPI, the extra that installs it)
EXTRAS: dict[str, tuple[str, str]] = {
    "torchvision": ("torchvision", "notebooks"),
    "skimage": ("scikit-image", "notebooks"),
    "mlxtend": ("mlxtend", "notebooks"),
    "ipywidgets": ("ipywidgets", "notebooks"),
    "IPython": ("ipython", "notebooks"),
    "torch_fidelity": ("torch-fidelity", "metrics"),
    "lpips": ("lpips", "metrics"),
    "playwright": ("playwright", "test"),
}


class MissingExtraError(ImportError):
    """An optional package is not installed; the message names the extra that installs it."""


def install_hint(module: str) -> str:
    """``pip install "gctm-mini[EXTRA]"`` for the extra that provides ``module``."""
    top = module.split(".")[0]
    if top not in EXTRAS:
        raise ValueError(
            f"{top!r} is not an optional dependency of gctm_mini; known: {', '.join(EXTRAS)}"
        )
    return f'pip install "gctm-mini[{EXTRAS[top][1]}]"'


def require(
    module: str, purpose: str | None = None, error: type[Exception] = MissingExtraError
) -> ModuleType:
    """Import and return ``module`` (e.g. ``"skimage.metrics"``), or raise one clear line.

    Args:
        module: dotted module name whose top-level package is listed in :data:`EXTRAS`.
        purpose: what needs it, for the message (``"PSNR/SSIM"``); defaults to gctm_mini.
        error: the exception type to raise (default :class:`MissingExtraError`, an
            ``ImportError``); :mod:`gctm_mini.evaluation` passes its ``MetricUnavailableError``.

    Returns:
        the imported module.

    Raises:
        ``error`` with ``"<purpose> needs <package>, which is not installed: pip install
        "gctm-mini[<extra>]"`` when the top-level package cannot be imported.
    """
    hint = install_hint(module)
    try:
        return importlib.import_module(module)
    except ImportError as err:
        top = module.split(".")[0]
        missing = getattr(err, "name", None)
        if missing is not None and missing != top and not missing.startswith(top + "."):
            raise  # the package is there but one of *its* imports failed: show that as is
        package = EXTRAS[top][0]
        raise error(
            f"{purpose or 'gctm_mini'} needs {package}, which is not installed: {hint}"
        ) from err
