"""The one result type every counterfactual method returns.

Dim 0 is always the batch (B). Tensors stay on the device they were computed on; callers
move them (one host transfer per batch, see :meth:`CounterfactualResult.cpu`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

Tensor = torch.Tensor


@dataclass
class Frames:
    """A method's path from the source to its counterfactual, for videos and strips.

    Attributes:
        ks: ``(T,)`` the position of each frame: k ∈ [0, 1] (Mirror-CFE) or the engine step.
        x: ``(B, T, C, H, W)`` the frames.
        predicted: ``(B, T, K)`` the classifier's probabilities on each frame.
        intended: ``(B, T, K)`` the head's softmax along the feature path (Mirror-CFE) or None.
        x_label: the axis name of ``ks`` (``"step, k"`` or ``"step"``).
    """

    ks: Tensor
    x: Tensor
    predicted: Tensor
    intended: Tensor | None
    x_label: str


@dataclass
class CounterfactualResult:
    """Counterfactuals of one batch, as every method returns them.

    Attributes:
        x_cf: ``(B, C, H, W)`` the counterfactual: Mirror-CFE's 1st CFE, the optimisation
            methods' iterate at the threshold (the last iterate, or the reflection, where none).
        found: ``(B,)`` bool: the method's validity rule held (see ``Method.validity_rule``).
        source, target: ``(B,)`` long class indices (source = the classifier's prediction).
        source_probs: ``(B, K)`` the classifier's probabilities on the inputs.
        cf_probs: ``(B, K)`` the classifier's probabilities on ``x_cf``.
        second: ``(B, C, H, W)`` the method's second image, named by ``second_name``:
            ``reflection`` (Mirror-CFE, k = 1), ``reconstruction`` (G(E(x)), latent methods)
            or ``perturbation`` (PGD's δ, centred on grey).
        second_probs: ``(B, K)`` the classifier's probabilities on ``second``.
        steps: ``(B,)`` long: engine steps to the threshold, or decoder passes (Mirror-CFE;
            ``steps_name`` says which).
        k: ``(B,)`` Mirror-CFE's k of the 1st CFE (−1 where none); None for other methods.
        p_target: ``(B,)`` the target probability of ``x_cf`` (optimisation methods) or None.
        z0, z_cf: ``(B, D)`` the latent code before and after (latent methods) or None.
        frames: the path for videos, or None.
    """

    x_cf: Tensor
    found: Tensor
    source: Tensor
    target: Tensor
    source_probs: Tensor
    cf_probs: Tensor
    second: Tensor
    second_probs: Tensor
    second_name: str
    steps: Tensor
    steps_name: str = "steps"
    k: Tensor | None = None
    p_target: Tensor | None = None
    z0: Tensor | None = None
    z_cf: Tensor | None = None
    frames: Frames | None = None

    def __len__(self) -> int:
        return int(self.x_cf.shape[0])

    def cpu(self) -> CounterfactualResult:
        """A copy with every tensor detached on the CPU (one transfer per batch)."""

        def move(v: object) -> object:
            if isinstance(v, Tensor):
                return v.detach().cpu()
            if isinstance(v, Frames):
                return Frames(v.ks.detach().cpu(), v.x.detach().cpu(), v.predicted.detach().cpu(),
                              None if v.intended is None else v.intended.detach().cpu(), v.x_label)
            return v

        return replace(self, **{f.name: move(getattr(self, f.name)) for f in fields(self)})
