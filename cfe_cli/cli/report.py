"""``cfe report``: the static HTML gallery of runs, and the helper that ``--report`` on explain, animate and
evaluate calls when their run ends. Imports no torch (the report only reads what runs wrote)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cfe_cli.cli.app import PANEL_IO, _tagged, app, console, err_console, handle_errors

ReportFlag = Annotated[bool, typer.Option("--report/--no-report", rich_help_panel=PANEL_IO,
    help="When the run ends, also write index.html in its folder: a gallery of its results (cfe report).")]


def write_and_print(runs: list[Path], out: Path | None = None, title: str | None = None, copy: bool = False,
                    quiet: bool = False) -> None:
    """Write the report and print where it is (and which files metrics.json named but are gone);
    ``quiet``: print nothing (stdout carries ``--json``)."""
    from cfe_cli.report import write_report

    r = write_report(runs, out=out, title=title, copy=copy)
    if quiet:
        return
    for m in r["missing"][:10]:
        err_console.print(_tagged("missing:", "yellow", f" {m}"), highlight=False, soft_wrap=True)
    more = f" ({len(r['missing'])} files named in metrics.json are missing)" if r["missing"] else ""
    runs_, cards = f"{r['runs']} run{'s' * (r['runs'] != 1)}", f"{r['cards']} card{'s' * (r['cards'] != 1)}"
    console.print(f"report: {runs_}, {cards}{more} -> {r['path']}", highlight=False, soft_wrap=True)


@app.command("report")
@handle_errors
def report(
    runs: Annotated[list[Path], typer.Argument(metavar="RUN_DIR...", show_default=False,
        help="Folders written by cfe explain, animate or evaluate (several make one page with a method/model "
             "switch).")],
    out: Annotated[Path | None, typer.Option("--out", help="Report folder (default: the run's folder for one run, "
                                             "./report for several).", show_default=False)] = None,
    title: Annotated[str | None, typer.Option("--title", help="Page title (default: the runs' methods and "
                                              "models).", show_default=False)] = None,
    copy: Annotated[bool, typer.Option("--copy/--no-copy", help="Copy the PNGs and MP4s into OUT/files/ so the "
                                       "folder stands alone (default: relative links to the runs' files).")] = False,
) -> None:
    """Write a static HTML gallery (index.html) of explain/animate/evaluate runs; open it in any browser."""
    write_and_print(runs, out, title, copy)
