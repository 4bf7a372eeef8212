"""Realism anchored on real images of the target class (issue 28).

L_match pulls a decoded image's *texture statistics* in the explained classifier's own stages
towards those of real training images of the class it should show. For stage ``i`` with map
``F_i(x) (B, C_i, h_i, w_i)`` the statistics are the per-channel spatial mean and standard
deviation, ``s_i(x) = [mean_hw F_i(x), std_hw F_i(x)] (B, 2 C_i)`` (the style statistics of
AdaIN / Gram-free style transfer). A table holds, per class ``c``, their mean ``m_i[c]`` and
spread ``v_i[c]`` over the real training images of ``c``. The loss of one image meant to show
class ``c`` is the hinge

    d(x, c) = mean_i mean_j relu(|s_i(x)_j − m_i[c]_j| / v_i[c]_j − margin)

so an image whose statistics lie within ``margin`` spreads of the class's real images costs
nothing (most real images of ``c`` do): the loss does not pull every counterfactual to one
class prototype, only the outliers towards the class. In training, sample ``b`` at
interpolation ``k_b`` counts with weight ``relu(2 k_b − 1)`` (0 up to the decision boundary,
1 at the reflection), against the class the head assigns to ``z_k``.

No extra network: the classifier's stages are already computed for the skip decoder. The
oracles (convnet, EfficientNet probe) stay independent of the training.

L_critic (:func:`critic_loss`) is the second signal: the cross-entropy of a *critic*, a separate
classifier trained adversarially (``train-clf --adv-eps``), on the decoded image against the class
it should show, with the same ``relu(2 k − 1)`` weight. A robust classifier's input gradients are
perceptually aligned (Santurkar et al. 2019, "Image Synthesis with a Single (Robust) Classifier"):
to convince it, an image has to change the way the class looks, not in a direction only the
explained (non-robust) classifier is sensitive to. The critic is neither oracle.

Notation: ``x_k`` decoded image at k, ``t`` target class, ``m``/``v`` the class table.
"""

from __future__ import annotations

import torch

from cfe_cli.errors import InputError


def stage_statistics(stages: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per-channel spatial mean and std of each stage map.

    Shape: list of ``(B, C_i, h_i, w_i)`` -> list of ``(B, 2 C_i)``."""
    out = []
    for f in stages:
        f = f.float()
        B, C = f.shape[:2]
        flat = f.reshape(B, C, -1)  # (B, C, h*w)
        # sqrt(var + eps): a constant map (std 0) still has a finite gradient
        std = (flat.var(dim=2, unbiased=False) + 1e-6).sqrt()
        out.append(torch.cat([flat.mean(dim=2), std], dim=1))
    return out


@torch.no_grad()
def class_statistics(stages_fn, images: torch.Tensor, labels: torch.Tensor, num_classes: int,
                     batch_size: int = 512, device: torch.device | str = "cpu",
                     ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The class table: per class, the mean ``m_i (K, 2 C_i)`` and std ``v_i (K, 2 C_i)`` of
    :func:`stage_statistics` over the real images ``(N, C, H, W)`` with labels ``(N,)``.

    ``stages_fn(x)`` returns the stage maps of a batch. A class without images is an error."""
    counts = torch.bincount(labels.cpu(), minlength=num_classes)
    if len(counts) > num_classes or (counts < 2).any():
        raise InputError(f"realism statistics need at least two real images of each of {num_classes} classes; "
                         f"got counts {counts.tolist()}")
    sums: list[torch.Tensor] = []
    sqs: list[torch.Tensor] = []
    y = labels.cpu()
    for i in range(0, len(images), batch_size):
        st = stage_statistics(stages_fn(images[i:i + batch_size].to(device)))
        onehot = torch.nn.functional.one_hot(y[i:i + batch_size], num_classes).float()  # (b, K)
        for j, s in enumerate(st):
            s = s.cpu().double()
            if len(sums) <= j:
                sums.append(torch.zeros(num_classes, s.shape[1], dtype=torch.float64))
                sqs.append(torch.zeros(num_classes, s.shape[1], dtype=torch.float64))
            sums[j] += onehot.double().T @ s
            sqs[j] += onehot.double().T @ s.pow(2)
    n = counts.double()[:, None]
    means = [(s / n).float() for s in sums]
    stds = [((q / n - (s / n).pow(2)).clamp_min(0) * n / (n - 1)).sqrt().float() for s, q in zip(sums, sqs,
                                                                                                   strict=True)]
    return means, stds


def match_distance(stats: list[torch.Tensor], cls: torch.Tensor, means: list[torch.Tensor],
                   stds: list[torch.Tensor], margin: float = 1.0) -> torch.Tensor:
    """d(x, c): the hinge distance of each image's statistics to its class's real images.

    Args:
        stats: :func:`stage_statistics` of the images, list of ``(B, 2 C_i)``.
        cls: the class each image should show, ``(B,)`` long.
        means, stds: the class table of :func:`class_statistics`, lists of ``(K, 2 C_i)``.
        margin: spreads of slack (0: plain z-score L1).

    Returns:
        ``(B,)``, 0 for an image within ``margin`` spreads of the class mean in every statistic.
    """
    if not margin >= 0:
        raise InputError(f"the realism margin must be 0 or more; got {margin}")
    terms = []
    for s, m, v in zip(stats, means, stds, strict=True):
        m, v = m.to(s.device)[cls], v.to(s.device)[cls]  # (B, 2 C_i)
        terms.append(torch.relu((s - m).abs() / v.clamp_min(1e-4) - margin).mean(dim=1))
    return torch.stack(terms).mean(dim=0)


def match_loss(stages: list[torch.Tensor], cls: torch.Tensor, k: torch.Tensor, means: list[torch.Tensor],
               stds: list[torch.Tensor], margin: float = 1.0, classes: torch.Tensor | None = None) -> torch.Tensor:
    """L_match of a training batch: :func:`match_distance` of the decoded images' stages
    ``(B, C_i, h_i, w_i)`` against class ``cls (B,)``, weighted by ``relu(2 k − 1)`` for ``k (B,)``
    (0 up to the boundary, 1 at the reflection). ``classes (K,)`` bool: only samples whose ``cls``
    is marked count (None: all). Scalar; 0 when no counted sample is past the boundary."""
    return boundary_mean(match_distance(stage_statistics(stages), cls, means, stds, margin), cls, k, classes)


def boundary_mean(values: torch.Tensor, cls: torch.Tensor, k: torch.Tensor,
                  classes: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample ``values (B,)`` averaged with weights ``relu(2 k − 1)`` (0 up to the boundary, 1
    at the reflection), only over samples whose class ``cls (B,)`` is marked in ``classes (K,)``
    (None: all). Scalar; 0 (still differentiable) when no such sample is past the boundary."""
    w = torch.relu(2 * k.float() - 1)  # (B,)
    if classes is not None:
        w = w * classes[cls].float()
    return (w * values).sum() / w.sum().clamp_min(1e-6)


def critic_loss(logits: torch.Tensor, cls: torch.Tensor, k: torch.Tensor,
                classes: torch.Tensor | None = None) -> torch.Tensor:
    """L_critic of a training batch: the critic's cross-entropy on the decoded images, its logits
    ``(B, K)`` against the class each should show ``cls (B,)``, weighted by ``relu(2 k − 1)`` for
    ``k (B,)`` (0 up to the decision boundary, 1 at the reflection). ``classes (K,)`` bool: only
    samples whose ``cls`` is marked count (None: all). Scalar; 0 when no counted sample is past
    the boundary."""
    if logits.dim() != 2 or logits.shape[0] != cls.shape[0] or k.shape != cls.shape:
        raise InputError(f"critic logits (B, K), classes (B,) and k (B,) must agree; got {tuple(logits.shape)}, "
                         f"{tuple(cls.shape)}, {tuple(k.shape)}")
    return boundary_mean(torch.nn.functional.cross_entropy(logits.float(), cls, reduction="none"), cls, k, classes)
