"""How the package is distributed: version, licence, citation and the extras by audience."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import gctm_mini

ROOT = Path(__file__).resolve().parent.parent
tomllib = pytest.importorskip("tomllib")  # Python ≥ 3.11
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def extra(name: str) -> list[str]:
    """Distribution names (lower case, no version range) listed in one extra."""
    reqs = PYPROJECT["project"]["optional-dependencies"][name]
    return [re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0].lower() for r in reqs]


def test_version_is_the_pyproject_version():
    assert gctm_mini.__version__ == PYPROJECT["project"]["version"]


def test_version_without_package_metadata_reads_pyproject(monkeypatch):
    def not_installed(name):
        raise gctm_mini._metadata.PackageNotFoundError(name)

    monkeypatch.setattr(gctm_mini._metadata, "version", not_installed)
    assert gctm_mini._read_version() == PYPROJECT["project"]["version"]


def test_licence_is_mit_declared_as_spdx_with_its_file():
    project = PYPROJECT["project"]
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License")
    assert "the gctm_mini authors" in text
    # the SPDX string form needs setuptools ≥ 77 (PEP 639)
    (setuptools,) = [r for r in PYPROJECT["build-system"]["requires"] if "setuptools" in r]
    major = int(re.search(r">=\s*(\d+)", setuptools).group(1))
    assert major >= 77


def test_citation_file_cites_the_software_and_the_gctm_paper():
    yaml = pytest.importorskip("yaml")
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert cff["cff-version"] == "1.2.0"
    assert cff["type"] == "software"
    assert cff["license"] == "MIT"
    (paper,) = [r for r in cff["references"] if "Consistency Trajectory" in r["title"]]
    assert paper["title"] == "Generalized Consistency Trajectory Models for Image Manipulation"
    assert paper["year"] == 2025
    assert [a["family-names"] for a in paper["authors"]] == ["Kim", "Kim", "Kim", "Ye"]
    assert "ICLR" in paper["collection-title"]


def test_core_install_is_the_2d_path_and_extras_hold_the_rest():
    core = [
        re.split(r"[<>=]", r, maxsplit=1)[0].lower() for r in PYPROJECT["project"]["dependencies"]
    ]
    assert sorted(core) == ["matplotlib", "numpy", "pot", "torch", "tqdm"]
    assert "torch>=2.3" in PYPROJECT["project"]["dependencies"]
    for name in ("jupyterlab", "ipykernel", "ipywidgets", "torchvision", "scikit-image", "mlxtend"):
        assert name in extra("notebooks")
    # Colab's front end runs ipywidgets 7: the extra must accept it
    (widgets,) = [
        r for r in PYPROJECT["project"]["optional-dependencies"]["notebooks"] if "ipywidgets" in r
    ]
    assert widgets == "ipywidgets>=7.6"
    assert {"pytest", "nbval", "hypothesis", "nbgrader", "playwright"} <= set(extra("test"))
    assert "gctm-mini" in extra("test")  # the tests execute the notebooks
    assert set(extra("metrics")) == {"torch-fidelity", "lpips"}
    assert extra("bench") == ["torchcfm"]
    assert {"ruff", "pre-commit", "gctm-mini"} <= set(extra("dev"))
    dev_extras = re.search(r"\[(.*)\]", PYPROJECT["project"]["optional-dependencies"]["dev"][0])
    assert set(dev_extras.group(1).split(",")) == {"test", "docs"}  # not bench, not metrics
