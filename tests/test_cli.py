"""The CLI lists its commands, reports bad input in one line, and exits non-zero."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from cfe_cli.cli import app

runner = CliRunner()
COMMANDS = ("train-clf", "train-gen", "explain", "animate", "evaluate", "models", "datasets")


def test_help_lists_every_command():
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0
    for cmd in COMMANDS:
        assert cmd in r.output
    for cmd in COMMANDS:
        assert runner.invoke(app, [cmd, "--help"]).exit_code == 0


def test_bad_data_dir_one_line(tmp_path):
    r = runner.invoke(app, ["datasets", "--data-dir", str(tmp_path / "nope")])
    assert r.exit_code == 1
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "data directory not found" in lines[0]
    assert "Traceback" not in r.output
    r = runner.invoke(app, ["train-clf", "--dataset", "mnist", "--out", str(tmp_path / "o"),
                            "--data-dir", str(tmp_path / "nope")])
    assert r.exit_code == 1 and "data directory not found" in r.stderr


def test_cuda_absent_is_clean_error(tmp_path):
    import torch

    if torch.cuda.is_available():
        return
    r = runner.invoke(app, ["train-clf", "--dataset", "mnist", "--out", str(tmp_path), "--device", "cuda"])
    assert r.exit_code == 1 and "CUDA is not available" in r.stderr


def test_models_json_lists_shipped(tmp_path):
    r = runner.invoke(app, ["models", "--json"])
    assert r.exit_code == 0
    found = {m["name"]: m for m in json.loads(r.stdout)}
    for name, target in (("mnist", 0.985), ("fashion-mnist", 0.92), ("bloodmnist", 0.94)):
        if name in found:
            assert found[name]["test_accuracy"] >= target


def test_datasets_lists_found(data_root):
    r = runner.invoke(app, ["datasets", "--json", "--data-dir", str(data_root)])
    assert r.exit_code == 0
    names = {d["name"] for d in json.loads(r.stdout)}
    assert {"mnist", "fashion-mnist", "bloodmnist"} <= names
