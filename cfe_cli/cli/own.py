"""``cfe import-model``: your own classifier and data as a model every command takes by name."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Annotated

import typer

from cfe_cli.cli.app import DataDir, _tagged, app, command_line, console, handle_errors


@app.command("import-model")
@handle_errors
def import_model(
    name: Annotated[str, typer.Argument(help="The model's name: afterwards --model NAME.")],
    classifier: Annotated[str, typer.Option(
        "--classifier", help="path/to/mynet.py:factory, module:factory (both with --weights), or a TorchScript "
                             "(.pt) / torch.export (.pt2) file.")],
    data: Annotated[str, typer.Option(
        "--data", help="The data it was trained on: folder:PATH (PATH/{train,test}/<class>/*.png) or a dataset "
                       "(mnist, fashion-mnist, …).")],
    weights: Annotated[Path | None, typer.Option("--weights", help="safetensors state dict for a factory.")] = None,
    classes: Annotated[str | None, typer.Option(
        "--classes", help="Class names a,b,c in the order of the classifier's logits (default: the data's).")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Folder to create NAME/ in (default: $CFE_WEIGHTS_DIR or ~/.cache/cfe/weights).")] = None,
    link: Annotated[bool, typer.Option(
        "--link", help="Reference the weights file (its sha256 is checked on every load) instead of copying "
                       "it into the model folder.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace a model of that name.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Make a model folder from your classifier and data: checks the classes, measures test accuracy and
    whether Mirror-CFE can mirror it; then --model NAME works in every command."""
    from cfe_cli import api

    r = api.import_model(name, classifier=classifier, data=data, weights=weights, classes=classes, out=out,
                         link=link, force=force, data_dir=data_dir, command=command_line())
    if as_json:
        typer.echo(json.dumps(r, indent=2))
        return
    say = functools.partial(console.print, highlight=False, soft_wrap=True)
    model = name if r["on_search_path"] else r["path"]
    how = "copied into the folder" if r["copied"] else "referenced (sha256 checked on every load)"
    say(_tagged(f"imported {name}", "green", f" -> {r['path']}"))
    say(f"data      {r['dataset']}: {len(r['classes'])} classes ({', '.join(r['classes'])})")
    say(f"accuracy  {r['test_accuracy'] * 100:.2f} % on {r['n_test']} test images")
    say(f"weights   {r['weights']}, {how}; sha256 {r['sha256'][:16]}…")
    if r["mirror"]:
        say(f"Mirror-CFE: yes (logits = W·GAP(features) + b); train its decoder with: cfe train-gen "
                      f"--model {model} --method mirror")
    else:
        say(_tagged("Mirror-CFE: no", "yellow", f" ({r['mirror_problem']}); the latent methods (attack, "
                              "gci, cecas, pgd) work"))
    hint = "" if r["on_search_path"] else f" (or set CFE_WEIGHTS_DIR={Path(r['path']).parent} and use --model {name})"
    say(f"next      cfe predict {r['dataset']}:test:0 --model {model}{hint}")
