"""Fuzzing the command line: any argument list ends with status 0, 1 (a run that failed) or 2
(bad input), an error is one line on stderr, nothing raises out of ``main`` (no traceback), and
no command destroys a checkpoint it was only meant to read.

In process through :func:`gctm_mini.cli.main` for speed, plus a few real subprocesses for the
exit status and stderr a shell sees. Every run is tiny (a few steps of a width-8 network).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fuzzing import FUZZ, Hang, time_limit
from hypothesis import given
from hypothesis import strategies as st

from gctm_mini import cli
from gctm_mini.train_images import make_config, train_images
from gctm_mini.training import Toy2DConfig, train2d

ROOT = Path(__file__).resolve().parents[1]
TINY_2D = ["--steps", "2", "--batch-size", "8", "--hidden", "8", "--depth", "1", "--quiet"]
TINY_IMAGE = [
    "model_channels=8",
    "channel_mult=1",
    "num_blocks=1",
    "attn_resolutions=",
    "image_size=8",
    "batch_size=2",
    "steps=1",
    "sample_every=0",
    "ckpt_every=1",
    "log_every=1",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A finished tiny 2D run and a finished tiny image run, built once."""
    base = tmp_path_factory.mktemp("runs")
    cfg = Toy2DConfig(steps=2, batch_size=8, hidden=8, depth=1, ckpt_every=2, log_every=1)
    train2d(cfg, base / "run2d", progress=False)
    icfg = make_config("patches_cpu", TINY_IMAGE)
    train_images(icfg, base / "runimg", progress=False, device="cpu")
    return base


def digest(path: Path) -> dict[str, str]:
    """SHA-256 of every file under ``path``."""
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def run_main(argv: list[str], capsys) -> tuple[int, str, str]:
    """``cli.main(argv)`` in process: (status, stdout, stderr); a raised exception fails."""
    try:
        with time_limit():
            rc = cli.main(argv)
    except SystemExit as exc:  # argparse: usage errors (2) and --help (0)
        rc = exc.code if isinstance(exc.code, int) else 2
    except Hang as err:
        raise AssertionError(f"hang: {argv}: {err}") from None
    except BaseException as err:
        raise AssertionError(f"traceback from {argv}: {type(err).__name__}: {err}") from err
    out, err = capsys.readouterr()
    return rc, out, err


def assert_clean_exit(argv, rc: int, err: str) -> None:
    assert rc in (0, 1, 2), (argv, rc, err)
    if rc != 0:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1, (argv, err)
        assert "error" in lines[0], (argv, err)
    assert "Traceback" not in err, (argv, err)


# --- argument strategies ----------------------------------------------------------------------

JUNK = st.sampled_from(["", " ", "-1", "0", "1.5", "nan", "inf", "1e400", "x", "--", "true", "é"])


def value(*good: str):
    """A good value half the time, else junk."""
    return st.one_of(st.sampled_from(good), st.sampled_from(good), JUNK)


def flags(table: dict[str, st.SearchStrategy]):
    """A random subset of ``table``'s flags, each with a drawn value (``None``: a switch)."""

    @st.composite
    def draw_flags(draw):
        chosen = draw(st.lists(st.sampled_from(sorted(table)), unique=True, max_size=4))
        argv = []
        for flag in chosen:
            argv.append(flag)
            if table[flag] is not None:
                argv.append(draw(table[flag]))
        return argv

    return draw_flags()


TRAIN2D_FLAGS = {
    "--method": value("fm", "ct", "gctm", "bcm"),
    "--data": value("moons", "8gaussians", "checkerboard", "gmm"),
    "--source": value("gaussian", "circles"),
    "--coupling": value("independent", "ot", "sinkhorn"),
    "--lr": value("1e-3", "0.01"),
    "--seed": value("0", "7"),
    "--ema-decay": value("0.9", "0"),
    "--eps": value("0", "0.1"),
    "--sinkhorn-reg": value("0.05", "1"),
    "--fm-times": value("uniform", "lognormal", "beta31"),
    "--n-start": value("1", "2"),
    "--n-cap": value("2", "4"),
    "--lam": value("0", "1"),
    "--sigma-max": value("80", "5"),
    "--ckpt-every": value("1", "2"),
    "--log-every": value("1", "5"),
    "--grid-jitter": value("true", "false"),
    "--weighted": value("true", "false"),
    "--steps": value("1", "2"),
    "--batch-size": value("2", "8"),
    "--hidden": value("4", "8"),
    "--depth": value("1", "2"),
    "--teacher": value("", "missing_dir"),
    "--config": value("missing.json"),
    "--no-resume": None,
}


@FUZZ
@given(extra=flags(TRAIN2D_FLAGS))
def test_train2d_with_any_flags_exits_cleanly(tmp_path, monkeypatch, capsys, extra):
    out = tmp_path / "out"
    shutil.rmtree(out, ignore_errors=True)
    argv = ["train2d", *TINY_2D, *extra, "--out", str(out)]
    rc, _, err = run_main(argv, capsys)
    assert_clean_exit(argv, rc, err)
    if rc == 0:
        assert (out / "checkpoint.pt").is_file()


EVAL2D_FLAGS = {
    "--nfe": value("1", "1,2", "2,100"),
    "--n": value("2", "16"),
    "--seeds": value("1", "2"),
    "--sampler": value("euler", "heun", "flowmap", "gamma"),
    "--gamma": value("0", "0.5", "1"),
    "--json": value("res.json", "sub/res.json", ".", "run/checkpoint.pt", "run"),
}


@FUZZ
@given(
    extra=flags(EVAL2D_FLAGS), target=value("run", "run/checkpoint.pt", "missing", "run/log.csv")
)
def test_eval2d_with_any_flags_exits_cleanly_and_keeps_the_run(
    tmp_path, monkeypatch, capsys, runs, extra, target
):
    monkeypatch.chdir(tmp_path)
    shutil.rmtree("run", ignore_errors=True)
    shutil.copytree(runs / "run2d", "run")
    before = digest(Path("run"))
    argv = ["eval2d", target, "--n", "8", "--seeds", "1", "--nfe", "1", *extra]
    rc, _, err = run_main(argv, capsys)
    assert_clean_exit(argv, rc, err)
    assert digest(Path("run")) == before, f"{argv} changed the run directory"


EXPORT_FLAGS = {"--half": None}


@FUZZ
@given(
    source=value("run", "run/checkpoint.pt", "missing", "run/log.csv"),
    dest=value("out.pt", "run/checkpoint.pt", "run", ".", "sub/x.pt"),
    extra=flags(EXPORT_FLAGS),
)
def test_export_exits_cleanly_and_never_overwrites_the_run(
    tmp_path, monkeypatch, capsys, runs, source, dest, extra
):
    monkeypatch.chdir(tmp_path)
    shutil.rmtree("run", ignore_errors=True)
    shutil.copytree(runs / "run2d", "run")
    before = digest(Path("run"))
    argv = ["export", source, dest, *extra]
    rc, _, err = run_main(argv, capsys)
    assert_clean_exit(argv, rc, err)
    assert digest(Path("run")) == before, f"{argv} changed the run directory"


TRAIN_FLAGS = {
    "--set": st.lists(
        st.sampled_from(
            [
                "lr=0.01",
                "lr=nan",
                "steps=0",
                "batch_size=3",
                "grad_accum=2",
                "method=fm",
                "method=ct",
                "method=nope",
                "coupling=ot",
                "task=sr2",
                "coupling=paired",
                "image_size=6",
                "channel_mult=0",
                "attn_resolutions=8",
                "dropout=2",
                "seed=-1",
                "noequals",
                "=1",
                "amp=bf16",
                "eps=0.1",
            ]
        ),
        min_size=1,
        max_size=3,
    ).map(" ".join),
    "--device": value("cpu", "cuda", "cuda:7", "mps", "tpu"),
    "--resume": None,
}


@FUZZ
@given(extra=flags(TRAIN_FLAGS), config=value("patches_cpu", "sr2_cpu", "nope", "missing.json"))
def test_train_with_any_flags_exits_cleanly(tmp_path, monkeypatch, capsys, extra, config):
    monkeypatch.chdir(tmp_path)
    shutil.rmtree("out", ignore_errors=True)
    extra = [a for part in extra for a in (part.split(" ") if "=" in part else [part])]
    argv = ["train", "--config", config, "--out", "out", "--quiet", "--set", *TINY_IMAGE, *extra]
    rc, _, err = run_main(argv, capsys)
    assert_clean_exit(argv, rc, err)


EVAL_FLAGS = {
    "--nfe": value("1", "1,2"),
    "--num": value("4", "6"),
    "--batch": value("1", "4"),
    "--device": value("cpu", "cuda"),
    "--json": value("res.json", ".", "run/checkpoint.pt"),
    "--no-grid": None,
}


@FUZZ
@given(extra=flags(EVAL_FLAGS), target=value("run", "run/checkpoint.pt", "missing", "run2d"))
def test_eval_with_any_flags_exits_cleanly_and_keeps_the_run(
    tmp_path, monkeypatch, capsys, runs, extra, target
):
    monkeypatch.chdir(tmp_path)
    for name, src in (("run", "runimg"), ("run2d", "run2d")):
        shutil.rmtree(name, ignore_errors=True)
        shutil.copytree(runs / src, name)
    before = digest(Path("run"))
    argv = ["eval", target, "--num", "4", "--batch", "4", "--nfe", "1", "--no-grid", *extra]
    rc, _, err = run_main(argv, capsys)
    assert_clean_exit(argv, rc, err)
    assert digest(Path("run")) == before, f"{argv} changed the run directory"


@FUZZ
@given(
    argv=st.lists(
        st.sampled_from(
            [
                "demo",
                "train2d",
                "eval2d",
                "train",
                "eval",
                "export",
                "classroom",
                "grade",
                "build",
                "--help",
                "--out",
                "--steps",
                "--n",
                "--nfe",
                "-x",
                "",
                "é",
                "nope",
            ]
        ),
        max_size=4,
    )
)
def test_any_word_list_exits_cleanly(tmp_path, monkeypatch, capsys, argv):
    monkeypatch.chdir(tmp_path)
    if argv[:1] == ["demo"] and "--help" not in argv:
        argv = [*argv, "--steps", "1", "--n", "2", "--quiet", "--out", "demo"]
    if "train2d" in argv and "--help" not in argv:
        argv = [*argv, *TINY_2D]
    rc, _, err = run_main(argv, capsys)
    assert_clean_exit(argv, rc, err)


@FUZZ
@given(
    content=st.sampled_from(
        ["", "{}", "[]", '{"cells": 1}', '{"cells": [{"metadata": 1}]}', "not json", "\x00\xff"]
    ),
    no_run=st.booleans(),
    csv=value("grades.csv", ".", "sub/grades.csv"),
)
def test_classroom_grade_of_any_file_exits_cleanly(
    tmp_path, monkeypatch, capsys, content, no_run, csv
):
    monkeypatch.chdir(tmp_path)
    Path("nb.ipynb").write_text(content, encoding="utf-8", errors="surrogateescape")
    argv = ["classroom", "grade", "nb.ipynb", "--csv", csv, *(["--no-run"] if no_run else [])]
    rc, _, err = run_main(argv, capsys)
    assert_clean_exit(argv, rc, err)


def test_demo_with_tiny_settings_exits_cleanly(tmp_path, monkeypatch, capsys):
    argv = ["demo", "--steps", "1", "--n", "4", "--quiet", "--out", str(tmp_path / "demo")]
    rc, _, err = run_main(argv, capsys)
    assert_clean_exit(argv, rc, err)


@pytest.mark.parametrize(
    "argv, status",
    [
        ([], 2),
        (["train2d", "--lr", "nan", "--out", "x"], 2),
        (["eval2d", "does/not/exist"], 2),
        (["export", "does/not/exist", "x.pt"], 2),
        (["train", "--config", "nope", "--out", "x"], 2),
        (["--help"], 0),
    ],
)
def test_the_command_line_in_a_subprocess_exits_with_its_documented_status(tmp_path, argv, status):
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "PYTHONWARNINGS": "ignore",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "gctm_mini", *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == status, proc.stderr
    assert "Traceback" not in proc.stderr
    if status:
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
