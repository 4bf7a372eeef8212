"""Loaders read the real files and return [0,1] batch-first tensors with the seeds' class names."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cfe_cli.data import (
    BLOOD_CLASSES,
    FASHION_CLASSES,
    MNIST_CLASSES,
    load_dataset,
    load_image,
    parse_reference,
)
from cfe_cli.errors import DataError, InputError
from tests.conftest import need


def _check(ds, n, shape, classes):
    assert len(ds) == n
    assert tuple(ds.images.shape) == (n, *shape)
    assert ds.images.dtype == torch.float32 and ds.labels.dtype == torch.long
    assert float(ds.images.min()) >= 0.0 and float(ds.images.max()) <= 1.0
    assert ds.classes == classes
    assert set(ds.labels.unique().tolist()) == set(range(len(classes)))


def test_mnist():
    root = need("mnist")
    _check(load_dataset("mnist", "train", root=root), 8000, (1, 28, 28), MNIST_CLASSES)
    test = load_dataset("mnist", "test", root=root)
    _check(test, 2000, (1, 28, 28), MNIST_CLASSES)
    assert torch.bincount(test.labels).tolist() == [200, 225, 198, 206, 196, 173, 203, 214, 189, 196]


def test_fashion_mnist():
    root = need("fashion-mnist")
    test = load_dataset("fashion-mnist", "test", root=root)
    _check(test, 10000, (1, 28, 28), FASHION_CLASSES)
    assert test.labels[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]  # the upstream test set
    assert FASHION_CLASSES[0] == "T-shirt" and FASHION_CLASSES[9] == "Ankle boot"


def test_bloodmnist():
    root = need("bloodmnist")
    for split, n in (("train", 11952), ("val", 1707), ("test", 3415)):
        _check(load_dataset("bloodmnist", split, root=root), n, (3, 28, 28), BLOOD_CLASSES)


def test_celeba_task():
    root = need("celeba")
    ds = load_dataset("celeba:Mouth_Slightly_Open", "test", root=root)
    assert tuple(ds.images.shape) == (660, 3, 64, 64)
    assert ds.classes == ["closed mouth", "slightly opened mouth"]
    assert int(ds.labels.sum()) == 224  # README: 224 of 660 test faces have the mouth open
    assert ds.attributes is not None and ds.attributes.shape == (660, 40)
    smile = load_dataset("celeba:Smiling", "val", root=root, size=32)
    assert tuple(smile.images.shape) == (780, 3, 32, 32) and int(smile.labels.sum()) == 338


def test_celeba_unknown_attribute_suggests():
    root = need("celeba")
    with pytest.raises(InputError, match="Smiling"):
        load_dataset("celeba:Smilng", "test", root=root)


def test_folder_dataset(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        (tmp_path / cls).mkdir()
        for i in range(5):
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    train = load_dataset(f"folder:{tmp_path}", "train", size=16)
    test = load_dataset(f"folder:{tmp_path}", "test", size=16)
    assert train.classes == ["cats", "dogs"]
    assert len(train) + len(test) == 10 and len(test) == 2
    assert tuple(train.images.shape[1:]) == (3, 16, 16)


def test_bad_data_dir(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_dataset("mnist", "test", root=tmp_path / "nope")
    with pytest.raises(DataError, match="mnist"):
        load_dataset("mnist", "test", root=tmp_path)


def test_unknown_dataset_and_split(tmp_path):
    with pytest.raises(InputError, match="did you mean mnist"):
        load_dataset("mnsit", "test", root=tmp_path)
    root = need("mnist")
    with pytest.raises(InputError, match="splits"):
        load_dataset("mnist", "val", root=root)


def test_reference_parsing():
    assert parse_reference("mnist:test:12") == parse_reference("mnist:test:12")
    r = parse_reference("celeba:Mouth_Slightly_Open:test:4262")
    assert r is not None and (r.dataset, r.split, r.index) == ("celeba:Mouth_Slightly_Open", "test", 4262)
    assert parse_reference("some/file.png") is None
    assert parse_reference("mnist:test") is None


def test_load_image_modes(tmp_path):
    grey = tmp_path / "g.png"
    Image.fromarray(np.full((28, 28), 255, np.uint8)).save(grey)
    x = load_image(grey)
    assert tuple(x.shape) == (1, 28, 28) and float(x.max()) == 1.0
    assert tuple(load_image(grey, channels=3).shape) == (3, 28, 28)
    opaque = tmp_path / "o.png"
    Image.new("RGBA", (40, 30), (255, 0, 0, 255)).save(opaque)
    assert tuple(load_image(opaque, size=28).shape) == (3, 28, 28)
    for mode, value, match in (("RGBA", (255, 0, 0, 128), "transparency"), ("CMYK", (0, 0, 0, 0), "CMYK"),
                               ("I;16", 40000, "16/32-bit")):
        path = tmp_path / f"m_{mode.replace(';', '')}.{'jpg' if mode == 'CMYK' else 'png'}"
        Image.new(mode, (20, 20), value).save(path)
        with pytest.raises(InputError, match=match):
            load_image(path)
    pal = tmp_path / "p.png"
    Image.new("P", (20, 20), 3).save(pal)
    assert tuple(load_image(pal).shape) == (3, 20, 20)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(InputError, match="not an image"):
        load_image(bad)
    empty = tmp_path / "e.png"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        load_image(empty)
    noisy = tmp_path / "n.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(noisy)
    trunc = tmp_path / "t.png"
    trunc.write_bytes(noisy.read_bytes()[:500])
    with pytest.raises(InputError):
        load_image(trunc)
    with pytest.raises(InputError, match="no such file"):
        load_image(tmp_path / "missing.png")
