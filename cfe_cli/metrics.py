"""Counterfactual metrics as pure, batched functions.

Every per-sample metric takes whole batches and returns a tensor of shape ``(B,)``; callers
reduce (mean, median, ...). Two helpers are not per sample and say so: :func:`fail_rate`
(a percentage over the batch) and the set-level realism distances :func:`frechet_distance`
and :func:`kernel_distance`, which compare two sets of feature vectors.

Conventions: images are float tensors ``(B, C, H, W)`` in [0, 1] with C = 1 or 3; labels are
long ``(B,)``; a classifier is any ``torch.nn.Module`` mapping images in [0, 1] to logits
``(B, K)`` (normalisation lives inside it). A single-logit ``(B, 1)`` classifier is read as
binary: ``p1 = sigmoid(logit)``, ``p0 = 1 - p1``.

Metrics that call a classifier run it under ``torch.no_grad()``: they are not differentiable.

Protocol (docs/mirror-cfe.md §8, docs/latent-methods.md §4):

- Val.: :func:`validity`; D.Val.: :func:`denoised_validity` (5×5 Gaussian, σ = 1, the
  third-party choice; the paper's kernel is unknown); %Fail: :func:`fail_rate`.
- Proximity: :func:`l1` (mean over pixels and channels in [0, 1]), :func:`l2` (root mean
  square), :func:`sparsity`, :func:`ssim`, :func:`psnr`.
- Cost / faithfulness of the edit: :func:`cout`.
- Realism: :func:`frechet_distance` and :func:`kernel_distance` on features from a feature
  extractor (e.g. ``cfe_cli.features``; report as ``fd_<net>`` / ``kd_<net>``, not FID/KID
  unless the features really are Inception-v3's).
"""

from __future__ import annotations

import sys

import numpy as np
import torch
import torch.nn.functional as F

from cfe_cli.errors import InputError

__all__ = [
    "validity",
    "oracle_validity",
    "gaussian_blur",
    "denoised_validity",
    "fail_rate",
    "l1",
    "l2",
    "sparsity",
    "cout",
    "ssim",
    "psnr",
    "frechet_distance",
    "kernel_distance",
    "peak_memory_mb",
]

ArrayLike = torch.Tensor | np.ndarray


# --------------------------------------------------------------------------------------------
# helpers


def _check_images(x: torch.Tensor, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputError(f"{name} must be a (B, C, H, W) tensor, got {shape}")


def _check_pair(x: torch.Tensor, x_cf: torch.Tensor) -> None:
    _check_images(x, "x")
    _check_images(x_cf, "x_cf")
    if x.shape != x_cf.shape:
        raise InputError(f"x and x_cf differ in shape: {tuple(x.shape)} vs {tuple(x_cf.shape)}")


def _check_labels(labels: torch.Tensor, batch: int, name: str) -> None:
    if labels.dim() != 1 or labels.shape[0] != batch:
        raise InputError(f"{name} must have shape ({batch},), got {tuple(labels.shape)}")


def _probs(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over classes; a single logit is read as a binary sigmoid score. ``(B, K)``."""
    if logits.shape[1] == 1:
        p1 = torch.sigmoid(logits)
        return torch.cat([1 - p1, p1], dim=1)  # (B, 2)
    return logits.softmax(dim=1)


def _gaussian_1d(kernel_size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    coords = torch.arange(kernel_size, dtype=dtype, device=device) - (kernel_size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()  # (k,)


# --------------------------------------------------------------------------------------------
# validity


def validity(logits_or_probs_cf: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Whether each counterfactual is classified as its target (Val.).

    Args:
        logits_or_probs_cf: the classifier's logits (or probabilities) on ``x_cf``; the
            argmax is the same for both. A single column is read as a binary logit
            (class 1 iff the logit is > 0).
        target: the target class of each sample.

    Returns:
        ``True`` where ``argmax == target``.

    Shape:
        logits_or_probs_cf ``(B, K)``, target ``(B,)`` long -> ``(B,)`` bool.

    Example:
        >>> validity(torch.tensor([[0.1, 2.0], [3.0, 0.0]]), torch.tensor([1, 1]))
        tensor([ True, False])
    """
    if logits_or_probs_cf.dim() != 2:
        raise InputError(f"logits must have shape (B, K), got {tuple(logits_or_probs_cf.shape)}")
    _check_labels(target, logits_or_probs_cf.shape[0], "target")
    if logits_or_probs_cf.shape[1] == 1:
        pred = (logits_or_probs_cf[:, 0] > 0).long()
    else:
        pred = logits_or_probs_cf.argmax(dim=1)
    return pred == target.to(pred.device)


def oracle_validity(oracle: torch.nn.Module, x_cf: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Validity judged by an independent classifier (an "oracle") rather than the explained one.

    A counterfactual that fools only the explained classifier (an adversarial example) tends
    to fail here.

    Args:
        oracle: a classifier trained independently of the explained one.
        x_cf: counterfactual images in [0, 1].
        target: the target class of each sample.

    Returns:
        ``True`` where the oracle's argmax on ``x_cf`` equals ``target``.

    Shape:
        x_cf ``(B, C, H, W)``, target ``(B,)`` -> ``(B,)`` bool.
    """
    _check_images(x_cf, "x_cf")
    with torch.no_grad():
        return validity(oracle(x_cf), target)


def gaussian_blur(x: torch.Tensor, kernel_size: int = 5, sigma: float = 1.0) -> torch.Tensor:
    """Blur each channel with a normalised Gaussian kernel (depthwise, reflect padding).

    The 2-D kernel is the outer product of a 1-D Gaussian with itself and is applied as two
    separable depthwise passes; the output has the input's size.

    Args:
        x: images.
        kernel_size: odd side of the square kernel (default 5).
        sigma: standard deviation in pixels (default 1.0).

    Returns:
        The blurred images, same dtype and device as ``x``.

    Shape:
        ``(B, C, H, W)`` -> ``(B, C, H, W)``; needs ``H, W > kernel_size // 2``.
    """
    _check_images(x)
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise InputError(f"kernel_size must be a positive odd integer, got {kernel_size}")
    if sigma <= 0:
        raise InputError(f"sigma must be > 0, got {sigma}")
    B, C, H, W = x.shape
    pad = kernel_size // 2
    if pad >= H or pad >= W:
        raise InputError(f"image {H}x{W} is too small for a {kernel_size}x{kernel_size} blur")
    g = _gaussian_1d(kernel_size, sigma, x.dtype, x.device)
    out = F.pad(x, (pad, pad, pad, pad), mode="reflect")  # (B, C, H+2p, W+2p)
    out = F.conv2d(out, g.view(1, 1, 1, -1).expand(C, 1, 1, kernel_size), groups=C)  # (B, C, H+2p, W)
    out = F.conv2d(out, g.view(1, 1, -1, 1).expand(C, 1, kernel_size, 1), groups=C)  # (B, C, H, W)
    return out


def denoised_validity(
    classifier: torch.nn.Module,
    x_cf: torch.Tensor,
    target: torch.Tensor,
    kernel_size: int = 5,
    sigma: float = 1.0,
) -> torch.Tensor:
    """Denoised validity (D.Val.): is ``x_cf`` still the target after a Gaussian blur?

    A blur removes high-frequency, adversarial-looking perturbations, so counterfactuals
    that only work through such noise lose their validity here. The paper does not give the
    kernel; the defaults (5×5, σ = 1) are the choice of third-party reimplementations
    (docs/mirror-cfe.md §8).

    Args:
        classifier: the explained classifier (images in [0, 1] -> logits).
        x_cf: counterfactual images in [0, 1].
        target: the target class of each sample.
        kernel_size: side of the Gaussian kernel (default 5).
        sigma: its standard deviation in pixels (default 1.0).

    Returns:
        ``True`` where ``argmax classifier(blur(x_cf)) == target``.

    Shape:
        x_cf ``(B, C, H, W)``, target ``(B,)`` -> ``(B,)`` bool.
    """
    with torch.no_grad():
        return validity(classifier(gaussian_blur(x_cf, kernel_size, sigma)), target)


def fail_rate(found: torch.Tensor) -> float:
    """%Fail: the percentage of inputs for which no valid counterfactual was found.

    Unlike the other metrics this reduces over the batch (it is a rate, not a per-sample
    value): ``100 * mean(~found)``.

    Args:
        found: ``True`` where a valid counterfactual exists for the input.

    Returns:
        A percentage in [0, 100].

    Shape:
        found ``(B,)`` bool, B >= 1 -> float.
    """
    if found.dim() != 1 or found.numel() == 0:
        raise InputError(f"fail_rate needs a non-empty (B,) tensor, got shape {tuple(found.shape)}")
    return float((~found.bool()).float().mean()) * 100.0


# --------------------------------------------------------------------------------------------
# proximity


def l1(x: torch.Tensor, x_cf: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference over pixels and channels (pixel scale [0, 1]).

    Args:
        x: source images.
        x_cf: counterfactuals.

    Returns:
        ``mean |x_cf - x|`` per sample, in [0, 1].

    Shape:
        ``(B, C, H, W)`` twice -> ``(B,)``.
    """
    _check_pair(x, x_cf)
    return (x_cf - x).abs().flatten(1).mean(dim=1)


def l2(x: torch.Tensor, x_cf: torch.Tensor) -> torch.Tensor:
    """Root-mean-square difference over pixels and channels (pixel scale [0, 1]).

    This is the Euclidean norm ``||x_cf - x||_2`` divided by ``sqrt(C * H * W)``, so it does
    not grow with the image size and is comparable with :func:`l1`.

    Args:
        x: source images.
        x_cf: counterfactuals.

    Returns:
        ``sqrt(mean (x_cf - x)^2)`` per sample, in [0, 1].

    Shape:
        ``(B, C, H, W)`` twice -> ``(B,)``.
    """
    _check_pair(x, x_cf)
    return (x_cf - x).pow(2).flatten(1).mean(dim=1).sqrt()


def sparsity(x: torch.Tensor, x_cf: torch.Tensor, tau: float = 0.05) -> torch.Tensor:
    """Fraction of pixels changed by the edit (lower = sparser).

    A pixel counts as changed if any of its channels moved by more than ``tau``.

    Args:
        x: source images.
        x_cf: counterfactuals.
        tau: change threshold on the [0, 1] pixel scale (default 0.05).

    Returns:
        The fraction of changed pixels per sample, in [0, 1].

    Shape:
        ``(B, C, H, W)`` twice -> ``(B,)``.
    """
    _check_pair(x, x_cf)
    changed = ((x_cf - x).abs() > tau).any(dim=1)  # (B, H, W)
    return changed.flatten(1).float().mean(dim=1)


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) per sample.

    Gaussian window 11×11, σ = 1.5, ``K1 = 0.01``, ``K2 = 0.03``; the SSIM map is computed on
    the "valid" region (no padding) of each channel and averaged over the map and channels,
    as in Wang et al. and scikit-image. (torchmetrics 1.9 instead averages a reflect-padded
    full-size map, which differs by about 1e-3; on the valid region the two agree exactly.)

    Args:
        x: first images.
        y: second images.
        data_range: value range of the pixels (default 1.0).

    Returns:
        SSIM per sample, 1 for identical images (computed in float64, returned in the
        input's dtype).

    Shape:
        ``(B, C, H, W)`` twice with H, W >= 11 -> ``(B,)``.
    """
    _check_pair(x, y)
    B, C, H, W = x.shape
    k, sigma = 11, 1.5
    if H < k or W < k:
        raise InputError(f"ssim needs images of at least {k}x{k}, got {H}x{W}")
    out_dtype = x.dtype if x.is_floating_point() else torch.float32
    # float64 inside (MPS has none): the local variances E[x^2] - E[x]^2 cancel badly in float32
    work = torch.float32 if x.device.type == "mps" else torch.float64
    x, y = x.to(work), y.to(work)
    g = _gaussian_1d(k, sigma, work, x.device)
    stack = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # (B, 5C, H, W)
    n = stack.shape[1]
    stack = F.conv2d(stack, g.view(1, 1, 1, -1).expand(n, 1, 1, k), groups=n)
    stack = F.conv2d(stack, g.view(1, 1, -1, 1).expand(n, 1, k, 1), groups=n)  # (B, 5C, H-10, W-10)
    mu_x, mu_y, e_xx, e_yy, e_xy = stack.split(C, dim=1)
    var_x, var_y, cov = e_xx - mu_x**2, e_yy - mu_y**2, e_xy - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.flatten(1).mean(dim=1).to(out_dtype)


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per sample: ``10 log10(data_range^2 / MSE)``.

    Args:
        x: first images.
        y: second images.
        data_range: value range of the pixels (default 1.0).

    Returns:
        PSNR per sample; ``+inf`` where the images are identical.

    Shape:
        ``(B, C, H, W)`` twice -> ``(B,)``.
    """
    _check_pair(x, y)
    mse = (x - y).pow(2).flatten(1).mean(dim=1)
    return 10 * torch.log10(data_range**2 / mse)


# --------------------------------------------------------------------------------------------
# COUT


def cout(
    classifier: torch.nn.Module,
    x: torch.Tensor,
    x_cf: torch.Tensor,
    source: torch.Tensor,
    target: torch.Tensor,
    steps: int = 20,
    order: torch.Tensor | None = None,
) -> torch.Tensor:
    """COUT, the counterfactual transition score (ACE / CECAS protocol).

    Pixels of ``x_cf`` are pasted into ``x`` in order of decreasing change ``|x_cf - x|``
    (summed over channels: a pixel moves with all its channels), in ``steps`` equal chunks.
    At each of the ``steps + 1`` stages (0 %, 1/steps, ..., 100 % inserted) the classifier
    scores ``p_target - p_source``; COUT is the trapezoid area under that curve over the
    inserted fraction in [0, 1]. An edit whose most-changed pixels carry the class change
    scores near +1; one that helps only once complete scores lower.

    The classifier runs once per stage on the whole batch (``steps + 1`` passes of ``B``).

    Args:
        classifier: the explained classifier (images in [0, 1] -> logits).
        x: source images.
        x_cf: counterfactuals.
        source: the source class of each sample.
        target: the target class of each sample.
        steps: number of insertion chunks (default 20; ACE uses about 50).
        order: optional explicit insertion order per sample, a permutation of
            ``0 .. H*W - 1`` (flattened pixel indices, first inserted first); default is by
            decreasing change (ties by index).

    Returns:
        The normalised area per sample, in [-1, 1].

    Shape:
        x, x_cf ``(B, C, H, W)``; source, target ``(B,)`` long; order ``(B, H*W)`` long
        -> ``(B,)``.
    """
    _check_pair(x, x_cf)
    B, C, H, W = x.shape
    _check_labels(source, B, "source")
    _check_labels(target, B, "target")
    if steps < 1:
        raise InputError(f"steps must be >= 1, got {steps}")
    n_pix = H * W
    if order is None:
        change = (x_cf - x).abs().sum(dim=1).flatten(1)  # (B, H*W)
        order = torch.argsort(change, dim=1, descending=True, stable=True)
    else:
        if order.shape != (B, n_pix):
            raise InputError(f"order must have shape ({B}, {n_pix}), got {tuple(order.shape)}")
        order = order.to(device=x.device, dtype=torch.long)
        expected = torch.arange(n_pix, device=x.device).expand(B, n_pix)
        if not torch.equal(order.sort(dim=1).values, expected):
            raise InputError("order must hold a permutation of 0 .. H*W-1 in every row")
    positions = torch.arange(n_pix, device=x.device).expand(B, n_pix)
    rank = torch.empty_like(order).scatter_(1, order, positions)  # rank[b, pixel] = insertion index
    counts = [round(s * n_pix / steps) for s in range(steps + 1)]
    idx = torch.arange(B, device=x.device)
    src, tgt = source.to(x.device), target.to(x.device)
    scores = []
    with torch.no_grad():
        for n in counts:
            mask = (rank < n).view(B, 1, H, W)
            probs = _probs(classifier(torch.where(mask, x_cf, x)))  # (B, K)
            scores.append(probs[idx, tgt] - probs[idx, src])
    curve = torch.stack(scores, dim=1)  # (B, steps+1)
    frac = torch.tensor(counts, dtype=curve.dtype, device=curve.device) / n_pix  # (steps+1,)
    widths = frac[1:] - frac[:-1]  # (steps,)
    return ((curve[:, 1:] + curve[:, :-1]) / 2 * widths).sum(dim=1)


# --------------------------------------------------------------------------------------------
# realism: distances between feature sets


def _features64(feat: ArrayLike, name: str) -> torch.Tensor:
    t = torch.as_tensor(feat).detach().to(device="cpu", dtype=torch.float64)
    if t.dim() != 2 or t.shape[0] < 2:
        raise InputError(f"{name} must be an (N, D) feature matrix with N >= 2, got {tuple(t.shape)}")
    return t


def _sqrt_psd(m: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix via eigh (tiny negatives -> 0)."""
    m = (m + m.T) / 2
    vals, vecs = torch.linalg.eigh(m)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


def frechet_distance(feat_a: ArrayLike, feat_b: ArrayLike) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets.

    ``||mu_a - mu_b||^2 + tr(S_a) + tr(S_b) - 2 tr((S_a^1/2 S_b S_a^1/2)^1/2)`` with unbiased
    covariances, in float64. The trace of the matrix square root is computed from the
    eigenvalues of the symmetric PSD product ``S_a^1/2 S_b S_a^1/2`` (``torch.linalg.eigh``,
    negative round-off clamped to 0), which needs no scipy and stays real. With
    Inception-v3 pool features this is FID; with other networks report it under the
    network's name (e.g. ``fd_effnetlite0``). Small sets give a biased (larger) value:
    compare values computed with the same set sizes only.

    Args:
        feat_a: first feature set (tensor or array).
        feat_b: second feature set.

    Returns:
        The distance, >= 0 (0 for identical sets up to round-off).

    Shape:
        ``(N, D)`` and ``(M, D)`` with N, M >= 2 -> float.
    """
    a, b = _features64(feat_a, "feat_a"), _features64(feat_b, "feat_b")
    if a.shape[1] != b.shape[1]:
        raise InputError(f"feature sizes differ: {a.shape[1]} vs {b.shape[1]}")
    mu_a, mu_b = a.mean(dim=0), b.mean(dim=0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)  # (D, D) each, unbiased
    cov_a, cov_b = cov_a.reshape(a.shape[1], a.shape[1]), cov_b.reshape(b.shape[1], b.shape[1])
    root_a = _sqrt_psd(cov_a)
    prod = root_a @ cov_b @ root_a
    eig = torch.linalg.eigvalsh((prod + prod.T) / 2)
    tr_covmean = eig.clamp(min=0).sqrt().sum()
    d = (mu_a - mu_b).pow(2).sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2 * tr_covmean
    return max(float(d), 0.0)


def kernel_distance(
    feat_a: ArrayLike,
    feat_b: ArrayLike,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    coef0: float = 1.0,
    seed: int = 0,
) -> tuple[float, float]:
    """Kernel distance (KID-style): unbiased MMD² with a polynomial kernel, over random subsets.

    ``k(u, v) = (u·v / D + coef0) ^ degree`` (the KID kernel for the defaults). For each of
    ``subsets`` draws, ``subset_size`` rows of each set are sampled without replacement and
    the unbiased MMD² estimate is taken (diagonal terms excluded); the mean and the
    population standard deviation over the draws are returned. The estimate is unbiased, so
    it can be slightly negative for matching distributions; when the two sets share rows
    (e.g. identical sets), rows drawn into both subsets bias it slightly below 0. With
    Inception-v3 features this is KID;
    with others report it under the network's name (e.g. ``kd_effnetlite0``).

    Args:
        feat_a: first feature set (tensor or array).
        feat_b: second feature set.
        subsets: number of random subsets (default 100).
        subset_size: rows per subset (default 1000), clamped to ``min(N, M)``.
        degree: polynomial degree (default 3).
        coef0: kernel offset (default 1).
        seed: seed of the subset sampling, so results repeat (default 0).

    Returns:
        ``(mean, std)`` of MMD² over the subsets.

    Shape:
        ``(N, D)`` and ``(M, D)`` with N, M >= 2 -> ``(float, float)``.
    """
    a, b = _features64(feat_a, "feat_a"), _features64(feat_b, "feat_b")
    if a.shape[1] != b.shape[1]:
        raise InputError(f"feature sizes differ: {a.shape[1]} vs {b.shape[1]}")
    if subsets < 1:
        raise InputError(f"subsets must be >= 1, got {subsets}")
    m = min(subset_size, a.shape[0], b.shape[0])
    if m < 2:
        raise InputError(f"subset_size must be >= 2, got {subset_size}")
    dim = a.shape[1]
    gen = torch.Generator().manual_seed(seed)
    off_diag = m * (m - 1)
    values = []
    for _ in range(subsets):  # one draw per iteration; each draw is fully vectorised
        sa = a[torch.randperm(a.shape[0], generator=gen)[:m]]  # (m, D)
        sb = b[torch.randperm(b.shape[0], generator=gen)[:m]]  # (m, D)
        k_aa = (sa @ sa.T / dim + coef0) ** degree  # (m, m)
        k_bb = (sb @ sb.T / dim + coef0) ** degree
        k_ab = (sa @ sb.T / dim + coef0) ** degree
        mmd = (
            (k_aa.sum() - k_aa.diagonal().sum()) / off_diag
            + (k_bb.sum() - k_bb.diagonal().sum()) / off_diag
            - 2 * k_ab.mean()
        )
        values.append(mmd)
    v = torch.stack(values)
    return float(v.mean()), float(v.std(correction=0))


# --------------------------------------------------------------------------------------------
# resources


def peak_memory_mb(device: torch.device | str) -> float | None:
    """Peak memory in MiB, for benchmark reports.

    - CUDA: ``torch.cuda.max_memory_allocated(device)``, the peak of tensors allocated by
      PyTorch on that GPU since the start or the last ``torch.cuda.reset_peak_memory_stats``.
    - CPU: the whole process's peak resident set size (``resource.getrusage(...).ru_maxrss``;
      KiB on Linux, bytes on macOS); it never decreases and counts everything in the process,
      not only tensors.

    Args:
        device: the device the work ran on.

    Returns:
        The peak in MiB, or ``None`` where it cannot be measured (other device types, CUDA
        not available, or no ``resource`` module, e.g. on Windows).
    """
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            return None
        return torch.cuda.max_memory_allocated(dev) / 2**20
    if dev.type == "cpu":
        try:
            import resource
        except ImportError:
            return None
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 2**10
    return None
