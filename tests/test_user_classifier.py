"""A user's own classifier: module:factory + safetensors, TorchScript, and the GAP-structure check."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
import user_models
from conftest import need
from safetensors.torch import save_file
from typer.testing import CliRunner

from cfe_cli.cli import app
from cfe_cli.models.external import WrappedClassifier

runner = CliRunner()


def _train(net: torch.nn.Module, steps: int = 150) -> torch.nn.Module:
    """A few Adam steps on real MNIST: enough for a classifier that predicts digits."""
    from cfe_cli.data import load_dataset

    train = load_dataset("mnist", "train", root=need("mnist"))
    torch.manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    for _ in range(steps):
        idx = torch.randint(0, len(train), (128,))
        loss = torch.nn.functional.cross_entropy(net(train.images[idx]), train.labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


@pytest.fixture(scope="module")
def user_weights(tmp_path_factory):
    d = tmp_path_factory.mktemp("user")
    out = {}
    for name in ("gap_net", "flat_net"):
        net = _train(getattr(user_models, name)())
        path = d / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
        out[name] = path
    return out


def _one_line_error(r, *words):
    assert r.exit_code == 1, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.output
    for w in words:
        assert w in lines[0], lines[0]


def test_structure_check_finds_gap_head_and_feature_map():
    w = WrappedClassifier(user_models.gap_net().eval(), 28, 1)
    assert w.mirror_problem is None
    x = torch.rand(3, 1, 28, 28)
    f = w.features(x)
    assert f.shape == (3, 32, 7, 7)
    assert torch.allclose(w.classify_features(f), w(x), atol=1e-5)
    flat = WrappedClassifier(user_models.flat_net().eval(), 28, 1)
    assert "no global average pooling" in flat.mirror_problem


def test_torchscript_structure(tmp_path):
    good = user_models.to_torchscript(user_models.ScriptableGap().eval())
    good.save(str(tmp_path / "good.pt"))
    from cfe_cli.models.external import wrap_classifier

    w = wrap_classifier(str(tmp_path / "good.pt"), None, resolution=28, channels=1, num_classes=10)
    assert w.mirror_problem is None and w.features(torch.rand(2, 1, 28, 28)).shape == (2, 32, 7, 7)
    bad = user_models.to_torchscript(user_models.ScriptableFlat().eval())
    bad.save(str(tmp_path / "flat.pt"))
    w = wrap_classifier(str(tmp_path / "flat.pt"), None, resolution=28, channels=1, num_classes=10)
    assert "features(x)" in w.mirror_problem


def test_latent_method_explains_a_user_mlp(user_weights, tmp_path):
    """The attack works with any classifier: the user's MLP's prediction really moves to the target."""
    need("mnist")
    r = runner.invoke(app, ["explain", "mnist:test:12", "--model", "mnist", "--method", "attack", "--target", "3",
                            "--classifier", "user_models:flat_net", "--weights", str(user_weights["flat_net"]),
                            "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    rec = json.loads((tmp_path / "metrics.json").read_text())["results"][0]
    assert rec["valid"] and rec["cf_pred"] == "3"
    # the record's prediction is the user's model's, not the shipped classifier's
    import numpy as np
    from PIL import Image
    img = torch.from_numpy(np.asarray(Image.open(rec["cf_path"]), dtype=np.float32) / 255).view(1, 1, 28, 28)
    net = user_models.flat_net()
    from safetensors.torch import load_file
    net.load_state_dict(load_file(str(user_weights["flat_net"])))
    assert int(net.eval()(img).argmax()) == 3


def test_mirror_refuses_a_classifier_without_gap(user_weights, tmp_path):
    need("mnist")
    r = runner.invoke(app, ["explain", "mnist:test:12", "--model", "mnist", "--classifier", "user_models:flat_net",
                            "--weights", str(user_weights["flat_net"]), "--out", str(tmp_path)])
    _one_line_error(r, "Mirror-CFE needs", "no global average pooling", "latent methods")


def test_mirror_with_a_decoder_trained_for_the_user_gap_net(user_weights, tmp_path):
    need("mnist")
    args = ["--classifier", "user_models:gap_net", "--weights", str(user_weights["gap_net"])]
    r = runner.invoke(app, ["explain", "mnist:test:12", "--model", "mnist", *args, "--out", str(tmp_path)])
    _one_line_error(r, "--decoder")
    dec = tmp_path / "gap_mirror.safetensors"
    r = runner.invoke(app, ["train-gen", "--model", "mnist", "--method", "mirror", "--max-steps", "3",
                            *args, "--out", str(dec)])
    assert r.exit_code == 0, r.output
    meta = __import__("cfe_cli.models.weights", fromlist=["x"]).read_metadata(dec)
    assert meta["info"]["external_classifier"] == "user_models:gap_net"
    r = runner.invoke(app, ["explain", "mnist:test:12", "--model", "mnist", *args, "--decoder", str(dec),
                            "--target", "3", "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    rec = json.loads((tmp_path / "o" / "metrics.json").read_text())["results"][0]
    assert rec["target"] == "3" and rec["first_cfe_k"] is None or 0 < rec["first_cfe_k"] <= 1
    # the shipped MNIST decoder belongs to another classifier: refused
    r = runner.invoke(app, ["explain", "mnist:test:12", "--model", "mnist", *args, "--decoder",
                            "weights/mnist/mirror.safetensors", "--out", str(tmp_path / "p")])
    _one_line_error(r, "trained for another classifier")


@pytest.mark.parametrize("case,words", [
    (["--classifier", "no_such_module_xyz:net", "--weights", "w.safetensors"], ["cannot import module"]),
    (["--classifier", "user_models:nope", "--weights", "w.safetensors"], ["has no 'nope'"]),
    (["--classifier", "user_models:not_a_module", "--weights", "w.safetensors"], ["not a torch.nn.Module"]),
    (["--classifier", "user_models:gap_net"], ["needs --weights"]),
    (["--classifier", "user_models:gap_net", "--weights", "missing.safetensors"], ["not found"]),
    (["--classifier", "user_models:gap_net", "--weights", "w.pt"], ["never unpickled"]),
])
def test_bad_user_classifier_options(case, words, tmp_path, monkeypatch):
    need("mnist")
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["explain", "mnist:test:12", "--model", "mnist", "--method", "attack", *case,
                            "--out", str(tmp_path / "o")])
    _one_line_error(r, *words)


def test_wrong_weights_and_class_count_and_pickles(user_weights, tmp_path):
    need("mnist")
    r = runner.invoke(app, ["explain", "mnist:test:12", "--model", "mnist", "--method", "attack",
                            "--classifier", "user_models:gap_net", "--weights", str(user_weights["flat_net"]),
                            "--out", str(tmp_path / "o")])
    _one_line_error(r, "does not match its architecture")
    net = user_models.ten_to_three()
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "three.safetensors"))
    r = runner.invoke(app, ["explain", "mnist:test:12", "--model", "mnist", "--method", "attack",
                            "--classifier", "user_models:ten_to_three",
                            "--weights", str(tmp_path / "three.safetensors"),
                            "--out", str(tmp_path / "o")])
    _one_line_error(r, "returns 3 logits", "10 classes")
    # a pickled checkpoint passed as a "TorchScript" file is refused, never unpickled
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"state": 1}))
    r = runner.invoke(app, ["explain", "mnist:test:12", "--model", "mnist", "--method", "attack",
                            "--classifier", str(evil), "--out", str(tmp_path / "o")])
    _one_line_error(r, "not a TorchScript archive")


def test_exported_program_serves_the_latent_methods(tmp_path):
    """A torch.export archive (.pt2) loads and predicts; Mirror-CFE says why it cannot use it."""
    from cfe_cli.models.external import wrap_classifier

    net = user_models.gap_net().eval()
    ep = torch.export.export(net, (torch.rand(2, 1, 28, 28),),
                             dynamic_shapes=({0: torch.export.Dim("b", min=1, max=4096)},))
    torch.export.save(ep, str(tmp_path / "net.pt2"))
    w = wrap_classifier(str(tmp_path / "net.pt2"), None, resolution=28, channels=1, num_classes=10)
    x = torch.rand(5, 1, 28, 28)
    assert torch.allclose(w(x), net(x), atol=1e-5)
    assert "exported program" in w.mirror_problem


def test_decoder_option_refuses_a_vae_file(tmp_path):
    """--decoder must be a Mirror-CFE decoder: a VAE file is refused in one line."""
    need("mnist")
    r = runner.invoke(app, ["explain", "mnist:test:12", "--model", "mnist", "--decoder",
                            "weights/mnist/vae.safetensors", "--out", str(tmp_path)])
    _one_line_error(r, "holds a 'vae', not a mirror generator")
