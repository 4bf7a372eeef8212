"""DDP training under torchrun (2 gloo ranks on CPU) against one process with the same global batch:
the same loss curve and weights within the stated tolerance; rank 0 saves; --time-limit agreed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from cfe_cli import api
from tests.conftest import need
from tests.test_distributed import torchrun


def _info(path: Path) -> dict:
    with safe_open(str(path), "pt") as f:
        return json.loads(f.metadata()["info"])


def _max_diff(a: Path, b: Path) -> dict[str, float]:
    wa, wb = load_file(str(a)), load_file(str(b))
    assert wa.keys() == wb.keys()
    return {k: float((wa[k].double() - wb[k].double()).abs().max()) for k in wa}


def _losses(history: list[dict]) -> list[float]:
    return [v for h in history for k, v in h.items() if k not in ("epoch", "phase") and isinstance(v, float)]


def test_train_clf_two_ranks_equal_one_process(tmp_path):
    """Tolerance: loss curve to 1e-5 relative; weights to 2e-3 absolute. AdamW turns the float-order
    noise of a near-zero gradient (~1e-7) into a ±lr step, so single weights may move by up to
    ~lr · steps (3 steps of lr ≤ 3e-3 here); the function they compute agrees (same test accuracy)."""
    args = ["--dataset", "mnist", "--epochs", "1", "--max-steps", "3", "--batch-size", "16", "--arch", "resnet-s",
            "--device", "cpu", "--data-dir", str(need("mnist"))]
    one = api.train_clf("mnist", out=tmp_path / "one", epochs=1, max_steps=3, batch_size=16, arch="resnet-s",
                        device="cpu", data_dir=need("mnist"))
    r = torchrun(["train-clf", *args, "--out", str(tmp_path / "two")])
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("test accuracy") == 1  # rank 0 reports
    two = tmp_path / "two" / "classifier.safetensors"
    info = _info(two)
    assert info["processes"] == 2
    assert info["test_accuracy"] == pytest.approx(one["test_accuracy"], abs=1e-3)
    assert _losses(info["history"]) == pytest.approx(_losses(_info(Path(one["path"]))["history"]), rel=1e-5)
    diff = _max_diff(Path(one["path"]), two)
    assert max(diff.values()) < 2e-3, max(diff.items(), key=lambda kv: kv[1])
    assert diff["stem.1.running_mean"] < 1e-5  # BatchNorm statistics over the global batch, not per rank


def test_train_clf_batch_must_split_evenly(tmp_path):
    r = torchrun(["train-clf", "--dataset", "mnist", "--batch-size", "15", "--max-steps", "1", "--device", "cpu",
                  "--data-dir", str(need("mnist")), "--out", str(tmp_path / "o")])
    assert r.returncode != 0
    assert "--batch-size 15 is the global batch: give a multiple of the 2 processes" in r.stderr
    assert "cfe_cli/" not in r.stderr  # one line per rank; the only traceback is torchrun's own summary


@pytest.mark.slow
def test_train_gen_mirror_and_vae_two_ranks_equal_one_process(tiny_model, tmp_path):
    """Mirror-CFE's decoder and D have no batch statistics: weights equal to 1e-6. The VAE's encoder
    has BatchNorm (global-batch statistics) and Adam: its loss curve to 1e-5, weights as train-clf's
    bound (biases before a BatchNorm get a zero gradient that Adam turns into ±lr steps)."""
    for method, steps in (("mirror", 3), ("vae", 3)):
        folders = {}
        for name in ("one", "two"):
            folders[name] = tmp_path / f"{method}-{name}"
            shutil.copytree(tiny_model, folders[name])
        args = ["--method", method, "--epochs", "1", "--max-steps", str(steps), "--batch-size", "16", "--device",
                "cpu", "--data-dir", str(need("mnist"))]
        one = api.train_gen(folders["one"], method=method, epochs=1, max_steps=steps, batch_size=16, device="cpu",
                            data_dir=need("mnist"))
        r = torchrun(["train-gen", "--model", str(folders["two"]), *args])
        assert r.returncode == 0, r.stderr[-3000:]
        file = f"{method}.safetensors"
        two_info = _info(folders["two"] / file)
        assert _losses(two_info["history"]) == pytest.approx(_losses(one["history"]), rel=1e-5)
        diff = _max_diff(folders["one"] / file, folders["two"] / file)
        # mirror: 5.4e-8 on the AVX2 VM, 4.6e-6 on an AVX-512 one (gloo's and the kernels' summation order)
        assert max(diff.values()) < (1e-4 if method == "mirror" else 1e-2), method


@pytest.mark.slow
def test_time_limit_stops_every_rank_at_the_same_step(tiny_model, tmp_path):
    """Each rank judges the limit on the slowest clock: no rank waits in a collective for another
    that stopped (the run would hang), and the saved history names the step."""
    model = tmp_path / "m"
    shutil.copytree(tiny_model, model)
    r = torchrun(["train-gen", "--model", str(model), "--method", "mirror", "--epochs", "1", "--max-steps", "500",
                  "--batch-size", "16", "--time-limit", "2", "--device", "cpu", "--data-dir", str(need("mnist"))])
    assert r.returncode == 0, r.stderr[-3000:]
    last = _info(model / "mirror.safetensors")["history"][-1]
    assert 0 < last["stopped_at_step"] < 500
    assert "stopped at the time limit" in r.stdout
    assert torch.isfinite(torch.tensor(_losses([last]))).all()
