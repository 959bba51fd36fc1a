"""Read the literate cells of a notebook so a test can hold them equal to the package.

A *literate cell* is a code cell tagged ``literate`` in a notebook of ``notebooks/``: it writes
an algorithm out in full, next to its equation, for the reader (e.g. the FM loss of notebook
01). Each such cell is self-contained — it may use ``math``, ``torch``, ``torch.nn.functional as
F`` and ``gctm_mini as gm``, which are imported here, and what earlier literate cells of the
same notebook define — and only *defines* functions (and constants); it runs no training.

``tests/test_literate_cells.py`` executes them and compares every function with the package
function it mirrors (same seed → same value), so the notebook never drifts from the code the
benchmarks run.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
PRELUDE = "import math\nimport torch\nimport torch.nn.functional as F\nimport gctm_mini as gm\n"


def notebook_path(stem: str) -> Path:
    """``notebooks/<stem>.ipynb``, where ``stem`` may be a prefix such as ``"01"``."""
    hits = sorted(NOTEBOOKS.glob(f"{stem}*.ipynb"))
    if len(hits) != 1:
        raise FileNotFoundError(f"expected one notebook matching {stem!r}; found {hits}")
    return hits[0]


def literate_sources(stem: str) -> list[str]:
    """Sources of the code cells tagged ``literate``, in notebook order."""
    nb = json.loads(notebook_path(stem).read_text())
    return [
        "".join(c["source"])
        for c in nb["cells"]
        if c["cell_type"] == "code" and "literate" in c.get("metadata", {}).get("tags", [])
    ]


def defined_functions(stem: str) -> list[str]:
    """Names of the top-level functions the literate cells define."""
    names = []
    for src in literate_sources(stem):
        for node in ast.parse(src).body:
            if isinstance(node, ast.FunctionDef):
                names.append(node.name)
    return names


def literate_namespace(stem: str) -> dict:
    """Execute the literate cells of one notebook (in order) and return their namespace."""
    ns: dict = {}
    exec(compile(PRELUDE, "<prelude>", "exec"), ns)
    for i, src in enumerate(literate_sources(stem)):
        exec(compile(src, f"<{stem} literate cell {i}>", "exec"), ns)
    return ns
