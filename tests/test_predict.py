"""`cfe predict`: the shipped MNIST classifier's probabilities for files, folders and dataset references."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from cfe_cli import api
from cfe_cli.cli import app
from cfe_cli.data import load_dataset, load_image
from cfe_cli.errors import InputError
from cfe_cli.predicting import predict_inputs
from tests.conftest import ROOT, need

runner = CliRunner()
EIGHT = ROOT / "examples" / "mnist_8.png"


def test_predict_inputs_matches_the_classifier(tmp_path):
    """Every record is the classifier's own softmax, top-K sorted; a folder expands to its images."""
    folder = tmp_path / "digits"
    folder.mkdir()
    shutil.copy(EIGHT, folder / "a.png")
    shutil.copy(ROOT / "examples" / "mnist_9.png", folder / "b.png")
    r = predict_inputs([str(EIGHT), str(folder)], model="mnist", top=4, device="cpu", label="8")
    assert [rec["input"] for rec in r["results"]] == [str(EIGHT), str(folder / "a.png"), str(folder / "b.png")]
    assert r["failures"] == [] and r["classes"] == [str(i) for i in range(10)]
    probs = api.predict(api.load_model("mnist"), load_image(EIGHT)[None])[0]
    rec = r["results"][0]
    assert rec["prediction"] == str(int(probs.argmax())) == "8" and rec["gt"] == "8"
    assert rec["confidence"] == pytest.approx(float(probs.max()), abs=1e-5)
    ps = [c["probability"] for c in rec["top"]]
    assert len(ps) == 4 and ps == sorted(ps, reverse=True)
    assert {c["class"]: c["probability"] for c in rec["top"]}["5"] == pytest.approx(float(probs[5]), abs=1e-5)
    assert r["results"][2]["prediction"] == "9"
    # more than the number of classes lists them all
    assert len(predict_inputs([str(EIGHT)], model="mnist", top=50, device="cpu")["results"][0]["top"]) == 10
    with pytest.raises(InputError, match="--top"):
        predict_inputs([str(EIGHT)], model="mnist", top=0)


def test_cli_table_and_one_line_per_bad_input(tmp_path):
    root = need("mnist")
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    args = ["predict", str(EIGHT), "mnist:test:3", "mnist:test:99999", str(bad), str(tmp_path / "nope.png"),
            "--model", "mnist", "--top", "2", "--device", "cpu"]
    r = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert r.exit_code == 1  # some inputs failed
    assert "mnist_8.png" in r.stdout and "mnist:test:3" in r.stdout and "top 2" in r.stdout
    errors = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(errors) == 3 and all(ln.startswith("failed:") for ln in errors), r.stderr
    assert "out of range" in errors[0] and "bad.png" in errors[1] and "nope.png" in errors[2]
    assert "Traceback" not in r.output
    # JSON: the good inputs are still reported, with the dataset's label as ground truth
    r = runner.invoke(app, [*args, "--json"])
    assert r.exit_code == 1
    doc = json.loads(r.stdout)
    assert [rec["input"] for rec in doc["results"]] == [str(EIGHT), "mnist:test:3"]
    assert doc["results"][1]["gt"] == str(int(load_dataset("mnist", "test", root=root).labels[3]))
    assert len(doc["failures"]) == 3
    # all good: exit 0
    r = runner.invoke(app, ["predict", str(EIGHT), "--model", "mnist", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["results"][0]["prediction"] == "8"


def test_cli_unknown_model_is_one_line():
    r = runner.invoke(app, ["predict", str(EIGHT), "--model", "no-such-model"])
    assert r.exit_code == 1
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:")
