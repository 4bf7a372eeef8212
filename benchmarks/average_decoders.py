"""Weight-space interpolation of two decoders fine-tuned from the same start ("model soup").

    python benchmarks/average_decoders.py A.safetensors B.safetensors --alpha 0.3 --out C.safetensors

writes ``(1 − alpha) · A + alpha · B`` tensor by tensor. Both files must hold the same tensors
(names and shapes) and the same architecture config; the CSP thresholds and every other metadata
field are A's, and ``info`` records the two sources and alpha. Only meaningful for decoders that
share an ancestor (one fine-tuned from the other, or both from one file): unrelated networks do not
average into a working one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file

ARCH_KEYS = ("feat_channels", "feat_size", "out_channels", "resolution", "width", "min_width", "skip_channels",
             "skip_sizes", "skip_stem")


def load(path: Path) -> tuple[dict, dict]:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--alpha", type=float, required=True, help="weight of B, in [0, 1]")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if not 0.0 <= args.alpha <= 1.0:
        sys.exit(f"--alpha must be in [0, 1]; got {args.alpha}")
    ta, ma = load(args.a)
    tb, mb = load(args.b)
    if ta.keys() != tb.keys() or any(ta[k].shape != tb[k].shape for k in ta):
        sys.exit(f"{args.a} and {args.b} do not hold the same tensors")
    ca, cb = json.loads(ma.get("config", "{}")), json.loads(mb.get("config", "{}"))
    if any(ca.get(k) != cb.get(k) for k in ARCH_KEYS):
        sys.exit(f"{args.a} and {args.b} are different architectures")
    out = {k: (ta[k].double() * (1 - args.alpha) + tb[k].double() * args.alpha).to(ta[k].dtype)
           if ta[k].is_floating_point() else ta[k] for k in ta}
    info = json.loads(ma.get("info", "{}"))
    info_b = json.loads(mb.get("info", "{}"))
    # A's own record (command, time, recipe) moves into "averaged", beside B's
    info["averaged"] = {
        "alpha": args.alpha,
        "a": {"file": str(args.a), **{k: info.get(k) for k in ("command", "trained_at", "seconds", "train")}},
        "b": {"file": str(args.b), **{k: info_b.get(k) for k in ("command", "trained_at", "seconds", "train")}}}
    info["command"] = "python benchmarks/average_decoders.py " + " ".join(sys.argv[1:] if argv is None else argv)
    info["trained_at"] = time.strftime("%Y-%m-%d %H:%M:%S")
    info["seconds"] = round(float(info.get("seconds") or 0) + float(info_b.get("seconds") or 0), 1)
    meta = dict(ma, info=json.dumps(info))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(args.out), metadata=meta)
    print(f"{args.out}: (1 - {args.alpha}) * {args.a} + {args.alpha} * {args.b}, {len(out)} tensors")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
