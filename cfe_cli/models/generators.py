"""Decoders and discriminators.

``MirrorDecoder`` maps the classifier's last feature map ``(B, C, h, w)`` back to an
image ``(B, C_img, R, R)`` in [0, 1] (the Mirror-CFE generator G; the frozen classifier
is the encoder). ``PatchDiscriminator`` scores image patches as real or decoded.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


@dataclass(frozen=True)
class DecoderConfig:
    """Rebuilds a :class:`MirrorDecoder` (stored in the safetensors metadata)."""

    feat_channels: int = 128
    feat_size: int = 7
    out_channels: int = 1
    resolution: int = 28
    width: int = 64
    min_width: int = 32
    # skip-connection controller (SSC = SPE + CSP): the channels and sizes of the classifier's
    # earlier stages fed to the decoder (``GAPClassifier.stages`` minus the last); () = no skips
    skip_channels: tuple[int, ...] = ()
    skip_sizes: tuple[int, ...] = ()
    # the first skip is the classifier's stem (its full-resolution map, ``stages(x, stem=True)``)
    skip_stem: bool = False
    # CSP thresholds: rho(k) = clip(1 - k, rho_low, rho_high) (spec §5; used only with skips)
    rho_low: float = 0.1
    rho_high: float = 0.5
    # how SPE's D_i brings u_i from f_k's size to the skip's: "nearest" (the decoders shipped so far:
    # constant blocks of the feature map's cell size) or "bilinear" (smooth, no block edges)
    spe_upsample: str = "nearest"
    # the grid SPE's B_i pools each skip to (and f_k is resized to) before D_i: 0 = f_k's own size
    # (the spec's B_i); e.g. 16 on an 8x8 map gives D_i the source's skip in 2x finer cells (never
    # finer than the skip itself). No parameters of its own: the same D_i runs on the finer grid
    spe_grid: int = 0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> DecoderConfig:
        known = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)  # type: ignore[arg-type]


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, c // 4), c)


class ResBlock(nn.Module):
    """Pre-activation residual block with GroupNorm (no batch statistics: decoding one
    image or a thousand gives the same pixels)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_norm(c), nn.SiLU(), nn.Conv2d(c, c, 3, 1, 1),
                                  _norm(c), nn.SiLU(), nn.Conv2d(c, c, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


SPE_UPSAMPLE = ("nearest", "bilinear")


def _resize(size: int, mode: str) -> nn.Upsample:
    if mode not in SPE_UPSAMPLE:
        raise ValueError(f"unknown SPE upsampling '{mode}'; available: {', '.join(SPE_UPSAMPLE)}")
    return nn.Upsample(size=(size, size), mode=mode, **({"align_corners": False} if mode == "bilinear" else {}))


class MirrorDecoder(nn.Module):
    """G: feature map -> image.

    Shape: ``(B, feat_channels, feat_size, feat_size) -> (B, out_channels, resolution, resolution)``.

    With ``config.skip_channels`` it also takes the source's earlier-stage features and the CSP
    mask (the paper's skip-connection controller, spec §5): per skip i, SPE decodes
    u_i = D_i(concat(B_i(f_s^i), f_k)) (B_i pools the skip to f_k's size, D_i brings it back),
    and the decoder uses f̃_i = (1 − M)⊙f_s^i + M⊙u_i, so outside the class-relevant region
    M the source's own features pass through unchanged. ``forward(f, skips, mask)``:
    ``skips`` the list of ``(B, skip_channels[i], s_i, s_i)``, ``mask (B, 1, h, w)`` in {0, 1}.
    """

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.config = c = config
        ups = max(0, round(math.log2(c.resolution / c.feat_size)))
        if len(c.skip_channels) != len(c.skip_sizes):
            raise ValueError("skip_channels and skip_sizes must have the same length")
        if not c.skip_channels:
            layers: list[nn.Module] = [nn.Conv2d(c.feat_channels, c.width, 3, 1, 1), ResBlock(c.width),
                                       ResBlock(c.width)]
            w = c.width
            for _ in range(ups):
                w_next = max(c.min_width, w // 2)
                layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(w, w_next, 3, 1, 1),
                           ResBlock(w_next)]
                w = w_next
            layers += [_norm(w), nn.SiLU(), nn.Conv2d(w, c.out_channels, 3, 1, 1)]
            self.net = nn.Sequential(*layers)
            return
        self.inp = nn.Sequential(nn.Conv2d(c.feat_channels, c.width, 3, 1, 1), ResBlock(c.width), ResBlock(c.width))
        # SPE per skip: B_i (pool to f_k's size + 1x1), D_i (concat with f_k -> conv -> resize -> conv)
        self.spe_pool = nn.ModuleList(nn.Conv2d(ci, ci, 1) for ci in c.skip_channels)
        self.spe_dec = nn.ModuleList(
            nn.Sequential(nn.Conv2d(ci + c.feat_channels, c.width, 3, 1, 1), ResBlock(c.width),
                          _resize(si, c.spe_upsample), nn.Conv2d(c.width, ci, 3, 1, 1))
            for ci, si in zip(c.skip_channels, c.skip_sizes, strict=True))
        self.ups = nn.ModuleList()
        self.fuse = nn.ModuleDict()
        size, w = c.feat_size, c.width
        for _ in range(ups):
            w_next = max(c.min_width, w // 2)
            size *= 2
            self.ups.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(w, w_next, 3, 1, 1)))
            if size in c.skip_sizes:
                ci = c.skip_channels[c.skip_sizes.index(size)]
                self.fuse[str(size)] = nn.Sequential(nn.Conv2d(w_next + ci, w_next, 3, 1, 1), ResBlock(w_next))
            else:
                self.fuse[str(size)] = ResBlock(w_next)
            w = w_next
        missing = set(c.skip_sizes) - {c.feat_size * 2 ** (i + 1) for i in range(ups)}
        if missing:
            raise ValueError(f"skip sizes {sorted(missing)} are not on the decoder's upsampling path")
        self.out = nn.Sequential(_norm(w), nn.SiLU(), nn.Conv2d(w, c.out_channels, 3, 1, 1))
        self._half_weights: dict[int, tuple[Any, torch.Tensor]] = {}

    @property
    def uses_skips(self) -> bool:
        return bool(self.config.skip_channels)

    def grows_from(self, other: MirrorDecoder) -> bool:
        """Whether :meth:`adopt` can start this skip decoder from ``other``: the same decoder with
        a subset of its skips (e.g. one trained without the stem skip, or a skip-free one)."""
        a, b = self.config, other.config
        # no parameters of their own (spe_upsample: the same modules, resized another way)
        free = ("skip_channels", "skip_sizes", "skip_stem", "rho_low", "rho_high", "spe_upsample", "spe_grid")
        same = {k: v for k, v in a.to_dict().items() if k not in free}
        theirs = {k: v for k, v in b.to_dict().items() if k not in free}
        pairs = set(zip(a.skip_channels, a.skip_sizes, strict=True))
        return same == theirs and self.uses_skips and set(zip(b.skip_channels, b.skip_sizes, strict=True)) <= pairs

    @torch.no_grad()
    def adopt(self, other: MirrorDecoder) -> None:
        """Start from ``other``, a trained decoder with a subset of this one's skips (or other CSP thresholds), so that
        this decoder computes exactly what ``other`` does until training teaches it to use the
        new skips (unless the SPE resize mode changes, which only changes how u_i is brought to
        each skip's size): shared modules are copied (skip modules matched by size), and where a new
        skip joins the decoder path its fusing conv passes the path through unchanged and
        gives the new skip zero weight (its SPE modules start fresh)."""
        if not self.grows_from(other):
            raise ValueError(f"cannot grow {self.config} from {other.config}")
        mine = self.state_dict()
        theirs = other.state_dict()
        if not other.uses_skips:  # the skip-free layout: net = inp (3), (upsample, conv, block) per octave, out (3)
            octaves = len(self.ups)
            sizes = list(self.fuse)
            where = {0: "inp.0", 1: "inp.1", 2: "inp.2", 3 + 3 * octaves: "out.0", 5 + 3 * octaves: "out.2"}
            for j in range(octaves):
                where[4 + 3 * j] = f"ups.{j}.1"
                where[5 + 3 * j] = f"fuse.{sizes[j]}"
            theirs = {f"{where[int(n.split('.')[1])]}.{n.split('.', 2)[2]}": v for n, v in theirs.items()}
        idx = {size: i for i, size in enumerate(self.config.skip_sizes)}
        rename = {f"spe_{part}.{j}.": f"spe_{part}.{idx[size]}."
                  for j, size in enumerate(other.config.skip_sizes) for part in ("pool", "dec")}
        new_fuse = set(self.config.skip_sizes) - set(other.config.skip_sizes)
        for name, v in theirs.items():
            target = name
            for a, b in rename.items():
                if name.startswith(a):
                    target = b + name[len(a):]
            size = name.split(".")[1] if name.startswith("fuse.") else None
            if size is not None and int(size) in new_fuse:  # ResBlock -> Sequential(conv, ResBlock)
                target = f"fuse.{size}.1." + name.split(".", 2)[2]
            mine[target] = v
        for size in new_fuse:
            conv = self.fuse[str(size)][0]
            w = torch.zeros_like(conv.weight)
            c = w.shape[0]
            w[torch.arange(c), torch.arange(c), 1, 1] = 1.0  # identity on the path, zero on the new skip
            mine[f"fuse.{size}.0.weight"] = w
            mine[f"fuse.{size}.0.bias"] = torch.zeros_like(conv.bias)
        self.load_state_dict(mine)

    def _spe_grid(self, f: torch.Tensor, s: torch.Tensor) -> int:
        return min(self.config.spe_grid or f.shape[-1], s.shape[-1])

    def source_context(self, f: torch.Tensor, skips: list[torch.Tensor]) -> list[torch.Tensor]:
        """What every decode of one source shares, per skip: B_i(f_s^i) through the skip's half of
        D_i's first convolution (plus its bias). ``f`` is any map of f_k's shape (only its size is used).

        Shape: ``skips[i] (B, C_i, s_i, s_i)`` -> ``(B, width, g, g)`` each (g: the SPE grid).
        """
        out = []
        for s, pool, dec in zip(skips, self.spe_pool, self.spe_dec, strict=True):
            g = self._spe_grid(f, s)
            b = pool(nn.functional.adaptive_avg_pool2d(s, (g, g)))
            conv = dec[0]
            out.append(nn.functional.conv2d(b, conv.weight[:, :b.shape[1]], conv.bias, padding=conv.padding))
        return out

    def blended_skips(self, f: torch.Tensor, skips: list[torch.Tensor], mask: torch.Tensor,
                      context: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """SPE + CSP blend: f̃_i = (1 − M)⊙f_s^i + M⊙D_i(concat(B_i(f_s^i), f_k)), per skip
        (B_i pools to f_k's size, or to ``config.spe_grid`` with f_k resized to it). ``context``:
        :meth:`source_context` of these skips, computed once per source and reused by every k
        (the convolution over the concatenation is split into its two halves; same result up to
        float summation order)."""
        out = []
        mode = self.config.spe_upsample
        for i, (s, pool, dec) in enumerate(zip(skips, self.spe_pool, self.spe_dec, strict=True)):
            g = self._spe_grid(f, s)
            fg = f if g == f.shape[-1] else nn.functional.interpolate(
                f, size=(g, g), mode=mode, **({"align_corners": False} if mode == "bilinear" else {}))
            if context is None:
                u = dec(torch.cat([pool(nn.functional.adaptive_avg_pool2d(s, (g, g))), fg], 1))
            else:
                conv = dec[0]
                w = conv.weight[:, s.shape[1]:]
                if not torch.is_grad_enabled():  # inference: the f_k half as its own contiguous weight, kept
                    key = (i, w.dtype, w.data_ptr(), w._version)
                    if self._half_weights.get(i, (None,))[0] != key:
                        self._half_weights[i] = (key, w.contiguous())
                    w = self._half_weights[i][1]
                h = context[i] + nn.functional.conv2d(fg, w, None, padding=conv.padding)
                u = dec[1:](h)
            m = nn.functional.interpolate(mask.to(s.dtype), size=s.shape[-2:], mode="nearest")
            out.append(s + m * (u - s))
        return out

    def forward(self, f: torch.Tensor, skips: list[torch.Tensor] | None = None,
                mask: torch.Tensor | None = None, context: list[torch.Tensor] | None = None) -> torch.Tensor:
        if not self.uses_skips:
            x = self.net(f)
        else:
            if skips is None or mask is None:
                raise ValueError("this decoder uses skip connections: pass the source's skip features and the mask")
            by_size = {int(s.shape[-1]): s for s in self.blended_skips(f, skips, mask, context)}
            h = self.inp(f)
            for up, (size, fuse) in zip(self.ups, self.fuse.items(), strict=True):
                h = up(h)
                h = fuse(torch.cat([h, by_size[int(size)]], 1)) if int(size) in by_size else fuse(h)
            x = self.out(h)
        if x.shape[-1] != self.config.resolution:
            x = nn.functional.interpolate(x, size=(self.config.resolution,) * 2, mode="bilinear", align_corners=False)
        return torch.sigmoid(x)


class PatchDiscriminator(nn.Module):
    """Spectral-normalised PatchGAN: an image ``(B, C, R, R)`` -> patch logits ``(B, 1, r, r)``.

    With ``num_classes`` > 0 it is class-conditional by projection (Miyato & Koyama, 2018):
    every patch logit gains ``<e_y, h_ij>``, the inner product of the class embedding with the
    patch's features, so a patch must look real *for class y* (``forward(x, y)``, ``y`` (B,)).
    """

    def __init__(self, in_channels: int, resolution: int, width: int = 64, num_classes: int = 0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c, r = in_channels, resolution
        w = width
        while r > 8:
            layers += [spectral_norm(nn.Conv2d(c, w, 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True)]
            c, r, w = w, r // 2, min(w * 2, 256)
        layers += [spectral_norm(nn.Conv2d(c, c, 3, 1, 1)), nn.LeakyReLU(0.2, inplace=True)]
        self.body = nn.Sequential(*layers)
        self.out = spectral_norm(nn.Conv2d(c, 1, 3, 1, 1))
        self.embed = spectral_norm(nn.Embedding(num_classes, c)) if num_classes > 0 else None

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.body(x * 2 - 1)
        logit = self.out(h)
        if self.embed is not None:
            if y is None:
                raise ValueError("a class-conditional discriminator needs the classes y (B,)")
            logit = logit + (self.embed(y)[:, :, None, None] * h).sum(1, keepdim=True)
        return logit


# ----------------------------------------------------------------------------- VAE


@dataclass(frozen=True)
class VAEConfig:
    """Rebuilds a :class:`ConvVAE`. ``widths`` are the encoder's stride-2 stages."""

    in_channels: int = 1
    resolution: int = 28
    latent_dim: int = 16
    widths: tuple[int, ...] = (32, 64, 128)
    beta: float = 1.0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> VAEConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if "widths" in known:
            known["widths"] = tuple(known["widths"])  # type: ignore[arg-type]
        return cls(**known)  # type: ignore[arg-type]


def default_vae_config(in_channels: int, resolution: int) -> VAEConfig:
    """Latent 16 for 28² grey, 32 for 28² colour, 128 for faces (one more stage per octave)."""
    if resolution <= 32:
        return VAEConfig(in_channels, resolution, 16 if in_channels == 1 else 32, (32, 64, 128))
    stages = max(3, round(math.log2(resolution / 4)))
    widths = tuple(min(32 * 2**i, 256) for i in range(stages))
    return VAEConfig(in_channels, resolution, 128, widths)


class ConvVAE(nn.Module):
    """Convolutional VAE with the ``encode``/``decode`` contract of the latent methods.

    Shape: ``encode``: ``(B, C, R, R) -> (mu (B, D), logvar (B, D))``;
    ``decode``: ``(B, D) -> (B, C, R, R)`` in [0, 1].
    """

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = c = config
        sizes = [c.resolution]
        for _ in c.widths:
            sizes.append((sizes[-1] + 1) // 2)  # 28 -> 14 -> 7 -> 4
        self.sizes = sizes
        enc: list[nn.Module] = []
        ch = c.in_channels
        for w in c.widths:
            enc += [nn.Conv2d(ch, w, 3, 2, 1), nn.BatchNorm2d(w), nn.LeakyReLU(0.2, inplace=True)]
            ch = w
        self.encoder = nn.Sequential(*enc, nn.Flatten())
        flat = ch * sizes[-1] ** 2
        self.mu = nn.Linear(flat, c.latent_dim)
        self.logvar = nn.Linear(flat, c.latent_dim)
        self.fc = nn.Linear(c.latent_dim, flat)
        dec: list[nn.Module] = []
        for i, w in enumerate(reversed(c.widths)):
            w_out = c.widths[-i - 2] if i + 1 < len(c.widths) else max(16, c.widths[0] // 2)
            dec += [nn.Upsample(size=(sizes[-i - 2],) * 2, mode="nearest"), nn.Conv2d(w, w_out, 3, 1, 1),
                    nn.BatchNorm2d(w_out), nn.LeakyReLU(0.2, inplace=True)]
        dec += [nn.Conv2d(w_out, c.in_channels, 3, 1, 1)]
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x * 2 - 1)
        return self.mu(h), self.logvar(h).clamp(-10, 10)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        c = self.config
        h = self.fc(z).view(z.shape[0], c.widths[-1], self.sizes[-1], self.sizes[-1])
        return self.decoder(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decode_logits(z))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x)[0])


# ----------------------------------------------------------------------------- attribute-conditional VAE

# AttGAN's 13 CelebA attributes (He et al., 2019), the generator GCI used on faces.
ATTGAN_ATTRIBUTES = ("Bald", "Bangs", "Black_Hair", "Blond_Hair", "Brown_Hair", "Bushy_Eyebrows", "Eyeglasses",
                     "Male", "Mouth_Slightly_Open", "Mustache", "No_Beard", "Pale_Skin", "Young")


@dataclass(frozen=True)
class CondVAEConfig(VAEConfig):
    """Rebuilds a :class:`CondVAE`: a :class:`VAEConfig` plus the attribute names it is conditioned on."""

    attributes: tuple[str, ...] = ATTGAN_ATTRIBUTES

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> CondVAEConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        for k in ("widths", "attributes"):
            if k in known:
                known[k] = tuple(known[k])  # type: ignore[arg-type]
        return cls(**known)  # type: ignore[arg-type]


class CondVAE(ConvVAE):
    """Attribute-conditional VAE ``G(E(x), A)`` for GCI on faces, with its attribute classifier.

    The decoder reads the latent code and an attribute vector ``A`` in [-1, 1] (−1 absent,
    +1 present; the training range). ``attribute_net`` is a multi-label classifier of the
    same attributes (the plain ``convnet`` architecture); it gives ``A0`` for images without
    labels and, frozen, teaches the decoder to obey edited attributes during training.

    Shape: ``encode``: ``(B, C, R, R) -> (mu, logvar) (B, D)``; ``decode(z (B, D), a (B, A))
    -> (B, C, R, R)`` in [0, 1]; ``estimate_attributes``: ``(B, C, R, R) -> (B, A)`` in (−1, 1).
    """

    def __init__(self, config: CondVAEConfig) -> None:
        from cfe_cli.models.classifiers import GAPClassifier, make_config

        super().__init__(config)
        c = config
        self.fc = nn.Linear(c.latent_dim + len(c.attributes), self.fc.out_features)
        mean, std = (0.5,) * c.in_channels, (0.5,) * c.in_channels
        self.attribute_net = GAPClassifier(make_config("convnet", in_channels=c.in_channels,
                                                       num_classes=len(c.attributes), resolution=c.resolution,
                                                       mean=mean, std=std))

    @property
    def attribute_names(self) -> list[str]:
        return list(self.config.attributes)  # type: ignore[attr-defined]

    def decode_logits(self, z: torch.Tensor, a: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        if a is None:
            raise ValueError("CondVAE.decode needs the attribute vector a (B, A)")
        return super().decode_logits(torch.cat([z, a], dim=1))

    def decode(self, z: torch.Tensor, a: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        return torch.sigmoid(self.decode_logits(z, a))

    def estimate_attributes(self, x: torch.Tensor) -> torch.Tensor:
        """``A0`` of unlabelled images: ``2·σ(attribute logits) − 1``."""
        return torch.sigmoid(self.attribute_net(x)) * 2 - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x)[0], self.estimate_attributes(x))
