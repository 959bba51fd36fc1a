"""Run directories: one writer at a time, atomic files, clear errors, nothing half-written.

A training run writes ``config.json``, ``checkpoint.pt``, ``log.csv`` (and, for images, sample
grids) into its run directory (``--out``). :class:`RunDirectory` holds that directory for the
whole run:

- **One writer.** An exclusive ``fcntl.flock`` on ``DIR/.lock`` is taken when the run starts
  and held until it ends. A second run on the same directory is refused at once with
  :class:`RunDirectoryBusyError`, naming the directory and the PID of the holder (written into the
  lock file). The operating system drops the lock when the holding process dies, so a run
  killed by SIGKILL leaves at most an unlocked ``.lock`` file, which the next run (a resume)
  simply takes over. Where ``fcntl`` does not exist (Windows) the directory is not locked: a
  warning says so, and keeping one writer per directory is then up to the user.
- **Atomic files.** Every file is written to a uniquely named temporary file in the same
  directory and renamed over the target (:mod:`gctm_mini.checkpoint`); temporary files end in
  ``.tmp``, and any left in the directory (or its ``samples/``) by a killed run are removed
  when the next run starts.
- **Clear errors.** A failed file-system operation raises :class:`RunDirectoryError` (an
  ``OSError``) whose message is one line: what failed, on which path, and why (``No space left
  on device``, ``Permission denied``, …).
- **Nothing half-written.** If the run fails before a checkpoint exists in the directory, the
  files and directories this run created are removed again; once a checkpoint exists,
  everything is kept (the checkpoint is the last good state to resume from).
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from pathlib import Path

from .checkpoint import FILENAME, atomic_write_bytes, save_checkpoint, write_csv

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK_NAME = ".lock"


class RunDirectoryError(OSError):
    """A run directory that cannot be created, locked or written (message: what, where, why)."""


class RunDirectoryBusyError(RunDirectoryError):
    """Another process is running in this run directory."""


def _why(err: OSError) -> str:
    return err.strerror or str(err)


def _wrap(what: str, path: Path, err: OSError, note: str = "") -> RunDirectoryError:
    out = RunDirectoryError(f"cannot {what} {path}: {_why(err)}{note}")
    out.errno = err.errno
    return out


def run_path(path: str | os.PathLike) -> Path:
    """``path`` as a :class:`~pathlib.Path`; an empty name (which ``Path`` would read as the
    current directory) raises :class:`RunDirectoryError`."""
    if not isinstance(path, (str, os.PathLike)) or not str(os.fspath(path)).strip():
        raise RunDirectoryError(
            f"run directory must be a non-empty path (use '.' for the current directory); "
            f"got {path!r}"
        )
    return Path(path)


class RunDirectory:
    """The run directory ``path``, created if needed and held exclusively while open.

    Use as a context manager (``with RunDirectory(out) as run: …``). On leaving it the lock is
    released; if the block raised and no ``checkpoint.pt`` exists, every file and directory
    this run created is removed.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = run_path(path)
        self._created: list[Path] = []
        self._fd: int | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> RunDirectory:
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(failed=exc_type is not None)

    def open(self) -> None:
        """Create the directory (and missing parents), lock it, sweep stale temporary files."""
        p = self.path
        if p.exists() and not p.is_dir():
            raise RunDirectoryError(f"run directory {p} exists and is not a directory")
        missing = []
        for q in (p, *p.parents):
            if q.exists():
                break
            missing.append(q)
        try:
            p.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise _wrap("create run directory", p, err) from err
        self._created.extend(reversed(missing))
        try:
            self._lock()
            for tmp in [*p.glob("*.tmp"), *p.glob("samples/*.tmp")]:
                if tmp.is_file():
                    tmp.unlink()
        except BaseException:
            self.close(failed=True)
            raise

    def close(self, failed: bool = False) -> None:
        """Release the lock; after a failure with no checkpoint, remove what this run created."""
        cleanup = failed and not self.has_checkpoint
        if cleanup:  # files first, while still holding the lock
            for q in reversed(self._created):
                if not q.is_dir():
                    with contextlib.suppress(OSError):
                        q.unlink()
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path / LOCK_NAME)  # before unlocking (see _lock)
            os.close(self._fd)
            self._fd = None
        if cleanup:  # then the directories this run created, deepest first, if empty
            for q in reversed(self._created):
                if q.is_dir():
                    with contextlib.suppress(OSError):
                        q.rmdir()
        self._created.clear()

    # -- locking ---------------------------------------------------------------------------

    def _lock(self) -> None:
        lock = self.path / LOCK_NAME
        if fcntl is None:
            warnings.warn(
                f"run-directory locking is not available on this platform; make sure only one "
                f"run writes to {self.path}",
                stacklevel=3,
            )
            return
        while True:
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise _wrap("lock run directory", self.path, err) from err
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd)
                os.close(fd)
                who = f"process {holder}" if holder else "another process"
                raise RunDirectoryBusyError(
                    f"run directory {self.path} is in use by {who}; wait for that run to "
                    f"finish or choose another --out"
                ) from None
            except OSError as err:
                os.close(fd)
                raise _wrap("lock run directory", self.path, err) from err
            # The holder unlinks the lock file before it unlocks; if we locked a file that
            # was unlinked meanwhile, our lock guards nothing: open the new file and retry.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(lock))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self._fd = fd
        with contextlib.suppress(OSError):  # the PID is informative only
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())

    # -- writing ---------------------------------------------------------------------------

    def _track(self, path: Path) -> None:
        if not path.exists() and path not in self._created:
            self._created.append(path)

    def write_bytes(self, name: str | os.PathLike, data: bytes, what: str = "write") -> Path:
        """Atomically write ``data`` to ``DIR/name`` (parents created)."""
        path = self.path / name
        try:
            for q in reversed(path.parents):
                if q != self.path and self.path in q.parents and not q.exists():
                    self._track(q)
                    q.mkdir()
            self._track(path)
            return atomic_write_bytes(path, data)
        except OSError as err:
            raise _wrap(what, path, err) from err

    def write_json(self, name: str, obj) -> Path:
        """Atomically write ``obj`` as indented JSON to ``DIR/name``."""
        return self.write_bytes(name, json.dumps(obj, indent=2).encode("utf-8"))

    def write_csv(self, name: str, rows: list[dict]) -> Path:
        """Atomically write ``rows`` as a CSV table to ``DIR/name`` (see ``write_csv``)."""
        path = self.path / name
        self._track(path)
        try:
            return write_csv(path, rows)
        except OSError as err:
            raise _wrap("write", path, err) from err

    def save_checkpoint(self, payload: dict) -> Path:
        """Atomically write ``DIR/checkpoint.pt``; the previous one survives a failed write."""
        path = self.path / FILENAME
        try:
            return save_checkpoint(path, payload)
        except OSError as err:
            kept = " (the previous checkpoint is kept)" if path.exists() else ""
            raise _wrap("write checkpoint", path, err, kept) from err

    @property
    def has_checkpoint(self) -> bool:
        return (self.path / FILENAME).exists()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text else None
    except (OSError, ValueError, AttributeError):
        return None


def prepare_output_dir(path: str | os.PathLike) -> Path:
    """``mkdir -p path`` with a one-line :class:`RunDirectoryError` instead of a traceback."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise RunDirectoryError(f"output directory {p} exists and is not a directory")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _wrap("create output directory", p, err) from err
    return p


def write_output(path: str | os.PathLike, data: bytes) -> Path:
    """Atomically write ``data`` to ``path`` (a figure, a report) outside a run directory;
    a failure is one :class:`RunDirectoryError` line and leaves no partial file."""
    p = Path(path)
    try:
        return atomic_write_bytes(p, data)
    except OSError as err:
        raise _wrap("write", p, err) from err


def describe_error(err: BaseException) -> str:
    """A one-line message: an ``OSError`` of the OS as ``PATH: reason``, others as they are."""
    if isinstance(err, OSError) and not isinstance(err, RunDirectoryError) and err.strerror:
        where = f"{err.filename}: " if err.filename else ""
        text = f"{where}{err.strerror}"
    else:
        text = str(err)
    return " ".join(text.split())
