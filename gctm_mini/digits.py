r"""Digit metrics: a small MNIST classifier and the scores it gives generated digits.

A metric for generated digits must agree with the eye. The random-feature distance of
:mod:`gctm_mini.evaluation` does not know what a digit is; a classifier trained on real
digits does. :class:`DigitClassifier` is a small CNN trained **only on the 4,000-digit
training split** of :class:`~gctm_mini.images.MnistDigits` (never on the 1,000 held-out
digits, which measure its accuracy). It ships at ``data/classifiers/digit_cnn.pt``
(float16); ``data/classifiers/manifest.json`` gives the command that regenerates it
(``python -m gctm_mini.digits --out data/classifiers/digit_cnn.pt``) and its held-out
accuracy.

Scores of a set of generated digits ``x: (n, 1, 28, 28)`` in [−1, 1]:

- **digit FD** (:func:`digit_fd`): the Fréchet distance between Gaussian fits of the
  classifier's penultimate features φ (128-d) of two sets,

  .. math::
      \mathrm{FD}_\text{digit} = \|\mu_g - \mu_r\|^2
      + \mathrm{tr}\big(\Sigma_g + \Sigma_r - 2(\Sigma_g\Sigma_r)^{1/2}\big).

  It is **not** FID: the features are this small MNIST classifier's, not Inception's, so
  its values compare only with each other (at the same n), never with published FIDs.
- **confident share** (:func:`confident_share`): the share of samples whose top softmax
  probability is at least 0.9 — the share that reads as *some* digit.
- **class coverage** (:func:`class_coverage`): the share of samples predicted as each class
  (sums to 1); its minimum flags a missing digit (0.1 each for a balanced set).
- **floor** (:func:`digit_fd_floor`): two finite sets of *real* digits are not at FD 0.
  The floor is the FD of held-out digits against training digits at the same n, mean ± std
  over subsample draws; a generator is read against it.
- **accuracy** (:func:`digit_accuracy`): the share of restored digits classified as the
  label of the clean digit they came from (for restoration tables).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checkpoint import save_checkpoint
from .evaluation import frechet_distance

REPOSITORY_CLASSIFIER_DIR = Path(__file__).resolve().parent.parent / "data" / "classifiers"
PACKAGED_CLASSIFIER_DIR = Path(__file__).resolve().parent / "_classifiers"  # in a wheel
CLASSIFIER_DIR = (
    PACKAGED_CLASSIFIER_DIR
    if (PACKAGED_CLASSIFIER_DIR / "digit_cnn.pt").is_file()
    else REPOSITORY_CLASSIFIER_DIR
)
"""Where the shipped classifier lives: inside an installed wheel (``gctm_mini/_classifiers``),
else the repository's ``data/classifiers``."""
CLASSIFIER_PATH = CLASSIFIER_DIR / "digit_cnn.pt"
KIND = "digit_classifier"
CONFIDENCE = 0.9
FEATURES = 128


class DigitClassifier(nn.Module):
    """A small CNN for 1×28×28 digits in [−1, 1].

    Three stages of two 3×3 conv + ReLU layers with 2×2 max pooling (28 → 14 → 7 → 3;
    32, 64, 128 channels), then a 1152 → 128 linear layer + ReLU (the **features** φ used by
    :func:`digit_fd`), dropout, and a 128 → 10 linear layer (logits). About 0.45 M parameters.
    """

    def __init__(self, dropout: float = 0.3) -> None:
        super().__init__()
        layers, c = [], 1
        for width in (32, 64, 128):
            layers += [
                nn.Conv2d(c, width, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(width, width, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            c = width
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(128 * 3 * 3, FEATURES)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(FEATURES, 10)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features φ(x): ``(B, 1, 28, 28)`` → ``(B, 128)``."""
        return F.relu(self.fc(self.body(x).flatten(1)))

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, 10)``."""
        return self.head(self.drop(self.features(x)))


def _check_digits(x: Tensor, name: str = "x") -> Tensor:
    if not isinstance(x, Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != (1, 28, 28):
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be digits of shape (n, 1, 28, 28) in [-1, 1]; got {shape}")
    if x.shape[0] < 1:
        raise ValueError(f"{name} is empty")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} holds non-finite values")
    return x.detach().float().cpu().clamp(-1, 1)


def _augment(x: Tensor, g: torch.Generator, max_shift: int = 2, max_deg: float = 10.0) -> Tensor:
    """Random shifts (±``max_shift`` px) and rotations (±``max_deg``°) of a batch, vectorized."""
    B = x.shape[0]
    ang = (torch.rand(B, generator=g) * 2 - 1) * math.radians(max_deg)
    shift = (torch.randint(-max_shift, max_shift + 1, (B, 2), generator=g).float()) * 2 / 28
    cos, sin = ang.cos(), ang.sin()
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # pad with the background value −1: sample x + 1 (background 0) and shift back
    return F.grid_sample(x + 1, grid, align_corners=False, padding_mode="zeros") - 1


@dataclass
class ClassifierResult:
    """A trained classifier, its held-out accuracy and training wall time (s)."""

    model: DigitClassifier
    heldout_accuracy: float
    seconds: float


def train_digit_classifier(
    epochs: int = 12,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    progress: bool = True,
) -> ClassifierResult:
    """Train :class:`DigitClassifier` on the 4,000 training digits (shift/rotation
    augmentation, Adam, cosine learning-rate decay); report accuracy on the 1,000 held out."""
    from .images import MnistDigits

    train, test = MnistDigits("train"), MnistDigits("test")
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = DigitClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n = len(train)
    steps = epochs * math.ceil(n / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    t0 = time.perf_counter()
    model.train()
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            x = _augment(train.images[idx], g)
            loss = F.cross_entropy(model(x), train.labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if progress:
            acc = accuracy_of(model, test.images, test.labels)
            print(
                f"[digits] epoch {epoch + 1}/{epochs}: loss {loss.item():.4f}, held-out {acc:.4f}"
            )
    model.eval()
    acc = accuracy_of(model, test.images, test.labels)
    return ClassifierResult(model, acc, time.perf_counter() - t0)


@torch.no_grad()
def accuracy_of(model: DigitClassifier, x: Tensor, y: Tensor) -> float:
    was = model.training
    model.eval()
    pred = torch.cat([model(x[i : i + 500]).argmax(1) for i in range(0, len(x), 500)])
    model.train(was)
    return float((pred == y).float().mean())


def save_digit_classifier(result: ClassifierResult, dest: str | Path, command: str) -> Path:
    """Write the classifier's float16 weights, held-out accuracy and command (atomically)."""
    state = {k: v.half() for k, v in result.model.state_dict().items()}
    return save_checkpoint(
        Path(dest),
        {
            "kind": KIND,
            "state": state,
            "heldout_accuracy": result.heldout_accuracy,
            "seconds": result.seconds,
            "command": command,
        },
    )


_CACHE: dict[str, DigitClassifier] = {}


def load_digit_classifier(path: str | Path | None = None) -> DigitClassifier:
    """The shipped classifier (or the one at ``path``), float32, eval mode; cached."""
    p = Path(path) if path is not None else CLASSIFIER_PATH
    key = str(p.resolve())
    if key in _CACHE:
        return _CACHE[key]
    if not p.exists():
        raise FileNotFoundError(
            f"no digit classifier at {p}; regenerate it with: python -m gctm_mini.digits --out {p}"
        )
    data = torch.load(p, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise ValueError(f"{p} is not a gctm_mini digit classifier")
    model = DigitClassifier()
    model.load_state_dict({k: v.float() for k, v in data["state"].items()})
    model.eval().requires_grad_(False)
    _CACHE[key] = model
    return model


@torch.no_grad()
def classify(x: Tensor, model: DigitClassifier | None = None, batch: int = 500) -> Tensor:
    """Softmax probabilities ``(n, 10)`` of digits ``x: (n, 1, 28, 28)`` (clamped to [−1, 1])."""
    x = _check_digits(x)
    model = model or load_digit_classifier()
    return torch.cat([model(x[i : i + batch]).softmax(1) for i in range(0, len(x), batch)])


@torch.no_grad()
def digit_features(x: Tensor, model: DigitClassifier | None = None, batch: int = 500) -> Tensor:
    """Penultimate features ``(n, 128)`` (float64) of digits ``x: (n, 1, 28, 28)``."""
    x = _check_digits(x)
    model = model or load_digit_classifier()
    return torch.cat([model.features(x[i : i + batch]) for i in range(0, len(x), batch)]).double()


def digit_fd(x: Tensor, y: Tensor, model: DigitClassifier | None = None) -> float:
    """Digit FD between two digit sets (see the module docstring; **not** Inception FID)."""
    for name, v in (("x", x), ("y", y)):
        if isinstance(v, Tensor) and v.dim() == 4 and v.shape[0] < 2:
            raise ValueError(f"{name} needs at least 2 digits for a covariance; got {v.shape[0]}")
    return frechet_distance(digit_features(x, model), digit_features(y, model))


def confident_share(x: Tensor, threshold: float = CONFIDENCE, model=None) -> float:
    """Share of digits whose top class probability is ≥ ``threshold``."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must lie in (0, 1); got {threshold}")
    return float((classify(x, model).max(1).values >= threshold).float().mean())


def class_coverage(x: Tensor, model: DigitClassifier | None = None) -> Tensor:
    """Share of digits predicted as each class 0–9, ``(10,)``, summing to 1."""
    pred = classify(x, model).argmax(1)
    return torch.bincount(pred, minlength=10).double() / len(pred)


def digit_accuracy(restored: Tensor, labels: Tensor, model: DigitClassifier | None = None) -> float:
    """Share of ``restored: (n, 1, 28, 28)`` classified as ``labels: (n,)`` (the clean digits')."""
    labels = torch.as_tensor(labels)
    if labels.shape != (restored.shape[0],):
        raise ValueError(f"labels must be (n,) = ({restored.shape[0]},); got {tuple(labels.shape)}")
    return float((classify(restored, model).argmax(1) == labels.cpu().long()).float().mean())


@dataclass
class DigitScores:
    """Scores of one set of generated digits against held-out reference digits."""

    fd: float
    confident: float
    coverage: list[float]

    @property
    def min_class(self) -> float:
        return min(self.coverage)


def score_digits(x: Tensor, reference: Tensor, model: DigitClassifier | None = None) -> DigitScores:
    """Digit FD to ``reference``, confident share and class coverage of ``x``."""
    model = model or load_digit_classifier()
    probs = classify(x, model)
    cov = torch.bincount(probs.argmax(1), minlength=10).double() / len(probs)
    return DigitScores(
        fd=digit_fd(x, reference, model),
        confident=float((probs.max(1).values >= CONFIDENCE).float().mean()),
        coverage=[float(c) for c in cov],
    )


def reference_digits() -> Tensor:
    """The 1,000 held-out digits ``(1000, 1, 28, 28)`` (the reference of every digit score)."""
    from .images import MnistDigits

    return MnistDigits("test").images


def digit_fd_floor(
    n: int = 1000, seeds: int = 3, model: DigitClassifier | None = None
) -> tuple[float, float]:
    """Floor of digit FD at sample size ``n``: held-out digits vs ``n`` training digits.

    For each seed k, ``n`` training digits are drawn without replacement (generator seeded
    with k) and compared with the held-out set (all 1,000 when ``n ≥ 1000``, else ``n`` drawn
    with the same generator). Returns ``(mean, std)`` over the seeds (std 0 for one seed).
    """
    from .images import MnistDigits

    if not 2 <= n <= 4000:
        raise ValueError(f"n must lie in [2, 4000] (the training split's size); got {n}")
    if seeds < 1:
        raise ValueError(f"seeds must be ≥ 1; got {seeds}")
    train, test = MnistDigits("train").images, reference_digits()
    vals = []
    for k in range(seeds):
        g = torch.Generator().manual_seed(k)
        a = train[torch.randperm(len(train), generator=g)[:n]]
        b = test if n >= len(test) else test[torch.randperm(len(test), generator=g)[:n]]
        vals.append(digit_fd(a, b, model))
    t = torch.tensor(vals, dtype=torch.float64)
    return float(t.mean()), float(t.std()) if seeds > 1 else 0.0


def score_sampler(
    sample: Callable[[int, int], Tensor], n: int = 1000, seeds: int = 3, model=None
) -> dict:
    """Mean ± std over ``seeds`` of the scores of ``sample(n, seed)`` against held-out digits."""
    ref = reference_digits()
    rows = [score_digits(sample(n, k), ref, model) for k in range(seeds)]

    def ms(vals: list[float]) -> tuple[float, float]:
        t = torch.tensor(vals, dtype=torch.float64)
        return float(t.mean()), float(t.std()) if len(vals) > 1 else 0.0

    return {
        "fd": ms([r.fd for r in rows]),
        "confident": ms([r.confident for r in rows]),
        "min_class": ms([r.min_class for r in rows]),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m gctm_mini.digits",
        description="train the digit classifier on the 4,000 training digits and save it",
    )
    p.add_argument("--out", default=str(CLASSIFIER_PATH))
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    command = (
        f"python -m gctm_mini.digits --out {args.out} --epochs {args.epochs} --seed {args.seed}"
    )
    res = train_digit_classifier(args.epochs, seed=args.seed)
    dest = save_digit_classifier(res, args.out, command)
    print(
        f"wrote {dest} ({dest.stat().st_size / 1e6:.2f} MB); held-out accuracy "
        f"{res.heldout_accuracy:.4f}; {res.seconds:.0f} s"
    )
    man = Path(args.out).parent / "manifest.json"
    entries = json.loads(man.read_text()) if man.exists() else {}
    entries[Path(args.out).stem] = {
        "kind": KIND,
        "trained_on": "MnistDigits('train'): 4,000 digits (400 per class)",
        "heldout_accuracy": round(res.heldout_accuracy, 4),
        "heldout": "MnistDigits('test'): 1,000 digits (100 per class)",
        "seconds": round(res.seconds, 1),
        "command": command,
    }
    man.write_text(json.dumps(entries, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
