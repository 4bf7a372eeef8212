"""Parts of a sharded explain/animate run and ``cfe merge``.

Every rank (torchrun) or shard (``--shard i/n``) writes its images and videos straight into the
output folder and its records into ``OUT/parts/part-I-of-N.json``, rewritten atomically after each
batch. :func:`merge` combines the parts into the one ``metrics.json`` and ``failures.json`` a
1-process run writes, records in input order, and removes the parts.

A part holds the run's header (the keys of metrics.json), its ``results`` and ``skipped``, the
run's ``failures`` (the same in every part), ``order`` (every input, in the 1-process order),
``shard`` ``[I, N]`` and ``resume``. With ``resume`` the merge also keeps the complete records of
the previous metrics.json and of older parts (a killed run of another world size), so ``--resume``
works across a change of world size.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from cfe_cli import render
from cfe_cli.errors import InputError
from cfe_cli.files import write_json
from cfe_cli.outputs import complete_records, unique_name

PART = re.compile(r"part-(\d+)-of-(\d+)\.json")


def part_path(folder: Path, rank: int, world: int) -> Path:
    return folder / "parts" / f"part-{rank}-of-{world}.json"


def part_files(folder: Path) -> list[Path]:
    d = folder / "parts"
    return sorted(p for p in d.glob("part-*-of-*.json") if PART.fullmatch(p.name)) if d.is_dir() else []


def previous_records(folder: Path, method: str, video: bool, images: bool) -> dict[str, dict[str, Any]]:
    """Complete records of earlier runs in ``folder`` (metrics.json, then every part), by input."""
    out = complete_records(folder / "metrics.json", method, video, images)
    for p in part_files(folder):
        out.update(complete_records(p, method, video, images))
    return out


def clean_stale(folder: Path, parts: bool) -> None:
    """Remove temporaries of a killed run (never complete outputs) and, with ``parts``, old parts."""
    for stale in folder.glob(".*.tmp"):
        stale.unlink(missing_ok=True)
    if (folder / "parts").is_dir():
        for stale in (folder / "parts").glob(".*.tmp"):
            stale.unlink(missing_ok=True)
        for p in part_files(folder) if parts else []:
            p.unlink(missing_ok=True)
        if parts and not any((folder / "parts").iterdir()):
            (folder / "parts").rmdir()


def reserved_names(ex: Any, good: list[Any], tgt: int | None, used: set[str], batch_size: int) -> dict[str, str]:
    """The names of inputs whose prefix another input shares, as a 1-process run gives them.

    Two inputs collide only when they share a prefix; their names (``name``, ``name_2`` …) depend on
    each other's predicted classes, so every shard predicts those inputs (a classifier pass, no
    explanation) and names them in input order. Other inputs' names need no one else's.
    """
    counts = Counter(it.prefix for it in good)
    dup = [it for it in good if counts[it.prefix] > 1]
    taken, out = set(used), {}
    classes = ex.classes
    for start in range(0, len(dup), batch_size):
        chunk = dup[start:start + batch_size]
        probs = ex.predict(torch.stack([it.image for it in chunk]).to(ex.device)).float().cpu()
        top2 = probs.topk(2, dim=1).indices.tolist()
        for it, (s, second) in zip(chunk, top2, strict=True):
            t = second if tgt is None else tgt
            if tgt is not None and s == tgt:  # skipped in every world size: takes no name
                continue
            gt = None if it.gt is None else classes[it.gt]
            out[it.input] = unique_name(render.cf_name(it.prefix, classes[s], classes[t], gt), taken)
    return out


def _load(p: Path) -> dict[str, Any]:
    try:
        doc = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"cannot read {p}: {e}") from None
    if not isinstance(doc, dict) or "shard" not in doc:
        raise InputError(f"{p} is not a part of a sharded explain run")
    return doc


def merge(out: str | Path) -> dict[str, Any]:
    """Combine ``OUT/parts/*`` into ``OUT/metrics.json`` and ``OUT/failures.json``; remove the parts.

    The newest set of parts (the world size of the latest run) must be complete. Records are
    ordered as the 1-process run orders its inputs.

    Returns:
        the merged metrics.json document plus ``metrics_path`` and ``merged_parts``.

    Raises:
        InputError: no parts, a missing shard, or unreadable parts.
    """
    folder = Path(out)
    paths = part_files(folder)
    if not paths:
        raise InputError(f"nothing to merge: no parts in {folder / 'parts'} (run explain with --shard I/N first)")
    docs = {p: _load(p) for p in paths}
    newest = max(paths, key=lambda p: p.stat().st_mtime_ns)
    world = docs[newest]["shard"][1]
    group = sorted((p for p in paths if docs[p]["shard"][1] == world), key=lambda p: docs[p]["shard"][0])
    missing = sorted(set(range(world)) - {docs[p]["shard"][0] for p in group})
    if missing:
        raise InputError(f"cannot merge {folder}: missing part(s) {', '.join(f'{i}/{world}' for i in missing)} "
                         f"(run those shards, with --resume to keep what they finished)")
    head = docs[group[0]]
    records: dict[str, dict[str, Any]] = {}
    if head.get("resume"):  # earlier runs' complete records, then older parts, then this run's
        video, images = head.get("video", False), head.get("images", True)
        records.update(complete_records(folder / "metrics.json", head["method"], video, images))
        for p in paths:
            if p not in group:
                records.update(complete_records(p, head["method"], video, images))
    for p in group:
        records.update({r["input"]: r for r in docs[p]["results"]})
    order = {name: i for i, name in enumerate(head["order"])}

    def in_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return sorted({r["input"]: r for r in rows}.values(), key=lambda r: order.get(r["input"], len(order)))

    doc = {k: v for k, v in head.items() if k not in ("shard", "order", "resume", "video", "images")}
    doc["results"] = in_order(list(records.values()))
    doc["failures"] = in_order([f for p in group for f in docs[p]["failures"]])
    doc["skipped"] = in_order([s for p in group for s in docs[p]["skipped"]])
    metrics = write_json(folder / "metrics.json", doc)
    write_json(folder / "failures.json", doc["failures"])
    for p in paths:
        p.unlink(missing_ok=True)
    clean_stale(folder, parts=True)
    return {**doc, "metrics_path": str(metrics), "merged_parts": len(paths)}
