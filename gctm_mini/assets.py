"""Shipped toy checkpoints (``data/checkpoints/``) and the export that makes them small.

Each shipped file holds only the EMA weights, the model spec, the run config and the
training log (no optimizer state): :func:`load_shipped` returns the model ready for sampling.
``data/checkpoints/manifest.json`` lists, for every file, the one command that regenerates
it and the quality it must reach (checked by the tests); :func:`manifest` refuses a truncated
or malformed one with a clear message.

Where the files are found (:func:`checkpoint_dir`), first match wins:

1. the folder named by the environment variable ``GCTM_CHECKPOINTS`` (your own copies);
2. ``gctm_mini/_shipped/`` inside an installed wheel: the wheel carries every file of the
   repository's ``data/checkpoints/`` there (``package-dir`` in ``pyproject.toml``);
3. ``data/checkpoints/`` of the repository, for a clone (``pip install -e .`` or no install).
"""

from __future__ import annotations

import os
from pathlib import Path

from .checkpoint import CheckpointError, checkpoint_path, load_checkpoint, load_raw, save_checkpoint
from .parameterization import FlowMapModel
from .validation import read_json

ENV_VAR = "GCTM_CHECKPOINTS"
PACKAGED_DIR = Path(__file__).resolve().parent / "_shipped"  # in an installed wheel
REPOSITORY_DIR = Path(__file__).resolve().parent.parent / "data" / "checkpoints"  # in a clone


def checkpoint_dir() -> Path:
    """The folder that holds the shipped checkpoints and their ``manifest.json``.

    ``$GCTM_CHECKPOINTS`` if set, else the copy inside an installed wheel, else the
    repository's ``data/checkpoints/``. Raises ``FileNotFoundError`` naming what was tried.
    """
    override = os.environ.get(ENV_VAR)
    if override:
        path = Path(override).expanduser()
        if not (path / "manifest.json").is_file():
            raise FileNotFoundError(
                f"{ENV_VAR}={override!r} must be a folder holding manifest.json and the .pt files"
            )
        return path
    for path in (PACKAGED_DIR, REPOSITORY_DIR):
        if (path / "manifest.json").is_file():
            return path
    raise FileNotFoundError(
        f"no shipped checkpoints found (looked in {PACKAGED_DIR} and {REPOSITORY_DIR}); "
        f"reinstall gctm-mini or set {ENV_VAR} to a folder holding manifest.json"
    )


MANIFEST_KEYS = {
    "2d": ("command", "method", "data", "sampler", "nfe", "max_w2_ratio"),
    "image": ("command", "nfe", "max_rfd_ratio"),
    "digits": ("command", "method", "data", "sampler", "nfe"),
}
"""The keys every manifest entry needs, by ``kind`` (``"2d"`` when absent)."""


def manifest(path: str | os.PathLike | None = None) -> dict:
    """The shipped-checkpoint manifest: ``{name: {"command": …, "method": …, …}}``.

    Read from ``path`` (default: ``manifest.json`` in :func:`checkpoint_dir`); a truncated or malformed
    file, or an entry without the keys of :data:`MANIFEST_KEYS`, raises ``ValueError``.
    """
    path = Path(path) if path is not None else checkpoint_dir() / "manifest.json"
    entries = read_json(path, "checkpoint manifest")
    for name, e in entries.items():
        if not isinstance(e, dict):
            raise ValueError(f"{path}: entry {name!r} must be an object; got {type(e).__name__}")
        kind = e.get("kind", "2d")
        if kind not in MANIFEST_KEYS:
            raise ValueError(
                f"{path}: entry {name!r} has kind {kind!r}; expected 2d, image or digits"
            )
        missing = [k for k in MANIFEST_KEYS[kind] if k not in e]
        if missing:
            raise ValueError(f"{path}: entry {name!r} lacks {', '.join(missing)}")
    return entries


def shipped_path(name: str) -> Path:
    """Path of the shipped checkpoint ``name`` (e.g. ``"gctm_gmm"``), with a clear error if absent."""
    entries = manifest()
    if name not in entries:
        raise ValueError(
            f"unknown shipped checkpoint {name!r}; choose one of: {', '.join(entries)}"
        )
    path = checkpoint_dir() / f"{name}.pt"
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
    float32 when loaded into the model). An existing ``dest`` is replaced only if it is itself
    an exported (EMA-only) checkpoint: the run's own checkpoint, a resumable checkpoint or any
    other file there is refused (``ValueError``), so an export never destroys a run.
    """
    data = load_raw(run)
    target = checkpoint_path(dest)
    if target.resolve() == checkpoint_path(run).resolve():
        raise ValueError(f"the export would overwrite the run's own checkpoint {target}")
    if target.exists():
        try:
            old = load_raw(target)
        except (CheckpointError, OSError):
            old = None
        if old is None or "optimizer" in old or "model" in old:
            raise ValueError(
                f"{target} exists and is not an exported checkpoint; the export replaces only "
                "an earlier export (choose another destination)"
            )
    names = ("spec", "ema", "config", "history", "step", "seconds", "data")
    keep = {k: data[k] for k in names if k in data}
    if half:
        keep["ema"] = {k: v.half() if v.is_floating_point() else v for k, v in keep["ema"].items()}
    return save_checkpoint(Path(dest), keep)
