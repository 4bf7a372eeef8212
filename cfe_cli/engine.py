"""One batched optimisation engine for every optimisation-based counterfactual method.

The engine owns the loop: the optimiser, the per-sample ``done`` mask, the best-so-far
counterfactual, the step budget, early stopping and trajectory recording. A method is a
small :class:`Objective` (see ``cfe_cli/methods/``): it says how to initialise the
variable, decode it to an image, score it, step it and project it.

Each step, for the whole batch:
    1. ``x = decode(v)``; ``p = softmax(f(x))``.
    2. ``newly = ~done & (p_t ≥ τ) & (argmax = t)``; keep ``best[newly] = x``; ``done |= newly``.
    3. ``loss = objective.loss(...)`` ``(B,)``, masked by ``~done``; backward.
    4. optimiser step, then frozen rows are restored (Adam's momentum would move them).
    5. ``objective.project(v)``.
Stops when every sample is done or after ``max_steps``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

Tensor = torch.Tensor


@dataclass
class Context:
    """What an objective may read: the source batch and the classifier.

    Attributes:
        x: source images ``(B, C, H, W)``; source, target: ``(B,)``;
        v0: the initial variable; extra: method-specific tensors (e.g. spurious-factor codes).
    """

    classifier: torch.nn.Module
    x: Tensor
    source: Tensor
    target: Tensor
    v0: Tensor | None = None
    extra: dict[str, Tensor] = field(default_factory=dict)


class Objective:
    """A method plugged into the engine. Subclasses override the hooks they need."""

    name = "base"
    optimizer = "adam"  # "adam" or "custom" (the objective's own ``step``)
    lr = 0.1

    def init(self, ctx: Context) -> Tensor:
        """The initial variable ``v0`` (latent ``(B, D)`` or pixels ``(B, C, H, W)``)."""
        raise NotImplementedError

    def decode(self, v: Tensor, ctx: Context) -> Tensor:
        """Variable -> image ``(B, C, H, W)`` in [0, 1]."""
        raise NotImplementedError

    def loss(self, v: Tensor, x: Tensor, logits: Tensor, ctx: Context) -> Tensor:
        """Per-sample loss ``(B,)``."""
        raise NotImplementedError

    def step(self, v: Tensor, grad: Tensor, ctx: Context) -> Tensor:
        """A custom update (used when ``optimizer == "custom"``)."""
        raise NotImplementedError

    def project(self, v: Tensor, ctx: Context) -> Tensor:
        """Keep the variable feasible (ε-ball, generator range); identity by default."""
        return v

    def finalize(self, x_cf: Tensor, ctx: Context) -> Tensor:
        """Post-process the counterfactual images (e.g. CECAS's keep mask)."""
        return x_cf


@dataclass(frozen=True)
class EngineConfig:
    """Loop settings shared by every method."""

    max_steps: int = 500
    threshold: float = 0.75
    record_every: int = 0  # keep a frame every n steps (0: none)
    amp: bool = False  # bfloat16 autocast on CUDA for the forward passes


@dataclass
class EngineResult:
    """What the engine returns.

    Attributes:
        x_cf: ``(B, C, H, W)`` the counterfactual at the step it passed the threshold
            (the last iterate where it never did), after ``finalize``.
        v_cf: the variable at that point; success: ``(B,)`` bool; steps: ``(B,)`` long
            (steps taken until success, ``max_steps`` otherwise); p_target: ``(B,)``
            the target probability of ``x_cf``; logits: ``(B, K)`` on ``x_cf``;
            frames: ``(T, B, C, H, W)`` trajectory or None; frame_steps: ``(T,)``.
    """

    x_cf: Tensor
    v_cf: Tensor
    success: Tensor
    steps: Tensor
    p_target: Tensor
    logits: Tensor
    frames: Tensor | None = None
    frame_steps: Tensor | None = None


def _rows(mask: Tensor, like: Tensor) -> Tensor:
    return mask.view(-1, *[1] * (like.dim() - 1))


def run(objective: Objective, ctx: Context, cfg: EngineConfig) -> EngineResult:
    """Optimise a batch until each sample passes the threshold or the budget runs out.

    Shape: ``ctx.x (B, C, H, W)``, ``ctx.target (B,)``.
    """
    clf = ctx.classifier
    B = ctx.x.shape[0]
    dev = ctx.x.device
    rows = torch.arange(B, device=dev)
    with torch.no_grad():
        v = objective.init(ctx).detach().clone()
    ctx.v0 = v.detach().clone()
    v.requires_grad_(True)
    opt = torch.optim.Adam([v], lr=objective.lr) if objective.optimizer == "adam" else None
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    steps = torch.full((B,), cfg.max_steps, dtype=torch.long, device=dev)
    best_x: Tensor | None = None
    best_v = v.detach().clone()
    frames: list[Tensor] = []
    frame_steps: list[int] = []
    use_amp = cfg.amp and dev.type == "cuda"
    for step in range(cfg.max_steps + 1):
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=use_amp):
            x = objective.decode(v, ctx).clamp(0, 1)
            logits = clf(x).float()
        p = logits.softmax(1)
        p_t = p[rows, ctx.target]
        passed = (p_t >= cfg.threshold) & (p.argmax(1) == ctx.target)
        newly = passed & ~done
        if cfg.record_every and step % cfg.record_every == 0:
            frames.append(x.detach())  # done rows are frozen, so they show their counterfactual
            frame_steps.append(step)
        # rows not done before this step track the latest iterate (the success point for
        # ``newly``; the last iterate for rows that never pass)
        best_x = x.detach().clone() if best_x is None else torch.where(_rows(~done, x), x.detach(), best_x)
        best_v = torch.where(_rows(~done, v), v.detach(), best_v)
        steps = torch.where(newly, torch.full_like(steps, step), steps)
        done = done | newly
        if bool(done.all()) or step == cfg.max_steps:
            break
        loss = objective.loss(v, x, logits, ctx)  # (B,)
        total = (loss * (~done).float()).sum()
        grad = torch.autograd.grad(total, v)[0]
        with torch.no_grad():
            v_prev = v.detach().clone()
            if opt is not None:
                v.grad = grad
                opt.step()
                opt.zero_grad(set_to_none=True)
                new_v = v.detach()
            else:
                new_v = objective.step(v.detach(), grad, ctx)
            new_v = objective.project(new_v, ctx)
            v.copy_(torch.where(_rows(done, v), v_prev, new_v))
    assert best_x is not None
    with torch.no_grad():
        x_cf = objective.finalize(best_x, ctx)
        logits = clf(x_cf).float()
        p_t = logits.softmax(1)[rows, ctx.target]
        success = done & (logits.argmax(1) == ctx.target)
    fr = torch.stack(frames) if frames else None
    fs = torch.tensor(frame_steps) if frame_steps else None
    return EngineResult(x_cf=x_cf, v_cf=best_v, success=success, steps=steps, p_target=p_t, logits=logits,
                        frames=fr, frame_steps=fs)
