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

Shape: x (B, C, H, W) in [0, 1], target (B,) -> CounterfactualResult (x_cf (B, C, H, W)).

Example:
    >>> m = get_method("attack").load(setup, AttackConfig(lr=0.05))   # doctest: +SKIP
    >>> res = m.explain(x, target)                                     # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from cfe_cli.engine import Context
from cfe_cli.methods.base import LatentMethod, register


@dataclass(frozen=True)
class AttackConfig:
    lr: float = field(default=0.1, metadata={"flag": "--lr", "help": "Adam step size on z"})
    max_steps: int = field(default=1000, metadata={"flag": "--steps", "help": "step budget"})
    objective: str = "logprob"  # or "prob" (the paper's −p_t)
    z_clip: float = 5.0  # keep z inside the prior's typical range


@register("attack")
class LatentAttack(LatentMethod):
    Config = AttackConfig

    def loss(self, v: torch.Tensor, x: torch.Tensor, logits: torch.Tensor, ctx: Context) -> torch.Tensor:
        if self.config.objective == "prob":
            return -logits.softmax(1).gather(1, ctx.target[:, None]).squeeze(1)
        return F.cross_entropy(logits, ctx.target, reduction="none")
