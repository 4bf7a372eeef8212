"""Where do Mirror-CFE's failures sit? Validity of the 1st CFE and of the reflection by the
source's confidence, and for correctly vs wrongly classified sources.

    python benchmarks/mirror_failures.py --model fashion-mnist --pairs Shirt:Coat,Coat:Shirt \
        [--n 200] [--decoder FILE]

Sources are the first ``--n`` test images the classifier predicts as the pair's source, as in
``cfe evaluate``; the 1st CFE is the same search ``cfe explain`` runs. The reflection swaps the
source's and target's logits, so it intends the target at the source's own confidence: an
ambiguous source gives a reflection the decoder must draw just as ambiguously, and a small
decoding error then lands in a third class. This script shows how much of %Fail that explains.
"""

from __future__ import annotations

import argparse

import torch

from cfe_cli.data import load_dataset
from cfe_cli.evaluation import parse_pairs
from cfe_cli.explainer import Explainer

BINS = ((0.0, 0.5), (0.5, 0.7), (0.7, 0.9), (0.9, 1.0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="fashion-mnist")
    ap.add_argument("--pairs", default="Shirt:Coat,Coat:Shirt")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--decoder", default=None, help="a decoder file (default: the model's mirror.safetensors)")
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()
    ex = Explainer(a.model, "mirror", device=a.device, decoder=a.decoder)
    data = load_dataset(ex.clf.info["dataset"], "test")
    with torch.inference_mode():
        probs = torch.cat([ex.predict(data.images[i:i + 512].to(ex.device)).cpu()
                           for i in range(0, len(data), 512)])
    print("| pair | sources | source confidence | n | Val (1st CFE) | Val (reflection) |")
    print("|---|---|---|---|---|---|")
    all_found, all_conf = [], []
    for s, t in parse_pairs(a.pairs, ex.classes):
        idx = (probs.argmax(1) == s).nonzero()[:, 0][:a.n]
        x = data.images[idx].to(ex.device)
        res = ex.run(x, torch.full((len(idx),), t, device=ex.device))
        found = res.found.cpu()
        refl = res.second_probs.argmax(1).cpu() == t
        conf = probs[idx, s]
        all_found.append(found)
        all_conf.append(conf)
        correct = data.labels[idx] == s
        pair = f"{ex.classes[s]} → {ex.classes[t]}"
        groups = [("all", torch.ones_like(correct))]
        groups += [(f"[{lo:.1f}, {hi:.1f}{']' if hi == 1.0 else ')'}", (conf >= lo) & ((conf < hi) | (hi == 1.0)))
                   for lo, hi in BINS]
        groups += [("correctly classified", correct), ("misclassified", ~correct)]
        for name, g in groups:
            n = int(g.sum())
            if n == 0:
                continue
            kind = "any" if name == "all" else ("ground truth" if "classified" in name else "p(source)")
            print(f"| {pair} | {kind} | {name} | {n} | {found[g].float().mean():.3f} | {refl[g].float().mean():.3f} |")
    found, conf = torch.cat(all_found), torch.cat(all_conf)
    low = conf < 0.7
    print(f"\nall directions: {len(found)} sources, validity {found.float().mean():.3f}; p(source) >= 0.7: "
          f"{int((~low).sum())} sources, validity {found[~low].float().mean():.3f}; p(source) < 0.7: "
          f"{int(low.sum())} sources ({low.float().mean():.1%}), validity {found[low].float().mean():.3f}, "
          f"{int((low & ~found).sum())} of the {int((~found).sum())} failures")


if __name__ == "__main__":
    main()
