"""Compare two output folders of ``cfe explain`` / ``animate`` / ``evaluate`` (e.g. before and after a refactor).

Usage::

    python benchmarks/compare_outputs.py A B [--ignore KEY]... [--exclude GLOB]... [--json]

A and B are output folders (the ``--out`` of one command) or folders holding several of them
(e.g. ``/work/baseline`` with ``explain-mirror/``, ``explain-pgd/``, ``eval/``, ...); every file
below them is compared by its path relative to A and B.

Exit status: 0 iff the outputs are identical, 1 if anything differs, 2 on a usage error.

What "identical" means:

- ``*.json`` (``metrics.json``, ``failures.json``, ``global_attributions.json``): the parsed
  documents are equal, compared recursively, after dropping the keys that measure the run rather
  than the result (``--ignore`` adds more; matched at any depth):
  ``command``, ``machine``, ``metrics_path``, ``seconds``, ``seconds_per_cf``, ``cf_per_second``,
  ``seconds_total``, ``peak_memory_mb``.
  Strings that are absolute paths (``cf_path``, ``panel_path``, ``video_path``, ``model``, ...)
  are compared by their last component only, so a run into another folder, a moved folder or a
  run from another checkout still compares equal (the files themselves are compared below).
  Lists of records are matched by ``input`` (explain's ``results``, ``failures``) or by
  ``(method, pair)`` (evaluate's ``rows`` and ``overall``) when every element has those keys,
  so a missing or extra record is named; other lists element by element. Numbers must be equal
  exactly (the tools already round them to 5 decimals), so every verdict key (``source_pred``,
  ``target``, ``valid``, ``first_cfe_k``, ``cf_pred``, ``cf_conf``, ``cf_target_conf``,
  ``reflection_pred``, ``l1``, ``steps``/``decodes``, every evaluate metric, ...) counts.
- ``*.png``: the decoded pixels (mode, size and every value) are equal; the PNG bytes may differ.
- ``*.mp4``: the decoded frames (count, size and every pixel) are equal. The bytes are not
  compared: the H.264 encoder writes its settings (e.g. its thread count, which follows the CPUs
  a process may use) into the stream, so the same frames encode to different bytes on machines
  or under ``taskset`` (seen: the same code at da0afe0 gives other bytes, same frames).
- every other file: byte-identical.
- a file present on one side only is a difference. ``--exclude GLOB`` (matched against the
  relative path and the file name) skips files; by default ``commands.sh``, ``*.log`` and the
  writers' leftover temporaries ``.*.tmp`` are skipped.

The report lists every compared file as ``same`` or ``DIFF`` with the first differences (key path
and both values; PNG: pixels differing and the largest difference); ``--json`` prints the same
report as one JSON object instead.

How it was checked (2026-12-04, code at commit da0afe0, CPU, OMP_NUM_THREADS=1):

- ``bash /work/baseline/commands.sh /work/baseline`` (explain mnist:test:0,1,2,3,7 with mirror
  + ``--video``, attack and pgd; animate ``--frames 8``; evaluate mirror,attack,pgd on 8:3,3:8,
  n = 20, realism on) and the same script into a second folder, run again on another core:
  ``IDENTICAL: 74 files compared, 0 differ``, exit 0 (PNGs, MP4s and metrics are deterministic).
- A copy of the second run with one explain record's ``cf_conf`` changed, one evaluate row's
  ``oracle_valid`` and ``seconds_total`` changed, one pixel of one PNG changed by 1, one byte of
  one MP4 changed and one PNG deleted: exit 1, exactly those five files named with the changed
  key and values (``seconds_total`` ignored), ``pixels differ: 1 of 784, largest difference 1``,
  ``bytes differ``, ``only in A``. With ``--ignore oracle_valid --ignore cf_conf --json``, the two
  JSON differences disappear from the report and the three file differences remain.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import sys
from pathlib import Path, PurePath
from typing import Any

DEFAULT_IGNORE = ("command", "machine", "metrics_path", "seconds", "seconds_per_cf", "cf_per_second",
                  "seconds_total", "peak_memory_mb")
DEFAULT_EXCLUDE = ("commands.sh", "*.log", ".*.tmp")
MAX_SHOWN = 20


class _Ctx:
    def __init__(self, ignore: set[str]) -> None:
        self.ignore = ignore

    def norm_str(self, s: str) -> str:
        """An absolute path counts by its file name only (the tree comparison checks the files)."""
        return "<abs>/" + PurePath(s).name if s.startswith("/") else s


def _keyed(items: list[Any]) -> tuple[str, dict[str, Any]] | None:
    """Match lists of records by a natural key, if every element has it and it is unique."""
    if not items or not all(isinstance(x, dict) for x in items):
        return None
    for keys in (("input",), ("method", "pair")):
        if all(all(k in x for k in keys) for x in items):
            ids = ["/".join(str(x[k]) for k in keys) for x in items]
            if len(set(ids)) == len(ids):
                return "+".join(keys), dict(zip(ids, items, strict=True))
    return None


def _diff(a: Any, b: Any, path: str, ca: _Ctx, cb: _Ctx, out: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if k in ca.ignore:
                continue
            p = f"{path}.{k}" if path else str(k)
            if k not in a:
                out.append(f"{p}: only in B ({_short(b[k])})")
            elif k not in b:
                out.append(f"{p}: only in A ({_short(a[k])})")
            else:
                _diff(a[k], b[k], p, ca, cb, out)
        return
    if isinstance(a, list) and isinstance(b, list):
        ka, kb = _keyed(a), _keyed(b)
        if ka and kb and ka[0] == kb[0]:
            name, da = ka
            db = kb[1]
            for k in list(da) + [k for k in db if k not in da]:
                p = f"{path}[{name}={k}]"
                if k not in da:
                    out.append(f"{p}: record only in B")
                elif k not in db:
                    out.append(f"{p}: record only in A")
                else:
                    _diff(da[k], db[k], p, ca, cb, out)
            if [k for k in da if k in db] != [k for k in db if k in da]:
                out.append(f"{path}: records in another order")
            return
        if len(a) != len(b):
            out.append(f"{path}: {len(a)} elements in A, {len(b)} in B")
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            _diff(x, y, f"{path}[{i}]", ca, cb, out)
        return
    if isinstance(a, str) and isinstance(b, str):
        a, b = ca.norm_str(a), cb.norm_str(b)
    if type(a) is not type(b) and not (isinstance(a, (int, float)) and isinstance(b, (int, float))
                                       and not isinstance(a, bool) and not isinstance(b, bool)):
        out.append(f"{path}: {_short(a)} != {_short(b)} (types {type(a).__name__} / {type(b).__name__})")
    elif a != b:
        out.append(f"{path}: {_short(a)} != {_short(b)}")


def _short(v: Any) -> str:
    s = json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else repr(v)
    return s if len(s) <= 80 else s[:77] + "..."


def _compare_json(fa: Path, fb: Path, ca: _Ctx, cb: _Ctx) -> list[str]:
    try:
        a, b = json.loads(fa.read_text()), json.loads(fb.read_text())
    except (OSError, ValueError) as e:
        return [f"unreadable JSON: {e}"] if fa.read_bytes() != fb.read_bytes() else []
    out: list[str] = []
    _diff(a, b, "", ca, cb, out)
    return out


def _compare_png(fa: Path, fb: Path) -> list[str]:
    import numpy as np
    from PIL import Image

    try:
        with Image.open(fa) as ia, Image.open(fb) as ib:
            ia.load()
            ib.load()
            if ia.mode != ib.mode or ia.size != ib.size:
                return [f"image {ia.mode} {ia.size[0]}x{ia.size[1]} != {ib.mode} {ib.size[0]}x{ib.size[1]}"]
            xa, xb = np.asarray(ia).astype(np.int64), np.asarray(ib).astype(np.int64)
    except OSError as e:
        return [f"undecodable PNG: {e}"] if fa.read_bytes() != fb.read_bytes() else []
    d = np.abs(xa - xb)
    if not d.any():
        return []
    px = d.reshape(d.shape[0], d.shape[1], -1).any(axis=2).sum() if d.ndim >= 2 else int(d.astype(bool).sum())
    return [f"pixels differ: {int(px)} of {xa.shape[0] * xa.shape[1]}, largest difference {int(d.max())}"]


def _video_frames(path: Path) -> tuple[tuple[int, int], list[bytes]]:
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    return tuple(meta["size"]), list(reader)


def _compare_mp4(fa: Path, fb: Path) -> list[str]:
    (sa, va), (sb, vb) = _video_frames(fa), _video_frames(fb)
    if sa != sb or len(va) != len(vb):
        return [f"video {len(va)} frames {sa[0]}x{sa[1]} != {len(vb)} frames {sb[0]}x{sb[1]}"]
    bad = [i for i, (x, y) in enumerate(zip(va, vb, strict=True)) if x != y]
    return [f"frames differ: {len(bad)} of {len(va)}, first {bad[0]}"] if bad else []


def _compare_bytes(fa: Path, fb: Path) -> list[str]:
    a, b = fa.read_bytes(), fb.read_bytes()
    if a == b:
        return []
    first = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    return [f"bytes differ: {len(a)} / {len(b)} bytes, first difference at byte {first}"]


def _files(root: Path, exclude: list[str]) -> set[str]:
    out = set()
    for p in root.rglob("*"):
        if not p.is_file():
            continue
        rel = p.relative_to(root).as_posix()
        if any(fnmatch.fnmatch(rel, g) or fnmatch.fnmatch(p.name, g) for g in exclude):
            continue
        out.add(rel)
    return out


def compare(a: Path, b: Path, ignore: set[str], exclude: list[str]) -> dict[str, Any]:
    ca, cb = _Ctx(ignore), _Ctx(ignore)
    fa, fb = _files(a, exclude), _files(b, exclude)
    report: dict[str, Any] = {"a": str(a), "b": str(b), "ignored_keys": sorted(ignore), "excluded": exclude,
                              "files": {}}
    for rel in sorted(fa | fb):
        if rel not in fb:
            diffs = ["only in A"]
        elif rel not in fa:
            diffs = ["only in B"]
        else:
            pa, pb = a / rel, b / rel
            suffix = pa.suffix.lower()
            if suffix == ".json":
                diffs = _compare_json(pa, pb, ca, cb)
            elif suffix == ".png":
                diffs = _compare_png(pa, pb)
            elif suffix == ".mp4":
                diffs = _compare_mp4(pa, pb)
            else:
                diffs = _compare_bytes(pa, pb)
        report["files"][rel] = diffs
    n_diff = sum(1 for d in report["files"].values() if d)
    report["compared"] = len(report["files"])
    report["differing"] = n_diff
    report["identical"] = n_diff == 0 and len(report["files"]) > 0
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", type=Path, help="first output folder (e.g. the baseline)")
    ap.add_argument("b", type=Path, help="second output folder")
    ap.add_argument("--ignore", action="append", default=[], metavar="KEY",
                    help="also ignore this JSON key at any depth (repeatable); "
                         f"always ignored: {', '.join(DEFAULT_IGNORE)}")
    ap.add_argument("--exclude", action="append", default=None, metavar="GLOB",
                    help="skip files whose relative path or name matches (repeatable); "
                         f"default: {' '.join(DEFAULT_EXCLUDE)}")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    args = ap.parse_args(argv)
    for p in (args.a, args.b):
        if not p.is_dir():
            print(f"error: {p} is not a folder", file=sys.stderr)
            return 2
    exclude = list(DEFAULT_EXCLUDE) if args.exclude is None else args.exclude
    report = compare(args.a, args.b, set(DEFAULT_IGNORE) | set(args.ignore), exclude)
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        for rel, diffs in report["files"].items():
            if not diffs:
                print(f"same  {rel}")
                continue
            print(f"DIFF  {rel}: {len(diffs)} difference(s)")
            for d in diffs[:MAX_SHOWN]:
                print(f"      {d}")
            if len(diffs) > MAX_SHOWN:
                print(f"      ... {len(diffs) - MAX_SHOWN} more")
        if report["compared"] == 0:
            print("no files compared")
        verdict = "IDENTICAL" if report["identical"] else "DIFFERENT"
        print(f"{verdict}: {report['compared']} files compared, {report['differing']} differ "
              f"({args.a} vs {args.b})")
    return 0 if report["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
