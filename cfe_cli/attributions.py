"""Attributions of Counterfactual Attacks: latent probes for attributes or descriptors.

One logistic regression per attribute j on latent codes (scikit-learn, L2, C = 1,
lbfgs — the paper's choice): p_j(z) = σ(β_j·z + b_j). Continuous descriptors are split at
their training median. Local score s_j = p_j(z_cf) − p_j(z0); global score
S_j = mean_n s_jn over many counterfactuals of one direction (each row against its own
z0 — the reference code's stale-variable bug is not repeated). Probes are fitted on the
training split and scored on held-out latents.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from cfe_cli.errors import InputError


@dataclass
class Probes:
    """Fitted probes. ``coef (A, D)``, ``intercept (A,)``, per-attribute held-out accuracy."""

    names: list[str]
    coef: torch.Tensor
    intercept: torch.Tensor
    thresholds: torch.Tensor
    accuracy: list[float]
    label: ClassVar[str] = "probe change p(z_cf) - p(z0)"

    def probs(self, z: torch.Tensor) -> torch.Tensor:
        """p_j(z) for every attribute. ``(B, D) -> (B, A)``."""
        return torch.sigmoid(z @ self.coef.T.to(z) + self.intercept.to(z))

    def state(self) -> dict[str, torch.Tensor]:
        return {"coef": self.coef.contiguous(), "intercept": self.intercept.contiguous(),
                "thresholds": self.thresholds.contiguous()}


@dataclass
class AttributeInputs:
    """The attribute input of a conditional generator (GCI) read as probes: the edited
    variable *is* the attribute vector A ∈ [−1, 1], so p_j(A) = (A_j + 1)/2 and the local
    score is ΔA_j / 2. ``accuracy``: the generator's attribute classifier on the test split."""

    names: list[str]
    accuracy: list[float]
    label: ClassVar[str] = "attribute input change (A* - A0)/2"

    def probs(self, a: torch.Tensor) -> torch.Tensor:
        return (a + 1) / 2


def fit_probes(z_train: torch.Tensor, attrs_train: torch.Tensor, z_test: torch.Tensor, attrs_test: torch.Tensor,
               names: list[str], *, binary: bool = False) -> Probes:
    """Fit one logistic probe per attribute column.

    Args:
        z_train, z_test: latent codes ``(N, D)``.
        attrs_train, attrs_test: ``(N, A)`` attribute values (binary labels or continuous
            descriptors, split at the training median unless ``binary``).
        names: the A attribute names.
    """
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        raise InputError("attributions need scikit-learn: pip install 'cfe[attributions]'") from None
    if binary:
        thr = torch.full((attrs_train.shape[1],), 0.5)
    else:
        thr = attrs_train.median(0).values
    ytr = (attrs_train > thr).numpy()
    yte = (attrs_test > thr).numpy()
    ztr, zte = z_train.double().numpy(), z_test.double().numpy()
    coefs, inters, accs = [], [], []
    for j in range(attrs_train.shape[1]):
        if ytr[:, j].all() or not ytr[:, j].any():  # constant attribute: a flat probe
            coefs.append(np.zeros(ztr.shape[1]))
            inters.append(10.0 if ytr[:, j].all() else -10.0)
            accs.append(float((yte[:, j] == ytr[0, j]).mean()))
            continue
        lr = LogisticRegression(C=1.0, max_iter=1000)
        lr.fit(ztr, ytr[:, j])
        coefs.append(lr.coef_[0])
        inters.append(float(lr.intercept_[0]))
        accs.append(float(lr.score(zte, yte[:, j])))
    return Probes(list(names), torch.tensor(np.stack(coefs), dtype=torch.float32),
                  torch.tensor(inters, dtype=torch.float32), thr.float(), accs)


def local_scores(probes: Probes, z0: torch.Tensor, z_cf: torch.Tensor) -> torch.Tensor:
    """s_j = p_j(z_cf) − p_j(z0). ``(B, D), (B, D) -> (B, A)``."""
    return probes.probs(z_cf) - probes.probs(z0)


def global_scores(local: torch.Tensor, sign: torch.Tensor | None = None) -> torch.Tensor:
    """S_j = mean_n(sgn_n · s_jn). ``(N, A) -> (A,)``; ``sign (N,)`` defaults to +1."""
    if sign is not None:
        local = local * sign.view(-1, 1)
    return local.mean(0)


def bar_chart(names: list[str], values: list[float], title: str, path, top: int = 10):  # type: ignore[no-untyped-def]
    """A horizontal bar chart PNG of the ``top`` scores by magnitude (Pillow only)."""
    from PIL import Image, ImageDraw, ImageFont

    from cfe_cli.render import save_image

    order = sorted(range(len(values)), key=lambda i: -abs(values[i]))[:top]
    W, row, left = 720, 30, 200
    H = 60 + row * len(order) + 20
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    try:
        font = ImageFont.truetype("DejaVuSans.ttf", 14)
    except OSError:
        font = ImageFont.load_default()
    d.text((10, 10), title, fill="black", font=font)
    vmax = max((abs(values[i]) for i in order), default=1.0) or 1.0
    mid = left + (W - left - 20) // 2
    half = (W - left - 20) // 2 - 64  # room for the value label beside the longest bar
    d.line([(mid, 40), (mid, H - 10)], fill=(120, 120, 120))
    for r, i in enumerate(order):
        y = 50 + r * row
        v = values[i]
        length = int(half * abs(v) / vmax)
        color = (214, 39, 40) if v > 0 else (31, 119, 180)
        x0, x1 = (mid, mid + length) if v > 0 else (mid - length, mid)
        d.rectangle([x0, y, x1, y + row - 8], fill=color)
        d.text((10, y + 2), names[i], fill="black", font=font)
        d.text((x1 + 4 if v > 0 else x0 - 60, y + 2), f"{v:+.3f}", fill="black", font=font)
    return save_image(img, path)
