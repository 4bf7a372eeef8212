"""The ``cfe`` command line: parsing, Rich output and exit codes only.

Each command validates its options, calls one :mod:`cfe_cli.api` function and prints a
summary. Library errors (:class:`CfeError`) become one red line on stderr and exit 1; no
traceback unless ``--debug``.
"""

from __future__ import annotations

import functools
import json
import shlex
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from cfe_cli import __version__
from cfe_cli.errors import CfeError, NotImplementedYet

app = typer.Typer(
    name="cfe",
    help="Counterfactual explanations for image classifiers (Mirror-CFE, latent attacks, GCI, CECAS, PGD).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)
STATE = {"debug": False}
F = TypeVar("F", bound=Callable[..., Any])

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Folder holding the datasets (default: $CFE_DATA_DIR).", show_default=False),
]
Device = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]


def command_line() -> str:
    """The command as the user typed it (recorded in metadata and metrics.json)."""
    return " ".join(["cfe", *(shlex.quote(a) for a in sys.argv[1:])])


def handle_errors(fn: F) -> F:
    """Turn a CfeError into one red line on stderr and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CfeError as e:
            if STATE["debug"]:
                raise
            err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print("[bold red]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


@contextmanager
def progress_bar(description: str, fields: tuple[str, ...]) -> Iterator[Callable[[dict[str, float]], None]]:
    """A Rich progress bar fed by the library's progress callback dicts."""
    cols = [TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
            *[TextColumn(f"{f} {{task.fields[{f}]}}") for f in fields],
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    with Progress(*cols, console=err_console, transient=False) as bar:
        task = bar.add_task(description, total=None, **{f: "-" for f in fields})

        def update(p: dict[str, float]) -> None:
            shown = {f: (f"{p[f]:.4f}" if isinstance(p.get(f), float) else str(p.get(f, "-"))) for f in fields}
            bar.update(task, completed=p.get("completed", 0), total=p.get("total"), **shown)

        yield update


@app.callback()
def main_callback(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    """Counterfactual explanations for image classifiers."""
    STATE["debug"] = debug
    if version:
        console.print(f"cfe {__version__}")
        raise typer.Exit(0)


@app.command("train-clf")
@handle_errors
def train_clf(
    dataset: Annotated[str, typer.Option("--dataset", help="mnist, fashion-mnist, bloodmnist, celeba:ATTR, folder:PATH")],
    out: Annotated[Path, typer.Option("--out", help="Model folder to write classifier.safetensors into.")],
    arch: Annotated[str | None, typer.Option("--arch", help="resnet-s (28²), resnet-m (64²), resnet-l (128²), convnet.")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Epochs (default per dataset).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 128,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate (one-cycle AdamW).")] = 3e-3,
    size: Annotated[int | None, typer.Option("--size", help="Resolution for CelebA (64 or 128) and folders.")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    oracle: Annotated[bool, typer.Option("--oracle", help="Write oracle.safetensors (independent classifier).")] = False,
    device: Device = "auto",
    data_dir: DataDir = None,
) -> None:
    """Train a GAP + linear-head classifier, evaluate it on the test split, save safetensors."""
    from cfe_cli import api

    with progress_bar(f"train {dataset}", ("epoch", "loss", "acc")) as update:
        r = api.train_clf(dataset, out=out, arch=arch, epochs=epochs, batch_size=batch_size, lr=lr, device=device,
                          data_dir=data_dir, size=size, seed=seed, kind="oracle" if oracle else "classifier",
                          command=command_line(), progress=update)
    val = f", val accuracy {r['val_accuracy'] * 100:.2f} %" if r["val_accuracy"] is not None else ""
    console.print(f"[green]test accuracy {r['test_accuracy'] * 100:.2f} %[/]{val} "
                  f"({r['epochs']} epochs, {r['seconds']:.0f} s) -> {r['path']}")


@app.command("models")
@handle_errors
def models(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List every model found (weights/, ./weights, $CFE_WEIGHTS_DIR)."""
    from cfe_cli import api

    found = api.models()
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    if not found:
        console.print("no models found")
        return
    t = Table(title="models")
    for col in ("name", "dataset", "res", "test acc", "classes", "generators", "oracle"):
        t.add_column(col)
    for m in found:
        if "error" in m:
            t.add_row(m["name"], f"[red]{m['error']}[/]", "", "", "", "", "")
            continue
        acc = m.get("test_accuracy")
        t.add_row(m["name"], str(m["dataset"]), f"{m['resolution']}²×{m['channels']}",
                  "-" if acc is None else f"{acc * 100:.2f} %", ", ".join(m["classes"] or []),
                  ", ".join(m["generators"]) or "-", "yes" if m["oracle"] else "-")
    console.print(t)


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
        splits = ", ".join(f"{k} {v:,}" for k, v in d["splits"].items())
        t.add_row(str(d["name"]), str(d["classes"]), splits, str(d["path"]))
    console.print(t)
    if not found:
        console.print("no datasets found")


def _pending(name: str, issue: str) -> None:
    raise NotImplementedYet(f"'cfe {name}' is not implemented yet ({issue})")


@app.command("train-gen", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@handle_errors
def train_gen() -> None:
    """Train a generator (Mirror-CFE decoder, VAE) against a frozen classifier."""
    _pending("train-gen", "Mirror-CFE and latent-methods issues")


@app.command("explain", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@handle_errors
def explain() -> None:
    """Explain images with counterfactuals."""
    _pending("explain", "Mirror-CFE issue")


@app.command("animate", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@handle_errors
def animate() -> None:
    """Render MP4 morph videos of counterfactuals."""
    _pending("animate", "Mirror-CFE issue")


@app.command("evaluate", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@handle_errors
def evaluate() -> None:
    """Score counterfactual methods with the papers' metrics."""
    _pending("evaluate", "evaluate issue")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
