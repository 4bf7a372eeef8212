"""Training: the loops (:mod:`~cfe_cli.training.loops`: classifiers, VAEs; :mod:`~cfe_cli.training.mirror`:
the Mirror-CFE decoder, with its losses in :mod:`~cfe_cli.training.losses`) and the jobs the API runs —
:mod:`~cfe_cli.training.classifier` (train-clf) and :mod:`~cfe_cli.training.generators`
(train-gen: the Mirror-CFE decoder, the VAE and its probes, the conditional VAE)."""

from __future__ import annotations

from cfe_cli.training.loops import (
    AUGMENTS,
    ClassifierTrainConfig,
    CondVAETrainConfig,
    Progress,
    VAETrainConfig,
    attribute_targets,
    augment_batch,
    elbo_terms,
    evaluate_accuracy,
    random_erase,
    train_classifier,
    train_cvae,
    train_vae,
)
from cfe_cli.training.losses import edit_weights, focused_mean, rec_loss, stage_distance, triangulation_loss
from cfe_cli.training.mirror import (
    DISCRIMINATOR_FOCUS,
    DISCRIMINATORS,
    MirrorTrainConfig,
    draw_targets,
    hard_pool,
    mix_hard,
    pair_table,
    train_mirror,
)

__all__ = [
    "AUGMENTS", "DISCRIMINATORS", "DISCRIMINATOR_FOCUS", "ClassifierTrainConfig", "CondVAETrainConfig",
    "MirrorTrainConfig", "Progress", "VAETrainConfig", "attribute_targets", "augment_batch", "draw_targets",
    "edit_weights", "elbo_terms", "evaluate_accuracy", "focused_mean", "hard_pool", "mix_hard", "pair_table",
    "random_erase", "rec_loss", "stage_distance", "train_classifier", "train_cvae", "train_mirror", "train_vae",
    "triangulation_loss",
]  # fmt: skip
