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


# The decoder knobs the CLI shows as flags (--lambda-adv, --skips/--no-skips, ...): field -> (type, help).
# The flag is the field's name; defaults are MirrorTrainConfig's; any other field is reachable with --set.
MIRROR_FLAGS: dict[str, tuple[type, str]] = {
    "lambda_cls": (float, 'Classification-loss weight (default 1).'),
    "lambda_adv": (float, 'Adversarial-loss weight (default 0.1).'),
    "k_cfe_share": (float, 'Share of training samples with k drawn from U[0.5, 1] instead of U[0, 1] (default 0).'),
    "augment": (str, 'Augmentation of the training images (names as for train-clf; default none).'),
    "precision": (str, 'fp32 or bf16 (bfloat16 autocast of the forward passes; default fp32).'),
    "schedule": (str, 'constant or cosine learning rate (default constant).'),
    "disc": (str, 'Discriminator, patch (PatchGAN) or class (class-conditional projection PatchGAN; default patch).'),
    "skips": (bool,
        "Decoder with the paper's skip-connection controller (SPE + CSP): the "
        "source's earlier-stage features pass through outside the class regions."),
    "skip_stem": (bool,
        "Also feed the classifier's full-resolution stem as a skip (implies "
        "--skips; with --init a decoder without it is grown into one with it)."),
    "csp_rho": (str,
        "skip decoders: the CSP mask's thresholds LOW,HIGH of rho(k) = clip(1 "
        "- k, LOW, HIGH) (default 0.1,0.5 or those of --init)."),
    "pairs": (str, 'SOURCE:TARGET pairs to train more often, e.g. 8:3,3:8 (class names or indices).'),
    "pair_share": (float,
        "with --pairs: share of a listed source's samples that take the pair's "
        "target (default 0.5)."),
    "lr_d": (float, "The discriminator's learning rate (default: --lr; larger gives two time-scale updates)."),
    "disc_rec": (bool, 'The discriminator also scores the reconstructions as fakes (default on).'),
    "hard_share": (float,
        'Share of each batch drawn from the training images the classifier is '
        'unsure of (default 0).'),
    "hard_below": (float, 'with --hard-share: unsure = top class probability below this (default 0.7).'),
    "width": (int, "The decoder's channels at the feature map's size, halved per octave (default 64, or --init's)."),
    "min_width": (int, "The fewest channels the halving stops at (default 32, or --init's)."),
    "spe_upsample": (str,
        "skip decoders: how SPE resizes its features to each skip, nearest "
        "(default, blocks) or bilinear (or --init's)."),
    "adv_focus": (str,
        'skip decoders: which discriminator patches of a decoded image are '
        'fakes, image (all; default) or edit (those in the CSP mask).'),
    "spe_grid": (int,
        "skip decoders: the grid SPE pools the source's skips to, in cells "
        "(default 0: the feature map's size, or --init's)."),
    "lambda_perc": (float,
        "Weight of a perceptual reconstruction loss in the classifier's own "
        "stage features (default 0)."),
    "lambda_match": (float, "Weight of L_match, decoded images' stage statistics vs real images of their class "
                            "(default 0; cfe_cli/realism.py)."),
    "match_classes": (str, "with --lambda-match: only decoded images meant to show one of these classes "
                           "(names or indices, comma-separated) count in L_match (default: all)."),
    "critic": (str, "A robust classifier.safetensors of this dataset (train-clf --adv-eps) whose cross-entropy on "
                    "decoded images past the boundary is L_critic (needs --lambda-critic; cfe_cli/realism.py)."),
    "lambda_critic": (float, "Weight of L_critic, the --critic classifier's cross-entropy on decoded images "
                             "against the class they should show (default 0)."),
    "rec_mask_weight": (float,
        "skip decoders: L_rec's pixels inside the k = 0 CSP mask (what the "
        "decoder redraws even at k = 0) count this many times (default 1)."),
}
