"""Counterfactual Attacks: "Counterfactual Attacks: Generating Counterfactual Images as
Adversarial Attacks on Representations", Goldwasser & Hooker, arXiv:2504.15479.

Space edited: a generator's latent code (here the conv VAE's z, started at μ = E(x)).
Adam on z maximises the target probability until it passes the threshold; no proximity
term. Attributions (``cfe_cli/attributions.py``) then read how latent probes moved.

Notation: z (B, D) latent; z0 = μ(x); x_k = G(z); p_t the target probability.

Args (``AttackConfig``): lr = 0.1 (paper, MNIST); max_steps = 1000 (paper: 1000);
threshold τ = 0.75 (the engine's); objective = "logprob" (−log p_t; the paper's "prob",
−p_t, saturates near 0 and 1 — with Adam both give similar steps, log-prob never
underflows).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cfe_cli.engine import Context, Objective


@dataclass(frozen=True)
class AttackConfig:
    lr: float = 0.1
    max_steps: int = 1000
    objective: str = "logprob"  # or "prob" (the paper's −p_t)
    z_clip: float = 5.0  # keep z inside the prior's typical range


class LatentObjective(Objective):
    """Shared by the latent methods: z0 = μ(x), decode = G(z), z clipped to the prior range."""

    def __init__(self, generator: torch.nn.Module, lr: float, z_clip: float) -> None:
        self.generator = generator
        self.lr = lr
        self.z_clip = z_clip

    def init(self, ctx: Context) -> torch.Tensor:
        return self.generator.encode(ctx.x)[0]

    def decode(self, v: torch.Tensor, ctx: Context) -> torch.Tensor:
        return self.generator.decode(v)

    def project(self, v: torch.Tensor, ctx: Context) -> torch.Tensor:
        return v.clamp(-self.z_clip, self.z_clip)


class LatentAttack(LatentObjective):
    name = "attack"

    def __init__(self, generator: torch.nn.Module, config: AttackConfig | None = None) -> None:
        self.config = config or AttackConfig()
        super().__init__(generator, self.config.lr, self.config.z_clip)

    def loss(self, v: torch.Tensor, x: torch.Tensor, logits: torch.Tensor, ctx: Context) -> torch.Tensor:
        if self.config.objective == "prob":
            return -logits.softmax(1).gather(1, ctx.target[:, None]).squeeze(1)
        return F.cross_entropy(logits, ctx.target, reduction="none")
