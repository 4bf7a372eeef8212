"""Reproduce the Mirror-CFE results table (and the latent baselines) and write it as Markdown.

    python benchmarks/reproduce.py [--datasets mnist,fashion-mnist,bloodmnist] \
        [--methods mirror,attack,gci,cecas,pgd] [--n 200] [--out out/reproduce] [--device cpu]

For each dataset whose model folder has the needed generators, runs ``cfe evaluate`` on
the paper's pairs in both directions (MNIST 8↔3, 9↔4, 6↔5; Fashion-MNIST T-shirt↔Pullover,
Coat↔Shirt, Sneaker↔Ankle boot; BloodMNIST lymphocyte↔erythroblast) and prints a
Markdown table beside the paper's numbers (from secondary notes; see
../shared/docs/mirror-cfe.md §9). Paste it into docs/results.md with the machine named.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

PAIRS = {
    "mnist": "8:3,3:8,9:4,4:9,6:5,5:6",
    "fashion-mnist": "T-shirt:Pullover,Pullover:T-shirt,Coat:Shirt,Shirt:Coat,Sneaker:Ankle boot,Ankle boot:Sneaker",
    "bloodmnist": "lymphocyte:erythroblast,erythroblast:lymphocyte",
}
# Paper (Mirror-CFE, ICCV 2025) Table values as given by secondary notes: L1, LPIPS, FID, D.Val, Val, %Fail.
PAPER = {
    "mnist": {"PGD": (0.42, 0.31, 15.62, 0.74, 1.0, 0.0), "C3LT": (0.17, 0.25, 8.95, 0.79, 1.0, 0.0),
              "Mirror-CFE (1st)": (0.16, 0.17, 3.25, 0.99, 1.0, 0.0)},
    "fashion-mnist": {"PGD": (0.34, 0.28, 10.12, 0.88, 1.0, 0.0), "C3LT": (0.32, 0.30, 11.55, 0.87, 1.0, 0.0),
                      "Mirror-CFE (1st)": (0.12, 0.10, 2.80, 0.99, 0.99, 0.0)},
    "bloodmnist": {"C3LT": (0.16, 30.14, 96.03, 0.99, 0.99, 0.0), "Mirror-CFE (1st)": (0.05, 11.81, 86.02, 0.99, 0.99, 0.0)},
}


def _fmt(v: object, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def table(doc: dict, dataset: str) -> str:
    lines = [f"### {dataset} (n = {doc['n_per_pair']} per direction, pairs {', '.join(doc['pairs'])})", "",
             f"Command: `{doc['command']}`  ", f"Device: {doc['device']}, {doc['machine']}", "",
             "| method | n | Val↑ | D.Val↑ | O.Val↑ | %Fail↓ | L1↓ | L2↓ | sparsity | SSIM↑ | COUT↑ | FD-eff¹↓ | DFD-eff¹↓ | steps | CF/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in doc["overall"]:
        lines.append("| " + " | ".join([
            r["method"], _fmt(r.get("n"), "d"), _fmt(r.get("valid"), ".3f"), _fmt(r.get("denoised_valid"), ".3f"),
            _fmt(r.get("oracle_valid"), ".3f"), _fmt(r.get("fail_pct"), ".1f"), _fmt(r.get("l1"), ".3f"),
            _fmt(r.get("l2"), ".3f"), _fmt(r.get("sparsity"), ".3f"), _fmt(r.get("ssim"), ".3f"),
            _fmt(r.get("cout"), ".3f"), _fmt(r.get("fd_effnetlite0"), ".2f"), _fmt(r.get("dfd_effnetlite0"), ".3f"),
            _fmt(r.get("steps_mean"), ".1f"), _fmt(r.get("cf_per_second"), ".1f")]) + " |")
    if dataset in PAPER:
        lines += ["", "Paper (secondary notes; FID = Inception-v3, LPIPS = SqueezeNet; not comparable to our "
                  "FD-eff/DFD-eff):", "", "| method | L1 | LPIPS | FID | D.Val | Val | %Fail |", "|---|---|---|---|---|---|---|"]
        for m, v in PAPER[dataset].items():
            lines.append(f"| {m} | " + " | ".join(str(x) for x in v) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="mnist,fashion-mnist,bloodmnist")
    ap.add_argument("--methods", default="mirror,attack,gci,cecas,pgd")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--out", default="out/reproduce")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-realism", action="store_true")
    ap.add_argument("--tables-only", action="store_true",
                    help="rebuild table.md from the metrics.json files already under --out (no evaluation)")
    a = ap.parse_args()
    parts = [f"Machine: {platform.machine()} {platform.processor()}", ""]
    for ds in a.datasets.split(","):
        out = Path(a.out) / ds
        cmd = [sys.executable, "-m", "cfe_cli", "evaluate", "--model", ds, "--method", a.methods, "--pairs",
               PAIRS[ds], "--n", str(a.n), "--out", str(out), "--device", a.device]
        if a.no_realism:
            cmd.append("--no-realism")
        if a.tables_only:
            if (out / "metrics.json").is_file():
                parts += [table(json.loads((out / "metrics.json").read_text()), ds), ""]
            continue
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            parts.append(f"### {ds}\n\nnot run: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
            continue
        parts.append(table(json.loads((out / "metrics.json").read_text()), ds))
        parts.append("")
    parts.append("¹ EfficientNet-Lite0 ImageNet features (224 px); not comparable to published FID / LPIPS.")
    text = "\n".join(parts)
    print(text)
    (Path(a.out) / "table.md").write_text(text)


if __name__ == "__main__":
    main()
