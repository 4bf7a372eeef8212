"""explain/animate across processes: torchrun ranks (gloo on CPU) and ``--shard I/N`` + ``cfe merge``
give the file names, verdicts and metrics.json records of one process; a killed rank resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cfe_cli import api
from cfe_cli.cli import app
from tests.conftest import ROOT, need

INPUTS = [f"mnist:test:{i}" for i in range(5)]


def torchrun(args: list[str], nproc: int = 2, **kw) -> subprocess.Popen | subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node N -m cfe_cli ARGS`` with this checkout's code, one thread a rank."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "cfe_cli", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    if kw.pop("background", False):
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=kw.pop("stderr"))
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def records(out: Path) -> list[dict]:
    """metrics.json's records without timings, paths relative to their folder."""
    doc = json.loads((out / "metrics.json").read_text())
    return [{k: (Path(v).name if k.endswith("_path") and v else v) for k, v in r.items() if k != "seconds"}
            for r in doc["results"]]


def files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in out.iterdir() if p.suffix in (".png", ".mp4")}


def explain(model: Path, out: Path, inputs: list[str] = INPUTS, batch_size: int = 2, **kw) -> dict:
    return api.explain(inputs, model=model, method="pgd", out=out, batch_size=batch_size, device="cpu",
                       data_dir=need("mnist"), options={"max_steps": 20}, **kw)


@pytest.fixture(scope="module")
def one(tiny_model, tmp_path_factory) -> Path:
    """The 1-process run every sharded run is compared with."""
    out = tmp_path_factory.mktemp("one")
    explain(tiny_model, out)
    return out


def test_torchrun_two_ranks_equal_one_process(tiny_model, one, tmp_path):
    out = tmp_path / "two"
    r = torchrun(["explain", *INPUTS, "--model", str(tiny_model), "--method", "pgd", "--steps", "20",
                  "--batch-size", "2", "--device", "cpu", "--out", str(out)])
    assert r.returncode == 0, r.stderr[-3000:]
    assert records(out) == records(one)
    assert files(out) == files(one)  # same names, same pixels
    assert r.stdout.count("5 explained") == 1  # only rank 0 prints
    assert not (out / "parts").exists() and not list(out.glob(".*.tmp"))


def test_shards_and_merge_equal_one_process(tiny_model, one, tmp_path):
    out = tmp_path / "sh"
    part = explain(tiny_model, out, shard="1/2")  # shards run in any order
    assert part["part"] and part["metrics_path"].endswith("part-1-of-2.json")
    assert [r["input"] for r in part["results"]] == ["mnist:test:2", "mnist:test:3"]  # batch 1 of 2 inputs
    assert not (out / "metrics.json").exists()
    runner = CliRunner()
    r = runner.invoke(app, ["merge", str(out)])
    assert r.exit_code == 1 and "missing part(s) 0/2" in r.output and "Traceback" not in r.output
    explain(tiny_model, out, shard="0/2")
    r = runner.invoke(app, ["merge", str(out)])
    assert r.exit_code == 0, r.output
    assert "merged 2 parts: 5 explained" in r.output
    assert records(out) == records(one)
    assert files(out) == files(one)
    assert json.loads((out / "failures.json").read_text()) == []
    assert not (out / "parts").exists()


def test_shard_errors_are_one_line(tiny_model, tmp_path):
    runner = CliRunner()
    base = ["explain", "mnist:test:0", "--model", str(tiny_model), "--out", str(tmp_path / "o")]
    for bad, msg in (("2/2", "I must be in 0..N-1"), ("a/b", "expected I/N"), ("1", "expected I/N")):
        r = runner.invoke(app, [*base, "--shard", bad])
        assert r.exit_code == 1 and msg in r.output and "Traceback" not in r.output
    r = runner.invoke(app, [*base, "--shard", "0/2"], env={"WORLD_SIZE": "2", "RANK": "0"})
    assert r.exit_code == 1 and "under torchrun the ranks are the shards" in r.output
    r = runner.invoke(app, ["merge", str(tmp_path / "empty")])
    assert r.exit_code == 1 and "nothing to merge" in r.output


def test_shared_prefixes_are_named_as_in_one_process(tiny_model, tmp_path):
    """Two inputs named x.png in different folders: their names depend on each other, in every shard."""
    from cfe_cli.data import load_dataset
    from cfe_cli.render import save_png

    ds = load_dataset("mnist", "test", root=need("mnist"))
    for i, sub in enumerate("abcd"):
        save_png(ds.images[i % 2], tmp_path / "in" / sub / ("x.png" if sub != "d" else "y.png"))
    inputs = [str(tmp_path / "in")]
    explain(tiny_model, tmp_path / "one", inputs, batch_size=1)
    for i in range(3):
        explain(tiny_model, tmp_path / "sh", inputs, batch_size=1, shard=f"{i}/3")
    api.merge(tmp_path / "sh")
    names = [r["name"] for r in records(tmp_path / "one")]
    assert len(set(names)) == 4 and any(n.endswith("_2") for n in names)
    assert records(tmp_path / "sh") == records(tmp_path / "one")


@pytest.mark.slow
def test_killed_rank_resumes_with_another_world_size(tiny_model, one, tmp_path):
    """SIGKILL rank 1 of a 2-rank run half-way; --resume as 3 shards + merge completes the folder exactly."""
    out = tmp_path / "k"
    inputs = [f"mnist:test:{i}" for i in range(12)]
    args = ["explain", *inputs, "--model", str(tiny_model), "--method", "pgd", "--steps", "20", "--batch-size", "1",
            "--device", "cpu", "--out", str(out)]
    log = (tmp_path / "stderr.txt").open("w")
    proc = torchrun(args, background=True, stderr=log)
    deadline = time.time() + 300
    while time.time() < deadline and len(list(out.glob("*_cf.png"))) < 3:
        assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()[-2000:]
        time.sleep(0.05)
    ranks = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)  # torchrun's workers
    pids = sorted(int(p) for p in ranks.stdout.split())
    assert len(pids) == 2, ranks.stdout
    os.kill(pids[1], signal.SIGKILL)  # the one started second: rank 1
    assert proc.wait(timeout=120) != 0
    assert not (out / "metrics.json").exists()  # the merge never ran
    for i in range(3):
        explain(tiny_model, out, inputs, batch_size=1, shard=f"{i}/3", resume=True)
    api.merge(out)
    full = tmp_path / "full"
    explain(tiny_model, full, inputs, batch_size=1)
    assert records(out) == records(full)
    assert files(out) == files(full)  # every file once, none partial
    assert not list(out.glob(".*.tmp")) and not (out / "parts").exists()


def test_torchrun_passes_every_cfe_option_through():
    """torchrun's parser takes unambiguous prefixes of its own options: no cfe option may be one
    (evaluate's --n is, hence its spelling --n-per-pair under torchrun)."""
    import contextlib
    import io

    import typer
    from torch.distributed.run import get_args_parser

    parser, cmd = get_args_parser(), typer.main.get_command(app)
    for name, c in cmd.commands.items():
        for p in c.params:
            for flag in [o for o in [*p.opts, *getattr(p, "secondary_opts", [])] if o.startswith("--")]:
                if flag == "--n":
                    continue
                with contextlib.redirect_stderr(io.StringIO()):
                    ns = parser.parse_args(["--standalone", "--nproc-per-node=2", "-m", "cfe_cli", name, flag, "1"])
                assert ns.training_script_args == [name, flag, "1"], flag


TIMINGS = ("seconds_per_cf", "cf_per_second", "seconds_total", "peak_memory_mb")


def _evaluate_both(model: Path, tmp_path: Path, realism: bool) -> tuple[dict, dict, str]:
    one = api.evaluate(model, out=tmp_path / "one", methods=["pgd"], pairs="8:3", n=4, batch_size=2, device="cpu",
                       data_dir=need("mnist"), options={"max_steps": 10}, realism=realism)
    r = torchrun(["evaluate", "--model", str(model), "--method", "pgd", "--pairs", "8:3", "--n-per-pair", "4",
                  "--batch-size", "2", "--steps", "10", "--device", "cpu", "--out", str(tmp_path / "two"),
                  "--realism" if realism else "--no-realism"])
    assert r.returncode == 0, r.stderr[-3000:]
    return one, json.loads((tmp_path / "two" / "metrics.json").read_text()), r.stdout


def _same_rows(one: dict, two: dict) -> None:
    """Every number but the timings equal: the batches, their order and the reductions are the
    1-process ones. Exactly equal on the AVX2 VM; on an AVX-512 one the Fréchet distance of the
    gathered features moved in its 7th significant digit (169.7380 vs 169.7381), so floats are
    compared to a relative 1e-5."""
    assert len(two["rows"]) == len(one["rows"]) == 1
    for a, b in zip(one["rows"], two["rows"], strict=True):
        skip = (*TIMINGS, "grid_path")
        a_, b_ = ({k: v for k, v in r.items() if k not in skip} for r in (a, b))
        assert a_.keys() == b_.keys()
        for k in a_:
            if isinstance(a_[k], float) and isinstance(b_[k], float):
                assert b_[k] == pytest.approx(a_[k], rel=1e-5, abs=1e-9), k
            else:
                assert a_[k] == b_[k], k
        # the report's grid of sources, counterfactuals (and reflections): drawn from the gathered set
        assert Path(a["grid_path"]).name == Path(b["grid_path"]).name
        assert Path(a["grid_path"]).read_bytes() == Path(b["grid_path"]).read_bytes()


def test_torchrun_evaluate_equals_one_process(tiny_model, tmp_path):
    one, two, stdout = _evaluate_both(tiny_model, tmp_path, realism=False)
    _same_rows(one, two)
    assert stdout.count("evaluate ") == 1  # one table, from rank 0


@pytest.mark.slow
def test_torchrun_evaluate_realism_on_gathered_features(tiny_model, tmp_path):
    """FD/KD/DFD of EfficientNet-Lite0 features computed once on every rank's counterfactuals."""
    pytest.importorskip("efficientnet_lite_pytorch")
    one, two, _ = _evaluate_both(tiny_model, tmp_path, realism=True)
    assert one["rows"][0]["fd_effnetlite0"] is not None
    _same_rows(one, two)
    assert two["references"] == one["references"]
