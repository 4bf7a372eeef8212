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

from cfe_cli import __version__
from cfe_cli.errors import CfeError, InputError, NotImplementedYet

app = typer.Typer(
    name="cfe",
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

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Folder holding the datasets (default: $CFE_DATA_DIR).", show_default=False),
]
Device = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
Precision = Annotated[str, typer.Option(
    "--precision", help="fp32 (exact) or bf16: Mirror-CFE decodes in bfloat16, the optimisation methods autocast; "
    "verdicts stay float32 (faster on GPUs and CPUs with bf16 units).")]
Compile = Annotated[bool, typer.Option(
    "--compile", help="Mirror-CFE: torch.compile the decoder and classifier (~1 min once, then faster; large runs).")]


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
    """List every model found (weights/, ./weights, $CFE_WEIGHTS_DIR, ~/.cache/cfe/weights) and the
    buildable ones that cannot ship (CelebA)."""
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


def _pending(name: str, issue: str) -> None:
    raise NotImplementedYet(f"'cfe {name}' is not implemented yet ({issue})")


Model = Annotated[str, typer.Option("--model", help="Model name (weights/NAME) or folder.")]


UserClf = Annotated[str | None, typer.Option(
    "--classifier", help="Your own classifier: module:factory (with --weights) or a TorchScript file; "
    "--model then gives the data, classes and generators.")]
UserWeights = Annotated[Path | None, typer.Option("--weights", help="safetensors state dict for --classifier.")]
UserDecoder = Annotated[Path | None, typer.Option(
    "--decoder", help="Mirror-CFE decoder trained for --classifier (cfe train-gen ... --out FILE).")]
CspRho = Annotated[str | None, typer.Option(
    "--csp-rho", help="Mirror-CFE, skip decoders: CSP thresholds LOW,HIGH for this run instead of the decoder's "
                      "own (a lower LOW lets more of the image change near the reflection).")]
Residual = Annotated[bool, typer.Option(
    "--residual", help="Mirror-CFE: x_k = source + G(f_k) − G(f_s), the source's own pixels plus the decoder's "
                       "edit (k = 0 is the source exactly; keeps detail the decoder blurs).")]


@app.command("train-gen")
@handle_errors
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
    init: Annotated[Path | None, typer.Option("--init", help="mirror: fine-tune this decoder .safetensors.")] = None,
    lambda_cls: Annotated[float | None, typer.Option("--lambda-cls", help="mirror: classification-loss weight "
                                                     "(default 1).")] = None,
    lambda_adv: Annotated[float | None, typer.Option("--lambda-adv", help="mirror: adversarial-loss weight "
                                                     "(default 0.1).")] = None,
    k_cfe_share: Annotated[float | None, typer.Option("--k-cfe-share", help="mirror: share of training samples with "
                                                      "k drawn from U[0.5, 1] instead of U[0, 1] (default 0).")] = None,
    augment: Annotated[str | None, typer.Option("--augment", help="mirror: augmentation of the training images "
                                                "(names as for train-clf; default none).")] = None,
    precision: Annotated[str | None, typer.Option("--precision", help="mirror: fp32 or bf16 (bfloat16 autocast of "
                                                  "the forward passes; default fp32).")] = None,
    schedule: Annotated[str | None, typer.Option("--schedule", help="mirror: constant or cosine learning rate "
                                                 "(default constant).")] = None,
    disc: Annotated[str | None, typer.Option("--disc", help="mirror: discriminator, patch (PatchGAN) or class "
                                             "(class-conditional projection PatchGAN; default patch).")] = None,
    skips: Annotated[bool, typer.Option("--skips", help="mirror: decoder with the paper's skip-connection "
                                        "controller (SPE + CSP): the source's earlier-stage features pass "
                                        "through outside the class regions.")] = False,
    skip_stem: Annotated[bool, typer.Option("--skip-stem", help="mirror: also feed the classifier's "
                                            "full-resolution stem as a skip (implies --skips; with --init a "
                                            "decoder without it is grown into one with it).")] = False,
    csp_rho: Annotated[str | None, typer.Option("--csp-rho", help="mirror, skip decoders: the CSP mask's thresholds "
                                                "LOW,HIGH of rho(k) = clip(1 - k, LOW, HIGH) (default 0.1,0.5 or "
                                                "those of --init).")] = None,
    pairs: Annotated[str | None, typer.Option("--pairs", help="mirror: SOURCE:TARGET pairs to train more often, "
                                              "e.g. 8:3,3:8 (class names or indices).")] = None,
    pair_share: Annotated[float | None, typer.Option("--pair-share", help="mirror, with --pairs: share of a listed "
                                                     "source's samples that take the pair's target (default "
                                                     "0.5).")] = None,
    lr_d: Annotated[float | None, typer.Option("--lr-d", help="mirror: the discriminator's learning rate (default: "
                                               "--lr; larger gives two time-scale updates).")] = None,
    disc_rec: Annotated[bool | None, typer.Option("--disc-rec/--no-disc-rec", help="mirror: the discriminator "
                                                  "also scores the reconstructions as fakes (default on).")] = None,
    hard_share: Annotated[float | None, typer.Option("--hard-share", help="mirror: share of each batch drawn from "
                                                     "the training images the classifier is unsure of (default "
                                                     "0).")] = None,
    hard_below: Annotated[float | None, typer.Option("--hard-below", help="mirror, with --hard-share: unsure = top "
                                                     "class probability below this (default 0.7).")] = None,
    time_limit: Annotated[float | None, typer.Option("--time-limit", help="mirror: stop training after this many "
                                                     "seconds and save (cosine schedules decay over it).")] = None,
    width: Annotated[int | None, typer.Option("--width", help="mirror: the decoder's channels at the feature "
                                              "map's size, halved per octave (default 64, or --init's).")] = None,
    min_width: Annotated[int | None, typer.Option("--min-width", help="mirror: the fewest channels the halving "
                                                  "stops at (default 32, or --init's).")] = None,
    spe_upsample: Annotated[str | None, typer.Option("--spe-upsample", help="mirror, skip decoders: how SPE "
                                                     "resizes its features to each skip, nearest (default, "
                                                     "blocks) or bilinear (or --init's).")] = None,
    adv_focus: Annotated[str | None, typer.Option("--adv-focus", help="mirror, skip decoders: which "
                                                  "discriminator patches of a decoded image are fakes, image "
                                                  "(all; default) or edit (those in the CSP mask).")] = None,
    spe_grid: Annotated[int | None, typer.Option("--spe-grid", help="mirror, skip decoders: the grid SPE pools "
                                                 "the source's skips to, in cells (default 0: the feature map's "
                                                 "size, or --init's).")] = None,
    lambda_perc: Annotated[float | None, typer.Option("--lambda-perc", help="mirror: weight of a perceptual "
                                                      "reconstruction loss in the classifier's own stage "
                                                      "features (default 0).")] = None,
    rec_mask_weight: Annotated[float | None, typer.Option(
        "--rec-mask-weight", help="mirror, skip decoders: L_rec's pixels inside the k = 0 CSP mask (what the "
                                  "decoder redraws even at k = 0) count this many times (default 1).")] = None,
    lambda_match: Annotated[float | None, typer.Option("--lambda-match", help="mirror: weight of L_match, decoded "
                                                       "images' stage statistics vs real images of their class "
                                                       "(default 0).")] = None,
    device: Device = "auto",
    data_dir: DataDir = None,
) -> None:
    """Train a generator against a model's frozen classifier (writes weights/NAME/<method>.safetensors)."""
    from cfe_cli import api

    fields = {"mirror": ("epoch", "cls", "adv", "rec", "fea", "tri", "d") + (("perc",) if lambda_perc else ())
              + (("match",) if lambda_match else ()),
              "cvae": ("epoch", "attr_bce", "rec", "kl", "edit_bce")}.get(method, ("epoch", "rec", "kl"))
    with progress_bar(f"train-gen {method}", fields) as update:
        r = api.train_gen(model, method=method, epochs=epochs, batch_size=batch_size, lr=lr, device=device,
                          data_dir=data_dir, seed=seed, max_steps=max_steps, classifier=classifier, weights=weights,
                          out=out, init=init, lambda_cls=lambda_cls, lambda_adv=lambda_adv, k_cfe_share=k_cfe_share,
                          augment=augment, precision=precision, schedule=schedule, disc=disc,
                          skips=skips, skip_stem=skip_stem, csp_rho=_parse_rho(csp_rho), pairs=pairs,
                          pair_share=pair_share, lr_d=lr_d, disc_rec=disc_rec, hard_share=hard_share,
                          hard_below=hard_below, time_limit=time_limit, width=width, min_width=min_width,
                          spe_upsample=spe_upsample, adv_focus=adv_focus, spe_grid=spe_grid,
                          lambda_perc=lambda_perc, rec_mask_weight=rec_mask_weight, lambda_match=lambda_match,
                          command=command_line(),
                          progress=update)
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


Inputs = Annotated[list[str], typer.Argument(help="Image files, folders (recursive) or DATASET:SPLIT:INDEX.")]
Target = Annotated[str | None, typer.Option("--target", help="Target class name or index (default: runner-up).")]
Method = Annotated[str, typer.Option("--method", help="mirror, attack, gci, cecas or pgd.")]
Steps = Annotated[int | None, typer.Option("--steps", help="Step cap of the optimisation methods.")]
Lr = Annotated[float | None, typer.Option("--lr", help="Adam learning rate of the latent methods.")]
Threshold = Annotated[float, typer.Option("--threshold", help="Target probability the optimisation stops at.")]
Lam = Annotated[float | None, typer.Option("--lambda", help="GCI: weight λ of the classification loss.")]
PNorm = Annotated[float | None, typer.Option("--p", help="GCI: exponent p of the proximity term.")]
Alpha = Annotated[float | None, typer.Option("--alpha", help="CECAS: weight of the spurious-factor penalty.")]
Eps = Annotated[float | None, typer.Option("--eps", help="PGD: ε-ball radius (default 0.3 L∞, 3.0 L2).")]
Norm = Annotated[str | None, typer.Option("--norm", help="PGD: linf or l2.")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed (runs repeat exactly).")]


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
Out = Annotated[Path, typer.Option("--out", help="Output folder.")]
Label = Annotated[str | None, typer.Option("--label", help="Ground-truth class of file inputs.")]
Batch = Annotated[int, typer.Option("--batch-size", help="Inputs per batch.")]
Strict = Annotated[bool, typer.Option("--strict", help="Refuse images of another size instead of resizing.")]
Resume = Annotated[bool, typer.Option("--resume", help="Skip inputs whose outputs in --out are complete.")]


def _report(r: dict[str, Any], what: str) -> None:
    for w in r["warnings"]:
        err_console.print(_tagged("warning:", "yellow", f" {w}"), highlight=False)
    if r["results"]:
        t = Table(title=what)
        for col in ("name", "source", "target", "k / steps", "CF pred", "third", "valid", "L1"):
            t.add_column(col)

        def conf(pred: Any, c: Any) -> str:
            return "-" if pred is None else f"{pred} ({c:.2f})"

        for rec in r["results"][:50]:
            k = (f"k={rec['first_cfe_k']:.2f}" if rec.get("first_cfe_k") is not None
                 else str(rec["steps"]) if "steps" in rec else "-")
            third = (conf(rec["reflection_pred"], rec["reflection_conf"]) if rec.get("reflection_pred")
                     else conf(rec.get("reconstruction_pred"), rec.get("reconstruction_conf")))
            t.add_row(rec["name"], conf(rec["source_pred"], rec["source_conf"]), str(rec["target"]), k,
                      conf(rec["cf_pred"], rec["cf_conf"]), third,
                      Text("yes", style="green") if rec["valid"] else Text("no", style="red"),
                      "-" if rec["l1"] is None else f"{rec['l1']:.3f}")
        if len(r["results"]) > 50:
            t.caption = f"first 50 of {len(r['results'])} rows; all in metrics.json"
        console.print(t)
    for f in r["failures"]:
        err_console.print(_tagged("failed:", "red", f" {f['input']}: {f['error']}"), highlight=False, soft_wrap=True)
    n_ok = sum(1 for rec in r["results"] if rec["valid"])
    skipped = f", {r['skipped']} already done (--resume)" if r.get("skipped") else ""
    console.print(f"{len(r['results'])} explained, {n_ok} valid, {len(r['failures'])} failed{skipped} "
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
    video: Annotated[bool, typer.Option("--video", help="Also write the MP4 morph video of each input.")] = False,
    attributions: Annotated[bool, typer.Option("--attributions", help="Latent methods: probe scores + chart.")] = False,
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
    out: Out = Path("out"),
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
                           lpips_weights=lpips_weights, command=command_line(), progress=update)
    cols = [("n", "n", "{}"), ("valid", "Val", "{:.3f}"), ("denoised_valid", "D.Val", "{:.3f}"),
            ("oracle_valid", "O.Val", "{:.3f}"), ("oracle_effnet", "O.Eff", "{:.3f}"),
            ("oracle_effnet_real", "O.Eff real", "{:.3f}"), ("fail_pct", "%Fail", "{:.1f}"), ("l1", "L1", "{:.3f}"),
            ("l2", "L2", "{:.3f}"), ("sparsity", "Spars.", "{:.3f}"), ("ssim", "SSIM", "{:.3f}"),
            ("cout", "COUT", "{:.3f}"), ("fid", "FID", "{:.2f}"), ("lpips", "LPIPS", "{:.3f}"),
            ("fd_effnetlite0", "FD-eff¹", "{:.2f}"), ("dfd_effnetlite0", "DFD-eff¹", "{:.3f}"),
            ("fva_dlib", "FVA²", "{:.3f}"), ("steps_mean", "steps", "{:.1f}"), ("cf_per_second", "CF/s", "{:.1f}")]
    t = Table(title=f"evaluate {doc['dataset']} ({doc['split']})",
              caption="¹ EfficientNet-Lite0 features: not comparable to published FID / LPIPS"
              + ("; ² share within dlib's 0.6 same-person distance" if doc.get("identity") else ""))
    cols = [c for c in cols if any(r.get(c[0]) is not None for r in doc["rows"])]
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
