"""The train-clf job: train a GAP classifier (or an oracle) on a dataset, test it, save safetensors."""

from __future__ import annotations

import os
import platform
import time
from typing import Any

import torch

from cfe_cli.data import Dataset, load_dataset
from cfe_cli.errors import InputError
from cfe_cli.files import out_dir as _out_dir
from cfe_cli.models.classifiers import ARCHS, GAPClassifier, default_arch, make_config
from cfe_cli.models.weights import load_classifier, save_module
from cfe_cli.runtime import resolve_device, seed_everything
from cfe_cli.training.loops import AUGMENTS, ClassifierTrainConfig, Progress, evaluate_accuracy, train_classifier

DEFAULT_EPOCHS = {"mnist": 15, "fashion-mnist": 12, "bloodmnist": 30, "celeba": 20}
DEFAULT_AUGMENT = {"mnist": "shift", "fashion-mnist": "translate-flip", "bloodmnist": "flip-rot", "celeba": "face"}


def _channel_stats(ds: Dataset) -> tuple[tuple[float, ...], tuple[float, ...]]:
    x = ds.images
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std)


def _check_options(arch: str | None, epochs: int | None, augment: str | None, label_smoothing: float, ema: float,
                   adv_eps: float, adv_steps: int) -> None:
    """train-clf's option checks; each problem is a one-line error."""
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
    if not 0.0 <= adv_eps <= 10.0:
        raise InputError(f"--adv-eps must be in [0, 10] (an L2 radius in [0, 1] pixel units; 0 = off); got {adv_eps}")
    if not 1 <= adv_steps <= 100:
        raise InputError(f"--adv-steps must be in [1, 100]; got {adv_steps}")


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
    adv_eps: float = 0.0,
    adv_steps: int = 3,
    command: str = "",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Train a GAP classifier on ``dataset``, evaluate on its test split, save safetensors.

    Writes ``out/classifier.safetensors`` (or ``out/oracle.safetensors`` with
    ``kind="oracle"``). ``ema`` > 0 saves an exponential moving average of the weights (decay
    ``ema`` per step). ``adv_eps`` > 0 trains adversarially (Madry et al. 2018) on L2 PGD examples of
    that radius (``adv_steps`` steps) and reports the robust accuracy on 1,000 test images. Under
    torchrun the ranks share every global batch (DDP, :mod:`cfe_cli.training.ddp`) and rank 0 saves.
    Returns a record with the measured test accuracy and the path.
    """
    from cfe_cli import distributed

    d = distributed.context(device=device)
    dev = resolve_device(distributed.device_name(device, d))
    if batch_size < d.world or batch_size % d.world:
        raise InputError(f"--batch-size {batch_size} is the global batch: give a multiple of the {d.world} "
                         "processes")
    _check_options(arch, epochs, augment, label_smoothing, ema, adv_eps, adv_steps)
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
                                 label_smoothing=label_smoothing, ema=ema, seed=seed,
                                 adv_eps=float(adv_eps), adv_steps=int(adv_steps))
    result = train_classifier(model, train, test, tcfg, device=dev, progress=progress if d.main else None,
                              max_steps=max_steps, dist=d)
    val_acc = None
    if base in ("bloodmnist", "celeba"):
        val_acc = evaluate_accuracy(model, load_dataset(dataset, "val", root=data_dir, size=train.resolution),
                                    device=dev)
    robust_acc = (evaluate_accuracy(model, test, device=dev, adv_eps=adv_eps, adv_steps=10, limit=1000)
                  if adv_eps > 0 else None)  # under a 10-step PGD at the training radius
    info = {
        "dataset": dataset,
        "classes": train.classes,
        "test_accuracy": round(result.test_accuracy, 5),
        "val_accuracy": None if val_acc is None else round(val_acc, 5),
        "robust_test_accuracy": None if robust_acc is None else round(robust_acc, 5),
        "robust_eval": None if robust_acc is None else {"eps": adv_eps, "steps": 10, "n": min(1000, len(test))},
        "n_train": len(train),
        "n_test": len(test),
        "train": tcfg.__dict__,
        "history": result.history,
        "earlier_training": history_before,
        "seconds": round(result.seconds, 1),
        "device": str(dev),
        "processes": d.world,
        "machine": f"{platform.machine()} {platform.processor() or ''} {torch.get_num_threads()} threads".strip(),
        "trained_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": command,
        "torch": torch.__version__,
    }
    path = out_dir / f"{kind}.safetensors"
    if d.main:
        save_module(path, model.cpu(), kind=kind, config=cfg.to_dict(), info=info)
    d.barrier()  # the file exists before any rank returns
    distributed.finish(d)
    return {"path": str(path), "test_accuracy": result.test_accuracy, "val_accuracy": val_acc,
            "robust_test_accuracy": robust_acc, "epochs": result.epochs, "seconds": result.seconds, "arch": arch,
            "classes": train.classes}


# ----------------------------------------------------------------------------- generators
