"""Student notebooks are generated from the solutions, are up to date, and fail only with
NotImplementedError until the exercises are solved."""

import json
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from gctm_mini.classroom import BEGIN, build, exercise_names, stub_source

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
EXERCISES = ROOT / "notebooks" / "exercises"


def test_stub_replaces_only_the_solution_block():
    src = "# Exercise 3: do it\ndef f(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION\nprint(1)"
    out = stub_source(src)
    assert "return x" not in out and "raise NotImplementedError('Exercise 3: do it')" in out
    assert out.splitlines()[0] == "# Exercise 3: do it" and out.endswith("print(1)")
    assert "    raise NotImplementedError" in out  # keeps the indentation
    with pytest.raises(ValueError):
        stub_source("### BEGIN SOLUTION\nx = 1")
    with pytest.raises(ValueError):
        stub_source("x = 1\n### END SOLUTION")


def test_committed_exercises_are_up_to_date(tmp_path):
    written = build(tmp_path)
    names = sorted(p.name for p in written)
    assert names == sorted(p.name for p in EXERCISES.iterdir()), (
        "run: python -m gctm_mini classroom build"
    )
    for p in written:
        committed = (EXERCISES / p.name).read_text()
        assert p.read_text() == committed, (
            f"{p.name} is stale: run python -m gctm_mini classroom build"
        )


@pytest.mark.parametrize(
    "nb",
    [p for p in SOLUTIONS if p.name[:2] in {f"{k:02d}" for k in range(1, 10)}],
    ids=lambda p: p.name[:2],
)
def test_each_notebook_has_an_exercise_followed_by_a_check(nb):
    data = json.loads(nb.read_text())
    assert exercise_names(data), f"{nb.name} has no exercise"
    cells = [c for c in data["cells"] if c["cell_type"] == "code"]
    for i, c in enumerate(cells):
        if BEGIN in "".join(c["source"]):
            assert "gm.checks.check_" in "".join(cells[i + 1]["source"]), (
                f"{nb.name}: no check after an exercise"
            )


def run(path: Path, allow_errors: bool):
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        allow_errors=allow_errors,
        resources={"metadata": {"path": str(path.parent)}},
    )
    old = os.environ.get("GCTM_SMOKE")
    os.environ["GCTM_SMOKE"] = "1"
    try:
        client.execute()
    finally:
        if old is None:
            os.environ.pop("GCTM_SMOKE", None)
    return nb


@pytest.mark.slow
def test_exercise_notebook_fails_only_with_not_implemented_error():
    nb = run(EXERCISES / "01_flow_matching_2d.ipynb", allow_errors=True)
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert errors and all(o.ename == "NotImplementedError" for o in errors), [
        o.ename for o in errors
    ]


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", sorted(p.name for p in EXERCISES.glob("*.ipynb")), ids=lambda n: n[:2]
)
def test_exercise_notebooks_run_up_to_the_first_exercise(name):
    with pytest.raises(CellExecutionError) as err:
        run(EXERCISES / name, allow_errors=False)
    assert err.value.ename == "NotImplementedError"
