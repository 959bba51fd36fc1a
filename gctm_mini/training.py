"""The 2D training loop: seeded, checkpointed atomically every K steps, resumable.

One step: draw a data batch X0 and a source batch X1, pair them with the configured
coupling (optionally perturb X1 by ε), evaluate the method's loss, take an Adam step and
update the EMA copy. Randomness: the data/source draws use a dedicated generator and
everything else torch's global RNG; both states go into every checkpoint, so a resumed run
continues exactly where the saved one stopped.

A run that diverges (a non-finite loss term or parameter) stops with
:class:`TrainingDivergedError` before anything non-finite is saved (:class:`DivergenceGuard`);
the run directory is held by one run at a time and keeps its last good checkpoint
(:class:`~gctm_mini.rundir.RunDirectory`).
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .checkpoint import FILENAME, checkpoint_path, load_resumable, load_teacher
from .couplings import COUPLINGS, PAIRINGS, couple, perturb_source
from .data2d import DATASETS, as_sampler
from .ema import EMA
from .methods import (
    DEFAULT_EMA_SOLVER_2D,
    DEFAULT_JUMP_PROB_2D,
    DEFAULT_LAM_2D,
    DEFAULT_LR_2D,
    DEFAULT_N_CAP_2D,
    DEFAULT_STEPS_2D,
    DEFAULT_X_FOURIER_2D,
    N_CAP,
    NEEDS_TEACHER,
    MethodFields,
    TrainingMethod,
)
from .models import MAX_X_FOURIER, build_model, mlp_spec
from .parameterization import CouplingMoments, FlowMapModel
from .rundir import RunDirectory, run_path
from .runtime import with_config_threads
from .solvers import METHODS as ODE_METHODS
from .validation import check_fields, config_from_dict, knob


@dataclass
class Toy2DConfig(MethodFields):
    """Every knob of a 2D run (all overridable from the ``train2d`` command line).

    Method knobs come from :class:`~gctm_mini.methods.MethodFields` (``method``, ``steps``, the
    FM time sampler, GCTM's λ, the N curriculum, …). ``teacher`` is the FM run for cd/ctm
    (empty = train one first); ``source`` a second 2D data set to translate from
    (``"gaussian"`` = noise); ``eps`` the source perturbation. ``threads``: torch CPU threads
    during training (0 = auto: one, the fastest for these small models and by far the fastest
    on a shared machine; :data:`~gctm_mini.runtime.SMALL_MODEL_THREADS`); the caller's count is
    restored afterwards. Each field declares its meaning and valid range (shown by ``--help``;
    checked by :meth:`validate`).
    """

    data: str = knob("moons", "2D data set X0 (t = 0)", choices=DATASETS, what="dataset")
    source: str = knob(
        "gaussian",
        "source X1 (t = 1): noise or a second 2D data set",
        choices=DATASETS,
        what="source dataset",
    )
    coupling: str = knob(
        "independent",
        "how data and source batches are paired",
        choices=[c for c in COUPLINGS if c != "paired"],
        what="coupling",
    )
    batch_size: int = knob(256, "pairs per training step", ge=1)
    lr: float = knob(
        0.0,
        "Adam learning rate (0 = auto: 4e-3 for gctm, 2e-3 for the other methods)",
        gt=0.0,
        le=1e38,
        special=(0.0,),
    )
    lam: float = knob(DEFAULT_LAM_2D, "λ of GCTM: loss = λ·consistency + FM", ge=0.0)
    n_cap: int = knob(
        0,
        "N curriculum: largest number of grid intervals, ≥ n_start "
        "(0 = auto: 8 for gctm from Gaussian noise with the ot coupling, 16 otherwise)",
        ge=1,
        special=(0,),
    )
    ema_solver: str = knob(
        "auto",
        "GCTM: ODE method of the EMA solve t → u (auto = euler from Gaussian noise with the "
        "ot coupling, heun otherwise; heun is the paper's)",
        choices=("auto", *ODE_METHODS),
        what="ema_solver (ODE method)",
    )
    seed: int = knob(0, "run seed (model init, data and training randomness)", ge=0, lt=2**63)
    ema_decay: float = knob(0.99, "decay of the EMA weights used for sampling", ge=0.0, lt=1.0)
    ckpt_every: int = knob(1000, "steps between checkpoints", ge=1)
    log_every: int = knob(50, "steps between log rows", ge=1)
    hidden: int = knob(256, "MLP width", ge=1)
    depth: int = knob(4, "MLP hidden layers", ge=1)
    x_fourier: float = knob(
        -1.0,
        "σ of random Fourier features of x in the MLP's input, [x, sin 2πxB, cos 2πxB] "
        "with B ~ N(0, σ²) of shape (2, 32) (0 = x alone; -1 = auto: 3 for gctm from "
        "Gaussian noise with the ot coupling, 0 otherwise)",
        ge=0.0,
        le=MAX_X_FOURIER,
        special=(-1.0,),
    )
    eps: float = knob(0.0, "ε: source perturbation X1 + ε·z", ge=0.0)
    sinkhorn_reg: float = knob(0.05, "Sinkhorn ε, relative to the mean pairwise cost", gt=0.0)
    sinkhorn_pairing: str = knob(
        "permutation",
        "how Sinkhorn's plan becomes pairs",
        choices=PAIRINGS,
        what="Sinkhorn pairing",
    )
    lr_decay: bool = knob(True, "cosine learning-rate decay to 5 % over the run")
    teacher: str = knob("", "cd/ctm: FM run directory or checkpoint (empty = train one)")
    threads: int = knob(0, "torch CPU threads while training (0 = auto: 1)", ge=0)
    jump_prob: float = knob(
        -1.0,
        "GCTM: share of samples trained on the one-jump map, (t, s) = (1, 0) "
        "(-1 = auto: 0.25 from Gaussian noise, 0 when translating)",
        ge=0.0,
        le=1.0,
        special=(-1.0,),
    )

    def validate(self) -> Toy2DConfig:
        """Check every field (types, ranges, choices) and fill the auto values with the 2D
        defaults: ``steps = 0`` and ``lr = 0`` per method
        (:data:`~gctm_mini.methods.DEFAULT_STEPS_2D`, :data:`~gctm_mini.methods.DEFAULT_LR_2D`);
        for a run from Gaussian noise ``jump_prob = -1`` with
        :data:`~gctm_mini.methods.DEFAULT_JUMP_PROB_2D` (0 when translating, unmeasured there);
        for a run from noise with the exact-OT coupling, whose paths are nearly straight,
        ``ema_solver = "auto"`` with :data:`~gctm_mini.methods.DEFAULT_EMA_SOLVER_2D` and, for
        GCTM, ``n_cap = 0`` with :data:`~gctm_mini.methods.DEFAULT_N_CAP_2D` (never below
        ``n_start``) and ``x_fourier = -1`` with
        :data:`~gctm_mini.methods.DEFAULT_X_FOURIER_2D`; otherwise Heun,
        :data:`~gctm_mini.methods.N_CAP` and x alone. Returns ``self``."""
        check_fields(self)  # types, ranges and choices first (auto values are allowed)
        from_noise = self.source == "gaussian"
        if self.jump_prob == -1.0:
            self.jump_prob = DEFAULT_JUMP_PROB_2D if from_noise else 0.0
        straight = from_noise and self.coupling == "ot"  # where Euler and N ≤ 8 were measured
        if self.ema_solver == "auto":
            self.ema_solver = DEFAULT_EMA_SOLVER_2D if straight else "heun"
        if self.n_cap == 0:
            cap = DEFAULT_N_CAP_2D if straight and self.method == "gctm" else N_CAP
            self.n_cap = max(cap, self.n_start)
        if self.x_fourier == -1.0:
            self.x_fourier = DEFAULT_X_FOURIER_2D if straight and self.method == "gctm" else 0.0
        if self.coupling == "paired":
            raise ValueError("the paired coupling needs a data set of pairs; 2D toys are unpaired")
        self.check_method_fields()
        if self.steps == 0:
            self.steps = DEFAULT_STEPS_2D[self.method]
        if self.lr == 0.0:
            self.lr = DEFAULT_LR_2D[self.method]
        return self

    @classmethod
    def from_dict(cls, d: dict, where: str = "the config") -> Toy2DConfig:
        """The config with the keys of ``d`` (e.g. a run's ``config.json``); not yet validated."""
        return config_from_dict(cls, d, where)


@dataclass
class TrainResult:
    """What :func:`train2d` returns: online and EMA models, the log rows and the wall time."""

    model: FlowMapModel
    ema: FlowMapModel
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    out: Path | None = None
    evals: list[dict] = field(default_factory=list)


def model_spec(cfg: Toy2DConfig) -> dict:
    """The model spec of a validated 2D config (width, depth, σ clamp, Fourier features of x;
    bidirectional for BCM)."""
    return mlp_spec(
        2,
        cfg.hidden,
        cfg.depth,
        sigma_max=cfg.sigma_max,
        bidirectional=cfg.method == "bcm",
        x_fourier=cfg.x_fourier,
    )


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


class TrainingDivergedError(RuntimeError):
    """Training stopped because a loss term or the model state became non-finite (NaN, ±inf).

    The message names the step, the non-finite quantity and a remedy. Nothing non-finite was
    written: the run directory keeps its last good checkpoint (or, if there was none, is left
    as it was before the run).
    """


class DivergenceGuard:
    """Stops a run whose loss or state turns non-finite, with :class:`TrainingDivergedError`.

    What is checked, and when:

    - every step, before the backward pass: the total loss and each logged term (``fm``,
      ``consistency``, ``ct``, …). The terms are Python floats already (each method logs
      them with ``.item()``) and the total is computed before them, so this adds no device
      synchronization;
    - the online and EMA parameters and the optimizer moments, before anything leaves the
      loop: before each checkpoint (and so before the log, which is written with it), before
      each callback, and after the last step, with or without a run directory.

    Why this catches every case: an update that makes a parameter non-finite although its
    loss was finite (an infinite or huge learning rate, an overflowing gradient) makes the
    next step's loss non-finite if the parameter enters the loss, and is caught there, before
    that step's update; a parameter that does not enter the loss, or the last step's update,
    is caught by the state check, which runs before any checkpoint, log row, callback or
    returned model could carry it. A checkpoint is therefore never written after a
    non-finite update.
    """

    def __init__(self, cfg, run: RunDirectory | None, saved_step: int | None) -> None:
        self.cfg = cfg
        self.run = run
        self.saved_step = saved_step

    def check_loss(
        self, step: int, loss: float, logs: dict, model: torch.nn.Module | None = None
    ) -> None:
        """Raise if ``loss`` (the total of step ``step``) or a logged term is not finite;
        ``model`` (optional) lets the message say whether its parameters already were."""
        if math.isfinite(loss) and all(
            math.isfinite(v) for v in logs.values() if isinstance(v, (int, float))
        ):
            return
        bad = [
            f"{k} = {v}"
            for k, v in logs.items()
            if isinstance(v, (int, float)) and not math.isfinite(v)
        ]
        if bad:
            what = "non-finite loss term " + ", ".join(bad)
            hint = f"lower lr (now {self.cfg.lr:g})"
        else:
            terms = ", ".join(f"{k} = {v:.4g}" for k, v in logs.items())
            what = f"the total loss is {loss} although every term is finite ({terms})"
            hint = f"check the loss weight lam (now {self.cfg.lam:g}) or lower lr"
        if model is not None and not _all_finite(_named_parameters(model)):
            what += " (the parameters were already non-finite after the previous update)"
        self.fail(step, what, hint)

    def check_state(
        self,
        step: int,
        model: torch.nn.Module,
        ema: torch.nn.Module,
        opt: torch.optim.Optimizer,
    ) -> None:
        """Raise if a parameter, EMA parameter or optimizer moment is not finite after step
        ``step``."""
        named = _named_parameters(model) + _named_parameters(ema, "EMA parameter")
        names = {id(p): n for n, p in model.named_parameters()}
        for p, st in opt.state.items():
            for k, v in st.items():
                if torch.is_tensor(v) and v.is_floating_point():
                    named.append((f"optimizer {k} of {names.get(id(p), '?')}", v))
        bad = _first_nonfinite(named)
        if bad is not None:
            self.fail(
                step,
                f"non-finite {bad} after the update",
                f"lower lr (now {self.cfg.lr:g})",
            )

    def fail(self, step: int, what: str, hint: str) -> None:
        """Raise :class:`TrainingDivergedError`: step, what is non-finite, a remedy, and
        what the run directory keeps."""
        where = ""
        if self.run is not None:
            ckpt = self.run.path / FILENAME
            if self.saved_step is not None:
                where = f"; the last finite checkpoint, step {self.saved_step}, is kept in {ckpt}"
            elif ckpt.exists():
                where = f"; {ckpt} (another run's) is left as it was"
            else:
                where = "; no checkpoint was written"
        raise TrainingDivergedError(f"training diverged at step {step}: {what}; {hint}{where}")


def _named_parameters(module: torch.nn.Module, kind: str = "parameter") -> list:
    return [(f"{kind} {n}", p) for n, p in module.named_parameters()]


def _first_nonfinite(named: list[tuple[str, torch.Tensor]]) -> str | None:
    """The name of the first tensor holding a NaN or ±inf, or ``None``; one device sync per
    device when everything is finite."""
    if _all_finite(named):
        return None
    return next(n for n, t in named if not bool(torch.isfinite(t).all()))


def _all_finite(named: list[tuple[str, torch.Tensor]]) -> bool:
    flags: dict[torch.device, list[torch.Tensor]] = {}
    for _, t in named:
        flags.setdefault(t.device, []).append(torch.isfinite(t.detach()).all())
    return all(bool(torch.stack(f).all()) for f in flags.values())


@with_config_threads
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
        out: run directory (``checkpoint.pt``, ``log.csv``, ``config.json``), held by this
            run alone while it trains (:class:`~gctm_mini.rundir.RunDirectory`); ``None``
            keeps everything in memory.
        resume: continue from ``out/checkpoint.pt`` if it exists (its config must match).
        progress: show a tqdm bar.
        stop_after: stop (after checkpointing) at this step; used to test resumption.
        device: where the model and batches live (2D toys are fastest on the CPU).
        teacher: the FM model for ``cd``/``ctm``; if omitted it is loaded from
            ``cfg.teacher`` or, if that is empty, trained first (into ``out/teacher``).
        callback: ``callback(step, ema_model) -> dict`` run every ``callback_every`` steps
            (e.g. an evaluation for a convergence curve); its rows land in
            ``TrainResult.evals``. It runs under a forked RNG, so it does not change training.

    Raises:
        TrainingDivergedError: a loss term or a parameter became non-finite (see
            :class:`DivergenceGuard`); the run directory keeps its last good checkpoint.
        RunDirectoryBusyError: another process is training in ``out``.
        RunDirectoryError: ``out`` cannot be created or written (e.g. no space left).
    """
    cfg.validate()
    out = run_path(out) if out is not None else None
    with contextlib.ExitStack() as stack:  # releases the run directory, closes the bar
        run = stack.enter_context(RunDirectory(out)) if out is not None else None
        return _train2d(
            cfg, run, stack, resume, progress, stop_after, device, teacher, callback, callback_every
        )


def _train2d(
    cfg: Toy2DConfig,
    run: RunDirectory | None,
    stack: contextlib.ExitStack,
    resume: bool,
    progress: bool,
    stop_after: int | None,
    device: str | torch.device,
    teacher: FlowMapModel | None,
    callback: Callable[[int, FlowMapModel], dict] | None,
    callback_every: int,
) -> TrainResult:
    out = run.path if run is not None else None
    data, source = as_sampler(cfg.data), as_sampler(cfg.source)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    spec = model_spec(cfg)
    if cfg.method in NEEDS_TEACHER and teacher is None:
        teacher = _teacher_for(cfg, out, progress, device)
    state = None
    if out is not None and resume and checkpoint_path(out).exists():
        state = load_resumable(out, asdict(cfg), spec, map_location=device, extra=("rng",))
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
    guard = DivergenceGuard(cfg, run, step if state is not None else None)

    def save() -> None:
        nonlocal config_written
        if run is None:
            return
        if not config_written:
            run.write_json("config.json", asdict(cfg))
            config_written = True
        run.save_checkpoint(
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
        guard.saved_step = step
        write_log(run, history)

    config_written = False
    if run is not None and not run.has_checkpoint:
        # written at once so that a running job shows its config; with an old checkpoint in
        # the directory (resume=False), only together with this run's first checkpoint
        run.write_json("config.json", asdict(cfg))
        config_written = True
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    bar = stack.enter_context(
        tqdm(
            total=cfg.steps,
            initial=step,
            disable=not progress,
            mininterval=0.5 if sys.stderr.isatty() else 10.0,
            desc=f"{cfg.method} {cfg.data}",
        )
    )
    model.train()
    evals: list[dict] = []
    t0 = time.perf_counter()
    while step < end:
        x0, x1 = (v.to(device) for v in draw_pairs(cfg, data, source, gen))
        loss, logs = method.loss(model, ema.model, x0, x1, step)
        value = loss.item()
        guard.check_loss(step + 1, value, logs, model)
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
                    "loss": value,
                    **logs,
                    "seconds": seconds + time.perf_counter() - t0,
                }
            )
            bar.set_postfix(loss=f"{value:.4f}")
        bar.update(1)
        if callback is not None and callback_every > 0 and step % callback_every == 0:
            seconds += time.perf_counter() - t0
            guard.check_state(step, model, ema.model, opt)
            with torch.random.fork_rng():
                evals.append({"step": step, **callback(step, ema.model)})
            t0 = time.perf_counter()
        if step % cfg.ckpt_every == 0 or step == end:
            seconds += time.perf_counter() - t0
            t0 = time.perf_counter()
            guard.check_state(step, model, ema.model, opt)
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
        match = {"data": cfg.data, "source": cfg.source, "eps": cfg.eps}
        return load_teacher(cfg.teacher, (2,), map_location=device, match=match)
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


def lr_factor(cfg: Toy2DConfig, step: int, end: float = 0.05) -> float:
    """Learning-rate multiplier: 100-step linear warm-up, then cosine decay to ``end`` (of the
    peak) over the run if ``lr_decay``."""
    warm = min(1.0, (step + 1) / 100)
    if not cfg.lr_decay:
        return warm
    frac = min(1.0, step / max(1, cfg.steps))
    return warm * (end + (1 - end) * 0.5 * (1 + math.cos(math.pi * frac)))


def write_log(run: RunDirectory, history: list[dict]) -> None:
    """Rewrite ``log.csv`` of the run directory from the history rows (atomically)."""
    if history:
        run.write_csv("log.csv", history)
