"""Checkpoints: written atomically, refused with a clear message when truncated, corrupted,
foreign or incomplete.

A checkpoint is one ``torch.save`` file holding a dict tagged ``format = "gctm_mini"``:
the model spec, online and EMA weights, optimizer state, step, RNG states, the run config
and the training log, plus a SHA-256 checksum over every tensor in it (:func:`state_checksum`),
verified on load: a flipped bit in the weights, which ``torch.load`` reads without complaint,
is refused. (Checkpoints written before the checksum existed load unchecked.) It is written
to a temporary file with a unique name in the same
directory (``tempfile.mkstemp``, so two writers never share one), flushed and fsynced, then
renamed over the old one (``os.replace`` is atomic on POSIX and Windows), so a run killed at
any moment leaves either the previous or the new checkpoint, never half of one. A failed
write removes its temporary file and raises the ``OSError`` of the failing write (e.g.
``ENOSPC``, "No space left on device"), not the serializer's follow-up error. Tables (training
logs, benchmark results) and small text files are written the same way (:func:`write_csv`,
:func:`atomic_write_bytes`); temporary files end in ``.tmp``.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import os
import tempfile
import threading
from pathlib import Path

import torch
from torch import nn

from .models import build_model
from .parameterization import FlowMapModel

FORMAT = "gctm_mini"
VERSION = 1
FILENAME = "checkpoint.pt"
CHECKSUM = "checksum"
RESUME_ENTRIES = (
    "spec",
    "config",
    "model",
    "ema",
    "optimizer",
    "scheduler",
    "method",
    "step",
    "history",
    "seconds",
)
"""What a run's checkpoint needs to be resumed (the 2D loop adds ``rng``, images ``scaler``)."""


class CheckpointError(RuntimeError):
    """A file that is not a readable gctm_mini checkpoint."""


def checkpoint_path(path: str | os.PathLike) -> Path:
    """``DIR/checkpoint.pt`` for a directory, ``path`` itself for a file."""
    p = Path(path)
    return p / FILENAME if p.is_dir() or p.suffix != ".pt" else p


class _RecordingWriter:
    """A file wrapper that remembers the ``OSError`` of a failed write.

    ``torch.save`` reports a failed write of its zip container as ``RuntimeError("unexpected
    pos …")``; the recorded error names the real cause (ENOSPC, EFBIG, EIO, …).
    """

    def __init__(self, f) -> None:
        self.f = f
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.f.flush()


_umask_lock = threading.Lock()


def _file_mode() -> int:
    """``0o666`` minus the process umask: the mode ``open()`` would give a new file
    (``mkstemp`` creates files readable by the owner only)."""
    with _umask_lock:  # reading the umask means setting it; set it straight back
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


def _atomic_write(dest: Path, write) -> Path:
    """Write ``dest`` atomically: ``write(f)`` fills a unique temporary file in the same
    directory, which is fsynced and renamed over ``dest``; on failure it is removed and the
    write's own ``OSError`` is raised."""
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            rec = _RecordingWriter(f)
            try:
                write(rec)
                f.flush()
            except RuntimeError as err:
                if rec.error is not None:
                    raise rec.error from err
                raise
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), _file_mode())
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    return dest


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (unique temporary file, fsync, rename)."""
    return _atomic_write(Path(path), lambda f: f.write(data))


def save_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    """Atomically write ``payload`` (plus the format tag) to ``path`` (file or directory).

    Raises the ``OSError`` of a failed write (the previous checkpoint, if any, is untouched
    and no temporary file is left).
    """
    dest = checkpoint_path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    data = {"format": FORMAT, "version": VERSION, **payload}
    data[CHECKSUM] = state_checksum(data)
    return _atomic_write(dest, lambda f: torch.save(data, f))


def state_checksum(data: dict) -> str:
    """SHA-256 over every tensor in ``data`` (nested dicts and lists), in a fixed order.

    Each tensor contributes its place in the dict, dtype, shape and raw bytes (hashed in
    place, no copy on the CPU); the top-level ``checksum`` entry and non-tensor values (config,
    log) are left out. About 1 s per GB of tensors.
    """
    h = hashlib.sha256()

    def visit(obj, where: str) -> None:
        if torch.is_tensor(obj):
            t = obj.detach()
            h.update(f"{where}|{t.dtype}|{tuple(t.shape)}\n".encode())
            if t.numel():
                h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
        elif isinstance(obj, dict):
            for k in sorted(obj, key=str):
                if not (where == "" and k == CHECKSUM):
                    visit(obj[k], f"{where}/{k}")
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                visit(v, f"{where}/{i}")

    visit(data, "")
    return h.hexdigest()


def load_raw(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read and validate a checkpoint dict; raise :class:`CheckpointError` if unusable.

    Refused: a file ``torch.load`` cannot read (truncated, foreign), one without the format
    tag or from a newer version, one without ``spec`` and ``ema``, and one whose tensors no
    longer match the checksum stored with them (corrupted on disk or in transfer).
    """
    p = checkpoint_path(path)
    if not p.exists():
        raise FileNotFoundError(f"no checkpoint at {p}")
    try:
        data = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, pickle of something else, …
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise CheckpointError(
            f"{p} is not a readable gctm_mini checkpoint (truncated or foreign file): {first}"
        ) from err
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{p} is not a gctm_mini checkpoint (missing format tag)")
    version = data.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise CheckpointError(f"{p} has a version entry that is not a number: {version!r}")
    if version > VERSION:
        raise CheckpointError(f"{p} has version {version}; this gctm_mini reads ≤ {VERSION}")
    for key in ("spec", "ema"):
        if key not in data:
            raise CheckpointError(f"{p} lacks the {key!r} entry")
    if CHECKSUM in data and state_checksum(data) != data[CHECKSUM]:
        raise CheckpointError(
            f"{p} is corrupted: its tensors do not match the checksum written with them"
        )
    return data


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", which: str = "ema"
) -> FlowMapModel:
    """Load the model of a run directory or checkpoint file, ready for sampling.

    Returns the EMA model (``which="ema"``, default) or the online one (``"model"``), in eval
    mode with gradients off. It exposes ``G(x, t, s)``, ``g(x, t, s)`` and ``velocity(x, t)``.
    Weights that do not fit the model the spec describes raise :class:`CheckpointError`.
    """
    if which not in ("ema", "model"):
        raise ValueError(f"which must be 'ema' or 'model'; got {which!r}")
    data = load_raw(path, map_location)
    p = checkpoint_path(path)
    if which not in data:
        raise CheckpointError(
            f"{p} is an exported EMA-only checkpoint; it has no {which!r} weights"
        )
    config = data.get("config", {})
    if not isinstance(config, dict):
        raise CheckpointError(f"{p}: the run config must be a dict; got {type(config).__name__}")
    # shapes first, on the meta device: a damaged spec cannot allocate a huge model
    check_state_fits(
        _build(data["spec"], p, net_device="meta"), data[which], f"{p} ({which!r} weights)"
    )
    bad = [
        k for k, v in data[which].items() if v.is_floating_point() and not bool(v.isfinite().all())
    ]
    if bad:
        raise CheckpointError(
            f"{p} ({which!r} weights) holds NaN/inf in {len(bad)} tensor(s), e.g. {bad[0]} "
            "(saved from a diverged run?)"
        )
    model = _build(data["spec"], p)
    model.load_state_dict(data[which])
    model.train_config = config
    return model.to(map_location).eval().requires_grad_(False)


def load_resumable(
    path: str | os.PathLike,
    config: dict,
    spec: dict,
    map_location: str | torch.device = "cpu",
    extra: tuple[str, ...] = (),
) -> dict:
    """The checkpoint of a run to be resumed, checked against the run's ``config`` and ``spec``.

    Refused with one clear line: an exported EMA-only file (no optimizer state), a checkpoint
    without one of :data:`RESUME_ENTRIES` or ``extra``, one from a different config
    (``ValueError``) or model spec, and weights or optimizer moments whose shapes do not
    fit the model.
    """
    data = load_raw(path, map_location)
    p = checkpoint_path(path)
    if "model" not in data and "optimizer" not in data:
        raise CheckpointError(
            f"{p} is an exported EMA-only checkpoint (no online weights or optimizer state): "
            "it can be sampled or used as a teacher, not resumed; train into a new --out"
        )
    missing = [k for k in (*RESUME_ENTRIES, *extra) if k not in data]
    if missing:
        raise CheckpointError(
            f"{p} cannot be resumed: it lacks the {', '.join(map(repr, missing))} "
            f"entr{'y' if len(missing) == 1 else 'ies'}"
        )
    if data["config"] != config:
        old = data["config"] if isinstance(data["config"], dict) else {}
        diff = [k for k in sorted(set(old) | set(config)) if old.get(k) != config.get(k)]
        shown = ", ".join(
            f"{k}: {old.get(k)!r} in the run, {config.get(k)!r} now" for k in diff[:3]
        )
        raise ValueError(
            f"{p.parent} holds a run with a different config ({shown}"
            f"{', …' if len(diff) > 3 else ''}); use a new --out"
        )
    if data["spec"] != spec:
        raise CheckpointError(f"{p} was written for a different model spec than its config gives")
    model = _build(spec, p, net_device="meta")  # shapes only: no memory, no init cost
    check_state_fits(model, data["model"], f"{p} ('model' weights)")
    check_state_fits(model, data["ema"], f"{p} ('ema' weights)")
    _check_optimizer_fits(data["optimizer"], list(model.parameters()), p)
    if config.get("method") == "cd":  # CD's EMA target network is part of the method state
        target = data["method"].get("target") if isinstance(data["method"], dict) else None
        if target is None:
            raise CheckpointError(f"{p} cannot be resumed: it lacks CD's target network")
        check_state_fits(model, target, f"{p} (CD target weights)")
    return data


def check_state_fits(model: nn.Module, state, where: str) -> None:
    """Raise :class:`CheckpointError` unless ``state`` has exactly ``model``'s state-dict keys
    with the same shapes (dtypes may differ: an exported float16 copy loads into float32)."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{where}: expected a dict of tensors; got {type(state).__name__}")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    if missing or extra:
        raise CheckpointError(
            f"{where} do not fit the model its spec describes: {len(missing)} missing "
            f"(e.g. {missing[:1]}), {len(extra)} unexpected (e.g. {extra[:1]})"
        )
    for k, v in own.items():
        w = state[k]
        if not torch.is_tensor(w) or tuple(w.shape) != tuple(v.shape):
            got = tuple(w.shape) if torch.is_tensor(w) else type(w).__name__
            raise CheckpointError(
                f"{where} do not fit the model its spec describes: {k} has shape {got}, "
                f"the model needs {tuple(v.shape)}"
            )


def _check_optimizer_fits(state, params: list[nn.Parameter], p: Path) -> None:
    """Adam's moments must have the shapes of the parameters they belong to."""
    try:
        ids = [i for g in state["param_groups"] for i in g["params"]]
        moments = state["state"]
    except (KeyError, TypeError):
        raise CheckpointError(f"{p}: the optimizer state is not a torch optimizer's") from None
    if len(ids) != len(params):
        raise CheckpointError(
            f"{p}: the optimizer state covers {len(ids)} parameters; the model has {len(params)}"
        )
    for i, param in zip(ids, params, strict=True):
        for name, v in moments.get(i, {}).items():
            if torch.is_tensor(v) and v.dim() > 0 and tuple(v.shape) != tuple(param.shape):
                raise CheckpointError(
                    f"{p}: optimizer {name} of parameter {i} has shape {tuple(v.shape)}; "
                    f"the parameter has {tuple(param.shape)}"
                )


def load_teacher(
    path: str | os.PathLike,
    data_shape: tuple[int, ...] | list[int],
    map_location: str | torch.device = "cpu",
    match: dict | None = None,
) -> FlowMapModel:
    """The EMA model of an FM run to distil from (cd, ctm), checked to fit the student's run.

    Refused (``ValueError``): a teacher of another data shape (an image model for a 2D run or
    the reverse), a bidirectional one, one not trained with ``method = fm``, and one whose run
    config differs from ``match`` (e.g. ``{"data": "moons"}``: another target distribution).
    """
    model = load_checkpoint(path, map_location)
    p, cfg = checkpoint_path(path), model.train_config
    shape, want = tuple(model.data_shape), tuple(data_shape)
    if shape != want:
        kind = {1: "a 2D", 3: "an image"}
        raise ValueError(
            f"teacher {p} is {kind.get(len(shape), 'a')} model of data shape {shape}; this run "
            f"needs {kind.get(len(want), 'a')} model of data shape {want}"
        )
    if model.bidirectional or cfg.get("method") != "fm":
        got = (
            "a bidirectional (bcm) model"
            if model.bidirectional
            else f"method {cfg.get('method')!r}"
        )
        raise ValueError(f"teacher {p} must be an FM run (method 'fm'); got {got}")
    for k, v in (match or {}).items():
        if k in cfg and cfg[k] != v:
            raise ValueError(f"teacher {p} was trained with {k}={cfg[k]!r}; this run has {k}={v!r}")
    return model


def _build(spec, p: Path, net_device: str | None = None) -> FlowMapModel:
    """:func:`build_model` with a clear error for an unusable spec."""
    if not isinstance(spec, dict):
        raise CheckpointError(f"{p}: the model spec must be a dict; got {type(spec).__name__}")
    try:
        return build_model(spec, net_device=net_device)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{p} holds an unusable model spec: {err!r}") from err


def write_csv(path: str | os.PathLike, rows: list[dict]) -> Path:
    """Write ``rows`` as a CSV table at ``path``, atomically (unique temporary file, then rename).

    The columns are the rows' keys in first-seen order (a key missing from a row is blank).
    """
    path = Path(path)
    if not rows:
        raise ValueError(f"no rows to write to {path}")
    keys = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
    return atomic_write_bytes(path, buf.getvalue().encode("utf-8"))
