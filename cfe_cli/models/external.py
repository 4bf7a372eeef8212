"""Users' own classifiers: ``module:factory`` + safetensors weights, or a TorchScript file.

cfe calls every classifier on images in [0, 1], ``(B, C, H, W)``; a user's model does its
own normalisation. The latent methods (attack, gci, cecas, pgd) need nothing more than
``logits = model(x)``. Mirror-CFE needs the structure ``logits = W · GAP(f(x)) + b``: the last
feature map, global average pooling, then ONE linear layer. :func:`wrap_classifier` finds that
structure and exposes it as ``features(x)`` / ``classify_features(f)`` / ``head``, the interface
of :class:`cfe_cli.models.classifiers.GAPClassifier`:

* a Python module: the last ``nn.Linear`` is taken as the head; a forward pass with hooks
  finds the last module whose 4-D output ``f`` satisfies ``GAP(f) == head input`` and
  ``head(GAP(f)) == logits`` (checked numerically on a probe batch);
* a TorchScript module: it must export ``features(x)`` and hold the head as ``head``, ``fc``
  or ``classifier``; the same identities are checked.

Nothing is unpickled: Python factories get their weights from safetensors, and TorchScript
archives are read by ``torch.jit.load`` (code and tensors only, no pickled Python objects).
"""

from __future__ import annotations

import hashlib
import importlib
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cfe_cli.errors import InputError, WeightsError

HEAD_NAMES = ("head", "fc", "classifier", "linear")


def load_torchscript(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> Any:
    """``torch.jit.load`` without torch ≥ 2.10's DeprecationWarning for it.

    TorchScript is deprecated in favour of ``torch.export`` (cfe loads ``.pt2`` archives too), but
    the TorchScript files users already have (their classifiers, FID's Inception-v3) must keep
    loading; the warning would only tell them what they cannot change. Only that one message is
    ignored, and only around this call.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.load` is deprecated", category=DeprecationWarning)
        return torch.jit.load(str(path), map_location=map_location)


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the feature map is captured."""


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _is_file_spec(target: str) -> bool:
    """``path/to/mynet.py`` (a file) rather than ``package.module`` (a module name)."""
    return target.endswith(".py") or "/" in target or os.sep in target


def module_from_file(path: str | os.PathLike[str]) -> Any:
    """Import a Python file by its path, without touching ``sys.path``.

    The module is registered under a private name (``cfe_user_<stem>_<hash of the path>``), so a
    user's ``mynet.py`` never shadows, or is shadowed by, another module called ``mynet``.
    """
    import importlib.util

    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise InputError(f"classifier file not found: {path} (give --classifier PATH/TO/FILE.py:factory)")
    name = f"cfe_user_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:10]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise InputError(f"cannot import {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and typing look their module up while it runs
    try:
        spec.loader.exec_module(module)
    except ImportError as e:
        del sys.modules[name]
        raise InputError(f"{path.name} imports '{e.name or e}', which cannot be imported: install it or put its "
                         f"folder on PYTHONPATH (PYTHONPATH=DIR cfe ...)") from None
    except Exception as e:  # noqa: BLE001 - the user's code may raise anything
        del sys.modules[name]
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise InputError(f"importing {path} failed: {type(e).__name__}: {first}") from None
    return module


def _import_module(target: str) -> Any:
    """A module by name; failing that, ``./<name>.py`` by path (sys.path is never edited)."""
    try:
        return importlib.import_module(target)
    except ImportError as e:
        if e.name not in (target, target.split(".")[0]):  # the module exists but imports something missing
            raise InputError(f"module '{target}' imports '{e.name}', which cannot be imported: install it or put "
                             f"its folder on PYTHONPATH (PYTHONPATH=DIR cfe ...)") from None
        local = Path.cwd() / (target.replace(".", "/") + ".py")
        if local.is_file():
            return module_from_file(local)
        raise InputError(f"cannot import module '{target}' for --classifier (No module named '{target}'): pass "
                         f"its file, --classifier path/to/{target.split('.')[-1]}.py:FACTORY, or put its folder on "
                         "PYTHONPATH") from None


def _import_factory(spec: str) -> Any:
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise InputError("--classifier takes path/to/file.py:factory, module:factory or a TorchScript / "
                         f"torch.export file (.pt, .pt2); got '{spec}'")
    module = module_from_file(target) if _is_file_spec(target) else _import_module(target)
    factory = module
    for part in attr.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise InputError(f"module '{target}' has no '{attr}'")
    if not callable(factory):
        raise InputError(f"'{spec}' is not callable")
    return factory


def load_user_model(spec: str, weights: str | os.PathLike[str] | None = None,
                    device: str | torch.device = "cpu") -> nn.Module:
    """Build a user's classifier: ``module:factory`` (+ safetensors ``weights``) or a TorchScript file."""
    from cfe_cli.models.weights import load_state

    path = Path(spec)
    if path.suffix == ".pt2":  # torch.export archive: a graph, usable by the latent methods
        if not path.is_file():
            raise InputError(f"exported program not found: {path}")
        try:
            model = torch.export.load(str(path)).module()
        except Exception as e:  # noqa: BLE001 - any failure to read the archive
            raise WeightsError(f"{path} is not a torch.export archive ({type(e).__name__})") from None
        if weights is not None:
            raise InputError("--weights is for --classifier module:factory; an exported program holds its weights")
        return _freeze(model).to(device)
    if path.suffix in (".pt", ".pth", ".ts", ".torchscript", ".jit") or path.is_file():
        if not path.is_file():
            raise InputError(f"TorchScript file not found: {path}")
        try:
            model = load_torchscript(path, map_location="cpu")
        except (RuntimeError, ValueError, OSError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise WeightsError(f"{path} is not a TorchScript archive ({first}); "
                               "plain pickled checkpoints are never loaded: save weights as safetensors "
                               "and pass --classifier module:factory --weights FILE") from None
        if weights is not None:
            raise InputError("--weights is for --classifier module:factory; a TorchScript file holds its weights")
    else:
        factory = _import_factory(spec)
        try:
            model = factory()
        except Exception as e:  # noqa: BLE001 - the user's code may raise anything
            raise InputError(f"--classifier {spec}() failed: {type(e).__name__}: {e}") from None
        if not isinstance(model, nn.Module):
            raise InputError(f"--classifier {spec}() returned {type(model).__name__}, not a torch.nn.Module")
        if weights is None:
            raise InputError("--classifier module:factory needs --weights FILE.safetensors")
        wpath = Path(weights)
        if wpath.suffix != ".safetensors":
            raise WeightsError(f"--weights must be a .safetensors file (never unpickled); got {wpath.name}")
        if not wpath.is_file():
            raise WeightsError(f"weights file not found: {wpath}")
        load_state(wpath, model)
    return _freeze(model).to(device)


def _freeze(model: nn.Module) -> nn.Module:
    try:
        model.eval()
    except NotImplementedError:  # torch.export modules are already in inference form
        pass
    for p in model.parameters():  # (ScriptModules have no requires_grad_)
        p.requires_grad_(False)
    return model


def _find_head(model: nn.Module) -> tuple[str, nn.Module] | None:
    if isinstance(model, torch.jit.ScriptModule):
        for name in HEAD_NAMES:
            sub = getattr(model, name, None)
            if sub is not None and hasattr(sub, "weight") and sub.weight.dim() == 2:
                return name, sub
        return None
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


class WrappedClassifier(nn.Module):
    """A user's classifier seen through the GAPClassifier interface.

    ``forward(x)`` is the user's model unchanged. When ``mirror_problem`` is None, ``features(x)``
    returns the last feature map ``(B, C, h, w)`` and ``classify_features(f)`` equals
    ``head(GAP(f))``; otherwise ``mirror_problem`` says which part of the structure is missing.
    """

    def __init__(self, net: nn.Module, resolution: int, channels: int) -> None:
        super().__init__()
        self.net = net
        self.resolution, self.channels = resolution, channels
        self.head: nn.Module | None = None
        self._feature_module: nn.Module | None = None
        self._scripted = isinstance(net, torch.jit.ScriptModule)
        self.mirror_problem: str | None = None
        self.mirror_problem = self._inspect()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @property
    def feature_dim(self) -> int:
        assert self.head is not None
        return int(self.head.weight.shape[1])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if self.mirror_problem is not None:
            raise WeightsError(f"Mirror-CFE cannot use this classifier: {self.mirror_problem}")
        if self._scripted:
            return self.net.features(x)
        box: list[torch.Tensor] = []

        def grab(_m: nn.Module, _i: Any, out: torch.Tensor) -> None:
            box.append(out)
            raise _Stop

        assert self._feature_module is not None
        handle = self._feature_module.register_forward_hook(grab)
        try:
            self.net(x)
        except _Stop:
            pass
        finally:
            handle.remove()
        return box[0]

    def classify_features(self, f: torch.Tensor) -> torch.Tensor:
        assert self.head is not None
        return self.head(f.mean(dim=(2, 3)))

    def _probe(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(0)
        dev = next(iter(self.net.parameters()), torch.empty(0)).device
        return torch.rand(4, self.channels, self.resolution, self.resolution, generator=g).to(dev)

    @torch.no_grad()
    def _inspect(self) -> str | None:
        x = self._probe()
        try:
            logits = self.net(x)
        except Exception as e:  # noqa: BLE001
            raise InputError(f"the classifier fails on a {tuple(x.shape)} batch in [0, 1]: "
                             f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != len(x):
            raise InputError(f"the classifier must return logits (B, K); got "
                             f"{tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__}")
        found = _find_head(self.net)
        if found is None:
            if isinstance(self.net, torch.fx.GraphModule):
                return ("an exported program (.pt2) is a flat graph with no linear head module; for Mirror-CFE pass "
                        "file.py:factory with safetensors weights, or a TorchScript file exporting features()")
            where = (f"linear head named one of {', '.join(HEAD_NAMES)}" if self._scripted else "nn.Linear layer")
            return f"the model has no {where} to serve as the linear head"
        _, head = found
        W = head.weight
        if W.shape[0] != logits.shape[1]:
            return (f"the last linear layer maps to {W.shape[0]} outputs while the model returns "
                    f"{logits.shape[1]} logits")
        tol = 1e-4 * (1 + float(logits.abs().max()))
        if self._scripted:
            if not hasattr(self.net, "features"):
                return ("the TorchScript module exports no features(x) method: add one that returns the last "
                        "feature map, marked @torch.jit.export")
            f = self.net.features(x)
            if f.dim() != 4:
                return f"features(x) returns shape {tuple(f.shape)}, not a (B, C, h, w) feature map"
            if not torch.allclose(head(f.mean(dim=(2, 3))), logits, atol=tol):
                return "the logits differ from head(global average pool of features(x))"
            self.head = head
            return None
        # hooks: the head's input, and every 4-D output, cloned at the moment it is produced
        seen: list[tuple[nn.Module, torch.Tensor]] = []
        head_in: list[torch.Tensor] = []
        handles = [head.register_forward_pre_hook(lambda _m, inp: head_in.append(inp[0].detach().clone()))]
        for m in self.net.modules():
            if m is self.net or m is head:
                continue
            handles.append(m.register_forward_hook(
                lambda mod, _i, out: seen.append((mod, out.detach().clone()))
                if isinstance(out, torch.Tensor) and out.dim() == 4 else None))
        try:
            self.net(x)
        finally:
            for h in handles:
                h.remove()
        if len(head_in) != 1:
            return "the last linear layer is not applied exactly once per forward pass"
        v = head_in[0]
        if v.dim() != 2 or not torch.allclose(head(v), logits, atol=tol):
            return ("the logits are not the last linear layer's output (something follows the head, "
                    "or the head does not see a pooled (B, C) vector)")
        # the last spatial map (h·w > 1) whose mean is the head's input; a pooled 1×1 map only as a last resort
        cands = [(m, f) for m, f in seen if f.shape[1] == v.shape[1]
                 and torch.allclose(f.mean(dim=(2, 3)), v, atol=1e-5 * (1 + float(v.abs().max())))]
        cands.sort(key=lambda mf: mf[1].shape[2] * mf[1].shape[3] > 1)  # stable: spatial maps last
        for mod, f in reversed(cands):
            self._feature_module, self.head = mod, head
            # the capture must reproduce the map (no in-place op after the chosen module)
            if torch.allclose(self.features(x), f, atol=1e-5 * (1 + float(f.abs().max()))):
                return None
            self._feature_module = self.head = None
        return ("there is no global average pooling before the linear head: its input is not the spatial mean of "
                "any feature map (flatten + linear, or attention pooling, cannot be mirrored)")


def wrap_classifier(spec: str, weights: str | os.PathLike[str] | None, *, resolution: int, channels: int,
                    num_classes: int | None = None, device: str | torch.device = "cpu") -> WrappedClassifier:
    """Load and inspect a user's classifier (see the module docstring)."""
    net = load_user_model(spec, weights, "cpu")
    wrapped = WrappedClassifier(net, resolution, channels)
    if num_classes is not None:
        with torch.no_grad():
            k = wrapped(wrapped._probe()).shape[1]
        if k != num_classes:
            raise InputError(f"the classifier returns {k} logits but the data has {num_classes} classes")
    return _freeze(wrapped).to(device)
