"""Reference Fréchet distances for reading the Mirror-CFE realism columns of docs/results.md.

For one pair s -> t it prints FD (EfficientNet-Lite0 features, as `cfe evaluate`) of
  * real source images (the first --n predicted as s) against the real target set,
  * a decoder's reconstructions (k = 0) of those images against the real *source* set,
  * its reflections (k = 1) against the real target set,
so a CF's FD can be set against "no change at all" and against the decoder's own realism.

    python benchmarks/reference_fd.py --model bloodmnist --pair lymphocyte:erythroblast \
        --decoder weights/bloodmnist/mirror.safetensors [--decoder other.safetensors] --n 200
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from cfe_cli import api, features
from cfe_cli import metrics as M
from cfe_cli.data import load_dataset
from cfe_cli.methods.mirror import MirrorCFE
from cfe_cli.models.weights import load_decoder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--pair", required=True)
    ap.add_argument("--decoder", action="append", default=[])
    ap.add_argument("--n", type=int, default=200)
    a = ap.parse_args()
    clf = api.load_model(a.model)
    s, t = (clf.classes.index(c) for c in a.pair.split(":"))
    test = load_dataset(clf.info["dataset"], "test", size=clf.config.resolution)
    pred = api.predict(clf, test.images).argmax(1)
    x = test.images[(pred == s).nonzero()[:a.n, 0]]
    feats = features.EffNetFeatures()
    real_s = features.embed(test.images[test.labels == s], feats)
    real_t = features.embed(test.images[test.labels == t], feats)
    print(f"{a.pair}: n = {len(x)}; real sets {len(real_s)} (source class), {len(real_t)} (target class)")
    print(f"  real sources vs real target set: FD {M.frechet_distance(features.embed(x, feats), real_t):.1f}")
    for path in a.decoder:
        dec, _ = load_decoder(Path(path).parent, file=Path(path))
        m = MirrorCFE(clf.model, dec)
        prep = m.prepare(x, torch.full((len(x),), t))
        rows = torch.arange(len(x))
        rec = m.decode_at(prep, rows, torch.zeros(len(x)))
        ref = m.decode_at(prep, rows, torch.ones(len(x)))
        print(f"  {path}: reconstructions vs real source set FD {M.frechet_distance(features.embed(rec, feats), real_s):.1f}; "
              f"reflections vs real target set FD {M.frechet_distance(features.embed(ref, feats), real_t):.1f}")


if __name__ == "__main__":
    main()
