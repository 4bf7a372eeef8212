"""Users' own classifiers for the tests (imported as ``user_models:FACTORY`` by --classifier)."""

from __future__ import annotations

import warnings

import torch
from torch import nn


def to_torchscript(module: nn.Module) -> torch.jit.ScriptModule:
    """``torch.jit.script`` for the tests that build TorchScript files a user may already have.

    torch >= 2.10 deprecates TorchScript for torch.export (cfe's forward path, tested with .pt2
    archives), but cfe must keep loading existing TorchScript files, and writing one still needs
    ``torch.jit.script``: only that deprecation message is ignored, only here.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=DeprecationWarning)
        return torch.jit.script(module)


def gap_net() -> nn.Module:
    """conv -> ReLU(inplace) -> AdaptiveAvgPool -> Flatten -> Linear: mirrorable (no .features method)."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    )


def flat_net() -> nn.Module:
    """Flatten + MLP: no global average pooling, so Mirror-CFE cannot use it (latent methods can)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))


class ScriptableGap(nn.Module):
    """A GAP classifier that exports ``features`` for TorchScript."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Linear(32, 10)

    @torch.jit.export
    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


class ScriptableFlat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def not_a_module() -> int:
    return 3


def ten_to_three() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 3))
