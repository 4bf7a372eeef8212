"""Resolve what the user passed as INPUT: image files, folders (recursive) and
``DATASET:SPLIT:INDEX`` references, each into an image tensor sized for a model.

A bad input never stops the others: it becomes an :class:`Item` with ``error`` set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from cfe_cli.data import (
    BUILTIN,
    IMAGE_SUFFIXES,
    Dataset,
    closest_name,
    image_tensor,
    load_dataset,
    open_image,
    parse_reference,
)
from cfe_cli.errors import CfeError, InputError


@dataclass
class Item:
    """One input: its image ``(C, H, W)`` (None on error), name prefix and ground truth."""

    input: str
    prefix: str
    image: torch.Tensor | None = None
    gt: int | None = None
    error: str | None = None
    warning: str | None = None


def class_index(value: str | int, classes: list[str], what: str = "class") -> int:
    """A class given by name (case-insensitive) or index -> its index.

    Raises:
        InputError: unknown name (with the closest suggestion) or index out of range.
    """
    text = str(value).strip()
    if text in classes:
        return classes.index(text)
    low = [c.lower() for c in classes]
    if text.lower() in low:
        return low.index(text.lower())
    if text.lstrip("-").isdigit():
        i = int(text)
        if 0 <= i < len(classes):
            return i
        raise InputError(f"{what} index {i} out of range 0..{len(classes) - 1}")
    close = closest_name(text, classes)
    hint = f" (did you mean '{close}'?)" if close else ""
    raise InputError(f"unknown {what} '{text}'{hint}; classes: {', '.join(classes)}")


def _fit_image(path: Path, channels: int, resolution: int, strict: bool) -> tuple[torch.Tensor, str | None]:
    img = open_image(path)  # decoded once; resized from the same decoded image when needed
    x = image_tensor(img)
    warning = None
    if x.shape[0] != channels:
        if channels == 1 and x.shape[0] == 3:
            if not torch.allclose(x[0], x[1], atol=1 / 255) or not torch.allclose(x[0], x[2], atol=1 / 255):
                raise InputError(f"{path} is a colour image but the model takes grayscale images")
            x = x[:1]
        else:  # grey image for an RGB model: repeat the channel
            x = x.expand(3, -1, -1).clone()
            warning = f"{path.name}: grayscale image repeated to RGB"
    if tuple(x.shape[1:]) != (resolution, resolution):
        if strict:
            raise InputError(f"{path} is {x.shape[2]}x{x.shape[1]}, the model takes {resolution}x{resolution} "
                             "(--strict)")
        warning = f"{path.name}: resized from {x.shape[2]}x{x.shape[1]} to {resolution}x{resolution}"
        x = image_tensor(img, channels=channels, size=resolution)
    return x, warning


def _check_dataset_name(dataset: str, raw: str) -> None:
    """An unknown DATASET in DATASET:SPLIT:INDEX: say the folder form that works for this very input."""
    base = dataset.split(":", 1)[0]
    if dataset.startswith("folder:") or base in BUILTIN:
        return
    close = closest_name(base, list(BUILTIN))
    hint = f" (did you mean {close}?)" if close else ""
    raise InputError(f"unknown dataset '{base}'{hint}; known: {', '.join(BUILTIN)}; for your own image folder write "
                     f"folder:{raw} (the path absolute, or relative to --data-dir or the current folder)")


def resolve_inputs(inputs: list[str], *, channels: int, resolution: int, data_dir: str | os.PathLike[str] | None,
                   classes: list[str], label: str | None = None, strict: bool = False) -> list[Item]:
    """Expand INPUT arguments into items, one per image.

    Args:
        inputs: files, folders (searched recursively) or ``DATASET:SPLIT:INDEX``.
        channels, resolution: what the model takes.
        data_dir: where datasets live (for references).
        classes: the model's class names (for ``label`` and dataset labels).
        label: ground truth for file inputs (class name or index).
        strict: refuse images of another size instead of resizing them.
    """
    gt_label = class_index(label, classes, "label") if label is not None else None
    cache: dict[tuple[str, str], Dataset] = {}
    items: list[Item] = []
    for raw in inputs:
        ref = parse_reference(raw)
        path = Path(raw).expanduser()
        if ref is not None and not path.exists():
            item = Item(raw, f"no{ref.index}")
            try:
                _check_dataset_name(ref.dataset, raw)
                key = (ref.dataset, ref.split)
                if key not in cache:
                    cache[key] = load_dataset(ref.dataset, ref.split, root=data_dir, size=resolution)
                ds = cache[key]
                if not 0 <= ref.index < len(ds):
                    raise InputError(f"{raw}: index {ref.index} out of range (split has {len(ds)} images)")
                img = ds.images[ref.index]
                if img.shape[0] != channels or img.shape[-1] != resolution:
                    raise InputError(f"{raw}: {ref.dataset} images are {img.shape[0]}x{img.shape[-1]}², "
                                     f"the model takes {channels}x{resolution}²")
                item.image = img
                if ds.classes == classes:
                    item.gt = int(ds.labels[ref.index])
            except CfeError as e:
                item.error = str(e)
            items.append(item)
            continue
        if raw.startswith("folder:") and not path.exists():
            items.append(Item(raw, "folder", error=f"{raw}: an input from an image folder is folder:PATH:SPLIT:INDEX "
                              f"(e.g. {raw}:test:0); to explain every image of a folder pass the folder itself"))
            continue
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                items.append(Item(raw, path.name, error=f"no images found in folder {path}"))
            targets = files
        else:
            targets = [path]
        for f in targets:
            item = Item(str(f), f.stem, gt=gt_label)
            try:
                item.image, item.warning = _fit_image(f, channels, resolution, strict)
            except CfeError as e:
                item.error = str(e)
            items.append(item)
    return items
