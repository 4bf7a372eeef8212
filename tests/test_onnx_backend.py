"""--backend onnx: Mirror-CFE's decoder and classifier on ONNX Runtime give the torch path's verdicts."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from cfe_cli.onnx_backend import available

pytestmark = pytest.mark.skipif(not available(), reason="needs cfe[onnx] (onnxruntime, onnx, onnxscript)")
runner = CliRunner()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfe-cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("CFE_CACHE_DIR", str(path))
    yield path / "onnx"
    mp.undo()


def test_same_first_cfe_as_torch_and_exported_once(cache, data_root):
    """On 24 MNIST test images the 1st-CFE index, found and the decoded images equal the float32 torch
    path's (images within 1e-4); a second explainer reuses the cached export instead of exporting again."""
    from cfe_cli import api
    from cfe_cli.data import load_dataset

    x = load_dataset("mnist", "test", root=data_root).images[:24]
    ref = api.Explainer("mnist", "mirror", device="cpu", precision="fp32").run(x, None)
    ort = api.Explainer("mnist", "mirror", device="cpu", backend="onnx")
    assert ort.precision == "fp32"  # auto is float32 with ONNX Runtime, whatever bf16 units the CPU has
    got = ort.run(x, None)
    assert torch.equal(got.found, ref.found) and torch.equal(got.k, ref.k) and torch.equal(got.steps, ref.steps)
    assert (got.x_cf - ref.x_cf).abs().max() < 1e-4
    assert (got.cf_probs - ref.cf_probs).abs().max() < 1e-4
    files = sorted(p for p in cache.rglob("*") if p.is_file())
    assert len(list(cache.iterdir())) == 2 and any(p.name == "model.onnx" for p in files)  # decoder, classifier
    stamps = [p.stat().st_mtime_ns for p in files]
    api.Explainer("mnist", "mirror", device="cpu", backend="onnx").run(x[:2], None)
    assert sorted(p for p in cache.rglob("*") if p.is_file()) == files
    assert [p.stat().st_mtime_ns for p in files] == stamps


def test_cli_backend_and_its_errors(cache, data_root, tmp_path):
    from cfe_cli.cli import app

    r = runner.invoke(app, ["explain", "mnist:test:3", "--model", "mnist", "--backend", "onnx", "--out",
                            str(tmp_path / "o"), "--data-dir", str(data_root)])
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert meta["options"] == {"backend": "onnx"} and meta["results"][0]["valid"] is not None
    for extra, words in ((["--backend", "nope"], "unknown --backend 'nope'"),
                         (["--backend", "onnx", "--precision", "bf16"], "--precision fp32"),
                         (["--backend", "onnx", "--compile"], "choose one"),
                         (["--method", "pgd", "--backend", "onnx"], "--backend is not an option of --method pgd")):
        r = runner.invoke(app, ["explain", "mnist:test:3", "--model", "mnist", "--out", str(tmp_path / "e"),
                                "--data-dir", str(data_root), *extra])
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.exit_code == 1 and len(lines) == 1 and words in lines[0], r.output
