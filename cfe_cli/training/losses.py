"""The Mirror-CFE decoder's loss terms as pure batched functions (spec §6 and cfe's additions)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
