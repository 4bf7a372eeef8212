"""Training loops: classifiers (and, in later modules, generators).

The library never prints: progress goes to an optional callback that receives a dict
(``completed``, ``total``, ``epoch``, ``loss``, ``acc`` …); the CLI draws it with Rich.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from cfe_cli.data import Dataset
from cfe_cli.errors import InputError
from cfe_cli.models.classifiers import GAPClassifier, TrainResult

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


@torch.inference_mode()
def evaluate_accuracy(model: torch.nn.Module, data: Dataset, batch_size: int = 512,
                      device: torch.device | str = "cpu") -> float:
    """Top-1 accuracy of ``model`` on a dataset split."""
    model.eval()
    correct = 0
    for i in range(0, len(data), batch_size):
        x = data.images[i:i + batch_size].to(device)
        y = data.labels[i:i + batch_size].to(device)
        correct += int((model(x).argmax(1) == y).sum())
    return correct / max(1, len(data))


def train_classifier(model: GAPClassifier, train: Dataset, test: Dataset, cfg: ClassifierTrainConfig, *,
                     device: torch.device | str = "cpu", progress: Progress | None = None,
                     max_steps: int | None = None) -> TrainResult:
    """Train ``model`` with AdamW + one-cycle LR and batched augmentation; report test accuracy.

    Args:
        model: a fresh :class:`GAPClassifier`.
        train, test: dataset splits (images in [0, 1]).
        cfg: hyper-parameters.
        device: where to train.
        progress: called after every step with a dict of counters and running metrics.
        max_steps: stop early after this many steps (tests use it).
    """
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    model.to(device).train()
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
            x = augment_batch(images[idx].to(device), cfg.augment, gen)
            y = labels[idx].to(device)
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if ema is not None:
                ema.update_parameters(model)
            step += 1
            lv = float(loss.detach())
            correct = int((logits.detach().argmax(1) == y).sum())
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
    if ema is not None:  # the averaged weights and BN statistics are what gets evaluated and saved
        model.load_state_dict(ema.module.state_dict())
    test_acc = evaluate_accuracy(model, test, device=device)
    model.eval()
    return TrainResult(test_accuracy=test_acc, train_loss=history[-1]["loss"] if history else float("nan"),
                       epochs=len(history), seconds=time.perf_counter() - start, history=history)


# ----------------------------------------------------------------------------- Mirror-CFE decoder


@dataclass(frozen=True)
class MirrorTrainConfig:
    """Hyper-parameters of the Mirror-CFE decoder (choices documented in docs/methods/mirror.md)."""

    epochs: int = 20
    batch_size: int = 64
    lr: float = 2e-4  # Adam, betas (0.5, 0.999) as in the third-party re-implementation
    lambda_cls: float = 1.0
    lambda_adv: float = 0.1
    lambda_rec: float = 10.0
    lambda_fea: float = 0.1
    lambda_tri: float = 1.0
    alpha: float = 0.2  # triangulation slack
    runner_up_share: float = 0.5  # share of targets drawn as the runner-up class (else uniform)
    k_cfe_share: float = 0.0  # share of samples whose k is drawn from U[0.5, 1] (the CFE half) instead of U[0, 1]
    augment: str = "none"  # augmentation of the training images (names as for classifiers)
    refine: str = "exact"
    seed: int = 0
    precision: str = "fp32"  # "bf16": autocast the forward passes to bfloat16 (losses and updates in float32)
    schedule: str = "constant"  # or "cosine": the learning rate decays to 0 over the run (both networks)
    disc: str = "patch"  # or "class": a class-conditional (projection) PatchGAN, see train_mirror
    skips: bool = False  # the skip-connection controller (SPE + CSP) fed by the classifier's earlier stages
    skip_stem: bool = False  # with skips: the classifier's full-resolution stem is a skip too
    csp_rho: tuple[float, float] | None = None  # with skips: CSP (rho_low, rho_high); None: init's or (0.1, 0.5)
    pairs: tuple[tuple[int, int], ...] = ()  # (source, target) pairs to train more often (e.g. the seeds' pairs)
    pair_share: float = 0.5  # with pairs: share of samples whose source has a pair that take the pair's target
    lr_d: float | None = None  # the discriminator's learning rate (None: lr; larger: two time-scale updates)
    disc_rec: bool = True  # the discriminator also scores the reconstructions x̂ (k = 0) as fakes
    hard_share: float = 0.0  # share of each batch drawn from the ambiguous training images (see hard_pool)
    hard_below: float = 0.7  # an image is ambiguous when the classifier's top probability is below this
    width: int | None = None  # the decoder's channels at the feature map's size (None: init's or 64)
    min_width: int | None = None  # the fewest channels after halving per octave (None: init's or 32)
    spe_upsample: str | None = None  # skip decoders: SPE's resize to the skip's size (None: init's or nearest)
    adv_focus: str = "image"  # or "edit" (skip decoders): the GAN losses count only the patches the CSP mask edits
    spe_grid: int | None = None  # skip decoders: the grid SPE pools each skip to (None: init's or f_k's size)
    lambda_perc: float = 0.0  # weight of L_perc, the reconstruction's distance in the classifier's stage features
    rec_mask_weight: float = 1.0  # skip decoders: L_rec's pixels inside the k = 0 CSP mask count this many times
    lambda_match: float = 0.0  # weight of L_match: x_k's stage statistics vs real images of its class (realism.py)
    match_margin: float = 1.0  # L_match's slack, in spreads of the class's real images


DISCRIMINATOR_FOCUS = ("image", "edit")


def rec_loss(x: torch.Tensor, x_rec: torch.Tensor, mask: torch.Tensor | None, weight: float = 1.0) -> torch.Tensor:
    """L_rec = mean |x − x̂|, with the pixels inside the k = 0 CSP mask counted ``weight`` times.

    The mask ``(B, 1, h, w)`` marks the cells the decoder redraws from SPE's input even at k = 0 (a
    face's mouth, ~6 % of the image); with weight 1 this is the plain L1 of the spec.
    Shape: ``x, x_rec (B, C, H, W)`` -> scalar.
    """
    err = (x - x_rec).abs()
    if mask is None or weight == 1.0:
        return err.mean()
    w = 1.0 + (weight - 1.0) * F.interpolate(mask.to(err.dtype), size=err.shape[-2:], mode="nearest")
    return (err * w).mean()


def edit_weights(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The CSP mask ``(B, 1, h, w)`` as weights on a discriminator's patch grid ``size``.

    Max-pooled (or nearest-resized) to the grid and dilated by one patch, since the decoder's
    convolutions spread an edit a little beyond the mask's cells. Shape: ``(B, 1, *size)`` in {0, 1}.
    """
    if mask.shape[-1] >= size[-1]:
        w = F.adaptive_max_pool2d(mask, size)
    else:
        w = F.interpolate(mask, size=size, mode="nearest")
    return F.max_pool2d(w, 3, stride=1, padding=1)


def focused_mean(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Mean of per-patch losses ``(B, 1, r, r)``; with ``weights``, over the weighted patches only."""
    if weights is None:
        return values.mean()
    return (values * weights).sum() / weights.sum().clamp_min(1.0)


DISCRIMINATORS = ("patch", "class")


def _class_sampler(labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    order = torch.argsort(labels)
    counts = torch.bincount(labels, minlength=num_classes)
    offsets = torch.cumsum(counts, 0) - counts
    return order, counts, offsets


def pair_table(pairs: tuple[tuple[int, int], ...], num_classes: int) -> torch.Tensor:
    """``(K, K)`` float table with 1 at [s, t] for each listed training pair s -> t."""
    focus = torch.zeros(num_classes, num_classes)
    for s, t in pairs:
        if not (0 <= s < num_classes and 0 <= t < num_classes) or s == t:
            raise ValueError(f"training pair {s}->{t} is not a pair of two different classes of {num_classes}")
        focus[s, t] = 1.0
    return focus


def draw_targets(logits: torch.Tensor, gen: torch.Generator, runner_up_share: float,
                 focus: torch.Tensor | None = None, pair_share: float = 0.0) -> torch.Tensor:
    """Training targets ``(B,)`` for logits ``(B, K)``: the runner-up with probability
    ``runner_up_share``, else a uniform class other than the prediction; with a pair table
    ``focus`` (:func:`pair_table`), a sample predicted as a listed source takes one of its listed
    targets (uniformly) with probability ``pair_share``. Random draws come from ``gen`` (CPU)."""
    B, K = logits.shape
    device = logits.device
    source = logits.argmax(1)
    runner_up = logits.topk(2, dim=1).indices[:, 1]
    other = (source + 1 + torch.randint(0, K - 1, (B,), generator=gen).to(device)) % K
    use_ru = (torch.rand(B, generator=gen) < runner_up_share).to(device)
    target = torch.where(use_ru, runner_up, other)
    if focus is None:
        return target
    src = source.cpu()
    has = focus.sum(1) > 0
    w = focus[src] + (~has[src]).float()[:, None]  # rows without a pair: any class (not used)
    pick = torch.multinomial(w, 1, generator=gen).squeeze(1)
    use_pair = has[src] & (torch.rand(B, generator=gen) < pair_share)
    return torch.where(use_pair.to(device), pick.to(device), target)


@torch.no_grad()
def hard_pool(classifier: torch.nn.Module, images: torch.Tensor, below: float,
              device: torch.device | str = "cpu", batch_size: int = 512) -> torch.Tensor:
    """Indices ``(P,)`` of the images ``(N, C, H, W)`` whose top class probability is below ``below``.

    These ambiguous images are where the decoder fails most: their reflection asks for the
    target at the source's own low confidence, and a small decoding error lands in a third
    class (benchmarks/mirror_failures.py)."""
    top = torch.cat([classifier(images[i:i + batch_size].to(device)).softmax(1).amax(1).cpu()
                     for i in range(0, len(images), batch_size)])
    return (top < below).nonzero()[:, 0]


def mix_hard(idx: torch.Tensor, pool: torch.Tensor, share: float, gen: torch.Generator) -> torch.Tensor:
    """A batch's indices ``(B,)`` with each entry replaced, with probability ``share``, by a
    uniform draw from ``pool``; ``idx`` itself is left unchanged."""
    if share <= 0 or not len(pool):
        return idx
    take = torch.rand(len(idx), generator=gen) < share
    out = idx.clone()
    out[take] = pool[torch.randint(0, len(pool), (int(take.sum()),), generator=gen)]
    return out


def triangulation_loss(x_s: torch.Tensor, x_k: torch.Tensor, x_ref: torch.Tensor, z_s: torch.Tensor,
                       z_k: torch.Tensor, z_ref: torch.Tensor, alpha: float) -> torch.Tensor:
    """L_tri: keep d(x_s,x_k) ≈ d(x_k,x_ref)/β with β = ‖z_k−z_ref‖/‖z_s−z_k‖, slack α.

    Shape: images ``(B, C, H, W)``, features ``(B, D)`` -> ``(B,)``.
    """
    d_sk = (x_s - x_k).abs().mean(dim=(1, 2, 3))
    d_kr = (x_k - x_ref).abs().mean(dim=(1, 2, 3))
    beta = (z_k - z_ref).norm(dim=1) / (z_s - z_k).norm(dim=1).clamp_min(1e-3)
    goal = d_kr / beta.clamp_min(1e-3)
    return F.relu((1 - alpha) * goal - d_sk) + F.relu(d_sk - (1 + alpha) * goal)


def stage_distance(ours: list[torch.Tensor], theirs: list[torch.Tensor]) -> torch.Tensor:
    """L_perc: the mean over the classifier's stages of |F_i(x̂) − F_i(x)|, each divided by the
    mean |F_i(x)| of the batch so that no stage dominates by its scale (a perceptual loss with
    the explained classifier as the feature network: no extra weights). Shape: lists of
    ``(B, C_i, h_i, w_i)`` -> scalar."""
    terms = [(a.float() - b).abs().mean() / b.abs().mean().clamp_min(1e-6) for a, b in zip(ours, theirs, strict=True)]
    return torch.stack(terms).mean()


def _all_stages(clf: torch.nn.Module) -> Callable[[torch.Tensor], list[torch.Tensor]]:
    """``x -> [stem, stage_1, …, last]`` for cfe's own classifiers, ``[features]`` otherwise."""
    if hasattr(clf, "stages"):
        return lambda x: clf.stages(x, stem=True)
    return lambda x: [clf.features(x)]


def train_mirror(classifier: torch.nn.Module, train: Dataset, cfg: MirrorTrainConfig, *,
                 device: torch.device | str = "cpu", progress: Progress | None = None,
                 max_steps: int | None = None, time_limit: float | None = None,
                 init: torch.nn.Module | None = None) -> tuple[torch.nn.Module, list[dict[str, float]]]:
    """Train the Mirror-CFE decoder G (and a PatchGAN discriminator) against a frozen classifier.

    Per batch: source s = the classifier's prediction; target t = the runner-up (with
    probability ``runner_up_share``) or a uniform other class; with ``pairs``, a sample whose s
    is the source of a listed pair takes that pair's target instead (one of them, uniformly, if
    several) with probability ``pair_share``; k ~ U[0, 1] per sample;
    f_k on the refined reflection path; x_k = G(f_k), x̂ = G(f_s). Losses (spec §6):
    L_cls = KL(q(z_k) ‖ q(F(x_k))), L_adv (non-saturating GAN on x_k and x̂),
    L_rec = |x − x̂|₁, L_fea = ‖z_k − GAP(F(x_k))‖₂, L_tri (CFE branch: a real image of
    class t; SFE branch: another image of class s).

    ``disc="class"``: the discriminator is class-conditional (projection): real images are
    scored with their label, x_k with the head's class at z_k and x̂ with s, so a reflection is
    pushed to look like a real image *of the target class*, not just like any real image.

    ``adv_focus="edit"`` (skip decoders): the fake terms of both GAN losses average only over
    the discriminator patches inside the CSP mask (dilated by a patch, :func:`edit_weights`).
    Outside it x_k carries the source's own skip features, so scoring those patches as fake
    teaches the discriminator noise and spreads its signal over the unedited face.

    ``init``: a trained decoder to fine-tune (same config); the discriminator starts afresh.

    ``time_limit`` (seconds): stop after the step that passes it (the run is then shorter than
    its epochs / ``max_steps``); with the cosine schedule the learning rate follows whichever of
    steps and time is further along, so a time-limited run still ends with the rate decayed.
    The last history entry then has ``stopped_at_step`` and ``time_limit``.

    ``hard_share``: each batch entry is, with this probability, a training image the classifier
    is unsure of (top probability below ``hard_below``, :func:`hard_pool`) instead of a uniform one.

    Returns:
        the decoder (eval mode, on CPU) and the per-epoch mean of every loss term.
    """
    from cfe_cli.methods import mirror
    from cfe_cli.models.generators import DecoderConfig, MirrorDecoder, PatchDiscriminator

    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    clf = classifier.to(device).eval().requires_grad_(False)
    skips = cfg.skips or cfg.skip_stem or bool(getattr(init, "uses_skips", False))
    stem = skips and (cfg.skip_stem or bool(getattr(getattr(init, "config", None), "skip_stem", False)))
    if skips and not hasattr(clf, "stages"):
        raise ValueError("a skip decoder needs a classifier with stages(x) (cfe's own GAPClassifier)")
    if cfg.csp_rho is not None and not skips:
        raise ValueError("the CSP thresholds (--csp-rho) belong to a skip decoder (--skips)")
    if cfg.spe_upsample is not None and not skips:
        raise ValueError("--spe-upsample belongs to a skip decoder (--skips or --skip-stem)")
    if cfg.adv_focus not in DISCRIMINATOR_FOCUS:
        raise ValueError(f"unknown adversarial focus '{cfg.adv_focus}'; available: {', '.join(DISCRIMINATOR_FOCUS)}")
    if cfg.spe_grid is not None and not skips:
        raise ValueError("--spe-grid belongs to a skip decoder (--skips or --skip-stem)")
    if cfg.adv_focus == "edit" and not skips:
        raise ValueError("--adv-focus edit needs a skip decoder (--skips or --skip-stem): the CSP mask marks the edit")
    if cfg.rec_mask_weight != 1.0 and not skips:
        raise ValueError("--rec-mask-weight needs a skip decoder (--skips or --skip-stem): the CSP mask marks what "
                         "the reconstruction redraws")
    with torch.no_grad():
        x0 = train.images[:2].to(device)
        st0 = clf.stages(x0, stem=stem) if skips else [clf.features(x0)]
    f0 = st0[-1]
    base = init.config if isinstance(init, MirrorDecoder) else DecoderConfig()
    dcfg = DecoderConfig(feat_channels=f0.shape[1], feat_size=f0.shape[-1], out_channels=train.channels,
                         resolution=train.resolution, width=cfg.width or base.width,
                         min_width=cfg.min_width or base.min_width,
                         spe_upsample=cfg.spe_upsample or base.spe_upsample,
                         spe_grid=base.spe_grid if cfg.spe_grid is None else cfg.spe_grid,
                         skip_channels=tuple(s.shape[1] for s in st0[:-1]),
                         skip_sizes=tuple(s.shape[-1] for s in st0[:-1]), skip_stem=stem)
    rho = cfg.csp_rho or ((init.config.rho_low, init.config.rho_high) if isinstance(init, MirrorDecoder)
                          else (dcfg.rho_low, dcfg.rho_high))
    dcfg = replace(dcfg, rho_low=float(rho[0]), rho_high=float(rho[1]))
    G = MirrorDecoder(dcfg)
    if init is not None:
        if getattr(init, "config", None) == dcfg:
            G.load_state_dict(init.state_dict())
        elif isinstance(init, MirrorDecoder) and G.grows_from(init):  # e.g. adding the stem skip
            G.adopt(init)
        else:
            raise ValueError(f"the decoder to fine-tune does not fit this classifier: {getattr(init, 'config', None)}"
                             f" vs {dcfg}")
    G = G.to(device).train()
    if cfg.disc not in DISCRIMINATORS:
        raise ValueError(f"unknown discriminator '{cfg.disc}'; available: {', '.join(DISCRIMINATORS)}")
    D = PatchDiscriminator(train.channels, train.resolution,
                           num_classes=clf.head.weight.shape[0] if cfg.disc == "class" else 0).to(device).train()
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr if cfg.lr_d is None else cfg.lr_d, betas=(0.5, 0.999))
    amp = torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16,
                         enabled=cfg.precision == "bf16")
    W, b = clf.head.weight, clf.head.bias
    K = W.shape[0]
    focus = pair_table(cfg.pairs, K)
    order, counts, offsets = _class_sampler(train.labels, K)
    n = len(train)
    pool = torch.zeros(0, dtype=torch.long)
    if cfg.hard_share > 0:
        pool = hard_pool(clf, train.images, cfg.hard_below, device)
        if not len(pool):
            raise InputError(f"no training image has a top class probability below {cfg.hard_below} "
                             "(raise --hard-below or drop --hard-share)")
    table = None
    if cfg.lambda_match:  # the class table of real training images' stage statistics (cfe_cli/realism.py)
        from cfe_cli.realism import class_statistics

        table = class_statistics(_all_stages(clf), train.images, train.labels, K, device=device)
    steps_per_epoch = n // cfg.batch_size
    total = steps_per_epoch * cfg.epochs if max_steps is None else min(max_steps, steps_per_epoch * cfg.epochs)
    base_lr = [(g, g["lr"]) for o in (opt_g, opt_d) for g in o.param_groups]
    t_start = time.perf_counter()

    def set_lr(i: int) -> None:  # cosine: over steps, or over the time limit if that is further along
        done = min(i, total) / max(total, 1)
        if time_limit:
            done = max(done, min((time.perf_counter() - t_start) / time_limit, 1.0))
        for g, lr0 in base_lr:
            g["lr"] = lr0 * 0.5 * (1 + math.cos(math.pi * done))

    history: list[dict[str, float]] = []
    step = 0
    timed_out = False
    keys = (("cls", "adv", "rec", "fea", "tri", "d") + (("perc",) if cfg.lambda_perc else ())
            + (("match",) if cfg.lambda_match else ()))
    for epoch in range(cfg.epochs):
        perm = torch.randperm(n, generator=gen)
        sums = dict.fromkeys(keys, 0.0)
        seen = 0
        for i in range(0, steps_per_epoch * cfg.batch_size, cfg.batch_size):
            if step >= total or timed_out:
                break
            if cfg.schedule == "cosine":
                set_lr(step)
            bi = mix_hard(perm[i:i + cfg.batch_size], pool, cfg.hard_share, gen)
            x = train.images[bi].to(device)
            y = train.labels[bi].to(device)
            B = x.shape[0]
            with torch.no_grad():
                x = augment_batch(x, cfg.augment, gen)
                st = clf.stages(x, stem=stem) if skips else [clf.features(x)]
                f_s = st[-1]
                z_s = f_s.mean(dim=(2, 3))
                logits = z_s @ W.T + b
                source = logits.argmax(1)
                target = draw_targets(logits, gen, cfg.runner_up_share, focus if cfg.pairs else None, cfg.pair_share)
                f_r = mirror.mirror_features(f_s, W, b, source, target, refine=cfg.refine)
                k = torch.rand(B, generator=gen)
                k = torch.where(torch.rand(B, generator=gen) < cfg.k_cfe_share, 0.5 + 0.5 * k, k).to(device)
                f_k = mirror.interpolate(f_s, f_r, k)
                z_k = f_k.mean(dim=(2, 3))
                if skips:  # the source's skips for both passes, gated by the CSP mask of f_k (x̂: k = 0)
                    sk = [torch.cat([s, s]) for s in st[:-1]]
                    mask = mirror.spatial_prior_mask(torch.cat([f_k, f_s]), W, source.repeat(2), target.repeat(2),
                                                     torch.cat([k, torch.zeros_like(k)]),
                                                     rho_low=dcfg.rho_low, rho_high=dcfg.rho_high)
                q_k = (z_k @ W.T + b).softmax(1)
                # the class each decoded image should show (conditional D): the head's at z_k, s for x̂
                y_gen = None  # (with disc_rec the reconstructions are fakes too, labelled s)
                if cfg.disc == "class":
                    y_gen = torch.cat([q_k.argmax(1), source]) if cfg.disc_rec else q_k.argmax(1)
                y_real = y if cfg.disc == "class" else None
                # reference images: class t for the CFE branch (k ≥ 0.5), class s otherwise
                ref_cls = torch.where(k >= 0.5, target, source).cpu()
                pick = offsets[ref_cls] + (torch.rand(B, generator=gen) * counts[ref_cls]).long()
                x_ref = train.images[order[pick]].to(device)
                z_ref = clf.features(x_ref).mean(dim=(2, 3))
            with amp:
                out = (G(torch.cat([f_k, f_s]), sk, mask) if skips else G(torch.cat([f_k, f_s]))).float()
                x_k, x_rec = out[:B], out[B:]
                st_k = _all_stages(clf)(x_k) if table is not None else [clf.features(x_k)]
                f_hat = st_k[-1].float()
                fakes = out if cfg.disc_rec else x_k
                d_fake = D(fakes, y_gen).float()
            # "edit": only the patches the CSP mask edits are fakes; elsewhere x_k is the source's own
            w_fake = None
            if cfg.adv_focus == "edit":
                w_fake = edit_weights(mask if cfg.disc_rec else mask[:B], tuple(d_fake.shape[-2:]))
            z_hat = f_hat.mean(dim=(2, 3))
            log_p = F.log_softmax(z_hat @ W.T + b, dim=1)
            l_cls = F.kl_div(log_p, q_k, reduction="batchmean")
            l_fea = (z_k - z_hat).norm(dim=1).mean()
            l_rec = rec_loss(x, x_rec, mask[B:] if skips else None, cfg.rec_mask_weight)
            l_perc = x.new_zeros(())
            if cfg.lambda_perc:  # the reconstruction against the source in every stage of the classifier
                with amp:
                    st_rec = clf.stages(x_rec, stem=True) if hasattr(clf, "stages") else [clf.features(x_rec)]
                if skips and stem:  # the source's stages were computed above for the skips
                    st_src = st
                else:
                    with torch.no_grad():
                        st_src = clf.stages(x, stem=True) if hasattr(clf, "stages") else [clf.features(x)]
                l_perc = stage_distance(st_rec, st_src)
            l_tri = triangulation_loss(x, x_k, x_ref, z_s, z_k, z_ref, cfg.alpha).mean()
            l_match = x.new_zeros(())
            if table is not None:  # x_k's texture statistics vs real images of the class it should show
                from cfe_cli.realism import match_loss

                l_match = match_loss(st_k, q_k.argmax(1), k, *table, margin=cfg.match_margin)
            l_adv = focused_mean(F.softplus(-d_fake), w_fake)
            loss = (cfg.lambda_cls * l_cls + cfg.lambda_adv * l_adv + cfg.lambda_rec * l_rec
                    + cfg.lambda_fea * l_fea + cfg.lambda_tri * l_tri + cfg.lambda_perc * l_perc
                    + cfg.lambda_match * l_match)
            opt_g.zero_grad(set_to_none=True)
            loss.backward()
            opt_g.step()
            # discriminator: real x vs decoded x_k (and the reconstructions unless disc_rec is off)
            with amp:
                d_real, d_gen = D(x, y_real).float(), D(fakes.detach(), y_gen).float()
            d_loss = F.softplus(-d_real).mean() + focused_mean(F.softplus(d_gen), w_fake)
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            step += 1
            timed_out = time_limit is not None and time.perf_counter() - t_start >= time_limit
            vals = {name: float(v.detach()) for name, v in
                    (("cls", l_cls), ("adv", l_adv), ("rec", l_rec), ("fea", l_fea), ("tri", l_tri), ("d", d_loss),
                     ("perc", l_perc), ("match", l_match))}
            for key in keys:
                sums[key] += vals[key] * B
            seen += B
            if progress is not None:
                progress({"completed": step, "total": total, "epoch": epoch + 1, **vals})
        if seen:
            history.append({"epoch": epoch + 1, **{key: sums[key] / seen for key in keys},
                            **({"hard_pool": len(pool)} if cfg.hard_share > 0 else {}),
                            **({"stopped_at_step": step, "of_steps": total, "time_limit": time_limit}
                               if timed_out and step < total else {})})
        if step >= total or timed_out:
            break
    G.eval().cpu()
    return G, history


# ----------------------------------------------------------------------------- VAE


@dataclass(frozen=True)
class VAETrainConfig:
    """Hyper-parameters of the conv VAE (BCE + β·KL, Adam)."""

    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    beta: float = 1.0
    seed: int = 0


def elbo_terms(vae: torch.nn.Module, x: torch.Tensor,
               a: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One reparameterised sample: ``z (B, D)``, the summed pixel BCE ``(B,)`` and the KL ``(B,)``.
    ``a``: the attribute vector of a conditional VAE."""
    mu, logvar = vae.encode(x)
    z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
    logits = vae.decode_logits(z) if a is None else vae.decode_logits(z, a)
    rec = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(dim=(1, 2, 3))
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
    return z, rec, kl


def train_vae(vae: torch.nn.Module, train: Dataset, cfg: VAETrainConfig, *, device: torch.device | str = "cpu",
              progress: Progress | None = None, max_steps: int | None = None) -> list[dict[str, float]]:
    """Train a :class:`~cfe_cli.models.generators.ConvVAE` with BCE (summed over pixels) + β·KL."""
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    vae.to(device).train()
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
            x = train.images[perm[i:i + cfg.batch_size]].to(device)
            z, rec, kl = elbo_terms(vae, x)
            loss = (rec + cfg.beta * kl).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            s_rec += float(rec.detach().sum())
            s_kl += float(kl.detach().sum())
            seen += x.shape[0]
            if progress is not None:
                progress({"completed": step, "total": total, "epoch": epoch + 1, "rec": float(rec.detach().mean()),
                          "kl": float(kl.detach().mean())})
        if seen:
            history.append({"epoch": epoch + 1, "rec": s_rec / seen, "kl": s_kl / seen})
        if step >= total:
            break
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
