"""Classifiers with the structure Mirror-CFE needs: conv features -> GAP -> ONE linear layer.

``logits = W · GAP(f(x)) + b``, where ``f(x)`` is the last feature map ``(B, C, h, w)``.
Normalisation lives inside the model (buffers ``mean``/``std``), so every caller passes
images in [0, 1].

Architectures (``ARCHS``), all torch only:
    ``resnet-s``: for 28²: a 3×3 stem, then 2 stages of one basic block (64@14², 128@7²).
    ``resnet-m``: for 64²: stem, then 3 stages (64@32², 128@16², 256@8²).
    ``resnet-l``: for 128²: a stride-2 stem, then the same 3 stages (last map 8×8).
    ``convnet``: a plain VGG-style CNN (no residuals) with GAP + linear head; the
        independently trained *oracle* uses it so it shares no architecture with the
        explained classifier.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ClassifierConfig:
    """Everything needed to rebuild a classifier (stored in the safetensors metadata)."""

    arch: str = "resnet-s"
    in_channels: int = 1
    num_classes: int = 10
    resolution: int = 28
    widths: tuple[int, ...] = (64, 128)
    blocks: tuple[int, ...] = (1, 1)
    stem_stride: int = 1
    stem_width: int = 32
    first_stride: int = 1
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> ClassifierConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        for k in ("widths", "blocks", "mean", "std"):
            if k in known:
                known[k] = tuple(known[k])  # type: ignore[arg-type]
        return cls(**known)  # type: ignore[arg-type]


ARCH_DEFAULTS: dict[str, dict[str, object]] = {
    # 28²: stem 32@28² -> 64@14² -> 128@7² (the 28² stage is only the stem, for CPU speed)
    "resnet-s": {"widths": (64, 128), "blocks": (1, 1), "stem_width": 32, "first_stride": 2, "stem_stride": 1},
    # 64²: stem 32@64² -> 64@32² -> 128@16² -> 256@8²
    "resnet-m": {"widths": (64, 128, 256), "blocks": (1, 1, 1), "stem_width": 32, "first_stride": 2,
                 "stem_stride": 1},
    # 128²: stride-2 stem 32@64² -> 64@32² -> 128@16² -> 256@8²
    "resnet-l": {"widths": (64, 128, 256), "blocks": (1, 1, 1), "stem_width": 32, "first_stride": 2,
                 "stem_stride": 2},
    # plain CNN for oracles (no residuals, other widths): 16@R -> 32@R/2 -> 64@R/4 (x2) -> 128@R/8
    "convnet": {"widths": (32, 64, 128), "blocks": (1, 2, 1), "stem_width": 16, "first_stride": 2,
                "stem_stride": 1},
}
ARCHS = tuple(ARCH_DEFAULTS)


def default_arch(resolution: int) -> str:
    """The ResNet size for a resolution: 28² -> s, 64² -> m, 128² and up -> l."""
    return "resnet-s" if resolution <= 32 else "resnet-m" if resolution <= 64 else "resnet-l"


def make_config(arch: str, *, in_channels: int, num_classes: int, resolution: int,
                mean: tuple[float, ...], std: tuple[float, ...]) -> ClassifierConfig:
    if arch not in ARCH_DEFAULTS:
        raise ValueError(f"unknown architecture '{arch}'; known: {', '.join(ARCHS)}")
    return ClassifierConfig(arch=arch, in_channels=in_channels, num_classes=num_classes,
                            resolution=resolution, mean=mean, std=std,
                            **ARCH_DEFAULTS[arch])  # type: ignore[arg-type]


class BasicBlock(nn.Module):
    """ResNet basic block: two 3×3 convs with BN, identity or 1×1 shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.short: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.short = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.short(x))


def _plain_stage(c_in: int, c_out: int, n: int, stride: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(n):
        layers += [nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, stride if i == 0 else 1, 1, bias=False),
                   nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class GAPClassifier(nn.Module):
    """Conv encoder + global average pooling + one linear layer.

    Shape:
        x: ``(B, C_in, H, W)`` in [0, 1] -> logits ``(B, K)``;
        ``features(x)``: the last feature map ``(B, C, h, w)``;
        ``stages(x, stem=False)``: the list of every stage's output (skip features for decoders);
        with ``stem=True`` the stem's full-resolution map comes first.
    """

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.register_buffer("mean", torch.tensor(c.mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(c.std, dtype=torch.float32).view(1, -1, 1, 1))
        w0 = c.stem_width
        self.stem = nn.Sequential(nn.Conv2d(c.in_channels, w0, 3, c.stem_stride, 1, bias=False),
                                  nn.BatchNorm2d(w0), nn.ReLU(inplace=True))
        stages: list[nn.Module] = []
        c_in = w0
        for i, (w, n) in enumerate(zip(c.widths, c.blocks, strict=True)):
            stride = c.first_stride if i == 0 else 2
            if c.arch == "convnet":
                stages.append(_plain_stage(c_in, w, n, stride))
            else:
                stages.append(nn.Sequential(*[BasicBlock(c_in if j == 0 else w, w, stride if j == 0 else 1)
                                              for j in range(n)]))
            c_in = w
        self.stages_ = nn.ModuleList(stages)
        self.head = nn.Linear(c_in, c.num_classes)

    @property
    def feature_dim(self) -> int:
        return self.head.in_features

    def stages(self, x: torch.Tensor, stem: bool = False) -> list[torch.Tensor]:
        h = self.stem((x - self.mean) / self.std)
        outs = [h] if stem else []
        for stage in self.stages_:
            h = stage(h)
            outs.append(h)
        return outs

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)[-1]

    def classify_features(self, f: torch.Tensor) -> torch.Tensor:
        """Logits of a feature map: ``W · GAP(f) + b``. ``(B, C, h, w) -> (B, K)``."""
        return self.head(f.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify_features(self.features(x))


@dataclass
class TrainResult:
    """What classifier training reports."""

    test_accuracy: float
    train_loss: float
    epochs: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


@torch.inference_mode()
def predict_probs(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Softmax probabilities ``(B, K)`` (on the CPU) of images ``x (B, C, H, W)``, in chunks of
    ``batch_size`` on the model's device."""
    dev = next(model.parameters()).device
    out = [model(x[i:i + batch_size].to(dev)).softmax(1).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.empty(0, 0)
