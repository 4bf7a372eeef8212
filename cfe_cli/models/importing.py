"""``cfe import-model``: a user's classifier and data made into a model folder.

A model folder normally holds a cfe-trained ``classifier.safetensors``. An imported one holds a
``classifier.safetensors`` whose config has ``arch = "imported"`` and whose info says how to rebuild
the user's network (:data:`IMPORTED_ARCH`)::

    info["imported"] = {
        "classifier": "/abs/mynet.py:factory" | "module:factory" | "classifier.pt" | "/abs/net.pt2",
        "weights":    "classifier.safetensors" (copied: the tensors are in this file)
                      | "/abs/net.safetensors" (referenced: --link) | None (TorchScript / torch.export),
        "copied":     true | false,
        "sha256":     sha256 of the user's weights (or TorchScript / .pt2) file, checked on every load
                      of a referenced file,
    }

with ``dataset`` (``folder:/abs/path`` or a built-in name), ``classes``, ``test_accuracy`` measured
on the data's test split, and ``mirror`` / ``mirror_problem`` (Mirror-CFE's GAP check). Every
command then loads it by name like any other model (:func:`load_imported`).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from cfe_cli.errors import InputError, WeightsError
from cfe_cli.models.classifiers import ClassifierConfig
from cfe_cli.models.external import file_sha256, wrap_classifier

IMPORTED_ARCH = "imported"
NAME = re.compile(r"^[A-Za-z0-9][\w.-]*$")
SCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".torchscript", ".jit", ".pt2")


def user_weights_dir() -> Path:
    """Where ``import-model`` writes without ``--out``: ``$CFE_WEIGHTS_DIR``, else ``~/.cache/cfe/weights``."""
    if os.environ.get("CFE_WEIGHTS_DIR"):
        return Path(os.environ["CFE_WEIGHTS_DIR"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "cfe" / "weights"


def _spec_for_folder(spec: str) -> str:
    """The ``--classifier`` spec as the model folder records it: file paths made absolute, and a module found
    only as ``./name.py`` recorded as that file (so the model loads from any working directory)."""
    target, sep, attr = spec.rpartition(":")
    if Path(spec).suffix in SCRIPT_SUFFIXES or not sep:
        return str(Path(spec).expanduser().resolve())
    from cfe_cli.models.external import _is_file_spec

    if _is_file_spec(target):
        return f"{Path(target).expanduser().resolve()}:{attr}"
    import importlib.util

    try:
        found = importlib.util.find_spec(target) is not None
    except (ImportError, ValueError):
        found = False
    local = Path.cwd() / (target.replace(".", "/") + ".py")
    return f"{local.resolve()}:{attr}" if not found and local.is_file() else spec


def _class_names(data_classes: list[str], given: str | None, data: str) -> list[str]:
    if given is None:
        return data_classes
    names = [c.strip() for c in given.split(",") if c.strip()]
    if len(names) != len(data_classes):
        raise InputError(f"--classes names {len(names)} classes but {data} has {len(data_classes)} "
                         f"({', '.join(data_classes)})")
    if sorted(names) == sorted(data_classes) and names != data_classes:
        fix = (f"write your classifier's order, one name per line, into {data[len('folder:'):]}/classes.txt so the "
               "labels follow it" if data.startswith("folder:") else "give them in the data's label order")
        raise InputError(f"--classes puts the data's classes in another order ({', '.join(names)}) than its labels "
                         f"({', '.join(data_classes)}): {fix}")
    return names


def _data_reference(data: str, data_dir: str | os.PathLike[str] | None) -> str:
    """``folder:PATH`` with an absolute PATH (the model must find its data from anywhere); built-ins as given."""
    if not data.startswith("folder:"):
        return data
    from cfe_cli.folders import resolve_folder

    return f"folder:{resolve_folder(data.split(':', 1)[1], data_dir).resolve()}"


@torch.no_grad()
def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    from cfe_cli.models.classifiers import predict_probs

    return float((predict_probs(model, x, batch_size).argmax(1) == y).float().mean())


def import_model(name: str, *, classifier: str, data: str, weights: str | os.PathLike[str] | None = None,
                 classes: str | None = None, out: str | os.PathLike[str] | None = None, link: bool = False,
                 force: bool = False, data_dir: str | os.PathLike[str] | None = None, batch_size: int = 256,
                 command: str = "") -> dict[str, Any]:
    """Make ``<out or the user weights dir>/<name>/`` from a user's classifier and data.

    Checks the logits count against the data's classes, measures the classifier's accuracy on the
    data's test split, records Mirror-CFE's GAP check, and copies the weights (TorchScript / .pt2
    file) into the folder, or with ``link`` references them by absolute path and sha256.

    Returns:
        ``{"name", "path", "dataset", "classes", "test_accuracy", "n_test", "mirror", "mirror_problem",
        "weights", "copied", "sha256", "classifier", "on_search_path"}``.
    """
    from safetensors.torch import load_file

    from cfe_cli.data import load_dataset
    from cfe_cli.models.weights import save_module, weights_roots

    if not NAME.match(name):
        raise InputError(f"model name '{name}' must be letters, digits, '-', '_' or '.' (e.g. my-cnn)")
    root = Path(out).expanduser() if out is not None else user_weights_dir()
    folder = root / name
    if (folder / "classifier.safetensors").exists() and not force:
        raise InputError(f"{folder} already holds a model: pick another NAME, or --force to replace it")
    dataset = _data_reference(data, data_dir)
    test = load_dataset(dataset, "test", root=data_dir)
    class_names = _class_names(test.classes, classes, dataset)
    spec = _spec_for_folder(classifier)
    wrapped = wrap_classifier(spec, weights, resolution=test.resolution, channels=test.channels,
                              num_classes=len(class_names))
    acc = _accuracy(wrapped, test.images, test.labels, batch_size)
    source = Path(weights) if weights is not None else Path(spec)
    sha = file_sha256(source)
    folder.mkdir(parents=True, exist_ok=True)
    copied = not link
    if weights is not None:
        rec_weights: str | None = "classifier.safetensors" if copied else str(source.resolve())
    else:  # TorchScript / torch.export: the file is the network
        rec_weights = None
        if copied:
            shutil.copyfile(source, folder / f"classifier{source.suffix}")
            spec = f"classifier{source.suffix}"
    cfg = ClassifierConfig(arch=IMPORTED_ARCH, in_channels=test.channels, num_classes=len(class_names),
                           resolution=test.resolution, widths=(), blocks=(), mean=(), std=())
    info = {"dataset": dataset, "classes": class_names, "test_accuracy": round(acc, 5), "test_n": len(test),
            "imported": {"classifier": spec, "weights": rec_weights, "copied": copied, "sha256": sha},
            "classifier_sha256": sha, "mirror": wrapped.mirror_problem is None,
            "mirror_problem": wrapped.mirror_problem, "command": command}
    # copied: the user's tensors exactly as in their file (checked against the network above)
    tensors = load_file(str(source)) if (weights is not None and copied) else {}
    save_module(folder / "classifier.safetensors", tensors, kind="classifier", config=cfg.to_dict(), info=info)
    on_path = any(folder.parent.resolve() == r for r in weights_roots())
    return {"name": name, "path": str(folder), "dataset": dataset, "classes": class_names, "test_accuracy": acc,
            "n_test": len(test), "mirror": wrapped.mirror_problem is None, "mirror_problem": wrapped.mirror_problem,
            "weights": rec_weights or spec, "copied": copied, "sha256": sha, "classifier": spec,
            "on_search_path": on_path}


def load_imported(path: Path, meta: dict[str, Any], device: str | torch.device) -> Any:
    """Rebuild an imported model's classifier (a :class:`~cfe_cli.models.weights.LoadedClassifier`)."""
    from cfe_cli.models.weights import LoadedClassifier

    info, imp = meta["info"], meta["info"]["imported"]
    folder = path.parent
    spec = str(imp["classifier"])
    if not Path(spec).is_absolute() and Path(spec).suffix in SCRIPT_SUFFIXES:
        spec = str(folder / spec)  # copied TorchScript / .pt2
    weights = imp.get("weights")
    wpath = None if weights is None else (path if weights == "classifier.safetensors" else Path(weights))
    checked = wpath if wpath is not None else Path(spec)
    if not imp.get("copied", True):
        if not checked.is_file():
            raise WeightsError(f"{folder.name}'s classifier file {checked} is gone (imported with --link): put it "
                               f"back or run cfe import-model {folder.name} again")
        have = file_sha256(checked)
        if have != imp.get("sha256"):
            raise WeightsError(f"{checked} changed since cfe import-model {folder.name} (sha256 {have[:12]}…, "
                               f"recorded {str(imp.get('sha256'))[:12]}…): run cfe import-model {folder.name} "
                               "--force again")
    cfg = ClassifierConfig.from_dict(meta["config"])
    wrapped = wrap_classifier(spec, wpath, resolution=cfg.resolution, channels=cfg.in_channels,
                              num_classes=cfg.num_classes)
    full = {**info, "mirror_problem": wrapped.mirror_problem}
    return LoadedClassifier(wrapped.to(device), cfg, full, path)  # type: ignore[arg-type]
