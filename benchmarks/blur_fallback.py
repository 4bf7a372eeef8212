"""Does a counterfactual survive a blur? PGD against the latent methods, by threshold and blur strength.

Usage: CFE_DATA_DIR=../shared/datasets python benchmarks/blur_fallback.py [--model mnist] [--pair 8:3]
       [--n 200] [--thresholds 0.75,0.95] [--methods attack,gci,cecas,pgd,mirror]

For every test image predicted as the pair's source, each method makes a counterfactual towards
the target (stopping at each threshold); each counterfactual is then blurred with 3×3 σ=0.5 and
5×5 σ=1 Gaussians (``cfe_cli.metrics.gaussian_blur``) and classified again. Reported per method,
threshold and blur: share still the target (denoised validity), share fallen back to the source,
and, as the control, the share of blurred *source* images still classified as the source.
Prints a Markdown table and writes JSON to --out.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from cfe_cli import api
from cfe_cli import metrics as M
from cfe_cli.data import load_dataset

BLURS = ((3, 0.5), (5, 1.0))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="mnist")
    ap.add_argument("--pair", default="8:3")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--thresholds", default="0.75,0.95")
    ap.add_argument("--methods", default="attack,gci,cecas,pgd,mirror")
    ap.add_argument("--out", default="out/blur_fallback.json")
    args = ap.parse_args()
    torch.manual_seed(0)
    clf = api.load_model(args.model)
    s, t = (clf.classes.index(c) for c in args.pair.split(":"))
    data = load_dataset(clf.info["dataset"], "test", size=clf.config.resolution)
    pred = api.predict(clf, data.images).argmax(1)
    x = data.images[(pred == s).nonzero()[:, 0][: args.n]]
    tgt = torch.full((len(x),), t)
    rows = []
    with torch.inference_mode():
        for k, sigma in BLURS:
            p = clf.model(M.gaussian_blur(x, k, sigma)).argmax(1)
            rows.append({"method": "source images (control)", "threshold": None, "blur": f"{k}x{k} s={sigma}",
                         "n": len(x), "still_target": None, "fell_back_to_source": None,
                         "source_kept": round(float((p == s).float().mean()), 4)})
    for method in args.methods.split(","):
        for tau in ([None] if method == "mirror" else [float(v) for v in args.thresholds.split(",")]):
            ex = api.Explainer(args.model, method, device="cpu", threshold=tau or 0.75)
            t0 = time.perf_counter()
            res = ex.run(x, tgt)
            secs = time.perf_counter() - t0
            found = res.found.cpu()
            x_cf = res.x_cf.detach().cpu()[found]
            for k, sigma in BLURS:
                with torch.inference_mode():
                    p = clf.model(M.gaussian_blur(x_cf, k, sigma)).argmax(1)
                rows.append({"method": method, "threshold": tau, "blur": f"{k}x{k} s={sigma}", "n": int(found.sum()),
                             "valid": round(float(found.float().mean()), 4),
                             "still_target": round(float((p == t).float().mean()), 4),
                             "fell_back_to_source": round(float((p == s).float().mean()), 4),
                             "l1": round(float((x_cf - x[found]).abs().mean()), 4), "seconds": round(secs, 2)})
    doc = {"command": "python benchmarks/blur_fallback.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
        "machine": f"{platform.machine()} {torch.get_num_threads()} threads", "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2))
    print("| method | threshold | blur | n | still target | fell back to source | L1 |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if r["still_target"] is None:
            print(f"| {r['method']} | – | {r['blur']} | {r['n']} | – | source kept: {r['source_kept']:.3f} | – |")
        else:
            tau = "1st CFE" if r["threshold"] is None else f"{r['threshold']:.2f}"
            print(f"| {r['method']} | {tau} | {r['blur']} | {r['n']} | {r['still_target']:.3f} | "
                  f"{r['fell_back_to_source']:.3f} | {r['l1']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
