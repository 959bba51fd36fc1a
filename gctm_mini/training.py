"""The 2D training loop: seeded, checkpointed atomically every K steps, resumable.

One step: draw a data batch X0 and a source batch X1, pair them with the configured
coupling (optionally perturb X1 by ε), evaluate the method's loss, take an Adam step and
update the EMA copy. Randomness: the data/source draws use a dedicated generator and
everything else torch's global RNG; both states go into every checkpoint, so a resumed run
continues exactly where the saved one stopped.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .checkpoint import checkpoint_path, load_checkpoint, load_raw, save_checkpoint, write_csv
from .couplings import COUPLINGS, PAIRINGS, couple, perturb_source
from .data2d import DATASETS, as_sampler
from .ema import EMA
from .losses import FM_TIME_SAMPLERS
from .methods import DEFAULT_STEPS_2D, NEEDS_TEACHER, MethodFields, TrainingMethod
from .models import build_model, mlp_spec
from .parameterization import CouplingMoments, FlowMapModel
from .validation import check_choice


@dataclass
class Toy2DConfig(MethodFields):
    """Every knob of a 2D run (all overridable from ``python -m gctm_mini train2d``).

    Method knobs come from :class:`~gctm_mini.methods.MethodFields`: ``method``, ``steps``
    (0 = the method's default, :data:`~gctm_mini.methods.DEFAULT_STEPS_2D`),
    ``fm_times`` (FM time sampler), ``fm_source_prob`` (share of FM times exactly at t = 1),
    ``lam`` (λ of GCTM), ``weighted`` (GCTM's c_out(t)(1 − s/t) weight),
    ``n_start``/``n_cap``/``n_double_every`` (N curriculum; 0 = auto), ``cd_n`` (CD's fixed N),
    ``target_decay`` (CD's EMA target), ``sigma_max``.
    ``teacher`` is the FM run for cd/ctm (empty = train one first); ``source`` a second 2D
    data set to translate from (``"gaussian"`` = noise); ``eps`` the source perturbation.
    """

    data: str = "moons"
    source: str = "gaussian"
    coupling: str = "independent"
    batch_size: int = 256
    lr: float = 2e-3
    seed: int = 0
    ema_decay: float = 0.99
    ckpt_every: int = 1000
    log_every: int = 50
    hidden: int = 256
    depth: int = 4
    eps: float = 0.0
    sinkhorn_reg: float = 0.05
    sinkhorn_pairing: str = "permutation"
    lr_decay: bool = True
    teacher: str = ""

    def validate(self) -> Toy2DConfig:
        """Check every field; fills in ``steps = 0`` with the method's default."""
        self.check_method_fields()
        if self.steps == 0:
            self.steps = DEFAULT_STEPS_2D[self.method]
        check_choice(self.data, DATASETS, "dataset")
        check_choice(self.source, DATASETS, "source dataset")
        check_choice(self.coupling, COUPLINGS, "coupling")
        check_choice(self.fm_times, FM_TIME_SAMPLERS, "FM time sampler")
        check_choice(self.sinkhorn_pairing, PAIRINGS, "Sinkhorn pairing")
        if self.coupling == "paired":
            raise ValueError("the paired coupling needs a data set of pairs; 2D toys are unpaired")
        for name in ("steps", "batch_size", "ckpt_every", "log_every", "hidden", "depth"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1; got {getattr(self, name)}")
        if self.lr <= 0 or self.eps < 0:
            raise ValueError("lr must be > 0 and eps ≥ 0")
        if self.n_start < 1 or self.n_cap < self.n_start or self.cd_n < 1:
            raise ValueError("need 1 ≤ n_start ≤ n_cap and cd_n ≥ 1")
        return self

    @classmethod
    def from_dict(cls, d: dict) -> Toy2DConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config key(s): {', '.join(sorted(unknown))}")
        return cls(**d)


@dataclass
class TrainResult:
    """What :func:`train2d` returns: online and EMA models, the log rows and the wall time."""

    model: FlowMapModel
    ema: FlowMapModel
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    out: Path | None = None
    evals: list[dict] = field(default_factory=list)


def draw_pairs(cfg: Toy2DConfig, data, source, gen: torch.Generator):
    """One coupled (and perturbed) batch ``(x0, x1)`` for ``cfg``."""
    x0 = data(cfg.batch_size, gen)
    x1 = source(cfg.batch_size, gen)
    x0, x1, _ = couple(x0, x1, cfg.coupling, reg=cfg.sinkhorn_reg, pairing=cfg.sinkhorn_pairing)
    return x0, perturb_source(x1, cfg.eps)


def estimate_moments(cfg: Toy2DConfig, data, source, gen: torch.Generator, batches: int = 8):
    """Coupling moments from ``batches`` coupled training batches (per coordinate)."""
    pairs = [draw_pairs(cfg, data, source, gen) for _ in range(batches)]
    x0 = torch.cat([p[0] for p in pairs])
    x1 = torch.cat([p[1] for p in pairs])
    # ε was applied to x1 already, so its variance is inside the estimate of v1
    return CouplingMoments.estimate(x0, x1)


def train2d(
    cfg: Toy2DConfig,
    out: str | Path | None = None,
    resume: bool = True,
    progress: bool = True,
    stop_after: int | None = None,
    device: str | torch.device = "cpu",
    teacher: FlowMapModel | None = None,
    callback: Callable[[int, FlowMapModel], dict] | None = None,
    callback_every: int = 0,
) -> TrainResult:
    """Train a 2D model; with ``out`` set, checkpoint there every ``ckpt_every`` steps.

    Args:
        cfg: the run configuration.
        out: run directory (``checkpoint.pt``, ``log.csv``, ``config.json``); ``None`` keeps
            everything in memory.
        resume: continue from ``out/checkpoint.pt`` if it exists (its config must match).
        progress: show a tqdm bar.
        stop_after: stop (after checkpointing) at this step; used to test resumption.
        device: where the model and batches live (2D toys are fastest on the CPU).
        teacher: the FM model for ``cd``/``ctm``; if omitted it is loaded from
            ``cfg.teacher`` or, if that is empty, trained first (into ``out/teacher``).
        callback: ``callback(step, ema_model) -> dict`` run every ``callback_every`` steps
            (e.g. an evaluation for a convergence curve); its rows land in
            ``TrainResult.evals``. It runs under a forked RNG, so it does not change training.
    """
    cfg.validate()
    out = Path(out) if out is not None else None
    data, source = as_sampler(cfg.data), as_sampler(cfg.source)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    spec = mlp_spec(
        2, cfg.hidden, cfg.depth, sigma_max=cfg.sigma_max, bidirectional=cfg.method == "bcm"
    )
    if cfg.method in NEEDS_TEACHER and teacher is None:
        teacher = _teacher_for(cfg, out, progress, device)
    state = None
    if out is not None and resume and checkpoint_path(out).exists():
        state = load_raw(out, map_location=device)
        if state.get("config") != asdict(cfg):
            raise ValueError(
                f"{out} holds a run with a different config; use a new --out or resume=False"
            )
    moments = None if state is not None else estimate_moments(cfg, data, source, gen)
    model = build_model(spec, moments).to(device)
    ema = EMA(model, cfg.ema_decay)
    method = TrainingMethod(cfg, model, teacher.to(device) if teacher is not None else None)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: lr_factor(cfg, k))
    step, history, seconds = 0, [], 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        method.load_state_dict(state["method"])
        step, history, seconds = state["step"], state["history"], state["seconds"]
        torch.set_rng_state(state["rng"]["torch"].cpu())
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([r.cpu() for r in state["rng"]["cuda"]])
        gen.set_state(state["rng"]["data"].cpu())

    def save() -> None:
        if out is None:
            return
        save_checkpoint(
            out,
            {
                "spec": spec,
                "config": asdict(cfg),
                "model": model.state_dict(),
                "ema": ema.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "method": method.state_dict(),
                "step": step,
                "history": history,
                "seconds": seconds,
                "rng": rng_states(gen),
            },
        )
        write_log(out, history)

    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    bar = tqdm(
        total=cfg.steps,
        initial=step,
        disable=not progress,
        mininterval=0.5 if sys.stderr.isatty() else 10.0,
        desc=f"{cfg.method} {cfg.data}",
    )
    model.train()
    evals: list[dict] = []
    t0 = time.perf_counter()
    while step < end:
        x0, x1 = (v.to(device) for v in draw_pairs(cfg, data, source, gen))
        loss, logs = method.loss(model, ema.model, x0, x1, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        ema.update(model)
        method.after_step(model)
        step += 1
        if step % cfg.log_every == 0 or step == cfg.steps:
            history.append(
                {
                    "step": step,
                    "loss": loss.item(),
                    **logs,
                    "seconds": seconds + time.perf_counter() - t0,
                }
            )
            bar.set_postfix(loss=f"{history[-1]['loss']:.4f}")
        bar.update(1)
        if callback is not None and callback_every > 0 and step % callback_every == 0:
            seconds += time.perf_counter() - t0
            with torch.random.fork_rng():
                evals.append({"step": step, **callback(step, ema.model)})
            t0 = time.perf_counter()
        if step % cfg.ckpt_every == 0 or step == end:
            seconds += time.perf_counter() - t0
            t0 = time.perf_counter()
            save()
    bar.close()
    seconds += time.perf_counter() - t0
    model.eval()
    model.train_config = ema.model.train_config = asdict(cfg)
    return TrainResult(model, ema.model, history, seconds, out, evals)


def _teacher_for(cfg: Toy2DConfig, out: Path | None, progress: bool, device) -> FlowMapModel:
    """The FM teacher of a cd/ctm run: loaded from ``cfg.teacher`` or trained (same data,
    coupling, steps and seed) into ``out/teacher``, reusing a finished one."""
    if cfg.teacher:
        return load_checkpoint(cfg.teacher, map_location=device)
    tcfg = replace(cfg, method="fm", teacher="", fm_times="uniform", steps=DEFAULT_STEPS_2D["fm"])
    tout = out / "teacher" if out is not None else None
    print(
        f"[{cfg.method}] no --teacher given: training an FM teacher ({tcfg.steps} steps)"
        + (f" into {tout}" if tout else "")
    )
    return train2d(tcfg, tout, progress=progress, device=device).ema


def rng_states(gen: torch.Generator) -> dict:
    """Global CPU (and CUDA, if present) RNG states plus the data generator's, for checkpoints."""
    states = {"torch": torch.get_rng_state(), "data": gen.get_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def lr_factor(cfg: Toy2DConfig, step: int) -> float:
    """Learning-rate multiplier: 100-step linear warm-up, then cosine decay to 0.05 if ``lr_decay``."""
    warm = min(1.0, (step + 1) / 100)
    if not cfg.lr_decay:
        return warm
    frac = min(1.0, step / max(1, cfg.steps))
    return warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))


def write_log(out: Path, history: list[dict]) -> None:
    """Rewrite ``out/log.csv`` from the history rows."""
    if history:
        write_csv(out / "log.csv", history)
