"""Can a fresh discriminator tell a Mirror-CFE decoder's images from real ones? A GAN-signal probe.

    python benchmarks/disc_probe.py --model celeba-mouth [--decoder FILE] [--n 1536] [--steps 300]

During training the discriminator's loss can sit next to chance (2 ln 2 ≈ 1.386) while the
decoded images are plainly wrong (on CelebA: a blurred patch over the mouth). That can mean two
things. Either the images cannot be told apart by this discriminator, or they can and the moving
game never lets it learn. This script trains a *fresh* discriminator of the training's
architecture, the class-conditional PatchGAN at Adam 8e-4, betas (0.5, 0.999), batch 64, on
*fixed* decoded images. Fakes: the path x_k, k ~ U[0.5, 1], of ``--n`` training images towards
their runner-up class. Reals: ``--n`` other training images. Every 50 steps it prints the
held-out accuracy on 256 test images of each kind (the image's mean patch logit > 0 means real).
Accuracy near 1 means the decoder's images are detectably fake.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from cfe_cli.api import Explainer
from cfe_cli.data import load_dataset
from cfe_cli.methods import mirror
from cfe_cli.models.generators import PatchDiscriminator


@torch.no_grad()
def decoded_path(ex: Explainer, x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """x_k, k ~ U[0.5, 1], towards the runner-up, and the head's class at z_k. ``(B, C, R, R), (B,)``."""
    clf, dec = ex.clf.model, ex.mirror.dec
    W, b = clf.head.weight, clf.head.bias
    skips = getattr(dec, "uses_skips", False)
    st = clf.stages(x, stem=dec.config.skip_stem) if skips else [clf.features(x)]
    f_s = st[-1]
    top2 = (f_s.mean(dim=(2, 3)) @ W.T + b).topk(2, dim=1).indices
    s, t = top2[:, 0], top2[:, 1]
    k = (0.5 + 0.5 * torch.rand(len(x), generator=gen)).to(x.device)
    f_k = mirror.interpolate(f_s, mirror.mirror_features(f_s, W, b, s, t), k)
    y = (f_k.mean(dim=(2, 3)) @ W.T + b).argmax(1)
    if not skips:
        return dec(f_k), y
    mask = mirror.spatial_prior_mask(f_k, W, s, t, k, rho_low=dec.config.rho_low, rho_high=dec.config.rho_high)
    return dec(f_k, st[:-1], mask), y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="celeba-mouth")
    ap.add_argument("--decoder", default=None, help="a decoder file (default: the model's mirror.safetensors)")
    ap.add_argument("--n", type=int, default=1536, help="training images per kind (fake, real)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=8e-4)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    gen = torch.Generator().manual_seed(a.seed)
    ex = Explainer(a.model, "mirror", device=a.device, decoder=a.decoder)
    dev = ex.device
    res = ex.clf.config.resolution
    train = load_dataset(ex.clf.info["dataset"], "train", size=res)
    test = load_dataset(ex.clf.info["dataset"], "test", size=res)
    if len(train) < 2 * a.n or len(test) < 512:
        raise SystemExit(f"need {2 * a.n} training and 512 test images; have {len(train)} and {len(test)}")
    t0 = time.perf_counter()
    fake, y_fake = map(torch.cat, zip(*[decoded_path(ex, train.images[i:i + 128].to(dev), gen)
                                        for i in range(0, a.n, 128)], strict=True))
    fake_te, y_fake_te = decoded_path(ex, test.images[:256].to(dev), gen)
    real, y_real = train.images[a.n:2 * a.n].to(dev), train.labels[a.n:2 * a.n].to(dev)
    real_te, y_real_te = test.images[256:512].to(dev), test.labels[256:512].to(dev)
    which = a.decoder or "the model's mirror.safetensors"
    print(f"decoded {a.n + 256} images in {time.perf_counter() - t0:.0f} s; decoder: {which}")
    D = PatchDiscriminator(train.channels, res, num_classes=len(ex.classes)).to(dev)
    opt = torch.optim.Adam(D.parameters(), lr=a.lr, betas=(0.5, 0.999))
    print("| step | train D loss | held-out accuracy | mean logit real / fake |\n|---|---|---|---|")
    for step in range(a.steps + 1):
        i = torch.randint(0, a.n, (64,), generator=gen).to(dev)
        j = torch.randint(0, a.n, (64,), generator=gen).to(dev)
        loss = F.softplus(-D(real[j], y_real[j])).mean() + F.softplus(D(fake[i], y_fake[i])).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 0:
            with torch.no_grad():
                r = D(real_te, y_real_te).mean(dim=(1, 2, 3))
                g = D(fake_te, y_fake_te).mean(dim=(1, 2, 3))
            acc = ((r > 0).float().mean() + (g < 0).float().mean()) / 2
            print(f"| {step} | {loss.item():.3f} | {acc:.3f} | {r.mean():.2f} / {g.mean():.2f} |", flush=True)


if __name__ == "__main__":
    main()
