"""``oracle_effnet``: a second independent oracle, a linear probe on EfficientNet-Lite0 features.

The convnet oracle (``oracle.safetensors``) is a small network trained on the same pixels as
the explained classifier, so a counterfactual that exploits pixel-level shortcuts may fool
both. This oracle instead reads the frozen ImageNet features of :mod:`cfe_cli.features`
(1280-d, images resized to 224 px) and adds only a multinomial logistic regression fitted on
real training images of the dataset. No decoder is ever trained against it (nor against the
EfficientNet features), so its verdicts stay an outside opinion.

In ``cfe evaluate`` (with ``cfe[metrics]`` and the file beside the classifier) each row gets

- ``oracle_effnet``: share of the row's counterfactuals the probe labels as the target class;
- ``oracle_effnet_real``: share of the pair's real target test images it labels as the target
  (the same images the FD is measured against): the ceiling to read ``oracle_effnet`` against.

The file is ``<model>/oracle_effnet.safetensors``: tensors ``weight (K, 1280)``, ``bias (K,)``,
``mean (1280,)``, ``std (1280,)`` (the standardisation of the features), the config
(:class:`ProbeConfig`) and the fit's record (data, regularisation, accuracies) in the
metadata. Fit one with ``python -m cfe_cli.oracle_effnet --model NAME``.

Shape: features ``(B, 1280)`` -> logits ``(B, K)``.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cfe_cli.errors import InputError, WeightsError

FILE = "oracle_effnet.safetensors"
KIND = "oracle_effnet"


@dataclass(frozen=True)
class ProbeConfig:
    """The probe's shape and the features it reads (stored in the file's metadata)."""

    num_classes: int
    feature_dim: int = 1280
    features: str = "effnetlite0"  # cfe_cli.features.EffNetFeatures, pooled
    image_size: int = 224  # the size EffNetFeatures resizes to


class EffNetProbe(nn.Module):
    """Logistic regression on standardised EfficientNet-Lite0 features.

    Shape: ``(B, feature_dim)`` -> logits ``(B, num_classes)``."""

    def __init__(self, config: ProbeConfig) -> None:
        super().__init__()
        self.config = config
        self.linear = nn.Linear(config.feature_dim, config.num_classes)
        self.register_buffer("mean", torch.zeros(config.feature_dim))
        self.register_buffer("std", torch.ones(config.feature_dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear((features - self.mean) / self.std)


def _fit_once(z: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float, steps: int) -> nn.Linear:
    """Full-batch L-BFGS on mean cross-entropy + l2 · ‖W‖² (standardised features ``z (N, D)``)."""
    torch.manual_seed(0)
    lin = nn.Linear(z.shape[1], num_classes)
    nn.init.zeros_(lin.weight)
    nn.init.zeros_(lin.bias)
    opt = torch.optim.LBFGS(lin.parameters(), lr=1.0, max_iter=steps, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-6, tolerance_change=1e-9)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(lin(z), y) + l2 * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return lin


def fit_probe(features: torch.Tensor, labels: torch.Tensor, num_classes: int, *,
              l2_grid: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1), holdout: float = 0.2,
              steps: int = 300, seed: int = 0) -> tuple[EffNetProbe, dict[str, Any]]:
    """Fit the probe; the L2 weight is the grid value with the best accuracy on a held-out share
    of the given images, then the probe is refitted on all of them.

    Args:
        features: pooled EfficientNet-Lite0 features of real images, ``(N, 1280)``.
        labels: their classes, ``(N,)`` long in [0, num_classes).
        num_classes: K.

    Returns:
        the probe (eval mode) and a record: ``l2``, ``holdout_accuracy`` per grid value.
    """
    N, D = features.shape
    if len(labels) != N or N < 2 * num_classes:
        raise InputError(f"the probe needs features (N, D) and N labels with N >= 2 per class; got {N} / "
                         f"{len(labels)}")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise InputError(f"probe labels must lie in [0, {num_classes}); got {int(labels.min())}..{int(labels.max())}")
    if not 0 < holdout < 1:
        raise InputError(f"holdout must be in (0, 1); got {holdout}")
    features, labels = features.float(), labels.long()
    mean, std = features.mean(0), features.std(0).clamp_min(1e-6)
    z = (features - mean) / std
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(seed))
    n_val = max(int(N * holdout), 1)
    val, tr = perm[:n_val], perm[n_val:]
    scores = {}
    for l2 in l2_grid:
        lin = _fit_once(z[tr], labels[tr], num_classes, l2, steps)
        with torch.no_grad():
            scores[l2] = float((lin(z[val]).argmax(1) == labels[val]).float().mean())
    best = max(l2_grid, key=lambda v: (scores[v], v))  # ties: the stronger regularisation
    probe = EffNetProbe(ProbeConfig(num_classes=num_classes, feature_dim=D))
    probe.linear.load_state_dict(_fit_once(z, labels, num_classes, best, steps).state_dict())
    probe.mean.copy_(mean)
    probe.std.copy_(std)
    return probe.eval().requires_grad_(False), {"l2": best, "holdout_accuracy": {str(k): round(v, 5)
                                                                                 for k, v in scores.items()}}


def save_probe(path: str | os.PathLike[str], probe: EffNetProbe, info: dict[str, Any]) -> Path:
    """Write the probe as safetensors with its config and ``info`` in the metadata."""
    from cfe_cli.models.weights import save_module

    return save_module(path, probe, kind=KIND, config=asdict(probe.config), info=info)


def load_probe(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> tuple[EffNetProbe, dict]:
    """Rebuild a probe written by :func:`save_probe`; a foreign file is a WeightsError."""
    from cfe_cli.models.weights import load_state, read_metadata

    meta = read_metadata(path)
    if meta["kind"] != KIND:
        raise WeightsError(f"{path} holds a '{meta['kind']}', not an EfficientNet probe ({KIND})")
    try:
        cfg = ProbeConfig(**meta["config"])
    except TypeError as e:
        raise WeightsError(f"corrupt probe config in {path}: {e}") from None
    probe = EffNetProbe(cfg)
    load_state(path, probe)
    return probe.to(device).eval().requires_grad_(False), meta["info"]


def load_folder_probe(folder: str | os.PathLike[str], device: str | torch.device = "cpu") -> EffNetProbe | None:
    """The model folder's probe, or None when it has none."""
    path = Path(folder) / FILE
    return load_probe(path, device)[0] if path.is_file() else None


@torch.no_grad()
def verdicts(probe: EffNetProbe, features: torch.Tensor, target: int | torch.Tensor) -> torch.Tensor:
    """Whether the probe labels each image as ``target``: features ``(B, 1280)`` -> ``(B,)`` bool."""
    if features.dim() != 2 or features.shape[1] != probe.config.feature_dim:
        raise InputError(f"expected features (B, {probe.config.feature_dim}); got {tuple(features.shape)}")
    dev = probe.mean.device
    pred = probe(features.to(dev).float()).argmax(1).cpu()
    return pred == (target.cpu() if isinstance(target, torch.Tensor) else target)


def score(probe: EffNetProbe, f_cf: torch.Tensor, real_feat: torch.Tensor, target: int) -> dict[str, float]:
    """The two evaluate entries of one row: ``oracle_effnet`` on the counterfactuals' features
    ``(B, 1280)`` and ``oracle_effnet_real`` on the real target images' ``(M, 1280)``."""
    return {"oracle_effnet": round(float(verdicts(probe, f_cf, target).float().mean()), 5),
            "oracle_effnet_real": round(float(verdicts(probe, real_feat, target).float().mean()), 5)}


def _per_class(labels: torch.Tensor, per_class: int, num_classes: int, seed: int) -> torch.Tensor:
    """Indices of up to ``per_class`` images of each class, drawn without replacement (seeded)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for c in range(num_classes):
        idx = (labels == c).nonzero()[:, 0]
        out.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    return torch.cat(out)


def fit_for_model(model: str | os.PathLike[str], *, per_class: int = 200, test_per_class: int = 100,
                  out: str | os.PathLike[str] | None = None, data_dir: str | os.PathLike[str] | None = None,
                  seed: int = 0, device: str = "cpu", cache: str | os.PathLike[str] | None = None,
                  command: str = "") -> dict[str, Any]:
    """Fit and write ``<model>/oracle_effnet.safetensors`` from ``per_class`` real training images
    of each class (its classifier's dataset); report its accuracy on ``test_per_class`` test
    images of each class. ``cache``: a folder to keep the features in (``.pt`` tensors, not
    shipped) so a refit does not embed again."""
    from cfe_cli import features as E
    from cfe_cli.data import load_dataset
    from cfe_cli.models.weights import read_metadata, resolve_model

    if per_class < 2 or test_per_class < 1:
        raise InputError(f"--per-class must be >= 2 and --test-per-class >= 1; got {per_class}, {test_per_class}")
    if not E.available():
        raise InputError(E.MISSING_MESSAGE)
    folder = resolve_model(model)
    meta = read_metadata(folder / "classifier.safetensors")
    dataset, classes = meta["info"].get("dataset"), list(meta["info"]["classes"])
    res = int(meta["config"].get("resolution", 28))
    K = len(classes)
    t0 = time.perf_counter()
    net = E.EffNetFeatures().to(device)
    feats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for split, n in (("train", per_class), ("test", test_per_class)):
        data = load_dataset(dataset, split, root=data_dir, size=res)
        idx = _per_class(data.labels, n, K, seed)
        path = None if cache is None else Path(cache) / f"{Path(folder).name}_{split}_{n}_{seed}.pt"
        if path is not None and path.is_file():
            f = torch.load(path, weights_only=True)
        else:
            f = E.embed(data.images[idx], net)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                torch.save(f, path)
        feats[split] = (f, data.labels[idx])
    probe, record = fit_probe(*feats["train"], K, seed=seed)
    f_test, y_test = feats["test"]
    pred = probe(f_test).argmax(1)
    per_cls = {classes[c]: round(float((pred[y_test == c] == c).float().mean()), 4) for c in range(K)}
    info = {"dataset": dataset, "classes": classes, "command": command,
            "train_images": {"split": "train", "per_class": per_class, "seed": seed, "n": len(feats["train"][1])},
            "fit": record, "test_accuracy": round(float((pred == y_test).float().mean()), 5),
            "test_per_class": test_per_class, "test_accuracy_per_class": per_cls,
            "seconds": round(time.perf_counter() - t0, 1)}
    target = Path(out) if out is not None else Path(folder) / FILE
    save_probe(target, probe, info)
    return {"path": str(target), **info}


def main(argv: list[str] | None = None) -> None:
    """``python -m cfe_cli.oracle_effnet --model NAME``: fit and write the probe (one line out)."""
    import json
    import sys

    from cfe_cli.errors import CfeError

    p = argparse.ArgumentParser(prog="python -m cfe_cli.oracle_effnet", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--per-class", type=int, default=200)
    p.add_argument("--test-per-class", type=int, default=100)
    p.add_argument("--out", default=None)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", default=None)
    a = p.parse_args(argv)
    try:
        r = fit_for_model(a.model, per_class=a.per_class, test_per_class=a.test_per_class, out=a.out,
                          data_dir=a.data_dir, seed=a.seed, cache=a.cache,
                          command="python -m cfe_cli.oracle_effnet " + " ".join(sys.argv[1:] if argv is None
                                                                                 else argv))
    except CfeError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    print(json.dumps(r))


if __name__ == "__main__":
    main()
