"""Counterfactual methods, one paper per module, found through a registry.

``mirror`` decodes a reflected feature path (its own search, no optimisation); the others
are :class:`~cfe_cli.methods.base.OptimisationMethod` s run by the one batched engine.
Every method implements ``explain(x, target) -> CounterfactualResult``
(:mod:`cfe_cli.methods.base`); adding one is one new module with ``@register("name")``.
"""

from __future__ import annotations

from typing import Any

import torch

from cfe_cli.methods.base import (
    METHODS,
    LatentMethod,
    Method,
    OptimisationMethod,
    Setup,
    available_methods,
    get_method,
    option_owners,
    register,
    split_options,
)

__all__ = ["LATENT", "METHODS", "LatentMethod", "Method", "OptimisationMethod", "Setup", "available_methods",
           "get_method", "make_objective", "option_owners", "register", "split_options"]

LATENT = ("attack", "gci", "cecas")  # need the model's VAE


def make_objective(name: str, generator: torch.nn.Module | None = None, **options: Any) -> Any:
    """An optimisation method as a bare engine objective (no classifier attached); ``options``
    are its config fields (an option the method does not take is an InputError)."""
    cls = get_method(name)
    if not issubclass(cls, OptimisationMethod):
        raise ValueError(f"'{name}' is not run by the engine")
    return cls(cls.make_config(options), generator=generator)
