"""Safetensors weights with their config in the metadata, and the model folders.

A model is a folder ``<name>/`` holding ``classifier.safetensors`` and, beside it, the
generators of the methods (``mirror.safetensors``, ``vae.safetensors``, …) and the
independent ``oracle.safetensors``. Each file's metadata holds::

    format  = "cfe"
    kind    = "classifier" | "mirror" | ...
    config  = JSON of the architecture dataclass (rebuilds the module)
    info    = JSON: dataset, classes, measured metrics, training command, cfe_version, ...

Nothing is ever unpickled: safetensors stores raw tensors only.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from cfe_cli.errors import WeightsError
from cfe_cli.files import atomic_path
from cfe_cli.models.classifiers import ClassifierConfig, GAPClassifier

GENERATOR_KINDS = ("mirror", "vae", "cvae")


def save_module(path: str | os.PathLike[str], module: nn.Module | dict[str, torch.Tensor], *, kind: str,
                config: dict[str, Any], info: dict[str, Any]) -> Path:
    """Write ``module``'s state dict (or a state dict as it is) to ``path`` (atomically) with config metadata."""
    from cfe_cli import __version__

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = module if isinstance(module, dict) else module.state_dict()
    state = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = {"format": "cfe", "kind": kind, "config": json.dumps(config),
            "info": json.dumps({"cfe_version": __version__, **info})}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return path


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed metadata of a cfe safetensors file: ``kind``, ``config``, ``info``."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"not a readable safetensors file: {path} ({e})") from None
    if meta.get("format") != "cfe":
        raise WeightsError(f"{path} has no cfe metadata (config); was it written by cfe?")
    try:
        return {"kind": meta.get("kind", ""), "config": json.loads(meta["config"]),
                "info": json.loads(meta.get("info", "{}"))}
    except (KeyError, json.JSONDecodeError) as e:
        raise WeightsError(f"corrupt metadata in {path}: {e}") from None


def load_state(path: str | os.PathLike[str], module: nn.Module) -> nn.Module:
    """Load tensors into ``module``; a shape or key mismatch is a clear WeightsError."""
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise WeightsError(f"cannot read {path}: {e}") from None
    problem = state_mismatch(state, module.state_dict())
    if problem:
        raise WeightsError(f"{path} does not match its architecture ({type(module).__name__}): {problem}")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0] if str(e) else "mismatch"
        raise WeightsError(f"{path} does not match its architecture: {first}") from None
    return module


def state_mismatch(have: dict[str, torch.Tensor], want: dict[str, torch.Tensor], shown: int = 3) -> str:
    """What keeps a state dict ``have`` from loading into a module whose own is ``want`` ("" if nothing):
    the first missing and unexpected keys and the shape mismatches, on one line."""

    def first(names: list[str]) -> str:
        more = f", … {len(names) - shown} more" if len(names) > shown else ""
        return ", ".join(names[:shown]) + more

    missing = [k for k in want if k not in have]
    unexpected = [k for k in have if k not in want]
    shapes = [f"{k} file {tuple(have[k].shape)} vs model {tuple(want[k].shape)}" for k in want
              if k in have and tuple(have[k].shape) != tuple(want[k].shape)]
    parts = [f"{len(missing)} missing key(s): {first(missing)}" if missing else "",
             f"{len(unexpected)} unexpected key(s): {first(unexpected)}" if unexpected else "",
             f"{len(shapes)} shape mismatch(es): {first(shapes)}" if shapes else ""]
    return "; ".join(p for p in parts if p)


@dataclass
class LoadedClassifier:
    """A classifier with its metadata."""

    model: GAPClassifier
    config: ClassifierConfig
    info: dict[str, Any]
    path: Path

    @property
    def classes(self) -> list[str]:
        return list(self.info["classes"])


def load_classifier(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> LoadedClassifier:
    """Rebuild a classifier from a ``*.safetensors`` written by :func:`save_module`."""
    meta = read_metadata(path)
    if meta["kind"] not in ("classifier", "oracle"):
        raise WeightsError(f"{path} holds a '{meta['kind']}', not a classifier")
    if meta["config"].get("arch") == "imported":  # a user's network (cfe import-model)
        from cfe_cli.models.importing import load_imported

        return load_imported(Path(path), meta, device)  # type: ignore[no-any-return]
    try:
        config = ClassifierConfig.from_dict(meta["config"])
        model = GAPClassifier(config)
    except (TypeError, ValueError) as e:
        raise WeightsError(f"bad classifier config in {path}: {e}") from None
    load_state(path, model)
    model.eval().requires_grad_(False).to(device)
    return LoadedClassifier(model, config, meta["info"], Path(path))


def weights_roots() -> list[Path]:
    """Folders searched for ``--model NAME``: ``$CFE_WEIGHTS_DIR``, ./weights, the repo's weights/,
    and the user's cache ``~/.cache/cfe/weights`` (``$XDG_CACHE_HOME``), where models that may not be
    redistributed (CelebA) are trained by ``scripts/train_all.sh``."""
    roots = []
    if os.environ.get("CFE_WEIGHTS_DIR"):
        roots.append(Path(os.environ["CFE_WEIGHTS_DIR"]).expanduser())
    roots.append(Path.cwd() / "weights")
    roots.append(Path(__file__).resolve().parents[2] / "weights")
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    roots.append(Path(cache) / "cfe" / "weights")
    seen: list[Path] = []
    for r in roots:
        r = r.resolve()
        if r not in seen:
            seen.append(r)
    return seen


def resolve_model(name_or_path: str | os.PathLike[str]) -> Path:
    """``--model NAME`` -> ``weights/NAME``; ``--model PATH`` -> that folder.

    Raises:
        WeightsError: no such model, listing the ones that exist.
    """
    p = Path(name_or_path).expanduser()
    if p.is_dir() and (p / "classifier.safetensors").is_file():
        return p
    if p.is_file() and p.suffix == ".safetensors":
        return p.parent
    for root in weights_roots():
        cand = root / str(name_or_path)
        if (cand / "classifier.safetensors").is_file():
            return cand
    names = sorted({m.name for r in weights_roots() if r.is_dir() for m in r.iterdir()
                    if (m / "classifier.safetensors").is_file()})
    recipe = next((r for r in list_recipes() if r["name"] == str(name_or_path)), None)
    if recipe is not None:
        raise WeightsError(f"model '{recipe['name']}' is not installed: it cannot ship ({recipe['why_not_shipped']}); "
                           f"build it with: {recipe['train']}")
    known = f"; known models: {', '.join(names)}" if names else ""
    raise WeightsError(f"model '{name_or_path}' not found (no classifier.safetensors){known}")


def describe_model(folder: Path) -> dict[str, Any]:
    """One ``cfe models`` record for a model folder."""
    meta = read_metadata(folder / "classifier.safetensors")
    info, cfg = meta["info"], meta["config"]
    gens = [k for k in GENERATOR_KINDS if (folder / f"{k}.safetensors").is_file()]
    return {
        "name": folder.name,
        "path": str(folder),
        "dataset": info.get("dataset"),
        "classes": info.get("classes"),
        "resolution": cfg.get("resolution"),
        "channels": cfg.get("in_channels"),
        "arch": cfg.get("arch"),
        "test_accuracy": info.get("test_accuracy"),
        "imported": bool(info.get("imported")),
        "mirror": info.get("mirror", True),
        "generators": gens,
        "oracle": (folder / "oracle.safetensors").is_file(),
        "installed": True,
    }


def list_recipes() -> list[dict[str, Any]]:
    """Models cfe can build but may not ship (CelebA), with what they measured when trained.

    Each record has ``installed: False``, ``train`` (the command that builds it), ``card`` and
    ``why_not_shipped``; :func:`list_models` shows one until a trained copy is found.
    """
    import json
    from importlib import resources

    doc = json.loads(resources.files("cfe_cli").joinpath("assets/recipes.json").read_text())
    return [{**r, "path": None, "oracle": False, "installed": False} for r in doc["recipes"]]


def list_models() -> list[dict[str, Any]]:
    """Every model folder found in :func:`weights_roots` (first root wins on name clashes)."""
    found: dict[str, dict[str, Any]] = {}
    for root in weights_roots():
        if not root.is_dir():
            continue
        for folder in sorted(root.iterdir()):
            if folder.name in found or not (folder / "classifier.safetensors").is_file():
                continue
            try:
                found[folder.name] = describe_model(folder)
            except WeightsError as e:
                found[folder.name] = {"name": folder.name, "path": str(folder), "error": str(e)}
    for r in list_recipes():  # buildable, not shippable: listed until trained here
        found.setdefault(r["name"], r)
    return list(found.values())


def _load_generator(folder: str | os.PathLike[str], kind: str, device: str | torch.device,
                    file: str | os.PathLike[str] | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Load a generator (``mirror`` decoder, ``vae`` or ``cvae``) of a model folder, or from ``file``."""
    from cfe_cli.models.generators import CondVAE, CondVAEConfig, ConvVAE, DecoderConfig, MirrorDecoder, VAEConfig

    builders = {"mirror": (MirrorDecoder, DecoderConfig), "vae": (ConvVAE, VAEConfig),
                "cvae": (CondVAE, CondVAEConfig)}
    if kind not in builders:
        raise WeightsError(f"unknown generator kind '{kind}'; known: {', '.join(builders)}")
    path = Path(file) if file is not None else Path(folder) / f"{kind}.safetensors"
    if not path.is_file():
        if file is not None:
            raise WeightsError(f"generator file not found: {path}")
        raise WeightsError(f"model '{Path(folder).name}' has no {kind} generator ({path} missing); "
                           f"train one with: cfe train-gen --model {Path(folder).name} --method {kind}")
    meta = read_metadata(path)
    if meta["kind"] != kind:
        raise WeightsError(f"{path} holds a '{meta['kind']}', not a {kind} generator")
    module_cls, config_cls = builders[kind]
    try:
        module = module_cls(config_cls.from_dict(meta["config"]))
    except (TypeError, ValueError) as e:
        raise WeightsError(f"bad {kind} config in {path}: {e}") from None
    load_state(path, module)
    return module.eval().requires_grad_(False).to(device), meta["info"]


def load_decoder(folder: str | os.PathLike[str], kind: str = "mirror", device: str | torch.device = "cpu",
                 file: str | os.PathLike[str] | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Load a model folder's Mirror-CFE decoder (``<kind>.safetensors``), or ``file``."""
    return _load_generator(folder, kind, device, file)


def load_vae(folder: str | os.PathLike[str], device: str | torch.device = "cpu",
             kind: str = "vae") -> tuple[nn.Module, dict[str, Any]]:
    """Load a model folder's conv VAE (``vae.safetensors``) for the latent methods, or with
    ``kind="cvae"`` its attribute-conditional VAE (``cvae.safetensors``, GCI on faces)."""
    return _load_generator(folder, kind, device)


def save_probes(path: str | os.PathLike[str], probes: Any, info: dict[str, Any]) -> Path:
    """Write fitted attribution probes (``cfe_cli.attributions.Probes``) as safetensors."""

    class _Holder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            for k, v in probes.state().items():
                self.register_buffer(k, v)

    return save_module(path, _Holder(), kind="probes",
                       config={"names": probes.names, "accuracy": probes.accuracy}, info=info)


def load_probes(folder: str | os.PathLike[str]) -> Any:
    """Load ``probes.safetensors`` of a model folder (None if absent)."""
    from safetensors.torch import load_file

    from cfe_cli.attributions import Probes

    path = Path(folder) / "probes.safetensors"
    if not path.is_file():
        return None
    meta = read_metadata(path)
    t = load_file(str(path))
    return Probes(list(meta["config"]["names"]), t["coef"], t["intercept"], t["thresholds"],
                  list(meta["config"]["accuracy"]))
