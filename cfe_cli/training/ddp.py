"""Data-parallel training under torchrun that reproduces the 1-process run.

Each step every rank draws the same global batch (same seed, same permutation, same augmentation
draws: the augmentation runs on the whole global batch so every sample gets the random numbers it
gets in one process) and keeps its slice, ``torch.tensor_split(global, world)[rank]``: the per-rank
batch is global ÷ world. The loss of a rank is its slice's mean times ``n_rank · world / n_global``,
so DistributedDataParallel's gradient average is the gradient of the global batch's mean loss.

BatchNorm: its batch statistics are taken over the *global* batch as in one process: on GPUs by
``torch.nn.SyncBatchNorm``, on CPU (gloo; SyncBatchNorm is GPU-only) by :class:`GlobalBatchNorm2d`,
which all-reduces the per-channel sums. GroupNorm (the decoders) is per sample and needs nothing.
Without torchrun every function here is the identity.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cfe_cli.distributed import Dist


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover every rank's slice (gloo/CPU stand-in for SyncBatchNorm).

    Statistics from all-reduced sums (differentiable, ``torch.distributed.nn``); running statistics
    updated as BatchNorm2d does (unbiased variance, ``momentum``). Evaluation is plain BatchNorm2d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        # two passes (mean, then squared deviations) as BatchNorm does: E[x²] − E[x]² would cancel digits
        tot = all_reduce(torch.cat([x.sum(dim=(0, 2, 3)), x.new_full((1,), x.numel() / c)]))  # (C + 1,)
        n = tot[-1]
        mean = tot[:c] / n
        var = all_reduce((x - mean[None, :, None, None]).pow(2).sum(dim=(0, 2, 3))) / n  # biased, as BN normalises
        with torch.no_grad():
            self.num_batches_tracked += 1
            m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            self.running_var.mul_(1 - m).add_(var.detach() * n / (n - 1).clamp_min(1), alpha=m)
        y = (x - mean[None, :, None, None]) * torch.rsqrt(var[None, :, None, None] + self.eps)
        return y * self.weight[None, :, None, None] + self.bias[None, :, None, None] if self.affine else y


def _swap_bn(module: nn.Module, cls: type[nn.BatchNorm2d]) -> nn.Module:
    """``module`` with every BatchNorm2d replaced by ``cls`` (same parameters and buffers)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and type(child) is not cls:
            new = cls(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            new.load_state_dict(child.state_dict())
            new.to(child.weight.device if child.affine else child.running_mean.device)
            setattr(module, name, new)
        else:
            _swap_bn(child, cls)
    return module


def wrap(model: nn.Module, d: Dist, device: torch.device) -> nn.Module:
    """The module to run forward passes with: ``model`` itself, or under torchrun its DDP wrapper with
    global-batch BatchNorm (the parameters stay ``model``'s, so saving ``model`` saves the result)."""
    if not d.comm:
        return model
    if device.type == "cuda":
        nn.SyncBatchNorm.convert_sync_batchnorm(model)  # replaces the children in place
    else:
        _swap_bn(model, GlobalBatchNorm2d)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)


def unwrap(model: nn.Module) -> nn.Module:
    """``model`` with plain BatchNorm2d again (what is saved and later loaded)."""
    for name, child in model.named_children():
        if isinstance(child, (GlobalBatchNorm2d, nn.SyncBatchNorm)):
            bn = nn.BatchNorm2d(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            bn.load_state_dict(child.state_dict())
            setattr(model, name, bn.to(child.running_mean.device))
        else:
            unwrap(child)
    return model


def my_slice(n_global: int, d: Dist) -> slice:
    """This rank's rows of a global batch of ``n_global`` (``torch.tensor_split``'s split)."""
    q, r = divmod(n_global, d.world)
    start = d.rank * q + min(d.rank, r)
    return slice(start, start + q + (1 if d.rank < r else 0))


def scale(n_local: int, n_global: int, d: Dist) -> float:
    """Factor on a rank's mean loss so that DDP's averaged gradient is the global batch mean's."""
    return n_local * d.world / n_global if d.comm else 1.0


def global_mean(value: torch.Tensor, n_local: int, n_global: int, d: Dist) -> float:
    """The global batch's mean of a quantity whose local mean is ``value`` (for logging)."""
    v = float(value.detach())
    return d.sum(v * n_local) / n_global if d.comm else v


def slice_batch(s: dict[str, Any], rows: slice, n: int) -> dict[str, Any]:
    """This rank's rows of a sampled global batch of ``n``: ``(n, …)`` tensors sliced, ``(2n, …)``
    ones (two halves of n, e.g. the k and k = 0 passes) sliced in each half, lists item by item."""

    def cut(v: Any) -> Any:
        if isinstance(v, list):
            return [cut(t) for t in v]
        if isinstance(v, torch.Tensor) and v.dim() > 0:
            if v.shape[0] == n:
                return v[rows]
            if v.shape[0] == 2 * n:
                return torch.cat([v[rows], v[n + rows.start:n + rows.stop]])
        return v

    return {k: cut(v) for k, v in s.items()}
