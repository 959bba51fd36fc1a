r"""A two-time U-Net in the style of EDM's DDPM++ network ("SongUNet"), written for this package.

:math:`F_\theta(x, c_t, c_s)` for images ``(B, C, H, W)``: the time labels
:math:`c = 0.25\log\sigma` of t and s go through one shared positional embedding and one
shared mapping MLP, giving :math:`e_t` and :math:`e_s`; every residual block adds its own affine
images of both, :math:`A_t e_t + A_s e_s`, as a per-channel scale and shift after the first
normalization. Encoder blocks at each resolution (with self-attention where the resolution
is listed), down-sampling between levels, a mirrored decoder with skip connections, and a
zero-initialized output convolution (so an untrained model predicts :math:`F = 0`, i.e.
:math:`g = c_\text{skip}x`). Dropout is :class:`~gctm_mini.randomness.SampleDropout`, whose
masks the training losses key per sample.

Paper setting for 32×32 (docs/conventions.md §2): 128 channels, multipliers [1, 2, 2, 2], 4 blocks
per resolution, attention at 16×16, dropout 0.1. The tiny CPU setting (1.6 M parameters)
and a small single-GPU setting are listed in :data:`UNET_PRESETS`.

Differences from the reference network (1202kbs/GCTM ``networks.py``, ``SongUNet``: EDM's
DDPM++ with a second time input), none of them measured against it here:

* **conditioning**: FiLM, ``norm(h)·(1 + scale) + shift`` with (scale, shift) =
  :math:`A_t e_t + A_s e_s` (2C outputs per affine). The reference runs DDPM++ with
  ``adaptive_scale=False``: it adds :math:`A_t e_t + A_s e_s` (C outputs) to h as a bias
  before the normalization. With FiLM the two times can change each channel's gain, not
  only its offset (EDM's own blocks default to this, ``adaptive_scale=True``); it costs
  10.24 M parameters at the paper width.
* **label scale**: the sinusoids run at :math:`1000\cdot10^{-4k/(C/2)}` rad per label unit,
  so that the label range, about [−1.55, 1.55], spans many periods of the fast features,
  as DDPM++'s VP label 999·t does. The reference feeds :math:`0.25\log\sigma` to
  frequencies from 1 down to 10⁻⁴ rad per label unit, so most of its features barely
  change over that range. The reference also passes s through *t*'s
  mapping layers (its s mapping layers are built but unused); one shared mapping MLP here
  is that behaviour without the unused weights.
* **attention placement**: in every block at a listed resolution, encoder and decoder,
  plus the first bottleneck block. The reference attends in every encoder block and the
  first bottleneck block too, but in the decoder only in the last block of a level (1 of
  5 at 16×16 in the paper setting); one rule for both paths here, +1.05 M parameters.
* **resampling**: 2×2 average pooling / nearest up-sampling before the first convolution,
  and an identity skip on resampling blocks; the reference resamples with a [1, 1] filter
  inside the convolution and projects the skip by a 1×1 convolution. Group norm: 32
  groups where every group keeps ≥ 2 channels (reference: min(32, C/4)).
* **size**: the ``cifar10`` config (``net="paper"``, 3 channels, 32×32) has 77,879,043
  parameters here; the reference ``SongUNet`` built with its CIFAR-10 script's settings
  (128 channels, 4 blocks, [1, 2, 2, 2], attention at 16, counted by instantiating it) has
  67,254,915, of which 328,704 are the unused s mapping layers. The +10.62 M are +10.24 M
  (FiLM) + 1.05 M (decoder attention) − 0.67 M (no skip projections or unused layers).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .randomness import SampleDropout

UNET_PRESETS: dict[str, dict] = {
    "paper": {
        "model_channels": 128,
        "channel_mult": [1, 2, 2, 2],
        "num_blocks": 4,
        "attn_resolutions": [16],
        "dropout": 0.1,
    },
    "small": {
        "model_channels": 64,
        "channel_mult": [1, 2, 2],
        "num_blocks": 2,
        "attn_resolutions": [16],
        "dropout": 0.1,
    },
    "tiny": {
        "model_channels": 32,
        "channel_mult": [1, 2, 2],
        "num_blocks": 1,
        "attn_resolutions": [8],
        "dropout": 0.0,
    },
}


def _groups(ch: int) -> int:
    """Group-norm groups: 32 when the channels allow it (EDM), fewer for thin layers."""
    for g in (32, 16, 8, 4, 2, 1):
        if ch % g == 0 and ch // g >= 2:
            return g
    return 1


class PositionalEmbedding(nn.Module):
    """Sinusoidal features of a scalar label ``c: (B,)`` → ``(B, dim)`` (transformer style)."""

    def __init__(self, dim: int, max_positions: int = 10_000) -> None:
        super().__init__()
        half = dim // 2
        freqs = torch.exp(-math.log(max_positions) * torch.arange(half) / half)
        self.register_buffer("freqs", freqs)

    def forward(self, c: Tensor) -> Tensor:
        # labels are O(1); ×1000 so that the fastest frequencies resolve small changes
        # (the reference feeds them unscaled: module docstring)
        arg = (1000.0 * c.float())[:, None] * self.freqs[None]
        return torch.cat([arg.cos(), arg.sin()], dim=1)


class Attention(nn.Module):
    """Single-head self-attention over the H·W positions with a residual connection."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(_groups(ch), ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, C, H * W).unbind(1)
        h = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return x + self.proj(h.transpose(1, 2).reshape(B, C, H, W))


class TwoTimeBlock(nn.Module):
    """Residual block conditioned on two time embeddings.

    ``h = conv(silu(norm(x)))``; ``scale, shift = A_t e_t + A_s e_s``;
    ``h = conv(dropout(silu(norm(h)·(1 + scale) + shift)))``; output ``(skip(x) + h)/√2``,
    optionally resampled (down: 2×2 average pool, up: nearest) and followed by attention.
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        emb_dim: int,
        *,
        resample: str | None = None,
        attention: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.resample = resample
        self.norm0 = nn.GroupNorm(_groups(cin), cin)
        self.conv0 = nn.Conv2d(cin, cout, 3, padding=1)
        self.affine_t = nn.Linear(emb_dim, 2 * cout)
        self.affine_s = nn.Linear(emb_dim, 2 * cout)
        self.norm1 = nn.GroupNorm(_groups(cout), cout)
        self.dropout = SampleDropout(dropout)
        self.conv1 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv1.weight)
        nn.init.zeros_(self.conv1.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        self.attn = Attention(cout) if attention else None

    def _resample(self, x: Tensor) -> Tensor:
        if self.resample == "down":
            return F.avg_pool2d(x, 2)
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2.0, mode="nearest")
        return x

    def forward(self, x: Tensor, e_t: Tensor, e_s: Tensor) -> Tensor:
        h = self._resample(F.silu(self.norm0(x)))
        h = self.conv0(h)
        scale, shift = (self.affine_t(e_t) + self.affine_s(e_s))[:, :, None, None].chunk(2, dim=1)
        h = F.silu(torch.addcmul(shift, self.norm1(h), scale + 1))
        h = self.conv1(self.dropout(h))
        out = (self.skip(self._resample(x)) + h) * math.sqrt(0.5)
        return self.attn(out) if self.attn is not None else out


class TwoTimeUNet(nn.Module):
    r"""U-Net :math:`F_\theta(x, c_t, c_s)` for ``(B, C, H, W)`` images (H = W a power of 2 multiple).

    Args:
        img_resolution: H = W.
        in_channels, out_channels: image channels (3 for RGB).
        model_channels: base width; ``channel_mult``: width multipliers per level.
        num_blocks: residual blocks per level; ``attn_resolutions``: where to attend.
        dropout: inside every block; ``emb_mult``: time-embedding width / model_channels.
    """

    def __init__(
        self,
        img_resolution: int = 32,
        in_channels: int = 3,
        out_channels: int = 3,
        model_channels: int = 128,
        channel_mult: list[int] | tuple[int, ...] = (1, 2, 2, 2),
        num_blocks: int = 4,
        attn_resolutions: list[int] | tuple[int, ...] = (16,),
        dropout: float = 0.1,
        emb_mult: int = 4,
    ) -> None:
        super().__init__()
        if img_resolution % (2 ** (len(channel_mult) - 1)):
            raise ValueError(
                f"resolution {img_resolution} is not divisible by 2^{len(channel_mult) - 1}"
            )
        emb = model_channels * emb_mult
        self.pos = PositionalEmbedding(model_channels)
        self.map = nn.Sequential(
            nn.Linear(model_channels, emb), nn.SiLU(), nn.Linear(emb, emb), nn.SiLU()
        )
        self.conv_in = nn.Conv2d(in_channels, model_channels, 3, padding=1)
        self.down = nn.ModuleList()
        skips = [model_channels]
        ch, res = model_channels, img_resolution
        for level, mult in enumerate(channel_mult):
            if level > 0:
                self.down.append(TwoTimeBlock(ch, ch, emb, resample="down", dropout=dropout))
                res //= 2
                skips.append(ch)
            for _ in range(num_blocks):
                cout = model_channels * mult
                self.down.append(
                    TwoTimeBlock(ch, cout, emb, attention=res in attn_resolutions, dropout=dropout)
                )
                ch = cout
                skips.append(ch)
        self.mid = nn.ModuleList(
            [
                TwoTimeBlock(ch, ch, emb, attention=True, dropout=dropout),
                TwoTimeBlock(ch, ch, emb, dropout=dropout),
            ]
        )
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for _ in range(num_blocks + 1):
                cout = model_channels * mult
                self.up.append(
                    TwoTimeBlock(
                        ch + skips.pop(),
                        cout,
                        emb,
                        attention=res in attn_resolutions,
                        dropout=dropout,
                    )
                )
                ch = cout
            if level > 0:
                self.up.append(TwoTimeBlock(ch, ch, emb, resample="up", dropout=dropout))
                res *= 2
        self.norm_out = nn.GroupNorm(_groups(ch), ch)
        self.conv_out = nn.Conv2d(ch, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: Tensor, c_t: Tensor, c_s: Tensor) -> Tensor:
        e_t, e_s = self.map(self.pos(c_t)), self.map(self.pos(c_s))
        h = self.conv_in(x)
        stack = [h]
        for block in self.down:
            h = block(h, e_t, e_s)
            stack.append(h)
        for block in self.mid:
            h = block(h, e_t, e_s)
        for block in self.up:
            if block.resample == "up":
                h = block(h, e_t, e_s)
            else:
                h = block(torch.cat([h, stack.pop()], dim=1), e_t, e_s)
        return self.conv_out(F.silu(self.norm_out(h)))


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
