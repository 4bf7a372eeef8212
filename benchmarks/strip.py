"""A frame strip of Mirror-CFE's decoded path for a model card: 8 frames from k = 0 to 1, each captioned
p(source) / p(target), red where the classifier assigns the target.

    python benchmarks/strip.py --model bloodmnist --input bloodmnist:test:10 --target lymphocyte \
        --out weights/bloodmnist/strip_no10_erythroblast_to_lymphocyte.png [--decoder FILE]
"""

from __future__ import annotations

import argparse

import torch
from PIL import Image, ImageDraw, ImageFont

from cfe_cli import api
from cfe_cli.inputs import resolve_inputs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--target", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--decoder", default=None)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", type=int, default=110)
    a = ap.parse_args()
    ex = api.Explainer(a.model, "mirror", device="cpu", precision="fp32", decoder=a.decoder)
    cfg = ex.clf.config
    item = resolve_inputs([a.input], channels=cfg.in_channels, resolution=cfg.resolution, data_dir=None,
                          classes=ex.classes)[0]
    if item.error:
        raise SystemExit(item.error)
    x = item.image[None]
    t = torch.tensor([ex.classes.index(a.target)])
    m = ex.impl.cfe
    with torch.inference_mode():
        prep = m.prepare(x, t)
        sw = m.sweep(prep, a.frames)
    s, tgt = int(prep["source"][0]), int(t[0])
    font = ImageFont.load_default()
    W, pad, top, cap = a.size, 8, 24, 34
    strip = Image.new("RGB", (a.frames * (W + pad) + pad, top + W + cap), "white")
    d = ImageDraw.Draw(strip)
    d.text((pad, 6), f"{ex.classes[s]} -> {ex.classes[tgt]}    captions: p({ex.classes[s]}) / p({ex.classes[tgt]}); "
           f"red: classified as {ex.classes[tgt]}", fill="black", font=font)
    for i in range(a.frames):
        img = (sw["x"][0, i].clamp(0, 1) * 255).byte().permute(1, 2, 0).numpy()
        tile = Image.fromarray(img.squeeze(-1) if img.shape[-1] == 1 else img).convert("RGB")
        tile = tile.resize((W, W), Image.NEAREST)
        x0 = pad + i * (W + pad)
        strip.paste(tile, (x0, top))
        p = sw["predicted"][0, i]
        if int(p.argmax()) == tgt:
            d.rectangle([x0 - 2, top - 2, x0 + W + 1, top + W + 1], outline=(200, 30, 30), width=2)
        d.text((x0, top + W + 4), f"k={float(sw['ks'][i]):.2f}", fill="black", font=font)
        d.text((x0, top + W + 18), f"{float(p[s]):.2f} / {float(p[tgt]):.2f}", fill=(80, 80, 80), font=font)
    strip.save(a.out)
    print(a.out)


if __name__ == "__main__":
    main()
