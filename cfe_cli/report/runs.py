"""Reading runs for the report: metrics.json of explain, animate and evaluate, their files, and the links to them.

No torch: the report only reads what the runs wrote.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cfe_cli.errors import InputError

KINDS = ("explain", "animate", "evaluate")


@dataclass
class Run:
    """One run folder: its metrics.json and what the report shows of it."""

    index: int
    folder: Path
    doc: dict[str, Any]
    kind: str
    model: str
    method: str

    @property
    def label(self) -> str:
        """``mirror · mnist (animate)``: the run switch's and the run heading's text."""
        return f"{self.method} · {self.model} ({self.kind})"


def load_runs(paths: list[str | os.PathLike[str]]) -> list[Run]:
    """The runs in ``paths`` (folders holding a metrics.json, or the metrics.json files), in order."""
    if not paths:
        raise InputError("no runs given: name one or more folders written by cfe explain, animate or evaluate")
    runs = []
    for i, p in enumerate(paths):
        path = Path(p)
        metrics = path / "metrics.json" if path.is_dir() else path
        if not metrics.is_file():
            raise InputError(f"{p}: no metrics.json there (give a folder written by cfe explain, animate or evaluate)")
        try:
            doc = json.loads(metrics.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"{metrics}: not a readable metrics.json ({e})") from None
        kind = doc.get("kind", "evaluate" if "rows" in doc else "explain") if isinstance(doc, dict) else None
        if kind not in KINDS or ("rows" if kind == "evaluate" else "results") not in doc:
            raise InputError(f"{metrics}: not the metrics.json of a cfe explain, animate or evaluate run")
        model = doc.get("model_name") or Path(str(doc.get("model", "model"))).name
        method = ", ".join(doc.get("methods", [])) if kind == "evaluate" else str(doc.get("method", "?"))
        runs.append(Run(i, metrics.parent, doc, kind, model, method))
    return runs


def find_file(folder: Path, recorded: str | None) -> Path | None:
    """The file a record names: in the run's folder (the folder may have moved or been unzipped elsewhere),
    else where it was written; None when it is nowhere."""
    if not recorded:
        return None
    local = folder / Path(recorded).name
    if local.is_file():
        return local
    path = Path(recorded)
    if not path.is_absolute():
        path = folder / path
    return path if path.is_file() else None


def png_size(path: Path) -> tuple[int, int] | None:
    """Width and height from a PNG's header (for the page's width/height attributes: no layout shift)."""
    try:
        with path.open("rb") as f:
            head = f.read(24)
    except OSError:
        return None
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


@dataclass
class Links:
    """Relative links from the report's folder to the runs' files, or to copies of them (``copy``)."""

    out: Path
    copy: bool = False
    missing: list[str] = field(default_factory=list)

    def href(self, run: Run, path: Path) -> str:
        """A relative, percent-encoded URL (safe in an attribute) of ``path`` as seen from the report."""
        out = self.out.resolve()
        target = path.resolve()
        if self.copy and not target.is_relative_to(out):
            dest = out / "files" / f"run{run.index}" / path.name
            if not dest.is_file() or dest.stat().st_size != target.stat().st_size:
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(target, dest)
            target = dest
        return quote(Path(os.path.relpath(target, out)).as_posix())

    def find(self, run: Run, recorded: str | None) -> Path | None:
        """:func:`find_file`, remembering recorded files that are gone (the report lists them)."""
        path = find_file(run.folder, recorded)
        if path is None and recorded:
            self.missing.append(recorded)
        return path


@dataclass
class Card:
    """One explained input as the page shows it."""

    run: int
    name: str
    pair: tuple[str, str]
    verdict: str | None  # "correct" / "error" (prediction vs ground truth), None without a ground truth
    valid: bool
    video: str | None = None
    poster: str | None = None
    image: str | None = None
    image_size: tuple[int, int] | None = None
    chips: list[tuple[str, str]] = field(default_factory=list)  # (text, css class)
    links: list[tuple[str, str]] = field(default_factory=list)  # (text, href)


def cards(run: Run, links: Links) -> list[Card]:
    """The cards of an explain or animate run, one per record."""
    out = []
    for rec in run.doc.get("results", []):
        src, tgt, gt = str(rec.get("source_pred")), str(rec.get("target")), rec.get("gt")
        verdict = None if gt is None else ("correct" if str(gt) == src else "error")
        card = Card(run.index, str(rec.get("name", rec.get("input", "?"))), (src, tgt), verdict,
                    bool(rec.get("valid")))
        video, strip = links.find(run, rec.get("video_path")), links.find(run, rec.get("strip_path"))
        panel = links.find(run, rec.get("panel_path"))
        shown = panel or strip or links.find(run, rec.get("cf_path"))
        if video is not None:
            card.video = links.href(run, video)
            card.poster = None if strip is None else links.href(run, strip)
        elif shown is not None:
            card.image, card.image_size = links.href(run, shown), png_size(shown)
        card.chips = _chips(rec, verdict)
        extras = (("panel", "panel_path"),) * (video is not None) + (("attributions", "attributions_path"),)
        for text, key in extras:
            path = links.find(run, rec.get(key))
            if path is not None:
                card.links.append((text, links.href(run, path)))
        out.append(card)
    return out


def _chips(rec: dict[str, Any], verdict: str | None) -> list[tuple[str, str]]:
    """correct/error, valid, k of the 1st CFE (or steps), and the source/target confidences."""
    chips = [] if verdict is None else [(verdict, "ok" if verdict == "correct" else "bad")]
    chips.append(("valid", "ok") if rec.get("valid") else ("no CFE", "bad"))
    if rec.get("first_cfe_k") is not None:
        chips.append((f"k {rec['first_cfe_k']:.2f}", ""))
    elif "steps" in rec:
        chips.append((f"{rec['steps']} steps", ""))
    src_c, tgt_c = rec.get("source_conf"), rec.get("cf_target_conf")
    if isinstance(src_c, (int, float)):
        chips.append((f"{rec.get('source_pred')} {src_c:.3f}", "conf"))
    if isinstance(tgt_c, (int, float)):
        chips.append((f"→ {rec.get('target')} {tgt_c:.3f}", "conf"))
    return chips


def pair_groups(cards_: list[Card]) -> list[tuple[str, list[Card]]]:
    """Cards grouped like the seeds' page: "8 ↔ 3" holds both directions, "9 → 7" one; in the order the pairs
    first appear, the cards of a group sorted by name (as the seeds list their files)."""
    groups: dict[frozenset[str], list[Card]] = {}
    for c in cards_:
        groups.setdefault(frozenset(c.pair), []).append(c)
    out = []
    for members in groups.values():
        first = members[0].pair
        both = any(c.pair != first for c in members)
        out.append((f"{first[0]} {'↔' if both else '→'} {first[1]}", sorted(members, key=lambda c: c.name)))
    return out
