"""The classroom build: notebooks stamped from the markers and one repository setting, student
versions equal to what nbgrader makes of the sources, student notebooks that run top to bottom
with every exercise unsolved, and a Colab cell that survives "Restart session"."""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest

from gctm_mini.checks import CheckFailed, check_fm_target
from gctm_mini.classroom import (
    BEGIN,
    COLAB_DIR,
    COLAB_SETUP,
    REPO_URL,
    STUB,
    badge,
    build,
    colab_url,
    execute,
    find_exercises,
    grade,
    needs,
    stamp,
    stub_source,
    to_exercise,
)

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
SOLUTIONS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
EXERCISES = NOTEBOOKS / "exercises"
STUDENT = sorted(EXERCISES.glob("*.ipynb"))


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def src(cell) -> str:
    s = cell["source"]
    return s if isinstance(s, str) else "".join(s)


def notebook(*cells: tuple[str, str], first: int = 0) -> dict:
    """A minimal notebook from (cell_type, source) pairs; cell ids count from ``first``."""
    out = []
    for i, (kind, text) in enumerate(cells, start=first):
        c = {"cell_type": kind, "id": f"c{i}", "metadata": {}, "source": text}
        if kind == "code":
            c.update(outputs=[], execution_count=None)
        out.append(c)
    return {
        "cells": out,
        "metadata": {
            "kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


TOY_EXERCISE = (
    "# Exercise 1 (3 points): the conditional velocity of the straight path\n"
    "def my_fm_target(x0, x1):\n"
    "    ### BEGIN SOLUTION\n"
    "    return x1 - x0\n"
    "    ### END SOLUTION"
)
TOY_CHECK = "with gm.classroom.needs(my_fm_target):\n    gm.checks.check_fm_target(my_fm_target)"


def toy(*, exercise=TOY_EXERCISE, check=TOY_CHECK, after="print('after')") -> dict:
    return notebook(
        ("markdown", "# 99 · Toy\n\nIntro."),
        ("code", "import torch\nimport gctm_mini as gm"),
        ("markdown", "Write it."),
        ("code", exercise),
        ("code", check),
        ("code", after),
    )


# ------------------------------------------------------------------ the build and its rules


def test_stub_is_nbgraders_stub_at_the_solutions_indentation():
    out = stub_source(TOY_EXERCISE + "\nprint(1)")
    assert "return x1 - x0" not in out and BEGIN not in out
    assert "    # YOUR CODE HERE\n    raise NotImplementedError()" in out
    assert out.splitlines()[0].startswith("# Exercise 1") and out.endswith("print(1)")
    with pytest.raises(ValueError, match="without ### END"):
        stub_source("### BEGIN SOLUTION\nx = 1")
    with pytest.raises(ValueError, match="without ### BEGIN"):
        stub_source("x = 1\n### END SOLUTION")


def test_committed_notebooks_are_what_the_build_makes():
    stale = build(check=True)
    assert not stale, f"run: python -m gctm_mini classroom build  (out of date: {stale})"


def test_build_is_idempotent_and_keeps_outputs_and_execution_counts(tmp_path):
    for p in SOLUTIONS:
        shutil.copy(p, tmp_path / p.name)
    build(src=tmp_path)
    assert build(src=tmp_path) == []
    for p in SOLUTIONS:
        before, after = load(p), load(tmp_path / p.name)
        assert [c.get("outputs") for c in before["cells"]] == [
            c.get("outputs") for c in after["cells"]
        ]
        assert [c.get("execution_count") for c in before["cells"]] == [
            c.get("execution_count") for c in after["cells"]
        ]


@pytest.mark.parametrize("nb", [p for p in SOLUTIONS if p.name < "11"], ids=lambda p: p.name[:2])
def test_notebooks_01_to_10_have_exercises_with_checks(nb):
    exercises = find_exercises(load(nb), nb.name)
    assert exercises, f"{nb.name} has no exercise"
    cells = load(nb)["cells"]
    for e in exercises:
        assert "gm.checks.check_" in src(cells[e.check])
        assert f"needs({e.function})" in src(cells[e.check])


def test_build_refuses_a_hint_that_shows_solution_code():
    leaky = TOY_EXERCISE.replace("straight path", "straight path: return x1 - x0")
    with pytest.raises(ValueError, match="shows solution code 'return x1 - x0'"):
        find_exercises(toy(exercise=leaky))
    in_markdown = toy()
    in_markdown["cells"][2]["source"] = "Hint: `return x1-x0`."
    with pytest.raises(ValueError, match="shows solution code"):
        find_exercises(in_markdown)
    near_copy = TOY_EXERCISE.replace(
        "return x1 - x0", "velocity = x1.double() - x0.double()\n    return velocity"
    ).replace("straight path", "straight path\n# velocity = x1.double() - x0.float()")
    with pytest.raises(ValueError, match="shows solution code"):
        find_exercises(toy(exercise=near_copy))
    # mathematics is the specification, not code: X1 − X0 (unicode minus) is allowed
    maths = TOY_EXERCISE.replace("straight path", "straight path, dx_t/dt = X1 − X0")
    assert find_exercises(toy(exercise=maths))[0].points == 3


def test_build_refuses_an_exercise_function_used_outside_needs():
    bare = toy(check="gm.checks.check_fm_target(my_fm_target)")
    with pytest.raises(ValueError, match=r"cell 4 uses my_fm_target .* outside"):
        find_exercises(bare)
    use = "v = my_fm_target(torch.zeros(2), torch.ones(2))"
    with pytest.raises(ValueError, match=r"cell 5 uses my_fm_target"):
        find_exercises(toy(after=use))
    assert find_exercises(toy(after=f"with gm.classroom.needs(my_fm_target):\n    {use}"))


def test_build_refuses_exercises_without_title_check_or_order():
    with pytest.raises(ValueError, match="title line"):
        find_exercises(toy(exercise=TOY_EXERCISE.replace("# Exercise 1 (3 points)", "# Task")))
    with pytest.raises(ValueError, match="must call a gm.checks.check_"):
        find_exercises(toy(check="print(my_fm_target)"))
    with pytest.raises(ValueError, match="numbered 1, 2"):
        find_exercises(toy(exercise=TOY_EXERCISE.replace("Exercise 1", "Exercise 2")))


def test_stamp_writes_nbgrader_metadata_from_the_markers():
    nb = stamp(toy(), "notebooks/99_toy.ipynb")
    meta = [c["metadata"].get("nbgrader") for c in nb["cells"]]
    assert meta[3] == {
        "grade": False,
        "grade_id": "my_fm_target",
        "locked": False,
        "schema_version": 3,
        "solution": True,
    }
    assert meta[4] == {
        "grade": True,
        "grade_id": "check-my_fm_target",
        "locked": True,
        "points": 3,
        "schema_version": 3,
        "solution": False,
    }
    assert meta[0]["locked"] and not meta[0]["solution"] and not meta[0]["grade"]  # markdown
    assert meta[1] is None and meta[5] is None  # other code cells stay editable
    assert src(nb["cells"][1]).startswith(COLAB_SETUP + "\n\nimport torch")
    assert badge("notebooks/99_toy.ipynb") in src(nb["cells"][0])
    again = stamp(nb, "notebooks/99_toy.ipynb")
    assert again == nb


@pytest.mark.parametrize("nb", SOLUTIONS, ids=lambda p: p.name[:2])
def test_nbgrader_metadata_of_the_notebooks(nb):
    cells = load(nb)["cells"]
    exercises = find_exercises(load(nb), nb.name)
    graded = [c["metadata"]["nbgrader"] for c in cells if "nbgrader" in c["metadata"]]
    if not exercises:
        assert not graded
        return
    ids = [g["grade_id"] for g in graded]
    assert len(ids) == len(set(ids)) and all(re.fullmatch(r"[\w-]+", i) for i in ids)
    for e in exercises:
        assert cells[e.cell]["metadata"]["nbgrader"]["solution"] is True
        check = cells[e.check]["metadata"]["nbgrader"]
        assert check["grade"] and check["locked"] and check["points"] == e.points
    for c in cells:
        if c["cell_type"] == "markdown":
            assert c["metadata"]["nbgrader"]["locked"] is True


# ------------------------------------------------------------------ one repository setting


def test_every_notebook_and_the_readme_name_the_one_repository():
    assert colab_url("notebooks/x.ipynb").startswith(
        "https://colab.research.google.com/github/" + REPO_URL.removeprefix("https://github.com/")
    )
    for path in SOLUTIONS + STUDENT:
        rel = path.relative_to(ROOT).as_posix()
        nb = load(path)
        first_code = next(c for c in nb["cells"] if c["cell_type"] == "code")
        assert src(first_code).startswith(COLAB_SETUP + "\n"), f"{rel}: Colab cell not stamped"
        links = re.findall(r"https://colab\.research\.google\.com/github/[^)\s]+", json.dumps(nb))
        assert links == [colab_url(rel)], (rel, links)
        assert src(nb["cells"][0]).count(badge(rel)) == 1
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    prefix = colab_url("notebooks/")
    for link in re.findall(r"https://colab\.research\.google\.com/github/[^)\s]+", readme):
        assert link.startswith(prefix), f"README links {link}, not {REPO_URL}"
        assert (ROOT / link.removeprefix(colab_url(""))).exists(), link
    for repo in re.findall(r'GCTM_REPO = "([^"]+)"', readme):
        assert repo == REPO_URL


def test_pyproject_urls_agree_with_the_repository_setting():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for url in project.get("urls", {}).values():
        if url.startswith("https://github.com/"):
            assert url.rstrip("/").removesuffix(".git") == REPO_URL, url


def test_student_notebooks_carry_no_widget_state_outputs_or_solutions():
    for path in STUDENT:
        nb = load(path)
        assert "widgets" not in nb["metadata"], path.name
        for c in nb["cells"]:
            assert BEGIN not in src(c)
            if c["cell_type"] == "code":
                assert c["outputs"] == [] and c["execution_count"] is None
                assert "execution" not in c["metadata"]
        assert path.stat().st_size < 100_000, (path.name, path.stat().st_size)  # text only


# ------------------------------------------------------------------ nbgrader's own tools


def nbgrader_student_version(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    from nbgrader.preprocessors import ClearOutput, ClearSolutions, LockCells

    resources: dict = {}
    for pp in (LockCells(), ClearSolutions(), ClearOutput()):  # generate_assignment's order
        nb, resources = pp.preprocess(nb, resources)
    return nb


def assert_same_student_cells(theirs, ours, name: str, badge_from: str, badge_to: str):
    assert len(theirs.cells) == len(ours["cells"]), name
    for i, (a, b) in enumerate(zip(theirs.cells, ours["cells"], strict=True)):
        where = f"{name}, cell {i}"
        assert a.cell_type == b["cell_type"], where
        assert a.source.replace(badge_from, badge_to) == src(b), where
        for key in ("editable", "deletable"):
            assert a.metadata.get(key) == b["metadata"].get(key), (where, key)
        if a.cell_type == "code":
            assert a.outputs == [] == b["outputs"], where


@pytest.mark.parametrize("name", [p.name for p in STUDENT], ids=lambda n: n[:2])
def test_nbgrader_preprocessors_make_our_student_notebooks(name):
    theirs = nbgrader_student_version(nbformat.read(NOTEBOOKS / name, as_version=4))
    for e in find_exercises(load(NOTEBOOKS / name)):
        stub = textwrap.indent(STUB, "    ")
        assert stub in theirs.cells[e.cell].source and BEGIN not in theirs.cells[e.cell].source
    assert_same_student_cells(
        theirs,
        load(EXERCISES / name),
        name,
        colab_url(f"notebooks/{name}"),
        colab_url(f"notebooks/exercises/{name}"),
    )


@pytest.mark.slow
def test_nbgrader_generate_assignment_releases_our_student_notebooks(tmp_path):
    """The real ``nbgrader generate_assignment``, offline, in a throwaway course directory."""
    source = tmp_path / "source" / "gctm"
    source.mkdir(parents=True)
    for p in STUDENT:
        shutil.copy(NOTEBOOKS / p.name, source / p.name)
    res = nbgrader(tmp_path, "generate_assignment", "gctm", "--force")
    assert res.returncode == 0, res.stdout[-3000:]
    for p in STUDENT:
        released = nbformat.read(tmp_path / "release" / "gctm" / p.name, as_version=4)
        assert_same_student_cells(
            released,
            load(p),
            p.name,
            colab_url(f"notebooks/{p.name}"),
            colab_url(f"notebooks/exercises/{p.name}"),
        )


def nbgrader(course: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "GCTM_SMOKE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "nbgrader",
            *args,
            f"--CourseDirectory.root={course}",
            f"--CourseDirectory.db_url=sqlite:///{course / 'gradebook.db'}",
        ],
        cwd=course,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_nbgrader_autograde_gives_the_points_of_solved_exercises_only(tmp_path):
    """Autograde a solved and an unsolved submission of a toy assignment: ``needs`` does not
    hide an unsolved stub from nbgrader, and the check cell carries the exercise's points."""
    (tmp_path / "source" / "toy").mkdir(parents=True)
    nb = stamp(toy(), "notebooks/99_toy.ipynb")
    (tmp_path / "source" / "toy" / "toy.ipynb").write_text(json.dumps(nb))
    assert nbgrader(tmp_path, "generate_assignment", "toy", "--force").returncode == 0
    released = tmp_path / "release" / "toy" / "toy.ipynb"
    for student, solved in (("alice", True), ("bob", False)):
        sub = tmp_path / "submitted" / student / "toy"
        sub.mkdir(parents=True)
        text = released.read_text()
        if solved:
            text = text.replace("raise NotImplementedError()", "return x1 - x0")
        (sub / "toy.ipynb").write_text(text)
        res = nbgrader(tmp_path, "autograde", "toy", f"--student={student}", "--create")
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{tmp_path / 'gradebook.db'}") as gb:
        score = {s: gb.find_submission("toy", s).score for s in ("alice", "bob")}
        assert gb.find_assignment("toy").max_score == 3
    assert score == {"alice": 3, "bob": 0}


# ------------------------------------------------------------------ needs(): Run all goes on


def define(source: str, filename: str) -> dict:
    """Run ``source`` as a notebook cell would, with its lines in linecache."""
    import linecache

    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    ns: dict = {}
    exec(compile(source, filename, "exec"), ns)
    return ns


def unsolved(number: str = "3") -> object:
    cell = stub_source(TOY_EXERCISE.replace("Exercise 1 (3 points)", f"Exercise {number}"))
    return define(cell, f"<cell-{number}>")["my_fm_target"]


def test_needs_reports_an_unsolved_stub_and_lets_the_notebook_go_on(capsys, monkeypatch):
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    fn = unsolved("3")
    ran = []
    with needs(fn):
        check_fm_target(fn)
        ran.append("not reached")
    assert ran == []
    assert capsys.readouterr().out == (
        "this cell needs Exercise 3 (`my_fm_target`): finish it above, then re-run\n"
    )
    with needs(fn):  # a later cell that uses what the unsolved cell would have made
        print(model)  # noqa: F821
    assert "needs Exercise 3" in capsys.readouterr().out
    single = define(stub_source(TOY_EXERCISE.replace(" 1 (3 points)", "")), "<cell-x>")
    with needs(single["my_fm_target"]):
        single["my_fm_target"](1, 2)
    assert "needs the exercise `my_fm_target`" in capsys.readouterr().out


def test_needs_hides_nothing_but_the_stub(monkeypatch):
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    wrong = define("def my_fm_target(x0, x1):\n    return x0 - x1\n", "<wrong>")["my_fm_target"]
    with pytest.raises(CheckFailed, match="sign flipped"), needs(wrong):
        check_fm_target(wrong)

    def library():
        raise NotImplementedError("not the student's stub")

    with pytest.raises(NotImplementedError, match="not the student's"), needs(wrong):
        library()
    with pytest.raises(NameError), needs(wrong):  # no unsolved stub known: a real NameError
        print(undefined_name)  # noqa: F821
    other = unsolved("4")
    with pytest.raises(NotImplementedError), needs(wrong):  # a stub the cell did not name
        other(1, 2)
    with pytest.raises(TypeError, match="exercise functions"):
        needs("my_fm_target")


def test_needs_lets_nbgrader_see_the_unsolved_stub(monkeypatch):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    fn = unsolved("3")
    with pytest.raises(NotImplementedError), needs(fn):
        fn(1, 2)


@pytest.mark.slow
@pytest.mark.parametrize("name", [p.name for p in STUDENT], ids=lambda n: n[:2])
def test_student_notebook_runs_top_to_bottom_with_every_exercise_unsolved(
    name, tmp_path, monkeypatch
):
    """Smoke mode, stubs unsolved: no cell fails (nbclient raises on the first error), and
    each check cell says which exercise it needs."""
    from nbclient import NotebookClient

    monkeypatch.setenv("GCTM_SMOKE", "1")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    nb = nbformat.read(EXERCISES / name, as_version=4)
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    source = load(NOTEBOOKS / name)
    for e in find_exercises(source, name):
        out = "".join(o.get("text", "") for o in nb.cells[e.check].outputs)
        label = (
            f"Exercise {e.number} (`{e.function}`)" if e.number else f"the exercise `{e.function}`"
        )
        assert f"this cell needs {label}: finish it above, then re-run" in out, (name, out)


# ------------------------------------------------------------------ the Colab cell


HARNESS = textwrap.dedent(
    """
    import json, shutil, subprocess, sys, types
    repo, log, cell, runs, colab = sys.argv[1:4] + [int(a) for a in sys.argv[4:6]]
    if colab:
        sys.modules["google"] = types.ModuleType("google")
        sys.modules["google.colab"] = types.ModuleType("google.colab")
    real_run = subprocess.run

    def fake_run(cmd, *args, **kw):  # git and pip stand-ins: a local copy, no network
        with open(log, "a") as f:
            f.write(json.dumps(cmd) + "\\n")
        if cmd[:2] == ["git", "clone"]:
            keep = shutil.ignore_patterns(
                ".git", ".venv", "notebooks", "tests", "benchmarks", "runs", "__pycache__"
            )
            shutil.copytree(repo, cmd[-1], ignore=keep)
            return subprocess.CompletedProcess(cmd, 0)
        if cmd[1:4] == ["-m", "pip", "install"]:
            return subprocess.CompletedProcess(cmd, 0)
        return real_run(cmd, *args, **kw)

    subprocess.run = fake_run
    pre = "not imported"
    if runs < 0:  # something imported gctm_mini before the cell: here, the namespace in cwd
        import gctm_mini
        pre, runs = gctm_mini.__file__, -runs
    code = compile(open(cell).read(), "<setup cell>", "exec")
    ns = {"__name__": "__main__"}
    for _ in range(runs):
        exec(code, ns)
    gm = ns["gm"]
    import torch
    x = gm.assets.load_shipped("gctm_moons").G(torch.randn(8, 2), 1.0, 0.0)
    print(json.dumps({
        "file": gm.__file__,
        "checkpoints": str(gm.assets.checkpoint_dir()),
        "shape": list(x.shape),
        "on_path": sys.path.count(ns.get("GCTM_SRC")),
        "pre": pre,
    }))
    """
)


def run_colab_cell(cell: str, content: Path, log: Path, runs: int = 1, colab: bool = True):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    (content / "cell.py").write_text(cell)
    res = subprocess.run(
        [sys.executable, "-c", HARNESS, str(ROOT), str(log), "cell.py", str(runs), str(int(colab))],
        cwd=content,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    log.unlink(missing_ok=True)
    return json.loads(res.stdout.strip().splitlines()[-1]), calls


def setup_cell(content: Path) -> str:
    """Notebook 01's first code cell, with Colab's /content moved to ``content``."""
    cell = src(next(c for c in load(SOLUTIONS[0])["cells"] if c["cell_type"] == "code"))
    assert cell.count(COLAB_DIR) == 1
    return cell.replace(COLAB_DIR, str(content / Path(COLAB_DIR).name))


@pytest.mark.slow
def test_colab_cell_survives_a_restart_and_imports_the_real_package(tmp_path):
    """First run clones and installs; a re-run in the same kernel and a run after "Restart
    session" (a fresh process, the clone present) clone and install nothing, and every time
    ``import gctm_mini`` is the clone's package with its shipped checkpoints — also with a
    directory named like the package in the working directory (an older clone), and after
    that directory was imported as an empty namespace package."""
    content = tmp_path / "content"
    (content / "gctm_mini").mkdir(parents=True)  # shadows the package as a namespace if allowed
    clone = content / Path(COLAB_DIR).name
    cell, log = setup_cell(content), tmp_path / "calls.log"

    first, calls = run_colab_cell(cell, content, log, runs=2)
    assert [c[:2] for c in calls] == [["rm", "-rf"], ["git", "clone"], [sys.executable, "-m"]]
    assert calls[1][-2:] == [REPO_URL, str(clone)] and calls[2][3:] == [
        "install",
        "-q",
        "-e",
        str(clone),
    ]
    restart, calls_after = run_colab_cell(cell, content, log, runs=-1)
    assert calls_after == []
    assert restart["pre"] is None  # an empty namespace package was imported first
    for res in (first, restart):
        assert res["file"] == str(clone / "gctm_mini" / "__init__.py")
        assert res["checkpoints"] == str(clone / "data" / "checkpoints")
        assert res["shape"] == [8, 2] and res["on_path"] == 1


@pytest.mark.slow
def test_colab_cell_does_nothing_outside_colab(tmp_path):
    content = tmp_path / "content"
    content.mkdir()
    res, calls = run_colab_cell(setup_cell(content), content, tmp_path / "calls.log", colab=False)
    assert calls == [] and not (content / Path(COLAB_DIR).name).exists()
    assert res["file"] != str(content / Path(COLAB_DIR).name / "gctm_mini" / "__init__.py")
    assert res["on_path"] == 0


# ------------------------------------------------------------------ grading without nbgrader


def executed_toy(*outputs: list) -> dict:
    """The stamped toy student notebook with the given outputs in its check cell."""
    nb = to_exercise(stamp(toy(), "notebooks/99_toy.ipynb"))
    nb["cells"][4]["outputs"] = list(outputs)
    return nb


def stdout(text: str) -> dict:
    return {"output_type": "stream", "name": "stdout", "text": text}


def test_grade_reads_correct_unsolved_wrong_and_not_run():
    ok = executed_toy(stdout("✓ flow-matching target: correct\n"))
    needs_msg = "this cell needs Exercise 1 (`my_fm_target`): finish it above, then re-run\n"
    wrong = executed_toy(
        {"output_type": "error", "ename": "CheckFailed", "evalue": "sign flipped", "traceback": []}
    )
    verdicts = [grade(nb)[0] for nb in (ok, executed_toy(stdout(needs_msg)), wrong, executed_toy())]
    assert [(v.exercise, v.points, v.max_points, v.status) for v in verdicts] == [
        ("my_fm_target", 3, 3, "correct"),
        ("my_fm_target", 0, 3, "unsolved"),
        ("my_fm_target", 0, 3, "wrong"),
        ("my_fm_target", 0, 3, "not run"),
    ]
    assert verdicts[2].message == "CheckFailed: sign flipped"


def test_classroom_grade_cli_prints_totals_and_writes_csv(tmp_path, capsys):
    from gctm_mini.cli import main

    path = tmp_path / "alice.ipynb"
    path.write_text(json.dumps(executed_toy(stdout("✓ flow-matching target: correct\n"))))
    assert (
        main(["classroom", "grade", "--no-run", str(path), "--csv", str(tmp_path / "g.csv")]) == 0
    )
    out = capsys.readouterr().out
    assert "3/3  correct" in out and "total 3/3" in out
    assert (tmp_path / "g.csv").read_text().splitlines()[1].startswith(f"{path},my_fm_target,3.0")
    assert main(["classroom", "grade", "--no-run", str(tmp_path / "missing.ipynb")]) == 2
    assert "error: no notebook at" in capsys.readouterr().err


@pytest.mark.slow
def test_classroom_grade_runs_a_submission_in_smoke_mode(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    second = (
        "# Exercise 2: the interpolant\n"
        "def my_interpolate(x0, x1, t):\n"
        "    ### BEGIN SOLUTION\n"
        "    return (1 - t) * x0 + t * x1\n"
        "    ### END SOLUTION"
    )
    nb = toy(exercise=TOY_EXERCISE.replace("Exercise 1 (3 points)", "Exercise 1"))
    nb["cells"][5:] = notebook(
        ("code", second),
        (
            "code",
            "with gm.classroom.needs(my_interpolate):\n    gm.checks.check_interpolant(my_interpolate)",
        ),
        ("code", "print('the end')"),
        first=5,
    )["cells"]
    student = to_exercise(stamp(nb, "notebooks/99_toy.ipynb"))
    wrong = src(student["cells"][3]).replace("raise NotImplementedError()", "return x0 - x1")
    student["cells"][3]["source"] = wrong
    path = tmp_path / "bob.ipynb"
    path.write_text(json.dumps(student))
    verdicts = grade(execute(path))
    assert [(v.exercise, v.status) for v in verdicts] == [
        ("my_fm_target", "wrong"),
        ("my_interpolate", "unsolved"),
    ]
    assert "sign flipped" in verdicts[0].message
