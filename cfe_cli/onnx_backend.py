"""Mirror-CFE's decoder and classifier passes on ONNX Runtime's CPU execution provider (optional).

``pip install 'cfe[onnx]'`` (onnxruntime; onnx and onnxscript for the export). Each network is
exported once per weights (``torch.onnx.export``, dynamic batch) into the cache
(``$CFE_CACHE_DIR/onnx`` or ``~/.cache/cfe/onnx``, one folder per hash of the weights, the
input shapes and the torch version) and then run by an ``InferenceSession`` with as many
threads as torch has (not spinning between calls: torch's own operations run in between). The
outputs agree with torch's to ~1e-5: on 512 MNIST test images every 1st-CFE index equals the
torch float32 path's. Speed on a 2-core AVX-512 EPYC: 1.13x torch float32 on one thread, about
equal on two (docs/results.md, Speed). float32 on the CPU only.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.util
import io
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from cfe_cli.errors import InputError

INSTALL = "pip install 'cfe[onnx]'"


def available() -> bool:
    """Whether onnxruntime (run) and onnxscript (export) are importable."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnxscript", "onnx"))


def require() -> None:
    if not available():
        raise InputError(f"--backend onnx needs ONNX Runtime: {INSTALL}")


def cache_dir() -> Path:
    root = os.environ.get("CFE_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "cfe") / "onnx"


def _key(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> str:
    """A hash of the weights, the input shapes past the batch dimension and the torch version."""
    h = hashlib.sha256(torch.__version__.encode())
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    for t in inputs:
        h.update(str((tuple(t.shape[1:]), str(t.dtype))).encode())
    return h.hexdigest()[:24]


@contextlib.contextmanager
def _quiet() -> Any:
    """The exporter prints its progress and warns about every traced branch; none of it is for our users."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels, strict=True):
            lg.setLevel(lv)


def export(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], names: list[str]) -> Path:
    """``module(*inputs)`` as an ONNX file with a dynamic batch dimension, from the cache if there."""
    folder = cache_dir() / _key(module, inputs)
    path = folder / "model.onnx"
    if path.is_file():
        return path
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".export-"))
    except OSError as e:
        raise InputError(f"cannot write the ONNX cache {folder.parent} ({e.strerror or e}); set CFE_CACHE_DIR "
                         "to a writable folder") from None
    try:
        net = copy.deepcopy(module).to(memory_format=torch.contiguous_format).eval()  # type: ignore[call-overload]
        batch = torch.export.Dim("batch", min=1, max=1 << 20)
        shapes: tuple[Any, ...] = tuple({0: batch} for _ in inputs)
        if isinstance(net, _FlatDecoder):  # forward(*flat): one entry, for the varargs
            shapes = (shapes,)
        with torch.inference_mode(False), _quiet(), torch.no_grad():  # export cannot trace inference tensors
            example = tuple(t.clone().contiguous() for t in inputs)
            try:
                torch.onnx.export(net, example, str(tmp / "model.onnx"), input_names=names, dynamic_shapes=shapes,
                                  opset_version=18, dynamo=True)
            except Exception as e:  # the exporter raises many kinds; the user needs one line and a way out
                first = str(e).strip().splitlines()[0] if str(e).strip() else ""
                raise InputError(f"could not export {type(module).__name__} to ONNX ({type(e).__name__}: "
                                 f"{first[:200]}); use --backend torch") from None
        try:
            os.replace(tmp, folder)  # atomic: another process may have written the same folder meanwhile
        except OSError:
            if not path.is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


class OrtFunction:
    """A network exported to ONNX and run by ONNX Runtime: called with torch tensors like the module
    (``skips`` as a list where the decoder takes one), returns a torch tensor."""

    def __init__(self, module: torch.nn.Module, kind: str) -> None:
        self.module, self.kind, self.session = module, kind, None

    def _start(self, flat: tuple[torch.Tensor, ...]) -> None:
        import onnxruntime as ort

        names = [f"in{i}" for i in range(len(flat))]
        target = self.module if self.kind == "classifier" else _FlatDecoder(self.module, len(flat))
        path = export(target, flat, names)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # torch's threads run between calls
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]

    def __call__(self, x: torch.Tensor, skips: list[torch.Tensor] | None = None,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
        flat = (x,) if skips is None else (x, *skips, mask)
        flat = tuple(t.detach().float().contiguous() for t in flat)  # type: ignore[union-attr]
        if flat[0].shape[0] == 0:  # the export's batch dimension starts at 1: learn the output's shape
            one = [torch.zeros((1, *t.shape[1:])) for t in flat]
            return self(one[0], one[1:-1] if skips is not None else None, one[-1] if skips is not None else None)[:0]
        if self.session is None:
            self._start(flat)
        out = self.session.run(None, dict(zip(self.names, (t.numpy() for t in flat), strict=True)))  # type: ignore[union-attr]
        return torch.from_numpy(out[0])


class _FlatDecoder(torch.nn.Module):
    """The skip decoder's ``(f, [skips...], mask)`` as ``(f, skip_1, ..., skip_n, mask)`` (ONNX takes no lists)."""

    def __init__(self, decoder: torch.nn.Module, n_inputs: int) -> None:
        super().__init__()
        self.decoder, self.n = decoder, n_inputs

    def forward(self, *flat: torch.Tensor) -> torch.Tensor:
        if self.n == 1:
            return self.decoder(flat[0])
        return self.decoder(flat[0], list(flat[1:-1]), flat[-1])
