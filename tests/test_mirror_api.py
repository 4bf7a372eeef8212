"""MirrorCFE.explain from Python: a target equal to the prediction is reported like the CLI does, and an
unfound k is -1 (valid JSON), never NaN. Shipped MNIST classifier and decoder, real test digits."""

from __future__ import annotations

import json

import torch

from cfe_cli import api
from cfe_cli.data import load_dataset
from cfe_cli.methods.mirror import MirrorCFE
from cfe_cli.models.weights import load_decoder
from tests.conftest import need


def test_target_equal_to_prediction_is_not_found_and_k_is_never_nan():
    x = load_dataset("mnist", "test", root=need("mnist")).images[:16]
    clf = api.load_model("mnist", device="cpu")
    dec, _ = load_decoder(api.resolve_model("mnist"))
    m = MirrorCFE(clf.model, dec)
    pred = api.predict(clf, x)
    source, runner_up = pred.argmax(1), pred.topk(2, dim=1).indices[:, 1]
    target = runner_up.clone()
    target[::2] = source[::2]  # every other row asks for its own prediction
    out = m.explain(x, target)
    same = torch.zeros(16, dtype=torch.bool)
    same[::2] = True
    assert torch.equal(out["target_is_source"].cpu(), same)
    assert not out["found"][same].any()
    assert (out["index"][same] == -1).all() and (out["k"][same] == -1).all()
    assert torch.equal(out["x_cf"][same], out["x_reflection"][same])
    # no NaN anywhere: k of every unfound row is -1, so the tensor round-trips through strict JSON
    assert not out["k"].isnan().any()
    assert torch.equal(out["k"] == -1, ~out["found"])
    json.dumps(out["k"].tolist(), allow_nan=False)
    # the other rows are explained exactly as in a batch without the same-class rows
    alone = m.explain(x[~same], runner_up[~same])
    for key in ("found", "index", "k"):
        assert torch.equal(out[key][~same], alone[key]), key
    assert out["found"][~same].float().mean() >= 0.75  # real counterfactuals for the genuine pairs
    assert torch.allclose(out["x_cf"][~same], alone["x_cf"], atol=1e-5)
