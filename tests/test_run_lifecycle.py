"""The life of a run directory: a diverged run stops and keeps its last finite checkpoint, one
directory has one writer (a lock that a killed run does not leave blocking), and file-system
failures are one line, leave nothing half-written and no temporary files."""

import csv
import errno
import io
import math
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import gctm_mini.checkpoint as ckpt_mod
from gctm_mini.checkpoint import load_checkpoint, load_raw, write_csv
from gctm_mini.cli import main as cli_main
from gctm_mini.methods import TrainingMethod
from gctm_mini.rundir import LOCK_NAME, RunDirectoryBusyError, RunDirectoryError
from gctm_mini.training import Toy2DConfig, TrainingDivergedError, train2d

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--steps", "10", "--batch-size", "32", "--hidden", "16", "--depth", "2", "--quiet"]


def small_cfg(**kw) -> Toy2DConfig:
    base = dict(steps=40, batch_size=32, hidden=16, depth=2, ckpt_every=10, log_every=5)
    base.update(kw)
    return Toy2DConfig(**base)


def train2d_cli(out, *extra):
    return cli_main(["train2d", *SMALL, "--out", str(out), *extra])


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert "Traceback" not in err
    return err


def all_finite(obj) -> bool:
    if torch.is_tensor(obj):
        return not obj.is_floating_point() or bool(torch.isfinite(obj).all())
    if isinstance(obj, float):
        return math.isfinite(obj)
    if isinstance(obj, dict):
        return all(all_finite(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return all(all_finite(v) for v in obj)
    return True


def leftovers(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.name.endswith(".tmp") or p.name == LOCK_NAME)


def python_env() -> dict:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "PYTHONWARNINGS": "ignore",
        "OMP_NUM_THREADS": "1",
    }


# -- divergence --------------------------------------------------------------------------------


def test_a_huge_learning_rate_stops_the_cli_run_and_keeps_the_last_finite_checkpoint(
    tmp_path, capsys
):
    out = tmp_path / "run"
    # lr = 1e30: step 1 has a finite loss and leaves huge but finite weights; step 2 overflows
    rc = train2d_cli(out, "--lr", "1e30", "--ckpt-every", "1", "--log-every", "1")
    err = one_error_line(capsys)
    assert rc == 1
    assert "diverged at step 2" in err and "fm = inf" in err and "lower lr" in err, err
    assert "step 1" in err and str(out / "checkpoint.pt") in err, err
    state = load_raw(out)
    assert state["step"] == 1 and all_finite(state)
    with (out / "log.csv").open(newline="") as f:
        assert [float(r["loss"]) for r in csv.DictReader(f)] == [state["history"][0]["loss"]]
    assert leftovers(out) == []


def poison_after_step(monkeypatch, at: int, name: str = "net.body.0.weight"):
    """Make one parameter NaN right after update number ``at`` (as an infinite lr would)."""
    calls = {"n": 0}
    orig = TrainingMethod.after_step

    def after_step(self, model):
        orig(self, model)
        calls["n"] += 1
        if calls["n"] == at:
            with torch.no_grad():
                dict(model.named_parameters())[name][0, 0] = float("nan")

    monkeypatch.setattr(TrainingMethod, "after_step", after_step)


def test_non_finite_parameters_after_an_update_are_never_checkpointed(tmp_path, monkeypatch):
    poison_after_step(monkeypatch, at=20)  # a checkpoint step: its loss was finite
    with pytest.raises(TrainingDivergedError, match="step 20: non-finite parameter net.body.0"):
        train2d(small_cfg(), tmp_path, progress=False)
    state = load_raw(tmp_path)
    assert state["step"] == 10 and all_finite(state)
    assert leftovers(tmp_path) == []


def test_an_in_memory_run_does_not_return_a_non_finite_model(monkeypatch):
    poison_after_step(monkeypatch, at=7)  # the last update: no later loss would see it
    with pytest.raises(TrainingDivergedError, match="step 7: non-finite parameter"):
        train2d(small_cfg(steps=7), progress=False)


def test_a_non_finite_parameter_is_caught_by_the_next_loss(tmp_path, monkeypatch):
    poison_after_step(monkeypatch, at=12)
    with pytest.raises(TrainingDivergedError) as info:
        train2d(small_cfg(), tmp_path, progress=False)
    msg = str(info.value)
    assert "step 13: non-finite loss term fm = nan" in msg
    assert "already non-finite after the previous update" in msg
    assert "the last finite checkpoint, step 10" in msg
    assert load_raw(tmp_path)["step"] == 10


def fake_loss(monkeypatch, at: int, term: str | None):
    """From call ``at`` on, make logged ``term`` NaN, or (``term=None``) only the total inf."""
    calls = {"n": 0}
    orig = TrainingMethod.loss

    def loss(self, *a, **k):
        value, logs = orig(self, *a, **k)
        calls["n"] += 1
        if calls["n"] >= at:
            if term is None:
                return value * float("inf"), logs
            return value * float("nan"), {**logs, term: float("nan")}
        return value, logs

    monkeypatch.setattr(TrainingMethod, "loss", loss)


@pytest.mark.parametrize("method, term", [("gctm", "consistency"), ("gctm", "fm"), ("ct", "soft")])
def test_the_message_names_the_non_finite_term(tmp_path, monkeypatch, method, term):
    fake_loss(monkeypatch, at=4, term=term)
    with pytest.raises(TrainingDivergedError, match=f"step 4: non-finite loss term {term} = nan"):
        train2d(small_cfg(method=method), tmp_path, progress=False)
    assert not tmp_path.exists() or list(tmp_path.iterdir()) == []


def test_a_non_finite_total_of_finite_terms_points_at_the_loss_weight(monkeypatch):
    fake_loss(monkeypatch, at=3, term=None)
    with pytest.raises(TrainingDivergedError, match=r"total loss is inf although every term is "):
        train2d(small_cfg(method="gctm"), progress=False)
    with pytest.raises(TrainingDivergedError, match=r"check the loss weight lam \(now 2\)"):
        train2d(small_cfg(method="gctm"), progress=False)


def test_a_run_that_diverges_before_its_first_checkpoint_leaves_no_directory(tmp_path, capsys):
    out = tmp_path / "a" / "b"
    assert train2d_cli(out, "--lr", "1e30", "--ckpt-every", "5") == 1
    assert "no checkpoint was written" in one_error_line(capsys)
    assert list(tmp_path.iterdir()) == []


# -- one writer per run directory --------------------------------------------------------------

HOLDER = """
import sys, time
from pathlib import Path
from gctm_mini.training import Toy2DConfig, train2d

out = Path(sys.argv[1])
def hold(step, model):
    (out.parent / "ready").write_text("1")
    time.sleep(300)
    return {}
cfg = Toy2DConfig(steps=40, batch_size=32, hidden=16, depth=2, ckpt_every=5, log_every=5)
train2d(cfg, out, progress=False, callback=hold, callback_every=10)
"""


@pytest.mark.slow
def test_a_second_run_in_the_same_directory_is_refused_naming_the_holder(tmp_path, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out)], env=python_env(), stderr=subprocess.PIPE
    )
    try:
        deadline = time.time() + 120
        while not (tmp_path / "ready").exists():
            assert holder.poll() is None, holder.stderr.read()
            assert time.time() < deadline
            time.sleep(0.05)
        before = {p.name: p.read_bytes() for p in out.iterdir() if p.name != LOCK_NAME}
        t0 = time.perf_counter()
        assert train2d_cli(out, "--no-resume") == 1
        err = one_error_line(capsys)
        assert time.perf_counter() - t0 < 5  # refused at once, not after waiting
        assert f"run directory {out} is in use by process {holder.pid}" in err, err
        with pytest.raises(RunDirectoryBusyError, match=str(holder.pid)):
            train2d(small_cfg(), out, progress=False)
        from gctm_mini.train_images import make_config, train_images

        with pytest.raises(RunDirectoryBusyError, match="in use"):
            train_images(make_config("patches_cpu", ["steps=1"]), out, resume=True)
        after = {p.name: p.read_bytes() for p in out.iterdir() if p.name != LOCK_NAME}
        assert after == before and load_raw(out)["step"] == 5
    finally:
        holder.kill()
        holder.wait()


KILLED = """
import os, signal, sys
from pathlib import Path
from gctm_mini.training import Toy2DConfig, train2d

out = Path(sys.argv[1])
def die(step, model):
    if step == 20:  # after the step-10 checkpoint, before the step-20 one, mid-write
        (out / ".checkpoint.pt.half.tmp").write_bytes(b"PK half a zip")
        os.kill(os.getpid(), signal.SIGKILL)
    return {}
cfg = Toy2DConfig(steps=40, batch_size=32, hidden=16, depth=2, ckpt_every=10, log_every=5)
train2d(cfg, out, progress=False, callback=die, callback_every=10)
"""


@pytest.mark.slow
def test_a_lock_left_by_a_killed_run_does_not_block_an_exact_resume(tmp_path):
    cfg = small_cfg()
    full = train2d(cfg, tmp_path / "full", progress=False)
    out = tmp_path / "cut"
    victim = subprocess.run([sys.executable, "-c", KILLED, str(out)], env=python_env(), timeout=300)
    assert victim.returncode == -signal.SIGKILL
    assert load_raw(out)["step"] == 10
    assert leftovers(out) == [".checkpoint.pt.half.tmp", LOCK_NAME]
    assert (out / LOCK_NAME).read_text().strip().isdigit()  # the dead holder's PID
    resumed = train2d(cfg, out, progress=False)
    assert leftovers(out) == []
    for a, b in zip(full.ema.state_dict().values(), resumed.ema.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert [r["loss"] for r in full.history] == [r["loss"] for r in resumed.history]


def test_without_fcntl_a_run_warns_that_its_directory_is_not_locked(tmp_path, monkeypatch):
    import gctm_mini.rundir as rundir

    monkeypatch.setattr(rundir, "fcntl", None)
    with pytest.warns(UserWarning, match="locking is not available"):
        train2d(small_cfg(steps=10), tmp_path, progress=False)
    assert load_raw(tmp_path)["step"] == 10 and leftovers(tmp_path) == []


def _write_many(path: str, tag: int, n: int, failures) -> None:
    try:
        for k in range(n):
            write_csv(path, [{"writer": tag, "k": k, "pad": "x" * 2000}] * 20)
    except Exception as err:  # pragma: no cover - reported to the test
        failures.put(repr(err))


def test_concurrent_writers_of_one_file_never_share_a_temporary_file(tmp_path):
    path = str(tmp_path / "table.csv")
    ctx = multiprocessing.get_context("fork")
    failures = ctx.Queue()
    procs = [ctx.Process(target=_write_many, args=(path, tag, 100, failures)) for tag in (1, 2)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join(timeout=300)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
    errors = []
    while not failures.empty():
        errors.append(failures.get())
    assert errors == [] and all(p.exitcode == 0 for p in procs)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 20 and len({(r["writer"], r["k"]) for r in rows}) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]


# -- file-system errors ------------------------------------------------------------------------


def test_out_naming_a_file_is_one_line_and_leaves_the_file_alone(tmp_path, capsys):
    f = tmp_path / "notes.txt"
    f.write_text("keep me")
    assert train2d_cli(f) == 1
    assert f"run directory {f} exists and is not a directory" in one_error_line(capsys)
    assert train2d_cli(f / "run") == 1
    assert "cannot create run directory" in one_error_line(capsys)
    assert cli_main(["train", "--config", "patches_cpu", "--out", str(f), "--quiet"]) == 1
    assert "is not a directory" in one_error_line(capsys)
    assert cli_main(["demo", "--out", str(f), "--steps", "3", "--quiet"]) == 1
    assert "is not a directory" in one_error_line(capsys)
    assert f.read_text() == "keep me"


def test_a_read_only_run_directory_is_one_line(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        try:  # root (and some file systems) ignore the mode bits: nothing to test then
            (ro / "probe").write_text("")
            (ro / "probe").unlink()
            pytest.skip("this user can write into a read-only directory (root?)")
        except PermissionError:
            pass
        assert train2d_cli(ro) == 1
        assert "Permission denied" in one_error_line(capsys)
        assert train2d_cli(ro / "run") == 1
        assert "cannot create run directory" in one_error_line(capsys)
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


class Disk:
    """Every atomic write of :mod:`gctm_mini.checkpoint` draws on ``free`` bytes; a write
    that does not fit fails with ENOSPC, as on a full disk."""

    def __init__(self, monkeypatch, free: int) -> None:
        self.free = free
        real = os.fdopen

        def fdopen(fd, *a, **k):
            return self.File(real(fd, *a, **k), self)

        monkeypatch.setattr(ckpt_mod.os, "fdopen", fdopen)

    class File(io.RawIOBase):
        def __init__(self, f, disk) -> None:
            self.f, self.disk = f, disk

        def write(self, data) -> int:
            n = len(data)
            if n > self.disk.free:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.disk.free -= n
            return self.f.write(data)

        def flush(self) -> None:
            self.f.flush()

        def fileno(self) -> int:
            return self.f.fileno()

        def close(self) -> None:
            self.f.close()

        def __exit__(self, *exc) -> None:
            self.f.close()


def test_a_full_disk_at_the_start_leaves_no_empty_config(tmp_path, monkeypatch, capsys):
    Disk(monkeypatch, free=0)
    out = tmp_path / "run"
    assert train2d_cli(out) == 1
    err = one_error_line(capsys)
    assert f"cannot write {out / 'config.json'}: No space left on device" in err, err
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_at_the_first_checkpoint_removes_what_the_run_created(
    tmp_path, monkeypatch, capsys
):
    Disk(monkeypatch, free=2000)  # config.json fits, the checkpoint does not
    out = tmp_path / "existing"
    out.mkdir()
    assert train2d_cli(out) == 1
    err = one_error_line(capsys)
    assert f"cannot write checkpoint {out / 'checkpoint.pt'}: No space left on device" in err
    assert "unexpected pos" not in err
    assert list(out.iterdir()) == []  # the directory was there before: it stays, empty


def test_a_full_disk_later_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    cfg = small_cfg(steps=20)
    train2d(cfg, tmp_path / "probe", progress=False, stop_after=10)
    used = sum(p.stat().st_size for p in (tmp_path / "probe").iterdir())
    Disk(monkeypatch, free=used + 500)  # room for everything up to step 10, not for step 20
    out = tmp_path / "run"
    with pytest.raises(RunDirectoryError, match="No space left on device") as info:
        train2d(cfg, out, progress=False)
    assert info.value.errno == errno.ENOSPC
    assert "the previous checkpoint is kept" in str(info.value)
    monkeypatch.undo()
    assert load_raw(out)["step"] == 10 and load_checkpoint(out) is not None
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "config.json", "log.csv"]
    train2d(cfg, out, progress=False)  # and the run resumes once there is room again
    assert load_raw(out)["step"] == 20


FSIZE = """
import resource, signal, sys
from gctm_mini.cli import main

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (8000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs RLIMIT_FSIZE (POSIX)")
def test_a_file_size_limit_is_one_line_naming_the_real_cause(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run(
        [sys.executable, "-c", FSIZE, "train2d", *SMALL, "--out", str(out)],
        env=python_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip() == (
        f"error: cannot write checkpoint {out / 'checkpoint.pt'}: File too large"
    )
    assert not out.exists()


def test_the_demo_figure_is_written_atomically_or_not_at_all(tmp_path, monkeypatch, capsys):
    from gctm_mini import demo

    monkeypatch.setattr(demo, "train2d", lambda cfg, out, **k: train2d(cfg, None, **k))
    Disk(monkeypatch, free=1000)
    assert cli_main(["demo", "--out", str(tmp_path), "--steps", "3", "--n", "32", "--quiet"]) == 1
    err = one_error_line(capsys)
    assert f"cannot write {tmp_path / 'demo.png'}: No space left on device" in err
    assert list(tmp_path.iterdir()) == []


def test_no_file_of_a_run_is_private_to_its_owner(tmp_path):
    old = os.umask(0o022)
    try:
        train2d(small_cfg(steps=10), tmp_path, progress=False)
    finally:
        os.umask(old)
    for p in tmp_path.iterdir():
        assert p.stat().st_mode & 0o777 == 0o644, p.name
