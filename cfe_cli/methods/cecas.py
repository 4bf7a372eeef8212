"""CECAS-style causally guided steering: "Counterfactual Visual Explanation via
Causally-Guided Adversarial Steering", Qiao et al., arXiv:2507.09881.

Space edited: the conv VAE's latent z (the spec's small substitute for the diffusion
filter). The attack objective gains a penalty that keeps the *spurious* (non-causal)
factors of the image unchanged — here measurable nuisance descriptors (stroke
thickness, slant, position, brightness; ``cfe_cli.descriptors.SPURIOUS``) — plus an L1
proximity term; afterwards a sparse mask keeps unchanged pixels from the source (ACE's
mask: m = Σ_c|x − x'| / max, dilated, keep where m < 0.15).

    CE(f(G(z)), t) + α · Σ_j |d_j(G(z)) − d_j(x)| / s_j + λ₁ · mean|G(z) − x|

Args (``CECASConfig``): alpha α = 1, lam1 λ₁ = 1, lr = 0.05, max_steps = 500,
mask_threshold = 0.15 (ACE), dilation = 3 px at 28² (ACE: 15 px at 256²).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from cfe_cli import descriptors as desc
from cfe_cli.engine import Context
from cfe_cli.methods.base import LatentMethod, register

# Typical spread of each spurious descriptor (normalises the penalty's terms).
SCALES = {"thickness": 1.0, "slant": 10.0, "centroid_x": 0.05, "centroid_y": 0.05, "brightness": 0.1}


@dataclass(frozen=True)
class CECASConfig:
    alpha: float = field(default=1.0, metadata={"flag": "--alpha", "help": "weight α of the spurious-factor penalty"})
    lam1: float = 1.0
    lr: float = field(default=0.05, metadata={"flag": "--lr", "help": "Adam step size"})
    max_steps: int = field(default=500, metadata={"flag": "--steps", "help": "step budget"})
    mask_threshold: float = 0.15
    dilation: int = 3
    spurious: tuple[str, ...] = desc.SPURIOUS
    z_clip: float = 5.0


@register("cecas")
class CECAS(LatentMethod):
    Config = CECASConfig

    def __init__(self, config: CECASConfig | None = None, **kw: Any) -> None:
        super().__init__(config, **kw)
        self.scale = torch.tensor([SCALES.get(n, 1.0) for n in self.config.spurious])

    def _spurious(self, x: torch.Tensor) -> torch.Tensor:
        return desc.select(desc.descriptors(x), self.config.spurious) / self.scale.to(x)

    def loss(self, v: torch.Tensor, x: torch.Tensor, logits: torch.Tensor, ctx: Context) -> torch.Tensor:
        c = self.config
        if "spurious0" not in ctx.extra:
            ctx.extra["spurious0"] = self._spurious(ctx.x).detach()
        penalty = (self._spurious(x) - ctx.extra["spurious0"]).abs().sum(1)
        prox = (x - ctx.x).abs().mean(dim=(1, 2, 3))
        return F.cross_entropy(logits, ctx.target, reduction="none") + c.alpha * penalty + c.lam1 * prox

    def finalize(self, x_cf: torch.Tensor, ctx: Context) -> torch.Tensor:
        """Keep source pixels wherever the edit is small (sparse mask, ACE/CECAS §3)."""
        c = self.config
        m = (x_cf - ctx.x).abs().sum(1, keepdim=True)  # (B, 1, H, W)
        m = m / m.amax(dim=(2, 3), keepdim=True).clamp_min(1e-8)
        if c.dilation > 1:
            m = F.max_pool2d(m, c.dilation, stride=1, padding=c.dilation // 2)
        keep = (m < c.mask_threshold).float()
        return (1 - keep) * x_cf + keep * ctx.x
