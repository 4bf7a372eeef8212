"""Adversarial training (train-clf --adv-eps) and L_critic (train-gen --critic), issue 28 item 4."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from cfe_cli.cli import app
from cfe_cli.errors import InputError
from cfe_cli.realism import critic_loss
from cfe_cli.training.loops import evaluate_accuracy, l2_pgd
from tests.conftest import need


def _one_line_error(r, message: str) -> None:
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 1 and len(lines) == 1 and message in lines[0], r.output


@pytest.fixture(scope="module")
def mnist():
    from cfe_cli.data import load_dataset
    from cfe_cli.models.weights import load_classifier

    root = need("mnist")
    return load_classifier("weights/mnist/classifier.safetensors").model, load_dataset("mnist", "test", root=root)


def test_l2_pgd_stays_in_the_ball_and_the_box_and_raises_the_loss(mnist):
    model, test = mnist
    x, y = test.images[:64], test.labels[:64]
    x_adv = l2_pgd(model, x, y, eps=1.0, steps=5)
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert (x_adv - x).flatten(1).norm(dim=1).max() <= 1.0 + 1e-4
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        assert F.cross_entropy(model(x_adv), y) > F.cross_entropy(model(x), y) + 0.1
    assert all(p.grad is None for p in model.parameters())


def test_robust_accuracy_of_a_standard_classifier_falls_under_attack(mnist):
    """The shipped (standard) MNIST classifier: clean accuracy on 200 real test digits is high, at
    L2 radius 2 far lower; radius 0 is the clean accuracy."""
    model, test = mnist
    clean = evaluate_accuracy(model, test, limit=200)
    assert clean > 0.95
    assert evaluate_accuracy(model, test, limit=200, adv_eps=0.0) == clean
    assert evaluate_accuracy(model, test, limit=200, adv_eps=2.0, adv_steps=10) < clean - 0.3


def test_train_clf_adv_eps_records_the_robust_accuracy_and_rejects_bad_values(tmp_path):
    from cfe_cli.models.weights import read_metadata

    root = need("mnist")
    runner = CliRunner()
    r = runner.invoke(app, ["train-clf", "--dataset", "mnist", "--arch", "convnet", "--epochs", "1", "--max-steps", "3",
                            "--adv-eps", "0.5", "--adv-steps", "2", "--out", str(tmp_path / "m"),
                            "--data-dir", str(root), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "robust accuracy" in r.output
    info = read_metadata(tmp_path / "m" / "classifier.safetensors")["info"]
    assert info["train"]["adv_eps"] == 0.5 and info["train"]["adv_steps"] == 2
    assert 0.0 <= info["robust_test_accuracy"] <= 1.0
    assert info["robust_eval"] == {"eps": 0.5, "steps": 10, "n": 1000}
    for flags, message in ((["--adv-eps", "-1"], "--adv-eps must be in [0, 10]"),
                           (["--adv-eps", "0.5", "--adv-steps", "0"], "--adv-steps must be in [1, 100]")):
        r = runner.invoke(app, ["train-clf", "--dataset", "mnist", "--max-steps", "1", *flags,
                                "--out", str(tmp_path / "x"), "--data-dir", str(root), "--device", "cpu"])
        _one_line_error(r, message)


def test_critic_loss_counts_only_samples_past_the_boundary():
    """relu(2k - 1) weights: k <= 0.5 adds nothing; at k = 1 it is the mean cross-entropy; the
    gradient reaches the decoder through the critic."""
    torch.manual_seed(0)
    decoder = torch.nn.Conv2d(1, 1, 3, padding=1)
    critic = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 3)).requires_grad_(False)
    z = torch.randn(4, 1, 6, 6)
    cls = torch.tensor([0, 1, 2, 0])
    assert critic_loss(critic(decoder(z)), cls, torch.tensor([0.1, 0.5, 0.3, 0.0])) == 0
    logits = critic(z)
    torch.testing.assert_close(critic_loss(logits, cls, torch.ones(4)), F.cross_entropy(logits, cls))
    # weights: k = 0.75 counts half as much as k = 1
    manual = (F.cross_entropy(logits, cls, reduction="none") * torch.tensor([1.0, 0.5, 0.0, 0.0])).sum() / 1.5
    torch.testing.assert_close(critic_loss(logits, cls, torch.tensor([1.0, 0.75, 0.5, 0.2])), manual)
    only0 = torch.tensor([True, False, False])
    torch.testing.assert_close(critic_loss(logits, cls, torch.ones(4), classes=only0),
                               F.cross_entropy(logits[cls == 0], cls[cls == 0]))
    loss = critic_loss(critic(decoder(z)), cls, torch.tensor([1.0, 0.9, 0.2, 0.75]))
    assert loss > 0
    loss.backward()
    assert decoder.weight.grad is not None and decoder.weight.grad.abs().sum() > 0
    with pytest.raises(InputError, match="must agree"):
        critic_loss(logits, cls[:3], torch.ones(3))


def test_train_gen_critic_trains_records_and_rejects_bad_values(tmp_path):
    """--critic FILE --lambda-critic W: the loss runs (history has 'critic'), the decoder's metadata
    records both; a missing weight or file, or a critic of another dataset, is a one-line error."""
    from cfe_cli.models.weights import read_metadata

    root = need("mnist")
    out = tmp_path / "m.safetensors"
    runner = CliRunner()
    critic = "weights/mnist/oracle.safetensors"  # any classifier of the dataset works for the plumbing
    r = runner.invoke(app, ["train-gen", "--model", "mnist", "--init", "weights/mnist/mirror.safetensors",
                            "--max-steps", "2", "--batch-size", "16", "--critic", critic, "--lambda-critic", "1",
                            "--out", str(out), "--data-dir", str(root), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    info = read_metadata(out)["info"]
    assert info["train"]["lambda_critic"] == 1.0 and info["train"]["critic"] == critic
    assert info["history"][-1]["critic"] > 0
    base = ["train-gen", "--model", "mnist", "--max-steps", "1", "--out", str(tmp_path / "x.safetensors"),
            "--data-dir", str(root), "--device", "cpu"]
    for flags, message in ((["--critic", critic], "--critic and --lambda-critic go together"),
                           (["--lambda-critic", "1"], "--critic and --lambda-critic go together"),
                           (["--critic", str(tmp_path / "none.safetensors"), "--lambda-critic", "1"], "no such file"),
                           (["--critic", "weights/bloodmnist/classifier.safetensors", "--lambda-critic", "1"],
                            "reads 3-channel 28² images into 8 classes"),
                           (["--critic", critic, "--lambda-critic", "-1"], "--lambda-critic must be 0 or more")):
        _one_line_error(runner.invoke(app, base + flags), message)
