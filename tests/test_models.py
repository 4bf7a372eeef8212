"""Tiny classifiers train, save and load identically."""

from __future__ import annotations

import pytest
import torch

from cfe_cli.data import load_dataset
from cfe_cli.errors import WeightsError
from cfe_cli.models.classifiers import ARCHS, GAPClassifier, make_config
from cfe_cli.models.weights import load_classifier, read_metadata, resolve_model, save_module
from cfe_cli.training import ClassifierTrainConfig, train_classifier
from tests.conftest import need


@pytest.mark.parametrize("arch,res", [("resnet-s", 28), ("resnet-m", 64), ("resnet-l", 128), ("convnet", 28)])
def test_gap_structure(arch, res):
    cfg = make_config(arch, in_channels=3, num_classes=5, resolution=res, mean=(0.5,) * 3, std=(0.25,) * 3)
    m = GAPClassifier(cfg).eval()
    x = torch.rand(2, 3, res, res)
    f = m.features(x)
    assert f.ndim == 4 and f.shape[1] == m.feature_dim
    # logits are exactly W · GAP(f) + b
    ref = f.mean(dim=(2, 3)) @ m.head.weight.T + m.head.bias
    torch.testing.assert_close(m(x), ref)
    assert arch in ARCHS


def test_tiny_classifier_loss_falls(tmp_path):
    root = need("mnist")
    train = load_dataset("mnist", "train", root=root)
    train.images, train.labels = train.images[:512], train.labels[:512]
    test = load_dataset("mnist", "test", root=root)
    test.images, test.labels = test.images[:256], test.labels[:256]
    cfg = make_config("resnet-s", in_channels=1, num_classes=10, resolution=28, mean=(0.13,), std=(0.31,))
    torch.manual_seed(0)  # the initial weights too: otherwise they depend on which tests ran before
    model = GAPClassifier(cfg)
    res = train_classifier(model, train, test, ClassifierTrainConfig(epochs=3, batch_size=64, lr=3e-3))
    losses = [h["loss"] for h in res.history]
    assert losses[-1] < 0.7 * losses[0]
    assert res.history[-1]["acc"] > 0.5  # running training accuracy well above chance (0.1)


def test_save_load_identical_logits(tmp_path):
    cfg = make_config("resnet-s", in_channels=1, num_classes=10, resolution=28, mean=(0.13,), std=(0.31,))
    model = GAPClassifier(cfg)
    # non-trivial BN statistics
    model.train()
    model(torch.rand(16, 1, 28, 28))
    model.eval()
    info = {"dataset": "mnist", "classes": [str(i) for i in range(10)], "test_accuracy": 0.5}
    path = save_module(tmp_path / "m" / "classifier.safetensors", model, kind="classifier",
                       config=cfg.to_dict(), info=info)
    loaded = load_classifier(path)
    x = torch.rand(8, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), model(x), rtol=0, atol=0)
    assert loaded.config == cfg
    meta = read_metadata(path)
    assert meta["info"]["classes"] == info["classes"] and "cfe_version" in meta["info"]
    assert resolve_model(tmp_path / "m") == tmp_path / "m"
    assert not list(tmp_path.rglob("*.tmp"))


def test_bad_weights(tmp_path):
    bad = tmp_path / "classifier.safetensors"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(WeightsError):
        load_classifier(bad)
    with pytest.raises(WeightsError, match="not found"):
        resolve_model("no-such-model-here")
    # a file for another architecture
    cfg = make_config("resnet-s", in_channels=1, num_classes=10, resolution=28, mean=(0.1,), std=(0.3,))
    other = make_config("convnet", in_channels=1, num_classes=10, resolution=28, mean=(0.1,), std=(0.3,))
    path = save_module(tmp_path / "x.safetensors", GAPClassifier(other), kind="classifier",
                       config=cfg.to_dict(), info={"classes": []})
    with pytest.raises(WeightsError, match="does not match"):
        load_classifier(path)


def test_translate_flip_only_moves_and_mirrors():
    from cfe_cli.training import augment_batch

    x = torch.zeros(64, 1, 28, 28)
    x[:, :, 14, 6:22] = 1.0  # a horizontal bar: rotation or scaling would tilt or stretch it
    y = augment_batch(x, "translate-flip", torch.Generator().manual_seed(0))
    rows = y.sum(dim=3)[:, 0]  # (64, 28) mass per row
    assert ((rows > 0.05).sum(1) <= 2).all()  # a fractional vertical shift spreads over 2 rows at most
    assert torch.allclose(y.sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3)), atol=1e-3)  # the bar stays whole
    shifted = (rows.argmax(1) != 14).float().mean()
    assert 0.2 < shifted  # it does translate


def test_train_clf_rejects_unknown_augmentation(tmp_path):
    from typer.testing import CliRunner

    from cfe_cli.cli import app

    r = CliRunner().invoke(app, ["train-clf", "--dataset", "mnist", "--augment", "twirl", "--out", str(tmp_path)])
    assert r.exit_code != 0 and "unknown augmentation 'twirl'" in r.output and "Traceback" not in r.output


def test_random_erase_zeroes_one_rectangle_in_about_half():
    from cfe_cli.training import random_erase

    x = torch.ones(400, 1, 28, 28)
    y = random_erase(x, torch.Generator().manual_seed(0))
    zero = y[:, 0] == 0
    erased = zero.flatten(1).any(1)
    assert 0.4 < erased.float().mean() < 0.6  # p = 0.5
    share = zero.flatten(1).float().mean(1)[erased]
    assert share.min() > 0.005 and share.max() < 0.25  # 2-20 % of the image, up to rounding
    # one axis-aligned rectangle: erased rows × erased columns is exactly the erased set
    for z in zero[erased][:20]:
        rows, cols = z.any(1), z.any(0)
        assert torch.equal(z, rows[:, None] & cols[None, :])


def test_ema_weights_are_what_is_saved():
    """With --ema the returned model holds the averaged weights: with a decay of ~1 the average
    stays at its first value (the weights after step 1), not at the last iterate."""
    from cfe_cli.data import Dataset

    g = torch.Generator().manual_seed(0)
    imgs = torch.rand(256, 1, 28, 28, generator=g)
    labels = (imgs.mean(dim=(1, 2, 3)) > imgs.mean()).long()
    ds = Dataset(name="toy", split="train", images=imgs, labels=labels, classes=["a", "b"])
    cfg = make_config("resnet-s", in_channels=1, num_classes=2, resolution=28, mean=(0.5,), std=(0.3,))

    def flat(m: torch.nn.Module) -> torch.Tensor:
        return torch.cat([p.detach().flatten().clone() for p in m.state_dict().values() if p.is_floating_point()])

    def run(ema: float) -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(1)
        m = GAPClassifier(cfg)
        snap = {}

        def after_step(d: dict) -> None:
            if d["completed"] == 1:
                snap["one"] = flat(m)

        train_classifier(m, ds, ds, ClassifierTrainConfig(epochs=2, batch_size=64, lr=3e-3, ema=ema, augment="none"),
                         progress=after_step, max_steps=6)
        return snap["one"], flat(m)

    after_one, last = run(0.0)
    _, averaged = run(1 - 1e-9)
    torch.testing.assert_close(averaged, after_one)
    assert not torch.allclose(last, after_one, atol=1e-4)
