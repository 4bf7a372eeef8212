"""Real LPIPS (AlexNet, v0.1), only with the original AlexNet file the user supplies.

LPIPS is defined with ImageNet-trained backbone features and learned linear calibration
weights. cfe ships the calibration weights (``assets/lpips_alex_v0.1.safetensors``, 6 KB,
converted from the BSD-2-Clause ``lpips`` package, licence beside it) but not the AlexNet
backbone, which cannot be downloaded here: pass torchvision's ImageNet AlexNet file
``alexnet-owt-7be5be79.pth`` with ``--lpips-weights``. torchvision names its weight files
with the first 8 hex digits of their sha256 (``torch.hub``'s ``check_hash`` convention), so
the file's sha256 must begin with ``7be5be79``; anything else is refused. It is read with
``torch.load(weights_only=True)`` (a plain state dict), never unpickled.

Distance (Zhang et al. 2018, "lin" variant): images in [0, 1] -> [-1, 1] -> the fixed
scaling layer -> AlexNet ReLU outputs relu1..relu5 -> unit-normalised along channels ->
squared difference -> 1×1 linear weights -> spatial mean -> sum over the five layers.
Grey images are repeated to three channels; images smaller than 64² are resized to 64²
(bilinear) first, since AlexNet's stride-4 stem and pooling leave nothing of a 28² input
(the LPIPS paper's patches are 64²).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cfe_cli.errors import InputError

__all__ = ["ALEXNET_NAME", "ALEXNET_SHA256_PREFIX", "LPIPS", "load_lpips"]

ALEXNET_NAME = "alexnet-owt-7be5be79.pth"
ALEXNET_SHA256_PREFIX = "7be5be79"
_LIN = Path(__file__).parent / "assets" / "lpips_alex_v0.1.safetensors"
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
MIN_SIZE = 64


def _alexnet_features() -> nn.Sequential:
    """torchvision's AlexNet ``features`` up to relu5 (same layer indices, so the state dict loads)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(),
    )


class LPIPS(nn.Module):
    """LPIPS-Alex v0.1: ``forward(x, y) -> (B,)`` distances for images in [0, 1]."""

    _TAPS = (1, 4, 7, 9, 11)  # relu1..relu5 in ``features``

    def __init__(self) -> None:
        super().__init__()
        from safetensors.torch import load_file

        self.features = _alexnet_features()
        lin = load_file(str(_LIN))
        self.lins = nn.ParameterList([nn.Parameter(lin[f"lin{i}"], requires_grad=False) for i in range(5)])
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1))
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> LPIPS:  # always a fixed metric
        return super().train(False)

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        if min(x.shape[-2:]) < MIN_SIZE:
            x = F.interpolate(x, size=(MIN_SIZE, MIN_SIZE), mode="bilinear", align_corners=False)
        h = ((x * 2 - 1) - self.shift) / self.scale
        out = []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in self._TAPS:
                out.append(h / (h.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape or x.dim() != 4 or x.shape[1] not in (1, 3):
            raise InputError(f"LPIPS needs two image batches of one shape (B, 1 or 3, H, W); got "
                             f"{tuple(x.shape)} and {tuple(y.shape)}")
        d = torch.zeros(x.shape[0], device=x.device)
        for fx, fy, w in zip(self._taps(x), self._taps(y), self.lins, strict=True):
            d = d + F.conv2d((fx - fy).pow(2), w).mean(dim=(1, 2, 3))
        return d


def load_lpips(path: str | os.PathLike[str], device: torch.device | str = "cpu") -> LPIPS:
    """LPIPS with the user's AlexNet file, after the sha256 check (one-line error otherwise)."""
    from cfe_cli.models.external import file_sha256

    p = Path(path)
    if not p.is_file():
        raise InputError(f"--lpips-weights: {p} not found (expected torchvision's {ALEXNET_NAME})")
    digest = file_sha256(p)
    if not digest.startswith(ALEXNET_SHA256_PREFIX):
        raise InputError(f"--lpips-weights: {p.name} is not torchvision's ImageNet AlexNet (sha256 {digest[:12]}…, "
                         f"expected {ALEXNET_SHA256_PREFIX}…); cfe labels a value LPIPS only with that file")
    try:
        sd = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable archive is the same user error
        raise InputError(f"--lpips-weights: cannot read {p.name}: {e}".splitlines()[0]) from None
    net = LPIPS()
    feats = {k[len("features."):]: v for k, v in sd.items() if k.startswith("features.")}
    try:
        net.features.load_state_dict(feats)
    except RuntimeError as e:
        raise InputError(f"--lpips-weights: {p.name} does not hold AlexNet features: {e}".splitlines()[0]) from None
    return net.to(device)
