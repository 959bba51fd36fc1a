"""Optional packages: imported in one place, and a missing one is a one-line install hint."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import gctm_mini
from gctm_mini._optional import EXTRAS, MissingExtraError, install_hint, require
from gctm_mini.evaluation import psnr_ssim
from gctm_mini.images import cifar10

PACKAGE = Path(gctm_mini.__file__).resolve().parent


@pytest.mark.parametrize("module", sorted(EXTRAS))
def test_missing_optional_package_names_the_extra_in_one_line(monkeypatch, module):
    monkeypatch.setitem(sys.modules, module, None)  # the import fails as if not installed
    with pytest.raises(MissingExtraError) as err:
        require(module, "this feature")
    message = str(err.value)
    package, extra = EXTRAS[module]
    assert message == (
        f'this feature needs {package}, which is not installed: pip install "gctm-mini[{extra}]"'
    )
    assert "\n" not in message
    assert isinstance(err.value, ImportError)


def test_missing_parent_package_is_reported_for_a_submodule(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)
    monkeypatch.delitem(sys.modules, "skimage.metrics", raising=False)  # imported by earlier tests
    with pytest.raises(MissingExtraError, match=r"scikit-image.*gctm-mini\[notebooks\]"):
        require("skimage.metrics", "PSNR/SSIM")


def test_broken_optional_package_shows_its_own_import_error(monkeypatch, tmp_path):
    """An installed package whose own dependency is missing is not reported as 'not installed'."""
    pkg = tmp_path / "lpips"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("import gctm_mini_test_absent_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "lpips", raising=False)
    with pytest.raises(ModuleNotFoundError) as err:
        require("lpips")
    assert not isinstance(err.value, MissingExtraError)
    assert err.value.name == "gctm_mini_test_absent_dependency"


def test_unknown_optional_package_is_refused():
    with pytest.raises(ValueError, match="not an optional dependency"):
        install_hint("requests")


def test_psnr_ssim_without_scikit_image_says_which_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)
    monkeypatch.setitem(sys.modules, "skimage.metrics", None)
    x = torch.zeros(1, 3, 8, 8)
    with pytest.raises(MissingExtraError, match=r"PSNR/SSIM needs scikit-image.*\[notebooks\]"):
        psnr_ssim(x, x)


def test_cifar10_without_torchvision_says_which_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", None)
    with pytest.raises(MissingExtraError, match=r"CIFAR-10 needs torchvision.*\[notebooks\]"):
        cifar10(tmp_path)


def direct_optional_imports(path: Path) -> list[str]:
    """``file:line module`` for every import statement of an optional package in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [f"{path.name}:{node.lineno} {n}" for n in names if n.split(".")[0] in EXTRAS]
    return found


def test_optional_packages_are_imported_only_through_require():
    offenders = [
        hit
        for path in sorted(PACKAGE.glob("*.py"))
        if path.name != "_optional.py"
        for hit in direct_optional_imports(path)
    ]
    assert offenders == [], "import these through gctm_mini._optional.require: " + ", ".join(
        offenders
    )


@pytest.mark.slow  # a fresh interpreter importing torch: about 5 s
def test_every_module_imports_with_the_core_install_only():
    """``import gctm_mini.<any module>`` works with every optional package missing."""
    blocked = sorted(EXTRAS)
    code = (
        "import sys, importlib, pkgutil\n"
        f"for name in {blocked!r}: sys.modules[name] = None\n"
        "import gctm_mini\n"
        "for m in pkgutil.iter_modules(gctm_mini.__path__):\n"
        "    if m.name != '__main__':\n"
        "        importlib.import_module('gctm_mini.' + m.name)\n"
        "print('ok')\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=PACKAGE.parent,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "ok"
