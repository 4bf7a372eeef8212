"""Class probabilities for the same INPUT forms ``explain`` takes (``cfe predict``).

A user checks what the classifier says about an image before asking why: this module
resolves files, folders and ``DATASET:SPLIT:INDEX`` references with
:func:`cfe_cli.inputs.resolve_inputs`, runs the classifier on the good ones and
returns one record per input. A bad input never stops the others: it becomes a failure.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from cfe_cli.errors import InputError
from cfe_cli.inputs import resolve_inputs
from cfe_cli.models.classifiers import predict_probs
from cfe_cli.models.weights import load_classifier, resolve_model
from cfe_cli.runtime import resolve_device


def predict_inputs(
    inputs: list[str],
    *,
    model: str | os.PathLike[str],
    top: int = 3,
    device: str = "auto",
    data_dir: str | os.PathLike[str] | None = None,
    label: str | None = None,
    strict: bool = False,
) -> dict[str, Any]:
    """The classifier's prediction and top-``top`` classes for every input.

    Args:
        inputs: image files, folders (recursive) or ``DATASET:SPLIT:INDEX`` references, as for
            :func:`cfe_cli.api.explain`.
        model: model name (``weights/<name>``) or folder.
        top: how many of the most probable classes to list per input (at most the number of classes).
        device: ``auto``, ``cpu`` or ``cuda``.
        data_dir: where datasets live (for references); default ``$CFE_DATA_DIR``.
        label: ground-truth class of file inputs (name or index), reported as ``gt``.
        strict: refuse images of another size instead of resizing them.

    Returns:
        ``{"model", "classes", "results", "failures", "warnings"}``. Each result is
        ``{"input", "prediction", "confidence", "top": [{"class", "probability"}, ...], "gt"}``
        (``gt`` is None when unknown); each failure is ``{"input", "error"}``.

    Raises:
        InputError: ``top`` below 1 or no inputs given; the model's own errors (WeightsError, ...).

    Example:
        >>> r = predict_inputs(["examples/mnist_8.png"], model="mnist", top=2)   # doctest: +SKIP
        >>> r["results"][0]["prediction"], r["results"][0]["top"][1]["class"]    # doctest: +SKIP
        ('8', '3')
    """
    if top < 1:
        raise InputError(f"--top must be at least 1, got {top}")
    if not inputs:
        raise InputError("no inputs given")
    clf = load_classifier(resolve_model(model) / "classifier.safetensors", resolve_device(device))
    classes = clf.classes
    items = resolve_inputs(list(inputs), channels=clf.config.in_channels, resolution=clf.config.resolution,
                           data_dir=data_dir, classes=classes, label=label, strict=strict)
    good = [it for it in items if it.error is None]
    results: list[dict[str, Any]] = []
    if good:
        x = torch.stack([it.image for it in good])  # type: ignore[misc]  # (B, C, H, W)
        probs = predict_probs(clf.model, x)  # (B, K)
        p_top, i_top = probs.topk(min(top, len(classes)), dim=1)  # (B, top) each
        for it, ps, ix in zip(good, p_top.tolist(), i_top.tolist(), strict=True):
            results.append({
                "input": it.input, "prediction": classes[ix[0]], "confidence": round(ps[0], 5),
                "top": [{"class": classes[i], "probability": round(p, 5)} for p, i in zip(ps, ix, strict=True)],
                "gt": None if it.gt is None else classes[it.gt],
            })
    return {"model": str(clf.path.parent), "classes": classes, "results": results,
            "failures": [{"input": it.input, "error": it.error} for it in items if it.error],
            "warnings": [it.warning for it in items if it.warning]}
