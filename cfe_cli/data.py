"""Local datasets and image loading.

Every loader returns float images in [0, 1], batch-first ``(N, C, H, W)``, labels as a
long tensor ``(N,)`` and the class names in label order. Nothing is ever downloaded: the
files must be under the data directory (``--data-dir``, else ``$CFE_DATA_DIR``).

Dataset names:
    ``mnist``, ``fashion-mnist``: a folder with the four standard gzipped IDX files.
    ``bloodmnist``: the MedMNIST ``bloodmnist.npz`` layout.
    ``celeba:<Attribute>``: ``img_align_celeba/`` + ``list_attr_celeba.txt``
        (+ ``list_eval_partition.txt``), one binary task per attribute.
    ``folder:<path>``: your own images, ``PATH/{train,val,test}/<class>/*.png`` or
        ``PATH/<class>/*.png`` (layout, class order and path lookup: :mod:`cfe_cli.folders`).

A reference ``DATASET:SPLIT:INDEX`` (e.g. ``mnist:test:12``, ``folder:/data/cells:test:3``) names one
image of a split.
"""

from __future__ import annotations

import gzip
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from cfe_cli.errors import DataError, InputError

MNIST_CLASSES = [str(i) for i in range(10)]
FASHION_CLASSES = [
    "T-shirt", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
BLOOD_CLASSES = [
    "basophil", "eosinophil", "erythroblast", "ig",
    "lymphocyte", "monocyte", "neutrophil", "platelet",
]  # fmt: skip
# Binary CelebA tasks: class 0 = attribute absent (-1), class 1 = present (1).
# Mouth_Slightly_Open uses the names the Mirror-CFE seeds print for CelebA-HQ.
CELEBA_CLASS_NAMES = {
    "Mouth_Slightly_Open": ["closed mouth", "slightly opened mouth"],
    "Smiling": ["not smiling", "smiling"],
}
CELEBA_ATTRIBUTES = [
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair",
    "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair",
    "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings",
    "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
]  # fmt: skip
MAX_PIXELS = 50_000_000  # refuse larger images before decoding them
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
BUILTIN = ("mnist", "fashion-mnist", "bloodmnist", "celeba")


@dataclass
class Dataset:
    """One split of a dataset held in memory.

    Attributes:
        name: dataset name as given (e.g. ``"celeba:Smiling"``).
        split: ``"train"``, ``"val"`` or ``"test"``.
        images: float32 ``(N, C, H, W)`` in [0, 1].
        labels: int64 ``(N,)``.
        classes: class names in label order.
        attributes: optional float ``(N, A)`` binary attributes (CelebA), names in
            ``attribute_names``.
    """

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    attributes: torch.Tensor | None = None
    attribute_names: list[str] | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def resolution(self) -> int:
        return int(self.images.shape[-1])


def data_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """Resolve the data directory: the argument, else ``$CFE_DATA_DIR``.

    Raises:
        DataError: neither is given, or the folder does not exist.
    """
    raw = path if path is not None else os.environ.get("CFE_DATA_DIR")
    if raw is None or str(raw) == "":
        # one message for both audiences: the library is called from notebooks as well as the CLI
        raise DataError("no data directory: pass data_dir=... (Python) or --data-dir (cfe), or set CFE_DATA_DIR "
                        "to the folder holding the datasets (see the README's Data section)")
    root = Path(raw).expanduser()
    if not root.is_dir():
        raise DataError(f"data directory not found: {root}")
    return root


def _read_idx(path: Path) -> np.ndarray:
    """Read a gzipped IDX file into a uint8 array."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(f"missing dataset file: {path}") from None
    except (OSError, EOFError) as e:
        raise DataError(f"corrupt dataset file {path}: {e}") from None
    if len(raw) < 8 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"not a uint8 IDX file: {path}")
    ndim = raw[3]
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"truncated IDX file: {path}")
    return data.reshape(dims)


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, H, W)`` or ``(N, H, W, C)`` -> float ``(N, C, H, W)`` in [0, 1]."""
    if images.ndim == 3:
        images = images[:, None]  # (N, 1, H, W)
    else:
        images = images.transpose(0, 3, 1, 2)  # (N, C, H, W)
    return torch.from_numpy(np.array(images, copy=True, order="C")).float().div_(255.0)


def _load_idx(root: Path, split: str, classes: list[str], name: str) -> Dataset:
    if split not in IDX_FILES:
        raise InputError(f"{name} has splits train and test, not '{split}'")
    img_file, lbl_file = IDX_FILES[split]
    x = _read_idx(root / img_file)
    y = _read_idx(root / lbl_file)
    if x.shape[0] != y.shape[0]:
        raise DataError(f"{name}: {x.shape[0]} images but {y.shape[0]} labels in {root}")
    labels = torch.from_numpy(y.astype(np.int64))
    return Dataset(name, split, _to_tensor(x), labels, list(classes))


def _load_bloodmnist(root: Path, split: str) -> Dataset:
    path = root / "bloodmnist.npz"
    if not path.is_file():
        raise DataError(f"missing dataset file: {path}")
    if split not in ("train", "val", "test"):
        raise InputError(f"bloodmnist has splits train, val and test, not '{split}'")
    try:
        with np.load(path) as npz:
            x = npz[f"{split}_images"]
            y = npz[f"{split}_labels"].reshape(-1)
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"corrupt or incomplete {path}: {e}") from None
    return Dataset("bloodmnist", split, _to_tensor(x), torch.from_numpy(y.astype(np.int64)), list(BLOOD_CLASSES))


def center_crop_resize(img: Image.Image, size: int, crop: int | None = None) -> Image.Image:
    """Centre-crop a square of side ``crop`` (default: the short side), resize to ``size``."""
    w, h = img.size
    c = min(w, h) if crop is None else min(crop, w, h)
    left, top = (w - c) // 2, (h - c) // 2
    img = img.crop((left, top, left + c, top + c))
    return img.resize((size, size), Image.Resampling.BICUBIC)


CELEBA_SPLITS = {"train": 0, "val": 1, "test": 2}
# Aligned CelebA faces are 178x218 with the face in the middle; a 140-px square centred
# on the image holds the face from brows to chin (as in the usual 64x64 CelebA crops).
CELEBA_CROP = 140


def _celeba_task(name: str) -> str:
    attr = name.split(":", 1)[1] if ":" in name else ""
    if attr not in CELEBA_ATTRIBUTES:
        close = closest_name(attr, CELEBA_ATTRIBUTES)
        hint = f" (did you mean {close}?)" if close else ""
        raise InputError(f"celeba needs an attribute, e.g. celeba:Smiling; got '{name}'{hint}")
    return attr


def _load_celeba(root: Path, name: str, split: str, size: int) -> Dataset:
    attr = _celeba_task(name)
    attr_file = root / "list_attr_celeba.txt"
    img_dir = root / "img_align_celeba"
    if not attr_file.is_file() or not img_dir.is_dir():
        raise DataError(f"celeba needs {attr_file} and {img_dir}")
    lines = attr_file.read_text().splitlines()
    names = lines[1].split()
    rows = [ln.split() for ln in lines[2:] if ln.strip()]
    files = [r[0] for r in rows]
    values = np.array([[int(v) for v in r[1:]] for r in rows], dtype=np.int8)
    part_file = root / "list_eval_partition.txt"
    if split not in CELEBA_SPLITS:
        raise InputError(f"celeba has splits train, val and test, not '{split}'")
    if part_file.is_file():
        part = dict(ln.split() for ln in part_file.read_text().splitlines() if ln.strip())
        keep = [i for i, f in enumerate(files) if int(part.get(f, -1)) == CELEBA_SPLITS[split]]
    else:  # no partition file: deterministic 80/10/10 by file order
        n = len(files)
        bounds = {"train": (0, int(0.8 * n)), "val": (int(0.8 * n), int(0.9 * n)), "test": (int(0.9 * n), n)}
        keep = list(range(*bounds[split]))
    images = np.empty((len(keep), size, size, 3), dtype=np.uint8)
    for j, i in enumerate(keep):
        with Image.open(img_dir / files[i]) as im:
            images[j] = np.asarray(center_crop_resize(im.convert("RGB"), size, CELEBA_CROP))
    attrs = torch.from_numpy((values[keep] > 0).astype(np.float32))
    labels = attrs[:, names.index(attr)].long()
    classes = CELEBA_CLASS_NAMES.get(attr, [f"not {attr}", attr])
    return Dataset(name, split, _to_tensor(images), labels, list(classes), attrs, names)


def load_dataset(
    name: str,
    split: str = "train",
    *,
    root: str | os.PathLike[str] | None = None,
    size: int | None = None,
    channels: int | None = None,
) -> Dataset:
    """Load one split of a dataset into memory.

    Args:
        name: ``mnist``, ``fashion-mnist``, ``bloodmnist``, ``celeba:<Attribute>`` or
            ``folder:<path>``.
        split: ``train``, ``val`` (bloodmnist, celeba) or ``test``.
        root: data directory; default ``$CFE_DATA_DIR``. For ``folder:`` a relative path is
            looked up under it (when given), then the current folder, then ``$CFE_DATA_DIR``.
        size: output resolution for CelebA (default 64) and image folders.
        channels: force 1 or 3 channels for image folders.

    Returns:
        A :class:`Dataset` with images ``(N, C, H, W)`` float in [0, 1].

    Example:
        >>> ds = load_dataset("mnist", "test")          # doctest: +SKIP
        >>> ds.images.shape, ds.classes[:3]             # doctest: +SKIP
        (torch.Size([2000, 1, 28, 28]), ['0', '1', '2'])
    """
    if name.startswith("folder:"):
        from cfe_cli.folders import load_folder

        return load_folder(name, split, data_dir=root, channels=channels, size=size)  # type: ignore[no-any-return]
    base = name.split(":", 1)[0]
    if base not in BUILTIN:
        close = closest_name(base, list(BUILTIN))
        hint = f" (did you mean {close}?)" if close else ""
        raise InputError(f"unknown dataset '{name}'{hint}; known: {', '.join(BUILTIN)}; your own image folder is "
                         f"folder:PATH (e.g. folder:{name}:{split}:0, PATH absolute or relative to --data-dir "
                         "or the current folder)")
    top = data_dir(root)
    folder = top / base
    if not folder.is_dir():
        raise DataError(f"dataset '{base}' not found: no folder {folder}")
    if base == "mnist":
        return _load_idx(folder, split, MNIST_CLASSES, "mnist")
    if base == "fashion-mnist":
        return _load_idx(folder, split, FASHION_CLASSES, "fashion-mnist")
    if base == "bloodmnist":
        return _load_bloodmnist(folder, split)
    return _load_celeba(folder, name, split, size or 64)


def dataset_summary(root: str | os.PathLike[str] | None = None) -> list[dict[str, object]]:
    """What is found under the data directory: one record per dataset with split counts."""
    top = data_dir(root)
    out: list[dict[str, object]] = []
    for base in ("mnist", "fashion-mnist"):
        folder = top / base
        if not folder.is_dir():
            continue
        counts = {}
        for split, (_, lbl) in IDX_FILES.items():
            if (folder / lbl).is_file():
                counts[split] = int(_read_idx(folder / lbl).shape[0])
        out.append({"name": base, "path": str(folder), "classes": 10, "splits": counts})
    path = top / "bloodmnist" / "bloodmnist.npz"
    if path.is_file():
        with np.load(path) as npz:
            counts = {s: int(npz[f"{s}_labels"].shape[0]) for s in ("train", "val", "test") if f"{s}_labels" in npz}
        out.append({"name": "bloodmnist", "path": str(path.parent), "classes": 8, "splits": counts})
    part = top / "celeba" / "list_eval_partition.txt"
    if (top / "celeba" / "list_attr_celeba.txt").is_file():
        counts = {}
        if part.is_file():
            ids = [ln.split()[1] for ln in part.read_text().splitlines() if ln.strip()]
            counts = {s: ids.count(str(v)) for s, v in CELEBA_SPLITS.items()}
        out.append({"name": "celeba", "path": str(top / "celeba"), "classes": 2, "splits": counts,
                    "tasks": "celeba:<Attribute>, e.g. celeba:Mouth_Slightly_Open, celeba:Smiling"})
    return out + _folder_datasets(top)


def _folder_datasets(top: Path) -> list[dict[str, object]]:
    """The data directory itself, or its sub-folders, when laid out as image-folder datasets."""
    from cfe_cli.folders import folder_summary, is_folder_dataset

    if is_folder_dataset(top):
        return [folder_summary(top, f"folder:{top.resolve()}")]
    return [folder_summary(d, f"folder:{d.name}") for d in sorted(top.iterdir())
            if d.name not in BUILTIN and not d.name.startswith(".") and is_folder_dataset(d)]


# ----------------------------------------------------------------------------- images


def load_image(
    path: str | os.PathLike[str],
    *,
    channels: int | None = None,
    size: int | None = None,
) -> torch.Tensor:
    """Read one image file as float ``(C, H, W)`` in [0, 1].

    Args:
        path: PNG, JPEG, BMP or TIFF file.
        channels: 1 (grey) or 3 (RGB); ``None`` keeps grey as 1 and colour as 3.
        size: if given, a square resolution to resize to (non-square images are
            centre-cropped first).

    Raises:
        InputError: missing, empty, truncated or non-image file; unsupported mode.
    """
    return image_tensor(open_image(path), channels=channels, size=size)


def open_image(path: str | os.PathLike[str]) -> Image.Image:
    """Decode an image file once, as an 8-bit ``L`` or ``RGB`` Pillow image (the checks of :func:`load_image`)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"no such file: {p}")
    if not p.is_file():
        raise InputError(f"not a file: {p}")
    if p.stat().st_size == 0:
        raise InputError(f"empty file: {p}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                if im.size[0] * im.size[1] > MAX_PIXELS:
                    raise InputError(f"image too large ({im.size[0]}x{im.size[1]} pixels): {p}")
                im.load()
                img = im.copy()
    except UnidentifiedImageError:
        raise InputError(f"not an image file: {p}") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"corrupt or truncated image {p}: {e}") from None
    except Image.DecompressionBombError:
        raise InputError(f"image too large: {p}") from None
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        raise InputError(f"unsupported image mode {mode} (16/32-bit) in {p}: save it as 8-bit grayscale or RGB")
    if mode == "CMYK":
        raise InputError(f"unsupported image mode CMYK in {p}: convert it to RGB first")
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("LA", "RGBA", "PA", "La", "RGBa"):
        alpha = np.asarray(img.getchannel("A"))
        if alpha.min() < 255:
            raise InputError(f"image with transparency (mode {mode}) in {p}: flatten it onto a background first")
        img = img.convert("L" if mode.startswith("L") else "RGB")
    elif mode in ("1", "L"):
        img = img.convert("L")
    elif mode in ("P", "RGB", "YCbCr", "HSV", "LAB", "RGBX"):
        img = img.convert("RGB")
    else:
        raise InputError(f"unsupported image mode {mode}: {p}")
    return img


def image_tensor(img: Image.Image, *, channels: int | None = None, size: int | None = None) -> torch.Tensor:
    """An ``L``/``RGB`` Pillow image as float ``(C, H, W)`` in [0, 1], converted to ``channels`` and
    centre-cropped and resized to ``size`` when given."""
    if channels == 1 and img.mode != "L":
        img = img.convert("L")
    elif channels == 3 and img.mode != "RGB":
        img = img.convert("RGB")
    if size is not None and img.size != (size, size):
        img = center_crop_resize(img, size)
    arr = np.array(img)  # a writable copy (np.asarray of a PIL image is read-only)
    if arr.ndim == 2:
        arr = arr[None]  # (1, H, W)
    else:
        arr = arr.transpose(2, 0, 1)  # (3, H, W)
    return torch.from_numpy(np.ascontiguousarray(arr)).float().div_(255.0)


REFERENCE = re.compile(r"^(?P<ds>[A-Za-z][\w-]*(?::[A-Za-z_0-9]+)?):(?P<split>train|val|test):(?P<idx>-?\d+)$")
FOLDER_REFERENCE = re.compile(r"^(?P<ds>folder:.+):(?P<split>train|val|test):(?P<idx>-?\d+)$")


@dataclass(frozen=True)
class Reference:
    """A parsed ``DATASET:SPLIT:INDEX`` reference."""

    dataset: str
    split: str
    index: int


def parse_reference(text: str) -> Reference | None:
    """Parse ``DATASET:SPLIT:INDEX`` (``celeba:Smiling:test:3``, ``folder:/any/path:test:3`` too); ``None``
    if not one."""
    m = FOLDER_REFERENCE.match(text) or REFERENCE.match(text)
    if m is None:
        return None
    return Reference(m["ds"], m["split"], int(m["idx"]))


def closest_name(word: str, choices: Sequence[str]) -> str | None:
    import difflib

    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    if found:
        return found[0]
    low = {c.lower(): c for c in choices}
    return low.get(word.lower())
