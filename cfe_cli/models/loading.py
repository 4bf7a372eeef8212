"""Loading the networks a run explains with: the explained classifier (the folder's or a
user's own) and the Mirror-CFE decoder that belongs to it."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from cfe_cli.errors import InputError
from cfe_cli.models.classifiers import ClassifierConfig
from cfe_cli.models.external import file_sha256
from cfe_cli.models.weights import LoadedClassifier, load_classifier


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


def require_mirror_structure(clf: LoadedClassifier) -> None:
    """A clear error when a user's classifier lacks the GAP + linear head Mirror-CFE needs."""
    if clf.info.get("mirror_problem"):
        raise InputError(f"Mirror-CFE needs logits = W·GAP(features) + b, but {clf.info['mirror_problem']}; "
                         "the latent methods (attack, gci, cecas, pgd) work with any classifier")


def mirror_decoder(folder: Path, clf: LoadedClassifier, device: torch.device,
                    decoder: str | os.PathLike[str] | None) -> torch.nn.Module:
    """The Mirror-CFE decoder for ``clf``: ``--decoder FILE`` or the folder's ``mirror.safetensors``."""
    from cfe_cli.models.weights import load_decoder

    external = clf.info.get("external")
    require_mirror_structure(clf)
    if decoder is None:
        if external:
            raise InputError("a decoder is trained for one classifier: train one for yours with "
                             f"cfe train-gen --model {folder.name} --classifier {external} ... --method mirror "
                             "--out FILE, then pass --decoder FILE")
        dec, dinfo = load_decoder(folder, "mirror", device)
        want = clf.info.get("classifier_sha256")
        if clf.info.get("imported") and dinfo.get("classifier_sha256") not in (None, want):
            raise InputError(f"{folder / 'mirror.safetensors'} was trained for another classifier than the one "
                             f"imported as {folder.name}: train it again with cfe train-gen --model {folder.name} "
                             "--method mirror")
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


def channels_last(module: torch.nn.Module) -> None:
    """Convert a model's 4-D weights to channels-last in place: mkldnn (CPU) and cuDNN then run
    every convolution in NHWC, ~20-25 % faster at 28² on CPU (docs/results.md, Speed).
    TorchScript user models are left as they are."""
    if not isinstance(module, torch.jit.ScriptModule):
        module.to(memory_format=torch.channels_last)
