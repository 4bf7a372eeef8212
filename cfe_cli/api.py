"""The notebook-facing API. The CLI is a thin layer over these functions.

Every function takes plain arguments (or tensors), returns data, and never prints;
errors are :class:`cfe_cli.errors.CfeError` subclasses.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from cfe_cli.data import Dataset, dataset_summary, load_dataset
from cfe_cli.errors import InputError
from cfe_cli.models.classifiers import ARCHS, ClassifierConfig, GAPClassifier, default_arch, make_config
from cfe_cli.models.external import file_sha256
from cfe_cli.models.weights import (
    LoadedClassifier,
    list_models,
    load_classifier,
    resolve_model,
    save_module,
)
from cfe_cli.runtime import resolve_device, seed_everything
from cfe_cli.training import AUGMENTS, ClassifierTrainConfig, Progress, evaluate_accuracy, train_classifier

__all__ = [
    "datasets", "load_dataset", "load_model", "models", "predict", "train_clf",
]  # fmt: skip

DEFAULT_EPOCHS = {"mnist": 15, "fashion-mnist": 12, "bloodmnist": 30, "celeba": 20}
DEFAULT_AUGMENT = {"mnist": "shift", "fashion-mnist": "translate-flip", "bloodmnist": "flip-rot", "celeba": "face"}


def datasets(data_dir: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """What is found under the data directory, with counts per split."""
    return dataset_summary(data_dir)


def models() -> list[dict[str, Any]]:
    """Every model folder found (name, dataset, classes, resolution, accuracy, generators)."""
    return list_models()


def load_model(name_or_path: str | os.PathLike[str], device: str = "cpu") -> LoadedClassifier:
    """Load a model's classifier by name (``weights/<name>``) or folder path."""
    folder = resolve_model(name_or_path)
    return load_classifier(folder / "classifier.safetensors", resolve_device(device))


@torch.inference_mode()
def predict(model: LoadedClassifier, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Softmax probabilities ``(B, K)`` of images ``(B, C, H, W)`` in [0, 1]."""
    dev = next(model.model.parameters()).device
    out = [model.model(x[i:i + batch_size].to(dev)).softmax(1).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.empty(0, len(model.classes))


def _channel_stats(ds: Dataset) -> tuple[tuple[float, ...], tuple[float, ...]]:
    x = ds.images
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std)


def train_clf(
    dataset: str,
    *,
    out: str | os.PathLike[str],
    arch: str | None = None,
    epochs: int | None = None,
    batch_size: int = 128,
    lr: float = 3e-3,
    device: str = "auto",
    data_dir: str | os.PathLike[str] | None = None,
    size: int | None = None,
    seed: int = 0,
    kind: str = "classifier",
    init: str | os.PathLike[str] | None = None,
    augment: str | None = None,
    label_smoothing: float = 0.0,
    ema: float = 0.0,
    max_steps: int | None = None,
    command: str = "",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Train a GAP classifier on ``dataset``, evaluate on its test split, save safetensors.

    Writes ``out/classifier.safetensors`` (or ``out/oracle.safetensors`` with
    ``kind="oracle"``). ``ema`` > 0 saves an exponential moving average of the weights (decay
    ``ema`` per step). Returns a record with the measured test accuracy and the path.
    """
    dev = resolve_device(device)
    if arch is not None and arch not in ARCHS:
        raise InputError(f"unknown architecture '{arch}'; known: {', '.join(ARCHS)}")
    if epochs is not None and epochs < 1:
        raise InputError("--epochs must be at least 1")
    if augment is not None and augment not in AUGMENTS:
        raise InputError(f"unknown augmentation '{augment}'; known: {', '.join(AUGMENTS)}")
    if not 0.0 <= label_smoothing < 1.0:
        raise InputError("--label-smoothing must be in [0, 1)")
    if not 0.0 <= ema < 1.0:
        raise InputError("--ema must be in [0, 1) (e.g. 0.999; 0 = off)")
    out_dir = _out_dir(out)
    seed_everything(seed)
    train = load_dataset(dataset, "train", root=data_dir, size=size)
    test = load_dataset(dataset, "test", root=data_dir, size=size or train.resolution)
    base = dataset.split(":", 1)[0]
    arch = arch or default_arch(train.resolution)
    mean, std = _channel_stats(train)
    cfg = make_config(arch, in_channels=train.channels, num_classes=len(train.classes),
                      resolution=train.resolution, mean=mean, std=std)
    model = GAPClassifier(cfg)
    history_before: list[Any] = []
    if init is not None:  # fine-tune: start from a saved classifier of the same architecture
        start = load_classifier(init)
        if start.config != cfg:
            cfg = start.config
            model = GAPClassifier(cfg)
        model.load_state_dict(start.model.state_dict())
        history_before = [{"init": str(init), "command": start.info.get("command"),
                           "history": start.info.get("history")}]
    tcfg = ClassifierTrainConfig(epochs=epochs or DEFAULT_EPOCHS.get(base, 15), batch_size=batch_size, lr=lr,
                                 augment=augment or DEFAULT_AUGMENT.get(base, "shift"),
                                 label_smoothing=label_smoothing, ema=ema, seed=seed)
    result = train_classifier(model, train, test, tcfg, device=dev, progress=progress, max_steps=max_steps)
    val_acc = None
    if base in ("bloodmnist", "celeba"):
        val_acc = evaluate_accuracy(model, load_dataset(dataset, "val", root=data_dir, size=train.resolution),
                                    device=dev)
    info = {
        "dataset": dataset,
        "classes": train.classes,
        "test_accuracy": round(result.test_accuracy, 5),
        "val_accuracy": None if val_acc is None else round(val_acc, 5),
        "n_train": len(train),
        "n_test": len(test),
        "train": tcfg.__dict__,
        "history": result.history,
        "earlier_training": history_before,
        "seconds": round(result.seconds, 1),
        "device": str(dev),
        "machine": f"{platform.machine()} {platform.processor() or ''} {torch.get_num_threads()} threads".strip(),
        "trained_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": command,
        "torch": torch.__version__,
    }
    path = save_module(out_dir / f"{kind}.safetensors", model.cpu(), kind=kind, config=cfg.to_dict(), info=info)
    return {"path": str(path), "test_accuracy": result.test_accuracy, "val_accuracy": val_acc,
            "epochs": result.epochs, "seconds": result.seconds, "arch": arch, "classes": train.classes}


# ----------------------------------------------------------------------------- generators


def _check_rho(rho: tuple[float, float]) -> None:
    """The CSP thresholds (ρ_l, ρ_u) must satisfy 0 <= ρ_l <= ρ_u <= 1."""
    if not 0.0 <= rho[0] <= rho[1] <= 1.0:
        raise InputError(f"--csp-rho needs 0 <= LOW <= HIGH <= 1; got {rho[0]},{rho[1]}")


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
    lambda_cls: float | None = None,
    lambda_adv: float | None = None,
    k_cfe_share: float | None = None,
    augment: str | None = None,
    precision: str | None = None,
    schedule: str | None = None,
    disc: str | None = None,
    skips: bool | None = None,
    skip_stem: bool | None = None,
    csp_rho: tuple[float, float] | None = None,
    pairs: str | None = None,
    pair_share: float | None = None,
    lr_d: float | None = None,
    disc_rec: bool | None = None,
    hard_share: float | None = None,
    hard_below: float | None = None,
    time_limit: float | None = None,
    width: int | None = None,
    min_width: int | None = None,
    spe_upsample: str | None = None,
    adv_focus: str | None = None,
    spe_grid: int | None = None,
    lambda_perc: float | None = None,
    rec_mask_weight: float | None = None,
    lambda_match: float | None = None,
    command: str = "",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Train a generator for a model folder against its frozen classifier.

    With ``classifier`` (``module:factory`` + safetensors ``weights``, or a TorchScript file) the
    Mirror-CFE decoder is trained against that user classifier on the folder's dataset and written
    to ``out`` (a ``.safetensors`` file; it records the classifier's sha256). ``out`` may also
    redirect the output of a folder's own generator.

    ``method="mirror"`` writes ``<model>/mirror.safetensors`` (the Mirror-CFE decoder);
    ``method="vae"`` writes ``<model>/vae.safetensors`` (conv VAE for the latent methods)
    and ``<model>/probes.safetensors`` (attribution probes on its latent codes);
    ``method="cvae"`` (datasets with attributes: CelebA) writes ``<model>/cvae.safetensors``,
    the attribute-conditional VAE that GCI edits (AttGAN's 13 attributes).
    The training data is the classifier's own dataset (from its metadata).

    ``init`` (mirror): fine-tune this decoder file (it must belong to the same classifier);
    ``lambda_cls`` (mirror): weight of the classification loss (default 1); ``lambda_adv`` (mirror):
    weight of the adversarial loss (default 0.1);
    ``k_cfe_share`` (mirror): share of training samples whose k is drawn from U[0.5, 1] instead
    of U[0, 1] (default 0); ``augment`` (mirror): augmentation of the training images (default none);
    ``precision`` (mirror): ``fp32`` or ``bf16`` autocast of the forward passes; ``schedule`` (mirror):
    ``constant`` or ``cosine`` learning rate; ``disc`` (mirror): ``patch`` (PatchGAN) or ``class``
    (class-conditional projection PatchGAN); ``skips`` (mirror): a decoder with the paper's
    skip-connection controller (SPE + CSP), fed by the classifier's earlier stages; ``skip_stem``
    (mirror, implies ``skips``): the classifier's full-resolution stem is one of them, so the source's
    fine detail passes through outside the class regions (with ``init`` a decoder trained without
    it is grown into one with it, computing the same images at the start); ``csp_rho`` (mirror, skip
    decoders): the CSP mask's thresholds (ρ_l, ρ_u), default (0.1, 0.5) or those of ``init``;
    ``pairs`` (mirror): ``"SOURCE:TARGET,..."`` (names or indices, as for evaluate) trained more
    often: a sample predicted as a listed source takes the pair's target with probability
    ``pair_share`` (default 0.5) instead of the runner-up / random target; ``lr_d`` (mirror): the
    discriminator's learning rate (default ``lr``); ``disc_rec`` (mirror, default True): the
    discriminator also scores the reconstructions as fakes (False: only the decoded path x_k);
    ``hard_share`` (mirror, default 0): share of each batch drawn from the training images whose
    top class probability is below ``hard_below`` (default 0.7), the ambiguous sources where
    decoding errors make the 1st CFE fail; ``time_limit`` (mirror, seconds): stop training there
    and save (a cosine schedule then decays over the time instead; for a fixed budget on unknown
    hardware); ``width`` / ``min_width`` (mirror): the decoder's channels at the feature map's size
    (default 64) and the fewest it halves down to per octave (default 32); with ``init``, its own;
    ``spe_upsample`` (mirror, skip decoders): how SPE resizes u_i from the feature map to each skip,
    ``nearest`` (default; constant blocks of the map's cell size) or ``bilinear``; with ``init``, its own;
    ``adv_focus`` (mirror, skip decoders): ``image`` (default: every discriminator patch of a decoded
    image is a fake) or ``edit`` (only the patches inside the CSP mask, where the decoder replaced
    the source's features); ``spe_grid`` (mirror, skip decoders): the grid SPE's B_i pools each skip
    to (default, 0: the feature map's own size, the spec's; e.g. 16 on an 8×8 map gives the decoder the
    source's skips in 2× finer cells inside the mask); with ``init``, its own; ``lambda_perc``
    (mirror, default 0): weight of L_perc, the reconstruction's distance to the source in every stage
    of the explained classifier (a perceptual loss with no extra weights); ``rec_mask_weight``
    (mirror, skip decoders, default 1): L_rec's pixels inside the k = 0 CSP mask, which the decoder
    redraws from SPE's input even when nothing is edited, count this many times; ``lambda_match``
    (mirror, default 0): weight of L_match, the decoded images' texture statistics in the classifier's
    stages against real training images of the class they should show (cfe_cli/realism.py).
    """
    from cfe_cli.methods.mirror import PRECISIONS, MirrorCFE
    from cfe_cli.training import DISCRIMINATORS, MirrorTrainConfig, train_mirror

    if method not in ("mirror", "vae", "cvae"):
        raise InputError(f"unknown generator method '{method}'; available: mirror, vae, cvae")
    dev = resolve_device(device)
    folder = resolve_model(model)
    if classifier is not None and method != "mirror":
        raise InputError("--classifier is for --method mirror: the VAE models the data and serves any classifier")
    if out is not None and method == "vae":
        raise InputError("--out is for --method mirror and cvae (the VAE and its probes go to the model folder)")
    if classifier is not None and out is None:
        raise InputError("--classifier needs --out FILE.safetensors (the model folder's decoder belongs to its "
                         "own classifier)")
    if out is not None and Path(out).suffix != ".safetensors":
        raise InputError(f"--out must name a .safetensors file; got {out}")
    if method != "mirror" and (init is not None or lambda_cls is not None or lambda_adv is not None
                               or k_cfe_share is not None
                               or augment is not None or precision is not None or schedule is not None
                               or disc is not None or skips or skip_stem or csp_rho is not None
                               or pairs is not None or pair_share is not None or lr_d is not None
                               or disc_rec is not None or hard_share is not None or hard_below is not None
                               or time_limit is not None or width is not None or min_width is not None
                               or spe_upsample is not None or adv_focus is not None or spe_grid is not None
                               or lambda_perc is not None or rec_mask_weight is not None
                               or lambda_match is not None):
        raise InputError("--init, --lambda-cls, --lambda-adv, --k-cfe-share, --augment, --precision, --schedule, "
                         "--disc, --skips, --skip-stem, --csp-rho, --pairs, --pair-share, --lr-d, --disc-rec, "
                         "--hard-share, --hard-below, --time-limit, --width, --min-width, --spe-upsample, "
                         "--adv-focus, --spe-grid, --lambda-perc, --rec-mask-weight and --lambda-match are options "
                         "of --method mirror")
    for flag, v in (("--width", width), ("--min-width", min_width)):
        if v is not None and not 4 <= v <= 1024:
            raise InputError(f"{flag} must be in [4, 1024] channels; got {v}")
    from cfe_cli.models.generators import SPE_UPSAMPLE

    if spe_upsample is not None and spe_upsample not in SPE_UPSAMPLE:
        raise InputError(f"unknown --spe-upsample '{spe_upsample}'; available: {', '.join(SPE_UPSAMPLE)}")
    if spe_upsample is not None and not (skips or skip_stem or init is not None):
        raise InputError("--spe-upsample belongs to a skip decoder (--skips or --skip-stem)")
    from cfe_cli.training import DISCRIMINATOR_FOCUS

    if adv_focus is not None and adv_focus not in DISCRIMINATOR_FOCUS:
        raise InputError(f"unknown --adv-focus '{adv_focus}'; available: {', '.join(DISCRIMINATOR_FOCUS)}")
    if adv_focus == "edit" and not (skips or skip_stem or init is not None):
        raise InputError("--adv-focus edit belongs to a skip decoder (--skips or --skip-stem): the CSP mask marks "
                         "the edit")
    if spe_grid is not None and not 0 <= spe_grid <= 1024:
        raise InputError(f"--spe-grid must be in [0, 1024] cells (0: the feature map's size); got {spe_grid}")
    if spe_grid is not None and not (skips or skip_stem or init is not None):
        raise InputError("--spe-grid belongs to a skip decoder (--skips or --skip-stem)")
    if lambda_match is not None and not lambda_match >= 0:
        raise InputError("--lambda-match must be 0 or more")
    if lambda_perc is not None and not lambda_perc >= 0:
        raise InputError("--lambda-perc must be 0 or more")
    if rec_mask_weight is not None and not rec_mask_weight >= 1:
        raise InputError("--rec-mask-weight must be 1 or more")
    if rec_mask_weight not in (None, 1.0) and not (skips or skip_stem or init is not None):
        raise InputError("--rec-mask-weight belongs to a skip decoder (--skips or --skip-stem)")
    if time_limit is not None and not time_limit > 0:
        raise InputError("--time-limit must be a positive number of seconds")
    if hard_share is not None and not 0.0 <= hard_share <= 1.0:
        raise InputError("--hard-share must be in [0, 1]")
    if hard_below is not None and not 0.0 < hard_below <= 1.0:
        raise InputError("--hard-below must be in (0, 1]")
    if hard_below is not None and not hard_share:
        raise InputError("--hard-below needs --hard-share")
    if lr_d is not None and not lr_d > 0:
        raise InputError("--lr-d must be positive")
    if precision is not None and precision not in PRECISIONS:
        raise InputError(f"unknown precision '{precision}'; available: {', '.join(PRECISIONS)}")
    if schedule not in (None, "constant", "cosine"):
        raise InputError(f"unknown schedule '{schedule}'; available: constant, cosine")
    if disc is not None and disc not in DISCRIMINATORS:
        raise InputError(f"unknown discriminator '{disc}'; available: {', '.join(DISCRIMINATORS)}")
    if csp_rho is not None:
        _check_rho(csp_rho)
    if k_cfe_share is not None and not 0.0 <= k_cfe_share <= 1.0:
        raise InputError("--k-cfe-share must be in [0, 1]")
    if pair_share is not None and not 0.0 <= pair_share <= 1.0:
        raise InputError("--pair-share must be in [0, 1]")
    if pair_share is not None and pairs is None:
        raise InputError("--pair-share needs --pairs")
    if augment is not None and augment not in AUGMENTS:
        raise InputError(f"unknown augmentation '{augment}'; known: {', '.join(AUGMENTS)}")
    loaded = load_any_classifier(folder, dev, classifier, weights)
    _require_mirror_structure(loaded)
    dataset = loaded.info.get("dataset")
    if not dataset:
        raise InputError(f"{folder} does not name its dataset; cannot pick training data")
    if method == "vae":
        return _train_vae(folder, loaded, dataset, epochs=epochs, batch_size=batch_size, device=dev,
                          data_dir=data_dir, seed=seed, max_steps=max_steps, command=command, progress=progress)
    if method == "cvae":
        return _train_cvae(folder, loaded, dataset, epochs=epochs, batch_size=batch_size, device=dev,
                           data_dir=data_dir, seed=seed, max_steps=max_steps, command=command, progress=progress,
                           out=out)
    focus = () if pairs is None else tuple(_parse_pairs(pairs, loaded.classes))
    seed_everything(seed)
    train = load_dataset(dataset, "train", root=data_dir, size=loaded.config.resolution)
    cfg = MirrorTrainConfig(pairs=focus, pair_share=0.5 if pair_share is None else pair_share,
                            epochs=epochs or 20, batch_size=batch_size or 64, lr=lr or 2e-4, seed=seed,
                            lambda_cls=1.0 if lambda_cls is None else lambda_cls,
                            lambda_adv=0.1 if lambda_adv is None else lambda_adv,
                            k_cfe_share=k_cfe_share or 0.0, augment=augment or "none",
                            precision=precision or "fp32", schedule=schedule or "constant",
                            disc=disc or "patch", skips=bool(skips or skip_stem), skip_stem=bool(skip_stem),
                            csp_rho=None if csp_rho is None else (float(csp_rho[0]), float(csp_rho[1])),
                            lr_d=lr_d, disc_rec=True if disc_rec is None else disc_rec,
                            hard_share=hard_share or 0.0, hard_below=0.7 if hard_below is None else hard_below,
                            width=width, min_width=min_width, spe_upsample=spe_upsample,
                            adv_focus=adv_focus or "image", spe_grid=spe_grid, lambda_perc=lambda_perc or 0.0,
                            rec_mask_weight=1.0 if rec_mask_weight is None else float(rec_mask_weight),
                            lambda_match=lambda_match or 0.0)
    start_dec, earlier = None, []
    if init is not None:
        from cfe_cli.models.weights import load_decoder

        # any decoder whose shapes fit may be the starting point: fine-tuning also adapts a
        # decoder to a fine-tuned version of its classifier (train_mirror checks the shapes)
        start_dec, start_info = load_decoder(Path(init).parent, device=dev, file=Path(init))
        if getattr(start_dec, "uses_skips", False):  # fine-tuning a skip decoder keeps its skips (and CSP thresholds)
            c0 = start_dec.config
            cfg = replace(cfg, skips=True, skip_stem=cfg.skip_stem or c0.skip_stem,
                          csp_rho=cfg.csp_rho or (c0.rho_low, c0.rho_high))
        earlier = [{"init": str(init), "init_classifier_sha256": start_info.get("classifier_sha256"),
                    "command": start_info.get("command"), "train": start_info.get("train"),
                    "history": start_info.get("history"), "earlier_training": start_info.get("earlier_training")}]
    start = time.perf_counter()
    try:
        dec, history = train_mirror(loaded.model, train, cfg, device=dev, progress=progress, max_steps=max_steps,
                                    time_limit=time_limit, init=start_dec)
    except ValueError as e:  # --init decoder of another shape, or skips without classifier stages
        raise InputError(f"--init {init}: {e}" if init is not None else str(e)) from None
    seconds = time.perf_counter() - start
    # quick check on the test split: validity of the 1st CFE and of the reflection (runner-up target)
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
    info = {"dataset": dataset, "classes": loaded.classes, "method": method, "train": cfg.__dict__,
            "history": history, "earlier_training": earlier, "seconds": round(seconds, 1), "device": str(dev),
            "time_limit": time_limit,
            "command": command,
            "check": {"n": len(x), "target": "runner-up", "validity": valid, "reflection_validity": refl,
                      "l1": l1, "reconstruction_l1": rec},
            "trained_at": time.strftime("%Y-%m-%d %H:%M:%S"), "torch": torch.__version__,
            "classifier_sha256": loaded.info.get("classifier_sha256") or file_sha256(loaded.path)}
    if classifier is not None:
        info["external_classifier"] = classifier
    target = Path(out) if out is not None else folder / f"{method}.safetensors"
    try:
        path = save_module(target, dec, kind=method, config=dec.config.to_dict(), info=info)
    except OSError as e:
        raise InputError(f"cannot write {target}: {e.strerror or e}") from None
    return {"path": str(path), "seconds": seconds, "history": history, **info["check"]}


# ----------------------------------------------------------------------------- explain / animate


def _write_json(path: Path, obj: Any) -> None:
    import json

    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(obj, indent=2))
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise InputError(f"cannot write {path}: {e.strerror or e}") from None


def _out_dir(out: str | os.PathLike[str]) -> Path:
    d = Path(out)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create output folder {d}: {e.strerror}") from None
    if not os.access(d, os.W_OK):
        raise InputError(f"output folder is not writable: {d}")
    return d


def load_any_classifier(folder: Path, device: torch.device, classifier: str | None = None,
                        weights: str | os.PathLike[str] | None = None) -> LoadedClassifier:
    """The model folder's classifier, or a user's own (``module:factory`` + safetensors, or TorchScript).

    A user's classifier takes the folder's dataset, class names and resolution; its info records
    ``external`` (the spec) and ``classifier_sha256`` (of its weights or TorchScript file).
    """
    if classifier is None:
        if weights is not None:
            raise InputError("--weights goes with --classifier module:factory")
        return load_classifier(folder / "classifier.safetensors", device)
    from cfe_cli.models.external import wrap_classifier
    from cfe_cli.models.weights import read_metadata

    meta = read_metadata(folder / "classifier.safetensors")
    cfg = ClassifierConfig.from_dict(meta["config"])
    classes = list(meta["info"]["classes"])
    wrapped = wrap_classifier(classifier, weights, resolution=cfg.resolution, channels=cfg.in_channels,
                              num_classes=len(classes), device=device)
    src = Path(weights) if weights is not None else Path(classifier)
    info = {"dataset": meta["info"].get("dataset"), "classes": classes, "external": classifier,
            "classifier_sha256": file_sha256(src), "mirror_problem": wrapped.mirror_problem}
    return LoadedClassifier(wrapped, cfg, info, src)  # type: ignore[arg-type]


def _require_mirror_structure(clf: LoadedClassifier) -> None:
    """A clear error when a user's classifier lacks the GAP + linear head Mirror-CFE needs."""
    if clf.info.get("mirror_problem"):
        raise InputError(f"Mirror-CFE needs logits = W·GAP(features) + b, and this classifier has "
                         f"{clf.info['mirror_problem']}; the latent methods (attack, gci, cecas, pgd) "
                         "work with any classifier")


def _mirror_decoder(folder: Path, clf: LoadedClassifier, device: torch.device,
                    decoder: str | os.PathLike[str] | None) -> torch.nn.Module:
    """The Mirror-CFE decoder for ``clf``: ``--decoder FILE`` or the folder's ``mirror.safetensors``."""
    from cfe_cli.models.weights import load_decoder

    external = clf.info.get("external")
    _require_mirror_structure(clf)
    if decoder is None:
        if external:
            raise InputError("a decoder is trained for one classifier: train one for yours with "
                             f"cfe train-gen --model {folder.name} --classifier {external} ... --method mirror "
                             "--out FILE, then pass --decoder FILE")
        dec, _ = load_decoder(folder, "mirror", device)
        return dec
    path = Path(decoder)
    dec, info = load_decoder(path.parent, device=device, file=path)
    want = clf.info.get("classifier_sha256") or file_sha256(clf.path)
    have = info.get("classifier_sha256")
    cfg = dec.config  # type: ignore[attr-defined]
    if cfg.feat_channels != clf.model.feature_dim:
        raise InputError(f"{path} was trained for another classifier (it decodes {cfg.feat_channels}-channel "
                         f"features, this classifier has {clf.model.feature_dim})")
    if have != want and (have or external):
        what = f"sha256 {have[:12]}…" if have else "it records no classifier sha256"
        raise InputError(f"{path} was trained for another classifier ({what}; this one is {want[:12]}…)")
    return dec


def _channels_last(module: torch.nn.Module) -> None:
    """Convert a model's 4-D weights to channels-last in place: mkldnn (CPU) and cuDNN then run
    every convolution in NHWC, ~20-25 % faster at 28² on CPU (docs/results.md, Speed).
    TorchScript user models are left as they are."""
    if not isinstance(module, torch.jit.ScriptModule):
        module.to(memory_format=torch.channels_last)


@dataclass
class _Batch:
    """What one method returns for a batch, in the shared output contract."""

    x_cf: torch.Tensor  # (B, C, H, W) 1st CFE / counterfactual (last iterate where none)
    found: torch.Tensor  # (B,) bool
    cf_probs: torch.Tensor  # (B, K)
    third: torch.Tensor  # (B, C, H, W) reflection (mirror) / reconstruction / perturbation
    third_probs: torch.Tensor  # (B, K)
    extra: list[dict[str, Any]]  # per-sample method-specific fields
    video: dict[str, Any] | None = None  # ks (T,), x (B,T,C,H,W), predicted/intended (B,T,K) or None


class Explainer:
    """Runs one method on batches of images; shared by ``explain``, ``animate`` and ``evaluate``.

    Args:
        model: model name or folder; method: one of ``cfe_cli.methods.METHODS``;
        options: method config overrides (``lr``, ``max_steps``, ``lam``, ``eps`` …);
        threshold: target probability the optimisation methods stop at;
        precision: ``"fp32"`` (exact) or ``"bf16"`` — Mirror-CFE decodes in bfloat16, the
            optimisation methods autocast their forward passes to bfloat16; every reported
            verdict is the classifier's float32 prediction on the returned image;
        compile: Mirror-CFE only: ``torch.compile`` the decoder and classifier (one
            compilation of ~40-60 s on CPU, then faster passes, same results).
    """

    def __init__(self, model: str | os.PathLike[str], method: str = "mirror", *, device: str = "auto",
                 threshold: float = 0.75, seed: int = 0, classifier: str | None = None,
                 weights: str | os.PathLike[str] | None = None, decoder: str | os.PathLike[str] | None = None,
                 precision: str = "fp32", compile: bool = False, **options: Any) -> None:
        from cfe_cli.methods import LATENT, METHODS
        from cfe_cli.methods.mirror import PRECISIONS

        if method not in METHODS:
            raise InputError(f"unknown method '{method}'; available: {', '.join(METHODS)}")
        if precision not in PRECISIONS:
            raise InputError(f"unknown precision '{precision}'; available: {', '.join(PRECISIONS)}")
        if compile and method != "mirror":
            raise InputError("--compile is for --method mirror (the optimisation methods take --precision bf16)")
        if options.get("csp_rho") is not None and method != "mirror":
            raise InputError("--csp-rho is for --method mirror")
        if options.get("residual") and method != "mirror":
            raise InputError("--residual is for --method mirror")
        self.precision = precision
        self.method = method
        self.device = resolve_device(device)
        self.folder = resolve_model(model)
        self.clf = load_any_classifier(self.folder, self.device, classifier, weights)
        _channels_last(self.clf.model)
        self.classes = self.clf.classes
        self.threshold = threshold
        self.seed = seed
        self.options = options
        self.generator: torch.nn.Module | None = None
        self.probes = None
        if method == "mirror":
            from cfe_cli.methods.mirror import MirrorCFE

            dec = _mirror_decoder(self.folder, self.clf, self.device, decoder)
            rho = options.get("csp_rho")
            if rho is not None:
                rho = (float(rho[0]), float(rho[1]))
                if not getattr(dec, "uses_skips", False):
                    raise InputError("--csp-rho sets the CSP mask of a skip decoder; this decoder has no skips")
                _check_rho(rho)
            self.mirror = MirrorCFE(self.clf.model, dec, precision=precision, compile=compile, csp_rho=rho,
                                    residual=bool(options.get("residual")))
        elif method == "gci" and (self.folder / "cvae.safetensors").is_file() and options.get("generator") != "vae":
            from cfe_cli.attributions import AttributeInputs
            from cfe_cli.models.weights import load_vae

            # GCI edits the attribute input of the conditional generator (faces); ΔA is its attribution
            self.generator, info = load_vae(self.folder, self.device, kind="cvae")
            _channels_last(self.generator)
            acc = info.get("attribute_accuracy") or {}
            names = self.generator.attribute_names
            self.probes = AttributeInputs(names, [float(acc.get(n, float("nan"))) for n in names])
        elif method in LATENT:
            from cfe_cli.models.weights import load_probes, load_vae

            self.generator, _ = load_vae(self.folder, self.device)
            _channels_last(self.generator)
            self.probes = load_probes(self.folder)

    def run(self, x: torch.Tensor, target: torch.Tensor | None, *, video_frames: int = 0) -> tuple[dict, _Batch]:
        """Explain a batch ``x (B, C, H, W)`` on the explainer's device."""
        if self.method == "mirror":
            return self._mirror(x, target, video_frames)
        return self._engine(x, target, video_frames)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.clf.model(x).softmax(1)

    def _mirror(self, x: torch.Tensor, target: torch.Tensor | None, frames: int) -> tuple[dict, _Batch]:
        m = self.mirror
        prep = m.prepare(x, target)
        res = m.first_cfe(prep)
        extra = [{"first_cfe_k": round(float(k), 5) if bool(f) else None, "decodes": int(d)}
                 for k, f, d in zip(res["k"].tolist(), res["found"].tolist(), res["decodes"].tolist(), strict=True)]
        video = None
        if frames:
            sw = m.sweep(prep, frames)
            video = {"ks": sw["ks"], "x": sw["x"], "predicted": sw["predicted"], "intended": sw["intended"],
                     "x_label": "step, k"}
        return prep, _Batch(res["x_cf"], res["found"], res["cf_probs"], res["x_reflection"],
                            res["reflection_probs"], extra, video)

    def _engine(self, x: torch.Tensor, target: torch.Tensor | None, frames: int) -> tuple[dict, _Batch]:
        from cfe_cli import engine
        from cfe_cli.methods import make_objective

        probs = self.predict(x)
        source = probs.argmax(1)
        if target is None:
            target = probs.topk(2, dim=1).indices[:, 1]
        target = target.to(x.device)
        prep = {"source": source, "target": target, "probs": probs}
        objective = make_objective(self.method, self.generator, **self.options)
        max_steps = int(self.options.get("max_steps") or objective.config.max_steps)
        cfg = engine.EngineConfig(max_steps=max_steps, threshold=self.threshold,
                                  record_every=1 if frames else 0,
                                  amp=self.device.type == "cuda" or self.precision == "bf16")
        torch.manual_seed(self.seed)
        ctx = engine.Context(self.clf.model, x, source, target)
        out = engine.run(objective, ctx, cfg)
        cf_probs = out.logits.softmax(1)
        with torch.inference_mode():
            if self.generator is not None:  # third panel: the generator's reconstruction G(E(x))
                third = objective.decode(ctx.v0, ctx)
            else:  # pgd: the perturbation, centred on grey and scaled to its ε
                eps = getattr(objective, "eps", 1.0)
                third = (0.5 + 0.5 * (out.x_cf - x) / eps).clamp(0, 1)
            third_probs = self.predict(third)
        extra: list[dict[str, Any]] = [{"steps": int(s), "p_target": round(float(p), 5)}
                                       for s, p in zip(out.steps.tolist(), out.p_target.tolist(), strict=True)]
        if self.generator is not None:
            dz = (out.v_cf - ctx.v0).norm(dim=1).tolist()
            for e, d in zip(extra, dz, strict=True):
                e["latent_distance"] = round(d, 5)
            prep["z0"], prep["z_cf"] = ctx.v0, out.v_cf
        video = None
        if frames and out.frames is not None:
            # the trajectory runs until the slowest sample is done; show `frames` evenly spaced steps of it
            pick = torch.linspace(0, out.frames.shape[0] - 1, frames).round().long()
            fr = out.frames[pick].transpose(0, 1)  # (B, T, C, H, W)
            out.frame_steps = out.frame_steps[pick]
            with torch.inference_mode():
                pred = self.predict(fr.flatten(0, 1)).view(fr.shape[0], fr.shape[1], -1)
            video = {"ks": out.frame_steps.float(), "x": fr, "predicted": pred, "intended": None, "x_label": "step"}
        return prep, _Batch(out.x_cf, out.success, cf_probs, third, third_probs, extra, video)


THIRD_TITLE = {"mirror": "Reflection (k=1)", "pgd": "Perturbation"}


def explain(
    inputs: list[str],
    *,
    model: str | os.PathLike[str],
    target: str | None = None,
    method: str = "mirror",
    out: str | os.PathLike[str] = "out",
    batch_size: int = 64,
    device: str = "auto",
    label: str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    images: bool = True,
    video: bool = False,
    frames: int = 100,
    fps: int = 10,
    size: int = 800,
    strict: bool = False,
    attributions: bool = False,
    threshold: float = 0.75,
    seed: int = 0,
    options: dict[str, Any] | None = None,
    precision: str = "fp32",
    compile: bool = False,
    resume: bool = False,
    classifier: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    decoder: str | os.PathLike[str] | None = None,
    command: str = "",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Explain every input and write images, metrics.json and (optionally) MP4s.

    Args:
        inputs: image files, folders (recursive) or ``DATASET:SPLIT:INDEX`` references.
        model: model name (``weights/<name>``) or folder.
        target: target class (name or index) for every input; default: the runner-up.
        method: ``mirror``, ``attack``, ``gci``, ``cecas`` or ``pgd``.
        images: write ``{name}.png`` (panel), ``{name}_cf.png`` and ``{name}_reflection.png``
            (mirror) / ``{name}_reconstruction.png`` (latent methods).
        video: write ``{name}.mp4`` (``frames`` frames at ``fps``, ``size``×``size``).
        attributions: add attribute/descriptor scores (latent methods with probes) and a
            bar chart ``{name}_attributions.png``.
        options: method config overrides (e.g. ``{"lam": 10}`` for GCI).
        resume: skip inputs whose outputs of a previous run in ``out`` are complete.
        classifier, weights: explain a user's own classifier (``module:factory`` + safetensors
            ``weights``, or a TorchScript file) on the model folder's data and generators;
            ``decoder``: a Mirror-CFE decoder trained for it (``train_gen(..., classifier=..., out=...)``).

    Every file is written under a temporary name and renamed, so a killed run never
    leaves a half-written output; ``metrics.json`` and ``failures.json`` are rewritten
    after every batch.

    Returns:
        ``{"results": [...], "failures": [...], "metrics_path": ..., "warnings": [...]}``;
        each result is the metrics.json record of one input.
    """
    from cfe_cli import render
    from cfe_cli.inputs import class_index, resolve_inputs

    if frames < 2:
        raise InputError("--frames must be at least 2")
    if size < 160 or size % 2:
        raise InputError("--size must be an even number of pixels, at least 160")
    if video:
        import imageio_ffmpeg

        try:
            imageio_ffmpeg.get_ffmpeg_exe()
        except RuntimeError:
            raise InputError("ffmpeg is not available: reinstall imageio-ffmpeg (it bundles the binary)") from None
    ex = Explainer(model, method, device=device, threshold=threshold, seed=seed, classifier=classifier,
                   weights=weights, decoder=decoder, precision=precision, compile=compile, **(options or {}))
    if attributions and ex.probes is None:
        raise InputError(f"--attributions needs latent probes: use --method attack/gci/cecas with a model "
                         f"that has probes.safetensors (cfe train-gen --model {ex.folder.name} --method vae)")
    classes, dev = ex.classes, ex.device
    tgt = class_index(target, classes, "target class") if target is not None else None
    out_dir = _out_dir(out)
    for stale in out_dir.glob(".*.tmp"):  # temporaries of a killed run (never complete outputs)
        stale.unlink(missing_ok=True)
    items = resolve_inputs(inputs, channels=ex.clf.config.in_channels, resolution=ex.clf.config.resolution,
                           data_dir=data_dir, classes=classes, label=label, strict=strict)
    if not items:
        raise InputError("no inputs given")
    failures = [{"input": it.input, "error": it.error} for it in items if it.error]
    warnings = [it.warning for it in items if it.warning]
    good = [it for it in items if it.error is None]
    results: list[dict[str, Any]] = []
    used: set[str] = set()
    metrics_path = out_dir / "metrics.json"
    skipped = 0
    if resume:
        previous = _complete_records(metrics_path, method, video, images)
        results.extend(previous.values())
        used.update(r["name"] for r in previous.values())
        skipped = sum(1 for it in good if it.input in previous)
        good = [it for it in good if it.input not in previous]
    doc = {"command": command, "model": str(ex.folder), "model_name": ex.folder.name, "method": method,
           "options": options or {}, "threshold": threshold, "classes": classes, "device": str(dev),
           "precision": precision, "compile": compile,
           "results": results, "failures": failures}
    third_name = "reflection" if method == "mirror" else "perturbation" if method == "pgd" else "reconstruction"
    done = 0
    for start in range(0, len(good), batch_size):
        batch = good[start:start + batch_size]
        t0 = time.perf_counter()
        x = torch.stack([it.image for it in batch]).to(dev)  # type: ignore[misc]
        if tgt is not None:
            src = ex.predict(x).argmax(1)
            same = (src == tgt).tolist()
            for it, s in zip(batch, same, strict=True):
                if s:
                    failures.append({"input": it.input, "error": f"target '{classes[tgt]}' equals the prediction"})
            keep = [i for i, s in enumerate(same) if not s]
            batch = [batch[i] for i in keep]
            if not batch:
                continue
            x = x[keep]
        tvec = None if tgt is None else torch.full((len(batch),), tgt, dtype=torch.long, device=dev)
        prep, res = ex.run(x, tvec, video_frames=frames if video else 0)
        seconds = (time.perf_counter() - t0) / len(batch)
        probs = prep["probs"]
        x_cf, x3 = res.x_cf.detach().cpu(), res.third.detach().cpu()
        src, tg = prep["source"].tolist(), prep["target"].tolist()
        l1 = (res.x_cf.detach() - x).abs().mean(dim=(1, 2, 3)).tolist()
        local = None
        if attributions and ex.probes is not None:
            from cfe_cli.attributions import local_scores

            local = local_scores(ex.probes, prep["z0"].detach(), prep["z_cf"].detach()).cpu()
        for i, it in enumerate(batch):
            s, t, gt = src[i], tg[i], it.gt
            name = render.cf_name(it.prefix, classes[s], classes[t], None if gt is None else classes[gt])
            base, n = name, 2
            while name in used:
                name, n = f"{base}_{n}", n + 1
            used.add(name)
            found = bool(res.found[i])
            cf_p, p3 = res.cf_probs[i], res.third_probs[i]
            rec: dict[str, Any] = {
                "input": it.input, "name": name,
                "source_pred": classes[s], "source_conf": round(float(probs[i, s]), 5),
                "gt": None if gt is None else classes[gt], "target": classes[t],
                "first_cfe_k": None,
                "cf_pred": classes[int(cf_p.argmax())] if found else None,
                "cf_conf": round(float(cf_p.max()), 5) if found else None,
                "cf_target_conf": round(float(cf_p[t]), 5),
                "reflection_pred": classes[int(p3.argmax())] if method == "mirror" else None,
                "reflection_conf": round(float(p3.max()), 5) if method == "mirror" else None,
                "valid": found, "l1": round(l1[i], 5) if found else None,
                **res.extra[i], "seconds": round(seconds, 5),
            }
            if method != "mirror" and method != "pgd":
                rec["reconstruction_pred"] = classes[int(p3.argmax())]
                rec["reconstruction_conf"] = round(float(p3.max()), 5)
            if local is not None:
                scores = dict(zip(ex.probes.names, [round(v, 5) for v in local[i].tolist()], strict=True))  # type: ignore[union-attr]
                rec["attributions"] = scores
            if images:
                rec["cf_path"] = str(render.save_png(x_cf[i], out_dir / f"{name}_cf.png")) if found else None
                p3_path = render.save_png(x3[i], out_dir / f"{name}_{third_name}.png")
                rec["reflection_path" if method == "mirror" else f"{third_name}_path"] = str(p3_path)
                if method != "mirror":
                    rec["reflection_path"] = None
                k_txt = f" (k={rec['first_cfe_k']:.2f})" if rec.get("first_cfe_k") is not None else ""
                st_txt = f" ({rec['steps']} steps)" if "steps" in rec and found else ""
                titles = ["Source", f"{'1st CFE' if method == 'mirror' else 'Counterfactual'}{k_txt}{st_txt}",
                          THIRD_TITLE.get(method, "Reconstruction"), "x_cf − x_s"]
                captions = [f"{classes[s]} ({float(probs[i, s]):.2f})",
                            f"{rec['cf_pred']} ({rec['cf_conf']:.2f})" if found else "no CFE",
                            f"{classes[int(p3.argmax())]} ({float(p3.max()):.2f})" if method != "pgd" else "",
                            f"L1 {l1[i]:.3f}" if found else ""]
                pil = render.explanation_panel(x[i].cpu(), x_cf[i] if found else None, x3[i],
                                               titles=titles, captions=captions)
                rec["panel_path"] = str(render.save_image(pil, out_dir / f"{name}.png"))
                if local is not None:
                    from cfe_cli.attributions import bar_chart

                    rec["attributions_path"] = str(bar_chart(
                        ex.probes.names, local[i].tolist(),  # type: ignore[union-attr]
                        f"{name}: {ex.probes.label}", out_dir / f"{name}_attributions.png"))  # type: ignore[union-attr]
            if res.video is not None:
                v = res.video
                pred_p = v["predicted"][i].cpu()
                st = torch.tensor([s, t])
                rec["video_path"] = str(render.render_video(
                    out_dir / f"{name}.mp4", frames=v["x"][i].cpu(), source=x[i].cpu(), ks=v["ks"].cpu(),
                    first_cf_index=_first_hit(pred_p, t),
                    intended=None if v["intended"] is None else v["intended"][i].cpu()[:, st],
                    predicted=pred_p[:, st], distance=(v["x"][i].cpu() - x[i].cpu()).abs().mean(dim=(1, 2, 3)),
                    source_name=classes[s], target_name=classes[t], size=size, fps=fps, x_label=v["x_label"],
                    end_name="Reflection" if method == "mirror" else "Final"))
                strip = render.frame_strip(v["x"][i].cpu(), v["ks"].cpu(), pred_p[:, st], source_name=classes[s],
                                           target_name=classes[t], x_label="k" if method == "mirror" else "step",
                                           first_index=_first_hit(pred_p, t))
                rec["strip_path"] = str(render.save_image(strip, out_dir / f"{name}_strip.png"))
            results.append(rec)
        done += len(batch)
        _write_json(metrics_path, doc)  # updated as batches finish
        _write_json(out_dir / "failures.json", failures)
        if progress is not None:
            progress({"completed": done, "total": len(good)})
    _write_json(metrics_path, doc)
    _write_json(out_dir / "failures.json", failures)
    return {"results": results, "failures": failures, "warnings": warnings, "metrics_path": str(metrics_path),
            "skipped": skipped}


def _complete_records(metrics_path: Path, method: str, video: bool, images: bool) -> dict[str, dict[str, Any]]:
    """Records of a previous run whose every output file exists (for ``--resume``), by input."""
    import json

    if not metrics_path.is_file():
        return {}
    try:
        doc = json.loads(metrics_path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    if doc.get("method") != method:
        raise InputError(f"--resume: {metrics_path} is a '{doc.get('method')}' run, not '{method}'")
    keys = [k for k in ("panel_path", "cf_path", "reflection_path", "reconstruction_path", "perturbation_path")
            if images] + (["video_path", "strip_path"] if video else [])
    out = {}
    for rec in doc.get("results", []):
        paths = [rec.get(k) for k in keys if rec.get(k)]
        needed = (not images or rec.get("panel_path")) and (not video or rec.get("video_path"))
        if needed and all(Path(p).is_file() for p in paths):
            out[rec["input"]] = rec
    return out


def _first_hit(pred: torch.Tensor, target: int) -> int | None:
    """Index of the first frame whose prediction is ``target`` (None if none). ``pred (T, K)``."""
    hit = (pred.argmax(1) == target).nonzero()
    return int(hit[0]) if len(hit) else None


def _train_vae(folder: Path, loaded: LoadedClassifier, dataset: str, *, epochs: int | None, batch_size: int | None,
               device: torch.device, data_dir: str | os.PathLike[str] | None, seed: int, max_steps: int | None,
               command: str, progress: Progress | None) -> dict[str, Any]:
    from cfe_cli import descriptors
    from cfe_cli.attributions import fit_probes
    from cfe_cli.models.generators import ConvVAE, default_vae_config
    from cfe_cli.models.weights import save_probes
    from cfe_cli.training import VAETrainConfig, train_vae

    seed_everything(seed)
    res = loaded.config.resolution
    train = load_dataset(dataset, "train", root=data_dir, size=res)
    test = load_dataset(dataset, "test", root=data_dir, size=res)
    vcfg = default_vae_config(train.channels, res)
    vae = ConvVAE(vcfg)
    cfg = VAETrainConfig(epochs=epochs or 20, batch_size=batch_size or 128, seed=seed)
    start = time.perf_counter()
    history = train_vae(vae, train, cfg, device=device, progress=progress, max_steps=max_steps)
    seconds = time.perf_counter() - start
    with torch.inference_mode():
        mu_te = torch.cat([vae.encode(test.images[i:i + 512])[0] for i in range(0, len(test), 512)])
        rec = torch.cat([vae.decode(mu_te[i:i + 512]) for i in range(0, len(test), 512)])
        l1 = float((rec - test.images).abs().mean())
        clf = loaded.model.cpu()
        rec_acc = float((torch.cat([clf(rec[i:i + 512]).argmax(1) for i in range(0, len(test), 512)])
                         == test.labels).float().mean())
        mu_tr = torch.cat([vae.encode(train.images[i:i + 512])[0] for i in range(0, len(train), 512)])
    info = {"dataset": dataset, "classes": loaded.classes, "method": "vae", "train": cfg.__dict__,
            "history": history, "seconds": round(seconds, 1), "device": str(device), "command": command,
            "test_reconstruction_l1": round(l1, 5), "classifier_accuracy_on_reconstructions": round(rec_acc, 5),
            "trained_at": time.strftime("%Y-%m-%d %H:%M:%S"), "torch": torch.__version__}
    path = save_module(folder / "vae.safetensors", vae, kind="vae", config=vcfg.to_dict(), info=info)
    out = {"path": str(path), "seconds": seconds, "history": history, "reconstruction_l1": l1,
           "reconstruction_accuracy": rec_acc}
    # attribution probes: CelebA labels where present, image descriptors otherwise
    if train.attributes is not None and test.attributes is not None and train.attribute_names:
        a_tr, a_te, names, binary = train.attributes, test.attributes, list(train.attribute_names), True
    else:
        a_tr, a_te = descriptors.descriptors(train.images), descriptors.descriptors(test.images)
        names, binary = list(descriptors.NAMES), False
    try:
        probes = fit_probes(mu_tr, a_tr, mu_te, a_te, names, binary=binary)
    except InputError:
        return out  # scikit-learn missing: the VAE is still usable, attributions are not
    save_probes(folder / "probes.safetensors", probes, {"dataset": dataset, "fit_on": "train mu", "command": command})
    out["probe_accuracy"] = dict(zip(names, probes.accuracy, strict=True))
    return out


def _train_cvae(folder: Path, loaded: LoadedClassifier, dataset: str, *, epochs: int | None,
                batch_size: int | None, device: torch.device, data_dir: str | os.PathLike[str] | None, seed: int,
                max_steps: int | None, command: str, progress: Progress | None,
                out: str | os.PathLike[str] | None) -> dict[str, Any]:
    from cfe_cli.models.generators import ATTGAN_ATTRIBUTES, CondVAE, CondVAEConfig, default_vae_config
    from cfe_cli.training import CondVAETrainConfig, attribute_targets, train_cvae

    seed_everything(seed)
    res = loaded.config.resolution
    train = load_dataset(dataset, "train", root=data_dir, size=res)
    if train.attributes is None or not train.attribute_names:
        raise InputError(f"--method cvae needs a dataset with attributes (CelebA); {dataset} has none. GCI uses "
                         f"the VAE's latent code as the attributes there (cfe train-gen --method vae)")
    test = load_dataset(dataset, "test", root=data_dir, size=res)
    base = default_vae_config(train.channels, res)
    vcfg = CondVAEConfig(**{**base.to_dict(), "attributes": ATTGAN_ATTRIBUTES})
    model = CondVAE(vcfg)
    cfg = CondVAETrainConfig(epochs=epochs or 10, batch_size=batch_size or 128, seed=seed)
    start = time.perf_counter()
    history = train_cvae(model, train, cfg, device=device, progress=progress, max_steps=max_steps)
    seconds = time.perf_counter() - start
    names = list(vcfg.attributes)
    a_te = attribute_targets(test, names)
    clf = loaded.model.cpu()
    with torch.inference_mode():
        chunks = range(0, len(test), 256)
        est = torch.cat([model.estimate_attributes(test.images[i:i + 256]) for i in chunks])
        mu = torch.cat([model.encode(test.images[i:i + 256])[0] for i in chunks])
        rec = torch.cat([model.decode(mu[i:i + 256], a_te[i:i + 256]) for i in chunks])
        # edits: every test image decoded with the attributes of another test image
        shuffled = a_te[torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))]
        edit_est = torch.cat([model.estimate_attributes(model.decode(mu[i:i + 256], shuffled[i:i + 256]))
                              for i in chunks])
        rec_acc = float((torch.cat([clf(rec[i:i + 256]).argmax(1) for i in chunks]) == test.labels).float().mean())
        task = str(dataset).split(":", 1)[1] if ":" in str(dataset) else None
        flip_rate = None
        if task in names:  # flip only the task's attribute: does the explained classifier follow?
            col = names.index(task)
            flipped = a_te.clone()
            flipped[:, col] = -flipped[:, col]
            x_f = torch.cat([model.decode(mu[i:i + 256], flipped[i:i + 256]) for i in chunks])
            pred_f = torch.cat([clf(x_f[i:i + 256]).argmax(1) for i in chunks])
            flip_rate = float((pred_f == (flipped[:, col] > 0).long()).float().mean())
    attr_acc = ((est > 0) == (a_te > 0)).float().mean(0)
    edit_acc = float(((edit_est > 0) == (shuffled > 0)).float().mean())
    l1 = float((rec - test.images).abs().mean())
    info = {"dataset": dataset, "classes": loaded.classes, "method": "cvae", "train": cfg.__dict__,
            "history": history, "seconds": round(seconds, 1), "device": str(device), "command": command,
            "test_reconstruction_l1": round(l1, 5), "classifier_accuracy_on_reconstructions": round(rec_acc, 5),
            "attribute_accuracy": {n: round(float(a), 4) for n, a in zip(names, attr_acc, strict=True)},
            "edit_attribute_accuracy": round(edit_acc, 5), "task_attribute_flip_rate": flip_rate,
            "trained_at": time.strftime("%Y-%m-%d %H:%M:%S"), "torch": torch.__version__}
    path = save_module(Path(out) if out is not None else folder / "cvae.safetensors", model, kind="cvae",
                       config=vcfg.to_dict(), info=info)
    return {"path": str(path), "seconds": seconds, "history": history, "reconstruction_l1": l1,
            "reconstruction_accuracy": rec_acc, "attribute_accuracy": float(attr_acc.mean()),
            "edit_attribute_accuracy": edit_acc, "task_attribute_flip_rate": flip_rate}


# ----------------------------------------------------------------------------- evaluate


def _parse_pairs(pairs: str, classes: list[str]) -> list[tuple[int, int]]:
    from cfe_cli.inputs import class_index

    out = []
    for part in pairs.split(","):
        if not part.strip():
            continue
        if ":" not in part:
            raise InputError(f"bad pair '{part}': use SOURCE:TARGET, e.g. 8:3")
        s, t = part.split(":", 1)
        si, ti = class_index(s, classes, "source class"), class_index(t, classes, "target class")
        if si == ti:
            raise InputError(f"pair '{part}': source and target are the same class")
        out.append((si, ti))
    if not out:
        raise InputError("no pairs given (e.g. --pairs 8:3,3:8)")
    return out


def _score(ex: Explainer, x: torch.Tensor, x_cf: torch.Tensor, found: torch.Tensor, source: torch.Tensor,
           target: torch.Tensor, oracle: torch.nn.Module | None, cout_steps: int) -> dict[str, torch.Tensor]:
    """Per-sample metrics of one batch of counterfactuals. Every value is ``(B,)``."""
    from cfe_cli import metrics as M

    with torch.inference_mode():
        logits = ex.clf.model(x_cf)
    out = {
        "valid": M.validity(logits, target).float(),
        "denoised_valid": M.denoised_validity(ex.clf.model, x_cf, target).float(),
        "l1": M.l1(x, x_cf), "l2": M.l2(x, x_cf), "sparsity": M.sparsity(x, x_cf),
        "ssim": M.ssim(x, x_cf), "psnr": M.psnr(x, x_cf).clamp(max=100.0),
        "cout": M.cout(ex.clf.model, x, x_cf, source, target, steps=cout_steps),
        "target_conf": logits.softmax(1).gather(1, target[:, None]).squeeze(1),
        "found": found.float(),
    }
    if oracle is not None:
        out["oracle_valid"] = M.oracle_validity(oracle, x_cf, target).float()
    return out


def evaluate(
    model: str | os.PathLike[str],
    *,
    methods: list[str],
    pairs: str,
    n: int = 1000,
    split: str = "test",
    sources: str = "predicted",
    out: str | os.PathLike[str] = "out",
    save_images: bool = False,
    batch_size: int = 256,
    device: str = "auto",
    data_dir: str | os.PathLike[str] | None = None,
    threshold: float = 0.75,
    realism: bool = True,
    cout_steps: int = 20,
    options: dict[str, Any] | None = None,
    precision: str = "fp32",
    compile: bool = False,
    seed: int = 0,
    global_attributions: bool = False,
    classifier: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    decoder: str | os.PathLike[str] | None = None,
    fid_weights: str | os.PathLike[str] | None = None,
    lpips_weights: str | os.PathLike[str] | None = None,
    command: str = "",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Score methods on dataset images whose prediction is each pair's source class.

    For every pair ``s:t`` the first ``n`` images of the split that the classifier
    predicts as s are explained towards t, in batches. ``sources="correct"`` keeps only those
    whose label is also s (the protocol of correctly classified test images); the default,
    ``"predicted"``, also explains the misclassified ones, and each row reports the share of
    its sources that are correctly classified (``source_correct``). Per-sample metrics
    (``cfe_cli.metrics``) are averaged per pair and overall, each with its n. For
    Mirror-CFE the 1st CFE and the full reflection are both scored (``mirror`` and
    ``mirror@reflection`` rows). Realism (``fd_effnetlite0``, ``kd_effnetlite0`` per pair
    against real images of class t; ``dfd_effnetlite0`` per sample) needs ``cfe[metrics]``.

    ``global_attributions`` (latent methods with probes): the global attribution ranking of
    every pair — the mean over valid counterfactuals of each descriptor's (attribute's) change
    in predicted probability — written to ``out/global_attributions.json`` with a bar chart
    ``out/global_{method}_{s}_to_{t}.png`` per method and pair.

    Returns:
        the metrics.json document (also written to ``out/metrics.json``).
    """
    from cfe_cli import metrics as M
    from cfe_cli import render

    out_dir = _out_dir(out)
    if n < 1:
        raise InputError("--n must be at least 1")
    if sources not in ("predicted", "correct"):
        raise InputError(f"--sources must be 'predicted' or 'correct', not '{sources}'")
    if compile and "mirror" not in methods:
        raise InputError("--compile is for --method mirror (the optimisation methods take --precision bf16)")
    explainers = [Explainer(model, m, device=device, threshold=threshold, seed=seed, classifier=classifier,
                            weights=weights, decoder=decoder, precision=precision,
                            compile=compile and m == "mirror", **(options or {}))
                  for m in methods]
    ex0 = explainers[0]
    classes, dev = ex0.classes, ex0.device
    pair_list = _parse_pairs(pairs, classes)
    if global_attributions and not any(ex.probes is not None for ex in explainers):
        raise InputError(f"--global needs latent probes: use --method attack, gci or cecas with a model that has "
                         f"probes.safetensors (cfe train-gen --model {ex0.folder.name} --method vae)")
    global_rows: list[dict[str, Any]] = []
    dataset = ex0.clf.info.get("dataset")
    if not dataset:
        raise InputError(f"{ex0.folder} does not name its dataset")
    data = load_dataset(dataset, split, root=data_dir, size=ex0.clf.config.resolution)
    with torch.inference_mode():
        preds = torch.cat([ex0.clf.model(data.images[i:i + 512].to(dev)).argmax(1).cpu()
                           for i in range(0, len(data), 512)])
    oracle = None
    if (ex0.folder / "oracle.safetensors").is_file():
        oracle = load_classifier(ex0.folder / "oracle.safetensors", dev).model
    feats = None
    if realism:
        from cfe_cli import features

        if features.available():
            feats = features.EffNetFeatures().to(dev)
    from cfe_cli import oracle_effnet  # the second oracle: a probe on those features (cfe_cli/oracle_effnet.py)

    probe = oracle_effnet.load_folder_probe(ex0.folder, dev) if feats is not None else None
    inception = None
    if fid_weights is not None:
        from cfe_cli import fid

        inception = fid.load_inception(fid_weights, dev)
    lpips_net = None
    if lpips_weights is not None:
        from cfe_cli import lpips

        lpips_net = lpips.load_lpips(lpips_weights, dev)
    faces = None
    if realism and str(dataset).startswith("celeba") and ex0.clf.config.in_channels == 3:
        from cfe_cli import identity

        if identity.available():
            faces = identity.FaceIdentity()
    ref_data = _reference_split(dataset, split, data_dir, ex0.clf.config.resolution) if feats is not None else None
    references: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    total = len(pair_list) * len(methods)
    done = 0
    for s, t in pair_list:
        chosen = preds == s
        if sources == "correct":
            chosen &= data.labels == s
        idx = chosen.nonzero()[:, 0][:n]
        if len(idx) == 0:
            raise InputError(f"no {split} images {'correctly classified' if sources == 'correct' else 'predicted'} "
                             f"as '{classes[s]}'")
        source_correct = round(float((data.labels[idx] == s).float().mean()), 5)
        x_all = data.images[idx]
        real_t = data.images[data.labels == t][:max(len(idx), 50)]
        real_feat = None
        if feats is not None:
            from cfe_cli import features

            real_feat = features.embed(real_t, feats)
            references.append(_realism_references(classes[s], classes[t], feats, x_all, real_feat, ref_data, t))
        real_incep = None
        if inception is not None:
            from cfe_cli import fid

            real_incep = fid.inception_features(real_t, inception)

        def image_metrics(row: dict[str, Any], x_cf: torch.Tensor, x_all: torch.Tensor = x_all,
                          real_feat: torch.Tensor | None = real_feat,
                          real_incep: torch.Tensor | None = real_incep, t: int = t) -> None:
            """The optional network-based metrics of one row's counterfactuals (CPU tensors)."""
            if feats is not None and real_feat is not None:
                _realism(row, feats, x_all, x_cf, real_feat, probe, t)
            if faces is not None:
                _identity(row, faces, x_all, x_cf)
            if real_incep is not None:
                _fid(row, inception, x_cf, real_incep)
            if lpips_net is not None:
                _lpips(row, lpips_net, x_all, x_cf)

        for ex in explainers:
            scored: dict[str, list[torch.Tensor]] = {}
            scored_r: dict[str, list[torch.Tensor]] = {}
            cf_keep: list[torch.Tensor] = []
            refl_keep: list[torch.Tensor] = []
            steps: list[torch.Tensor] = []
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
                torch.cuda.synchronize(dev)
            t0 = time.perf_counter()
            gen_seconds = 0.0
            for b in range(0, len(idx), batch_size):
                x = x_all[b:b + batch_size].to(dev)
                src = torch.full((len(x),), s, dtype=torch.long, device=dev)
                tgt = torch.full((len(x),), t, dtype=torch.long, device=dev)
                tb = time.perf_counter()
                prep, res = ex.run(x, tgt)
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                gen_seconds += time.perf_counter() - tb
                x_cf = res.x_cf.detach()
                for key, v in _score(ex, x, x_cf, res.found, src, tgt, oracle, cout_steps).items():
                    scored.setdefault(key, []).append(v.cpu())
                if ex.method == "mirror":
                    for key, v in _score(ex, x, res.third.detach(), torch.ones_like(res.found), src, tgt, oracle,
                                         cout_steps).items():
                        scored_r.setdefault(key, []).append(v.cpu())
                    refl_keep.append(res.third.detach().cpu())
                    steps.append(torch.tensor([e["decodes"] for e in res.extra], dtype=torch.float))
                    ks = torch.tensor([e["first_cfe_k"] if e["first_cfe_k"] is not None else float("nan")
                                       for e in res.extra])
                    scored.setdefault("first_cfe_k", []).append(ks)
                else:
                    steps.append(torch.tensor([e["steps"] for e in res.extra], dtype=torch.float))
                if global_attributions and ex.probes is not None:
                    from cfe_cli.attributions import local_scores

                    local = local_scores(ex.probes, prep["z0"].detach(), prep["z_cf"].detach()).cpu()
                    scored.setdefault("_local", []).append(local[res.found.cpu()])
                cf_keep.append(x_cf.cpu())
                if save_images:
                    img_dir = out_dir / "images" / f"{ex.method}_{classes[s]}_to_{classes[t]}"
                    for j in range(len(x)):
                        render.save_png(x_cf[j].cpu(), img_dir / f"no{int(idx[b + j])}.png")
            seconds = time.perf_counter() - t0
            if "_local" in scored:
                global_rows.append(_global_ranking(ex, classes[s], classes[t], torch.cat(scored.pop("_local")),
                                                   out_dir))
            x_cf_all = torch.cat(cf_keep)
            found_all = torch.cat(scored["found"]).bool()
            row = _summarise(ex.method, classes[s], classes[t], scored, len(idx), gen_seconds, steps)
            row["source_correct"] = source_correct
            row["fail_pct"] = round(M.fail_rate(found_all), 3)
            row["seconds_total"] = round(seconds, 3)
            row["peak_memory_mb"] = M.peak_memory_mb(dev)
            image_metrics(row, x_cf_all)
            rows.append(row)
            if ex.method == "mirror":
                rrow = _summarise("mirror@reflection", classes[s], classes[t], scored_r, len(idx), gen_seconds, steps)
                rrow["source_correct"] = source_correct
                image_metrics(rrow, torch.cat(refl_keep))
                rows.append(rrow)
            done += 1
            if progress is not None:
                progress({"completed": done, "total": total})
    overall = _overall(rows)
    doc = {"command": command, "model": str(ex0.folder), "dataset": dataset, "split": split, "n_per_pair": n,
           "sources": sources, "methods": methods, "pairs": [f"{classes[s]}:{classes[t]}" for s, t in pair_list],
           "threshold": threshold, "options": options or {}, "device": str(dev), "oracle": oracle is not None,
           "precision": precision, "compile": compile,
           "realism": "effnetlite0" if feats is not None else None,
           "oracle_effnet": probe is not None,
           "identity": "dlib face_recognition_resnet_model_v1" if faces is not None else None,
           "fid_weights": None if inception is None else {"path": str(fid_weights), "sha256": _fid_sha()},
           "lpips_weights": None if lpips_net is None else str(lpips_weights),
           "notes": {"denoised_valid": "validity after a 5x5 Gaussian blur, sigma 1",
                     "l2": "root-mean-square pixel difference", "sparsity": "share of pixels changed by > 0.05",
                     "fd_effnetlite0": "Frechet distance of EfficientNet-Lite0 ImageNet features (1280-d, 224 px) "
                                       "between counterfactuals and real test images of the target class; not "
                                       "comparable to published FID (Inception-v3)",
                     "dfd_effnetlite0": "unlearned deep-feature distance on EfficientNet-Lite0 stages; not LPIPS",
                     "oracle_effnet": "share of counterfactuals that a linear probe on EfficientNet-Lite0 "
                                      "features of real training images (oracle_effnet.safetensors) labels as the "
                                      "target; oracle_effnet_real: the same for the real target test images",
                     "references": "the scale of fd_effnetlite0 per pair, against the same real target images: "
                                   "fd_inputs = the unchanged inputs (a counterfactual that changed nothing), "
                                   "fd_real = as many other real target images from another split (what a "
                                   "perfect generator would score at this set size)",
                     "fid": "FID: Frechet distance of Inception-v3 (2015-12-05, the user's sha256-checked "
                            "file) pool features between counterfactuals and real test images of the target "
                            "class; small sets bias it upwards, compare equal set sizes only",
                     "lpips": "LPIPS-Alex v0.1 between source and counterfactual (the user's AlexNet file, "
                              "sha256-checked; images under 64 px resized to 64)",
                     "fva_dlib": "share of counterfactuals whose dlib face descriptor stays within 0.6 (dlib's "
                                 "same-person distance) of its source's (faces only, cfe[faces])",
                     "identity_distance_dlib": "mean dlib descriptor distance between source and counterfactual",
                     "source_correct": "share of the row's sources whose label is the source class (the "
                                       "rest are misclassified test images predicted as the source)",
                     "steps": "engine steps to the threshold (optimisation methods) or decoder passes (mirror)"},
           "rows": rows, "overall": overall, "references": references,
           "machine": f"{platform.machine()} {torch.get_num_threads()} threads"}
    if global_rows:
        _write_json(out_dir / "global_attributions.json",
                    {"command": command, "model": str(ex0.folder), "dataset": dataset, "split": split,
                     "definition": "S_j = mean over valid counterfactuals of p_j(z_cf) - p_j(z_source), p_j the "
                                   "logistic probe of descriptor j on the VAE latent code",
                     "rankings": global_rows})
        doc["global_attributions"] = str(out_dir / "global_attributions.json")
    _write_json(out_dir / "metrics.json", doc)
    doc["metrics_path"] = str(out_dir / "metrics.json")
    doc["global_rankings"] = global_rows
    return doc


def _global_ranking(ex: Explainer, s: str, t: str, local: torch.Tensor, out_dir: Path) -> dict[str, Any]:
    """Global attribution ranking of one method and pair (signed mean of local scores, by magnitude)."""
    from cfe_cli.attributions import bar_chart, global_scores

    names = ex.probes.names  # type: ignore[union-attr]
    if len(local):
        g = global_scores(local).tolist()
        sd = local.std(0).tolist() if len(local) > 1 else [0.0] * len(names)
    else:
        g, sd = [0.0] * len(names), [0.0] * len(names)
    order = sorted(range(len(names)), key=lambda i: -abs(g[i]))
    chart = out_dir / f"global_{ex.method}_{s}_to_{t}.png".replace(" ", "_")
    bar_chart(names, g, f"{ex.method}: {s} -> {t}, global attribution (n={len(local)})", chart, top=12)
    return {"method": ex.method, "pair": f"{s}:{t}", "n": len(local), "chart": str(chart),
            "ranking": [{"name": names[i], "score": round(g[i], 5), "std": round(sd[i], 5),
                         "probe_accuracy": round(float(ex.probes.accuracy[i]), 4)}  # type: ignore[union-attr]
                        for i in order]}


def _summarise(method: str, s: str, t: str, scored: dict[str, list[torch.Tensor]], n: int, gen_seconds: float,
               steps: list[torch.Tensor]) -> dict[str, Any]:
    row: dict[str, Any] = {"method": method, "pair": f"{s}:{t}", "source": s, "target": t, "n": n}
    for key, vals in scored.items():
        v = torch.cat(vals).float()
        if key in ("first_cfe_k",):
            v = v[~v.isnan()]
        row[key] = round(float(v.mean()), 5) if len(v) else None
    st = torch.cat(steps)
    row["steps_mean"] = round(float(st.mean()), 3)
    row["seconds_per_cf"] = round(gen_seconds / max(n, 1), 6)
    row["cf_per_second"] = round(n / max(gen_seconds, 1e-9), 2)
    return row


def _reference_split(dataset: str, split: str, data_dir: str | os.PathLike[str] | None,
                     size: int) -> Any:
    """Another split of the dataset (train, or test when evaluating train) for the real-image FD floor."""
    other = "test" if split == "train" else "train"
    try:
        return load_dataset(dataset, other, root=data_dir, size=size)
    except (InputError, OSError, ValueError):
        return None


def _realism_references(s: str, t: str, feats: Any, x_all: torch.Tensor, real_feat: torch.Tensor,
                        ref_data: Any, t_index: int) -> dict[str, Any]:
    """FD of the unchanged inputs and of other real class-t images against the pair's real set."""
    from cfe_cli import features
    from cfe_cli import metrics as M

    ref: dict[str, Any] = {"pair": f"{s}:{t}", "n": len(x_all),
                           "fd_inputs_effnetlite0": round(M.frechet_distance(features.embed(x_all, feats),
                                                                             real_feat), 4),
                           "fd_real_effnetlite0": None, "n_real": 0}
    if ref_data is not None:
        other = ref_data.images[ref_data.labels == t_index][:len(x_all)]
        if len(other) >= 2:
            ref["fd_real_effnetlite0"] = round(M.frechet_distance(features.embed(other, feats), real_feat), 4)
            ref["n_real"] = len(other)
    return ref


def _realism(row: dict[str, Any], feats: Any, x: torch.Tensor, x_cf: torch.Tensor, real_feat: torch.Tensor,
             probe: Any = None, t: int = -1) -> None:
    from cfe_cli import features, oracle_effnet
    from cfe_cli import metrics as M

    f_cf = features.embed(x_cf, feats)
    if probe is not None:
        row.update(oracle_effnet.score(probe, f_cf, real_feat, t))
    row["fd_effnetlite0"] = round(M.frechet_distance(f_cf, real_feat), 4)
    kd_mean, kd_std = M.kernel_distance(f_cf, real_feat, subsets=20, subset_size=min(len(f_cf), len(real_feat), 200))
    row["kd_effnetlite0"] = round(kd_mean, 5)
    dev = next(feats.parameters()).device
    d = [features.deep_feature_distance(x[i:i + 64].to(dev), x_cf[i:i + 64].to(dev), feats).cpu()
         for i in range(0, len(x), 64)]
    row["dfd_effnetlite0"] = round(float(torch.cat(d).mean()), 5)


def _fid_sha() -> str:
    from cfe_cli import fid

    return fid.INCEPTION_SHA256


def _fid(row: dict[str, Any], net: Any, x_cf: torch.Tensor, real_feat: torch.Tensor) -> None:
    from cfe_cli import fid
    from cfe_cli import metrics as M

    row["fid"] = round(M.frechet_distance(fid.inception_features(x_cf, net), real_feat), 4)


@torch.inference_mode()
def _lpips(row: dict[str, Any], net: Any, x: torch.Tensor, x_cf: torch.Tensor) -> None:
    dev = next(net.parameters()).device
    d = [net(x[i:i + 64].to(dev), x_cf[i:i + 64].to(dev)).cpu() for i in range(0, len(x), 64)]
    row["lpips"] = round(float(torch.cat(d).mean()), 5)


def _identity(row: dict[str, Any], faces: Any, x: torch.Tensor, x_cf: torch.Tensor) -> None:
    """Face verification accuracy (FVA idea) with dlib descriptors; see :mod:`cfe_cli.identity`."""
    d = faces.distance(x, x_cf)
    row["identity_distance_dlib"] = round(float(d.mean()), 5)
    row["fva_dlib"] = round(float((d < faces.threshold).float().mean()), 5)


def _overall(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """n-weighted means over pairs, per method."""
    out = []
    for method in dict.fromkeys(r["method"] for r in rows):
        rs = [r for r in rows if r["method"] == method]
        n = sum(r["n"] for r in rs)
        agg: dict[str, Any] = {"method": method, "pair": "all", "n": n}
        for key in rs[0]:
            if key in ("method", "pair", "source", "target", "n", "peak_memory_mb"):
                continue
            vals = [(r.get(key), r["n"]) for r in rs if isinstance(r.get(key), (int, float))]
            if vals:
                agg[key] = round(sum(v * w for v, w in vals) / sum(w for _, w in vals), 5)
        mem = [r.get("peak_memory_mb") for r in rs if r.get("peak_memory_mb") is not None]
        agg["peak_memory_mb"] = max(mem) if mem else None
        agg["cf_per_second"] = round(n / max(sum(r["seconds_per_cf"] * r["n"] for r in rs), 1e-9), 2)
        out.append(agg)
    return out
