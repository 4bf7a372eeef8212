"""PGD: "Towards Deep Learning Models Resistant to Adversarial Attacks", Madry et al.,
arXiv:1706.06083 — the pixel-space adversarial baseline of the counterfactual papers.

Space edited: pixels. Targeted: minimise CE(f(x + δ), t) with signed (L∞) or normalised
(L2) gradient steps, projected onto the ε-ball and the [0, 1] image box. Stops early
once the target passes the threshold, like the other methods.

Args (``PGDConfig``): norm = "linf" (or "l2"); eps = 0.3 (L∞, the usual MNIST budget;
L2 default 3.0); step η = 0.01 (L∞) / 0.1 (L2); max_steps = 200.

Shape: x (B, C, H, W) in [0, 1], target (B,) -> CounterfactualResult (second image: δ).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from cfe_cli.engine import Context
from cfe_cli.errors import InputError
from cfe_cli.geometry import l2_unit, project_l2
from cfe_cli.methods.base import OptimisationMethod, register


@dataclass(frozen=True)
class PGDConfig:
    norm: str = field(default="linf", metadata={"flag": "--norm", "help": "linf or l2"})
    eps: float | None = field(default=None, metadata={"flag": "--eps", "help": "ε-ball radius (0.3 L∞, 3.0 L2)"})
    step: float | None = None
    max_steps: int = field(default=200, metadata={"flag": "--steps", "help": "step budget"})


@register("pgd")
class PGD(OptimisationMethod):
    Config = PGDConfig
    optimizer = "custom"
    second_name = "perturbation"

    def __init__(self, config: PGDConfig | None = None, **kw: Any) -> None:
        super().__init__(config, **kw)
        c = self.config
        if c.norm not in ("linf", "l2"):
            raise InputError(f"unknown PGD norm '{c.norm}'; use linf or l2")
        self.eps = c.eps if c.eps is not None else (0.3 if c.norm == "linf" else 3.0)
        self.eta = c.step if c.step is not None else (0.01 if c.norm == "linf" else 0.1)

    def init(self, ctx: Context) -> torch.Tensor:
        return torch.zeros_like(ctx.x)

    def decode(self, v: torch.Tensor, ctx: Context) -> torch.Tensor:
        return (ctx.x + v).clamp(0, 1)

    def loss(self, v: torch.Tensor, x: torch.Tensor, logits: torch.Tensor, ctx: Context) -> torch.Tensor:
        return F.cross_entropy(logits, ctx.target, reduction="none")

    def step(self, v: torch.Tensor, grad: torch.Tensor, ctx: Context) -> torch.Tensor:
        if self.config.norm == "linf":
            return v - self.eta * grad.sign()
        return v - self.eta * l2_unit(grad)

    def second_image(self, x: torch.Tensor, x_cf: torch.Tensor, ctx: Context) -> torch.Tensor:
        """The perturbation δ = x_cf − x, centred on grey and scaled to its ε."""
        return (0.5 + 0.5 * (x_cf - x) / self.eps).clamp(0, 1)

    def project(self, v: torch.Tensor, ctx: Context) -> torch.Tensor:
        if self.config.norm == "linf":
            return (ctx.x + v.clamp(-self.eps, self.eps)).clamp(0, 1) - ctx.x
        return project_l2(v, ctx.x, self.eps)
