"""Mirror-CFE: "Looking in the Mirror: A Faithful Counterfactual Explanation Method for
Interpreting Deep Image Classification Models", Chowdhury et al., ICCV 2025, arXiv:2509.16822.

Space edited: the classifier's own last feature map. The pairwise decision boundary of
the linear head acts as a mirror; the source features are walked towards their mirror
image and decoded by a learned decoder. Pure, batched tensor functions; decisions on the
paper's unknowns are in docs/methods/mirror.md.

Notation (f, z, W, b, w_m, b_m, margin, f_r, f_k): see :mod:`cfe_cli.geometry`, where the reflection lives.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch

from cfe_cli.errors import InputError
from cfe_cli.geometry import (  # noqa: F401  (re-exported: the method's functions)
    intended_logits,
    interpolate,
    interpolate_grid,
    k_grid,
    margin,
    mirror_features,
    pairwise_mirror,
    refine_reflection,
    reflect_map,
    reflect_vectors,
    spatial_prior_mask,
)
from cfe_cli.methods.base import Method, Setup, register
from cfe_cli.results import CounterfactualResult, Frames

Tensor = torch.Tensor
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}  # the decoder's compute dtype


class MirrorCFE:
    """Mirror-CFE with a frozen classifier (the encoder) and a trained decoder.

    Args:
        classifier: a :class:`~cfe_cli.models.classifiers.GAPClassifier` (eval mode).
        decoder: a :class:`~cfe_cli.models.generators.MirrorDecoder`.
        refine: ``"exact"`` (closed-form multi-class refinement), ``"lbfgs"`` or ``"none"``.
        grid: size of the k grid the 1st CFE is searched on (the videos' 100 by default).
        coarse: number of evenly spaced grid points in (0, 1] (k = 0.25, 0.5, 0.75, 1 by
            default); k = 0.5 and 1 are decoded for every input, the others only where the
            reflection is not the target (see :meth:`first_cfe`).
        precision: ``"fp32"`` (default, exact) or ``"bf16"``: the decoder runs on a bfloat16
            copy of itself (its images are returned in float32); the classifier always runs
            in float32, so every verdict is the classifier's own on the returned image. The
            decoded pixels differ by up to ~0.03, so the 1st-CFE index may move by a step.
        compile: ``torch.compile`` the decoder and the classifier's forward (dynamic batch
            sizes: one compilation, ~40-60 s on CPU, then ~1.3x faster; same results).
        csp_rho: ``(rho_low, rho_high)`` of the CSP mask for this explainer instead of the skip
            decoder's own (its config); ρ(k) = clip(1 − k, rho_low, rho_high), so rho_low sets
            the mask from k = 1 − rho_low on, the reflection's included.
        exact_fail: inputs that miss at every probe of the search decode the rest of the grid,
            so an input fails only when no grid k reaches the target (default); False skips
            that scan (quick checks of barely trained decoders, where most inputs fail).
        residual: decode ``x_k = clip(x_s + G(f_k) − G(f_s), 0, 1)``: the source's own pixels
            plus the decoder's edit, so k = 0 returns the source exactly and detail the decoder
            cannot redraw (a face's mouth) is kept; the classifier still judges the returned
            image. Off by default (the paper decodes G(f_k) itself); one extra decode per input.
        backend: ``"torch"`` (default) or ``"onnx"``: the decoder's and the classifier's passes on
            decoded images run on ONNX Runtime's CPU provider (:mod:`cfe_cli.onnx_backend`;
            exported once per weights, cached; float32, CPU only).

    Example:
        >>> m = MirrorCFE(clf, dec)                       # doctest: +SKIP
        >>> out = m.explain(x, target=torch.tensor([3]))  # doctest: +SKIP
    """

    def __init__(self, classifier: torch.nn.Module, decoder: torch.nn.Module, *, refine: str = "exact",
                 grid: int = 100, coarse: int = 4, precision: str = "fp32", compile: bool = False,
                 csp_rho: tuple[float, float] | None = None, exact_fail: bool = True,
                 residual: bool = False, backend: str = "torch") -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        _check_backend(backend, precision, compile, decoder)
        self.clf = classifier
        # channels-last convolutions (the module is converted in place): ~15-25 % faster
        # decoding on CPU (mkldnn), the usual layout on CUDA
        self.dec = decoder.to(memory_format=torch.channels_last)
        self.dtype = PRECISIONS[precision]
        if self.dtype != torch.float32:
            self.dec = copy.deepcopy(self.dec).to(self.dtype)
        self._dec_fn: torch.nn.Module = self.dec
        self._clf_fn: torch.nn.Module = classifier
        if compile:
            self._dec_fn = torch.compile(self.dec, dynamic=True)  # type: ignore[assignment]
            self._clf_fn = torch.compile(classifier, dynamic=True)  # type: ignore[assignment]
        if backend == "onnx":
            from cfe_cli.onnx_backend import OrtFunction

            self._dec_fn = OrtFunction(self.dec, "decoder")  # type: ignore[assignment]
            self._clf_fn = OrtFunction(classifier, "classifier")  # type: ignore[assignment]
        self.refine = refine
        self.grid = grid
        self.coarse = max(2, min(coarse, grid))
        self.scan_chunk = 4096  # decodes per pass when rows that missed every probe scan the whole grid
        self.exact_fail = exact_fail
        self.residual = residual
        self.skips = bool(getattr(decoder, "uses_skips", False))
        self.skip_stem = self.skips and bool(getattr(decoder.config, "skip_stem", False))
        self.rho = csp_rho if csp_rho is not None else (
            (decoder.config.rho_low, decoder.config.rho_high) if self.skips else None)
        if self.skips and not hasattr(classifier, "stages"):
            raise ValueError("this decoder uses skip connections, which need a classifier with stages(x) "
                             "(cfe's own GAPClassifier); use a skip-free decoder with this classifier")

    def decode(self, f: Tensor, skips: list[Tensor] | None = None, mask: Tensor | None = None) -> Tensor:
        """G(f) as a contiguous float image batch ``(B, C, h, w) -> (B, C_img, H, W)``; a skip
        decoder also takes the source's earlier-stage features and the CSP mask."""
        cl = torch.channels_last
        if skips is None:
            x = self._dec_fn(f.to(self.dtype).contiguous(memory_format=cl))
        else:
            x = self._dec_fn(f.to(self.dtype).contiguous(memory_format=cl),
                             [s.to(self.dtype).contiguous(memory_format=cl) for s in skips], mask.to(self.dtype))
        return x.to(f.dtype).contiguous()

    def decode_at(self, prep: dict[str, Tensor], rows: Tensor, k: Tensor) -> Tensor:
        """Decode x_k for the given rows of a prepared batch, each at its own k.

        Shape: ``rows, k (R,)`` -> ``(R, C_img, H, W)``. With a skip decoder the source's
        skip features pass through outside the CSP mask of f_k (spec §5).
        """
        x_k = self._generate(prep, rows, k)
        if "x0_hat" in prep:  # residual decoding: the source plus the decoder's edit G(f_k) − G(f_s)
            x_k = (prep["x"][rows] + (x_k - prep["x0_hat"][rows])).clamp_(0, 1)
        return x_k

    def _generate(self, prep: dict[str, Tensor], rows: Tensor, k: Tensor) -> Tensor:
        """G(f_k) for the given rows, each at its own k (the decoder's own image)."""
        f_k = interpolate(prep["f_s"][rows], prep["f_r"][rows], k)
        if not self.skips:
            return self.decode(f_k)
        mask = spatial_prior_mask(f_k, self.weight, prep["source"][rows], prep["target"][rows], k,
                                  rho_low=self.rho[0], rho_high=self.rho[1])
        return self.decode(f_k, [s[rows] for s in prep["skips"]], mask)

    @property
    def weight(self) -> Tensor:
        return self.clf.head.weight

    @property
    def bias(self) -> Tensor:
        return self.clf.head.bias

    def probs(self, x: Tensor) -> Tensor:
        return self._clf_fn(x).softmax(1)

    def intended(self, z: Tensor) -> Tensor:
        """q(z): the head's softmax at a GAP vector ``(..., C) -> (..., K)``."""
        return (z @ self.weight.T + self.bias).softmax(-1)

    @torch.inference_mode()
    def prepare(self, x: Tensor, target: Tensor | None = None) -> dict[str, Tensor]:
        """Source features, prediction, target (default runner-up) and the reflected map.

        Shape: ``x (B, C, H, W)``, ``target (B,)`` or None.
        """
        stages = self.clf.stages(x, stem=self.skip_stem) if self.skips else [self.clf.features(x)]
        f_s = stages[-1]
        logits = self.clf.classify_features(f_s)
        probs = logits.softmax(1)
        source = logits.argmax(1)
        if target is None:
            target = logits.topk(2, dim=1).indices[:, 1]
        target = target.to(x.device)
        f_r = mirror_features(f_s, self.weight, self.bias, source, target, refine=self.refine)
        prep = {"f_s": f_s, "f_r": f_r, "source": source, "target": target, "probs": probs}
        if self.skips:
            prep["skips"] = stages[:-1]  # type: ignore[assignment]
        if self.residual:
            rows = torch.arange(len(x), device=x.device)
            prep["x"] = x
            prep["x0_hat"] = self._generate(prep, rows, torch.zeros(len(x), dtype=f_s.dtype, device=x.device))
        return prep

    def _decode_rows(self, prep: dict[str, Tensor], rows: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
        """Decode the given rows of the batch, each at its own grid index.

        Shape: ``rows, idx (R,)`` -> images ``(R, C, H, W)`` and classifier logits ``(R, K)``.
        """
        x_k = self.decode_at(prep, rows, idx.to(prep["f_s"].dtype) / (self.grid - 1))
        return x_k, self._clf_fn(x_k)

    @staticmethod
    def _target_margin(logits: Tensor, target: Tensor) -> Tensor:
        """l_t − max_{j≠t} l_j: positive exactly when the prediction is the target. ``(R, K) -> (R,)``."""
        lt = logits.gather(1, target[:, None]).squeeze(1)
        return lt - logits.scatter(1, target[:, None], float("-inf")).amax(1)

    def _scan_rest(self, prep: dict[str, Tensor], lost: Tensor, pts: Tensor, mid: int, found: Tensor, lo: Tensor,
                   hi: Tensor, best_x: Tensor, best_l: Tensor, decodes: Tensor) -> None:
        """Step 2b of :meth:`first_cfe`: rows that missed at every probe decode the rest of the grid
        (chunked), so an input fails only when no grid k in (0, 1] is the target. Updates in place."""
        target, dev, top = prep["target"], prep["f_s"].device, self.grid - 1
        todo = torch.ones(top + 1, dtype=torch.bool, device=dev)
        todo[0] = todo[mid] = todo[top] = False  # k = 0 is the source; mid and top were decoded
        todo[pts] = False
        rest = todo.nonzero().squeeze(1)  # the grid indices no probe decoded
        R, G = len(lost), len(rest)
        step_rows = max(1, self.scan_chunk // max(G, 1))
        for a in range(0, R, step_rows):  # chunked: at most scan_chunk decodes at a time
            rows = lost[a:a + step_rows]
            n = len(rows)
            xs, ls = self._decode_rows(prep, rows.repeat_interleave(G), rest.repeat(n))
            decodes[rows] += G
            hit = (self._target_margin(ls, target[rows].repeat_interleave(G)) > 0).view(n, G)
            ok = hit.any(1)
            j = hit.float().argmax(1)[ok]
            r = torch.arange(n, device=dev)[ok]
            sel = rows[ok]
            hi[sel] = rest[j]
            lo[sel] = rest[j] - 1  # every grid point below the hit is a known miss: settled
            found[sel] = True
            best_x[sel], best_l[sel] = xs.view(n, G, *xs.shape[1:])[r, j], ls.view(n, G, -1)[r, j]

    @torch.inference_mode()
    def first_cfe(self, prep: dict[str, Tensor]) -> dict[str, Tensor]:
        """Find the smallest grid k whose decoded image the classifier assigns to the target.

        The search (all rows batched, only unsettled rows decoded in each round):

        1. decode k = 1 (the reflection, reported anyway) and the middle of the grid;
        2. rows where neither is the target also decode the ``coarse`` points below k = 1,
           so a path that enters the target only between two of them is still found; rows
           that miss at all of them decode the rest of the grid (exact: such a row fails only
           when no grid k in (0, 1] is the target);
        3. each row now has a bracket (last miss, first hit) on the 100-point grid; it is
           narrowed by regula falsi on the decoded target margin l_t − max_{j≠t} l_j with
           the Illinois modification (the margin is smooth but not linear in k), one decode
           per row and round, until the hit's left neighbour is a known miss.

        About 4.9 decoder passes per input instead of 100; same index as the exhaustive sweep
        wherever one crossing lies in the bracket. A row whose target is its own prediction has
        no mirror (w_t − w_s = 0): it is never found and ``target_is_source`` marks it.

        Returns:
            ``index (B,)`` grid index of the 1st CFE and ``k (B,)`` (both −1 where none, never NaN),
            ``found``/``target_is_source (B,)`` bool, ``x_cf (B, C, H, W)`` (the reflection where none),
            ``cf_probs (B, K)``, ``x_reflection``, ``reflection_probs``, ``decodes (B,)``.
        """
        f_s, target = prep["f_s"], prep["target"]
        B, dev, top = f_s.shape[0], f_s.device, self.grid - 1
        all_rows = torch.arange(B, device=dev)
        full = lambda v: torch.full((B,), v, device=dev, dtype=torch.long)  # noqa: E731
        mid = top // 2 + top % 2  # 50 on the 100-point grid
        # 1. reflection and middle point for every row, one pass of 2B
        x2, l2 = self._decode_rows(prep, all_rows.repeat(2), torch.cat([full(top), full(mid)]))
        x_ref, l_ref = x2[:B], l2[:B]
        m2 = self._target_margin(l2, target.repeat(2))
        m_ref, m_mid = m2[:B], m2[B:]
        decodes = full(2)
        # bracket: lo = last known miss (k = 0 is the source: margin from its own logits), hi = first known hit
        m_src = self._target_margin(prep["probs"].clamp_min(1e-30).log(), target)
        lo, hi = full(0), full(top)
        m_lo, m_hi = m_src.clone(), m_ref.clone()
        best_x, best_l = x_ref.clone(), l_ref.clone()
        same = target == prep["source"]  # no pair to mirror (w_t − w_s = 0): every "hit" is the source itself
        found = (m_ref > 0) & ~same
        hit_mid = (m_mid > 0) & ~same
        side = torch.where(hit_mid, 1, -1)  # which end the last probe replaced (+1: hi)
        lo = torch.where(found & ~hit_mid, mid, lo)
        m_lo = torch.where(found & ~hit_mid, m_mid, m_lo)
        hi = torch.where(hit_mid, mid, hi)
        m_hi = torch.where(hit_mid, m_mid, m_hi)
        best_x[hit_mid], best_l[hit_mid] = x2[B:][hit_mid], l2[B:][hit_mid]
        # 2. reflection and middle both missed: scan the coarse points below k = 1 (the path may
        #    enter the target between two of them and leave it again; ~4 % of rows)
        miss = (~found & ~hit_mid & ~same).nonzero().squeeze(1)
        found = found | hit_mid
        pts = torch.linspace(0, top, self.coarse + 1)[1:-1].round().long().to(dev)  # (G,) e.g. 25, 50, 74
        if len(pts) and len(miss):
            R, G = len(miss), len(pts)
            xc, lc = self._decode_rows(prep, miss.repeat_interleave(G), pts.repeat(R))
            decodes[miss] += G
            mc = self._target_margin(lc, target[miss].repeat_interleave(G)).view(R, G)
            hit = mc > 0
            ok = hit.any(1)
            j = hit.float().argmax(1)  # first coarse hit
            r = torch.arange(R, device=dev)
            sel, j, r = miss[ok], j[ok], r[ok]
            hi[sel], m_hi[sel] = pts[j], mc[r, j]
            lo[sel] = torch.where(j > 0, pts[(j - 1).clamp_min(0)], 0)
            m_lo[sel] = torch.where(j > 0, mc[r, (j - 1).clamp_min(0)], m_src[sel])
            found[sel], side[sel] = True, 1
            best_x[sel], best_l[sel] = xc.view(R, G, *xc.shape[1:])[r, j], lc.view(R, G, -1)[r, j]
        # 2b. rows that missed at every probe: decode the rest of the grid, so an input fails only
        #     when no grid k in (0, 1] reaches the target (%Fail's definition), not when the path
        #     enters the target only between probes (~1 in 6 of these rows on Fashion-MNIST)
        lost = (~found & ~same).nonzero().squeeze(1)
        if len(lost) and self.exact_fail:
            self._scan_rest(prep, lost, pts, mid, found, lo, hi, best_x, best_l, decodes)
        # 3. regula falsi (Illinois) inside each bracket, decoding only unsettled rows
        while True:
            act = (found & (hi - lo > 1)).nonzero().squeeze(1)
            if not len(act):
                break
            frac = -m_lo[act] / (m_hi[act] - m_lo[act]).clamp_min(1e-12)
            span = (hi[act] - lo[act]).to(frac.dtype)
            g = lo[act] + (span * frac).ceil().long()
            g = torch.maximum(torch.minimum(g, hi[act] - 1), lo[act] + 1)
            xg, lg = self._decode_rows(prep, act, g)
            decodes[act] += 1
            mg = self._target_margin(lg, target[act])
            h = mg > 0
            a_h, a_m = act[h], act[~h]
            # Illinois: an end kept twice in a row has its margin halved
            m_lo[a_h[side[a_h] == 1]] /= 2
            m_hi[a_m[side[a_m] == -1]] /= 2
            hi[a_h], m_hi[a_h], side[a_h] = g[h], mg[h], 1
            lo[a_m], m_lo[a_m], side[a_m] = g[~h], mg[~h], -1
            best_x[a_h], best_l[a_h] = xg[h], lg[h]
        index = torch.where(found, hi, full(-1))
        k_cf = torch.where(found, hi.to(f_s.dtype) / top, torch.full((B,), -1.0, dtype=f_s.dtype, device=dev))
        return {"index": index, "k": k_cf, "found": found, "target_is_source": same, "x_cf": best_x,
                "cf_probs": best_l.softmax(1), "x_reflection": x_ref, "reflection_probs": l_ref.softmax(1),
                "decodes": decodes}

    @torch.inference_mode()
    def explain(self, x: Tensor, target: Tensor | None = None) -> dict[str, Tensor]:
        """Prepare + 1st-CFE search for a batch ``x (B, C, H, W)``.

        Args:
            x: images ``(B, C, H, W)`` in [0, 1] on the classifier's device.
            target: target classes ``(B,)``; default each image's runner-up class.

        Returns:
            :meth:`prepare`'s fields and :meth:`first_cfe`'s. A row whose target equals its
            prediction is not an error (the rest of the batch is still explained): it comes back
            with ``found`` False, ``target_is_source`` True, ``index`` −1 and ``k`` −1.0, like
            every row without a counterfactual (``k`` is never NaN).
        """
        prep = self.prepare(x, target)
        out = self.first_cfe(prep)
        return {**prep, **out}

    @torch.inference_mode()
    def sweep(self, prep: dict[str, Tensor], frames: int = 100, chunk: int = 512) -> dict[str, Tensor]:
        """Decode every k of a ``frames``-point grid for every sample (for videos).

        Returns:
            ``ks (T,)``, ``x (B, T, C, H, W)``, ``predicted (B, T, K)`` classifier probs on
            x_k, ``intended (B, T, K)`` softmax of the head at z_k.
        """
        f_s, f_r = prep["f_s"], prep["f_r"]
        B = f_s.shape[0]
        ks = k_grid(frames).to(f_s.device)
        rows_all = torch.arange(B, device=f_s.device).repeat_interleave(frames)  # (B*T,) sample of each frame
        ks_all = ks.repeat(B)
        xs, ps = [], []
        for i in range(0, B * frames, chunk):  # f_k built chunk by chunk, never all B*T maps at once
            xi = self.decode_at(prep, rows_all[i:i + chunk], ks_all[i:i + chunk])
            xs.append(xi)
            ps.append(self.probs(xi))
        x = torch.cat(xs).view(B, frames, *xs[0].shape[1:])
        # GAP is affine, so GAP(f_k) = z_s + k (z_r − z_s): the head's softmax without the maps
        z_s, z_r = f_s.mean(dim=(2, 3)), f_r.mean(dim=(2, 3))
        intended = self.intended(z_s[:, None] + ks[None, :, None] * (z_r - z_s)[:, None])  # (B, T, K)
        return {"ks": ks, "x": x, "predicted": torch.cat(ps).view(B, frames, -1), "intended": intended}


BACKENDS = ("torch", "onnx")


def _check_backend(backend: str, precision: str, compile: bool, decoder: torch.nn.Module) -> None:
    """ONNX Runtime runs the float32 networks on the CPU, instead of torch.compile."""
    if backend not in BACKENDS:
        raise InputError(f"unknown --backend '{backend}'; available: {', '.join(BACKENDS)}")
    if backend == "torch":
        return
    from cfe_cli.onnx_backend import require

    require()
    if precision != "fp32":
        raise InputError("--backend onnx runs in float32: use --precision fp32 (or auto)")
    if compile:
        raise InputError("--backend onnx and --compile are two ways to speed up the same passes: choose one")
    if next(decoder.parameters()).device.type != "cpu":
        raise InputError("--backend onnx runs on the CPU: use --device cpu (on CUDA the torch backend is the fast one)")


def check_rho(rho: tuple[float, float]) -> None:
    """The CSP thresholds (ρ_l, ρ_u) must satisfy 0 <= ρ_l <= ρ_u <= 1."""
    if not 0.0 <= rho[0] <= rho[1] <= 1.0:
        raise InputError(f"--csp-rho needs 0 <= LOW <= HIGH <= 1; got {rho[0]},{rho[1]}")


@dataclass(frozen=True)
class MirrorConfig:
    """Mirror-CFE's run-time options (the decoder's own are in its checkpoint)."""

    csp_rho: tuple[float, float] | None = field(default=None, metadata={
        "flag": "--csp-rho", "help": "skip decoders: CSP thresholds LOW,HIGH instead of the decoder's own"})
    residual: bool = field(default=False, metadata={
        "flag": "--residual", "help": "x_k = source + G(f_k) − G(f_s)"})
    backend: str = field(default="torch", metadata={
        "flag": "--backend", "help": "torch, or onnx: decoder and classifier on ONNX Runtime (CPU; cfe[onnx])"})
    refine: str = "exact"  # multi-class refinement of f_r: exact (closed form), lbfgs (the paper's) or none
    grid: int = 100  # k grid of the 1st-CFE search (the videos' 100)


@register("mirror")
class Mirror(Method):
    """Mirror-CFE through the Method contract: the 1st CFE on the k grid, the reflection as the
    second image and, with ``frames``, the decoded path with the head's intended probabilities."""

    Config = MirrorConfig
    second_name = "reflection"
    steps_name = "decodes"
    validity_rule = "the 1st CFE: the first k on the 100-point grid whose decoded image the classifier assigns " \
                    "to the target (argmax; no confidence threshold)"
    supports_compile = True

    def __init__(self, cfe: MirrorCFE, config: MirrorConfig | None = None) -> None:
        self.cfe = cfe
        self.config = config or MirrorConfig()

    @classmethod
    def load(cls, setup: Setup, config: Any) -> Method:
        from cfe_cli.models.loading import mirror_decoder

        dec = mirror_decoder(setup.folder, setup.classifier, setup.device, setup.decoder)
        rho = config.csp_rho
        if rho is not None:
            rho = (float(rho[0]), float(rho[1]))
            if not getattr(dec, "uses_skips", False):
                raise InputError("--csp-rho sets the CSP mask of a skip decoder; this decoder has no skips")
            check_rho(rho)
        cfe = MirrorCFE(setup.classifier.model, dec, refine=config.refine, grid=config.grid,
                        precision=setup.precision, compile=setup.compile, csp_rho=rho, residual=bool(config.residual),
                        backend=config.backend)
        return cls(cfe, config)

    def explain(self, x: Tensor, target: Tensor | None = None, *, probs: Tensor | None = None,
                frames: int = 0) -> CounterfactualResult:
        m = self.cfe
        prep = m.prepare(x, target)
        res = m.first_cfe(prep)
        video = None
        if frames:
            sw = m.sweep(prep, frames)
            video = Frames(ks=sw["ks"], x=sw["x"], predicted=sw["predicted"], intended=sw["intended"],
                           x_label="step, k")
        return CounterfactualResult(
            x_cf=res["x_cf"], found=res["found"], source=prep["source"], target=prep["target"],
            source_probs=prep["probs"], cf_probs=res["cf_probs"], second=res["x_reflection"],
            second_probs=res["reflection_probs"], second_name=self.second_name, steps=res["decodes"],
            steps_name=self.steps_name, k=res["k"], frames=video)
