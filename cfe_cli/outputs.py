"""What ``explain`` and ``animate`` write: one record per input, its PNGs and MP4, and the run's
``metrics.json`` / ``failures.json``, with ``--resume``.

Records are built from a :class:`~cfe_cli.results.CounterfactualResult` moved to the host once
per batch. Every file is written atomically (:mod:`cfe_cli.files`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from cfe_cli import render
from cfe_cli.errors import InputError
from cfe_cli.files import out_dir, write_json
from cfe_cli.results import CounterfactualResult

Progress = Callable[[dict[str, Any]], None]
SECOND_TITLE = {"reflection": "Reflection (k=1)", "perturbation": "Perturbation", "reconstruction": "Reconstruction"}
IMAGE_KEYS = ("panel_path", "cf_path", "reflection_path", "reconstruction_path", "perturbation_path")


def unique_name(name: str, used: set[str]) -> str:
    """``name``, or ``name_2``, ``name_3`` … when a previous input of the run took it."""
    base, n = name, 2
    while name in used:
        name, n = f"{base}_{n}", n + 1
    used.add(name)
    return name


def batch_records(res: CounterfactualResult, l1: list[float], items: list[Any], classes: list[str], used: set[str],
                  seconds: float, reserved: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The metrics.json record of every input of a batch (``res`` on the CPU; ``l1`` per input).

    ``reserved``: names decided before a sharded run (inputs that share a prefix), by input.
    """
    src, tg = res.source.tolist(), res.target.tolist()
    found_l = res.found.tolist()
    src_p, cf_p, p2 = res.source_probs.tolist(), res.cf_probs.tolist(), res.second_probs.tolist()
    k = None if res.k is None else res.k.tolist()
    steps = res.steps.tolist()
    p_t = None if res.p_target is None else res.p_target.tolist()
    dz = None if res.z0 is None or res.z_cf is None else (res.z_cf - res.z0).norm(dim=1).tolist()
    mirror = res.second_name == "reflection"
    out = []
    for i, it in enumerate(items):
        s, t, gt, found = src[i], tg[i], it.gt, found_l[i]
        name = (reserved or {}).get(it.input) or unique_name(
            render.cf_name(it.prefix, classes[s], classes[t], None if gt is None else classes[gt]), used)
        cp, sp = cf_p[i], p2[i]
        cf_arg, sp_arg = max(range(len(cp)), key=cp.__getitem__), max(range(len(sp)), key=sp.__getitem__)
        rec: dict[str, Any] = {
            "input": it.input, "name": name,
            "source_pred": classes[s], "source_conf": round(src_p[i][s], 5),
            "gt": None if gt is None else classes[gt], "target": classes[t],
            "first_cfe_k": None,
            "cf_pred": classes[cf_arg] if found else None,
            "cf_conf": round(max(cp), 5) if found else None,
            "cf_target_conf": round(cp[t], 5),
            "reflection_pred": classes[sp_arg] if mirror else None,
            "reflection_conf": round(max(sp), 5) if mirror else None,
            "valid": found, "l1": round(l1[i], 5) if found else None,
        }
        if k is not None:
            rec["first_cfe_k"] = round(k[i], 5) if found else None
            rec[res.steps_name] = int(steps[i])
        else:
            rec[res.steps_name] = int(steps[i])
            if p_t is not None:
                rec["p_target"] = round(p_t[i], 5)
            if dz is not None:
                rec["latent_distance"] = round(dz[i], 5)
        rec["seconds"] = round(seconds, 5)
        if res.second_name == "reconstruction":
            rec["reconstruction_pred"] = classes[sp_arg]
            rec["reconstruction_conf"] = round(max(sp), 5)
        out.append(rec)
    return out


def write_images(rec: dict[str, Any], res: CounterfactualResult, i: int, x: torch.Tensor, l1: float, out_dir: Path,
                 classes: list[str]) -> None:
    """The panel (source | counterfactual | second image | signed difference), ``_cf`` and the second image."""
    name, found, second = rec["name"], rec["valid"], res.second_name
    s = int(res.source[i])
    rec["cf_path"] = str(render.save_png(res.x_cf[i], out_dir / f"{name}_cf.png")) if found else None
    p3_path = render.save_png(res.second[i], out_dir / f"{name}_{second}.png")
    rec[f"{second}_path"] = str(p3_path)
    if second != "reflection":
        rec["reflection_path"] = None
    k_txt = f" (k={rec['first_cfe_k']:.2f})" if rec.get("first_cfe_k") is not None else ""
    st_txt = f" ({rec['steps']} steps)" if "steps" in rec and found else ""
    p3 = res.second_probs[i]
    titles = ["Source", f"{'1st CFE' if second == 'reflection' else 'Counterfactual'}{k_txt}{st_txt}",
              SECOND_TITLE[second], "x_cf − x_s"]
    captions = [f"{classes[s]} ({float(res.source_probs[i, s]):.2f})",
                f"{rec['cf_pred']} ({rec['cf_conf']:.2f})" if found else "no CFE",
                f"{classes[int(p3.argmax())]} ({float(p3.max()):.2f})" if second != "perturbation" else "",
                f"L1 {l1:.3f}" if found else ""]
    pil = render.explanation_panel(x[i], res.x_cf[i] if found else None, res.second[i], titles=titles,
                                   captions=captions)
    rec["panel_path"] = str(render.save_image(pil, out_dir / f"{name}.png"))


def write_video(rec: dict[str, Any], res: CounterfactualResult, i: int, x: torch.Tensor, out_dir: Path,
                classes: list[str], *, size: int, fps: int) -> None:
    """The MP4 morph video and its one-row frame strip of input ``i``."""
    v = res.frames
    assert v is not None
    name, s, t = rec["name"], int(res.source[i]), int(res.target[i])
    mirror = res.second_name == "reflection"
    pred_p = v.predicted[i]
    st = torch.tensor([s, t])
    first = first_hit(pred_p, t)
    rec["video_path"] = str(render.render_video(
        out_dir / f"{name}.mp4", frames=v.x[i], source=x[i], ks=v.ks, first_cf_index=first,
        intended=None if v.intended is None else v.intended[i][:, st], predicted=pred_p[:, st],
        distance=(v.x[i] - x[i]).abs().mean(dim=(1, 2, 3)), source_name=classes[s], target_name=classes[t],
        size=size, fps=fps, x_label=v.x_label, end_name="Reflection" if mirror else "Final"))
    strip = render.frame_strip(v.x[i], v.ks, pred_p[:, st], source_name=classes[s], target_name=classes[t],
                               x_label="k" if mirror else "step", first_index=first)
    rec["strip_path"] = str(render.save_image(strip, out_dir / f"{name}_strip.png"))


def first_hit(pred: torch.Tensor, target: int) -> int | None:
    """Index of the first frame whose prediction is ``target`` (None if none). ``pred (T, K)``."""
    hit = (pred.argmax(1) == target).nonzero()
    return int(hit[0]) if len(hit) else None


def complete_records(metrics_path: Path, method: str, video: bool, images: bool) -> dict[str, dict[str, Any]]:
    """Records of a previous run whose every output file exists (for ``--resume``), by input."""
    if not metrics_path.is_file():
        return {}
    try:
        doc = json.loads(metrics_path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    if doc.get("method") != method:
        raise InputError(f"--resume: {metrics_path} is a '{doc.get('method')}' run, not '{method}'")
    keys = [k for k in IMAGE_KEYS if images] + (["video_path", "strip_path"] if video else [])
    out = {}
    for rec in doc.get("results", []):
        paths = [rec.get(k) for k in keys if rec.get(k)]
        needed = (not images or rec.get("panel_path")) and (not video or rec.get("video_path"))
        if needed and all(Path(p).is_file() for p in paths):
            out[rec["input"]] = rec
    return out


class RunFiles:
    """metrics.json and failures.json of an explain run (or a shard's part), rewritten as batches finish."""

    def __init__(self, out_dir: Path, doc: dict[str, Any], part: Path | None = None) -> None:
        self.out_dir, self.doc, self.part = out_dir, doc, part
        self.metrics_path = part if part is not None else out_dir / "metrics.json"

    def flush(self) -> None:
        write_json(self.metrics_path, self.doc)
        if self.part is None:
            write_json(self.out_dir / "failures.json", self.doc["failures"])


class _Run:
    """One process's share of an explain run: its files, resume and, when sharded, its part and the merge."""

    def __init__(self, d: Any, folder: Path, method: str, *, images: bool, video: bool, resume: bool) -> None:
        from cfe_cli.shards import part_path

        self.d, self.folder, self.method, self.resume = d, folder, method, resume
        self.images, self.video = images, video
        self.files = RunFiles(folder, {}, part_path(folder, d.rank, d.world) if d.sharded else None)
        self.reserved: dict[str, str] = {}
        self.failures: list[dict[str, Any]] = []
        self.previous: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []
        self.resumed = 0

    def start(self, items: list[Any]) -> tuple[list[Any], dict[str, dict[str, Any]], list[str]]:
        """Clean a killed run's temporaries; the inputs left to explain, earlier complete records, warnings."""
        from cfe_cli.shards import clean_stale, previous_records

        if self.d.main and (self.d.comm or not self.d.sharded):  # a --shard part cannot know its siblings' files
            clean_stale(self.folder, parts=self.d.comm and not self.resume)
        self.d.barrier()  # no rank writes before rank 0 has cleaned
        self.failures = [{"input": it.input, "error": it.error} for it in items if it.error]
        self.order = [it.input for it in items]
        warnings = [it.warning for it in items if it.warning]
        good = [it for it in items if it.error is None]
        previous: dict[str, dict[str, Any]] = {}
        if self.resume:
            previous = previous_records(self.folder, self.method, self.video, self.images)
            self.previous = previous
            self.resumed = sum(1 for it in good if it.input in previous)
            if not self.d.sharded:  # a shard keeps the full list: its batches must not depend on other shards' progress
                good = [it for it in good if it.input not in previous]
        self.d.barrier()  # every rank has read the earlier parts before any rank rewrites its own
        return good, previous, warnings

    def part_keys(self) -> dict[str, Any]:
        if not self.d.sharded:
            return {}
        return {"shard": [self.d.rank, self.d.world], "order": self.order, "resume": self.resume,
                "images": self.images, "video": self.video}

    def explain_all(self, ex: Any, good: list[Any], tgt: int | None, used: set[str], batch_size: int,
                    progress: Progress | None, **kw: Any) -> None:
        """This rank's batches; under torchrun every rank steps through the same rounds (progress summed)."""
        from cfe_cli import distributed

        d = self.d
        mine = [[good[i] for i in b] for b in distributed.my_batches(len(good), batch_size, d)]
        if d.sharded:  # batches of the full list; a --resume'd shard keeps its done records and runs the rest
            done = [self.previous[it.input] for b in mine for it in b if it.input in self.previous]
            self.files.doc["results"].extend(done)
            mine = [[it for it in b if it.input not in self.previous] for b in mine]
        n_todo = sum(1 for it in good if it.input not in self.previous)
        total = n_todo if d.comm or not d.sharded else sum(len(b) for b in mine)
        if progress is not None and d.main:
            progress({"completed": 0, "total": total})
        completed = 0
        for r in range(distributed.rounds(len(good), batch_size, d) if d.comm else len(mine)):
            batch = mine[r] if r < len(mine) else []
            if batch:
                _explain_batch(ex, batch, tgt, self, used, self.folder, **kw)
                self.files.flush()  # updated as batches finish
            completed += int(d.sum(len(batch))) if d.comm else len(batch)
            if progress is not None and d.main:
                progress({"completed": completed, "total": total})

    def finish(self, warnings: list[str]) -> dict[str, Any]:
        """Write the last state; torchrun: rank 0 merges the parts once every rank has written its own."""
        from cfe_cli import distributed
        from cfe_cli.shards import clean_stale, merge

        if self.resume and not self.d.sharded:  # records in input order, however earlier runs were split
            rank = {name: i for i, name in enumerate(self.order)}
            self.files.doc["results"].sort(key=lambda r: rank.get(r["input"], len(rank)))
        self.files.flush()
        doc, path = self.files.doc, str(self.files.metrics_path)
        if not self.d.sharded:
            clean_stale(self.folder, parts=True)  # a killed sharded run's parts: their records are in metrics.json
        if self.d.comm:
            self.d.barrier()
            if self.d.main:
                doc = merge(self.folder)
                path = doc["metrics_path"]
            self.d.barrier()  # the other ranks leave only after the merged files exist
            distributed.finish(self.d)
        return {"results": doc["results"], "failures": doc["failures"], "skipped": doc["skipped"],
                "warnings": warnings, "metrics_path": path, "resumed": self.resumed,
                "part": self.d.sharded and not self.d.comm, "main": self.d.main}


def _check_video_options(frames: int, size: int, video: bool) -> None:
    if frames < 2:
        raise InputError("--frames must be at least 2")
    if size < 160 or size % 2:
        raise InputError("--size must be an even number of pixels, at least 160")
    if video:
        import imageio_ffmpeg

        try:
            imageio_ffmpeg.get_ffmpeg_exe()
        except RuntimeError:
            raise InputError("ffmpeg is not available: reinstall imageio-ffmpeg (it bundles the binary)") from None


def explain(
    inputs: list[str],
    *,
    model: str | os.PathLike[str],
    target: str | None = None,
    method: str = "mirror",
    out: str | os.PathLike[str] = "out",
    batch_size: int = 64,
    device: str = "auto",
    label: str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    images: bool = True,
    video: bool = False,
    frames: int = 100,
    fps: int = 10,
    size: int = 800,
    strict: bool = False,
    attributions: bool = False,
    threshold: float = 0.75,
    seed: int = 0,
    options: dict[str, Any] | None = None,
    precision: str = "auto",
    compile: bool = False,
    resume: bool = False,
    classifier: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    decoder: str | os.PathLike[str] | None = None,
    command: str = "",
    shard: str | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Explain every input and write images, metrics.json and (optionally) MP4s.

    Args:
        inputs: image files, folders (recursive) or ``DATASET:SPLIT:INDEX`` references.
        model: model name (``weights/<name>``) or folder.
        target: target class (name or index) for every input; default: the runner-up. Inputs
            the classifier already assigns to it are *skipped* (listed with the reason), not failed.
        method: a registered method (``mirror``, ``attack``, ``gci``, ``cecas``, ``pgd``).
        images: write ``{name}.png`` (panel), ``{name}_cf.png`` and ``{name}_<second image>.png``.
        video: write ``{name}.mp4`` (``frames`` frames at ``fps``, ``size``×``size``) and ``{name}_strip.png``.
        attributions: attribute/descriptor scores (latent methods) and ``{name}_attributions.png``.
        options: the method's config fields (e.g. ``{"lam": 10}`` for GCI); a field the method
            does not have is an InputError.
        resume: skip inputs whose outputs of a previous run in ``out`` are complete.
        classifier, weights, decoder: a user's own classifier (``module:factory`` + safetensors
            ``weights``, or TorchScript) and its Mirror-CFE decoder (``train_gen(..., classifier=...)``).

        shard: ``"I/N"``: run only shard I of N and write ``OUT/parts/part-I-of-N.json``
            (``cfe merge OUT`` combines the parts). Under torchrun every rank runs its shard and
            rank 0 merges. Batch ``b`` goes to shard ``b mod N``, so results equal one process's.

    Files are written atomically; metrics.json and failures.json (a shard: its part) are rewritten
    after every batch.

    Returns:
        ``{"results": [...], "failures": [...], "skipped": [...], "resumed": int, "warnings": [...],
        "metrics_path": str, "part": bool, "main": bool}`` (``part``: a ``--shard`` run's part;
        ``main``: rank 0); each result is the metrics.json record of one input, each failure and
        skipped input ``{"input", "error"/"reason"}``.
    """
    from cfe_cli import distributed
    from cfe_cli.explainer import Explainer
    from cfe_cli.inputs import class_index

    _check_video_options(frames, size, video)
    d = distributed.context(shard, device)
    ex = Explainer(model, method, device=distributed.device_name(device, d), threshold=threshold, seed=seed,
                   classifier=classifier, weights=weights, decoder=decoder, precision=precision, compile=compile,
                   **(options or {}))
    if attributions and ex.probes is None:
        raise InputError(f"--attributions needs latent probes: use --method attack/gci/cecas with a model "
                         f"that has probes.safetensors (cfe train-gen --model {ex.folder.name} --method vae)")
    classes = ex.classes
    tgt = class_index(target, classes, "target class") if target is not None else None
    folder = out_dir(out)
    items = resolve_inputs(inputs, channels=ex.clf.config.in_channels, resolution=ex.clf.config.resolution,
                           data_dir=data_dir, classes=classes, label=label, strict=strict)
    run = _Run(d, folder, method, images=images, video=video, resume=resume)
    good, previous, warnings = run.start(items)
    warnings += run_notes(ex, sum(1 for it in good if it.input not in previous))
    run.files.doc = {"kind": "animate" if video and not images else "explain", "command": command,
                     **_header(ex, method, options, threshold, compile),
                     "results": [] if d.sharded else list(previous.values()), "failures": run.failures,
                     "skipped": [], **run.part_keys()}
    used = {r["name"] for r in previous.values()}
    if d.sharded:
        from cfe_cli.shards import reserved_names

        run.reserved = reserved_names(ex, [it for it in good if it.input not in previous], tgt, used, batch_size)
        used |= set(run.reserved.values())
    run.explain_all(ex, good, tgt, used, batch_size, progress, images=images, video=video, frames=frames, fps=fps,
                    size=size, attributions=attributions)
    return {**run.finish(warnings), "precision": precision_line(ex)}


COMPILE_SECONDS = 60  # torch.compile's one-off cost on CPU for Mirror-CFE's decoder + classifier (40-60 s measured)


def precision_line(ex: Any) -> str:
    """One line: the precision the run used and why (``--precision auto`` picks per machine)."""
    p = ex.precision_info
    return f"precision {p.name} ({p.asked}: {p.reason})"


def run_notes(ex: Any, n_inputs: int, *, rate: float = 60.0) -> list[str]:
    """Warnings about the run's speed settings: bf16 emulated on this CPU, or --compile on a run too
    short to repay its compilation (``rate``: Mirror-CFE's uncompiled CF/s on a small CPU)."""
    notes = [ex.precision_info.warning] if ex.precision_info.warning else []
    if getattr(ex, "compiled", False) and ex.device.type == "cpu" and n_inputs / rate < 3 * COMPILE_SECONDS:
        notes.append(f"--compile costs one compilation of ~{COMPILE_SECONDS} s on CPU and then saves ~25 % per "
                     f"pass; {n_inputs} inputs take ~{max(1, round(n_inputs / rate))} s without it, so it "
                     f"repays only on runs of ~{int(3 * COMPILE_SECONDS * rate):,}+ inputs")
    return notes


def resolve_inputs(inputs: list[str], **kw: Any) -> list[Any]:
    """The inputs' images (files, folders, dataset references); none at all is an InputError."""
    from cfe_cli.inputs import resolve_inputs as resolve

    items = resolve(inputs, **kw)
    if not items:
        raise InputError("no inputs given")
    return items


def _header(ex: Any, method: str, options: dict[str, Any] | None, threshold: float,
            compile: bool) -> dict[str, Any]:
    """The keys of metrics.json that describe the run (model, method, options, rule, device)."""
    return {"model": str(ex.folder), "model_name": ex.folder.name, "method": method,
            "options": {k: _jsonable(v) for k, v in (options or {}).items() if v is not None},
            "validity_rule": ex.impl.validity_rule, **({"threshold": threshold} if ex.uses_threshold else {}),
            "classes": ex.classes, "device": str(ex.device), **ex.precision_info.as_record(), "compile": compile}


def _jsonable(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def _explain_batch(ex: Any, batch: list[Any], tgt: int | None, run: _Run, used: set[str], folder: Path, *,
                   images: bool, video: bool, frames: int, fps: int, size: int, attributions: bool) -> None:
    """Explain one batch of good inputs and write its records and files."""
    classes, dev = ex.classes, ex.device
    files, skipped = run.files, run.files.doc["skipped"]
    t0 = time.perf_counter()
    x = torch.stack([it.image for it in batch]).to(dev)
    probs = None
    if tgt is not None:  # inputs already in the target class have nothing to explain: skipped
        probs = ex.predict(x)
        same = (probs.argmax(1) == tgt).tolist()
        skipped.extend({"input": it.input, "reason": f"already predicted as the target '{classes[tgt]}'"}
                       for it, s in zip(batch, same, strict=True) if s)
        keep = [i for i, s in enumerate(same) if not s]
        if not keep:
            return
        batch = [batch[i] for i in keep]
        x, probs = x[keep], probs[keep]
    tvec = None if tgt is None else torch.full((len(batch),), tgt, dtype=torch.long, device=dev)
    res = ex.run(x, tvec, video_frames=frames if video else 0,
                 probs=probs if ex.method != "mirror" else None)
    seconds = (time.perf_counter() - t0) / len(batch)
    l1 = (res.x_cf.detach() - x).abs().mean(dim=(1, 2, 3)).tolist()
    local = None
    if attributions and ex.probes is not None:
        from cfe_cli.attributions import local_scores

        local = local_scores(ex.probes, res.z0.detach(), res.z_cf.detach()).cpu()
    res = res.cpu()
    x = x.cpu()
    recs = batch_records(res, l1, batch, classes, used, seconds, run.reserved)
    for i, rec in enumerate(recs):
        if local is not None:
            rec["attributions"] = dict(zip(ex.probes.names, [round(v, 5) for v in local[i].tolist()], strict=True))
        if images:
            write_images(rec, res, i, x, l1[i], folder, classes)
            if local is not None:
                from cfe_cli.attributions import bar_chart

                rec["attributions_path"] = str(bar_chart(ex.probes.names, local[i].tolist(),
                                                         f"{rec['name']}: {ex.probes.label}",
                                                         folder / f"{rec['name']}_attributions.png"))
        if res.frames is not None:
            write_video(rec, res, i, x, folder, classes, size=size, fps=fps)
        files.doc["results"].append(rec)
