"""The explainer: one classifier, loaded once, and one registered method run on batches.

Shared by ``explain``, ``animate`` and ``evaluate``.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from cfe_cli.errors import InputError
from cfe_cli.methods import Method, Setup, get_method
from cfe_cli.models.loading import channels_last, load_any_classifier
from cfe_cli.models.weights import LoadedClassifier, resolve_model
from cfe_cli.precision import resolve as resolve_precision
from cfe_cli.results import CounterfactualResult
from cfe_cli.runtime import resolve_device


class Explainer:
    """Runs one method on batches of images.

    Args:
        model: model name or folder; method: a registered method name (``cfe methods``);
        options: the method's config fields (``lr``, ``max_steps``, ``lam``, ``eps`` …); a field
            the method does not have is an InputError naming the methods that take it;
        threshold: target probability the optimisation methods stop at;
        precision: ``"auto"`` (default: bf16 where the device runs it natively, else fp32;
            :mod:`cfe_cli.precision`), ``"fp32"`` (exact) or ``"bf16"`` — Mirror-CFE decodes in
            bfloat16, the optimisation methods autocast their forward passes to bfloat16; every
            reported verdict is the classifier's float32 prediction on the returned image.
            ``self.precision`` is the one used, ``self.precision_info`` says why;
        compile: Mirror-CFE only: ``torch.compile`` the decoder and classifier (one
            compilation of ~40-60 s on CPU, then faster passes, same results);
        classifier, weights, decoder: a user's own classifier and its Mirror-CFE decoder.

    Example:
        >>> ex = Explainer("mnist", "pgd", eps=0.2)     # doctest: +SKIP
        >>> res = ex.run(x)                              # CounterfactualResult  # doctest: +SKIP
    """

    def __init__(self, model: str | os.PathLike[str] | LoadedClassifier, method: str = "mirror", *,
                 device: str = "auto", threshold: float = 0.75, seed: int = 0, classifier: str | None = None,
                 weights: str | os.PathLike[str] | None = None, decoder: str | os.PathLike[str] | None = None,
                 precision: str = "auto", compile: bool = False, folder: os.PathLike[str] | None = None,
                 **options: Any) -> None:
        cls = get_method(method)
        config = cls.make_config(options)
        if compile and not cls.supports_compile:
            raise InputError("--compile is for --method mirror (the optimisation methods take --precision bf16)")
        self.method = method
        self.compiled = compile
        self.threshold = threshold
        self.seed = seed
        self.config = config
        if isinstance(model, LoadedClassifier):  # evaluate shares one loaded classifier between methods
            self.clf = model
            self.folder = resolve_model(folder) if folder is not None else model.path.parent
            self.device = next(model.model.parameters()).device
        else:
            self.device = resolve_device(device)
            self.folder = resolve_model(model)
            self.clf = load_any_classifier(self.folder, self.device, classifier, weights)
            channels_last(self.clf.model)
        self.classes = self.clf.classes
        if getattr(config, "backend", "torch") == "onnx" and precision == "auto":
            precision = "fp32"  # ONNX Runtime runs the networks in float32
        self.precision_info = resolve_precision(precision, self.device)
        self.precision = precision = self.precision_info.name
        setup = Setup(self.folder, self.clf, self.device, threshold=threshold, precision=precision,
                      compile=compile, seed=seed, decoder=decoder)
        self.impl: Method = cls.load(setup, config)
        self.probes = self.impl.probes

    @property
    def mirror(self) -> Any:
        """Mirror-CFE's :class:`~cfe_cli.methods.mirror.MirrorCFE` (its search, decoder and path)."""
        if self.method != "mirror":
            raise AttributeError(f"the {self.method} explainer has no Mirror-CFE")
        return self.impl.cfe  # type: ignore[attr-defined]

    @property
    def uses_threshold(self) -> bool:
        return self.impl.uses_threshold

    def run(self, x: torch.Tensor, target: torch.Tensor | None = None, *, video_frames: int = 0,
            probs: torch.Tensor | None = None) -> CounterfactualResult:
        """Explain a batch ``x (B, C, H, W)`` on the explainer's device (``probs``: known predictions)."""
        return self.impl.explain(x, target, probs=probs, frames=video_frames)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities ``(B, K)`` of the explained classifier."""
        with torch.inference_mode():
            return self.clf.model(x).softmax(1)
