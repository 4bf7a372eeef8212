"""One batched optimisation engine for every optimisation-based counterfactual method.

The engine owns the loop: the optimiser, the per-sample ``done`` mask, the best-so-far
counterfactual, the step budget, early stopping and trajectory recording. A method is a
small :class:`Objective` (see ``cfe_cli/methods/``): it says how to initialise the
variable, decode it to an image, score it, step it and project it.

Each step, for the rows still running (finished rows leave the batch and stay frozen):
    1. ``x = decode(v)``; ``p = softmax(f(x))``.
    2. ``passed = (p_t ≥ τ) & (argmax = t)``; ``best[rows] = x``; passed rows are done.
    3. ``loss = objective.loss(...)`` per row, masked by ``~passed``; backward.
    4. optimiser step (Adam with per-row state, or the objective's own step).
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
    amp: bool = False  # bfloat16 autocast of the forward passes (CUDA, or CPUs with bf16 units); verdicts in fp32


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


def _subset(ctx: Context, idx: Tensor) -> Context:
    """The context of the rows ``idx``: every batch-shaped tensor (leading dim B) is indexed."""
    B = ctx.x.shape[0]

    def pick(t: object) -> object:
        return t[idx] if isinstance(t, Tensor) and t.dim() > 0 and t.shape[0] == B else t

    return Context(ctx.classifier, ctx.x[idx], ctx.source[idx], ctx.target[idx],
                   pick(ctx.v0), {k: pick(v) for k, v in ctx.extra.items()})  # type: ignore[arg-type]


class _BatchAdam:
    """Adam with per-row state, so rows can leave the batch (``torch.optim.Adam``'s update, β = (0.9, 0.999), ε = 1e-8).

    Every row still in the batch has been in it since step 0, so one step count serves all.
    """

    def __init__(self, like: Tensor, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.m = torch.zeros_like(like)
        self.s = torch.zeros_like(like)
        self.lr, self.betas, self.eps, self.t = lr, betas, eps, 0

    def step(self, v: Tensor, grad: Tensor, rows: Tensor) -> Tensor:
        b1, b2 = self.betas
        self.t += 1
        m = self.m[rows].mul_(b1).add_(grad, alpha=1 - b1)
        s = self.s[rows].mul_(b2).addcmul_(grad, grad, value=1 - b2)
        self.m[rows], self.s[rows] = m, s
        denom = (s.sqrt() / (1 - b2 ** self.t) ** 0.5).add_(self.eps)
        return v - (self.lr / (1 - b1 ** self.t)) * m / denom


def run(objective: Objective, ctx: Context, cfg: EngineConfig) -> EngineResult:
    """Optimise a batch until each sample passes the threshold or the budget runs out.

    Only the rows still running are decoded, scored and stepped: a row that passes the
    threshold leaves the batch (its counterfactual is frozen), so a batch costs the sum of
    its rows' steps, not ``B × max(steps)``. Objectives see a :class:`Context` of the running
    rows only; keys an objective adds to ``ctx.extra`` at step 0 (all rows running) are kept.

    Shape: ``ctx.x (B, C, H, W)``, ``ctx.target (B,)``.
    """
    clf = ctx.classifier
    B = ctx.x.shape[0]
    dev = ctx.x.device
    with torch.no_grad():
        v_all = objective.init(ctx).detach().clone()
    ctx.v0 = v_all.clone()
    adam = _BatchAdam(v_all, objective.lr) if objective.optimizer == "adam" else None
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    steps = torch.full((B,), cfg.max_steps, dtype=torch.long, device=dev)
    best_x: Tensor | None = None
    best_v = v_all.clone()
    frames: list[Tensor] = []
    frame_steps: list[int] = []
    use_amp = cfg.amp and dev.type in ("cuda", "cpu")
    act = torch.arange(B, device=dev)  # rows still running
    sub = ctx
    for step in range(cfg.max_steps + 1):
        v = v_all[act].requires_grad_(True)
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=use_amp):
            x = objective.decode(v, sub).clamp(0, 1)
            logits = clf(x).float()
        p = logits.softmax(1)
        p_t = p.gather(1, sub.target[:, None]).squeeze(1)
        passed = (p_t >= cfg.threshold) & (p.argmax(1) == sub.target)
        # running rows track the latest iterate (the success point for rows passing now;
        # the last iterate for rows that never pass)
        if best_x is None:  # float32 under bf16 autocast too: the final verdict runs without autocast
            best_x = x.detach().float().clone()
        else:
            best_x[act] = x.detach().to(best_x.dtype)
        best_v[act] = v.detach()
        if cfg.record_every and step % cfg.record_every == 0:
            frames.append(best_x.clone())  # finished rows show their counterfactual
            frame_steps.append(step)
        steps[act[passed]] = step
        done[act[passed]] = True
        keep = ~passed
        if not bool(keep.any()) or step == cfg.max_steps:
            break
        loss = objective.loss(v, x, logits, sub)  # (A,)
        total = (loss * keep.float()).sum()
        grad = torch.autograd.grad(total, v)[0]
        with torch.no_grad():
            new_v = adam.step(v.detach(), grad, act) if adam is not None else objective.step(v.detach(), grad, sub)
            new_v = objective.project(new_v, sub)
            v_all[act[keep]] = new_v[keep].to(v_all.dtype)
        if bool(passed.any()):
            act = act[keep]
            sub = _subset(ctx, act)
    assert best_x is not None
    with torch.no_grad():
        x_cf = objective.finalize(best_x, ctx)
        logits = clf(x_cf).float()
        p_t = logits.softmax(1)[torch.arange(B, device=dev), ctx.target]
        success = done & (logits.argmax(1) == ctx.target)
    fr = torch.stack(frames) if frames else None
    fs = torch.tensor(frame_steps) if frame_steps else None
    return EngineResult(x_cf=x_cf, v_cf=best_v, success=success, steps=steps, p_target=p_t, logits=logits,
                        frames=fr, frame_steps=fs)
