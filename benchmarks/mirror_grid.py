"""Look at Mirror-CFE outputs: per direction, 8 test images (row 1), their 1st CFE (row 2) and
their reflection (row 3), as one PNG.

    python benchmarks/mirror_grid.py --model mnist --pairs 8:3,3:8,9:4,4:9,6:5,5:6 \
        [--decoder FILE] [--skip 8] --out docs/img/mirror_mnist_grid.png

Sources are test images the classifier predicts as the pair's source, from the ``--skip``-th on.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image

from cfe_cli import api
from cfe_cli.data import load_dataset
from cfe_cli.methods.mirror import MirrorCFE
from cfe_cli.models.weights import load_decoder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mnist")
    ap.add_argument("--pairs", default="8:3,3:8,9:4,4:9,6:5,5:6")
    ap.add_argument("--decoder", default=None, help="a decoder file (default: the model's mirror.safetensors)")
    ap.add_argument("--skip", type=int, default=8)
    ap.add_argument("--per-pair", type=int, default=8)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    clf = api.load_model(a.model)
    folder = api.resolve_model(a.model)
    dec, _ = load_decoder(folder) if a.decoder is None else load_decoder(Path(a.decoder).parent, file=Path(a.decoder))
    m = MirrorCFE(clf.model, dec)
    data = load_dataset(clf.info["dataset"], "test", size=clf.config.resolution)
    pred = api.predict(clf, data.images).argmax(1)
    rows = []
    for pair in a.pairs.split(","):
        s, t = (clf.classes.index(c) for c in pair.split(":"))
        x = data.images[(pred == s).nonzero()[:, 0][a.skip:a.skip + a.per_pair]]
        r = m.explain(x, torch.full((len(x),), t))
        for imgs in (x, r["x_cf"], r["x_reflection"]):
            rows.append(torch.cat(list(imgs), dim=-1))  # (C, H, n*W)
        print(f"{pair}: 1st CFE found {int(r['found'].sum())}/{len(x)}, reflection is the target "
              f"{int((r['reflection_probs'].argmax(1) == t).sum())}/{len(x)}")
    g = torch.cat(rows, dim=-2).clamp(0, 1)  # (C, rows*H, n*W)
    a8 = (g * 255).round().byte().permute(1, 2, 0).numpy()
    img = Image.fromarray(a8[..., 0] if a8.shape[-1] == 1 else a8)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    img.resize((img.width * 3, img.height * 3), Image.NEAREST).save(a.out)


if __name__ == "__main__":
    main()
