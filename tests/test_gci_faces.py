"""GCI on faces: the attribute-conditional VAE (``train-gen --method cvae``) and GCI editing
its attribute input, on real CelebA faces at 32² (tiny models, a few steps)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cfe_cli import api
from cfe_cli.errors import InputError
from cfe_cli.models.generators import ATTGAN_ATTRIBUTES, CondVAE, CondVAEConfig
from tests.conftest import need


def test_cond_vae_decodes_from_attributes():
    torch.manual_seed(0)
    m = CondVAE(CondVAEConfig(in_channels=3, resolution=32, latent_dim=8, widths=(8, 16, 32))).eval()
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        mu, _ = m.encode(x)
        a = m.estimate_attributes(x)
        assert mu.shape == (4, 8) and a.shape == (4, len(ATTGAN_ATTRIBUTES))
        assert float(a.abs().max()) < 1
        y = m.decode(mu, a)
        flipped = a.clone()
        flipped[:, ATTGAN_ATTRIBUTES.index("Mouth_Slightly_Open")] *= -1
        y2 = m.decode(mu, flipped)
    assert y.shape == x.shape and 0 <= float(y.min()) and float(y.max()) <= 1
    assert not torch.allclose(y, y2)  # the decoder reads the attributes
    with pytest.raises(ValueError, match="attribute vector"):
        m.decode(mu)


@pytest.fixture(scope="module")
def face_model(tmp_path_factory) -> Path:
    root = need("celeba")
    folder = tmp_path_factory.mktemp("face")
    api.train_clf("celeba:Mouth_Slightly_Open", out=folder, size=32, epochs=1, batch_size=64, max_steps=8,
                  data_dir=root, device="cpu")
    r = api.train_gen(folder, method="cvae", epochs=1, batch_size=64, max_steps=8, data_dir=root, device="cpu")
    assert Path(r["path"]) == folder / "cvae.safetensors"
    assert 0 <= r["edit_attribute_accuracy"] <= 1 and r["task_attribute_flip_rate"] is not None
    return folder


def test_gci_edits_attributes_on_faces(face_model, tmp_path):
    out = tmp_path / "gci"
    r = api.explain(["celeba:Mouth_Slightly_Open:test:0", "celeba:Mouth_Slightly_Open:test:1"], model=face_model,
                    method="gci", out=out, attributions=True, options={"max_steps": 5}, device="cpu")
    assert len(r["results"]) == 2 and not r["failures"]
    doc = json.loads((out / "metrics.json").read_text())
    for rec in doc["results"]:
        scores = rec["attributions"]
        assert set(scores) == set(ATTGAN_ATTRIBUTES)  # ΔA/2 of the generator's own attributes
        assert all(-1 <= v <= 1 for v in scores.values())
        assert any(abs(v) > 0 for v in scores.values())  # the attribute input moved
        assert Path(rec["reconstruction_path"]).is_file() and Path(rec["attributions_path"]).is_file()
    # the same images with the plain latent-code GCI need the VAE, which this folder lacks
    with pytest.raises(Exception, match="vae"):
        api.explain(["celeba:Mouth_Slightly_Open:test:0"], model=face_model, method="attack", out=tmp_path / "a",
                    device="cpu")


def test_gci_attribute_edit_respects_training_range(face_model):
    from cfe_cli import engine
    from cfe_cli.methods import make_objective
    from cfe_cli.models.weights import load_classifier, load_vae

    root = need("celeba")
    from cfe_cli.data import load_dataset

    x = load_dataset("celeba:Mouth_Slightly_Open", "test", root=root, size=32).images[:6]
    clf = load_classifier(face_model / "classifier.safetensors").model
    gen, _ = load_vae(face_model, kind="cvae")
    obj = make_objective("gci", gen, lr=0.5, max_steps=20)
    src = clf(x).argmax(1)
    ctx = engine.Context(clf, x, src, 1 - src)
    res = engine.run(obj, ctx, engine.EngineConfig(max_steps=20, threshold=0.99))
    assert float(res.v_cf.abs().max()) <= 1.0 + 1e-6
    assert torch.equal(ctx.extra["z"], gen.encode(x)[0].detach())  # the code stays; only A moves


def test_cvae_needs_attributes(tiny_model):
    with pytest.raises(InputError, match="attributes"):
        api.train_gen(tiny_model, method="cvae", max_steps=1, device="cpu")
