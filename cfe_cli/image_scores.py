"""Evaluate's image-set scores of one row: realism (EfficientNet-Lite0 FD/KD/DFD, oracle_effnet), FID,
LPIPS and face identity, each computed on a row's whole set of counterfactuals (under torchrun: on
the set gathered from every rank, never averaged per rank)."""

from __future__ import annotations

import os
from typing import Any

import torch

from cfe_cli.data import load_dataset
from cfe_cli.errors import InputError


def image_metrics(row: dict[str, Any], nets: Any, pair: Any, x_cf: torch.Tensor) -> None:
    """The optional network-based metrics of one row's counterfactuals (CPU tensors)."""
    if nets.feats is not None and pair.real_feat is not None:
        _realism(row, nets.feats, pair.x_all, x_cf, pair.real_feat, nets.probe, pair.t)
    if nets.faces is not None:
        _identity(row, nets.faces, pair.x_all, x_cf)
    if pair.real_incep is not None:
        _fid(row, nets.inception, x_cf, pair.real_incep)
    if nets.lpips_net is not None:
        _lpips(row, nets.lpips_net, pair.x_all, x_cf)


def reference_split(dataset: str, split: str, data_dir: str | os.PathLike[str] | None,
                     size: int) -> Any:
    """Another split of the dataset (train, or test when evaluating train) for the real-image FD floor."""
    other = "test" if split == "train" else "train"
    try:
        return load_dataset(dataset, other, root=data_dir, size=size)
    except (InputError, OSError, ValueError):
        return None


def realism_references(s: str, t: str, feats: Any, x_all: torch.Tensor, real_feat: torch.Tensor,
                        ref_data: Any, t_index: int) -> dict[str, Any]:
    """FD of the unchanged inputs and of other real class-t images against the pair's real set."""
    from cfe_cli import features
    from cfe_cli import metrics as M

    ref: dict[str, Any] = {"pair": f"{s}:{t}", "n": len(x_all),
                           "fd_inputs_effnetlite0": round(M.frechet_distance(features.embed(x_all, feats),
                                                                             real_feat), 4),
                           "fd_real_effnetlite0": None, "n_real": 0}
    if ref_data is not None:
        other = ref_data.images[ref_data.labels == t_index][:len(x_all)]
        if len(other) >= 2:
            ref["fd_real_effnetlite0"] = round(M.frechet_distance(features.embed(other, feats), real_feat), 4)
            ref["n_real"] = len(other)
    return ref


def _realism(row: dict[str, Any], feats: Any, x: torch.Tensor, x_cf: torch.Tensor, real_feat: torch.Tensor,
             probe: Any = None, t: int = -1) -> None:
    from cfe_cli import features, oracle_effnet
    from cfe_cli import metrics as M

    f_cf = features.embed(x_cf, feats)
    if probe is not None:
        row.update(oracle_effnet.score(probe, f_cf, real_feat, t))
    row["fd_effnetlite0"] = round(M.frechet_distance(f_cf, real_feat), 4)
    kd_mean, kd_std = M.kernel_distance(f_cf, real_feat, subsets=20, subset_size=min(len(f_cf), len(real_feat), 200))
    row["kd_effnetlite0"] = round(kd_mean, 5)
    dev = next(feats.parameters()).device
    d = [features.deep_feature_distance(x[i:i + 64].to(dev), x_cf[i:i + 64].to(dev), feats).cpu()
         for i in range(0, len(x), 64)]
    row["dfd_effnetlite0"] = round(float(torch.cat(d).mean()), 5)


def fid_sha() -> str:
    from cfe_cli import fid

    return fid.INCEPTION_SHA256


def _fid(row: dict[str, Any], net: Any, x_cf: torch.Tensor, real_feat: torch.Tensor) -> None:
    from cfe_cli import fid
    from cfe_cli import metrics as M

    row["fid"] = round(M.frechet_distance(fid.inception_features(x_cf, net), real_feat), 4)


@torch.inference_mode()
def _lpips(row: dict[str, Any], net: Any, x: torch.Tensor, x_cf: torch.Tensor) -> None:
    dev = next(net.parameters()).device
    d = [net(x[i:i + 64].to(dev), x_cf[i:i + 64].to(dev)).cpu() for i in range(0, len(x), 64)]
    row["lpips"] = round(float(torch.cat(d).mean()), 5)


def _identity(row: dict[str, Any], faces: Any, x: torch.Tensor, x_cf: torch.Tensor) -> None:
    """Face verification accuracy (FVA idea) with dlib descriptors; see :mod:`cfe_cli.identity`."""
    d = faces.distance(x, x_cf)
    row["identity_distance_dlib"] = round(float(d.mean()), 5)
    row["fva_dlib"] = round(float((d < faces.threshold).float().mean()), 5)
