"""The ``cfe`` app: the Typer group, consoles, error handling, progress bars and the options shared by commands.

Library errors (:class:`CfeError`) become one red line on stderr and exit 1; no traceback unless ``--debug``.
"""

from __future__ import annotations

import functools
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text
from typer.core import TyperGroup

from cfe_cli import __version__
from cfe_cli.errors import CfeError, InputError

# `cfe --help` lists the commands in the order a new user needs them: look around, predict, explain,
# then train. Commands not named here follow in registration order.
COMMAND_ORDER = ("models", "datasets", "import-model", "predict", "explain", "animate", "evaluate", "merge", "methods",
                 "report", "train-clf", "train-gen")


class TaskOrderGroup(TyperGroup):
    """A Typer group whose help lists commands in :data:`COMMAND_ORDER` instead of registration order."""

    def list_commands(self, ctx: typer.Context) -> list[str]:  # type: ignore[override]
        names = super().list_commands(ctx)
        rank = {n: i for i, n in enumerate(COMMAND_ORDER)}
        return sorted(names, key=lambda n: (rank.get(n, len(rank)), names.index(n)))


app = typer.Typer(
    name="cfe",
    cls=TaskOrderGroup,
    help="Counterfactual explanations for image classifiers (Mirror-CFE, latent attacks, GCI, CECAS, PGD).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# No markup, no emoji codes: file names, paths, class names and errors are printed as they are ("[b]" in a
# file name is not bold, ":T-shirt:" in "Pullover:T-shirt: …" is not 👕); colour comes only from Text styles.
console = Console(markup=False, emoji=False)
err_console = Console(stderr=True, markup=False, emoji=False)


def _tagged(tag: str, style: str, rest: str = "") -> Text:
    """``tag`` in ``style`` followed by plain ``rest``, e.g. a red "error:" and the message."""
    return Text.assemble((tag, style), rest)
STATE = {"debug": False}
F = TypeVar("F", bound=Callable[..., Any])

PANEL_IO, PANEL_METHOD, PANEL_SPEED, PANEL_OWN = "Inputs & outputs", "Method", "Speed", "Your own classifier"
PANEL_DEC = "Mirror-CFE decoder (MirrorTrainConfig)"


# The help panel of each method option, "Options of <the methods whose config has the field>". Written out so
# that `cfe --help` and `--version` need no torch import; tests/test_cli.py checks it equals the registry's
# answer (cfe_cli.methods.option_owners), so a new method or option shows up as a failing test, not a stale panel.
METHOD_PANELS = {"max_steps": "attack, gci, cecas, pgd", "lr": "attack, gci, cecas", "lam": "gci", "p": "gci",
                 "alpha": "cecas", "eps": "pgd", "norm": "pgd", "csp_rho": "mirror", "residual": "mirror",
                 "backend": "mirror"}


def _method_panel(key: str) -> str:
    return f"Options of {METHOD_PANELS[key]}"


DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", rich_help_panel=PANEL_IO,
        help="Folder holding the datasets (default: $CFE_DATA_DIR).", show_default=False),
]
Device = Annotated[str, typer.Option("--device", rich_help_panel=PANEL_SPEED, help="auto, cpu or cuda.")]
Precision = Annotated[str, typer.Option(
    "--precision", rich_help_panel=PANEL_SPEED,
        help="auto (default): bf16 where the device runs it natively (CUDA with bf16, CPUs with AVX-512-BF16/AMX), "
    "else fp32; fp32 (exact); bf16: Mirror-CFE decodes in bfloat16, the optimisation methods autocast "
    "(emulated, so slower, on other CPUs). Verdicts stay float32.")]
Compile = Annotated[bool, typer.Option(
    "--compile/--no-compile", rich_help_panel=PANEL_SPEED,
        help="Mirror-CFE: torch.compile the decoder and classifier: ~1 min once on CPU, then ~25 % faster "
    "passes; repays only runs of ~10,000+ inputs.")]


def command_line() -> str:
    """The command as the user typed it (recorded in metadata and metrics.json)."""
    return " ".join(["cfe", *(shlex.quote(a) for a in sys.argv[1:])])


def rank0() -> bool:
    """Whether this process prints: always, except torchrun's ranks other than 0 (read from the
    environment, so the CLI imports no torch)."""
    return os.environ.get("RANK", "0") == "0"


def _rank_tag() -> str:
    return "" if rank0() else f" rank {os.environ.get('RANK')}:"


def handle_errors(fn: F) -> F:
    """Turn a CfeError into one red line on stderr and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CfeError as e:
            if STATE["debug"]:
                raise
            err_console.print(_tagged("error:", "bold red", f"{_rank_tag()} {e}"), highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except OSError as e:  # disk full, permissions, … while writing outputs
            if STATE["debug"]:
                raise
            where = f" {e.filename}" if getattr(e, "filename", None) else ""
            err_console.print(_tagged("error:", "bold red", f" {e.strerror or e}{where}"), highlight=False,
                              soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print(_tagged("interrupted", "bold red"))
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


@contextmanager
def progress_bar(description: str, fields: tuple[str, ...]) -> Iterator[Callable[[dict[str, float]], None]]:
    """A Rich progress bar fed by the library's progress callback dicts.

    When stderr is not a terminal (logs, CI) a plain line is printed at every 5 % instead. Under
    torchrun only rank 0 shows it (the library reports the progress summed over ranks there).
    """

    def fmt(p: dict[str, float]) -> dict[str, str]:
        return {f: (f"{p[f]:.4f}" if isinstance(p.get(f), float) else str(p.get(f, "-"))) for f in fields}

    if not rank0():
        yield lambda p: None
        return
    if not err_console.is_terminal:
        start = time.perf_counter()
        last = [-1]

        def plain(p: dict[str, float]) -> None:
            total = p.get("total") or 0
            pct = int(100 * p.get("completed", 0) / total) if total else 0
            if pct // 5 != last[0] // 5 or p.get("completed") == total:
                last[0] = pct
                shown = " ".join(f"{k} {v}" for k, v in fmt(p).items())
                err_console.print(f"{description}: {p.get('completed')}/{total} ({pct} %) {shown} "
                                  f"[{time.perf_counter() - start:.0f} s]", highlight=False)

        yield plain
        return
    cols = [TextColumn("{task.description}", style="bold", markup=False), BarColumn(),
            TextColumn("{task.completed}/{task.total}", markup=False),
            *[TextColumn(f"{f} {{task.fields[{f}]}}", markup=False) for f in fields],
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    with Progress(*cols, console=err_console, transient=False) as bar:
        task = bar.add_task(description, total=None, **dict.fromkeys(fields, "-"))

        def update(p: dict[str, float]) -> None:
            bar.update(task, completed=p.get("completed", 0), total=p.get("total"), **fmt(p))

        yield update


def _print_version(value: bool) -> None:
    """``--version`` is eager: it prints and exits before Click asks for a command."""
    if value:
        console.print(f"cfe {__version__}")
        raise typer.Exit(0)


@app.callback()
def main_callback(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.", is_eager=True,
                                          callback=_print_version)] = False,
) -> None:
    """Counterfactual explanations for image classifiers."""
    STATE["debug"] = debug


Model = Annotated[str, typer.Option("--model", rich_help_panel=PANEL_IO,
                                     help="Model name (cfe models; cfe import-model adds yours) or folder.")]


UserClf = Annotated[str | None, typer.Option(
    "--classifier", rich_help_panel=PANEL_OWN,
        help="Your own classifier: path/to/file.py:factory or module:factory (with --weights), or a TorchScript "
             "(.pt) / torch.export (.pt2) file; --model then gives the data, classes and generators (cfe import-model "
             "makes it a model of its own).")]
UserWeights = Annotated[Path | None, typer.Option("--weights", rich_help_panel=PANEL_OWN,
    help="safetensors state dict for --classifier.")]
UserDecoder = Annotated[Path | None, typer.Option(
    "--decoder", rich_help_panel=PANEL_OWN,
        help="Mirror-CFE decoder trained for --classifier (cfe train-gen ... --out FILE).")]
CspRho = Annotated[str | None, typer.Option(
    "--csp-rho", rich_help_panel=_method_panel("csp_rho"),
        help="Mirror-CFE, skip decoders: CSP thresholds LOW,HIGH for this run instead of the decoder's "
                      "own (a lower LOW lets more of the image change near the reflection).")]
Residual = Annotated[bool, typer.Option(
    "--residual/--no-residual", rich_help_panel=_method_panel("residual"),
        help="Mirror-CFE: x_k = source + G(f_k) − G(f_s), the source's own pixels plus the decoder's "
                       "edit (k = 0 is the source exactly; keeps detail the decoder blurs).")]

Backend = Annotated[str | None, typer.Option(
    "--backend", rich_help_panel=_method_panel("backend"),
        help="Mirror-CFE: torch (default) or onnx, the decoder and classifier passes on ONNX Runtime's CPU "
             "provider (pip install 'cfe[onnx]'; exported once per weights and cached; same verdicts; 1.13x "
             "torch float32's speed on one thread, about equal on two).")]


Inputs = Annotated[list[str], typer.Argument(rich_help_panel=PANEL_IO, metavar="INPUT",
    help="Image files, folders (recursive) or DATASET:SPLIT:INDEX.")]
Target = Annotated[str | None, typer.Option("--target", rich_help_panel=PANEL_IO,
    help="Target class name or index (default: runner-up).")]
Method = Annotated[str, typer.Option("--method", rich_help_panel=PANEL_METHOD,
                                      help="A registered method (cfe methods): mirror, attack, gci, cecas or pgd.")]
Steps = Annotated[int | None, typer.Option("--steps", rich_help_panel=_method_panel("max_steps"),
    help="Step cap of the optimisation methods.")]
Lr = Annotated[float | None, typer.Option("--lr", rich_help_panel=_method_panel("lr"),
    help="Adam learning rate of the latent methods.")]
Threshold = Annotated[float, typer.Option("--threshold", rich_help_panel=PANEL_METHOD,
    help="Target probability the optimisation stops at.")]
Lam = Annotated[float | None, typer.Option("--lambda", rich_help_panel=_method_panel("lam"),
    help="GCI: weight λ of the classification loss.")]
PNorm = Annotated[float | None, typer.Option("--p", rich_help_panel=_method_panel("p"),
    help="GCI: exponent p of the proximity term.")]
Alpha = Annotated[float | None, typer.Option("--alpha", rich_help_panel=_method_panel("alpha"),
    help="CECAS: weight of the spurious-factor penalty.")]
Eps = Annotated[float | None, typer.Option("--eps", rich_help_panel=_method_panel("eps"),
    help="PGD: ε-ball radius (default 0.3 L∞, 3.0 L2).")]
Norm = Annotated[str | None, typer.Option("--norm", rich_help_panel=_method_panel("norm"), help="PGD: linf or l2.")]
Seed = Annotated[int, typer.Option("--seed", rich_help_panel=PANEL_METHOD, help="Random seed (runs repeat exactly).")]


def _parse_rho(text: str | None) -> tuple[float, float] | None:
    """``"0.3,0.8"`` -> (0.3, 0.8), with a one-line error for anything else (the range is checked by the API)."""
    if text is None:
        return None
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--csp-rho takes LOW,HIGH (e.g. 0.3,0.8); got '{text}'") from None
    return low, high


def _options(steps, lr, lam, p, alpha, eps, norm, csp_rho=None,  # type: ignore[no-untyped-def]
             residual=False, settings=None, backend=None) -> dict[str, Any]:
    """The method options given on the command line as config fields (``--set`` reaches any field)."""
    from cfe_cli.config import parse_set

    opts = {"max_steps": steps, "lr": lr, "lam": lam, "p": p, "alpha": alpha, "eps": eps, "norm": norm,
            "csp_rho": _parse_rho(csp_rho), "residual": residual or None, "backend": backend,
            **parse_set(settings or [])}
    return {k: v for k, v in opts.items() if v is not None}


Settings = Annotated[list[str] | None, typer.Option(
    "--set", rich_help_panel=PANEL_METHOD,
    help="Any field of the method's config as KEY=VALUE (repeatable; cfe methods lists them), e.g. --set "
         "objective=prob.")]
Out = Annotated[Path, typer.Option("--out", rich_help_panel=PANEL_IO, help="Output folder.")]
Label = Annotated[str | None, typer.Option("--label", rich_help_panel=PANEL_IO,
    help="Ground-truth class of file inputs.")]
Batch = Annotated[int, typer.Option("--batch-size", rich_help_panel=PANEL_SPEED, help="Inputs per batch.")]
Strict = Annotated[bool, typer.Option("--strict/--no-strict", rich_help_panel=PANEL_IO,
    help="Refuse images of another size instead of resizing.")]
Resume = Annotated[bool, typer.Option("--resume/--no-resume", rich_help_panel=PANEL_IO,
    help="Skip inputs whose outputs in --out are complete.")]
Shard = Annotated[str | None, typer.Option("--shard", rich_help_panel=PANEL_SPEED, show_default=False,
    help="I/N: run only shard I of N (from 0) and write OUT/parts/part-I-of-N.json; then cfe merge OUT. "
    "Under torchrun the ranks are the shards (see docs/distributed.md).")]


