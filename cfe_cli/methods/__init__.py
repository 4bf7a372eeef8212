"""Counterfactual methods, one paper per module, found through a registry.

``mirror`` decodes a reflected feature path (no optimisation); the others are
:class:`~cfe_cli.engine.Objective` s run by the one batched engine.
"""

from __future__ import annotations

from typing import Any

import torch

METHODS = ("mirror", "attack", "gci", "cecas", "pgd")
LATENT = ("attack", "gci", "cecas")  # need the model's VAE


def available_methods() -> list[str]:
    """Names accepted by ``--method``."""
    return list(METHODS)


def make_objective(name: str, generator: torch.nn.Module | None = None, **options: Any) -> Any:
    """Build an engine objective by name; ``options`` override its config fields."""
    from dataclasses import fields

    from cfe_cli.methods.cecas import CECAS, CECASConfig
    from cfe_cli.methods.gci import GCI, GCIConfig
    from cfe_cli.methods.latent_attack import AttackConfig, LatentAttack
    from cfe_cli.methods.pgd import PGD, PGDConfig

    table: dict[str, tuple[type, type]] = {"attack": (LatentAttack, AttackConfig), "gci": (GCI, GCIConfig),
                                           "cecas": (CECAS, CECASConfig), "pgd": (PGD, PGDConfig)}
    if name not in table:
        raise ValueError(f"unknown method '{name}'; available: {', '.join(METHODS)}")
    cls, cfg_cls = table[name]
    names = {f.name for f in fields(cfg_cls)}
    cfg = cfg_cls(**{k: v for k, v in options.items() if k in names and v is not None})
    return cls(cfg) if name == "pgd" else cls(generator, cfg)
