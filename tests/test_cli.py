"""The CLI lists its commands, reports bad input in one line, and exits non-zero."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from cfe_cli.cli import app
from tests.conftest import ROOT

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


def test_models_json_lists_shipped(data_root):
    """`cfe models --json` lists the shipped classifiers, and the accuracy it shows is real."""
    from cfe_cli import api
    from cfe_cli.data import load_dataset

    r = runner.invoke(app, ["models", "--json"])
    assert r.exit_code == 0
    found = {m["name"]: m for m in json.loads(r.stdout)}
    assert {"mnist", "fashion-mnist", "bloodmnist"} <= set(found)
    for m in found.values():
        assert 0.0 < m["test_accuracy"] <= 1.0 and m["classes"]
    # re-measure the MNIST model on its test split: the metadata holds the measured value
    test = load_dataset("mnist", "test", root=data_root)
    acc = float((api.predict(api.load_model("mnist"), test.images).argmax(1) == test.labels).float().mean())
    assert abs(acc - found["mnist"]["test_accuracy"]) < 1e-4


def test_datasets_lists_found(data_root):
    r = runner.invoke(app, ["datasets", "--json", "--data-dir", str(data_root)])
    assert r.exit_code == 0
    names = {d["name"] for d in json.loads(r.stdout)}
    assert {"mnist", "fashion-mnist", "bloodmnist"} <= names


def test_explain_bf16_records_precision_and_bad_precision_is_one_line(tmp_path):
    r = runner.invoke(app, ["explain", "examples/mnist_8.png", "--model", "mnist", "--target", "3", "--label", "8",
                            "--method", "attack", "--precision", "bf16", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "metrics.json").read_text())
    assert doc["precision"] == "bf16"
    rec = doc["results"][0]
    assert rec["valid"] and rec["cf_pred"] == "3"
    r = runner.invoke(app, ["explain", "examples/mnist_8.png", "--model", "mnist", "--precision", "fp16",
                            "--out", str(tmp_path / "b")])
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.exit_code == 1 and len(lines) == 1 and "unknown precision 'fp16'" in lines[0]


def test_models_lists_the_celeba_recipes_until_trained(tmp_path, monkeypatch):
    """CelebA models cannot ship: `cfe models` lists their recipes (measured accuracy, build command),
    `--model celeba-mouth` says how to build it in one line, and a trained copy takes the recipe's place."""
    import shutil

    monkeypatch.delenv("CFE_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    found = {m["name"]: m for m in json.loads(runner.invoke(app, ["models", "--json"]).stdout)}
    mouth = found["celeba-mouth"]
    assert mouth["installed"] is False and mouth["test_accuracy"] >= 0.90
    assert mouth["classes"] == ["closed mouth", "slightly opened mouth"] and "train_celeba.sh" in mouth["train"]
    assert found["celeba-smiling"]["installed"] is False and found["mnist"]["installed"] is True
    r = runner.invoke(app, ["explain", "examples/mnist_8.png", "--model", "celeba-mouth", "--out", str(tmp_path / "o")])
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.exit_code == 1 and len(lines) == 1 and "not installed" in lines[0] and "train_celeba.sh" in lines[0]
    # a trained copy in the user's cache replaces the recipe (here: any classifier file stands in)
    dst = tmp_path / "cache" / "cfe" / "weights" / "celeba-mouth"
    dst.mkdir(parents=True)
    shutil.copy("weights/mnist/classifier.safetensors", dst / "classifier.safetensors")
    found = {m["name"]: m for m in json.loads(runner.invoke(app, ["models", "--json"]).stdout)}
    assert found["celeba-mouth"]["installed"] is True and found["celeba-mouth"]["path"] == str(dst)


def test_compile_is_refused_outside_mirror(tmp_path):
    r = runner.invoke(app, ["explain", "examples/mnist_8.png", "--model", "mnist", "--method", "attack", "--compile",
                            "--out", str(tmp_path)])
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.exit_code == 1 and len(lines) == 1 and "--compile is for --method mirror" in lines[0]


def test_bad_csp_thresholds_are_one_line(tmp_path):
    out = str(tmp_path / "d.safetensors")
    for args, msg in ((["--skips", "--csp-rho", "0.5"], "--csp-rho takes LOW,HIGH"),
                      (["--skips", "--csp-rho", "0.8,0.3"], "0 <= LOW <= HIGH <= 1"),
                      (["--csp-rho", "0.3,0.8"], "belong to a skip decoder")):
        r = runner.invoke(app, ["train-gen", "--model", "mnist", "--max-steps", "1", "--out", out, *args])
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.exit_code == 1 and len(lines) == 1 and msg in lines[0], r.output


def test_method_option_panels_match_the_registry():
    """The help panels are written out (no torch import for --help); they must name the registry's owners."""
    from cfe_cli.cli.app import METHOD_PANELS
    from cfe_cli.methods import option_owners

    for key, owners in METHOD_PANELS.items():
        assert owners == ", ".join(option_owners(key)), key


def test_cli_imports_without_torch():
    import subprocess
    import sys

    code = "import sys, cfe_cli.cli; print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.stdout.strip() == "False", r.stderr


def test_models_table_fits_80_columns_without_cutting_names():
    """At 80 columns every model and class name is shown whole (wrapped between words, never "eosinophi…");
    the columns left out are named under the table."""
    import sys

    console = sys.modules["cfe_cli.cli.app"].console
    saved = console._width  # None: the console follows the terminal, which later tests rely on
    console.width = 80
    try:
        r = runner.invoke(app, ["models"])
    finally:
        console._width = saved
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert max(len(ln) for ln in lines) <= 80
    assert "…" not in r.stdout
    words = " ".join(ln.strip("│ ") for ln in lines)
    for name in ("bloodmnist", "fashion-mnist", "eosinophil", "erythroblast", "Ankle boot"):
        assert name in words or name.replace(" ", "") in words.replace(" ", "")
    assert "not shown at this width" in r.stdout and "--wide" in r.stdout
