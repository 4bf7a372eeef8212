"""Real FID, only with the original Inception-v3 file the user supplies (``--fid-weights``).

FID is defined with one network: Inception-v3 with the TensorFlow ``2015-12-05`` ImageNet
graph. Its weights cannot be bundled or downloaded here, so cfe reports ``fd_effnetlite0``
by default and computes a value labelled ``fid`` only on this path: the user passes the
TorchScript translation of that graph that StyleGAN2-ADA, clean-fid and k-diffusion use,
``inception-2015-12-05.pt`` (95,607,719 bytes), and cfe checks its sha256 before loading it
(``torch.jit.load``, never ``torch.load`` of a pickle). Any other file is refused.

The network takes uint8 images ``(B, 3, H, W)`` in [0, 255] of any size, resizes them to
299² itself, and ``return_features=True`` returns the 2048-d pool features. Grey images are
repeated to three channels (as StyleGAN2-ADA does). FID is
:func:`cfe_cli.metrics.frechet_distance` of these features.

Example:
    >>> net = load_inception("inception-2015-12-05.pt")              # doctest: +SKIP
    >>> fid = frechet_distance(inception_features(real, net), inception_features(x_cf, net))
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from cfe_cli.errors import InputError

__all__ = ["INCEPTION_SHA256", "INCEPTION_NAME", "load_inception", "inception_features"]

INCEPTION_NAME = "inception-2015-12-05.pt"
# sha256 of the TorchScript Inception-v3 (StyleGAN2-ADA's metrics file); the value k-diffusion
# and clean-fid-based pipelines check their download against.
INCEPTION_SHA256 = "f58cb9b6ec323ed63459aa4fb441fe750cfe39fafad6da5cb504a16f19e958f4"


def load_inception(path: str | os.PathLike[str], device: torch.device | str = "cpu") -> torch.nn.Module:
    """Load the user's Inception file after checking its sha256 (one-line error otherwise)."""
    from cfe_cli.models.external import file_sha256, load_torchscript

    expected_sha256 = INCEPTION_SHA256
    p = Path(path)
    if not p.is_file():
        raise InputError(f"--fid-weights: {p} not found (expected {INCEPTION_NAME}, the TorchScript Inception-v3 "
                         "of StyleGAN2-ADA's metrics)")
    digest = file_sha256(p)
    if digest != expected_sha256:
        raise InputError(f"--fid-weights: {p.name} is not the original FID Inception (sha256 {digest[:12]}…, "
                         f"expected {expected_sha256[:12]}…); cfe labels a value FID only with that file")
    try:
        net = load_torchscript(p, map_location=device)
    except Exception as e:  # noqa: BLE001 - any failure to read the archive is the same user error
        raise InputError(f"--fid-weights: cannot load {p.name} as TorchScript: {e}".splitlines()[0]) from None
    return net.eval()


@torch.inference_mode()
def inception_features(images: torch.Tensor, net: torch.nn.Module, batch_size: int = 64) -> torch.Tensor:
    """2048-d pool features ``(N, 2048)`` of images ``(N, C, H, W)`` in [0, 1] (C = 1 or 3)."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise InputError(f"FID needs images (N, 1 or 3, H, W); got {tuple(images.shape)}")
    try:
        dev = next(net.parameters()).device
    except StopIteration:
        dev = torch.device("cpu")
    out = []
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size].to(dev)
        x = (x.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1)
        out.append(net(x, return_features=True).float().cpu())
    return torch.cat(out)
