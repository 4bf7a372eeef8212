"""Decoders and discriminators.

``MirrorDecoder`` maps the classifier's last feature map ``(B, C, h, w)`` back to an
image ``(B, C_img, R, R)`` in [0, 1] (the Mirror-CFE generator G; the frozen classifier
is the encoder). ``PatchDiscriminator`` scores image patches as real or decoded.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


@dataclass(frozen=True)
class DecoderConfig:
    """Rebuilds a :class:`MirrorDecoder` (stored in the safetensors metadata)."""

    feat_channels: int = 128
    feat_size: int = 7
    out_channels: int = 1
    resolution: int = 28
    width: int = 64
    min_width: int = 32

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> DecoderConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})  # type: ignore[arg-type]


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, c // 4), c)


class ResBlock(nn.Module):
    """Pre-activation residual block with GroupNorm (no batch statistics: decoding one
    image or a thousand gives the same pixels)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_norm(c), nn.SiLU(), nn.Conv2d(c, c, 3, 1, 1),
                                  _norm(c), nn.SiLU(), nn.Conv2d(c, c, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class MirrorDecoder(nn.Module):
    """G: feature map -> image.

    Shape: ``(B, feat_channels, feat_size, feat_size) -> (B, out_channels, resolution, resolution)``.
    """

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.config = c = config
        ups = max(0, round(math.log2(c.resolution / c.feat_size)))
        layers: list[nn.Module] = [nn.Conv2d(c.feat_channels, c.width, 3, 1, 1), ResBlock(c.width), ResBlock(c.width)]
        w = c.width
        for _ in range(ups):
            w_next = max(c.min_width, w // 2)
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(w, w_next, 3, 1, 1), ResBlock(w_next)]
            w = w_next
        layers += [_norm(w), nn.SiLU(), nn.Conv2d(w, c.out_channels, 3, 1, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        x = self.net(f)
        if x.shape[-1] != self.config.resolution:
            x = nn.functional.interpolate(x, size=(self.config.resolution,) * 2, mode="bilinear", align_corners=False)
        return torch.sigmoid(x)


class PatchDiscriminator(nn.Module):
    """Spectral-normalised PatchGAN: an image ``(B, C, R, R)`` -> patch logits ``(B, 1, r, r)``."""

    def __init__(self, in_channels: int, resolution: int, width: int = 64) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c, r = in_channels, resolution
        w = width
        while r > 8:
            layers += [spectral_norm(nn.Conv2d(c, w, 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True)]
            c, r, w = w, r // 2, min(w * 2, 256)
        layers += [spectral_norm(nn.Conv2d(c, c, 3, 1, 1)), nn.LeakyReLU(0.2, inplace=True),
                   spectral_norm(nn.Conv2d(c, 1, 3, 1, 1))]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2 - 1)
