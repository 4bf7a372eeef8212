"""L_match (cfe_cli/realism.py): texture statistics of decoded images vs real images of their class."""

from __future__ import annotations

import pytest
import torch

from cfe_cli.errors import InputError
from cfe_cli.realism import class_statistics, match_distance, match_loss, stage_statistics


def _table(num_classes: int = 3, seed: int = 0):
    """Real 'stage maps' of 3 classes that differ in mean and spread, and their class table."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(90, 2, 6, 6, generator=g)  # (N, C, h, w) stand-in for a stage map
    labels = torch.arange(90) % num_classes
    images = images * (1 + labels[:, None, None, None]) + 3 * labels[:, None, None, None]
    return images, labels, class_statistics(lambda x: [x], images, labels, num_classes)


def test_statistics_are_channel_means_and_stds():
    f = torch.arange(2 * 3 * 4.0).reshape(1, 2, 3, 4)
    (s,) = stage_statistics([f])
    assert s.shape == (1, 4)
    torch.testing.assert_close(s[0, :2], f.mean(dim=(2, 3))[0])
    torch.testing.assert_close(s[0, 2:], f.flatten(2).std(dim=2, unbiased=False)[0], atol=1e-5, rtol=0)


def test_zero_for_the_class_mean_and_for_typical_real_images():
    images, labels, (means, stds) = _table()
    at_mean = [means[0][labels[:4]]]  # statistics equal to each class's mean
    assert torch.equal(match_distance(at_mean, labels[:4], means, stds, margin=0.0), torch.zeros(4))
    d_real = match_distance(stage_statistics([images]), labels, means, stds, margin=1.0)
    assert (d_real == 0).float().mean() > 0.15  # within one spread in all 4 statistics: no cost
    assert d_real.mean() < 0.2  # the rest little beyond it
    wrong = (labels + 1) % 3  # the same real images held against another class cost much more
    d_wrong = match_distance(stage_statistics([images]), wrong, means, stds, margin=1.0)
    assert d_wrong.mean() > 10 * d_real.mean() + 0.5


def test_distance_is_linear_in_spreads_and_unit_free():
    _, _, (means, stds) = _table()
    cls = torch.tensor([0, 1, 2])
    off = [means[0][cls] + 2 * stds[0][cls]]  # two spreads off in every statistic
    torch.testing.assert_close(match_distance(off, cls, means, stds, margin=0.0), torch.full((3,), 2.0))
    torch.testing.assert_close(match_distance(off, cls, means, stds, margin=1.0), torch.full((3,), 1.0))
    scaled = match_distance([100 * off[0]], cls, [100 * means[0]], [100 * stds[0]], margin=1.0)
    torch.testing.assert_close(scaled, torch.full((3,), 1.0))  # the unit of a stage does not matter


def test_only_samples_past_the_boundary_count_and_gradients_reach_the_decoder():
    """relu(2k - 1) weights: k <= 0.5 adds nothing; the gradient flows through the stage maps
    into the decoder's parameters."""
    torch.manual_seed(0)
    images, labels, (means, stds) = _table()
    decoder = torch.nn.Conv2d(2, 2, 3, padding=1)
    z = torch.randn(4, 2, 6, 6)
    cls = torch.tensor([0, 1, 2, 0])
    loss = match_loss([decoder(z)], cls, torch.tensor([0.1, 0.5, 0.3, 0.0]), means, stds)
    assert loss == 0
    loss = match_loss([decoder(z)], cls, torch.tensor([1.0, 0.9, 0.2, 0.75]), means, stds)
    assert loss > 0
    loss.backward()
    assert decoder.weight.grad is not None and decoder.weight.grad.abs().sum() > 0
    # equal weights at k = 1: the loss is the mean distance
    torch.testing.assert_close(match_loss([z], cls, torch.ones(4), means, stds),
                               match_distance(stage_statistics([z]), cls, means, stds).mean())


def test_match_classes_count_only_the_marked_classes():
    """classes (K,) bool: samples meant to show an unmarked class add nothing; with every class
    marked it is the plain loss; with none marked it is 0 and still differentiable."""
    torch.manual_seed(0)
    _, _, (means, stds) = _table()
    decoder = torch.nn.Conv2d(2, 2, 3, padding=1)
    z = torch.randn(4, 2, 6, 6)
    cls, k = torch.tensor([0, 1, 2, 0]), torch.ones(4)
    d = match_distance(stage_statistics([z]), cls, means, stds)
    only0 = torch.tensor([True, False, False])
    torch.testing.assert_close(match_loss([z], cls, k, means, stds, classes=only0), d[cls == 0].mean())
    torch.testing.assert_close(match_loss([z], cls, k, means, stds, classes=torch.ones(3, dtype=torch.bool)),
                               match_loss([z], cls, k, means, stds))
    none = match_loss([decoder(z)], cls, k, means, stds, classes=torch.zeros(3, dtype=torch.bool))
    assert none == 0
    none.backward()  # no sample counts, yet the graph is whole (a batch without the class trains on)
    loss = match_loss([decoder(z)], cls, k, means, stds, classes=torch.tensor([False, True, False]))
    assert loss > 0
    decoder.zero_grad()
    loss.backward()
    assert decoder.weight.grad.abs().sum() > 0


def test_bad_values_are_input_errors():
    images, labels, (means, stds) = _table()
    with pytest.raises(InputError, match="margin"):
        match_distance(stage_statistics([images[:2]]), labels[:2], means, stds, margin=-1.0)
    with pytest.raises(InputError, match="at least two real images"):
        class_statistics(lambda x: [x], images[:3], torch.tensor([0, 0, 1]), 3)  # class 2 has none


def test_train_gen_records_the_weight_and_rejects_bad_values(tmp_path):
    """train-gen --lambda-match: the loss runs in train_mirror (history has 'match'), is stored in
    the decoder's metadata, and a negative weight is a one-line error."""
    from typer.testing import CliRunner

    from cfe_cli.cli import app
    from cfe_cli.models.weights import read_metadata
    from tests.conftest import need

    root = need("mnist")
    out = tmp_path / "m.safetensors"
    runner = CliRunner()
    r = runner.invoke(app, ["train-gen", "--model", "mnist", "--init", "weights/mnist/mirror.safetensors",
                            "--max-steps", "2", "--batch-size", "16", "--lambda-match", "10", "--out", str(out),
                            "--data-dir", str(root), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    info = read_metadata(out)["info"]
    assert info["train"]["lambda_match"] == 10.0
    assert info["history"][-1]["match"] >= 0
    r = runner.invoke(app, ["train-gen", "--model", "mnist", "--max-steps", "1", "--lambda-match", "-1",
                            "--out", str(tmp_path / "x.safetensors"), "--data-dir", str(root), "--device", "cpu"])
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 1 and len(lines) == 1 and "--lambda-match must be 0 or more" in lines[0], r.output
    for flags, message in ((["--lambda-match", "1", "--match-classes", "eight"], "unknown class 'eight'"),
                           (["--match-classes", "3"], "--match-classes needs --lambda-match")):
        r = runner.invoke(app, ["train-gen", "--model", "mnist", "--max-steps", "1", *flags,
                                "--out", str(tmp_path / "x.safetensors"), "--data-dir", str(root), "--device", "cpu"])
        lines = [ln for ln in r.output.splitlines() if ln.strip()]
        assert r.exit_code == 1 and len(lines) == 1 and message in lines[0], r.output


def test_train_gen_match_classes_are_stored_as_indices(tmp_path):
    """--match-classes 3,8 (names or indices) reaches the run and the decoder's metadata."""
    from typer.testing import CliRunner

    from cfe_cli.cli import app
    from cfe_cli.models.weights import read_metadata
    from tests.conftest import need

    root = need("mnist")
    out = tmp_path / "m.safetensors"
    r = CliRunner().invoke(app, ["train-gen", "--model", "mnist", "--init", "weights/mnist/mirror.safetensors",
                                 "--max-steps", "1", "--batch-size", "16", "--lambda-match", "10",
                                 "--match-classes", "8,3", "--out", str(out), "--data-dir", str(root),
                                 "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert read_metadata(out)["info"]["train"]["match_classes"] == [3, 8]
