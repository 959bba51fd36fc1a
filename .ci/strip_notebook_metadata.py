"""Remove run-specific metadata from notebooks, keeping their outputs and execution counts.

    python .ci/strip_notebook_metadata.py notebooks/01_flow_matching_2d.ipynb …

The course commits its notebooks *with* outputs (they are the results readers see), so an
output stripper is not wanted; what changes on every run without meaning anything is removed:
per-cell timing (``execution``, ``ExecuteTime``), view state (``collapsed``, ``scrolled``,
``heading_collapsed``) and, at notebook level, the Python version of the kernel that ran it
(``language_info.version``) and tool stamps (``signature``, ``papermill``, ``vscode``).
Everything else stays, in particular cell ``tags`` (``parameters``), nbgrader's cell
metadata, the kernelspec and the widget state. A file is rewritten only when something was
removed, in nbformat's own layout (one-space indent, sorted keys), so a clean notebook is
left byte-for-byte unchanged. Used by the pre-commit hook ``strip-notebook-metadata``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

CELL_KEYS = ("execution", "ExecuteTime", "collapsed", "scrolled", "heading_collapsed")
NOTEBOOK_KEYS = ("signature", "papermill", "vscode")


def strip(nb: dict) -> bool:
    """Remove the run-specific metadata from ``nb`` in place; True if anything was removed."""
    changed = False
    meta = nb.get("metadata", {})
    for key in NOTEBOOK_KEYS:
        changed |= meta.pop(key, None) is not None
    changed |= meta.get("language_info", {}).pop("version", None) is not None
    for cell in nb.get("cells", []):
        cell_meta = cell.get("metadata", {})
        for key in CELL_KEYS:
            changed |= cell_meta.pop(key, None) is not None
        if "papermill" in cell_meta:
            del cell_meta["papermill"]
            changed = True
    return changed


def dumps(nb: dict) -> str:
    """The notebook as nbformat writes it."""
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def main(paths: list[str]) -> int:
    for name in paths:
        path = Path(name)
        try:
            nb = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            print(f"{path}: not a readable notebook ({err})", file=sys.stderr)
            return 2
        if strip(nb):
            path.write_text(dumps(nb), encoding="utf-8")
            print(f"stripped run metadata from {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
