import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def load_script():
    """Import a repository script that is not part of the package (``benchmarks/…``,
    ``.ci/…``) from its path: ``load_script("benchmarks/peers.py", "peers_benchmark")``."""

    def load(path: str, name: str):
        spec = importlib.util.spec_from_file_location(name, ROOT / path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
