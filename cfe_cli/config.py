"""Options given as text: ``--set KEY=VALUE`` and TOML config files (a leaf: standard library only).

Values are parsed as TOML (``0.5``, ``true``, ``[0.1, 0.8]``); a bare word is a string (``disc=class``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cfe_cli.errors import InputError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: TOML needs the tomli backport
    tomllib = None  # type: ignore[assignment]


def _toml() -> Any:
    if tomllib is None:
        raise InputError("--config and --set need Python 3.11 or newer (tomllib)")
    return tomllib


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``[mirror]`` table (or the top level) of a TOML file as ``{field: value}``."""
    toml = _toml()
    try:
        doc = toml.loads(Path(path).read_text())
    except OSError as e:
        raise InputError(f"cannot read --config {path}: {e.strerror or e}") from None
    except toml.TOMLDecodeError as e:
        raise InputError(f"--config {path} is not valid TOML: {e}") from None
    table = doc.get("mirror", doc)
    return {k.replace("-", "_"): (tuple(v) if isinstance(v, list) else v) for k, v in table.items()}


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["lambda_adv=0.5", "skips=true"]`` -> ``{"lambda_adv": 0.5, "skips": True}`` (values parsed as TOML)."""
    out: dict[str, Any] = {}
    toml = _toml() if items else None
    for item in items:
        if "=" not in item:
            raise InputError(f"--set takes KEY=VALUE (e.g. lambda_adv=0.5); got '{item}'")
        key, text = (p.strip() for p in item.split("=", 1))
        try:
            value = toml.loads(f"v = {text}")["v"]
        except toml.TOMLDecodeError:
            value = text  # a bare word: a string (e.g. disc=class)
        out[key.replace("-", "_")] = tuple(value) if isinstance(value, list) else value
    return out
