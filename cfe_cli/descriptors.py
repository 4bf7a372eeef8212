"""Measurable image descriptors for digits, clothes and cells (no labels needed).

Used as the attributes of Counterfactual Attacks' attributions (one logistic probe per
descriptor on latent codes) and as the spurious factors CECAS keeps fixed. All are
batched, differentiable torch functions of images in [0, 1].

Shape: ``x (B, C, H, W)`` -> ``descriptors(x)`` ``(B, len(NAMES))``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

NAMES = (
    "ink", "area", "thickness", "slant", "width", "height", "aspect", "centroid_x", "centroid_y",
    "symmetry_lr", "symmetry_tb", "upper_ink", "left_ink", "edge_energy", "fill_ratio", "brightness",
)  # fmt: skip
# Nuisance factors CECAS keeps unchanged by default: style and placement, not shape.
SPURIOUS = ("thickness", "slant", "centroid_x", "centroid_y", "brightness")

_SOBEL = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])


def _soft_mask(g: torch.Tensor, sharp: float = 20.0) -> torch.Tensor:
    return torch.sigmoid((g - 0.5) * sharp)


def _extent(profile: torch.Tensor) -> torch.Tensor:
    """Soft extent (in pixels) of a non-negative 1-D profile ``(B, L)``: 5th–95th percentile span."""
    c = profile.cumsum(1) / profile.sum(1, keepdim=True).clamp_min(1e-6)
    lo = (c < 0.05).float().sum(1)
    hi = (c < 0.95).float().sum(1)
    return hi - lo + 1


def descriptors(x: torch.Tensor) -> torch.Tensor:
    """All descriptors of ``NAMES`` for a batch. ``(B, C, H, W) -> (B, D)``."""
    B, _, H, W = x.shape
    g = x.mean(1)  # (B, H, W) grey
    m = _soft_mask(g)
    mass = g.sum(dim=(1, 2)).clamp_min(1e-6)
    ys = torch.arange(H, dtype=x.dtype, device=x.device).view(1, H, 1)
    xs = torch.arange(W, dtype=x.dtype, device=x.device).view(1, 1, W)
    cy = (g * ys).sum(dim=(1, 2)) / mass
    cx = (g * xs).sum(dim=(1, 2)) / mass
    dy, dx = ys - cy.view(B, 1, 1), xs - cx.view(B, 1, 1)
    mu11 = (g * dx * dy).sum(dim=(1, 2)) / mass
    mu02 = (g * dy * dy).sum(dim=(1, 2)) / mass
    slant = torch.atan(mu11 / mu02.clamp_min(1e-6))
    k = _SOBEL.to(x)
    gx = F.conv2d(m.unsqueeze(1), k.view(1, 1, 3, 3), padding=1)
    gy = F.conv2d(m.unsqueeze(1), k.t().reshape(1, 1, 3, 3), padding=1)
    edge = (gx.pow(2) + gy.pow(2) + 1e-8).sqrt().squeeze(1)  # (B, H, W)
    area = m.mean(dim=(1, 2))
    perimeter = edge.sum(dim=(1, 2)) / 4.0
    thickness = 2 * m.sum(dim=(1, 2)) / perimeter.clamp_min(1e-3)
    width = _extent(g.sum(1))
    height = _extent(g.sum(2))
    sym_lr = 1 - (g - g.flip(-1)).abs().mean(dim=(1, 2)) / g.mean(dim=(1, 2)).clamp_min(1e-6)
    sym_tb = 1 - (g - g.flip(-2)).abs().mean(dim=(1, 2)) / g.mean(dim=(1, 2)).clamp_min(1e-6)
    upper = g[:, : H // 2].sum(dim=(1, 2)) / mass
    left = g[:, :, : W // 2].sum(dim=(1, 2)) / mass
    fill = m.sum(dim=(1, 2)) / (width * height).clamp_min(1.0)
    brightness = (g * m).sum(dim=(1, 2)) / m.sum(dim=(1, 2)).clamp_min(1e-6)
    out = torch.stack([
        g.mean(dim=(1, 2)), area, thickness, slant * 180 / math.pi, width, height, width / height.clamp_min(1),
        cx / W, cy / H, sym_lr, sym_tb, upper, left, edge.mean(dim=(1, 2)), fill, brightness,
    ], dim=1)  # fmt: skip
    return out


def select(values: torch.Tensor, names: tuple[str, ...]) -> torch.Tensor:
    """Columns of ``descriptors(x)`` for the given names. ``(B, D) -> (B, len(names))``."""
    return values[:, [NAMES.index(n) for n in names]]
