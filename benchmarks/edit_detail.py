"""How much fine detail does a Mirror-CFE decoder draw where it edits? A blur index for the edit.

    python benchmarks/edit_detail.py --model celeba-mouth \
        --pairs "closed mouth:slightly opened mouth,slightly opened mouth:closed mouth" [--n 100] [--decoder FILE]

The Fréchet distance of whole images cannot judge a small edit (on CelebA the unchanged source
faces are as close to real target faces as other real target faces are: docs/models/celeba-mouth.md),
and a decoder that paints a blurred patch over the mouth still flips the classifier. This script
measures the blur directly. For each input, the edit region R is where the counterfactual differs
from the source by more than ``--tau`` (mean over channels). In R it compares the high-frequency
energy, mean squared Laplacian (4-neighbour, per channel), of

- the counterfactual (1st CFE, and the reflection k = 1 with its own region),
- the source itself, and
- a real test image of the target class (a different one per input; on aligned faces the mouth
  sits at the same place, so this is how much detail a real target mouth has there).

Reported: detail = energy(image, R) / energy(source, R), averaged over inputs with a region. A
real image scores near 1 (its own detail); a blurred patch scores well below the real target images.

``--reconstruction`` (skip decoders) adds a line per direction for the reconstruction x̂ = G(f_s)
at k = 0, where nothing is edited and L_rec trains the decoder to return the source: its detail
inside the k = 0 CSP mask (where the decoder redraws from SPE's input; ρ(0) = ρ_u) and its L1 to
the source inside and outside that mask. A decoder that can redraw the masked region scores near 1
there; one that cannot draws it blurred even when nothing is to change.
Sources: the first ``--n`` test images the classifier predicts as the pair's source, as in
``cfe evaluate``.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from cfe_cli.data import load_dataset
from cfe_cli.evaluation import parse_pairs
from cfe_cli.explainer import Explainer
from cfe_cli.methods.mirror import spatial_prior_mask

LAPLACE = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def laplacian_energy(x: torch.Tensor) -> torch.Tensor:
    """Squared 4-neighbour Laplacian, averaged over channels. Shape: ``(B, C, H, W) -> (B, H-2, W-2)``."""
    c = x.shape[1]
    k = LAPLACE.to(x)[None, None].repeat(c, 1, 1, 1)
    return F.conv2d(x, k, groups=c).pow(2).mean(1)


def region_detail(img: torch.Tensor, src: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """energy(img, R) / energy(src, R) per input; NaN where R is empty. ``region (B, H, W)`` bool."""
    r = region[:, 1:-1, 1:-1].float()
    area = r.sum((1, 2))
    e_img = (laplacian_energy(img) * r).sum((1, 2))
    e_src = (laplacian_energy(src) * r).sum((1, 2)).clamp_min(1e-12)
    return torch.where(area > 0, e_img / e_src, torch.full_like(area, float("nan")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="celeba-mouth")
    ap.add_argument("--pairs", default="closed mouth:slightly opened mouth,slightly opened mouth:closed mouth")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--tau", type=float, default=0.05, help="edit region: mean |x_cf - x_s| over channels above this")
    ap.add_argument("--decoder", default=None, help="a decoder file (default: the model's mirror.safetensors)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--reconstruction", action="store_true", help="also: x̂ (k = 0) inside its own CSP mask")
    ap.add_argument("--residual", action="store_true",
                    help="residual decoding (x_s + G(f_k) − G(f_s), cfe --residual)")
    a = ap.parse_args()
    if a.residual and a.reconstruction:
        raise SystemExit("--reconstruction measures G(f_s) itself; residual decoding returns the source at k = 0")
    ex = Explainer(a.model, "mirror", device=a.device, decoder=a.decoder, residual=a.residual)
    data = load_dataset(ex.clf.info["dataset"], "test", size=ex.clf.config.resolution)
    with torch.inference_mode():
        probs = torch.cat([ex.predict(data.images[i:i + 512].to(ex.device)).cpu()
                           for i in range(0, len(data), 512)])
    pred = probs.argmax(1)
    how = " (residual decoding)" if a.residual else ""
    print(f"decoder: {a.decoder or 'the model folder'}{how}; edit region: mean |x_cf - x_s| > {a.tau}")
    print("| pair | n | Val (1st CFE) | region (1st CFE, % of image) | detail 1st CFE | detail real target "
          "(same region) | region (reflection, %) | detail reflection | detail real target (same region) |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows, recon = [], []
    for s, t in parse_pairs(a.pairs, ex.classes):
        idx = (pred == s).nonzero()[:, 0][:a.n]
        real = ((data.labels == t) & (pred == t)).nonzero()[:, 0]  # real target images the classifier agrees with
        out = {key: [] for key in ("found", "area_cf", "d_cf", "d_real_cf", "area_r", "d_r", "d_real_r")}
        for i in range(0, len(idx), a.batch_size):
            b = idx[i:i + a.batch_size]
            x = data.images[b].to(ex.device)
            res = ex.run(x, torch.full((len(b),), t, device=ex.device))
            ref = data.images[real[(torch.arange(i, i + len(b)) * 7919) % len(real)]].to(ex.device)
            x_cf, x_r = res.x_cf.float(), res.second.float()
            reg_cf = (x_cf - x).abs().mean(1) > a.tau
            reg_r = (x_r - x).abs().mean(1) > a.tau
            out["found"].append(res.found.cpu())
            out["area_cf"].append(reg_cf.float().mean((1, 2)).cpu())
            out["area_r"].append(reg_r.float().mean((1, 2)).cpu())
            out["d_cf"].append(region_detail(x_cf, x, reg_cf).cpu())
            out["d_real_cf"].append(region_detail(ref, x, reg_cf).cpu())
            out["d_r"].append(region_detail(x_r, x, reg_r).cpu())
            out["d_real_r"].append(region_detail(ref, x, reg_r).cpu())
            if a.reconstruction:
                recon.append(reconstruction_detail(ex, x, t) | {"pair": f"{ex.classes[s]} → {ex.classes[t]}"})
        o = {key: torch.cat(v) for key, v in out.items()}
        found = o["found"].bool()
        # the 1st CFE's columns over the inputs that have one; the reflection's over all
        vals = (o["area_cf"][found].mean() * 100, o["d_cf"][found].nanmean(), o["d_real_cf"][found].nanmean(),
                o["area_r"].mean() * 100, o["d_r"].nanmean(), o["d_real_r"].nanmean())
        rows.append(o | {"found": found})
        print(f"| {ex.classes[s]} → {ex.classes[t]} | {len(idx)} | {found.float().mean():.2f} | {vals[0]:.1f} | "
              f"{vals[1]:.3f} | {vals[2]:.3f} | {vals[3]:.1f} | {vals[4]:.3f} | {vals[5]:.3f} |")
    found = torch.cat([r["found"] for r in rows])
    cat = {key: torch.cat([r[key] for r in rows]) for key in rows[0] if key != "found"}
    print(f"| **all** | {len(found)} | {found.float().mean():.3f} | {cat['area_cf'][found].mean() * 100:.1f} | "
          f"**{cat['d_cf'][found].nanmean():.3f}** | {cat['d_real_cf'][found].nanmean():.3f} | "
          f"{cat['area_r'].mean() * 100:.1f} | **{cat['d_r'].nanmean():.3f}** | {cat['d_real_r'].nanmean():.3f} |")
    if recon:
        print("\n| reconstruction x̂ (k = 0) | n | CSP mask at k = 0 (% of image) | detail in the mask | "
              "L1 in the mask | L1 outside |")
        print("|---|---|---|---|---|---|")
        for pair in dict.fromkeys(r["pair"] for r in recon):
            got = {key: torch.cat([r[key] for r in recon if r["pair"] == pair]) for key in recon[0] if key != "pair"}
            print(f"| {pair} | {len(got['area'])} | {got['area'].mean() * 100:.1f} | "
                  f"{got['detail'].nanmean():.3f} | {got['l1_in'].nanmean():.3f} | {got['l1_out'].nanmean():.3f} |")


def reconstruction_detail(ex: Explainer, x: torch.Tensor, t: int) -> dict[str, torch.Tensor]:
    """x̂ = G(f_s) of a skip decoder at k = 0, measured inside its CSP mask (image resolution) and outside."""
    m = ex.mirror
    if not m.skips:
        raise SystemExit("--reconstruction needs a skip decoder (the CSP mask marks what it redraws)")
    with torch.inference_mode():
        prep = m.prepare(x, torch.full((len(x),), t, device=x.device))
        rows = torch.arange(len(x), device=x.device)
        k0 = torch.zeros(len(x), device=x.device)
        x_hat = m.decode_at(prep, rows, k0).float()
        mask = spatial_prior_mask(prep["f_s"], m.weight, prep["source"], prep["target"], k0,
                                  rho_low=m.rho[0], rho_high=m.rho[1])
    inside = F.interpolate(mask.float(), size=x.shape[-2:], mode="nearest")[:, 0] > 0.5
    err = (x_hat - x).abs().mean(1)
    area = inside.float().mean((1, 2))
    l1_in = (err * inside).sum((1, 2)) / inside.sum((1, 2)).clamp_min(1)
    l1_out = (err * ~inside).sum((1, 2)) / (~inside).sum((1, 2)).clamp_min(1)
    return {"area": area.cpu(), "detail": region_detail(x_hat, x, inside).cpu(),
            "l1_in": torch.where(area > 0, l1_in, torch.nan).cpu(), "l1_out": l1_out.cpu()}


if __name__ == "__main__":
    main()
