"""Counterfactual methods, one paper per module, found through a registry."""

from __future__ import annotations

METHODS: dict[str, str] = {
    "mirror": "cfe_cli.methods.mirror",
}


def available_methods() -> list[str]:
    """Names accepted by ``--method``."""
    return list(METHODS)
