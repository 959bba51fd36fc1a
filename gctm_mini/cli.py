"""Command line: ``python -m gctm_mini {demo, train2d, eval2d}``.

- ``demo``: the quick start — trains on a 2D toy on the CPU, prints a quality-by-NFE table
  and saves a figure.
- ``train2d --method fm --data moons --coupling ot --steps N --seed S --out DIR``.
- ``eval2d DIR --nfe 1,2,4,8,100 --json FILE``: exact W2 (n = 4096 generated vs 4096 fresh data
  points, mean of 3 seeds) and the data–data floor at the same n.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import fields
from pathlib import Path

import torch

from ._optional import MissingExtraError
from .checkpoint import CheckpointError, load_checkpoint
from .data2d import make_dataset
from .evaluation import MetricUnavailableError
from .metrics import quality_by_nfe
from .sampling import DEFAULT_SAMPLER, SAMPLERS, make_sampler
from .training import Toy2DConfig, train2d


def _nfe_list(text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--nfe takes integers like 1,2,4; got {text!r}") from err
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError("--nfe needs positive integers")
    return vals


def _add_config_args(p: argparse.ArgumentParser) -> None:
    for f in fields(Toy2DConfig):
        typ = {"int": int, "float": float, "str": str, "bool": None}[
            f.type if isinstance(f.type, str) else f.type.__name__
        ]
        flag = "--" + f.name.replace("_", "-")
        if typ is None:
            p.add_argument(
                flag,
                type=lambda s: s.lower() in ("1", "true", "yes"),
                default=f.default,
                metavar="{true,false}",
                help=f"(default: {f.default})",
            )
        else:
            p.add_argument(flag, type=typ, default=f.default, help=f"(default: {f.default})")


def _config_from(args: argparse.Namespace) -> Toy2DConfig:
    return Toy2DConfig(**{f.name: getattr(args, f.name) for f in fields(Toy2DConfig)}).validate()


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
    """W2 by NFE of the EMA model saved in ``path``, as a JSON-able dict."""
    model = load_checkpoint(path)
    cfg = model.train_config
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
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=2))
        print(f"wrote {args.json}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .train_images import make_config, train_images

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
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=2))
        print(f"wrote {args.json}")
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
    from .classroom import execute, grade

    rows = []
    for name in args.notebooks:
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"no notebook at {path}")
        nb = json.loads(path.read_text(encoding="utf-8")) if args.no_run else execute(path)
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
        print(f"wrote {write_csv(args.csv, rows)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(Path(args.out), steps=args.steps, n=args.n, progress=not args.quiet)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m gctm_mini",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="train on a 2D toy on the CPU and print a W2-by-NFE table")
    d.add_argument("--out", default="runs/demo", help="where to write the figure and checkpoint")
    d.add_argument("--steps", type=int, default=None, help="override training steps")
    d.add_argument("--n", type=int, default=2048, help="points per W2 evaluation (default 2048)")
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(fn=cmd_demo)

    t = sub.add_parser("train2d", help="train a model on a 2D data set")
    _add_config_args(t)
    t.add_argument("--out", required=True, help="run directory")
    t.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(fn=cmd_train2d)

    e = sub.add_parser("eval2d", help="exact W2 by NFE of a trained 2D run")
    e.add_argument("dir", help="run directory or checkpoint file")
    e.add_argument("--nfe", type=_nfe_list, default=[1, 2, 4, 8, 100])
    e.add_argument("--n", type=int, default=4096)
    e.add_argument("--seeds", type=int, default=3)
    e.add_argument(
        "--sampler",
        choices=SAMPLERS,
        default=None,
        help="default by method: euler (fm), gamma with γ=1 (cd, ct, bcm), flowmap (ctm, gctm)",
    )
    e.add_argument("--gamma", type=float, default=None, help="γ for the gamma sampler (implies it)")
    e.add_argument("--json", default=None, help="write the results to this JSON file")
    e.set_defaults(fn=cmd_eval2d)

    tr = sub.add_parser(
        "train", help="train on images (configs: cifar10, cifar10_small, patches_cpu)"
    )
    tr.add_argument(
        "--config", required=True, help="named config (see gctm_mini.train_images.CONFIGS)"
    )
    tr.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set steps=40 --set ckpt_every=10",
    )
    tr.add_argument("--out", required=True, help="run directory")
    tr.add_argument("--resume", action="store_true", help="continue the run in --out")
    tr.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: cuda if present)")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    tr.set_defaults(fn=cmd_train)

    ev = sub.add_parser(
        "eval", help="evaluate an image run: offline proxy metric, FID, sample grids"
    )
    ev.add_argument("dir", help="run directory or checkpoint file")
    ev.add_argument("--nfe", type=_nfe_list, default=[1, 2])
    ev.add_argument("--num", type=int, default=10_000, help="generated images per NFE")
    ev.add_argument("--batch", type=int, default=250)
    ev.add_argument(
        "--fid",
        action="store_true",
        help="also compute FID (needs torch-fidelity and downloadable Inception weights)",
    )
    ev.add_argument("--no-grid", action="store_true", help="do not write sample grids")
    ev.add_argument("--device", default=None)
    ev.add_argument("--json", default=None)
    ev.set_defaults(fn=cmd_eval)

    cl = sub.add_parser("classroom", help="classroom tools: student notebooks and grading")
    clsub = cl.add_subparsers(dest="action", required=True)
    cb = clsub.add_parser(
        "build",
        help="stamp notebooks/ (Colab cell, badges, nbgrader metadata) and write the student "
        "notebooks to notebooks/exercises/",
    )
    cb.add_argument("--out", default=None, help="default: notebooks/exercises")
    cb.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if anything is out of date"
    )
    cg = clsub.add_parser(
        "grade", help="run submitted student notebooks in smoke mode and read their checks"
    )
    cg.add_argument("notebooks", nargs="+", help="the submitted notebooks")
    cg.add_argument("--no-run", action="store_true", help="read the outputs as they are")
    cg.add_argument("--csv", default=None, help="also write the verdicts to this CSV file")
    cl.set_defaults(fn=cmd_classroom)

    x = sub.add_parser("export", help="write the EMA-only copy of a run's checkpoint (for sharing)")
    x.add_argument("run", help="run directory or checkpoint file")
    x.add_argument("dest", help="destination .pt file")
    x.add_argument("--half", action="store_true", help="store the weights as float16")
    x.set_defaults(fn=cmd_export)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    try:
        return args.fn(args)
    except (
        ValueError,
        FileNotFoundError,
        CheckpointError,
        MetricUnavailableError,
        MissingExtraError,
    ) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
