"""``cfe report``: a static HTML gallery of explain, animate and evaluate runs, like the seeds' animation page.

One self-contained ``index.html`` (inline CSS and a few lines of vanilla JS; no CDN, no server) with
relative links to the runs' PNGs and MP4s, or to copies of them under ``files/`` with ``copy``, so it
opens from ``file://`` and still works when its folder is zipped and sent. Reads only what the runs
wrote (metrics.json and the files it names); no torch.

Example:
    >>> from cfe_cli.report import write_report                           # doctest: +SKIP
    >>> write_report(["out/mirror", "out/pgd"], out="out/report")["path"]  # doctest: +SKIP
    'out/report/index.html'
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cfe_cli import __version__
from cfe_cli.errors import InputError
from cfe_cli.files import atomic_path
from cfe_cli.report.page import page_html
from cfe_cli.report.runs import Links, cards, load_runs

__all__ = ["default_title", "write_report"]


def default_title(runs: list[Any]) -> str:
    """``cfe report: mirror · mnist (animate), pgd · mnist (explain)``."""
    return "cfe report: " + ", ".join(dict.fromkeys(r.label for r in runs))


def write_report(runs: list[str | os.PathLike[str]], *, out: str | os.PathLike[str] | None = None,
                 title: str | None = None, copy: bool = False) -> dict[str, Any]:
    """Write ``index.html`` for one or more run folders.

    Args:
        runs: folders written by ``cfe explain``, ``animate`` or ``evaluate`` (or their metrics.json).
        out: the report's folder; default: the run's own folder for one run, ``report`` for several.
        title: the page title; default: the runs' methods, models and kinds.
        copy: copy the files the page shows into ``out/files/`` (a folder that stands alone) instead of
            linking to them where they are.

    Returns:
        ``{"path": index.html, "cards": int, "runs": int, "missing": [files named in metrics.json but absent]}``.
    """
    loaded = load_runs(runs)
    folder = Path(out) if out is not None else (loaded[0].folder if len(loaded) == 1 else Path("report"))
    if folder.exists() and not folder.is_dir():
        raise InputError(f"--out {folder} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create the report folder {folder}: {e.strerror or e}") from None
    links = Links(folder, copy=copy)
    by_run = {r.index: cards(r, links) for r in loaded if r.kind != "evaluate"}
    html = page_html(title or default_title(loaded), loaded, by_run, links, __version__)
    path = folder / "index.html"
    with atomic_path(path) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return {"path": str(path), "cards": sum(len(v) for v in by_run.values()), "runs": len(loaded),
            "missing": list(dict.fromkeys(links.missing))}
