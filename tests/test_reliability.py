"""Bad input never crashes: clean one-line errors, batches that keep their good results,
kill-and-resume without partial or duplicate files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from cfe_cli.cli import app
from tests.conftest import need

runner = CliRunner()


def _one_line_error(r) -> str:
    assert r.exit_code == 1, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in r.output
    assert lines, "no error message"
    return "\n".join(lines)


def _png_bytes(arr: np.ndarray, mode: str | None = None) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


GOOD_PNG = _png_bytes(np.random.default_rng(0).integers(0, 255, (28, 28), dtype=np.uint8))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(
    st.binary(min_size=0, max_size=300),
    st.integers(min_value=1, max_value=len(GOOD_PNG) - 1).map(lambda n: GOOD_PNG[:n]),
    st.binary(min_size=1, max_size=50).map(lambda b: GOOD_PNG[:40] + b),
))
def test_fuzz_bytes_give_clean_errors(tiny_model, tmp_path, data):
    path = tmp_path / "fuzz.png"
    path.write_bytes(data)
    r = runner.invoke(app, ["explain", str(path), "--model", str(tiny_model), "--out", str(tmp_path / "o"),
                            "--device", "cpu"])
    if r.exit_code == 0:  # hypothesis found bytes that are a valid image: fine, it was explained
        return
    assert r.exit_code == 1 and "Traceback" not in r.output
    doc = json.loads((tmp_path / "o" / "failures.json").read_text())
    assert len(doc) == 1 and doc[0]["error"]


@pytest.mark.parametrize("case", ["huge", "cmyk", "16bit", "alpha", "rgb_for_grey", "empty", "dir_empty"])
def test_odd_images_give_clean_errors(tiny_model, tmp_path, case):
    p = tmp_path / f"{case}.png"
    if case == "huge":  # a PNG header claiming 12000 x 12000 pixels
        import struct
        import zlib

        ihdr = struct.pack(">IIBBBBB", 12000, 12000, 8, 0, 0, 0, 0)
        def png_chunk(kind: bytes, body: bytes) -> bytes:
            return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

        p.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
                      + png_chunk(b"IEND", b""))
    elif case == "cmyk":
        p = tmp_path / "c.jpg"
        Image.new("CMYK", (28, 28)).save(p)
    elif case == "16bit":
        Image.new("I;16", (28, 28), 3000).save(p)
    elif case == "alpha":
        Image.new("RGBA", (28, 28), (0, 0, 0, 10)).save(p)
    elif case == "rgb_for_grey":
        Image.fromarray(np.random.default_rng(1).integers(0, 255, (28, 28, 3), dtype=np.uint8)).save(p)
    elif case == "empty":
        p.write_bytes(b"")
    else:
        p = tmp_path / "nothing_here"
        p.mkdir()
    r = runner.invoke(app, ["explain", str(p), "--model", str(tiny_model), "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "Traceback" not in r.output
    fails = json.loads((tmp_path / "o" / "failures.json").read_text())
    expect = {"huge": "too large", "cmyk": "CMYK", "16bit": "16/32-bit", "alpha": "transparency",
              "rgb_for_grey": "grayscale", "empty": "empty", "dir_empty": "no images"}[case]
    assert expect in fails[0]["error"]


def test_wrong_size_resized_with_warning_or_refused(tiny_model, tmp_path):
    p = tmp_path / "big.png"
    Image.fromarray(np.zeros((56, 56), np.uint8)).save(p)
    r = runner.invoke(app, ["explain", str(p), "--model", str(tiny_model), "--out", str(tmp_path / "o"),
                            "--target", "3"])
    assert "resized from 56x56 to 28x28" in r.stderr
    r = runner.invoke(app, ["explain", str(p), "--model", str(tiny_model), "--out", str(tmp_path / "o2"), "--strict"])
    assert r.exit_code == 1 and "--strict" in json.loads((tmp_path / "o2" / "failures.json").read_text())[0]["error"]


@pytest.mark.parametrize("args,expect", [
    (["--target", "eight"], "unknown target class 'eight'"),
    (["--target", "42"], "out of range"),
    (["--model", "no-such-model"], "not found"),
    (["--device", "cuda"], "CUDA is not available"),
    (["--method", "magic"], "unknown method 'magic'"),
])
def test_bad_options_one_line(tiny_model, tmp_path, args, expect):
    import torch

    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    base = ["explain", "mnist:test:0", "--model", str(tiny_model), "--out", str(tmp_path / "o")]
    if "--model" in args:
        base = base[:2] + base[4:]
    r = runner.invoke(app, base + args)
    assert expect in _one_line_error(r)


def test_bad_references_fail_and_inputs_already_in_the_target_are_skipped(tiny_model, tmp_path):
    root = need("mnist")
    r = runner.invoke(app, ["explain", "mnist:test:99999", "mnist:val:1", "--model", str(tiny_model),
                            "--out", str(tmp_path / "o"), "--data-dir", str(root)])
    fails = json.loads((tmp_path / "o" / "failures.json").read_text())
    assert r.exit_code == 1 and "out of range" in fails[0]["error"] and "splits" in fails[1]["error"]
    from cfe_cli import api

    pred = api.predict(api.load_model(tiny_model), api.load_dataset("mnist", "test", root=root).images[:12])
    tgt = int(pred[0].argmax())
    refs = [f"mnist:test:{i}" for i in range(12)]
    same = [r for r, p in zip(refs, pred.argmax(1).tolist(), strict=True) if p == tgt]
    r = runner.invoke(app, ["explain", *refs, "--model", str(tiny_model), "--target", str(tgt), "--method", "pgd",
                            "--steps", "5", "--out", str(tmp_path / "o3"), "--data-dir", str(root),
                            "--batch-size", "5"])
    doc = json.loads((tmp_path / "o3" / "metrics.json").read_text())
    # nothing to explain is not a failure: listed with its reason, exit 0, the others explained
    assert r.exit_code == 0, r.output
    assert [s["input"] for s in doc["skipped"]] == same
    assert "already predicted as the target" in doc["skipped"][0]["reason"]
    assert doc["failures"] == [] and len(doc["results"]) == 12 - len(same)
    assert f"{len(same)} skipped" in r.output and "0 failed" in r.output
    assert "12/12 (100 %)" in r.output  # the progress line reaches the end
    assert "valid: the optimisation reached --threshold" in r.output  # the table's legend states the rule


def test_unwritable_output(tiny_model, tmp_path):
    if os.geteuid() == 0:
        target = Path("/proc/cfe-cannot-write-here")
    else:
        target = tmp_path / "ro"
        target.mkdir()
        target.chmod(0o500)
    r = runner.invoke(app, ["explain", "mnist:test:0", "--model", str(tiny_model), "--out", str(target)])
    assert "output folder" in _one_line_error(r) or "cannot" in _one_line_error(r)


def test_ffmpeg_missing_is_clean(tiny_model, tmp_path, monkeypatch):
    import imageio_ffmpeg

    def missing() -> str:
        raise RuntimeError("no ffmpeg")

    monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", missing)
    r = runner.invoke(app, ["animate", "mnist:test:0", "--model", str(tiny_model), "--frames", "4", "--size", "200",
                            "--out", str(tmp_path / "o"), "--data-dir", str(need("mnist"))])
    assert "ffmpeg" in _one_line_error(r)


@pytest.mark.slow
def test_kill_during_batch_then_resume(tiny_model, tmp_path):
    """SIGKILL a folder run half-way, resume it: no partial files, every good input exactly once."""
    root = need("mnist")
    from cfe_cli.data import load_dataset
    from cfe_cli.render import save_png

    ds = load_dataset("mnist", "test", root=root)
    folder = tmp_path / "in"
    for i in range(48):
        save_png(ds.images[i], folder / f"d{i:03d}.png")
    for i in range(4):
        (folder / f"bad{i}.png").write_bytes(b"\x89PNG broken")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "cfe_cli", "explain", str(folder), "--model", str(tiny_model), "--out", str(out),
           "--batch-size", "4", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = (tmp_path / "stderr.txt").open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.time() + 300
    while time.time() < deadline:
        assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()[-2000:]
        m = out / "metrics.json"
        if m.is_file() and len(json.loads(m.read_text() or "{}").get("results", [])) >= 12:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = json.loads((out / "metrics.json").read_text())
    assert 0 < len(first["results"]) < 48, "the kill did not land half-way"
    r = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True)
    assert r.returncode == 1  # the 4 bad files
    doc = json.loads((out / "metrics.json").read_text())
    inputs = [rec["input"] for rec in doc["results"]]
    assert len(inputs) == len(set(inputs)) == 48
    assert len(json.loads((out / "failures.json").read_text())) == 4
    assert not list(out.glob(".*.tmp")) and not list(out.glob("*.tmp"))
    names = [rec["name"] for rec in doc["results"]]
    assert len(set(names)) == 48
    for rec in doc["results"]:
        assert Path(rec["panel_path"]).is_file()
    pngs = [p for p in out.glob("*.png") if not p.name.endswith(("_cf.png", "_reflection.png"))]
    assert len(pngs) == 48  # no duplicate panel from the killed batch


@pytest.mark.parametrize("case,expect", [
    ("palette_alpha", "transparency"),
    ("truncated", "corrupt or truncated"),
    ("text", "not an image file"),
])
def test_more_bad_files_are_listed_with_their_reason(tiny_model, tmp_path, case, expect):
    p = tmp_path / f"{case}.png"
    if case == "palette_alpha":
        im = Image.new("P", (28, 28), 0)
        im.info["transparency"] = 0
        im.save(p, transparency=0)
    elif case == "truncated":
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (28, 28), dtype=np.uint8)).save(p)
        p.write_bytes(p.read_bytes()[:60])
    else:
        p.write_text("hello, I am not a PNG")
    r = runner.invoke(app, ["explain", str(p), "--model", str(tiny_model), "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "Traceback" not in r.output
    fails = json.loads((tmp_path / "o" / "failures.json").read_text())
    assert len(fails) == 1 and expect in fails[0]["error"]


def test_unknown_class_suggests_the_closest(tmp_path):
    need("bloodmnist")
    r = runner.invoke(app, ["explain", "bloodmnist:test:0", "--model", "bloodmnist", "--method", "pgd",
                            "--target", "lymphocite", "--out", str(tmp_path)])
    msg = _one_line_error(r)
    assert "unknown target class 'lymphocite'" in msg and "did you mean 'lymphocyte'" in msg


def test_weights_of_another_architecture_via_cli(tmp_path):
    """A model folder whose classifier file was written for another architecture: one line, exit 1."""
    from cfe_cli.models.classifiers import GAPClassifier, make_config
    from cfe_cli.models.weights import save_module

    cfg = make_config("resnet-s", in_channels=1, num_classes=10, resolution=28, mean=(0.1,), std=(0.3,))
    other = make_config("convnet", in_channels=1, num_classes=10, resolution=28, mean=(0.1,), std=(0.3,))
    save_module(tmp_path / "m" / "classifier.safetensors", GAPClassifier(other), kind="classifier",
                config=cfg.to_dict(), info={"classes": [str(i) for i in range(10)], "dataset": "mnist"})
    r = runner.invoke(app, ["explain", "mnist:test:0", "--model", str(tmp_path / "m"), "--method", "pgd",
                            "--out", str(tmp_path / "o")])
    assert "does not match its architecture" in _one_line_error(r)


def test_brackets_and_colons_in_names_are_printed_as_they_are(tmp_path):
    """Rich must not read user or data strings as markup or emoji codes: a file named `eight[b].png`
    keeps its `[b]` in the table, a missing `x[/b]y.png` is a one-line error (not a MarkupError
    traceback) naming the real path, and a pair "Pullover:T-shirt" never becomes an emoji."""
    img = tmp_path / "eight[b].png"
    img.write_bytes(Path("examples/mnist_8.png").read_bytes())
    r = runner.invoke(app, ["explain", str(img), "--model", "mnist", "--target", "3", "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    assert "eight[b" in r.stdout  # the name column may cut it short, but never parses it as bold
    missing = tmp_path / "x[/b]y.png"
    err = _one_line_error(runner.invoke(app, ["explain", str(missing), "--model", "mnist", "--out",
                                              str(tmp_path / "o2")]))
    assert f"no such file: {missing}" in err
    from cfe_cli.cli import console

    with console.capture() as cap:
        console.print("FD-eff scale Pullover:T-shirt: unchanged inputs")
    assert "Pullover:T-shirt:" in cap.get()
