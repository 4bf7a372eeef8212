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
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from cfe_cli import __version__
from cfe_cli.errors import CfeError, InputError, NotImplementedYet

# `cfe --help` lists the commands in the order a new user needs them: look around, predict, explain,
# then train. Commands not named here follow in registration order.
COMMAND_ORDER = ("models", "methods", "datasets", "predict", "explain", "animate", "evaluate", "report", "train-clf",
                 "train-gen")


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


def _method_panel(key: str) -> str:
    """The help panel of a method option, named from the registry: "Options of gci", "Options of attack, gci…"."""
    from cfe_cli.methods import option_owners

    return f"Options of {', '.join(option_owners(key))}"


DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", rich_help_panel=PANEL_IO,
        help="Folder holding the datasets (default: $CFE_DATA_DIR).", show_default=False),
]
Device = Annotated[str, typer.Option("--device", rich_help_panel=PANEL_SPEED, help="auto, cpu or cuda.")]
Precision = Annotated[str, typer.Option(
    "--precision", rich_help_panel=PANEL_SPEED,
        help="fp32 (exact) or bf16: Mirror-CFE decodes in bfloat16, the optimisation methods autocast; "
    "verdicts stay float32 (faster on GPUs and CPUs with bf16 units).")]
Compile = Annotated[bool, typer.Option(
    "--compile/--no-compile", rich_help_panel=PANEL_SPEED,
        help="Mirror-CFE: torch.compile the decoder and classifier (~1 min once, then faster; large runs).")]


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
            err_console.print(_tagged("error:", "bold red", f" {e}"), highlight=False, soft_wrap=True)
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

    When stderr is not a terminal (logs, CI) a plain line is printed at every 5 % instead.
    """

    def fmt(p: dict[str, float]) -> dict[str, str]:
        return {f: (f"{p[f]:.4f}" if isinstance(p.get(f), float) else str(p.get(f, "-"))) for f in fields}

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


@app.command("train-clf")
@handle_errors
def train_clf(
    dataset: Annotated[str, typer.Option("--dataset", help="mnist, fashion-mnist, bloodmnist, celeba:ATTR, "
                                         "folder:PATH")],
    out: Annotated[Path, typer.Option("--out", help="Model folder to write classifier.safetensors into.")],
    arch: Annotated[str | None, typer.Option("--arch", help="resnet-s (28²), resnet-m (64²), resnet-l (128²), "
                                             "convnet.")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Epochs (default per dataset).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 128,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate (one-cycle AdamW).")] = 3e-3,
    size: Annotated[int | None, typer.Option("--size", help="Resolution for CelebA (64 or 128) and folders.")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    oracle: Annotated[bool, typer.Option("--oracle", help="Write oracle.safetensors (independent "
                                         "classifier).")] = False,
    init: Annotated[Path | None, typer.Option("--init", help="Fine-tune: start from this "
                                              "classifier.safetensors.")] = None,
    augment: Annotated[str | None, typer.Option(
        "--augment", help="none, shift, shift-flip, translate-flip, translate-flip-erase, flip-rot, face "
                          "(default per dataset).")] = None,
    label_smoothing: Annotated[float, typer.Option("--label-smoothing", help="Cross-entropy label smoothing.")] = 0.0,
    ema: Annotated[float, typer.Option("--ema", help="Save an exponential moving average of the weights with this "
                                       "decay per step (e.g. 0.999; 0 = off).")] = 0.0,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Stop after this many steps "
                                                  "(quick runs).")] = None,
    device: Device = "auto",
    data_dir: DataDir = None,
) -> None:
    """Train a GAP + linear-head classifier, evaluate it on the test split, save safetensors."""
    from cfe_cli import api

    with progress_bar(f"train {dataset}", ("epoch", "loss", "acc")) as update:
        r = api.train_clf(dataset, out=out, arch=arch, epochs=epochs, batch_size=batch_size, lr=lr, device=device,
                          data_dir=data_dir, size=size, seed=seed, kind="oracle" if oracle else "classifier", init=init,
                          augment=augment, label_smoothing=label_smoothing, ema=ema, max_steps=max_steps,
                          command=command_line(), progress=update)
    val = f", val accuracy {r['val_accuracy'] * 100:.2f} %" if r["val_accuracy"] is not None else ""
    console.print(_tagged(f"test accuracy {r['test_accuracy'] * 100:.2f} %", "green",
                          f"{val} ({r['epochs']} epochs, {r['seconds']:.0f} s) -> {r['path']}"))


@app.command("models")
@handle_errors
def models(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List every model found (weights/, ./weights, $CFE_WEIGHTS_DIR, ~/.cache/cfe/weights) and the buildable
    ones that cannot ship (CelebA)."""
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
            t.add_row(m["name"], Text(str(m["error"]), style="red"), "", "", "", "", "")
            continue
        acc = m.get("test_accuracy")
        accs = "-" if acc is None else f"{acc * 100:.2f} %"
        gens: str | Text = ", ".join(m["generators"]) or "-"
        if not m.get("installed", True):
            accs, gens = accs + "¹", _tagged("not installed", "yellow", f": {m['train']}")
        t.add_row(m["name"], str(m["dataset"]), f"{m['resolution']}²×{m['channels']}", accs,
                  ", ".join(m["classes"] or []), gens, "yes" if m["oracle"] else "-")
    if any(not m.get("installed", True) for m in found):
        t.caption = ("¹ measured when the recipe was trained (see its card); CelebA's licence forbids shipping "
                     "these weights, so they are built locally")
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


Model = Annotated[str, typer.Option("--model", rich_help_panel=PANEL_IO, help="Model name (weights/NAME) or folder.")]


UserClf = Annotated[str | None, typer.Option(
    "--classifier", rich_help_panel=PANEL_OWN,
        help="Your own classifier: module:factory (with --weights) or a TorchScript file; "
    "--model then gives the data, classes and generators.")]
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


def _with_decoder_flags(fn: F) -> F:
    """Add one ``--flag`` per entry of ``training.generators.MIRROR_FLAGS`` to a command (declared once,
    there, beside the checks; defaults are MirrorTrainConfig's) and hand them to ``fn`` as ``decoder``."""
    import inspect

    from cfe_cli.training.generators import MIRROR_FLAGS

    extra = []
    for name, (typ, text) in MIRROR_FLAGS.items():
        flag = "--" + name.replace("_", "-")
        decl = f"{flag}/--no-{name.replace('_', '-')}" if typ is bool else flag
        ann = Annotated[typ | None, typer.Option(decl, help=text, rich_help_panel=PANEL_DEC, show_default=False)]
        extra.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ann))
    sig = inspect.signature(fn)
    params = [p for p in sig.parameters.values() if p.name != "decoder"]

    @functools.wraps(fn)
    def wrapper(**kw: Any) -> Any:
        decoder = {k: kw.pop(k) for k in MIRROR_FLAGS}
        return fn(**kw, decoder=decoder)

    wrapper.__signature__ = sig.replace(parameters=params + extra)  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


@app.command("train-gen")
@handle_errors
@_with_decoder_flags
def train_gen(
    model: Model,
    method: Annotated[str, typer.Option("--method", help="mirror (Mirror-CFE decoder), vae (latent methods) or cvae "
                                                  "(attribute-conditional VAE for GCI; CelebA).")] = "mirror",
    epochs: Annotated[int | None, typer.Option("--epochs", help="Epochs (default 20).")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Default 64 (mirror), 128 (vae).")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Default 2e-4 (mirror), 1e-3 (vae).")] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Stop after this many steps "
                                                  "(quick runs).")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    classifier: UserClf = None,
    weights: UserWeights = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write the generator to this .safetensors file "
                                             "(required with --classifier).")] = None,
    init: Annotated[Path | None, typer.Option("--init", rich_help_panel=PANEL_DEC,
                                              help="Fine-tune this decoder .safetensors.")] = None,
    time_limit: Annotated[float | None, typer.Option("--time-limit", rich_help_panel=PANEL_DEC,
                                                     help="Stop training after this many seconds and save (cosine "
                                                          "schedules decay over it).")] = None,
    config: Annotated[Path | None, typer.Option(
        "--config", rich_help_panel=PANEL_DEC,
        help="A TOML file of MirrorTrainConfig fields (its [mirror] table), e.g. lambda_adv = 0.5; flags and "
             "--set override it.")] = None,
    settings: Annotated[list[str] | None, typer.Option(
        "--set", rich_help_panel=PANEL_DEC,
        help="One MirrorTrainConfig field as KEY=VALUE (repeatable), e.g. --set lambda_tri=2.")] = None,
    device: Device = "auto",
    data_dir: DataDir = None,
    decoder: dict[str, Any] | None = None,
) -> None:
    """Train a generator against a model's frozen classifier (writes weights/NAME/<method>.safetensors).

    The Mirror-CFE decoder's knobs are MirrorTrainConfig fields: the flags of their panel, --config FILE.toml
    or --set KEY=VALUE.
    """
    from cfe_cli import api

    opts = dict(decoder or {})
    opts["csp_rho"] = _parse_rho(opts.get("csp_rho"))
    fields = {"mirror": ("epoch", "cls", "adv", "rec", "fea", "tri", "d") + (("perc",) if opts.get("lambda_perc")
                                                                            else ()),
              "cvae": ("epoch", "attr_bce", "rec", "kl", "edit_bce")}.get(method, ("epoch", "rec", "kl"))
    with progress_bar(f"train-gen {method}", fields) as update:
        r = api.train_gen(model, method=method, epochs=epochs, batch_size=batch_size, lr=lr, device=device,
                          data_dir=data_dir, seed=seed, max_steps=max_steps, classifier=classifier, weights=weights,
                          out=out, init=init, time_limit=time_limit, config=config, settings=settings,
                          command=command_line(), progress=update, **opts)
    _print_generator(method, r)


def _print_generator(method: str, r: dict[str, Any]) -> None:
    if method == "vae":
        console.print(_tagged("VAE", "green", f" -> {r['path']} ({r['seconds']:.0f} s); test reconstruction L1 "
                      f"{r['reconstruction_l1']:.4f}, classifier accuracy on reconstructions "
                      f"{r['reconstruction_accuracy'] * 100:.2f} %"
                      + ("" if "probe_accuracy" not in r else f"; {len(r['probe_accuracy'])} attribution probes")))
        return
    if method == "cvae":
        flip = r["task_attribute_flip_rate"]
        console.print(_tagged("conditional VAE", "green", f" -> {r['path']} ({r['seconds']:.0f} s); "
                      f"test reconstruction L1 "
                      f"{r['reconstruction_l1']:.4f}, classifier accuracy on reconstructions "
                      f"{r['reconstruction_accuracy'] * 100:.2f} %, attribute classifier "
                      f"{r['attribute_accuracy'] * 100:.2f} %, edits obeyed {r['edit_attribute_accuracy'] * 100:.2f} %"
                      + ("" if flip is None else f", task attribute flipped -> classifier follows {flip * 100:.1f} %")))
        return
    console.print(_tagged(f"{method} decoder", "green", f" -> {r['path']} ({r['seconds']:.0f} s); "
                  f"check on {r['n']} test images "
                  f"(runner-up target): validity {r['validity']:.3f}, reflection validity "
                  f"{r['reflection_validity']:.3f}, reconstruction L1 {r['reconstruction_l1']:.4f}"))
    last = r["history"][-1] if r["history"] else {}
    if "stopped_at_step" in last:
        console.print(f"stopped at the time limit ({last['time_limit']:g} s) after {last['stopped_at_step']} of "
                      f"{last['of_steps']} steps")


Inputs = Annotated[list[str], typer.Argument(rich_help_panel=PANEL_IO,
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
             residual=False) -> dict[str, Any]:
    opts = {"max_steps": steps, "lr": lr, "lam": lam, "p": p, "alpha": alpha, "eps": eps, "norm": norm,
            "csp_rho": _parse_rho(csp_rho), "residual": residual or None}
    return {k: v for k, v in opts.items() if v is not None}
Out = Annotated[Path, typer.Option("--out", rich_help_panel=PANEL_IO, help="Output folder.")]
Label = Annotated[str | None, typer.Option("--label", rich_help_panel=PANEL_IO,
    help="Ground-truth class of file inputs.")]
Batch = Annotated[int, typer.Option("--batch-size", rich_help_panel=PANEL_SPEED, help="Inputs per batch.")]
Strict = Annotated[bool, typer.Option("--strict/--no-strict", rich_help_panel=PANEL_IO,
    help="Refuse images of another size instead of resizing.")]
Resume = Annotated[bool, typer.Option("--resume/--no-resume", rich_help_panel=PANEL_IO,
    help="Skip inputs whose outputs in --out are complete.")]


SECOND_HEAD = {"reflection": "reflection (k=1)", "reconstruction": "reconstruction", "perturbation": "perturbation"}


def _report(r: dict[str, Any], what: str) -> None:
    """The run's table with a legend, the failed and skipped inputs, and the exit code (1 only on failures)."""
    for w in r["warnings"]:
        err_console.print(_tagged("warning:", "yellow", f" {w}"), highlight=False)
    recs = r["results"]
    if recs:
        second = next((k[:-5] for k in ("reflection_pred", "reconstruction_pred") if recs[0].get(k)), None)
        mirror = "first_cfe_k" in recs[0] and recs[0].get("decodes") is not None
        t = Table(title=what)
        cols = ["name", "source (conf)", "target", "k of 1st CFE" if mirror else "steps", "counterfactual (conf)"]
        cols += [SECOND_HEAD[second] + " (conf)"] if second else []
        for col in cols + ["valid", "L1"]:
            t.add_column(col)

        def conf(pred: Any, c: Any) -> str:
            return "-" if pred is None else f"{pred} ({c:.2f})"

        for rec in recs[:50]:
            k = (f"{rec['first_cfe_k']:.2f}" if rec.get("first_cfe_k") is not None
                 else str(rec["steps"]) if "steps" in rec else "-")
            extra = [conf(rec.get(f"{second}_pred"), rec.get(f"{second}_conf"))] if second else []
            t.add_row(rec["name"], conf(rec["source_pred"], rec["source_conf"]), str(rec["target"]), k,
                      conf(rec["cf_pred"], rec["cf_conf"]), *extra,
                      Text("yes", style="green") if rec["valid"] else Text("no", style="red"),
                      "-" if rec["l1"] is None else f"{rec['l1']:.3f}")
        legend = ("valid: " + ("the 1st CFE exists — the first k on the 100-point path whose image the classifier "
                               "assigns to the target (argmax, no threshold); k = 0.5 is the mirror, 1 the full "
                               "reflection" if mirror else
                               "the optimisation reached --threshold on the target (and argmax = target)")
                  + "; conf: the classifier's probability; L1: mean |x_cf − x| per pixel")
        t.caption = legend + (f"\nfirst 50 of {len(recs)} rows; all in metrics.json" if len(recs) > 50 else "")
        console.print(t)
    for f in r["failures"]:
        err_console.print(_tagged("failed:", "red", f" {f['input']}: {f['error']}"), highlight=False, soft_wrap=True)
    for sk in r.get("skipped", []):
        err_console.print(_tagged("skipped:", "yellow", f" {sk['input']}: {sk['reason']}"), highlight=False,
                          soft_wrap=True)
    n_ok = sum(1 for rec in recs if rec["valid"])
    resumed = f", {r['resumed']} already done (--resume)" if r.get("resumed") else ""
    n_skip = f", {len(r['skipped'])} skipped" if r.get("skipped") else ""
    console.print(f"{len(recs)} explained, {n_ok} valid, {len(r['failures'])} failed{n_skip}{resumed} "
                  f"-> {r['metrics_path']}")
    if r["failures"]:
        raise typer.Exit(1)


@app.command("explain")
@handle_errors
def explain(
    inputs: Inputs,
    model: Model,
    target: Target = None,
    method: Method = "mirror",
    out: Out = Path("out"),
    batch_size: Batch = 64,
    label: Label = None,
    video: Annotated[bool, typer.Option("--video/--no-video", rich_help_panel=PANEL_IO,
                                        help="Also write the MP4 morph video of each input.")] = False,
    attributions: Annotated[bool, typer.Option("--attributions/--no-attributions", rich_help_panel=PANEL_IO,
                                               help="Latent methods: probe scores + chart.")] = False,
    strict: Strict = False,
    resume: Resume = False,
    threshold: Threshold = 0.75,
    steps: Steps = None,
    lr: Lr = None,
    lam: Lam = None,
    p: PNorm = None,
    alpha: Alpha = None,
    eps: Eps = None,
    norm: Norm = None,
    seed: Seed = 0,
    classifier: UserClf = None,
    weights: UserWeights = None,
    decoder: UserDecoder = None,
    csp_rho: CspRho = None,
    residual: Residual = False,
    precision: Precision = "fp32",
    compile_: Compile = False,
    device: Device = "auto",
    data_dir: DataDir = None,
) -> None:
    """Explain images with counterfactuals: panel PNG, counterfactual PNG and metrics.json."""
    from cfe_cli import api

    with progress_bar("explain", ()) as update:
        r = api.explain(inputs, model=model, target=target, method=method, out=out, batch_size=batch_size,
                        device=device, label=label, data_dir=data_dir, video=video, strict=strict,
                        attributions=attributions, threshold=threshold, seed=seed, resume=resume,
                        options=_options(steps, lr, lam, p, alpha, eps, norm, csp_rho, residual), classifier=classifier,
                        weights=weights, decoder=decoder, precision=precision, compile=compile_,
                        command=command_line(), progress=update)
    _report(r, "counterfactuals")


@app.command("animate")
@handle_errors
def animate(
    inputs: Inputs,
    model: Model,
    target: Target = None,
    method: Method = "mirror",
    frames: Annotated[int, typer.Option("--frames", help="Frames along the path (k = i/(frames-1)).")] = 100,
    fps: Annotated[int, typer.Option("--fps")] = 10,
    size: Annotated[int, typer.Option("--size", help="Video width and height in pixels.")] = 800,
    out: Out = Path("out"),
    batch_size: Batch = 16,
    label: Label = None,
    strict: Strict = False,
    resume: Resume = False,
    threshold: Threshold = 0.75,
    steps: Steps = None,
    lr: Lr = None,
    lam: Lam = None,
    p: PNorm = None,
    alpha: Alpha = None,
    eps: Eps = None,
    norm: Norm = None,
    seed: Seed = 0,
    classifier: UserClf = None,
    weights: UserWeights = None,
    decoder: UserDecoder = None,
    csp_rho: CspRho = None,
    residual: Residual = False,
    precision: Precision = "fp32",
    compile_: Compile = False,
    device: Device = "auto",
    data_dir: DataDir = None,
) -> None:
    """Render the MP4 morph video (H.264, yuv420p) of each input's counterfactual path or trajectory."""
    from cfe_cli import api

    with progress_bar("animate", ()) as update:
        r = api.explain(inputs, model=model, target=target, method=method, out=out, batch_size=batch_size,
                        device=device, label=label, data_dir=data_dir, images=False, video=True, frames=frames,
                        fps=fps, size=size, strict=strict, threshold=threshold, seed=seed, resume=resume,
                        options=_options(steps, lr, lam, p, alpha, eps, norm, csp_rho, residual), classifier=classifier,
                        weights=weights, decoder=decoder, precision=precision, compile=compile_,
                        command=command_line(), progress=update)
    _report(r, "videos")


@app.command("evaluate")
@handle_errors
def evaluate(
    model: Model,
    pairs: Annotated[str, typer.Option("--pairs", help="Comma-separated SOURCE:TARGET pairs, e.g. 8:3,3:8.")],
    method: Annotated[str, typer.Option("--method", help="One or more methods, comma-separated: "
                                        "mirror,attack,pgd.")] = "mirror",
    n: Annotated[int, typer.Option("--n", help="Images per pair (predicted as the source).")] = 1000,
    split: Annotated[str, typer.Option("--split")] = "test",
    sources: Annotated[str, typer.Option("--sources", help="predicted: every image the classifier predicts as "
                                         "the source; correct: only those whose label is the source too.")]
    = "predicted",
    out: Annotated[Path | None, typer.Option("--out", rich_help_panel=PANEL_IO,
                                             help="Output folder (default: out/eval-MODEL-METHODS).")] = None,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", rich_help_panel=PANEL_IO,
                                         help="Keep the finished rows of an evaluation in --out and run the rest.")]
    = False,
    force: Annotated[bool, typer.Option("--force", rich_help_panel=PANEL_IO,
                                        help="Write into a folder that holds another command's metrics.json.")]
    = False,
    save_images: Annotated[bool, typer.Option("--save-images", help="Also write every counterfactual PNG.")] = False,
    batch_size: Batch = 256,
    realism: Annotated[bool, typer.Option("--realism/--no-realism", help="EfficientNet-Lite0 FD/KD/DFD "
                                          "(cfe[metrics]).")] = True,
    threshold: Threshold = 0.75,
    steps: Steps = None,
    lr: Lr = None,
    lam: Lam = None,
    p: PNorm = None,
    alpha: Alpha = None,
    eps: Eps = None,
    norm: Norm = None,
    seed: Seed = 0,
    global_attr: Annotated[bool, typer.Option("--global", help="Latent methods: global attribution ranking "
                                              "+ chart.")] = False,
    classifier: UserClf = None,
    weights: UserWeights = None,
    decoder: UserDecoder = None,
    csp_rho: CspRho = None,
    residual: Residual = False,
    precision: Precision = "fp32",
    compile_: Compile = False,
    fid_weights: Annotated[Path | None, typer.Option(
        "--fid-weights", help="inception-2015-12-05.pt (TorchScript Inception-v3, sha256-checked): adds "
                              "real FID.")] = None,
    lpips_weights: Annotated[Path | None, typer.Option(
        "--lpips-weights", help="alexnet-owt-7be5be79.pth (torchvision AlexNet, sha256-checked): adds "
                                "real LPIPS.")] = None,
    device: Device = "auto",
    data_dir: DataDir = None,
) -> None:
    """Score methods with the papers' metrics on test images of the given pairs; writes metrics.json."""
    from cfe_cli import api

    methods = [m.strip() for m in method.split(",") if m.strip()]
    with progress_bar("evaluate", ()) as update:
        doc = api.evaluate(model, methods=methods, pairs=pairs, n=n, split=split, sources=sources, out=out,
                           save_images=save_images,
                           batch_size=batch_size, device=device, data_dir=data_dir, threshold=threshold,
                           realism=realism, seed=seed,
                           options=_options(steps, lr, lam, p, alpha, eps, norm, csp_rho, residual),
                           global_attributions=global_attr, classifier=classifier, weights=weights,
                           decoder=decoder, precision=precision, compile=compile_, fid_weights=fid_weights,
                           lpips_weights=lpips_weights, resume=resume, force=force, command=command_line(),
                           progress=update)
    cols = [("n", "n", "{}"), ("valid", "Val", "{:.3f}"), ("denoised_valid", "D.Val", "{:.3f}"),
            ("oracle_valid", "O.Val", "{:.3f}"), ("fail_pct", "%Fail", "{:.1f}"), ("l1", "L1", "{:.3f}"),
            ("l2", "L2", "{:.3f}"), ("sparsity", "Spars.", "{:.3f}"), ("ssim", "SSIM", "{:.3f}"),
            ("cout", "COUT", "{:.3f}"), ("fid", "FID", "{:.2f}"), ("lpips", "LPIPS", "{:.3f}"),
            ("fd_effnetlite0", "FD-eff¹", "{:.2f}"), ("dfd_effnetlite0", "DFD-eff¹", "{:.3f}"),
            ("fva_dlib", "FVA²", "{:.3f}"), ("steps_mean", "steps", "{:.1f}"), ("cf_per_second", "CF/s", "{:.1f}")]
    cols = [c for c in cols if any(r.get(c[0]) is not None for r in doc["rows"])]
    t = Table(title=f"evaluate {doc['dataset']} ({doc['split']})", caption=_eval_legend(doc, {c[1] for c in cols}))
    t.add_column("method")
    t.add_column("pair")
    for _, head, _ in cols:
        t.add_column(head, justify="right")
    for r in doc["rows"] + doc["overall"]:
        t.add_row(r["method"], r["pair"], *[("-" if r.get(k) is None else fmt.format(r[k])) for k, _, fmt in cols])
    console.print(t)
    for r in doc.get("references", []):
        real = "-" if r["fd_real_effnetlite0"] is None else f"{r['fd_real_effnetlite0']:.2f} (n={r['n_real']})"
        console.print(f"FD-eff¹ scale {r['pair']}: unchanged inputs {r['fd_inputs_effnetlite0']:.2f}, "
                      f"other real {r['pair'].split(':', 1)[1]} images {real}")
    for g in doc["global_rankings"]:
        top = ", ".join(f"{r['name']} {r['score']:+.3f}" for r in g["ranking"][:5])
        console.print(f"global attribution {g['method']} {g['pair']} (n={g['n']}): {top} -> {g['chart']}")
    console.print(f"-> {doc['metrics_path']}")


EVAL_LEGEND = {
    "Val": "validity: the classifier assigns the counterfactual to the target",
    "D.Val": "validity after a 5x5 Gaussian blur (sigma 1)",
    "O.Val": "validity by the independent oracle classifier (weights/MODEL/oracle.safetensors)",
    "%Fail": "share of inputs with no counterfactual",
    "L1": "mean |x_cf - x|", "L2": "root-mean-square pixel difference", "Spars.": "share of pixels changed by > 0.05",
    "SSIM": "structural similarity to the source", "COUT": "counterfactual transition (Khorram & Fuxin), -1..1",
    "FID": "Inception-v3 FID (your file)", "LPIPS": "LPIPS-Alex (your file)",
    "FD-eff¹": "Frechet distance to real target-class images, EfficientNet-Lite0 features",
    "DFD-eff¹": "deep-feature distance to the source, EfficientNet-Lite0 stages",
    "FVA²": "share of faces whose identity is kept",
    "steps": "engine steps (optimisation methods) or decoder passes (mirror)", "CF/s": "counterfactuals per second",
}


def _eval_legend(doc: dict[str, Any], shown: set[str]) -> str:
    """One line per column shown, the validity rule of each method, and the footnotes."""
    lines = [f"{k}: {v}" for k, v in EVAL_LEGEND.items() if k in shown]
    lines += [f"{m}: valid = {rule}" for m, rule in doc.get("validity_rules", {}).items()]
    lines.append("mirror@reflection: the full reflection (k = 1) scored like a counterfactual")
    lines.append("¹ EfficientNet-Lite0 features: not comparable to published FID / LPIPS"
                 + ("; ² share within dlib's 0.6 same-person distance" if doc.get("identity") else ""))
    return "\n".join(lines)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
