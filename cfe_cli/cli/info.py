"""Commands that look around: models, methods, datasets, predict."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from cfe_cli.cli.app import (  # the shared options and helpers
    DataDir,
    Device,
    _tagged,
    app,
    console,
    err_console,
    handle_errors,
)
from cfe_cli.errors import NotImplementedYet


@app.command("models")
@handle_errors
def models(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
           wide: Annotated[bool, typer.Option("--wide", help="Every column, even past the terminal's width.")]
           = False) -> None:
    """List every model found (weights/, ./weights, $CFE_WEIGHTS_DIR, ~/.cache/cfe/weights) and the buildable
    ones that cannot ship (CelebA)."""
    from cfe_cli import api
    from cfe_cli.cli.tables import fit_table, print_wide

    found = api.models()
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    if not found:
        console.print("no models found")
        return
    notes: list[str] = []
    for m in found:
        if not m.get("installed", True):
            notes.append(f"{m['name']}: {m['train']}")
    cols = ("name", "dataset", "res", "test acc", "classes", "generators", "oracle")

    def build(shown: list[str]) -> Table:
        t = Table(title="models", caption_justify="left")
        for col in shown:  # names are never cut; class names wrap between words
            t.add_column(col, no_wrap=col not in ("classes", "generators"), overflow="fold",
                         max_width=None if wide or col != "classes" else 34)
        for m in found:
            if "error" in m:
                cells = {"name": m["name"], "dataset": Text(str(m["error"]), style="red")}
            else:
                acc = m.get("test_accuracy")
                accs = "-" if acc is None else f"{acc * 100:.2f} %"
                gens: str | Text = ", ".join(m["generators"]) or "-"
                if not m.get("installed", True):
                    accs, gens = accs + "¹", _tagged("not built²", "yellow")
                names = list(m["classes"] or [])
                cells = {"name": m["name"], "dataset": str(m["dataset"]),
                         "res": f"{m['resolution']}²×{m['channels']}", "test acc": accs,
                         "classes": f"{len(names)}: " + ", ".join(names) if names else "-",
                         "generators": gens, "oracle": "yes" if m["oracle"] else "-"}
            t.add_row(*(cells.get(c, "") for c in shown))
        return t

    table, dropped = fit_table(console, build, cols, ("res", "oracle", "dataset", "generators"), wide)
    caption = []
    if notes:
        caption += ["¹ measured when the recipe was trained (see its card); CelebA's licence forbids shipping "
                    "these weights, so they are built locally", "² build: " + "; ".join(notes)]
    if dropped:
        caption.append(f"not shown at this width: {', '.join(dropped)} (--wide or --json shows them)")
    table.caption = "\n".join(caption) or None
    print_wide(console, table, wide)


@app.command("datasets")
@handle_errors
def datasets(data_dir: DataDir = None,
             as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List the datasets found under the data directory, with counts per split."""
    from cfe_cli import api

    found = api.datasets(data_dir)
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    t = Table(title="datasets")
    for col in ("name", "classes", "splits", "path"):
        t.add_column(col)
    for d in found:
        per_class = d.get("class_counts", {})
        splits = ", ".join(f"{k} {v:,}" + (" (" + ", ".join(f"{c} {n}" for c, n in per_class[k].items()) + ")"
                                           if k in per_class else "") for k, v in d["splits"].items())
        t.add_row(str(d["name"]), str(d["classes"]), splits, str(d["path"]))
    if any("layout" in d for d in found):
        t.caption = "folder datasets: " + "; ".join(f"{d['name']} {d['layout']}, class order {d['class_order']}"
                                                     for d in found if "layout" in d)
    console.print(t)
    if not found:
        console.print("no datasets found")


@app.command("methods")
@handle_errors
def methods(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List the registered counterfactual methods, their paper and their options with defaults."""
    from cfe_cli import api

    found = api.methods()
    if as_json:
        typer.echo(json.dumps(found, indent=2, default=str))
        return
    t = Table(title="methods")
    for col in ("name", "paper", "second image", "options (flag = default)"):
        t.add_column(col)
    for m in found:
        opts = ", ".join(f"{o['flag']} = {o['default']}" for o in m["options"] if o["flag"])
        t.add_row(m["name"], m["paper"], m["second_image"], opts or "-")
    t.caption = "an option of another method is refused (cfe explain --method pgd --lambda 5 is an error)"
    console.print(t)


@app.command("predict")
@handle_errors
def predict(
    inputs: Annotated[list[str], typer.Argument(help="Image files, folders (recursive) or DATASET:SPLIT:INDEX.",
                                                metavar="INPUT")],
    model: Annotated[str, typer.Option("--model", help="Model name (weights/NAME) or folder.")],
    top: Annotated[int, typer.Option("--top", help="How many of the most probable classes to list.")] = 3,
    label: Annotated[str | None, typer.Option("--label", help="Ground-truth class of file inputs.")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Refuse images of another size instead of "
                                         "resizing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    device: Device = "auto",
    data_dir: DataDir = None,
) -> None:
    """Show the classifier's prediction, confidence and top classes for each input."""
    from cfe_cli.predicting import predict_inputs

    r = predict_inputs(inputs, model=model, top=top, device=device, data_dir=data_dir, label=label, strict=strict)
    for w in r["warnings"]:
        err_console.print(_tagged("warning:", "yellow", f" {w}"), highlight=False, soft_wrap=True)
    if as_json:
        typer.echo(json.dumps(r, indent=2))
    elif r["results"]:
        t = Table(title=f"predictions ({Path(r['model']).name})")
        with_gt = any(rec["gt"] is not None for rec in r["results"])
        for col in ("input", *(("label",) if with_gt else ()), "prediction", "confidence", f"top {top}"):
            t.add_column(col, justify="right" if col == "confidence" else "left",
                         overflow="fold" if col == "input" else "ellipsis")
        for rec in r["results"]:
            tops = ", ".join(f"{c['class']} {c['probability']:.3f}" for c in rec["top"])
            gt = (str(rec["gt"] or "-"),) if with_gt else ()
            t.add_row(rec["input"], *gt, rec["prediction"], f"{rec['confidence']:.3f}", tops)
        console.print(t)
    for f in r["failures"]:  # one line each; most errors already name their input
        msg = f["error"] if f["input"] in f["error"] else f"{f['input']}: {f['error']}"
        err_console.print(_tagged("failed:", "red", f" {msg}"), highlight=False, soft_wrap=True)
    if r["failures"]:
        raise typer.Exit(1)


def _pending(name: str, issue: str) -> None:
    raise NotImplementedYet(f"'cfe {name}' is not implemented yet ({issue})")
