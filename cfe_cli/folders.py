"""Image-folder datasets: ``folder:PATH``, your own PNG/JPEG images with one sub-folder per class.

Layouts (checked in this order)::

    ROOT/train/<class>/*.png    ROOT/val/<class>/…   ROOT/test/<class>/…    split layout: the folders are the splits
    ROOT/<class>/*.png                                                      single folder: split by cfe

A single folder is split deterministically: the files of every class, sorted by class then by path,
are numbered, and every 5th (i % 5 == 4) is ``test``, the rest ``train``; it has no ``val``. Images
may sit in nested folders below ``<class>/`` (searched recursively).

Class order is alphabetical (label 0 is the first name) unless ``ROOT/classes.txt`` lists the class
folders one per line in the order wanted; it must name exactly the class folders.

``PATH`` may be absolute or relative; a relative path is looked up under ``--data-dir`` (when given),
then the current folder, then ``$CFE_DATA_DIR``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from cfe_cli.errors import DataError, InputError

SPLITS = ("train", "val", "test")
TEST_EVERY = 5  # single-folder layout: every 5th file is a test image
CLASSES_FILE = "classes.txt"
FORM = "folder:PATH[:SPLIT:INDEX] (PATH absolute, or relative to --data-dir or the current folder)"


def resolve_folder(text: str, data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The image folder a ``folder:PATH`` names (PATH as written after ``folder:``).

    Raises:
        DataError: no such folder in any of the places searched, listing them.
    """
    raw = Path(text).expanduser()
    if raw.is_absolute():
        if raw.is_dir():
            return raw
        raise DataError(f"image folder not found: {raw} (write {FORM})")
    places = [Path(data_dir).expanduser()] if data_dir is not None else []
    places.append(Path.cwd())
    env = os.environ.get("CFE_DATA_DIR")
    if data_dir is None and env:
        places.append(Path(env).expanduser())
    for base in places:
        if (base / raw).is_dir():
            return base / raw
    tried = ", ".join(str(b / raw) for b in places)
    raise DataError(f"image folder '{text}' not found (tried {tried}); write {FORM}")


def _has_images(folder: Path) -> bool:
    from cfe_cli.data import IMAGE_SUFFIXES

    return any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.rglob("*"))


def _subdirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def split_folders(root: Path) -> dict[str, Path]:
    """``{split: ROOT/split}`` for a split layout, ``{}`` for a single folder."""
    return {s: root / s for s in SPLITS if (root / s).is_dir()}


def folder_classes(root: Path) -> list[str]:
    """The class names in label order: ``classes.txt``, else the class folders alphabetically."""
    splits = split_folders(root)
    found = sorted({c for d in splits.values() for c in _subdirs(d)}) if splits else _subdirs(root)
    listed = root / CLASSES_FILE
    if not listed.is_file():
        if not found:
            raise DataError(f"{root} has no class sub-folders: lay it out as ROOT/train/<class>/*.png and "
                            "ROOT/test/<class>/*.png, or ROOT/<class>/*.png")
        return found
    names = [ln.strip() for ln in listed.read_text().splitlines() if ln.strip()]
    extra, absent = sorted(set(found) - set(names)), [n for n in names if n not in found]
    if extra or absent or len(set(names)) != len(names):
        what = "; ".join(x for x in (f"folders not listed: {', '.join(extra)}" if extra else "",
                                     f"listed without a folder: {', '.join(absent)}" if absent else "",
                                     "a name is listed twice" if len(set(names)) != len(names) else "") if x)
        raise DataError(f"{listed} must list each class folder once ({what})")
    return names


def folder_files(root: Path, split: str) -> tuple[list[tuple[Path, int]], list[str]]:
    """The image files of one split with their labels, and the class names."""
    from cfe_cli.data import IMAGE_SUFFIXES

    classes = folder_classes(root)
    splits = split_folders(root)
    if splits and split not in splits:
        raise InputError(f"{root} has splits {', '.join(splits)}, not '{split}' (make {root / split}/<class>/ "
                         "to add it)")
    if not splits and split not in ("train", "test", "all"):
        raise InputError(f"{root} is a single folder: cfe splits it into train and test (every {TEST_EVERY}th "
                         f"image), it has no '{split}'; make {root}/{{train,{split},test}}/<class>/ for your own")
    base = splits.get(split, root)
    files: list[tuple[Path, int]] = []
    for label, cls in enumerate(classes):
        if (base / cls).is_dir():
            files += [(p, label) for p in sorted((base / cls).rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not splits and split != "all":
        files = [f for i, f in enumerate(files) if (i % TEST_EVERY == TEST_EVERY - 1) == (split == "test")]
    return files, classes


def load_folder(name: str, split: str, *, data_dir: str | os.PathLike[str] | None, channels: int | None,
                size: int | None) -> Any:
    """One split of ``folder:PATH`` as a :class:`cfe_cli.data.Dataset`."""
    from cfe_cli.data import Dataset, load_image

    root = resolve_folder(name.split(":", 1)[1], data_dir)
    files, classes = folder_files(root, split)
    if not files:
        raise DataError(f"no images found for split '{split}' in {root}")
    first = load_image(files[0][0], channels=channels, size=size)
    c, h, _ = first.shape
    images = torch.stack([load_image(p, channels=c, size=size or h) for p, _ in files])  # (N, C, H, W)
    labels = torch.tensor([lbl for _, lbl in files], dtype=torch.long)
    return Dataset(name, split, images, labels, classes)


def is_folder_dataset(root: Path) -> bool:
    """Whether ``root`` is laid out as an image-folder dataset (two or more class folders holding images)."""
    if not root.is_dir():
        return False
    splits = split_folders(root)
    tops = [d / c for d in splits.values() for c in _subdirs(d)] if splits else [root / c for c in _subdirs(root)]
    classes = {d.name for d in tops}
    return len(classes) >= 2 and all(_has_images(d) for d in tops[:3])  # one "class" is just a folder of images


def folder_summary(root: Path, name: str) -> dict[str, Any]:
    """One ``cfe datasets`` record: counts per split and per class."""
    counts: dict[str, dict[str, int]] = {}
    for split in (list(split_folders(root)) or ["train", "test"]):
        files, classes = folder_files(root, split)
        counts[split] = {c: sum(1 for _, lbl in files if lbl == i) for i, c in enumerate(classes)}
    classes = folder_classes(root)
    layout = "split folders" if split_folders(root) else f"single folder (every {TEST_EVERY}th image is test)"
    order = "classes.txt" if (root / CLASSES_FILE).is_file() else "alphabetical"
    return {"name": name, "path": str(root), "classes": len(classes), "class_names": classes,
            "splits": {s: sum(c.values()) for s, c in counts.items()}, "class_counts": counts,
            "layout": layout, "class_order": order}
