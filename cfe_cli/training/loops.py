"""Training loops of the classifiers and the VAEs (the Mirror-CFE decoder's is in :mod:`cfe_cli.training.mirror`).

The library never prints: progress goes to an optional callback that receives a dict
(``completed``, ``total``, ``epoch``, ``loss``, ``acc`` …); the CLI draws it with Rich.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cfe_cli.data import Dataset
from cfe_cli.distributed import Dist
from cfe_cli.geometry import l2_unit, project_l2
from cfe_cli.models.classifiers import GAPClassifier, TrainResult
from cfe_cli.training import ddp

Progress = Callable[[dict[str, float]], None]


@dataclass(frozen=True)
class ClassifierTrainConfig:
    """Hyper-parameters of :func:`train_classifier` (stored with the weights)."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    augment: str = "shift"  # none | shift | shift-flip | translate-flip | translate-flip-erase | flip-rot | face
    ema: float = 0.0  # > 0: keep an exponential moving average of the weights (and BN statistics) and save it
    seed: int = 0
    adv_eps: float = 0.0  # > 0: adversarial training on L2 PGD examples of this radius (pixels in [0, 1])
    adv_steps: int = 3  # with adv_eps: the PGD steps per batch


AUGMENTS = ("none", "shift", "shift-flip", "translate-flip", "translate-flip-erase", "flip-rot", "face")


def random_erase(x: torch.Tensor, gen: torch.Generator | None = None, p: float = 0.5,
                 area: tuple[float, float] = (0.02, 0.2), aspect: tuple[float, float] = (0.3, 3.3)) -> torch.Tensor:
    """Random erasing (Zhong et al. 2020), batched: with probability ``p`` per sample, a rectangle
    of ``area`` × the image and log-uniform ``aspect`` is set to 0 (the background of the 28²
    sets). Shape: ``(B, C, H, W) -> (B, C, H, W)``.
    """
    b, _, h, w = x.shape
    dev = x.device

    def rand(n: int) -> torch.Tensor:
        return torch.rand(n, generator=gen).to(dev)

    a = (area[0] + rand(b) * (area[1] - area[0])) * h * w
    log_r = math.log(aspect[0]) + rand(b) * (math.log(aspect[1]) - math.log(aspect[0]))
    r = log_r.exp()
    eh = (a * r).sqrt().clamp(1, h)
    ew = (a / r).sqrt().clamp(1, w)
    top = rand(b) * (h - eh)
    left = rand(b) * (w - ew)
    ys = torch.arange(h, device=dev).view(1, h, 1)
    xs = torch.arange(w, device=dev).view(1, 1, w)
    inside = ((ys >= top.view(b, 1, 1)) & (ys < (top + eh).view(b, 1, 1))
              & (xs >= left.view(b, 1, 1)) & (xs < (left + ew).view(b, 1, 1)))
    inside &= (rand(b) < p).view(b, 1, 1)
    return x.masked_fill(inside[:, None], 0.0)


def augment_batch(x: torch.Tensor, kind: str, gen: torch.Generator | None = None) -> torch.Tensor:
    """Batched random augmentation; one draw per sample, no per-sample loop.

    Shape: ``(B, C, H, W) -> (B, C, H, W)``.
    """
    if kind == "none":
        return x
    b, _, h, w = x.shape
    dev = x.device

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen).to(dev)

    if kind in ("shift-flip", "translate-flip", "translate-flip-erase", "face"):
        flip = rand(b) < 0.5
        x = torch.where(flip.view(b, 1, 1, 1), x.flip(-1), x)
    if kind == "flip-rot":
        x = torch.where((rand(b) < 0.5).view(b, 1, 1, 1), x.flip(-1), x)
        x = torch.where((rand(b) < 0.5).view(b, 1, 1, 1), x.flip(-2), x)
        if h == w:
            x = torch.where((rand(b) < 0.5).view(b, 1, 1, 1), x.transpose(-1, -2), x)
    # Small random affine: translation up to 2/28 of the side, rotation up to 10°,
    # scale 0.9–1.1 (digits, clothes, cells and faces all tolerate these).
    max_t = 2.0 / 28.0 * 2.0  # in normalised [-1, 1] coordinates
    # ``translate-flip`` (clothes: upright, fixed size) keeps only the translation.
    rigid = 0.0 if kind.startswith("translate-flip") else 1.0
    ang = (rand(b) * 2 - 1) * math.radians(10 if kind != "face" else 5) * rigid
    scale = 1 + (rand(b) * 2 - 1) * 0.1 * rigid
    tx, ty = (rand(b) * 2 - 1) * max_t, (rand(b) * 2 - 1) * max_t
    cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    pad = "border" if kind in ("face", "flip-rot") else "zeros"
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode=pad, align_corners=False)
    return random_erase(x, gen) if kind.endswith("-erase") else x


def l2_pgd(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int,
           step_size: float | None = None) -> torch.Tensor:
    """Untargeted L2 PGD (Madry et al. 2018): ``steps`` normalised-gradient ascent steps on the
    cross-entropy of the true labels, each projected onto the L2 ball of radius ``eps`` around ``x``
    and the [0, 1] image box; step size ``2.5 eps / steps`` unless given. The model's mode is the
    caller's (eval: BatchNorm statistics untouched); its parameters get no gradient.

    Shape: ``x (B, C, H, W)`` in [0, 1], ``y (B,)`` -> adversarial ``(B, C, H, W)``, detached."""
    eta = 2.5 * eps / max(steps, 1) if step_size is None else step_size
    x = x.detach()
    delta = torch.zeros_like(x)
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = F.cross_entropy(model(x + delta), y)
        (g,) = torch.autograd.grad(loss, delta)
        delta = project_l2(delta.detach() + eta * l2_unit(g), x, eps)
    return (x + delta).detach()


def evaluate_accuracy(model: torch.nn.Module, data: Dataset, batch_size: int = 512,
                      device: torch.device | str = "cpu", adv_eps: float = 0.0, adv_steps: int = 10,
                      limit: int | None = None) -> float:
    """Top-1 accuracy of ``model`` on a dataset split (its first ``limit`` images); with ``adv_eps``
    > 0, on L2 PGD examples of that radius (``adv_steps`` steps, :func:`l2_pgd`): robust accuracy."""
    model.eval()
    n = len(data) if limit is None else min(limit, len(data))
    correct = 0
    for i in range(0, n, batch_size):
        x = data.images[i:min(i + batch_size, n)].to(device)
        y = data.labels[i:min(i + batch_size, n)].to(device)
        if adv_eps > 0:
            x = l2_pgd(model, x, y, adv_eps, adv_steps)
        with torch.no_grad():
            correct += int((model(x).argmax(1) == y).sum())
    return correct / max(1, n)


def train_classifier(model: GAPClassifier, train: Dataset, test: Dataset, cfg: ClassifierTrainConfig, *,
                     device: torch.device | str = "cpu", progress: Progress | None = None,
                     max_steps: int | None = None, dist: Dist | None = None) -> TrainResult:
    """Train ``model`` with AdamW + one-cycle LR and batched augmentation; report test accuracy.

    Args:
        model: a fresh :class:`GAPClassifier`.
        train, test: dataset splits (images in [0, 1]).
        cfg: hyper-parameters.
        device: where to train.
        progress: called after every step with a dict of counters and running metrics.
        max_steps: stop early after this many steps (tests use it).
        dist: under torchrun, each rank trains on its slice of every global batch (DDP, global-batch
            BatchNorm; :mod:`cfe_cli.training.ddp`): the same steps, losses and weights as one process.
    """
    d = dist or Dist()
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    model.to(device).train()
    net = ddp.wrap(model, d, torch.device(device))
    n = len(train)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs if max_steps is None else min(max_steps, steps_per_epoch * cfg.epochs)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(total, 1), pct_start=0.15)
    ema = None
    if cfg.ema > 0:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True)
    images, labels = train.images, train.labels
    start = time.perf_counter()
    step, run_loss, run_acc = 0, 0.0, 0.0
    history: list[dict[str, float]] = []
    for epoch in range(cfg.epochs):
        perm = torch.randperm(n, generator=gen)
        ep_loss, ep_correct, ep_seen = 0.0, 0, 0
        for i in range(0, n, cfg.batch_size):
            if step >= total:
                break
            idx = perm[i:i + cfg.batch_size]
            mine = ddp.my_slice(len(idx), d)  # the global batch is augmented whole: the same draws per sample
            x = augment_batch(images[idx].to(device), cfg.augment, gen)[mine]
            y = labels[idx].to(device)[mine]
            if cfg.adv_eps > 0 and len(y):  # train on the worst case in the ball (attack in eval mode)
                model.eval()
                x = l2_pgd(model, x, y, cfg.adv_eps, cfg.adv_steps)
                model.train()
            logits = net(x)
            ce = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing) if len(y) else logits.sum() * 0
            loss = ce * ddp.scale(len(y), len(idx), d)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if ema is not None:
                ema.update_parameters(model)
            step += 1
            lv = ddp.global_mean(ce, len(y), len(idx), d)
            correct = int(d.sum(int((logits.detach().argmax(1) == y).sum())))
            ep_loss += lv * len(idx)
            ep_correct += correct
            ep_seen += len(idx)
            run_loss = lv if step == 1 else 0.95 * run_loss + 0.05 * lv
            run_acc = correct / len(idx) if step == 1 else 0.95 * run_acc + 0.05 * correct / len(idx)
            if progress is not None:
                progress({"completed": step, "total": total, "epoch": epoch + 1, "loss": run_loss, "acc": run_acc})
        if ep_seen:
            history.append({"epoch": epoch + 1, "loss": ep_loss / ep_seen, "acc": ep_correct / ep_seen})
        if step >= total:
            break
    ddp.unwrap(model)
    if ema is not None:  # the averaged weights and BN statistics are what gets evaluated and saved
        model.load_state_dict(ema.module.state_dict())
    test_acc = evaluate_accuracy(model, test, device=device)
    model.eval()
    return TrainResult(test_accuracy=test_acc, train_loss=history[-1]["loss"] if history else float("nan"),
                       epochs=len(history), seconds=time.perf_counter() - start, history=history)


# ----------------------------------------------------------------------------- VAE


@dataclass(frozen=True)
class VAETrainConfig:
    """Hyper-parameters of the conv VAE (BCE + β·KL, Adam)."""

    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    beta: float = 1.0
    seed: int = 0


def elbo_terms(vae: torch.nn.Module, x: torch.Tensor, a: torch.Tensor | None = None,
               eps: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One reparameterised sample: ``z (B, D)``, the summed pixel BCE ``(B,)`` and the KL ``(B,)``.
    ``a``: the attribute vector of a conditional VAE; ``eps (B, D)``: the noise (default: drawn here)."""
    mu, logvar = vae.encode(x)
    z = mu + (torch.randn_like(mu) if eps is None else eps) * (0.5 * logvar).exp()
    logits = vae.decode_logits(z) if a is None else vae.decode_logits(z, a)
    rec = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(dim=(1, 2, 3))
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
    return z, rec, kl


class _ELBO(torch.nn.Module):
    """``vae``'s ELBO terms as one forward pass (what DistributedDataParallel wraps)."""

    def __init__(self, vae: torch.nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor, eps: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return elbo_terms(self.vae, x, eps=eps)


def train_vae(vae: torch.nn.Module, train: Dataset, cfg: VAETrainConfig, *, device: torch.device | str = "cpu",
              progress: Progress | None = None, max_steps: int | None = None,
              dist: Dist | None = None) -> list[dict[str, float]]:
    """Train a :class:`~cfe_cli.models.generators.ConvVAE` with BCE (summed over pixels) + β·KL.

    ``dist``: under torchrun each rank takes its slice of every global batch and of the batch's
    noise (drawn whole, as one process draws it); see :mod:`cfe_cli.training.ddp`.
    """
    d = dist or Dist()
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    vae.to(device).train()
    net = ddp.wrap(_ELBO(vae), d, torch.device(device))
    opt = torch.optim.Adam(vae.parameters(), lr=cfg.lr)
    n = len(train)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs if max_steps is None else min(max_steps, steps_per_epoch * cfg.epochs)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total, 1))
    history: list[dict[str, float]] = []
    step = 0
    for epoch in range(cfg.epochs):
        perm = torch.randperm(n, generator=gen)
        s_rec = s_kl = 0.0
        seen = 0
        for i in range(0, n, cfg.batch_size):
            if step >= total:
                break
            idx = perm[i:i + cfg.batch_size]
            mine = ddp.my_slice(len(idx), d)
            x = train.images[idx[mine]].to(device)
            eps = torch.randn(len(idx), vae.config.latent_dim, device=device)[mine] if d.comm else None
            z, rec, kl = net(x, eps)
            loss = (rec + cfg.beta * kl).mean() * ddp.scale(len(x), len(idx), d)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            rec_sum, kl_sum = d.sum(float(rec.detach().sum())), d.sum(float(kl.detach().sum()))
            s_rec += rec_sum
            s_kl += kl_sum
            seen += len(idx)
            if progress is not None:
                progress({"completed": step, "total": total, "epoch": epoch + 1, "rec": rec_sum / len(idx),
                          "kl": kl_sum / len(idx)})
        if seen:
            history.append({"epoch": epoch + 1, "rec": s_rec / seen, "kl": s_kl / seen})
        if step >= total:
            break
    ddp.unwrap(vae)
    vae.eval().cpu()
    return history


# ----------------------------------------------------------------------------- attribute-conditional VAE


@dataclass(frozen=True)
class CondVAETrainConfig:
    """Hyper-parameters of the attribute-conditional VAE (GCI on faces).

    Two phases: the multi-label attribute classifier on real images (BCE, flips and small
    shifts), then, with it frozen, the VAE with ``BCE(G(z, A), x) + β·KL + λ_attr·BCE(C(G(z, A')), A')``,
    where ``A'`` are the attributes of another image of the batch (AttGAN's edit loss) and
    ``λ_attr`` is per pixel, so the edit term keeps its weight at any resolution.
    """

    epochs: int = 10
    attr_epochs: int = 6
    batch_size: int = 128
    lr: float = 1e-3
    beta: float = 1.0
    lambda_attr: float = 0.1
    seed: int = 0


def attribute_targets(train: Dataset, names: list[str] | tuple[str, ...]) -> torch.Tensor:
    """The dataset's binary attributes ``(N, A)`` for ``names``, mapped to ±1."""
    if train.attributes is None or not train.attribute_names:
        raise ValueError("the dataset has no attributes")
    idx = [list(train.attribute_names).index(n) for n in names]
    return train.attributes[:, idx] * 2 - 1


def train_cvae(model: torch.nn.Module, train: Dataset, cfg: CondVAETrainConfig, *,
               device: torch.device | str = "cpu", progress: Progress | None = None,
               max_steps: int | None = None) -> list[dict[str, float]]:
    """Train a :class:`~cfe_cli.models.generators.CondVAE` (attribute net first, then the VAE)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    model.to(device)
    a_all = attribute_targets(train, model.attribute_names)
    n = len(train)
    per_epoch = math.ceil(n / cfg.batch_size)
    total = per_epoch * (cfg.attr_epochs + cfg.epochs)
    if max_steps is not None:
        total = min(total, max_steps)
    history: list[dict[str, float]] = []
    step = 0
    # phase 1: the attribute classifier on real images
    net = model.attribute_net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    n1 = min(per_epoch * cfg.attr_epochs, max(total // 2, 1) if max_steps is not None else total)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr * 2, total_steps=max(n1, 1))
    for epoch in range(cfg.attr_epochs):
        perm = torch.randperm(n, generator=gen)
        s_loss, seen = 0.0, 0
        for i in range(0, n, cfg.batch_size):
            if step >= n1:
                break
            j = perm[i:i + cfg.batch_size]
            x = augment_batch(train.images[j].to(device), "face", gen)
            loss = F.binary_cross_entropy_with_logits(net(x), (a_all[j].to(device) > 0).float())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            s_loss += float(loss.detach()) * len(j)
            seen += len(j)
            if progress is not None:
                progress({"completed": step, "total": total, "epoch": epoch + 1, "attr_bce": float(loss.detach())})
        if seen:
            history.append({"phase": "attributes", "epoch": epoch + 1, "bce": s_loss / seen})
    net.eval().requires_grad_(False)
    # phase 2: the conditional VAE against the frozen attribute classifier
    params = [p for name, p in model.named_parameters() if not name.startswith("attribute_net.")]
    model.train()
    net.eval()
    opt = torch.optim.Adam(params, lr=cfg.lr)
    n2 = max(total - step, 1)
    sched2 = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=n2)
    pixels = train.images[0].numel()
    for epoch in range(cfg.epochs):
        perm = torch.randperm(n, generator=gen)
        s_rec = s_kl = s_att = 0.0
        seen = 0
        for i in range(0, n, cfg.batch_size):
            if step >= total:
                break
            j = perm[i:i + cfg.batch_size]
            x, a = train.images[j].to(device), a_all[j].to(device)
            z, rec, kl = elbo_terms(model, x, a)
            a_new = a[torch.randperm(len(j), generator=gen).to(device)]
            x_new = model.decode(z, a_new)
            att = F.binary_cross_entropy_with_logits(net(x_new), (a_new > 0).float(), reduction="none").mean(1)
            loss = (rec + cfg.beta * kl + cfg.lambda_attr * pixels * att).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched2.step()
            step += 1
            s_rec += float(rec.detach().sum())
            s_kl += float(kl.detach().sum())
            s_att += float(att.detach().sum())
            seen += len(j)
            if progress is not None:
                progress({"completed": step, "total": total, "epoch": epoch + 1, "rec": float(rec.detach().mean()),
                          "kl": float(kl.detach().mean()), "edit_bce": float(att.detach().mean())})
        if seen:
            history.append({"phase": "vae", "epoch": epoch + 1, "rec": s_rec / seen, "kl": s_kl / seen,
                            "edit_bce": s_att / seen})
        if step >= total:
            break
    model.eval().cpu()
    return history
