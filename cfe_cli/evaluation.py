"""The evaluation protocol: methods × class pairs on dataset images, scored with the papers'
metrics, summarised per pair and overall.

The classifier is loaded once and shared by every method; realism features of the real
target images are computed once per pair. ``metrics.json`` is rewritten after every
(pair, method) row, so a killed evaluation keeps its finished rows and ``resume`` continues it.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cfe_cli import metrics as M
from cfe_cli.data import load_dataset
from cfe_cli.errors import InputError
from cfe_cli.explainer import Explainer
from cfe_cli.files import out_dir as make_out_dir
from cfe_cli.files import write_json
from cfe_cli.image_scores import fid_sha, image_metrics, realism_references, reference_split
from cfe_cli.legend import NOTES
from cfe_cli.methods import split_options
from cfe_cli.models.loading import channels_last, load_any_classifier
from cfe_cli.models.weights import load_classifier, resolve_model
from cfe_cli.results import CounterfactualResult
from cfe_cli.runtime import resolve_device

Progress = Callable[[dict[str, Any]], None]


@dataclass
class _Nets:
    """The networks the scores need beside the explained classifier (each optional)."""

    oracle: torch.nn.Module | None = None
    feats: Any = None
    probe: Any = None  # oracle_effnet: the linear probe on EfficientNet-Lite0 features (cfe_cli/oracle_effnet.py)
    inception: Any = None
    lpips_net: Any = None
    faces: Any = None


@dataclass
class _Pair:
    """One pair's sources and their real-image references."""

    s: int
    t: int
    idx: torch.Tensor
    x_all: torch.Tensor
    source_correct: float
    real_feat: torch.Tensor | None = None
    real_incep: torch.Tensor | None = None
    reference: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def default_out(model: str | os.PathLike[str], methods: list[str]) -> Path:
    """evaluate's own default folder, ``out/eval-<model>-<methods>`` (never explain's ``out/``)."""
    return Path("out") / f"eval-{Path(str(model)).name}-{'-'.join(methods)}"


def _check_folder(folder: Path, resume: bool, force: bool) -> dict[str, Any] | None:
    """The previous evaluation in ``folder`` (for ``resume``); refuse to overwrite another run."""
    path = folder / "metrics.json"
    if not path.is_file():
        return None
    try:
        prev = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        prev = {}
    if prev.get("kind", "evaluate" if "rows" in prev else None) != "evaluate" and not force:
        raise InputError(f"{path} belongs to another command's run; choose another --out or pass --force")
    return prev if resume else None


def evaluate(
    model: str | os.PathLike[str],
    *,
    methods: list[str],
    pairs: str,
    n: int = 1000,
    split: str = "test",
    sources: str = "predicted",
    out: str | os.PathLike[str] | None = None,
    save_images: bool = False,
    batch_size: int = 256,
    device: str = "auto",
    data_dir: str | os.PathLike[str] | None = None,
    threshold: float = 0.75,
    realism: bool = True,
    cout_steps: int = 20,
    options: dict[str, Any] | None = None,
    precision: str = "auto",
    compile: bool = False,
    seed: int = 0,
    global_attributions: bool = False,
    classifier: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    decoder: str | os.PathLike[str] | None = None,
    fid_weights: str | os.PathLike[str] | None = None,
    lpips_weights: str | os.PathLike[str] | None = None,
    resume: bool = False,
    force: bool = False,
    command: str = "",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Score methods on dataset images whose prediction is each pair's source class.

    For every pair ``s:t`` the first ``n`` images of the split predicted as s are explained towards
    t. ``sources="correct"`` keeps only those labelled s too; with ``"predicted"`` each row reports
    the share of correctly classified sources (``source_correct``). Per-sample metrics
    (``cfe_cli.metrics``) are averaged per pair and, with several pairs, overall. Mirror-CFE is scored
    at the 1st CFE (``mirror``) and the reflection (``mirror@reflection``). Realism
    (``fd/kd/dfd_effnetlite0``) needs ``cfe[metrics]``. ``global_attributions`` (latent methods with
    probes) writes ``out/global_attributions.json`` and a chart per method and pair. ``out`` defaults
    to ``out/eval-<model>-<methods>``; another command's metrics.json there is refused unless
    ``force``; ``resume`` keeps the finished rows of an earlier evaluation with the same settings.

    Returns:
        the metrics.json document (also written to ``out/metrics.json``).
    """
    if n < 1:
        raise InputError("--n must be at least 1")
    if sources not in ("predicted", "correct"):
        raise InputError(f"--sources must be 'predicted' or 'correct', not '{sources}'")
    if compile and "mirror" not in methods:
        raise InputError("--compile is for --method mirror (the optimisation methods take --precision bf16)")
    from cfe_cli import distributed

    d = distributed.context(device=device)
    folder = make_out_dir(out if out is not None else default_out(model, methods))
    previous = _check_folder(folder, resume, force)
    explainers, data, preds, nets, ref_data = _prepare(
        model, methods, options, device=distributed.device_name(device, d), main=d.main, classifier=classifier,
        weights=weights, decoder=decoder,
        threshold=threshold, seed=seed, precision=precision, compile=compile, global_attributions=global_attributions,
        split=split, data_dir=data_dir, realism=realism, fid_weights=fid_weights, lpips_weights=lpips_weights)
    ex0 = explainers[0]
    classes, dataset = ex0.classes, ex0.clf.info["dataset"]
    pair_list = parse_pairs(pairs, classes)
    doc = _header(ex0, explainers, nets, dataset, pair_list, command=command, split=split, n=n, sources=sources,
                  methods=methods, threshold=threshold, options=options, precision=precision, compile=compile,
                  fid_weights=fid_weights, lpips_weights=lpips_weights)
    kept = _resumable_rows(previous, doc)
    global_rows: list[dict[str, Any]] = []
    total = len(pair_list) * len(methods)
    if progress is not None and d.main:
        progress({"completed": 0, "total": total})
    ctx = {"dist": d, "data": data, "preds": preds, "n": n, "sources": sources, "split": split, "nets": nets,
           "ref_data": ref_data, "batch_size": batch_size, "cout_steps": cout_steps,
           "global_attributions": global_attributions, "save_images": save_images, "folder": folder}
    _run_pairs(doc, explainers, pair_list, kept, previous, global_rows, ctx, progress if d.main else None, total)
    distributed.finish(d)
    if not d.main:  # rank 0 holds the gathered rows and writes the files
        return {**doc, "metrics_path": str(folder / "metrics.json"), "global_rankings": []}
    doc["overall"] = _overall(doc["rows"]) if len(pair_list) > 1 else []
    if global_rows:
        write_json(folder / "global_attributions.json",
                   {"command": command, "model": str(ex0.folder), "dataset": dataset, "split": split,
                    "definition": "S_j = mean over valid counterfactuals of p_j(z_cf) - p_j(z_source), p_j the "
                                  "logistic probe of descriptor j on the VAE latent code",
                    "rankings": global_rows})
        doc["global_attributions"] = str(folder / "global_attributions.json")
    write_json(folder / "metrics.json", doc)
    doc["metrics_path"] = str(folder / "metrics.json")
    doc["global_rankings"] = global_rows
    return doc


def _prepare(model: str | os.PathLike[str], methods: list[str], options: dict[str, Any] | None, *, device: str,
             main: bool, classifier: str | None, weights: Any, decoder: Any, threshold: float, seed: int,
             precision: str, compile: bool, global_attributions: bool, split: str, data_dir: Any, realism: bool,
             fid_weights: Any, lpips_weights: Any) -> tuple[list[Explainer], Any, torch.Tensor, _Nets, Any]:
    """The explainers (one classifier, loaded once), the split with its predictions, and the scoring networks."""
    per_method = split_options(methods, options or {})
    dev = resolve_device(device)
    model_folder = resolve_model(model)
    clf = load_any_classifier(model_folder, dev, classifier, weights)  # loaded once, shared by the methods
    channels_last(clf.model)
    explainers = [Explainer(clf, m, folder=model_folder, threshold=threshold, seed=seed, decoder=decoder,
                            precision=precision, compile=compile and m == "mirror", **per_method[m])
                  for m in methods]
    ex0 = explainers[0]
    if global_attributions and not any(ex.probes is not None for ex in explainers):
        raise InputError(f"--global needs latent probes: use --method attack, gci or cecas with a model that has "
                         f"probes.safetensors (cfe train-gen --model {ex0.folder.name} --method vae)")
    dataset = ex0.clf.info.get("dataset")
    if not dataset:
        raise InputError(f"{ex0.folder} does not name its dataset")
    data = load_dataset(dataset, split, root=data_dir, size=ex0.clf.config.resolution)
    with torch.inference_mode():
        preds = torch.cat([ex0.clf.model(data.images[i:i + 512].to(dev)).argmax(1).cpu()
                           for i in range(0, len(data), 512)])
    # image-set scores (realism, FID, LPIPS, identity) are computed by rank 0 on the gathered counterfactuals
    nets = (_load_nets(ex0, dataset, dev, realism, fid_weights, lpips_weights) if main
            else _load_nets(ex0, dataset, dev, False, None, None))
    ref_data = reference_split(dataset, split, data_dir, ex0.clf.config.resolution) if nets.feats is not None else None
    return explainers, data, preds, nets, ref_data


def _run_pairs(doc: dict[str, Any], explainers: list[Explainer], pair_list: list[tuple[int, int]],
               kept: dict[tuple[str, str], list[dict]], previous: dict[str, Any] | None, global_rows: list[dict],
               c: dict[str, Any], progress: Progress | None, total: int) -> None:
    """Every (pair, method) row into ``doc`` (kept rows of a resumed run are reused); metrics.json is
    rewritten after each new row, so a crash keeps the finished ones."""
    classes, nets, done = explainers[0].classes, c["nets"], 0
    old_refs = {r["pair"]: r for r in (previous or {}).get("references", [])}
    for s, t in pair_list:
        name = f"{classes[s]}:{classes[t]}"
        if all((ex.method, name) in kept for ex in explainers) and (name in old_refs or nets.feats is None):
            pair = None  # every row of this pair is kept: no inputs, features or references to compute
            if name in old_refs:
                doc["references"].append(old_refs[name])
        else:
            pair = _pair_inputs(c["data"], c["preds"], s, t, c["n"], c["sources"], c["split"], classes, nets,
                                 c["ref_data"])
            if pair.reference is not None:
                doc["references"].append(pair.reference)
        for ex in explainers:
            old = kept.get((ex.method, f"{classes[s]}:{classes[t]}"))
            if old is not None:
                doc["rows"].extend(old)
            else:
                assert pair is not None
                rows, g = _evaluate_method(ex, pair, nets, classes, batch_size=c["batch_size"],
                                           cout_steps=c["cout_steps"], global_attributions=c["global_attributions"],
                                           save_images=c["save_images"], out_dir=c["folder"], dist=c["dist"])
                doc["rows"].extend(rows)
                if g is not None:
                    global_rows.append(g)
                if c["dist"].main:
                    write_json(c["folder"] / "metrics.json", doc)  # finished rows survive a crash
            done += 1
            if progress is not None:
                progress({"completed": done, "total": total})


def _header(ex0: Explainer, explainers: list[Explainer], nets: _Nets, dataset: str, pair_list: list[tuple[int, int]],
            *, command: str, split: str, n: int, sources: str, methods: list[str], threshold: float,
            options: dict[str, Any] | None, precision: str, compile: bool, fid_weights: Any,
            lpips_weights: Any) -> dict[str, Any]:
    """metrics.json's settings: what was run, on what, with which networks (rows come later)."""
    classes, dev = ex0.classes, ex0.device
    return {"kind": "evaluate", "command": command, "model": str(ex0.folder), "dataset": dataset, "split": split,
           "n_per_pair": n, "sources": sources, "methods": methods,
           "pairs": [f"{classes[s]}:{classes[t]}" for s, t in pair_list],
           "threshold": threshold if any(ex.uses_threshold for ex in explainers) else None,
           "validity_rules": {ex.method: ex.impl.validity_rule for ex in explainers},
           "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in (options or {}).items()
                       if v is not None},
           "device": str(dev), "oracle": nets.oracle is not None,
           **ex0.precision_info.as_record(), "compile": compile,
           "realism": "effnetlite0" if nets.feats is not None else None,
           "oracle_effnet": nets.probe is not None,
           "identity": "dlib face_recognition_resnet_model_v1" if nets.faces is not None else None,
           "fid_weights": None if nets.inception is None else {"path": str(fid_weights), "sha256": fid_sha()},
           "lpips_weights": None if nets.lpips_net is None else str(lpips_weights),
           "notes": NOTES, "rows": [], "overall": [], "references": [],
           "machine": f"{platform.machine()} {torch.get_num_threads()} threads"}


SETTINGS = ("model", "dataset", "split", "n_per_pair", "sources", "threshold", "options", "precision", "realism")


def _resumable_rows(previous: dict[str, Any] | None, doc: dict[str, Any]) -> dict[tuple[str, str], list[dict]]:
    """Rows of an earlier evaluation with the same settings, by (method, pair); mirror keeps its
    ``mirror@reflection`` row with it."""
    if not previous:
        return {}
    if any(previous.get(k) != doc[k] for k in SETTINGS):
        raise InputError("--resume: the evaluation in this folder has other settings "
                         f"({', '.join(k for k in SETTINGS if previous.get(k) != doc[k])}); use another --out")
    out: dict[tuple[str, str], list[dict]] = {}
    for r in previous.get("rows", []):
        out.setdefault((r["method"].split("@", 1)[0], r["pair"]), []).append(r)
    return out


def _load_nets(ex0: Explainer, dataset: str, dev: torch.device, realism: bool,
               fid_weights: str | os.PathLike[str] | None, lpips_weights: str | os.PathLike[str] | None) -> _Nets:
    nets = _Nets()
    if (ex0.folder / "oracle.safetensors").is_file():
        nets.oracle = load_classifier(ex0.folder / "oracle.safetensors", dev).model
    if realism:
        from cfe_cli import features

        if features.available():
            nets.feats = features.EffNetFeatures().to(dev)
            from cfe_cli import oracle_effnet  # the second oracle: a probe on those features

            nets.probe = oracle_effnet.load_folder_probe(ex0.folder, dev)
    if fid_weights is not None:
        from cfe_cli import fid

        nets.inception = fid.load_inception(fid_weights, dev)
    if lpips_weights is not None:
        from cfe_cli import lpips

        nets.lpips_net = lpips.load_lpips(lpips_weights, dev)
    if realism and str(dataset).startswith("celeba") and ex0.clf.config.in_channels == 3:
        from cfe_cli import identity

        if identity.available():
            nets.faces = identity.FaceIdentity()
    return nets


def _pair_inputs(data: Any, preds: torch.Tensor, s: int, t: int, n: int, sources: str, split: str,
                 classes: list[str], nets: _Nets, ref_data: Any) -> _Pair:
    """The pair's sources and the features of its real target images (computed once per pair)."""
    chosen = preds == s
    if sources == "correct":
        chosen &= data.labels == s
    idx = chosen.nonzero()[:, 0][:n]
    if len(idx) == 0:
        raise InputError(f"no {split} images {'correctly classified' if sources == 'correct' else 'predicted'} "
                         f"as '{classes[s]}'")
    pair = _Pair(s, t, idx, data.images[idx], round(float((data.labels[idx] == s).float().mean()), 5))
    real_t = data.images[data.labels == t][:max(len(idx), 50)]
    if nets.feats is not None:
        from cfe_cli import features

        pair.real_feat = features.embed(real_t, nets.feats)
        pair.reference = realism_references(classes[s], classes[t], nets.feats, pair.x_all, pair.real_feat,
                                             ref_data, t)
    if nets.inception is not None:
        from cfe_cli import fid

        pair.real_incep = fid.inception_features(real_t, nets.inception)
    return pair


def _score(clf: torch.nn.Module, x: torch.Tensor, x_cf: torch.Tensor, cf_probs: torch.Tensor, found: torch.Tensor,
           source: torch.Tensor, target: torch.Tensor, oracle: torch.nn.Module | None,
           cout_steps: int) -> dict[str, torch.Tensor]:
    """Per-sample metrics of one batch of counterfactuals; ``cf_probs`` are the classifier's own
    on ``x_cf`` (held by the result, not recomputed). Every value is ``(B,)``."""
    out = {
        "valid": M.validity(cf_probs, target).float(),
        "denoised_valid": M.denoised_validity(clf, x_cf, target).float(),
        "l1": M.l1(x, x_cf), "l2": M.l2(x, x_cf), "sparsity": M.sparsity(x, x_cf),
        "ssim": M.ssim(x, x_cf), "psnr": M.psnr(x, x_cf).clamp(max=100.0),
        "cout": M.cout(clf, x, x_cf, source, target, steps=cout_steps),
        "target_conf": cf_probs.gather(1, target[:, None]).squeeze(1),
        "found": found.float(),
    }
    if oracle is not None:
        out["oracle_valid"] = M.oracle_validity(oracle, x_cf, target).float()
    return out


def _evaluate_method(ex: Explainer, pair: _Pair, nets: _Nets, classes: list[str], *, batch_size: int,
                     cout_steps: int, global_attributions: bool, save_images: bool, out_dir: Path,
                     dist: Any) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Explain a pair's sources with one method; its row (and Mirror-CFE's reflection row).

    Under torchrun rank ``r`` runs batches ``r, r + N, …`` of the 1-process batching; rank 0 gathers
    every batch's per-sample scores and counterfactuals, in batch order, and summarises them as one
    process does (other ranks return no rows).
    """
    from cfe_cli import render

    s, t, dev = pair.s, pair.t, ex.device
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    mine, gen = {}, 0.0
    for i, b in enumerate(range(0, len(pair.idx), batch_size)):
        if i % dist.world == dist.rank:
            mine[b], sec = _method_batch(ex, pair, nets, classes, b, batch_size, cout_steps, global_attributions,
                                         save_images, out_dir)
            gen += sec
    gen_seconds, seconds = dist.max(gen), dist.max(time.perf_counter() - t0)  # the parallel wall time
    gathered = dist.gather_main(mine)
    if gathered is None:
        return [], None
    parts = [p for _, p in sorted((b, p) for g in gathered for b, p in g.items())]
    scored = {k: [p["scored"][k] for p in parts] for k in parts[0]["scored"]}
    steps = [p["steps"] for p in parts]
    g = None
    if "_local" in scored:
        g = _global_ranking(ex, classes[s], classes[t], torch.cat(scored.pop("_local")), out_dir)
    found_all = torch.cat(scored["found"]).bool()
    row = _summarise(ex.method, classes[s], classes[t], scored, len(pair.idx), gen_seconds, steps)
    row["source_correct"] = pair.source_correct
    row["fail_pct"] = round(M.fail_rate(found_all), 3)
    row["seconds_total"] = round(seconds, 3)
    row["peak_memory_mb"] = M.peak_memory_mb(dev)
    cfs = torch.cat([p["cf"] for p in parts])
    refls = torch.cat([p["refl"] for p in parts]) if ex.impl.second_name == "reflection" else None
    grid = [pair.x_all[:8], cfs[:8]] + ([refls[:8]] if refls is not None else [])  # for the report
    grid_png = out_dir / _file_name(f"grid_{ex.method}_{classes[s]}_to_{classes[t]}")
    row["grid_path"] = str(render.image_grid(grid, grid_png, marked=~found_all[:8]))
    image_metrics(row, nets, pair, cfs)
    rows = [row]
    if ex.impl.second_name == "reflection":
        scored_r = {k: [p["scored_r"][k] for p in parts] for k in parts[0]["scored_r"]}
        rrow = _summarise("mirror@reflection", classes[s], classes[t], scored_r, len(pair.idx), gen_seconds, steps)
        rrow["source_correct"] = pair.source_correct
        image_metrics(rrow, nets, pair, refls)
        rows.append(rrow)
    return rows, g


def _method_batch(ex: Explainer, pair: _Pair, nets: _Nets, classes: list[str], b: int, batch_size: int,
                  cout_steps: int, global_attributions: bool, save_images: bool,
                  out_dir: Path) -> tuple[dict[str, Any], float]:
    """One batch (sources ``b … b + batch_size - 1``): per-sample scores and images (CPU), and its seconds."""
    from cfe_cli import render

    s, t, dev = pair.s, pair.t, ex.device
    x = pair.x_all[b:b + batch_size].to(dev)
    src = torch.full((len(x),), s, dtype=torch.long, device=dev)
    tgt = torch.full((len(x),), t, dtype=torch.long, device=dev)
    tb = time.perf_counter()
    res: CounterfactualResult = ex.run(x, tgt)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - tb
    x_cf = res.x_cf.detach()
    out: dict[str, Any] = {"scored": {k: v.cpu() for k, v in _score(ex.clf.model, x, x_cf, res.cf_probs, res.found,
                                                                   src, tgt, nets.oracle, cout_steps).items()}}
    if ex.impl.second_name == "reflection":
        out["scored_r"] = {k: v.cpu() for k, v in _score(ex.clf.model, x, res.second.detach(), res.second_probs,
                                                         torch.ones_like(res.found), src, tgt, nets.oracle,
                                                         cout_steps).items()}
        out["refl"] = res.second.detach().cpu()
        # k as metrics.json records it (5 decimals; NaN where no 1st CFE), then averaged
        ks = [round(k, 5) if f else float("nan") for k, f in zip(res.k.tolist(), res.found.tolist(),  # type: ignore[union-attr]
                                                              strict=True)]
        out["scored"]["first_cfe_k"] = torch.tensor(ks)
    out["steps"] = res.steps.cpu().float()
    if global_attributions and ex.probes is not None:
        from cfe_cli.attributions import local_scores

        local = local_scores(ex.probes, res.z0.detach(), res.z_cf.detach()).cpu()  # type: ignore[union-attr]
        out["scored"]["_local"] = local[res.found.cpu()]
    out["cf"] = x_cf.cpu()
    if save_images:
        img_dir = out_dir / "images" / f"{ex.method}_{classes[s]}_to_{classes[t]}"
        for j in range(len(x)):
            render.save_png(out["cf"][j], img_dir / f"no{int(pair.idx[b + j])}.png")
    return out, seconds


def parse_pairs(pairs: str, classes: list[str]) -> list[tuple[int, int]]:
    from cfe_cli.inputs import class_index

    out = []
    for part in pairs.split(","):
        if not part.strip():
            continue
        if ":" not in part:
            raise InputError(f"bad pair '{part}': use SOURCE:TARGET, e.g. 8:3")
        s, t = part.split(":", 1)
        si, ti = class_index(s, classes, "source class"), class_index(t, classes, "target class")
        if si == ti:
            raise InputError(f"pair '{part}': source and target are the same class")
        out.append((si, ti))
    if not out:
        raise InputError("no pairs given (e.g. --pairs 8:3,3:8)")
    return out


def _global_ranking(ex: Any, s: str, t: str, local: torch.Tensor, out_dir: Path) -> dict[str, Any]:
    """Global attribution ranking of one method and pair (signed mean of local scores, by magnitude)."""
    from cfe_cli.attributions import bar_chart, global_scores

    names = ex.probes.names  # type: ignore[union-attr]
    if len(local):
        g = global_scores(local).tolist()
        sd = local.std(0).tolist() if len(local) > 1 else [0.0] * len(names)
    else:
        g, sd = [0.0] * len(names), [0.0] * len(names)
    order = sorted(range(len(names)), key=lambda i: -abs(g[i]))
    chart = out_dir / _file_name(f"global_{ex.method}_{s}_to_{t}")
    bar_chart(names, g, f"{ex.method}: {s} -> {t}, global attribution (n={len(local)})", chart, top=12)
    return {"method": ex.method, "pair": f"{s}:{t}", "n": len(local), "chart": str(chart),
            "ranking": [{"name": names[i], "score": round(g[i], 5), "std": round(sd[i], 5),
                         "probe_accuracy": round(float(ex.probes.accuracy[i]), 4)}  # type: ignore[union-attr]
                        for i in order]}


def _file_name(stem: str) -> str:
    """A PNG name from class names: spaces become "_", "/" (no file system takes it) "-"."""
    return stem.replace(" ", "_").replace("/", "-") + ".png"


def _summarise(method: str, s: str, t: str, scored: dict[str, list[torch.Tensor]], n: int, gen_seconds: float,
               steps: list[torch.Tensor]) -> dict[str, Any]:
    row: dict[str, Any] = {"method": method, "pair": f"{s}:{t}", "source": s, "target": t, "n": n}
    for key, vals in scored.items():
        v = torch.cat(vals).float()
        if key in ("first_cfe_k",):
            v = v[~v.isnan()]
        row[key] = round(float(v.mean()), 5) if len(v) else None
    st = torch.cat(steps)
    row["steps_mean"] = round(float(st.mean()), 3)
    row["seconds_per_cf"] = round(gen_seconds / max(n, 1), 6)
    row["cf_per_second"] = round(n / max(gen_seconds, 1e-9), 2)
    return row


def _overall(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """n-weighted means over pairs, per method."""
    out = []
    for method in dict.fromkeys(r["method"] for r in rows):
        rs = [r for r in rows if r["method"] == method]
        n = sum(r["n"] for r in rs)
        agg: dict[str, Any] = {"method": method, "pair": "all", "n": n}
        for key in rs[0]:
            if key in ("method", "pair", "source", "target", "n", "peak_memory_mb"):
                continue
            vals = [(r.get(key), r["n"]) for r in rs if isinstance(r.get(key), (int, float))]
            if vals:
                agg[key] = round(sum(v * w for v, w in vals) / sum(w for _, w in vals), 5)
        mem = [r.get("peak_memory_mb") for r in rs if r.get("peak_memory_mb") is not None]
        agg["peak_memory_mb"] = max(mem) if mem else None
        agg["cf_per_second"] = round(n / max(sum(r["seconds_per_cf"] * r["n"] for r in rs), 1e-9), 2)
        out.append(agg)
    return out
