"""End-to-end throughput of ``cfe explain`` on a folder of PNG files (files/s).

Writes the first ``--n`` (default 1,000) MNIST test images (``cfe_cli.data.load_dataset`` from
``$CFE_DATA_DIR``) as 28×28 grey PNGs into a temporary folder, then runs, timed as a whole::

    python -m cfe_cli explain FOLDER --model mnist --target 3 --out OUT [--method M] [--batch-size B]

in a fresh process (start-up, model loading, PNG decoding, the explanations, every panel / CF /
reflection PNG and metrics.json included) and reports files/s = input files / wall seconds, with
the counts read back from OUT/metrics.json and OUT/failures.json (inputs the classifier already
predicts as 3 are "skipped" since the redesign, "failures" before it).

Usage::

    CFE_DATA_DIR=/work/shared/datasets python benchmarks/explain_folder.py [--n 1000] [--threads 1]
        [--method mirror] [--batch-size 64] [--keep DIR] [--json FILE]

``--threads`` sets OMP_NUM_THREADS / MKL_NUM_THREADS of the explain process (default: 1); pin
the core with ``taskset -c 0`` on a shared machine.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_pngs(folder: Path, n: int) -> int:
    sys.path.insert(0, str(ROOT))
    from cfe_cli.data import load_dataset

    ds = load_dataset("mnist", "test")
    n = min(n, len(ds.images))
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        arr = (ds.images[i, 0].numpy() * 255.0).round().clip(0, 255).astype(np.uint8)
        Image.fromarray(arr, mode="L").save(folder / f"test_{i:05d}.png")
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--model", default="mnist")
    ap.add_argument("--target", default="3")
    ap.add_argument("--method", default="mirror")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--keep", type=Path, default=None, help="write the PNGs and outputs here and keep them")
    ap.add_argument("--json", type=Path, default=None, help="also write the result as JSON")
    ap.add_argument("--repo", type=Path, default=ROOT, help="run the explain of this checkout (A/B comparisons)")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="cfe_explain_folder_") as tmp:
        base = args.keep if args.keep is not None else Path(tmp)
        folder, out = base / "in", base / "out"
        n = write_pngs(folder, args.n)
        cmd = [sys.executable, "-m", "cfe_cli", "explain", str(folder), "--model", args.model,
               "--target", args.target, "--method", args.method, "--out", str(out)]
        if args.batch_size is not None:
            cmd += ["--batch-size", str(args.batch_size)]
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
        load_before = [round(v, 2) for v in os.getloadavg()]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=args.repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wall = time.perf_counter() - t0
        metrics = json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").exists() else {}
        failures = json.loads((out / "failures.json").read_text()) if (out / "failures.json").exists() else []
        results = metrics.get("results", [])
        res = {
            "command": " ".join(["python", "-m", "cfe_cli", *cmd[3:]]),
            "files": n, "results": len(results), "valid": sum(1 for r in results if r.get("valid")),
            "failures": len(failures), "skipped": len(metrics.get("skipped", [])), "repo": str(args.repo),
            "exit_code": proc.returncode, "wall_seconds": round(wall, 2),
            "files_per_second": round(n / wall, 2),
            "threads": args.threads, "machine": f"{platform.machine()}, {cpu_name()}",
            "cpu_count": os.cpu_count(), "load_average_before": load_before, "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        }
    if proc.returncode not in (0, 1):  # 1: some inputs failed (here: already predicted as the target)
        print(proc.stderr[-2000:], file=sys.stderr)
    print(json.dumps(res, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0 if proc.returncode in (0, 1) and results else 1


if __name__ == "__main__":
    sys.exit(main())
