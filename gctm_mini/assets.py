"""Shipped toy checkpoints (``data/checkpoints/``) and the export that makes them small.

Each shipped file holds only the EMA weights, the model spec, the run config and the
training log (no optimizer state): :func:`load_shipped` returns the model ready for sampling.
``data/checkpoints/manifest.json`` lists, for every file, the one command that regenerates
it and the quality it must reach (checked by the tests).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .checkpoint import load_checkpoint, load_raw, save_checkpoint
from .parameterization import FlowMapModel

CHECKPOINT_DIR = Path(__file__).resolve().parent.parent / "data" / "checkpoints"


def manifest() -> dict:
    """The shipped-checkpoint manifest: ``{name: {"command": …, "method": …, …}}``."""
    path = CHECKPOINT_DIR / "manifest.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: shipped checkpoints live in the repository's data/ folder; "
            "install from a clone (pip install -e .) to use them"
        )
    return json.loads(path.read_text())


def shipped_path(name: str) -> Path:
    """Path of the shipped checkpoint ``name`` (e.g. ``"gctm_gmm"``), with a clear error if absent."""
    entries = manifest()
    if name not in entries:
        raise ValueError(
            f"unknown shipped checkpoint {name!r}; choose one of: {', '.join(entries)}"
        )
    path = CHECKPOINT_DIR / f"{name}.pt"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing; regenerate it with: {entries[name]['command']}"
        )
    return path


def load_shipped(name: str, map_location: str = "cpu") -> FlowMapModel:
    """Load a shipped toy model (EMA weights, eval mode)."""
    return load_checkpoint(shipped_path(name), map_location=map_location)


def export_checkpoint(run: str | os.PathLike, dest: str | os.PathLike, half: bool = False) -> Path:
    """Write the EMA-only, optimizer-free copy of a run's checkpoint to ``dest`` (atomically).

    ``half`` stores floating-point weights as float16 (half the size; they are cast back to
    float32 when loaded into the model).
    """
    data = load_raw(run)
    names = ("spec", "ema", "config", "history", "step", "seconds", "data")
    keep = {k: data[k] for k in names if k in data}
    if half:
        keep["ema"] = {k: v.half() if v.is_floating_point() else v for k, v in keep["ema"].items()}
    return save_checkpoint(Path(dest), keep)
