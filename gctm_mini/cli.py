"""Command line: ``gctm-mini`` (the console script) or ``python -m gctm_mini``.

- ``demo``: the quick start — trains on a 2D toy on the CPU, prints a quality-by-NFE table
  and saves a figure.
- ``train2d --method fm --data moons --coupling ot --steps N --seed S --out DIR``: every
  config field is a flag, and ``--config FILE`` starts from a JSON file (e.g. a run's own
  ``config.json``).
- ``eval2d DIR --nfe 1,2,4,8,100 --json FILE``: exact W2 (n = 4096 generated vs 4096 fresh data
  points, mean of 3 seeds) and the data–data floor at the same n.
- ``train --config NAME|FILE --set KEY=VALUE [KEY=VALUE …] --out DIR``: image runs.
- ``eval DIR --nfe 1,2``: offline proxy metric (and FID) of an image run.

Bad input stops with one line on stderr naming what was expected and what was given, and
exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from dataclasses import MISSING, fields
from pathlib import Path

import torch

from ._optional import MissingExtraError
from .checkpoint import CheckpointError, checkpoint_path, load_checkpoint
from .data2d import make_dataset
from .evaluation import MetricUnavailableError
from .metrics import quality_by_nfe
from .rundir import describe_error
from .runtime import check_device
from .sampling import DEFAULT_SAMPLER, SAMPLERS, make_sampler
from .training import Toy2DConfig, TrainingDivergedError, train2d
from .validation import (
    check_number,
    describe_range,
    field_kind,
    parse_field,
    read_json,
)

PROG = "gctm-mini"
"""The console script's name; ``python -m gctm_mini`` passes its own to :func:`main`."""


class ArgumentParser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line on stderr (exit status 2)."""

    def error(self, message: str):
        message = re.sub(r"^argument (\S+): \1 ", r"argument \1: ", message)  # flag named once
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _arg(parse, *extra, **kw):
    """An argparse ``type`` from a function that raises ``ValueError`` with a clear message."""

    def typed(text: str):
        try:
            return parse(text, *extra, **kw)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    typed.__name__ = getattr(parse, "__name__", "value")
    return typed


def _path(text: str, name: str = "path") -> str:
    if not text.strip():
        raise ValueError(f"{name} must be a path; got an empty string")
    return text


def _int(text: str, name: str, lo: int) -> int:
    return check_number(parse_field(text, "int", name), name, integer=True, ge=lo)


def _float(text: str, name: str, **bounds) -> float:
    return check_number(parse_field(text, "float", name), name, **bounds)


def field_help(f) -> str:
    """``"meaning (default: …; range)"`` for a config field declared with ``knob``."""
    meta, kind = f.metadata, field_kind(f)
    default = f.default if f.default is not MISSING else None
    extra = [f"default: {default!r}" if kind == "str" else f"default: {default}"]
    if "choices" in meta:
        extra.append("one of " + ", ".join(meta["choices"]))
    elif kind in ("int", "float"):
        extra.append(describe_range(meta))
    return f"{meta['help']} ({'; '.join(extra)})"


def config_keys_help(cls) -> str:
    """One line per field of a config dataclass: ``key  meaning (default; range)``."""
    width = max(len(f.name) for f in fields(cls))
    return "\n".join(f"  {f.name:<{width}}  {field_help(f)}" for f in fields(cls))


def _nfe_list(text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--nfe takes integers like 1,2,4; got {text!r}") from err
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"--nfe needs positive integers like 1,2,4; got {text!r}")
    return vals


def _add_config_args(p: argparse.ArgumentParser) -> None:
    """One flag per :class:`Toy2DConfig` field; a flag left out keeps the value of ``--config``
    (or the default), so flags are kept apart from defaults (``SUPPRESS``)."""
    p.add_argument(
        "--config",
        type=_arg(_path, "--config"),
        default=None,
        metavar="FILE",
        help="start from this JSON config (e.g. a run's config.json); flags override its keys",
    )
    for f in fields(Toy2DConfig):
        kind = field_kind(f)
        p.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            type=_arg(parse_field, kind, "--" + f.name.replace("_", "-")),
            default=argparse.SUPPRESS,
            metavar="{true,false}" if kind == "bool" else None,
            help=field_help(f).replace("%", "%%"),  # argparse %-formats help strings
        )


def _config_kind(d: dict) -> str | None:
    """``"2d"`` or ``"image"`` for the keys of a config dict (``None``: cannot tell)."""
    from .train_images import ImageConfig

    names2d = {f.name for f in fields(Toy2DConfig)}
    names_img = {f.name for f in fields(ImageConfig)}
    if set(d) <= names2d and not set(d) <= names_img:
        return "2d"
    if set(d) <= names_img and not set(d) <= names2d:
        return "image"
    return None


def _refuse_other_kind(config: str, want: str, prog: str) -> None:
    """Name the right command when a 2D run's config file is given to ``train`` or an image
    run's to ``train2d``."""
    from .train_images import CONFIGS

    if config in CONFIGS or not (config.endswith(".json") or Path(config).is_file()):
        return
    got = _config_kind(read_json(config, "config file"))
    if got is not None and got != want:
        what, command = ("a 2D", "train2d") if got == "2d" else ("an image", "train")
        raise ValueError(
            f"{config} is {what} run's config; train it with {prog} {command} --config {config}"
        )


def _config_from(args: argparse.Namespace) -> Toy2DConfig:
    d = {}
    if args.config:
        _refuse_other_kind(args.config, "2d", args.prog)
        d = read_json(args.config, "config file")
    d.update({f.name: getattr(args, f.name) for f in fields(Toy2DConfig) if hasattr(args, f.name)})
    return Toy2DConfig.from_dict(d, where=args.config or "the config").validate()


def cmd_train2d(args: argparse.Namespace) -> int:
    cfg = _config_from(args)
    res = train2d(cfg, args.out, resume=not args.no_resume, progress=not args.quiet)
    print(
        f"trained {cfg.method} on {cfg.data} ({cfg.coupling} coupling) for {cfg.steps} steps "
        f"in {res.seconds:.1f} s; checkpoint: {Path(args.out) / 'checkpoint.pt'}"
    )
    return 0


def evaluate_run(
    path: str | Path,
    nfes: list[int],
    n: int = 4096,
    seeds: int = 3,
    sampler: str | None = None,
    gamma: float | None = None,
) -> dict:
    """W2 by NFE of the EMA model saved in ``path``, as a JSON-able dict.

    ``n`` (≥ 2) generated and data points per W2, mean over ``seeds`` (≥ 1) seeds.
    """
    check_number(n, "n", integer=True, ge=2)
    check_number(seeds, "seeds", integer=True, ge=1)
    if not nfes or min(nfes) < 1:
        raise ValueError(f"nfes must be positive integers; got {nfes}")
    model = load_checkpoint(path)
    cfg = model.train_config
    if len(model.data_shape) != 1:
        raise ValueError(
            f"{checkpoint_path(path)} is an image run (data shape {tuple(model.data_shape)}); "
            "evaluate it with the eval command, not eval2d"
        )
    if "data" not in cfg:
        raise CheckpointError(f"{checkpoint_path(path)} has no run config: its data set is unknown")
    kind, default_gamma = DEFAULT_SAMPLER[cfg.get("method", "fm")]
    if gamma is not None and sampler is None:
        kind = "gamma"
    kind = sampler or kind
    gamma = default_gamma if gamma is None else gamma
    source = None
    if cfg.get("source", "gaussian") != "gaussian":
        src, eps = make_dataset(cfg["source"]), float(cfg.get("eps", 0.0))

        def source(k: int, g: torch.Generator) -> torch.Tensor:  # as in training: X1 + ε z
            x = src(k, g)
            return x + eps * torch.randn(x.shape, generator=g) if eps > 0 else x

    rep = quality_by_nfe(
        make_sampler(model, kind, gamma),
        make_dataset(cfg["data"]),
        nfes,
        n=n,
        seeds=seeds,
        source=source,
    )
    out = rep.to_json()
    out.update(
        {
            "sampler": kind,
            "gamma": gamma if kind == "gamma" else None,
            "method": cfg.get("method"),
            "data": cfg.get("data"),
            "coupling": cfg.get("coupling"),
        }
    )
    return out


def cmd_eval2d(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    res = evaluate_run(args.dir, args.nfe, args.n, args.seeds, args.sampler, args.gamma)
    print(
        f"{res['method']} on {res['data']} ({res['coupling']}), sampler {res['sampler']}, "
        f"exact W2, n={res['n']}, mean of {res['seeds']} seeds:"
    )
    print(f"{'NFE':>6} | {'W2':>8} | ratio to floor")
    for k, v in res["w2"].items():
        print(f"{k:>6} | {v:8.4f} | {v / res['floor']:.2f}×")
    print(
        f"{'floor':>6} | {res['floor']:8.4f} | (data vs data)   [{time.perf_counter() - t0:.0f} s]"
    )
    if args.json:
        _write_json(args.json, res, args.dir)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .train_images import make_config, train_images

    _refuse_other_kind(args.config, "image", args.prog)
    cfg = make_config(args.config, args.set)
    res = train_images(
        cfg, args.out, resume=args.resume, progress=not args.quiet, device=args.device
    )
    if int(os.environ.get("RANK", "0")) == 0:
        print(
            f"trained {cfg.method} ({cfg.name}) to step {cfg.steps} in {res.seconds:.1f} s; "
            f"checkpoint: {Path(args.out) / 'checkpoint.pt'}"
        )
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .evaluation import evaluate_images

    res = evaluate_images(
        args.dir,
        args.nfe,
        args.num,
        fid=args.fid,
        grid=not args.no_grid,
        device=args.device,
        batch=args.batch,
    )
    if args.json:
        _write_json(args.json, res, args.dir)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .assets import export_checkpoint

    dest = export_checkpoint(args.run, args.dest, half=args.half)
    print(f"wrote {dest} ({dest.stat().st_size / 1e6:.2f} MB, EMA weights only)")
    return 0


def cmd_classroom(args: argparse.Namespace) -> int:
    from .classroom import build

    if args.action == "grade":
        return _classroom_grade(args)
    changed = build(args.out, check=args.check)
    for path in changed:
        print(f"{'out of date' if args.check else 'wrote'}: {path}")
    if args.check and changed:
        print("run: python -m gctm_mini classroom build", file=sys.stderr)
        return 1
    if not changed:
        print("notebooks and student notebooks are up to date")
    return 0


def _classroom_grade(args: argparse.Namespace) -> int:
    from .checkpoint import write_csv
    from .classroom import check_notebook, execute, grade

    if args.csv:
        _refuse_overwrite(args.csv, "--csv", [Path(n) for n in args.notebooks])
    rows = []
    for name in args.notebooks:
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"no notebook at {path}")
        nb = read_json(path, "notebook")
        check_notebook(nb, str(path))
        if not args.no_run:
            nb = execute(path)
        verdicts = grade(nb, str(path))
        if not verdicts:
            raise ValueError(f"{path} has no check cells (nbgrader test cells) to grade")
        for v in verdicts:
            print(
                f"{path}  {v.exercise:<22} {v.points:g}/{v.max_points:g}  {v.status:<8} {v.message}"
            )
        total, most = sum(v.points for v in verdicts), sum(v.max_points for v in verdicts)
        print(f"{path}  total {total:g}/{most:g}")
        rows += [vars(v) for v in verdicts]
    if args.csv:
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        print(f"wrote {write_csv(args.csv, rows)}")
    return 0


def _refuse_overwrite(dest: str, flag: str, keep: list[Path]) -> None:
    """Refuse an output path that would replace an input of the command (a checkpoint, a
    notebook) or any checkpoint or notebook: results never overwrite what they were made from."""
    p = Path(dest)
    target = p.resolve()
    if any(target == k.resolve() for k in keep) or p.suffix in (".pt", ".ipynb"):
        raise ValueError(
            f"{flag} {dest} would overwrite a checkpoint, a notebook or a file of the run it "
            "reads; name another file"
        )


def _write_json(dest: str, res: dict, run: str) -> None:
    """The results as JSON at ``dest`` (atomically), never over the evaluated run's files."""
    from .rundir import write_output

    ckpt = checkpoint_path(run)
    run_files = [f for f in ckpt.parent.iterdir() if f.is_file()] if ckpt.parent.is_dir() else []
    _refuse_overwrite(dest, "--json", [ckpt, *run_files])
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    write_output(dest, json.dumps(res, indent=2).encode("utf-8"))
    print(f"wrote {dest}")


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(Path(args.out), steps=args.steps, n=args.n, progress=not args.quiet)
    return 0


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The command-line parser; ``prog`` is the command the user typed (usage lines name it)."""
    from .train_images import CONFIGS, ImageConfig

    p = ArgumentParser(
        prog=prog,
        description=__doc__.split("\n\n", 1)[1].replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(prog=prog)
    sub = p.add_subparsers(dest="command", required=True)
    out_path = _arg(_path, "--out")

    d = sub.add_parser("demo", help="train on a 2D toy on the CPU and print a W2-by-NFE table")
    d.add_argument(
        "--out", type=out_path, default="runs/demo", help="where to write the figure and checkpoint"
    )
    d.add_argument(
        "--steps", type=_arg(_int, "--steps", 1), default=None, help="override training steps"
    )
    d.add_argument(
        "--n",
        type=_arg(_int, "--n", 2),
        default=2048,
        help="points per W2 evaluation (default 2048)",
    )
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(fn=cmd_demo)

    t = sub.add_parser(
        "train2d",
        help="train a model on a 2D data set",
        description="Train a 2D model. Every config field is a flag (below); --config FILE starts "
        "from a JSON config such as a run's own config.json.",
    )
    _add_config_args(t)
    t.add_argument("--out", type=out_path, required=True, help="run directory")
    t.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(fn=cmd_train2d)

    e = sub.add_parser("eval2d", help="exact W2 by NFE of a trained 2D run")
    e.add_argument("dir", type=_arg(_path, "dir"), help="run directory or checkpoint file")
    e.add_argument(
        "--nfe", type=_nfe_list, default=[1, 2, 4, 8, 100], help="(default: 1,2,4,8,100)"
    )
    e.add_argument(
        "--n",
        type=_arg(_int, "--n", 2),
        default=4096,
        help="generated and data points per W2 (≥ 2; default 4096)",
    )
    e.add_argument(
        "--seeds", type=_arg(_int, "--seeds", 1), default=3, help="seeds to average (default 3)"
    )
    e.add_argument(
        "--sampler",
        choices=SAMPLERS,
        default=None,
        help="default by method: euler (fm), gamma with γ=1 (cd, ct, bcm), flowmap (ctm, gctm)",
    )
    e.add_argument(
        "--gamma",
        type=_arg(_float, "--gamma", ge=0.0, le=1.0),
        default=None,
        help="γ in [0, 1] for the gamma sampler (implies it)",
    )
    e.add_argument(
        "--json", type=_arg(_path, "--json"), default=None, help="write the results to this file"
    )
    e.set_defaults(fn=cmd_eval2d)

    tr = sub.add_parser(
        "train",
        help="train on images (a named config such as patches_cpu or cifar10, or a JSON file)",
        description="Train on images from a named config or a JSON file, with overrides.",
        epilog=f"named configs: {', '.join(CONFIGS)}\n\n"
        "config keys (--set KEY=VALUE; the defaults below are ImageConfig's, a named config "
        f"changes some):\n{config_keys_help(ImageConfig)}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tr.add_argument(
        "--config",
        type=_arg(_path, "--config"),
        required=True,
        metavar="NAME|FILE",
        help="a named config (below) or a JSON file, e.g. a run's own config.json",
    )
    tr.add_argument(
        "--set",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="override config keys, e.g. --set steps=1200 ckpt_every=300 (repeatable)",
    )
    tr.add_argument("--out", type=out_path, required=True, help="run directory")
    tr.add_argument("--resume", action="store_true", help="continue the run in --out")
    tr.add_argument(
        "--device",
        type=_arg(check_device),
        default=None,
        help="cpu, cuda, cuda:1, mps (default: cuda if present, else cpu)",
    )
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    tr.set_defaults(fn=cmd_train)

    ev = sub.add_parser(
        "eval", help="evaluate an image run: offline proxy metric, FID, sample grids"
    )
    ev.add_argument("dir", type=_arg(_path, "dir"), help="run directory or checkpoint file")
    ev.add_argument("--nfe", type=_nfe_list, default=[1, 2], help="(default: 1,2)")
    ev.add_argument(
        "--num",
        type=_arg(_int, "--num", 4),
        default=10_000,
        help="generated images per NFE (≥ 4; default 10000)",
    )
    ev.add_argument(
        "--batch", type=_arg(_int, "--batch", 1), default=250, help="images per batch (default 250)"
    )
    ev.add_argument(
        "--fid",
        action="store_true",
        help="also compute FID (needs torch-fidelity and downloadable Inception weights)",
    )
    ev.add_argument("--no-grid", action="store_true", help="do not write sample grids")
    ev.add_argument(
        "--device",
        type=_arg(check_device),
        default=None,
        help="cpu, cuda, cuda:1, mps (default: cuda if present, else cpu)",
    )
    ev.add_argument(
        "--json", type=_arg(_path, "--json"), default=None, help="write the results here"
    )
    ev.set_defaults(fn=cmd_eval)

    cl = sub.add_parser("classroom", help="classroom tools: student notebooks and grading")
    clsub = cl.add_subparsers(dest="action", required=True)
    cb = clsub.add_parser(
        "build",
        help="stamp notebooks/ (Colab cell, badges, nbgrader metadata) and write the student "
        "notebooks to notebooks/exercises/",
    )
    cb.add_argument("--out", type=out_path, default=None, help="default: notebooks/exercises")
    cb.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if anything is out of date"
    )
    cg = clsub.add_parser(
        "grade", help="run submitted student notebooks in smoke mode and read their checks"
    )
    cg.add_argument("notebooks", nargs="+", help="the submitted notebooks")
    cg.add_argument("--no-run", action="store_true", help="read the outputs as they are")
    cg.add_argument(
        "--csv",
        type=_arg(_path, "--csv"),
        default=None,
        help="also write the verdicts to this CSV file",
    )
    cl.set_defaults(fn=cmd_classroom)

    x = sub.add_parser("export", help="write the EMA-only copy of a run's checkpoint (for sharing)")
    x.add_argument("run", type=_arg(_path, "run"), help="run directory or checkpoint file")
    x.add_argument("dest", type=_arg(_path, "dest"), help="destination .pt file")
    x.add_argument("--half", action="store_true", help="store the weights as float16")
    x.set_defaults(fn=cmd_export)
    return p


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    """Run one command; exit status 0 on success, 2 for bad input (a bad value, name or type,
    a missing or unreadable checkpoint, an unavailable metric) and 1 when a run fails (it
    diverged, its run directory is busy, or a file-system operation failed: a full disk, a
    read-only directory, ``--out`` naming a file). Both print one line on stderr; any other
    exception is a bug and keeps its traceback."""
    args = build_parser(prog).parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    try:
        return args.fn(args)
    except (
        ValueError,
        TypeError,
        FileNotFoundError,
        CheckpointError,
        MetricUnavailableError,
        MissingExtraError,
    ) as err:
        print(f"error: {describe_error(err)}", file=sys.stderr)
        return 2
    except (TrainingDivergedError, OSError) as err:
        print(f"error: {describe_error(err)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
