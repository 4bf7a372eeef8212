"""GCI: "Generative Counterfactual Introspection for Explainable Deep Learning",
Liu, Kailkhura, Loveland, Han, arXiv:1907.03077 (GlobalSIP 2019).

Space edited: the generator's attribute input A. With an attribute-conditional generator
(``CondVAE``, CelebA: AttGAN's 13 attributes) the code z = μ(x) is held fixed and A starts
at the image's estimated attributes A0 ∈ (−1, 1); x' = G(z, A), A clipped to the training
range [−1, 1], and ΔA = A* − A0 says which attributes moved. For MNIST, Fashion-MNIST and
BloodMNIST the latent code plays the attributes (the paper's own choice for unknown
attributes): A0 = μ(x), x' = G(A), A clipped to ±5. Objective, per sample:

    λ · CE(f(G(A)), t) + mean |x − G(A)|^p

Args (``GCIConfig``): lam λ = 1 (paper: not given; {0.1, 1, 10} swept, see
docs/methods/latent.md), p = 1, lr = 0.05 (Adam), max_steps = 500.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from cfe_cli.engine import Context
from cfe_cli.methods.base import LatentMethod, Method, Setup, register


@dataclass(frozen=True)
class GCIConfig:
    lam: float = field(default=1.0, metadata={"flag": "--lambda", "help": "weight λ of the classification term"})
    p: float = field(default=1.0, metadata={"flag": "--p", "help": "the distance's norm p"})
    lr: float = field(default=0.05, metadata={"flag": "--lr", "help": "Adam step size"})
    max_steps: int = field(default=500, metadata={"flag": "--steps", "help": "step budget"})
    z_clip: float = 5.0
    attr_clip: float = 1.0  # conditional generators: A stays in the training range
    generator: str = "auto"  # "auto": the attribute-conditional VAE where the folder has one; "vae": the VAE


@register("gci")
class GCI(LatentMethod):
    Config = GCIConfig

    def __init__(self, config: GCIConfig | None = None, **kw: Any) -> None:
        super().__init__(config, **kw)
        generator = self.generator
        self.conditional = hasattr(generator, "estimate_attributes")
        self.attribute_names: list[str] | None = generator.attribute_names if self.conditional else None  # type: ignore[union-attr]

    @classmethod
    def load(cls, setup: Setup, config: Any) -> Method:
        """Faces: the folder's attribute-conditional VAE (ΔA is the attribution); else the VAE."""
        if not (setup.folder / "cvae.safetensors").is_file() or config.generator == "vae":
            return super().load(setup, config)
        from cfe_cli.attributions import AttributeInputs
        from cfe_cli.models.loading import channels_last
        from cfe_cli.models.weights import load_vae

        gen, info = load_vae(setup.folder, setup.device, kind="cvae")
        channels_last(gen)
        m = cls._with_generator(setup, config, gen)
        acc = info.get("attribute_accuracy") or {}
        names = gen.attribute_names
        m.probes = AttributeInputs(names, [float(acc.get(n, float("nan"))) for n in names])
        return m

    def init(self, ctx: Context) -> torch.Tensor:
        if not self.conditional:
            return super().init(ctx)
        ctx.extra["z"] = self.generator.encode(ctx.x)[0]
        return self.generator.estimate_attributes(ctx.x)

    def decode(self, v: torch.Tensor, ctx: Context) -> torch.Tensor:
        if not self.conditional:
            return super().decode(v, ctx)
        return self.generator.decode(ctx.extra["z"], v)

    def project(self, v: torch.Tensor, ctx: Context) -> torch.Tensor:
        if not self.conditional:
            return super().project(v, ctx)
        return v.clamp(-self.config.attr_clip, self.config.attr_clip)

    def loss(self, v: torch.Tensor, x: torch.Tensor, logits: torch.Tensor, ctx: Context) -> torch.Tensor:
        c = self.config
        dist = (ctx.x - x).abs().pow(c.p).mean(dim=(1, 2, 3))
        return c.lam * F.cross_entropy(logits, ctx.target, reduction="none") + dist
