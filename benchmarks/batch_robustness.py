"""A 1,000-file folder with 50 corrupt files: SIGKILL half-way, resume, check nothing is lost or doubled.

Usage: CFE_DATA_DIR=../shared/datasets python benchmarks/batch_robustness.py [--work /tmp/cfe-batch] [--model mnist]

Builds WORK/in with 950 real MNIST test digits (PNG) and 50 bad files of ten kinds, runs
``cfe explain WORK/in --model mnist --out WORK/out`` in a subprocess, kills it with SIGKILL once
about half the results are in metrics.json, runs the same command with ``--resume``, and checks:
950 results and 50 listed failures, every input exactly once, no temporary or partial file, every
PNG decodes. Prints a JSON summary (also written to WORK/summary.json).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")


def bad_files(folder: Path, good_png: bytes, rng: np.random.Generator) -> list[tuple[str, str]]:
    """Write 50 bad files (5 of each of 10 kinds); returns (file name, kind)."""
    kinds: list[tuple[str, str]] = []
    for i in range(5):
        (folder / f"bad_random_{i}.png").write_bytes(rng.bytes(int(rng.integers(10, 5000))))
        (folder / f"bad_truncated_{i}.png").write_bytes(good_png[: len(good_png) // (2 + i)])
        (folder / f"bad_empty_{i}.png").write_bytes(b"")
        (folder / f"bad_text_{i}.jpg").write_text("this is not an image\n")
        Image.new("CMYK", (28, 28), (0, 0, 0, 40 * i)).save(folder / f"bad_cmyk_{i}.jpg")
        Image.fromarray((rng.random((28, 28)) * 60000).astype(np.uint16)).save(folder / f"bad_16bit_{i}.png")
        rgba = Image.new("RGBA", (28, 28), (255, 255, 255, 0))
        rgba.save(folder / f"bad_alpha_{i}.png")
        # a valid PNG header claiming 100,000 x 100,000 pixels (a decompression bomb)
        ihdr = (100_000).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
        (folder / f"bad_huge_{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
                                                  + _png_chunk(b"IEND", b""))
        (folder / f"bad_header_only_{i}.png").write_bytes(good_png[:8])
        (folder / f"bad_gzip_{i}.bmp").write_bytes(zlib.compress(good_png))
        kinds += [(f"bad_random_{i}.png", "random bytes"), (f"bad_truncated_{i}.png", "truncated PNG"),
                  (f"bad_empty_{i}.png", "empty"), (f"bad_text_{i}.jpg", "text"), (f"bad_cmyk_{i}.jpg", "CMYK"),
                  (f"bad_16bit_{i}.png", "16-bit"), (f"bad_alpha_{i}.png", "transparency"),
                  (f"bad_huge_{i}.png", "100k x 100k header"), (f"bad_header_only_{i}.png", "signature only"),
                  (f"bad_gzip_{i}.bmp", "compressed bytes")]
    return kinds


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="/tmp/cfe-batch")
    ap.add_argument("--model", default="mnist")
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    from cfe_cli.data import load_dataset
    from cfe_cli.render import save_png

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    folder, out = work / "in", work / "out"
    ds = load_dataset("mnist", "test")
    for i in range(950):
        save_png(ds.images[i], folder / f"sub{i % 4}" / f"digit_{i:04d}.png")  # nested: folders are recursive
    rng = np.random.default_rng(0)
    kinds = bad_files(folder, (folder / "sub0" / "digit_0000.png").read_bytes(), rng)
    assert len(kinds) == 50
    cmd = [sys.executable, "-m", "cfe_cli", "explain", str(folder), "--model", args.model, "--out", str(out),
           "--batch-size", str(args.batch_size), "--device", "cpu"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    at_kill = 0
    while proc.poll() is None:
        m = out / "metrics.json"
        try:
            at_kill = len(json.loads(m.read_text()).get("results", [])) if m.is_file() else 0
        except json.JSONDecodeError:
            at_kill = 0
        if at_kill >= 475:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first_seconds = time.perf_counter() - t0
    tmp_after_kill = sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp"))
    t1 = time.perf_counter()
    r = subprocess.run(cmd + ["--resume"], capture_output=True, text=True)
    resume_seconds = time.perf_counter() - t1
    doc = json.loads((out / "metrics.json").read_text())
    failures = json.loads((out / "failures.json").read_text())
    inputs = [rec["input"] for rec in doc["results"]]
    names = [rec["name"] for rec in doc["results"]]
    undecodable = []
    for p in out.glob("*.png"):
        try:
            with Image.open(p) as im:
                im.load()
        except Exception:  # noqa: BLE001
            undecodable.append(p.name)
    failed_names = sorted(Path(f["input"]).name for f in failures)
    summary = {
        "command": " ".join(cmd[2:]), "files": 1000, "corrupt": 50,
        "results_at_kill": at_kill, "seconds_until_kill": round(first_seconds, 1),
        "resume_exit_code": r.returncode, "resume_seconds": round(resume_seconds, 1),
        "results": len(inputs), "unique_inputs": len(set(inputs)), "unique_names": len(set(names)),
        "failures": len(failures), "failures_are_the_50_bad_files": failed_names == sorted(k for k, _ in kinds),
        "temporaries_left_by_kill": len(tmp_after_kill),
        "temporaries_after_resume": len([p for p in out.iterdir() if p.name.endswith(".tmp")]),
        "panels": len([p for p in out.glob("*.png") if not p.name.endswith(("_cf.png", "_reflection.png"))]),
        "undecodable_pngs": len(undecodable),
        "valid": sum(1 for rec in doc["results"] if rec["valid"]),
        "failure_reasons": sorted({f["error"].replace(f["input"], "FILE").split(" (")[0].split(": ")[0]
                                   for f in failures}),
    }
    ok = (summary["results"] == summary["unique_inputs"] == summary["unique_names"] == 950
          and summary["failures"] == 50 and summary["failures_are_the_50_bad_files"]
          and summary["temporaries_after_resume"] == 0 and summary["undecodable_pngs"] == 0
          and summary["panels"] == 950 and r.returncode == 1 and 0 < at_kill < 950)
    summary["ok"] = ok
    (work / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
