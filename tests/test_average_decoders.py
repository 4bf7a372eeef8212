"""benchmarks/average_decoders.py: weight-space interpolation of two decoders (the shipped Fashion-MNIST
decoder is such an average)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from cfe_cli.models.weights import read_metadata

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("average_decoders", ROOT / "benchmarks" / "average_decoders.py")
average_decoders = importlib.util.module_from_spec(spec)
spec.loader.exec_module(average_decoders)


def _tensors(path):
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def test_interpolates_tensor_by_tensor_and_records_both_sources(tmp_path):
    a = ROOT / "weights" / "mnist" / "mirror.safetensors"
    ta, meta = _tensors(a)
    b = tmp_path / "b.safetensors"  # the same decoder with every weight shifted by +1
    save_file({k: v + 1 if v.is_floating_point() else v for k, v in ta.items()}, str(b), metadata=meta)
    out = tmp_path / "c.safetensors"
    assert average_decoders.main([str(a), str(b), "--alpha", "0.25", "--out", str(out)]) == 0
    tc, _ = _tensors(out)
    for k, v in ta.items():
        if v.is_floating_point():
            torch.testing.assert_close(tc[k], v + 0.25)
    info = read_metadata(out)["info"]
    assert info["averaged"]["alpha"] == 0.25 and info["averaged"]["b"]["file"] == str(b)
    assert read_metadata(out)["config"] == read_metadata(a)["config"]
    from cfe_cli.models.weights import load_decoder

    decoder, _ = load_decoder(tmp_path, file=out)  # the file loads as a decoder
    torch.testing.assert_close(decoder.state_dict()[next(iter(decoder.state_dict()))].float(),
                               tc[next(iter(decoder.state_dict()))].float())


def test_other_architectures_and_bad_alpha_are_refused(tmp_path):
    a = ROOT / "weights" / "mnist" / "mirror.safetensors"
    b = ROOT / "weights" / "bloodmnist" / "mirror.safetensors"  # 3 channels, other skips
    with pytest.raises(SystemExit, match="same tensors|different architectures"):
        average_decoders.main([str(a), str(b), "--alpha", "0.5", "--out", str(tmp_path / "x.safetensors")])
    with pytest.raises(SystemExit, match="--alpha must be in"):
        average_decoders.main([str(a), str(a), "--alpha", "1.5", "--out", str(tmp_path / "x.safetensors")])
