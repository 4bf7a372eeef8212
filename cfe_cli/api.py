"""The notebook-facing API. The CLI is a thin layer over these functions.

Every function takes plain arguments (or tensors), returns data, and never prints;
errors are :class:`cfe_cli.errors.CfeError` subclasses.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from cfe_cli.data import Dataset, dataset_summary, load_dataset
from cfe_cli.errors import InputError
from cfe_cli.models.classifiers import ARCHS, GAPClassifier, default_arch, make_config
from cfe_cli.models.weights import (
    LoadedClassifier,
    list_models,
    load_classifier,
    resolve_model,
    save_module,
)
from cfe_cli.runtime import resolve_device, seed_everything
from cfe_cli.training import ClassifierTrainConfig, Progress, evaluate_accuracy, train_classifier

__all__ = [
    "datasets", "load_dataset", "load_model", "models", "predict", "train_clf",
]  # fmt: skip

DEFAULT_EPOCHS = {"mnist": 15, "fashion-mnist": 12, "bloodmnist": 30, "celeba": 20}
DEFAULT_AUGMENT = {"mnist": "shift", "fashion-mnist": "shift-flip", "bloodmnist": "flip-rot", "celeba": "face"}


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
    max_steps: int | None = None,
    command: str = "",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Train a GAP classifier on ``dataset``, evaluate on its test split, save safetensors.

    Writes ``out/classifier.safetensors`` (or ``out/oracle.safetensors`` with
    ``kind="oracle"``). Returns a record with the measured test accuracy and the path.
    """
    dev = resolve_device(device)
    if arch is not None and arch not in ARCHS:
        raise InputError(f"unknown architecture '{arch}'; known: {', '.join(ARCHS)}")
    if epochs is not None and epochs < 1:
        raise InputError("--epochs must be at least 1")
    out_dir = Path(out)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create output folder {out_dir}: {e.strerror}") from None
    if not os.access(out_dir, os.W_OK):
        raise InputError(f"output folder is not writable: {out_dir}")
    seed_everything(seed)
    train = load_dataset(dataset, "train", root=data_dir, size=size)
    test = load_dataset(dataset, "test", root=data_dir, size=size or train.resolution)
    base = dataset.split(":", 1)[0]
    arch = arch or default_arch(train.resolution)
    mean, std = _channel_stats(train)
    cfg = make_config(arch, in_channels=train.channels, num_classes=len(train.classes),
                      resolution=train.resolution, mean=mean, std=std)
    model = GAPClassifier(cfg)
    tcfg = ClassifierTrainConfig(epochs=epochs or DEFAULT_EPOCHS.get(base, 15), batch_size=batch_size, lr=lr,
                                 augment=DEFAULT_AUGMENT.get(base, "shift"), seed=seed)
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


def train_gen(
    model: str | os.PathLike[str],
    *,
    method: str = "mirror",
    epochs: int | None = None,
    batch_size: int = 64,
    lr: float = 2e-4,
    device: str = "auto",
    data_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    max_steps: int | None = None,
    command: str = "",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Train a generator for a model folder against its frozen classifier.

    ``method="mirror"`` writes ``<model>/mirror.safetensors`` (the Mirror-CFE decoder).
    The training data is the classifier's own dataset (from its metadata).
    """
    from cfe_cli.methods.mirror import MirrorCFE
    from cfe_cli.training import MirrorTrainConfig, train_mirror

    if method != "mirror":
        raise InputError(f"unknown generator method '{method}'; available: mirror")
    dev = resolve_device(device)
    folder = resolve_model(model)
    loaded = load_classifier(folder / "classifier.safetensors", dev)
    dataset = loaded.info.get("dataset")
    if not dataset:
        raise InputError(f"{folder} does not name its dataset; cannot pick training data")
    seed_everything(seed)
    train = load_dataset(dataset, "train", root=data_dir, size=loaded.config.resolution)
    cfg = MirrorTrainConfig(epochs=epochs or 20, batch_size=batch_size, lr=lr, seed=seed)
    start = time.perf_counter()
    dec, history = train_mirror(loaded.model, train, cfg, device=dev, progress=progress, max_steps=max_steps)
    seconds = time.perf_counter() - start
    # quick check on the test split: validity of the 1st CFE and of the reflection (runner-up target)
    test = load_dataset(dataset, "test", root=data_dir, size=loaded.config.resolution)
    loaded.model.cpu()
    m = MirrorCFE(loaded.model, dec)
    x = test.images[:200]
    out = m.explain(x)
    valid = float(out["found"].float().mean())
    refl = float((out["reflection_probs"].argmax(1) == out["target"]).float().mean())
    l1 = float((out["x_cf"] - x).abs().mean(dim=(1, 2, 3))[out["found"]].mean()) if out["found"].any() else None
    with torch.inference_mode():
        rec = float((dec(loaded.model.features(x)) - x).abs().mean())
    info = {"dataset": dataset, "classes": loaded.classes, "method": method, "train": cfg.__dict__,
            "history": history, "seconds": round(seconds, 1), "device": str(dev), "command": command,
            "check": {"n": len(x), "target": "runner-up", "validity": valid, "reflection_validity": refl,
                      "l1": l1, "reconstruction_l1": rec},
            "trained_at": time.strftime("%Y-%m-%d %H:%M:%S"), "torch": torch.__version__}
    path = save_module(folder / f"{method}.safetensors", dec, kind=method, config=dec.config.to_dict(), info=info)
    return {"path": str(path), "seconds": seconds, "history": history, **info["check"]}


# ----------------------------------------------------------------------------- explain / animate


def _write_json(path: Path, obj: Any) -> None:
    import json

    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def _out_dir(out: str | os.PathLike[str]) -> Path:
    d = Path(out)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create output folder {d}: {e.strerror}") from None
    if not os.access(d, os.W_OK):
        raise InputError(f"output folder is not writable: {d}")
    return d


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
    command: str = "",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Explain every input with Mirror-CFE and write images, metrics.json and (optionally) MP4s.

    Args:
        inputs: image files, folders (recursive) or ``DATASET:SPLIT:INDEX`` references.
        model: model name (``weights/<name>``) or folder.
        target: target class (name or index) for every input; default: the runner-up.
        images: write ``{name}.png`` (panel), ``{name}_cf.png`` and ``{name}_reflection.png``.
        video: write ``{name}.mp4`` (``frames`` frames at ``fps``, ``size``×``size``).

    Returns:
        ``{"results": [...], "failures": [...], "metrics_path": ..., "warnings": [...]}``;
        each result is the metrics.json record of one input.
    """
    from cfe_cli import render
    from cfe_cli.inputs import class_index, resolve_inputs
    from cfe_cli.methods.mirror import MirrorCFE
    from cfe_cli.models.weights import load_decoder

    if method != "mirror":
        raise InputError(f"method '{method}' is not available yet; available: mirror")
    if frames < 2:
        raise InputError("--frames must be at least 2")
    if size < 64 or size % 2:
        raise InputError("--size must be an even number of pixels, at least 64")
    dev = resolve_device(device)
    folder = resolve_model(model)
    clf = load_classifier(folder / "classifier.safetensors", dev)
    dec, _ = load_decoder(folder, "mirror", dev)
    classes = clf.classes
    tgt = class_index(target, classes, "target class") if target is not None else None
    out_dir = _out_dir(out)
    items = resolve_inputs(inputs, channels=clf.config.in_channels, resolution=clf.config.resolution,
                           data_dir=data_dir, classes=classes, label=label, strict=strict)
    if not items:
        raise InputError("no inputs given")
    explainer = MirrorCFE(clf.model, dec)
    failures = [{"input": it.input, "error": it.error} for it in items if it.error]
    warnings = [it.warning for it in items if it.warning]
    good = [it for it in items if it.error is None]
    results: list[dict[str, Any]] = []
    used: set[str] = set()
    metrics_path = out_dir / "metrics.json"
    doc = {"command": command, "model": str(folder), "model_name": folder.name, "method": method,
           "classes": classes, "device": str(dev), "results": results, "failures": failures}
    done = 0
    for start in range(0, len(good), batch_size):
        batch = good[start:start + batch_size]
        t0 = time.perf_counter()
        x = torch.stack([it.image for it in batch]).to(dev)  # type: ignore[misc]
        tvec = None if tgt is None else torch.full((len(batch),), tgt, dtype=torch.long, device=dev)
        prep = explainer.prepare(x, tvec)
        same = prep["source"] == prep["target"]
        if bool(same.any()):  # target equals prediction: explain nothing for those
            keep = ~same
            for it in (b for b, s in zip(batch, same.tolist(), strict=True) if s):
                failures.append({"input": it.input, "error": f"target '{classes[tgt]}' equals the prediction"})  # type: ignore[index]
            batch = [b for b, s in zip(batch, same.tolist(), strict=True) if not s]
            if not batch:
                continue
            x = x[keep]
            prep = {k: v[keep] for k, v in prep.items()}
        res = explainer.first_cfe(prep)
        sweep = explainer.sweep(prep, frames) if video else None
        seconds = (time.perf_counter() - t0) / len(batch)
        probs = prep["probs"]
        x_cf, x_refl = res["x_cf"].cpu(), res["x_reflection"].cpu()
        src, tg = prep["source"].tolist(), prep["target"].tolist()
        l1 = (res["x_cf"] - x).abs().mean(dim=(1, 2, 3)).tolist()
        for i, it in enumerate(batch):
            s, t = src[i], tg[i]
            gt = it.gt
            name = render.cf_name(it.prefix, classes[s], classes[t], None if gt is None else classes[gt])
            base, n = name, 2
            while name in used:
                name, n = f"{base}_{n}", n + 1
            used.add(name)
            found = bool(res["found"][i])
            cf_p, rf_p = res["cf_probs"][i], res["reflection_probs"][i]
            rec: dict[str, Any] = {
                "input": it.input, "name": name,
                "source_pred": classes[s], "source_conf": round(float(probs[i, s]), 5),
                "gt": None if gt is None else classes[gt], "target": classes[t],
                "first_cfe_k": round(float(res["k"][i]), 5) if found else None,
                "cf_pred": classes[int(cf_p.argmax())] if found else None,
                "cf_conf": round(float(cf_p.max()), 5) if found else None,
                "cf_target_conf": round(float(cf_p[t]), 5) if found else None,
                "reflection_pred": classes[int(rf_p.argmax())], "reflection_conf": round(float(rf_p.max()), 5),
                "valid": found, "l1": round(l1[i], 5) if found else None,
                "decodes": int(res["decodes"][i]), "seconds": round(seconds, 5),
            }
            if images:
                rec["cf_path"] = str(render.save_png(x_cf[i], out_dir / f"{name}_cf.png")) if found else None
                rec["reflection_path"] = str(render.save_png(x_refl[i], out_dir / f"{name}_reflection.png"))
                titles = ["Source", f"1st CFE (k={float(res['k'][i]):.2f})" if found else "1st CFE",
                          "Reflection (k=1)", "x_cf − x_s"]
                captions = [f"{classes[s]} ({float(probs[i, s]):.2f})",
                            f"{rec['cf_pred']} ({rec['cf_conf']:.2f})" if found else "no CFE",
                            f"{rec['reflection_pred']} ({rec['reflection_conf']:.2f})",
                            f"L1 {l1[i]:.3f}" if found else ""]
                pil = render.explanation_panel(x[i].cpu(), x_cf[i] if found else None, x_refl[i],
                                               titles=titles, captions=captions)
                rec["panel_path"] = str(render.save_image(pil, out_dir / f"{name}.png"))
            if sweep is not None:
                pred_p, int_p = sweep["predicted"][i].cpu(), sweep["intended"][i].cpu()
                st = torch.tensor([s, t])
                rec["video_path"] = str(render.render_video(
                    out_dir / f"{name}.mp4", frames=sweep["x"][i].cpu(), source=x[i].cpu(), ks=sweep["ks"].cpu(),
                    first_cf_index=_first_hit(pred_p, t), intended=int_p[:, st], predicted=pred_p[:, st],
                    distance=(sweep["x"][i] - x[i]).abs().mean(dim=(1, 2, 3)).cpu(),
                    source_name=classes[s], target_name=classes[t], size=size, fps=fps))
            results.append(rec)
        done += len(batch)
        _write_json(metrics_path, doc)  # updated as batches finish
        if progress is not None:
            progress({"completed": done, "total": len(good)})
    _write_json(metrics_path, doc)
    return {"results": results, "failures": failures, "warnings": warnings, "metrics_path": str(metrics_path)}


def _first_hit(pred: torch.Tensor, target: int) -> int | None:
    """Index of the first frame whose prediction is ``target`` (None if none). ``pred (T, K)``."""
    hit = (pred.argmax(1) == target).nonzero()
    return int(hit[0]) if len(hit) else None
