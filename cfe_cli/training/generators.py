"""The train-gen job: the Mirror-CFE decoder, the VAE (+ attribution probes) or the conditional VAE.

Options are declared once: the decoder's hyper-parameters are the fields of
:class:`~cfe_cli.training.loops.MirrorTrainConfig` (defaults written there only); the CLI
flags, ``--config FILE.toml`` and ``--set key=value`` all become a ``{field: value}`` dict
checked by :func:`mirror_config` against the rules in :data:`RULES`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import torch

from cfe_cli.config import MIRROR_FLAGS, parse_set, read_config_file  # noqa: F401  (re-exported)
from cfe_cli.data import load_dataset
from cfe_cli.errors import InputError
from cfe_cli.models.external import file_sha256
from cfe_cli.models.loading import load_any_classifier, require_mirror_structure
from cfe_cli.models.weights import LoadedClassifier, resolve_model, save_module
from cfe_cli.runtime import resolve_device, seed_everything
from cfe_cli.training.loops import AUGMENTS, Progress
from cfe_cli.training.mirror import DISCRIMINATOR_FOCUS, DISCRIMINATORS, MirrorTrainConfig

GENERATORS = ("mirror", "vae", "cvae")
# fields that only a skip decoder (--skips / --skip-stem, or an --init skip decoder) uses, with their neutral value
SKIP_ONLY = {"spe_upsample": None, "spe_grid": None, "adv_focus": "image", "rec_mask_weight": 1.0, "csp_rho": None}
_Rule = tuple[Callable[[Any], bool], str]
RULES: dict[str, _Rule] = {
    "epochs": (lambda v: v >= 1, "--epochs must be at least 1"),
    "batch_size": (lambda v: v >= 1, "--batch-size must be at least 1"),
    "lr": (lambda v: v > 0, "--lr must be positive"),
    "width": (lambda v: v is None or 4 <= v <= 1024, "--width must be in [4, 1024] channels; got {v}"),
    "min_width": (lambda v: v is None or 4 <= v <= 1024, "--min-width must be in [4, 1024] channels; got {v}"),
    "spe_upsample": (lambda v: v is None or v in ("nearest", "bilinear"),
                     "unknown --spe-upsample '{v}'; available: nearest, bilinear"),
    "adv_focus": (lambda v: v in DISCRIMINATOR_FOCUS,
                  f"unknown --adv-focus '{{v}}'; available: {', '.join(DISCRIMINATOR_FOCUS)}"),
    "spe_grid": (lambda v: v is None or 0 <= v <= 1024,
                 "--spe-grid must be in [0, 1024] cells (0: the feature map's size); got {v}"),
    "lambda_perc": (lambda v: v >= 0, "--lambda-perc must be 0 or more"),
    "lambda_match": (lambda v: v >= 0, "--lambda-match must be 0 or more"),
    "match_margin": (lambda v: v >= 0, "--set match_margin must be 0 or more"),
    "lambda_critic": (lambda v: v >= 0, "--lambda-critic must be 0 or more"),
    "rec_mask_weight": (lambda v: v >= 1, "--rec-mask-weight must be 1 or more"),
    "hard_share": (lambda v: 0.0 <= v <= 1.0, "--hard-share must be in [0, 1]"),
    "hard_below": (lambda v: 0.0 < v <= 1.0, "--hard-below must be in (0, 1]"),
    "lr_d": (lambda v: v is None or v > 0, "--lr-d must be positive"),
    "precision": (lambda v: v in ("fp32", "bf16"), "unknown precision '{v}'; available: fp32, bf16"),
    "schedule": (lambda v: v in ("constant", "cosine"), "unknown schedule '{v}'; available: constant, cosine"),
    "disc": (lambda v: v in DISCRIMINATORS, f"unknown discriminator '{{v}}'; available: {', '.join(DISCRIMINATORS)}"),
    "csp_rho": (lambda v: v is None or 0.0 <= v[0] <= v[1] <= 1.0,
                "--csp-rho needs 0 <= LOW <= HIGH <= 1; got {v[0]},{v[1]}"),
    "k_cfe_share": (lambda v: 0.0 <= v <= 1.0, "--k-cfe-share must be in [0, 1]"),
    "pair_share": (lambda v: 0.0 <= v <= 1.0, "--pair-share must be in [0, 1]"),
    "augment": (lambda v: v in AUGMENTS, f"unknown augmentation '{{v}}'; known: {', '.join(AUGMENTS)}"),
}


def parse_classes(value: str | list[Any] | tuple[Any, ...], classes: list[str]) -> tuple[int, ...]:
    """``"Coat,Pullover"`` or a list (names or indices) -> sorted class indices; unknown names are one-line errors."""
    from cfe_cli.inputs import class_index

    parts = [str(p).strip() for p in (value.split(",") if isinstance(value, str) else value)]
    out = sorted({class_index(p, classes, "class") for p in parts if p})
    if not out:
        raise InputError("--match-classes names no class")
    return tuple(out)


def mirror_config(options: dict[str, Any], classes: list[str], *, skip_decoder: bool) -> MirrorTrainConfig:
    """Check ``options`` (MirrorTrainConfig fields) and build the config; each problem is a one-line error.

    ``skip_decoder``: whether the decoder will have skips (``--init`` of a skip decoder counts).
    """
    names = {f.name for f in fields(MirrorTrainConfig)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise InputError(f"unknown train-gen option(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    opts = dict(options)
    for key, (ok, message) in RULES.items():
        if key in opts and not ok(opts[key]):
            raise InputError(message.format(v=opts[key]))
    skips = bool(opts.get("skips") or opts.get("skip_stem")) or skip_decoder
    for key, neutral in SKIP_ONLY.items():
        if key in opts and opts[key] != neutral and not skips:
            flag = f"--{key.replace('_', '-')}" + (f" {opts[key]}" if key == "adv_focus" else "")
            what = "the CSP thresholds (--csp-rho) belong" if key == "csp_rho" else f"{flag} belongs"
            raise InputError(f"{what} to a skip decoder (--skips or --skip-stem)")
    if "hard_below" in opts and not opts.get("hard_share"):
        raise InputError("--hard-below needs --hard-share")
    if "pair_share" in opts and not opts.get("pairs"):
        raise InputError("--pair-share needs --pairs")
    if isinstance(opts.get("pairs"), str):
        from cfe_cli.evaluation import parse_pairs

        opts["pairs"] = tuple(parse_pairs(opts["pairs"], classes))
    if opts.get("match_classes"):
        if not opts.get("lambda_match"):
            raise InputError("--match-classes needs --lambda-match")
        opts["match_classes"] = parse_classes(opts["match_classes"], classes)
    if bool(opts.get("critic")) != bool(opts.get("lambda_critic")):
        raise InputError("--critic and --lambda-critic go together (the robust classifier and its weight)")
    if opts.get("critic"):
        opts["critic"] = str(opts["critic"])
        if not Path(opts["critic"]).is_file():
            raise InputError(f"--critic {opts['critic']}: no such file")
    if opts.get("csp_rho") is not None:
        opts["csp_rho"] = (float(opts["csp_rho"][0]), float(opts["csp_rho"][1]))
    opts["skips"] = bool(opts.get("skips") or opts.get("skip_stem"))
    if "rec_mask_weight" in opts:
        opts["rec_mask_weight"] = float(opts["rec_mask_weight"])
    return replace(MirrorTrainConfig(), **opts)


def train_gen(
    model: str | os.PathLike[str],
    *,
    method: str = "mirror",
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    device: str = "auto",
    data_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    max_steps: int | None = None,
    classifier: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    init: str | os.PathLike[str] | None = None,
    time_limit: float | None = None,
    fresh_state: bool = False,
    config: str | os.PathLike[str] | None = None,
    settings: list[str] | None = None,
    command: str = "",
    progress: Progress | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Train a generator for a model folder against its frozen classifier.

    ``method="mirror"`` writes ``<model>/mirror.safetensors`` (the Mirror-CFE decoder);
    ``method="vae"`` writes ``<model>/vae.safetensors`` (conv VAE for the latent methods)
    and ``<model>/probes.safetensors`` (attribution probes on its latent codes);
    ``method="cvae"`` (datasets with attributes: CelebA) writes ``<model>/cvae.safetensors``,
    the attribute-conditional VAE that GCI edits (AttGAN's 13 attributes).
    The training data is the classifier's own dataset (from its metadata).

    With ``classifier`` (``module:factory`` + safetensors ``weights``, or a TorchScript file) the
    Mirror-CFE decoder is trained against that user classifier and written to ``out`` (a
    ``.safetensors`` file; it records the classifier's sha256). ``out`` may also redirect the
    output of a folder's own generator.

    Mirror-CFE's hyper-parameters are :class:`~cfe_cli.training.loops.MirrorTrainConfig` fields
    (documented there, defaults written there only), given as keyword ``options``
    (``lambda_adv=0.5, skips=True``), in a TOML file ``config`` (its ``[mirror]`` table) and as
    ``settings`` ``["key=value", ...]`` (later sources win). ``init`` fine-tunes a decoder file
    (a skip decoder keeps its skips and CSP thresholds); ``time_limit`` (seconds) stops
    training there and saves (a cosine schedule then decays over the time instead).

    Beside the decoder a Mirror-CFE run writes ``<name>.train-state.safetensors``: its
    discriminator and both Adam states. ``init`` continues them when that file lies beside the
    decoder it names (what fits: see :func:`~cfe_cli.training.mirror.load_run_state`), so a run
    continued across sessions does not restart against an untrained discriminator;
    ``fresh_state`` starts them afresh.
    """
    if method not in GENERATORS:
        raise InputError(f"unknown generator method '{method}'; available: {', '.join(GENERATORS)}")
    defaults = {f.name: f.default for f in fields(MirrorTrainConfig)}
    # a flag left at its default is not "given" (None, or False for the off-by-default switches)
    opts = {k: v for k, v in options.items() if v is not None and not (v is False and defaults.get(k) is False)}
    if config is not None:
        opts = {**read_config_file(config), **opts}
    opts.update(parse_set(settings or []))
    from cfe_cli import distributed

    d = distributed.context(device=device)
    if d.comm and method == "cvae":
        raise InputError("train-gen --method cvae runs in one process (torchrun: mirror and vae)")
    dev = resolve_device(distributed.device_name(device, d))
    folder = resolve_model(model)
    _check_outputs(method, classifier, out)
    if method != "mirror" and (opts or init is not None or time_limit is not None or fresh_state):
        given = sorted([*opts, *(["init"] if init is not None else []), *(["time_limit"] if time_limit else []),
                        *(["fresh_state"] if fresh_state else [])])
        raise InputError(f"{', '.join('--' + k.replace('_', '-') for k in given)}: options of --method mirror "
                         "(the decoder's MirrorTrainConfig)")
    if time_limit is not None and not time_limit > 0:
        raise InputError("--time-limit must be a positive number of seconds")
    loaded = load_any_classifier(folder, dev, classifier, weights)
    require_mirror_structure(loaded)
    dataset = loaded.info.get("dataset")
    if not dataset:
        raise InputError(f"{folder} does not name its dataset; cannot pick training data")
    common = {"epochs": epochs, "batch_size": batch_size, "device": dev, "data_dir": data_dir, "seed": seed,
              "max_steps": max_steps, "command": command, "progress": progress}
    if method in ("vae", "cvae"):
        from cfe_cli.training.vae import train_cvae_job, train_vae_job

        if method == "vae":
            return train_vae_job(folder, loaded, dataset, **common)
        return train_cvae_job(folder, loaded, dataset, out=out, **common)
    for key, v in (("epochs", epochs), ("batch_size", batch_size), ("lr", lr), ("seed", seed)):
        if v is not None:
            opts[key] = v
    return _train_mirror_job(folder, loaded, dataset, opts, init=init, time_limit=time_limit, out=out,
                             classifier=classifier, fresh_state=fresh_state, **common)


def _check_outputs(method: str, classifier: str | None, out: str | os.PathLike[str] | None) -> None:
    if classifier is not None and method != "mirror":
        raise InputError("--classifier is for --method mirror: the VAE models the data and serves any classifier")
    if out is not None and method == "vae":
        raise InputError("--out is for --method mirror and cvae (the VAE and its probes go to the model folder)")
    if classifier is not None and out is None:
        raise InputError("--classifier needs --out FILE.safetensors (the model folder's decoder belongs to its "
                         "own classifier)")
    if out is not None and Path(out).suffix != ".safetensors":
        raise InputError(f"--out must name a .safetensors file; got {out}")


def _load_init(init: str | os.PathLike[str], dev: torch.device) -> tuple[torch.nn.Module, list[dict[str, Any]]]:
    """The decoder to fine-tune and the history it carries (any decoder whose shapes fit: fine-tuning also
    adapts a decoder to a fine-tuned version of its classifier; train_mirror checks the shapes)."""
    from cfe_cli.models.weights import load_decoder

    start_dec, info = load_decoder(Path(init).parent, device=dev, file=Path(init))
    earlier = [{"init": str(init), "init_classifier_sha256": info.get("classifier_sha256"),
                "command": info.get("command"), "train": info.get("train"), "history": info.get("history"),
                "earlier_training": info.get("earlier_training")}]
    return start_dec, earlier


def state_path(decoder: str | os.PathLike[str]) -> Path:
    """Where a Mirror-CFE run keeps what the decoder file does not: ``mirror.safetensors`` ->
    ``mirror.train-state.safetensors`` (discriminator and Adam states, for ``--init`` continuations)."""
    p = Path(decoder)
    return p.with_name(p.name.removesuffix(".safetensors") + ".train-state.safetensors")


def _load_state(init: str | os.PathLike[str] | None, fresh: bool) -> dict[str, Any]:
    """The training state saved beside ``init`` (``{"tensors", "from"}``), or ``{}``."""
    if init is None or fresh or not state_path(init).is_file():
        return {}
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = state_path(init)
    try:
        return {"tensors": load_file(str(path)), "from": str(path)}
    except (SafetensorError, OSError, ValueError) as e:
        raise InputError(f"cannot read the training state {path} ({e}); --fresh-state starts afresh") from None


def _train_mirror_job(folder: Path, loaded: LoadedClassifier, dataset: str, opts: dict[str, Any], *,
                      init: str | os.PathLike[str] | None, time_limit: float | None, fresh_state: bool,
                      out: str | os.PathLike[str] | None, classifier: str | None, device: torch.device,
                      data_dir: str | os.PathLike[str] | None, max_steps: int | None, command: str,
                      progress: Progress | None, **_: Any) -> dict[str, Any]:
    from cfe_cli import distributed
    from cfe_cli.training.mirror import train_mirror

    d = distributed.context()
    start_dec, earlier = _load_init(init, device) if init is not None else (None, [])
    cfg = mirror_config(opts, loaded.classes, skip_decoder=bool(getattr(start_dec, "uses_skips", False)))
    if start_dec is not None and getattr(start_dec, "uses_skips", False):  # keeps its skips (and CSP thresholds)
        c0 = start_dec.config  # type: ignore[attr-defined]
        cfg = replace(cfg, skips=True, skip_stem=cfg.skip_stem or c0.skip_stem,
                      csp_rho=cfg.csp_rho or (c0.rho_low, c0.rho_high))
    if cfg.batch_size % d.world:
        raise InputError(f"--batch-size {cfg.batch_size} is the global batch: give a multiple of the {d.world} "
                         "processes")
    seed_everything(cfg.seed)
    train = load_dataset(dataset, "train", root=data_dir, size=loaded.config.resolution)
    state = _load_state(init, fresh_state)
    state_from = state.pop("from", None)
    start = time.perf_counter()
    try:
        dec, history = train_mirror(loaded.model, train, cfg, device=device, progress=progress if d.main else None,
                                    max_steps=max_steps, time_limit=time_limit, init=start_dec, dist=d, state=state)
    except ValueError as e:  # --init decoder of another shape, or skips without classifier stages
        raise InputError(f"--init {init}: {e}" if init is not None else str(e)) from None
    seconds = time.perf_counter() - start
    distributed.finish(d)  # the last collective was the last step
    if not d.main:  # rank 0 checks and saves the decoder
        return {"path": str(Path(out) if out is not None else folder / "mirror.safetensors"), "seconds": seconds,
                "history": history}
    check = _quick_check(loaded, dec, dataset, data_dir)
    info = {"dataset": dataset, "classes": loaded.classes, "method": "mirror", "train": cfg.__dict__,
            "history": history, "earlier_training": earlier, "seconds": round(seconds, 1), "device": str(device),
            "time_limit": time_limit, "command": command, "check": check,
            "trained_at": time.strftime("%Y-%m-%d %H:%M:%S"), "torch": torch.__version__,
            "classifier_sha256": loaded.info.get("classifier_sha256") or file_sha256(loaded.path),
            "state": {"from": state_from, "continued": state.get("continued", [])}}
    if classifier is not None:
        info["external_classifier"] = classifier
    target = Path(out) if out is not None else folder / "mirror.safetensors"
    try:
        path = save_module(target, dec, kind="mirror", config=dec.config.to_dict(), info=info)
        save_module(state_path(target), state["tensors"], kind="mirror-train-state",
                    config={"disc": cfg.disc}, info={"decoder": target.name, "trained_at": info["trained_at"]})
    except OSError as e:
        raise InputError(f"cannot write {target}: {e.strerror or e}") from None
    return {"path": str(path), "seconds": seconds, "history": history, "state": info["state"],
            "state_path": str(state_path(target)), **check}


def _quick_check(loaded: LoadedClassifier, dec: torch.nn.Module, dataset: str,
                 data_dir: str | os.PathLike[str] | None) -> dict[str, Any]:
    """Validity of the 1st CFE and of the reflection (runner-up target) on 200 test images."""
    from cfe_cli.methods.mirror import MirrorCFE

    test = load_dataset(dataset, "test", root=data_dir, size=loaded.config.resolution)
    loaded.model.cpu()
    m = MirrorCFE(loaded.model, dec, exact_fail=False)  # a quick check: probes and bracket only
    x = test.images[:200]
    res = m.explain(x)
    valid = float(res["found"].float().mean())
    refl = float((res["reflection_probs"].argmax(1) == res["target"]).float().mean())
    l1 = float((res["x_cf"] - x).abs().mean(dim=(1, 2, 3))[res["found"]].mean()) if res["found"].any() else None
    with torch.inference_mode():
        rec = float((m.decode_at(res, torch.arange(len(x)), torch.zeros(len(x))) - x).abs().mean())
    return {"n": len(x), "target": "runner-up", "validity": valid, "reflection_validity": refl, "l1": l1,
            "reconstruction_l1": rec}
