"""Training the Mirror-CFE decoder G (and its PatchGAN discriminator D) against a frozen classifier.

:func:`train_mirror` is the loop; :func:`build_run` sets up the networks and optimisers,
:func:`sample_batch` draws one batch's targets, k and reference images (no gradients), and
:func:`decoder_losses` / :func:`discriminator_loss` compute the loss terms
(:mod:`cfe_cli.training.losses`). Choices are documented in docs/methods/mirror.md.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F

from cfe_cli import geometry as mirror
from cfe_cli.data import Dataset
from cfe_cli.distributed import Dist
from cfe_cli.errors import InputError
from cfe_cli.training import ddp
from cfe_cli.training.loops import Progress, augment_batch
from cfe_cli.training.losses import edit_weights, focused_mean, rec_loss, stage_distance, triangulation_loss


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
    match_classes: tuple[int, ...] = ()  # L_match only for decoded images meant to show one of these (): all
    critic: str | None = None  # a robust classifier.safetensors (train-clf --adv-eps) for L_critic (realism.py)
    lambda_critic: float = 0.0  # weight of L_critic: the critic's cross-entropy on x_k against its class


DISCRIMINATOR_FOCUS = ("image", "edit")


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


@dataclass
class MirrorRun:
    """One training run's frozen classifier, networks, optimisers and samplers."""

    clf: torch.nn.Module
    G: torch.nn.Module
    D: torch.nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    amp: Any  # the autocast context of the forward passes
    skips: bool
    stem: bool
    dcfg: Any  # the decoder's DecoderConfig
    focus: torch.Tensor  # (K, K) pair table
    order: torch.Tensor  # class sampler of the reference images
    counts: torch.Tensor
    offsets: torch.Tensor
    pool: torch.Tensor  # indices of the ambiguous training images (hard_share)
    table: Any = None  # L_match's class table of real training images' stage statistics (cfe_cli/realism.py)
    match_keep: Any = None  # (K,) bool: the classes L_match counts (--match-classes); None: all
    critic: Any = None  # the frozen robust classifier of L_critic (--critic); None: off

    @property
    def W(self) -> torch.Tensor:
        return self.clf.head.weight

    @property
    def b(self) -> torch.Tensor:
        return self.clf.head.bias


def _all_stages(clf: torch.nn.Module) -> Callable[[torch.Tensor], list[torch.Tensor]]:
    """``x -> [stem, stage_1, …, last]`` for cfe's own classifiers, ``[features]`` otherwise."""
    if hasattr(clf, "stages"):
        return lambda x: clf.stages(x, stem=True)
    return lambda x: [clf.features(x)]


def _check(cfg: MirrorTrainConfig, clf: torch.nn.Module, skips: bool) -> None:
    """The config's skip-decoder options need a skip decoder (and a classifier with stages)."""
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


def _decoder(clf: torch.nn.Module, train: Dataset, cfg: MirrorTrainConfig, device: torch.device | str,
             init: torch.nn.Module | None, skips: bool, stem: bool) -> torch.nn.Module:
    """The decoder G: its config from the classifier's stage shapes, the options and ``init``'s."""
    from cfe_cli.models.generators import DecoderConfig, MirrorDecoder

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
    return G


def build_run(classifier: torch.nn.Module, train: Dataset, cfg: MirrorTrainConfig, device: torch.device | str,
              init: torch.nn.Module | None) -> MirrorRun:
    """Check the config and set up the networks, optimisers and samplers of a run."""
    from cfe_cli.models.generators import PatchDiscriminator

    clf = classifier.to(device).eval().requires_grad_(False)
    skips = cfg.skips or cfg.skip_stem or bool(getattr(init, "uses_skips", False))
    stem = skips and (cfg.skip_stem or bool(getattr(getattr(init, "config", None), "skip_stem", False)))
    _check(cfg, clf, skips)
    G = _decoder(clf, train, cfg, device, init, skips, stem).to(device).train()
    if cfg.disc not in DISCRIMINATORS:
        raise ValueError(f"unknown discriminator '{cfg.disc}'; available: {', '.join(DISCRIMINATORS)}")
    K = clf.head.weight.shape[0]
    D = PatchDiscriminator(train.channels, train.resolution,
                           num_classes=K if cfg.disc == "class" else 0).to(device).train()
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr if cfg.lr_d is None else cfg.lr_d, betas=(0.5, 0.999))
    amp = torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
    focus = pair_table(cfg.pairs, K)
    order, counts, offsets = _class_sampler(train.labels, K)
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
    keep = None
    if cfg.match_classes:  # L_match only where x_k should show one of these classes
        keep = torch.zeros(K, dtype=torch.bool)
        keep[list(cfg.match_classes)] = True
        keep = keep.to(device)
    critic = None
    if cfg.lambda_critic:
        critic = _critic(cfg.critic, train, K, device)
    return MirrorRun(clf, G, D, opt_g, opt_d, amp, skips, stem, G.config, focus, order, counts, offsets, pool, table,
                     keep, critic)


def _critic(path: str | None, train: Dataset, num_classes: int, device: torch.device | str) -> torch.nn.Module:
    """L_critic's frozen classifier from ``path``; it must read this dataset's images and classes."""
    from cfe_cli.models.weights import load_classifier

    if not path:
        raise InputError("--lambda-critic needs --critic FILE (a classifier.safetensors, e.g. train-clf --adv-eps)")
    c = load_classifier(path)
    cfg = c.config
    shape = (getattr(cfg, "in_channels", None), getattr(cfg, "resolution", None), getattr(cfg, "num_classes", None))
    if shape != (train.channels, train.resolution, num_classes):
        raise InputError(f"the critic {path} reads {shape[0]}-channel {shape[1]}² images into {shape[2]} classes; "
                         f"this model: {train.channels}-channel {train.resolution}² into {num_classes}")
    if c.info.get("classes") not in (None, list(train.classes)):
        raise InputError(f"the critic {path} has other classes ({', '.join(map(str, c.info['classes']))})")
    return c.model.to(device).eval().requires_grad_(False)


@torch.no_grad()
def sample_batch(run: MirrorRun, cfg: MirrorTrainConfig, train: Dataset, x: torch.Tensor, y: torch.Tensor,
                 gen: torch.Generator, device: torch.device | str) -> dict[str, Any]:
    """One batch's fixed inputs: augmented x, source features, targets, k, f_k, CSP masks, references.

    Shape: ``x (B, C, H, W)``, ``y (B,)``; every tensor returned is batch-first.
    """
    clf, W, b, B = run.clf, run.W, run.b, x.shape[0]
    x = augment_batch(x, cfg.augment, gen)
    st = clf.stages(x, stem=run.stem) if run.skips else [clf.features(x)]
    f_s = st[-1]
    z_s = f_s.mean(dim=(2, 3))
    logits = z_s @ W.T + b
    source = logits.argmax(1)
    target = draw_targets(logits, gen, cfg.runner_up_share, run.focus if cfg.pairs else None, cfg.pair_share)
    f_r = mirror.mirror_features(f_s, W, b, source, target, refine=cfg.refine)
    k = torch.rand(B, generator=gen)
    k = torch.where(torch.rand(B, generator=gen) < cfg.k_cfe_share, 0.5 + 0.5 * k, k).to(device)
    f_k = mirror.interpolate(f_s, f_r, k)
    z_k = f_k.mean(dim=(2, 3))
    sk = mask = None
    if run.skips:  # the source's skips for both passes, gated by the CSP mask of f_k (x̂: k = 0)
        sk = [torch.cat([s, s]) for s in st[:-1]]
        mask = mirror.spatial_prior_mask(torch.cat([f_k, f_s]), W, source.repeat(2), target.repeat(2),
                                         torch.cat([k, torch.zeros_like(k)]),
                                         rho_low=run.dcfg.rho_low, rho_high=run.dcfg.rho_high)
    q_k = (z_k @ W.T + b).softmax(1)
    # the class each decoded image should show (conditional D): the head's at z_k, s for x̂
    y_gen = None  # (with disc_rec the reconstructions are fakes too, labelled s)
    if cfg.disc == "class":
        y_gen = torch.cat([q_k.argmax(1), source]) if cfg.disc_rec else q_k.argmax(1)
    # reference images: class t for the CFE branch (k ≥ 0.5), class s otherwise
    ref_cls = torch.where(k >= 0.5, target, source).cpu()
    pick = run.offsets[ref_cls] + (torch.rand(B, generator=gen) * run.counts[ref_cls]).long()
    x_ref = train.images[run.order[pick]].to(device)
    z_ref = clf.features(x_ref).mean(dim=(2, 3))
    return {"x": x, "y_real": y if cfg.disc == "class" else None, "st": st, "f_s": f_s, "z_s": z_s, "f_k": f_k,
            "k": k, "z_k": z_k, "q_k": q_k, "sk": sk, "mask": mask, "y_gen": y_gen, "x_ref": x_ref, "z_ref": z_ref}


def decoder_losses(run: MirrorRun, cfg: MirrorTrainConfig, s: dict[str, Any]) -> dict[str, Any]:
    """The decoder's loss terms (spec §6) on one sampled batch, their weighted sum ``loss``, and the
    fakes (with their labels and patch weights) the discriminator then scores."""
    clf, W, b, x = run.clf, run.W, run.b, s["x"]
    B = x.shape[0]
    f_k, f_s, mask = s["f_k"], s["f_s"], s["mask"]
    with run.amp:
        out = (run.G(torch.cat([f_k, f_s]), s["sk"], mask) if run.skips else run.G(torch.cat([f_k, f_s]))).float()
        x_k, x_rec = out[:B], out[B:]
        st_k = _all_stages(clf)(x_k) if run.table is not None else [clf.features(x_k)]
        f_hat = st_k[-1].float()
        fakes = out if cfg.disc_rec else x_k
        d_fake = run.D(fakes, s["y_gen"]).float()
    # "edit": only the patches the CSP mask edits are fakes; elsewhere x_k is the source's own
    w_fake = None
    if cfg.adv_focus == "edit":
        w_fake = edit_weights(mask if cfg.disc_rec else mask[:B], tuple(d_fake.shape[-2:]))
    z_hat = f_hat.mean(dim=(2, 3))
    log_p = F.log_softmax(z_hat @ W.T + b, dim=1)
    t = {"cls": F.kl_div(log_p, s["q_k"], reduction="batchmean"), "fea": (s["z_k"] - z_hat).norm(dim=1).mean(),
         "rec": rec_loss(x, x_rec, mask[B:] if run.skips else None, cfg.rec_mask_weight),
         "perc": x.new_zeros(())}
    if cfg.lambda_perc:  # the reconstruction against the source in every stage of the classifier
        with run.amp:
            st_rec = clf.stages(x_rec, stem=True) if hasattr(clf, "stages") else [clf.features(x_rec)]
        if run.skips and run.stem:  # the source's stages were computed above for the skips
            st_src = s["st"]
        else:
            with torch.no_grad():
                st_src = clf.stages(x, stem=True) if hasattr(clf, "stages") else [clf.features(x)]
        t["perc"] = stage_distance(st_rec, st_src)
    t["tri"] = triangulation_loss(x, x_k, s["x_ref"], s["z_s"], s["z_k"], s["z_ref"], cfg.alpha).mean()
    t["match"] = x.new_zeros(())
    if run.table is not None:  # x_k's texture statistics vs real images of the class it should show
        from cfe_cli.realism import match_loss

        t["match"] = match_loss(st_k, s["q_k"].argmax(1), s["k"], *run.table, margin=cfg.match_margin,
                                classes=run.match_keep)
    t["critic"] = x.new_zeros(())
    if run.critic is not None:  # a robust classifier must also see x_k as the class it should show
        from cfe_cli.realism import critic_loss

        with run.amp:
            c_logits = run.critic(x_k)
        t["critic"] = critic_loss(c_logits, s["q_k"].argmax(1), s["k"])
    t["adv"] = focused_mean(F.softplus(-d_fake), w_fake)
    loss = (cfg.lambda_cls * t["cls"] + cfg.lambda_adv * t["adv"] + cfg.lambda_rec * t["rec"]
            + cfg.lambda_fea * t["fea"] + cfg.lambda_tri * t["tri"] + cfg.lambda_perc * t["perc"]
            + cfg.lambda_match * t["match"] + cfg.lambda_critic * t["critic"])
    return {"loss": loss, "terms": t, "fakes": fakes, "w_fake": w_fake}


def discriminator_loss(run: MirrorRun, s: dict[str, Any], fakes: torch.Tensor,
                       w_fake: torch.Tensor | None) -> torch.Tensor:
    """Non-saturating GAN loss of D: real x vs the decoded fakes (detached)."""
    with run.amp:
        d_real, d_gen = run.D(s["x"], s["y_real"]).float(), run.D(fakes.detach(), s["y_gen"]).float()
    return F.softplus(-d_real).mean() + focused_mean(F.softplus(d_gen), w_fake)


class _DiscriminatorLoss(torch.nn.Module):
    """:func:`discriminator_loss` as one forward pass of a module holding D (what DDP wraps)."""

    def __init__(self, D: torch.nn.Module, amp: Any) -> None:
        super().__init__()
        self.D, self.amp = D, amp

    def forward(self, s: dict[str, Any], fakes: torch.Tensor, w_fake: torch.Tensor | None) -> torch.Tensor:
        return discriminator_loss(self, s, fakes, w_fake)  # type: ignore[arg-type]


def _step(run: MirrorRun, run_g: MirrorRun, d_step: torch.nn.Module, cfg: MirrorTrainConfig, s: dict[str, Any],
          B: int, d: Dist) -> dict[str, float]:
    """One G step and one D step on this rank's slice ``s`` of a global batch of ``B``; the terms'
    global-batch means."""
    scale = ddp.scale(s["x"].shape[0], B, d)
    g = decoder_losses(run_g, cfg, s)
    run.opt_g.zero_grad(set_to_none=True)
    (g["loss"] * scale).backward()
    run.opt_g.step()
    d_loss = d_step(s, g["fakes"], g["w_fake"])
    run.opt_d.zero_grad(set_to_none=True)
    (d_loss * scale).backward()
    run.opt_d.step()
    vals = {name: float(v.detach()) for name, v in (*g["terms"].items(), ("d", d_loss))}
    if d.comm:
        vals = dict(zip(vals, [v / B for v in d.sums([v * s["x"].shape[0] for v in vals.values()])], strict=True))
    return vals


def run_state(run: MirrorRun) -> dict[str, torch.Tensor]:
    """What a decoder file does not hold but a continued run needs: D's weights and both Adam states,
    as flat tensors (``D.<key>``, ``opt_g.<param index>.<key>``, ``opt_d.…``) for a safetensors file."""
    out = {f"D.{k}": v for k, v in run.D.state_dict().items()}
    for name, opt in (("opt_g", run.opt_g), ("opt_d", run.opt_d)):
        for pid, st in opt.state_dict()["state"].items():
            out.update({f"{name}.{pid}.{key}": torch.as_tensor(val) for key, val in st.items()})
    return out


def load_run_state(run: MirrorRun, tensors: dict[str, torch.Tensor]) -> list[str]:
    """Load what fits of :func:`run_state`'s tensors into ``run``; returns the parts continued ("D", "opt_d",
    "opt_g"). A part whose shapes do not fit (another discriminator, a decoder grown by ``--skip-stem``)
    starts afresh."""
    done = []
    d_state = {k[2:]: v for k, v in tensors.items() if k.startswith("D.")}
    own = run.D.state_dict()
    if d_state.keys() == own.keys() and all(d_state[k].shape == own[k].shape for k in own):
        run.D.load_state_dict(d_state)
        done.append("D")
    for name, opt, params in (("opt_d", run.opt_d, list(run.D.parameters())),
                              ("opt_g", run.opt_g, list(run.G.parameters()))):
        if name == "opt_d" and "D" not in done:
            continue
        state: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in tensors.items():
            if k.startswith(name + "."):
                _, pid, key = k.split(".", 2)
                state.setdefault(int(pid), {})[key] = v
        fits = len(state) == len(params) and all(
            st.get("exp_avg", torch.empty(0)).shape == params[i].shape for i, st in state.items() if i < len(params))
        if fits:
            opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})
            done.append(name)
    return done


def train_mirror(classifier: torch.nn.Module, train: Dataset, cfg: MirrorTrainConfig, *,
                 device: torch.device | str = "cpu", progress: Progress | None = None,
                 max_steps: int | None = None, time_limit: float | None = None,
                 init: torch.nn.Module | None = None, dist: Dist | None = None,
                 state: dict[str, Any] | None = None) -> tuple[torch.nn.Module, list[dict[str, float]]]:
    """Train the Mirror-CFE decoder G (and a PatchGAN discriminator) against a frozen classifier.

    Per batch: source s = the classifier's prediction; target t = the runner-up (with
    probability ``runner_up_share``) or a uniform other class; with ``pairs``, a sample whose s
    is the source of a listed pair takes that pair's target instead (one of them, uniformly, if
    several) with probability ``pair_share``; k ~ U[0, 1] per sample;
    f_k on the refined reflection path; x_k = G(f_k), x̂ = G(f_s). Losses (spec §6):
    L_cls = KL(q(z_k) ‖ q(F(x_k))), L_adv (non-saturating GAN on x_k and x̂),
    L_rec = |x − x̂|₁, L_fea = ‖z_k − GAP(F(x_k))‖₂, L_tri (CFE branch: a real image of
    class t; SFE branch: another image of class s).

    ``disc="class"``: the discriminator is class-conditional (projection): real images are scored
    with their label, x_k with the head's class at z_k and x̂ with s (a real image *of class t*).

    ``adv_focus="edit"`` (skip decoders): the fake terms of both GAN losses average only over
    the discriminator patches inside the CSP mask (dilated by a patch, :func:`edit_weights`).

    ``init``: a trained decoder to fine-tune (same config). ``state``: a dict; ``state["tensors"]``, if
    given, is the :func:`run_state` (D, Adam states) of the run that wrote ``init``, continued where it
    fits (``state["continued"]``); on return it holds this run's. Otherwise D starts afresh.

    ``time_limit`` (seconds): stop after the step that passes it; with the cosine schedule the rate
    follows whichever of steps and time is further along, so it still ends decayed. The last
    history entry then has ``stopped_at_step`` and ``time_limit``.

    ``hard_share``: each batch entry is, with this probability, an image the classifier is unsure of
    (top probability below ``hard_below``, :func:`hard_pool`) instead of a uniform one.
    ``dist`` (torchrun): every rank samples the whole global batch (augmentation, targets, k,
    references and the frozen classifier's features: the 1-process draws) and trains G and D on its
    slice (DDP, losses scaled to the global mean; G and D have no batch statistics). ``time_limit``
    is then judged on the slowest rank's clock, so every rank stops after the same step. The terms
    averaged with weights (``adv_focus="edit"``, ``rec_mask_weight``) are averaged per slice, so
    those runs match one process only approximately.

    Returns:
        the decoder (eval mode, on CPU) and the per-epoch mean of every loss term.
    """
    d = dist or Dist()
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    run = build_run(classifier, train, cfg, device, init)
    if state is not None and "tensors" in state:  # the D and Adam moments of the run that wrote init
        state["continued"] = load_run_state(run, {k: v.to(device) for k, v in state.pop("tensors").items()})
    run_g = replace(run, G=ddp.wrap(run.G, d, torch.device(device)))  # the DDP decoder for the G step
    d_step = ddp.wrap(_DiscriminatorLoss(run.D, run.amp), d, torch.device(device))
    n = len(train)
    steps_per_epoch = n // cfg.batch_size
    total = steps_per_epoch * cfg.epochs if max_steps is None else min(max_steps, steps_per_epoch * cfg.epochs)
    base_lr = [(g, g["lr"]) for o in (run.opt_g, run.opt_d) for g in o.param_groups]
    t_start = time.perf_counter()

    def elapsed() -> float:  # the slowest rank's: every rank takes the same rate and stops at the same step
        return d.max(time.perf_counter() - t_start)

    def set_lr(i: int) -> None:  # cosine: over steps, or over the time limit if that is further along
        done = min(i, total) / max(total, 1)
        if time_limit:
            done = max(done, min(elapsed() / time_limit, 1.0))
        for g, lr0 in base_lr:
            g["lr"] = lr0 * 0.5 * (1 + math.cos(math.pi * done))

    history: list[dict[str, float]] = []
    step, timed_out = 0, False
    keys = (("cls", "adv", "rec", "fea", "tri", "d") + (("perc",) if cfg.lambda_perc else ())
            + (("match",) if cfg.lambda_match else ()) + (("critic",) if cfg.lambda_critic else ()))
    for epoch in range(cfg.epochs):
        perm = torch.randperm(n, generator=gen)
        sums, seen = dict.fromkeys(keys, 0.0), 0
        for i in range(0, steps_per_epoch * cfg.batch_size, cfg.batch_size):
            if step >= total or timed_out:
                break
            if cfg.schedule == "cosine":
                set_lr(step)
            bi = mix_hard(perm[i:i + cfg.batch_size], run.pool, cfg.hard_share, gen)
            s = sample_batch(run, cfg, train, train.images[bi].to(device), train.labels[bi].to(device), gen, device)
            B = len(bi)
            vals = _step(run, run_g, d_step, cfg, ddp.slice_batch(s, ddp.my_slice(B, d), B) if d.comm else s, B, d)
            step += 1
            timed_out = time_limit is not None and elapsed() >= time_limit
            for key in keys:
                sums[key] += vals[key] * B
            seen += B
            if progress is not None:
                progress({"completed": step, "total": total, "epoch": epoch + 1, **vals})
        if seen:
            history.append({"epoch": epoch + 1, **{key: sums[key] / seen for key in keys},
                            **({"hard_pool": len(run.pool)} if cfg.hard_share > 0 else {}),
                            **({"stopped_at_step": step, "of_steps": total, "time_limit": time_limit}
                               if timed_out and step < total else {})})
        if step >= total or timed_out:
            break
    if state is not None:  # for the next continuation
        state["tensors"] = {k: v.detach().cpu() for k, v in run_state(run).items()}
    run.G.eval().cpu()
    return run.G, history
