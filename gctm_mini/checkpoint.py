"""Checkpoints: written atomically, refused with a clear message when truncated or foreign.

A checkpoint is one ``torch.save`` file holding a dict tagged ``format = "gctm_mini"``:
the model spec, online and EMA weights, optimizer state, step, RNG states, the run config
and the training log. It is written to a temporary file in the same directory, flushed and
fsynced, then renamed over the old one (``os.replace`` is atomic on POSIX and Windows), so a
run killed at any moment leaves either the previous or the new checkpoint, never half of one.
Tables (training logs, benchmark results) are written the same way (:func:`write_csv`).
"""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path

import torch

from .models import build_model
from .parameterization import FlowMapModel

FORMAT = "gctm_mini"
VERSION = 1
FILENAME = "checkpoint.pt"


class CheckpointError(RuntimeError):
    """A file that is not a readable gctm_mini checkpoint."""


def checkpoint_path(path: str | os.PathLike) -> Path:
    """``DIR/checkpoint.pt`` for a directory, ``path`` itself for a file."""
    p = Path(path)
    return p / FILENAME if p.is_dir() or p.suffix != ".pt" else p


def save_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    """Atomically write ``payload`` (plus the format tag) to ``path`` (file or directory)."""
    dest = checkpoint_path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    data = {"format": FORMAT, "version": VERSION, **payload}
    fd, tmp = tempfile.mkstemp(prefix=".ckpt-", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return dest


def load_raw(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read and validate a checkpoint dict; raise :class:`CheckpointError` if unusable."""
    p = checkpoint_path(path)
    if not p.exists():
        raise FileNotFoundError(f"no checkpoint at {p}")
    try:
        data = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, pickle of something else, …
        raise CheckpointError(
            f"{p} is not a readable gctm_mini checkpoint (truncated or foreign file): {err}"
        ) from err
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{p} is not a gctm_mini checkpoint (missing format tag)")
    if data.get("version", 0) > VERSION:
        raise CheckpointError(
            f"{p} has version {data['version']}; this gctm_mini reads ≤ {VERSION}"
        )
    for key in ("spec", "ema"):
        if key not in data:
            raise CheckpointError(f"{p} lacks the {key!r} entry")
    return data


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", which: str = "ema"
) -> FlowMapModel:
    """Load the model of a run directory or checkpoint file, ready for sampling.

    Returns the EMA model (``which="ema"``, default) or the online one (``"model"``), in eval
    mode with gradients off. It exposes ``G(x, t, s)``, ``g(x, t, s)`` and ``velocity(x, t)``.
    """
    data = load_raw(path, map_location)
    if which not in ("ema", "model"):
        raise ValueError(f"which must be 'ema' or 'model'; got {which!r}")
    model = build_model(data["spec"])
    model.load_state_dict(data[which])
    model.train_config = data.get("config", {})
    return model.to(map_location).eval().requires_grad_(False)


def write_csv(path: str | os.PathLike, rows: list[dict]) -> Path:
    """Write ``rows`` as a CSV table at ``path``, atomically (temporary file, then rename).

    The columns are the rows' keys in first-seen order (a key missing from a row is blank).
    """
    path = Path(path)
    if not rows:
        raise ValueError(f"no rows to write to {path}")
    keys = list(dict.fromkeys(k for row in rows for k in row))
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)
    return path
