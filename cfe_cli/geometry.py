"""The geometry of Mirror-CFE: the pairwise decision boundary of a linear head as a mirror.

Pure, batched tensor functions (a leaf: torch only), shared by the explainer
(:mod:`cfe_cli.methods.mirror`) and the decoder's training (:mod:`cfe_cli.training.mirror`); at
the end, the L2-ball step and projection shared by the PGD baseline and adversarial training.

Notation (name -> paper symbol):
    f        (B, C, h, w)  last feature map f_s of the source x_s
    z        (B, C)        GAP(f) = z_s
    W, b     (K, C), (K,)  the linear head: logits l(z) = W z + b
    w_m, b_m (B, C), (B,)  W_t − W_s, b_t − b_s: the pairwise mirror
    margin   (B,)          m(z) = w_mᵀ z + b_m = l_t − l_s
    f_r      (B, C, h, w)  reflected map (k = 1), optionally refined (§4 of the spec)
    f_k      (B, C, h, w)  f_s + k (f_r − f_s), the point at step k ∈ [0, 1]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def pairwise_mirror(weight: Tensor, bias: Tensor, source: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """The hyperplane l_t − l_s = 0 of each sample's (source, target) pair.

    Args:
        weight: head weight ``(K, C)``; bias: ``(K,)``.
        source, target: class indices ``(B,)``.

    Returns:
        ``w_m (B, C)`` and ``b_m (B,)``.
    """
    return weight[target] - weight[source], bias[target] - bias[source]


def margin(z: Tensor, w_m: Tensor, b_m: Tensor) -> Tensor:
    """m(z) = w_mᵀ z + b_m, the target−source logit margin. ``(B, C) -> (B,)``."""
    return (z * w_m).sum(-1) + b_m


def reflect_vectors(z: Tensor, w_m: Tensor, b_m: Tensor, k: Tensor | float = 1.0) -> Tensor:
    """P(z, k) = z − 2k · m(z) · w_m / ‖w_m‖²  (k = 0.5 on the boundary, 1 the mirror image).

    Shape: ``z (B, C)``, ``k`` scalar or ``(B,)`` -> ``(B, C)``.
    """
    k = torch.as_tensor(k, dtype=z.dtype, device=z.device)
    scale = 2 * k * margin(z, w_m, b_m) / w_m.pow(2).sum(-1).clamp_min(1e-12)  # (B,)
    return z - scale.unsqueeze(-1) * w_m


def reflect_map(f: Tensor, w_m: Tensor, b_m: Tensor) -> Tensor:
    """Reflect every spatial column f[:, :, i, j] across the pairwise mirror.

    The map is affine, so ``GAP(reflect_map(f)) == reflect_vectors(GAP(f))`` exactly.

    Shape: ``f (B, C, h, w)`` -> ``(B, C, h, w)``.
    """
    m = torch.einsum("bchw,bc->bhw", f, w_m) + b_m.view(-1, 1, 1)  # (B, h, w) margin per location
    scale = 2 * m / w_m.pow(2).sum(-1).clamp_min(1e-12).view(-1, 1, 1)  # (B, h, w)
    return f - scale.unsqueeze(1) * w_m.view(*w_m.shape, 1, 1)


def intended_logits(logits: Tensor, source: Tensor, target: Tensor) -> Tensor:
    """l*: the source logits with entries s and t swapped, all others unchanged. ``(B, K)``."""
    out = logits.clone()
    rows = torch.arange(logits.shape[0], device=logits.device)
    out[rows, source] = logits[rows, target]
    out[rows, target] = logits[rows, source]
    return out


def refine_reflection(f_r: Tensor, weight: Tensor, bias: Tensor, goal: Tensor, *, mode: str = "exact",
                      lbfgs_steps: int = 10) -> Tensor:
    """Multi-class refinement: shift f_r so that the head's logits at GAP(f_r) equal ``goal``.

    The loss ‖W·GAP(f_r) + b − l*‖² has the same gradient (1/hw)·Wᵀr at every location,
    so any gradient method (the paper's L-BFGS) only adds a uniform channel shift δ that
    stays in the row space of W. Its limit is the minimum-norm least-squares shift
    δ = W⁺(l* − l(GAP(f_r))), which ``mode="exact"`` computes in closed form (one
    pseudo-inverse of the K×C head, shared by the batch). ``mode="lbfgs"`` runs the
    paper's optimiser (``LBFGS(lr=0.1)``, ``lbfgs_steps`` outer steps) instead.

    Shape: ``f_r (B, C, h, w)``, ``goal (B, K)`` -> ``(B, C, h, w)``.
    """
    if mode == "none":
        return f_r
    z_r = f_r.mean(dim=(2, 3))  # (B, C)
    if mode == "exact":
        resid = goal - (z_r @ weight.T + bias)  # (B, K)
        delta = resid @ torch.linalg.pinv(weight).T  # (B, C), min-norm solution of W δ = resid
        return f_r + delta[:, :, None, None]
    if mode != "lbfgs":
        raise ValueError(f"unknown refinement mode '{mode}'")
    delta = torch.zeros_like(z_r, requires_grad=True)
    opt = torch.optim.LBFGS([delta], lr=0.1)

    def closure() -> Tensor:
        opt.zero_grad()
        loss = ((z_r + delta) @ weight.T + bias - goal).pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        for _ in range(lbfgs_steps):
            opt.step(closure)
    return f_r + delta.detach()[:, :, None, None]


def mirror_features(f: Tensor, weight: Tensor, bias: Tensor, source: Tensor, target: Tensor, *,
                    refine: str = "exact") -> Tensor:
    """The (refined) reflected map f_r of each sample's source features.

    With K = 2 classes the refinement is skipped (the reflection already swaps the two
    confidences exactly; only l_s + l_t would move).

    Shape: ``f (B, C, h, w)``, ``source/target (B,)`` -> ``(B, C, h, w)``.
    """
    w_m, b_m = pairwise_mirror(weight, bias, source, target)
    f_r = reflect_map(f, w_m, b_m)
    if weight.shape[0] > 2 and refine != "none":
        goal = intended_logits(f.mean(dim=(2, 3)) @ weight.T + bias, source, target)
        f_r = refine_reflection(f_r, weight, bias, goal, mode=refine)
    return f_r


def interpolate(f: Tensor, f_r: Tensor, k: Tensor) -> Tensor:
    """f_k = f + k (f_r − f), one k per sample.

    Shape: ``f, f_r (B, C, h, w)``, ``k (B,)`` -> ``(B, C, h, w)``.
    """
    return f + k.view(-1, 1, 1, 1) * (f_r - f)


def interpolate_grid(f: Tensor, f_r: Tensor, ks: Tensor) -> Tensor:
    """Every k of a grid for every sample.

    Shape: ``f, f_r (B, C, h, w)``, ``ks (T,)`` -> ``(B, T, C, h, w)``.
    """
    return f.unsqueeze(1) + ks.view(1, -1, 1, 1, 1) * (f_r - f).unsqueeze(1)


def spatial_prior_mask(f_k: Tensor, weight: Tensor, source: Tensor, target: Tensor, k: Tensor, *,
                       rho_low: float = 0.1, rho_high: float = 0.5, size: tuple[int, int] | None = None) -> Tensor:
    """Class-specific spatial prior (CSP): where the source or target class map is strong.

    U = W ⊛ f_k (class activation maps), N = ReLU(U) / max_ij per class,
    ρ(k) = clip(1 − k, ρ_l, ρ_u), M = 1[N_s > ρ] ∨ 1[N_t > ρ]; so the mask grows with k.

    Shape: ``f_k (B, C, h, w)``, ``k (B,)`` -> ``(B, 1, h, w)`` float {0, 1}, or
    nearest-resized to ``size``.
    """
    cam = torch.einsum("bchw,kc->bkhw", f_k, weight).relu()  # (B, K, h, w)
    norm = cam / cam.amax(dim=(2, 3), keepdim=True).clamp_min(1e-8)
    rows = torch.arange(f_k.shape[0], device=f_k.device)
    rho = (1 - k).clamp(rho_low, rho_high).view(-1, 1, 1)  # (B, 1, 1)
    mask = (norm[rows, source] > rho) | (norm[rows, target] > rho)  # (B, h, w)
    mask = mask.unsqueeze(1).float()
    if size is not None and tuple(mask.shape[-2:]) != tuple(size):
        mask = F.interpolate(mask, size=size, mode="nearest")
    return mask


# ----------------------------------------------------------------------------- explainer


def k_grid(frames: int = 100) -> Tensor:
    """The paper's video grid k_i = i / (frames − 1), ``(frames,)``."""
    return torch.linspace(0.0, 1.0, frames)


# ----------------------------------------------------------------------------- L2 ball (PGD)


def l2_unit(g: torch.Tensor) -> torch.Tensor:
    """Each sample's ``g (B, ...)`` scaled to unit L2 norm (a zero stays zero)."""
    return g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (g.dim() - 1)))


def project_l2(v: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """A perturbation ``v`` of images ``x (B, C, H, W)`` projected onto the L2 ball of radius ``eps``
    and then the [0, 1] image box."""
    n = v.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (v.dim() - 1)))
    return (x + v * (eps / n).clamp(max=1.0)).clamp(0, 1) - x
