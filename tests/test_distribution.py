"""How the package is distributed: version, licence, citation and the extras by audience."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import gctm_mini
from gctm_mini import assets

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


# --- where the shipped checkpoints are found ---------------------------------------------


def test_clone_finds_the_repository_checkpoints(monkeypatch):
    monkeypatch.delenv(assets.ENV_VAR, raising=False)
    assert not assets.PACKAGED_DIR.exists()  # a clone has no gctm_mini/_shipped
    assert assets.checkpoint_dir() == ROOT / "data" / "checkpoints"
    assert assets.shipped_path("gctm_moons") == ROOT / "data" / "checkpoints" / "gctm_moons.pt"


def test_environment_variable_overrides_the_checkpoint_folder(monkeypatch, tmp_path):
    src = ROOT / "data" / "checkpoints"
    shutil.copy2(src / "manifest.json", tmp_path / "manifest.json")
    shutil.copy2(src / "gctm_moons.pt", tmp_path / "gctm_moons.pt")
    monkeypatch.setenv(assets.ENV_VAR, str(tmp_path))
    assert assets.shipped_path("gctm_moons") == tmp_path / "gctm_moons.pt"
    model = assets.load_shipped("gctm_moons")
    assert model.train_config["method"] == "gctm"
    with pytest.raises(FileNotFoundError, match="regenerate it with: python -m gctm_mini"):
        assets.shipped_path("fm_moons")  # listed in the manifest, absent from the folder


def test_override_without_a_manifest_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv(assets.ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="GCTM_CHECKPOINTS=.*must be a folder holding"):
        assets.manifest()


def wheel_build_problem() -> str | None:
    """Why a wheel cannot be built here without the network (None when it can)."""
    try:
        version = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        return "setuptools is not installed in this environment"
    if int(version.split(".")[0]) < 77:
        return f"setuptools {version} < 77 cannot build it (SPDX licence string)"
    return None


@pytest.mark.slow  # builds and installs a 7 MB wheel: about 10 s
def test_shipped_checkpoint_loads_from_an_installed_wheel(tmp_path):
    """Build the wheel from a copy of the sources, install it outside the repository with no
    dependencies (torch and the rest come from this environment) and load a checkpoint."""
    problem = wheel_build_problem()
    if problem:
        pytest.skip(f"cannot build the wheel offline: {problem}")
    src, dist, site = tmp_path / "src", tmp_path / "dist", tmp_path / "site"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    no_cache = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "gctm_mini", src / "gctm_mini", ignore=no_cache)
    shutil.copytree(ROOT / "data", src / "data", ignore=no_cache)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    build = subprocess.run(
        [
            *pip,
            "wheel",
            str(src),
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            str(dist),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (wheel,) = dist.glob("gctm_mini-*.whl")

    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    shipped = sorted(
        p.relative_to(ROOT / "data" / "checkpoints").as_posix()
        for p in (ROOT / "data" / "checkpoints").rglob("*")
        if p.is_file()
    )
    assert {f"gctm_mini/_shipped/{n}" for n in shipped} <= names
    classifiers = {p.name for p in (ROOT / "data" / "classifiers").iterdir() if p.is_file()}
    assert {f"gctm_mini/_classifiers/{n}" for n in classifiers} <= names
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "gctm_mini").rglob("*.py")}
    assert modules <= names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)

    install = subprocess.run(
        [*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    code = (
        "import torch, gctm_mini\n"
        "from gctm_mini import assets\n"
        "model = assets.load_shipped('gctm_moons')\n"
        "x = model.G(torch.randn(16, 2), 1.0, 0.0)\n"
        "assert torch.isfinite(x).all()\n"
        "print(gctm_mini.__file__)\n"
        "print(assets.shipped_path('gctm_moons'))\n"
        "print(gctm_mini.__version__)\n"
        "from gctm_mini import digits\n"
        "digits.load_digit_classifier()\n"
        "print(digits.CLASSIFIER_PATH)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", assets.ENV_VAR)}
    env["PYTHONPATH"] = str(site)  # the installed copy first, the repository nowhere
    run = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    package_file, checkpoint, version, classifier = run.stdout.split()
    assert Path(package_file).is_relative_to(site)
    assert Path(checkpoint) == site / "gctm_mini" / "_shipped" / "gctm_moons.pt"
    assert version == PYPROJECT["project"]["version"]  # from the wheel's metadata
    assert Path(classifier) == site / "gctm_mini" / "_classifiers" / "digit_cnn.pt"


# --- the notebook hook of .pre-commit-config.yaml ------------------------------------------


@pytest.fixture
def stripper(load_script):
    return load_script(".ci/strip_notebook_metadata.py", "strip_notebook_metadata")


def test_notebook_hook_drops_run_metadata_and_keeps_outputs_and_counts(tmp_path, stripper):
    source = ROOT / "notebooks" / "01_flow_matching_2d.ipynb"
    before = json.loads(source.read_text(encoding="utf-8"))
    before["metadata"]["papermill"] = {"duration": 1.0}  # a tool stamp, as papermill writes
    before["cells"][0]["metadata"]["ExecuteTime"] = {"end_time": "2026-01-01T00:00:00"}
    copy = tmp_path / source.name
    copy.write_text(stripper.dumps(before), encoding="utf-8")

    assert stripper.main([str(copy)]) == 0
    after = json.loads(copy.read_text(encoding="utf-8"))
    assert len(after["cells"]) == len(before["cells"])
    for old, new in zip(before["cells"], after["cells"], strict=True):
        assert new["source"] == old["source"]
        assert new.get("outputs") == old.get("outputs")
        assert new.get("execution_count") == old.get("execution_count")
        assert new["metadata"].get("tags") == old["metadata"].get("tags")
        assert not {"execution", "ExecuteTime"} & set(new["metadata"])
    assert after["metadata"]["kernelspec"] == before["metadata"]["kernelspec"]
    assert after["metadata"].get("widgets") == before["metadata"].get("widgets")
    assert "papermill" not in after["metadata"]
    assert "version" not in after["metadata"]["language_info"]

    stripped = copy.read_bytes()
    assert stripper.main([str(copy)]) == 0  # idempotent: nothing left to strip
    assert copy.read_bytes() == stripped


def test_notebook_hook_leaves_a_clean_notebook_byte_for_byte(tmp_path, stripper):
    nb = json.loads((ROOT / "notebooks" / "01_flow_matching_2d.ipynb").read_text("utf-8"))
    stripper.strip(nb)
    clean = tmp_path / "clean.ipynb"
    clean.write_text(stripper.dumps(nb), encoding="utf-8")
    raw = clean.read_bytes()
    stripper.main([str(clean)])
    assert clean.read_bytes() == raw
    # the layout is nbformat's: a notebook nbformat wrote round-trips unchanged
    written = (ROOT / "notebooks" / "02_couplings_2d.ipynb").read_text("utf-8")
    assert stripper.dumps(json.loads(written)) == written


def test_pre_commit_runs_ruff_and_the_notebook_hook_but_not_on_generated_notebooks():
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text(encoding="utf-8"))
    hooks = {h["id"]: h for repo in config["repos"] for h in repo["hooks"]}
    assert {"ruff-check", "ruff-format", "strip-notebook-metadata"} <= set(hooks)
    nb = hooks["strip-notebook-metadata"]
    assert re.match(nb["files"], "notebooks/05_gctm_2d.ipynb")
    assert re.match(nb["exclude"], "notebooks/exercises/05_gctm_2d.ipynb")
