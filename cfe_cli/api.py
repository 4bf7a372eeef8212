"""The notebook-facing API: one function per verb. The CLI is a thin layer over these.

Every function takes plain arguments (or tensors), returns data, and never prints;
errors are :class:`cfe_cli.errors.CfeError` subclasses. The work is done in
:mod:`cfe_cli.explainer` (one classifier + one registered method), :mod:`cfe_cli.outputs`
(explain's files), :mod:`cfe_cli.evaluation` (the metrics protocol), :mod:`cfe_cli.report`
(the HTML gallery of runs) and
:mod:`cfe_cli.training` (train-clf / train-gen jobs).

Example:
    >>> from cfe_cli import api                                      # doctest: +SKIP
    >>> r = api.explain(["examples/mnist_8.png"], model="mnist", target="3", out="out")  # doctest: +SKIP
    >>> r["results"][0]["valid"], r["results"][0]["first_cfe_k"]      # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Any

import torch

from cfe_cli.data import dataset_summary, load_dataset
from cfe_cli.evaluation import evaluate
from cfe_cli.explainer import Explainer
from cfe_cli.methods import available_methods, get_method
from cfe_cli.models.classifiers import predict_probs
from cfe_cli.models.importing import import_model
from cfe_cli.models.weights import LoadedClassifier, list_models, load_classifier, resolve_model
from cfe_cli.outputs import explain
from cfe_cli.predicting import predict_inputs
from cfe_cli.report import write_report as report
from cfe_cli.runtime import resolve_device
from cfe_cli.shards import merge
from cfe_cli.training.classifier import train_clf
from cfe_cli.training.generators import train_gen

__all__ = [
    "Explainer", "datasets", "evaluate", "explain", "import_model", "load_dataset", "load_model", "merge", "methods",
    "models", "predict", "predict_inputs", "report", "resolve_model", "train_clf", "train_gen",
]  # fmt: skip


def datasets(data_dir: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """What is found under the data directory, with counts per split."""
    return dataset_summary(data_dir)


def models() -> list[dict[str, Any]]:
    """Every model folder found (name, dataset, classes, resolution, accuracy, generators)."""
    return list_models()


def methods() -> list[dict[str, Any]]:
    """Every registered method: name, paper (first docstring line), options with defaults and flags."""
    from dataclasses import MISSING, fields

    out = []
    for name in available_methods():
        cls = get_method(name)
        doc = " ".join((__import__(cls.__module__, fromlist=["_"]).__doc__ or "").strip().split("\n\n")[0].split())
        opts = [{"name": f.name, "flag": f.metadata.get("flag"), "default": None if f.default is MISSING else f.default,
                 "help": f.metadata.get("help", "")} for f in fields(cls.Config)]
        out.append({"name": name, "paper": doc, "second_image": cls.second_name,
                    "validity_rule": cls.validity_rule, "uses_threshold": cls.uses_threshold, "options": opts})
    return out


def load_model(name_or_path: str | os.PathLike[str], device: str = "cpu") -> LoadedClassifier:
    """Load a model's classifier by name (``weights/<name>``) or folder path."""
    folder = resolve_model(name_or_path)
    return load_classifier(folder / "classifier.safetensors", resolve_device(device))


def predict(model: LoadedClassifier, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Softmax probabilities ``(B, K)`` of images ``(B, C, H, W)`` in [0, 1]."""
    if not len(x):
        return torch.empty(0, len(model.classes))
    return predict_probs(model.model, x, batch_size)
