"""Commands that explain: explain, animate and evaluate, with their tables and legends."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from cfe_cli.cli.app import (  # the shared options and helpers
    PANEL_IO,
    Alpha,
    Backend,
    Batch,
    Compile,
    CspRho,
    DataDir,
    Device,
    Eps,
    Inputs,
    Label,
    Lam,
    Lr,
    Method,
    Model,
    Norm,
    Out,
    PNorm,
    Precision,
    Residual,
    Resume,
    Seed,
    Settings,
    Shard,
    Steps,
    Strict,
    Target,
    Threshold,
    UserClf,
    UserDecoder,
    UserWeights,
    _options,
    _tagged,
    app,
    command_line,
    console,
    err_console,
    handle_errors,
    progress_bar,
    rank0,
)
from cfe_cli.cli.report import ReportFlag, write_and_print
from cfe_cli.legend import EVAL_COLUMNS, EVAL_LEGEND, FOOTNOTES, REFLECTION_NOTE

Wide = Annotated[bool, typer.Option("--wide", rich_help_panel=PANEL_IO,
                                    help="Show every column in full even past the terminal's width.")]
AsJson = Annotated[bool, typer.Option("--json", rich_help_panel=PANEL_IO,
                                      help="Print the table's rows (every field) as JSON.")]
SECOND_HEAD = {"reflection": "reflection (k=1)", "reconstruction": "reconstruction", "perturbation": "perturbation"}


SECOND_SHORT = {"reflection": "refl.", "reconstruction": "recon.", "perturbation": "pert."}
NAME_FOLD = 12  # the name column may fold to this width before other columns are abbreviated or dropped


def _cf_table(recs: list[dict[str, Any]], what: str, wide: bool) -> None:
    """explain's table: full headers when they fit, else abbreviated, else without the second image's column;
    the legend says which (``wide``: always the full table)."""
    from cfe_cli.cli.tables import print_wide, table_width

    second = next((k[:-5] for k in ("reflection_pred", "reconstruction_pred") if recs[0].get(k)), None)
    mirror = "first_cfe_k" in recs[0] and recs[0].get("decodes") is not None

    def conf(pred: Any, c: Any) -> str:
        return "-" if pred is None else f"{pred} ({c:.2f})"

    rows = [[rec["name"], conf(rec["source_pred"], rec["source_conf"]), str(rec["target"]),
             (f"{rec['first_cfe_k']:.2f}" if rec.get("first_cfe_k") is not None
              else str(rec["steps"]) if "steps" in rec else "-"),
             conf(rec["cf_pred"], rec["cf_conf"]),
             conf(rec.get(f"{second}_pred"), rec.get(f"{second}_conf")) if second else None,
             Text("yes", style="green") if rec["valid"] else Text("no", style="red"),
             "-" if rec["l1"] is None else f"{rec['l1']:.3f}"] for rec in recs[:50]]
    k_head = "k of 1st CFE" if mirror else "steps"
    full = ["name", "source (conf)", "target", k_head, "counterfactual (conf)",
            SECOND_HEAD[second] + " (conf)" if second else None, "valid", "L1"]
    short = ["name", "src", "tgt", "k 1st" if mirror else "steps", "CF", SECOND_SHORT[second] if second else None,
             "valid", "L1"]
    abbrev = ("src: source (conf); tgt: target; " + ("k 1st: k of the 1st CFE; " if mirror else "")
              + "CF: counterfactual (conf)"
              + (f"; {SECOND_SHORT[second]}: {SECOND_HEAD[second]} (conf)" if second else ""))
    variants = [(full, ""), (short, abbrev)]
    if second:
        variants.append(([*short[:5], None, *short[6:]], variants[1][1].rsplit(";", 1)[0] + f"; the {second} "
                         "column is not shown at this width (in metrics.json; --wide shows it)"))

    def build(heads: list[str | None], fold: int | None) -> Table:
        compact = heads is not full  # abbreviated headers, no vertical rules
        t = Table(title=what, **({"box": box.SIMPLE_HEAD, "padding": (0, 1)} if compact else {}))
        for i, head in enumerate(heads):
            if head is not None:
                t.add_column(head, overflow="fold", no_wrap=i > 0, max_width=fold if i == 0 else None,
                             min_width=NAME_FOLD if i == 0 else None)
        for row in rows:
            t.add_row(*[cell for cell, head in zip(row, heads, strict=True) if head is not None])
        return t

    heads, note = variants[0]
    if not wide:
        heads, note = next((v for v in variants if table_width(console, build(v[0], NAME_FOLD)) <= console.width),
                           variants[-1])
    t = build(heads, None)
    legend = ("valid: " + ("the 1st CFE exists — the first k on the 100-point path whose image the classifier "
                           "assigns to the target (argmax, no threshold); k = 0.5 is the mirror, 1 the full "
                           "reflection" if mirror else
                           "the optimisation reached --threshold on the target (and argmax = target)")
              + "; conf: the classifier's probability; L1: mean |x_cf − x| per pixel" + (f"\n{note}" if note else ""))
    print_wide(console, t, wide)
    # the legend is printed after the table, not as its caption: Rich wraps a caption at the console's width
    # but crops it at the table's, so a table narrower than the terminal lost a caption line's last letters
    console.print(legend + (f"\nfirst 50 of {len(recs)} rows; all in metrics.json" if len(recs) > 50 else ""),
                  highlight=False)


def _report(r: dict[str, Any], what: str, wide: bool = False, as_json: bool = False) -> None:
    """The run's table with a legend, the failed and skipped inputs, and the exit code (1 only on failures).

    Under torchrun only rank 0 reports (the merged run); a ``--shard`` run reports its part.
    """
    if not rank0():
        return
    for w in r["warnings"]:
        err_console.print(_tagged("warning:", "yellow", f" {w}"), highlight=False)
    if r.get("precision"):
        console.print(r["precision"], style="dim", highlight=False)
    recs = r["results"]
    if as_json:
        typer.echo(json.dumps({k: r.get(k) for k in ("results", "failures", "skipped", "metrics_path")}, indent=2,
                              default=str))
    elif recs:
        _cf_table(recs, what, wide)
    for f in r["failures"]:
        err_console.print(_tagged("failed:", "red", f" {f['input']}: {f['error']}"), highlight=False, soft_wrap=True)
    for sk in r.get("skipped", []):
        err_console.print(_tagged("skipped:", "yellow", f" {sk['input']}: {sk['reason']}"), highlight=False,
                          soft_wrap=True)
    n_ok = sum(1 for rec in recs if rec["valid"])
    resumed = f", {r['resumed']} already done (--resume)" if r.get("resumed") else ""
    n_skip = f", {len(r['skipped'])} skipped" if r.get("skipped") else ""
    if not as_json:
        console.print(f"{len(recs)} explained, {n_ok} valid, {len(r['failures'])} failed{n_skip}{resumed} "
                      f"-> {r['metrics_path']}")
        if r.get("part"):
            console.print(f"this shard's part is written; once every shard has finished: cfe merge "
                          f"{Path(r['metrics_path']).parent.parent}")
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
    shard: Shard = None,
    report: ReportFlag = False,
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
    backend: Backend = None,
    settings: Settings = None,
    precision: Precision = "auto",
    compile_: Compile = False,
    wide: Wide = False,
    as_json: AsJson = False,
    device: Device = "auto",
    data_dir: DataDir = None,
) -> None:
    """Explain images with counterfactuals: panel PNG, counterfactual PNG and metrics.json."""
    from cfe_cli import api

    with progress_bar("explain", ()) as update:
        r = api.explain(inputs, model=model, target=target, method=method, out=out, batch_size=batch_size,
                        device=device, label=label, data_dir=data_dir, video=video, strict=strict,
                        attributions=attributions, threshold=threshold, seed=seed, resume=resume,
                        options=_options(steps, lr, lam, p, alpha, eps, norm, csp_rho, residual, settings, backend),
                        classifier=classifier,
                        weights=weights, decoder=decoder, precision=precision, compile=compile_,
                        command=command_line(), shard=shard, progress=update)
    try:
        _report(r, "counterfactuals", wide, as_json)
    finally:  # also when failed inputs make the exit code 1
        if report and rank0() and not r.get("part"):  # torchrun: rank 0, merged; --shard: after cfe merge
            write_and_print([Path(r["metrics_path"]).parent], quiet=as_json)


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
    shard: Shard = None,
    report: ReportFlag = False,
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
    backend: Backend = None,
    settings: Settings = None,
    precision: Precision = "auto",
    compile_: Compile = False,
    wide: Wide = False,
    as_json: AsJson = False,
    device: Device = "auto",
    data_dir: DataDir = None,
) -> None:
    """Render the MP4 morph video (H.264, yuv420p) of each input's counterfactual path or trajectory."""
    from cfe_cli import api

    with progress_bar("animate", ()) as update:
        r = api.explain(inputs, model=model, target=target, method=method, out=out, batch_size=batch_size,
                        device=device, label=label, data_dir=data_dir, images=False, video=True, frames=frames,
                        fps=fps, size=size, strict=strict, threshold=threshold, seed=seed, resume=resume,
                        options=_options(steps, lr, lam, p, alpha, eps, norm, csp_rho, residual, settings, backend),
                        classifier=classifier,
                        weights=weights, decoder=decoder, precision=precision, compile=compile_,
                        command=command_line(), shard=shard, progress=update)
    try:
        _report(r, "videos", wide, as_json)
    finally:  # also when failed inputs make the exit code 1
        if report and rank0() and not r.get("part"):  # torchrun: rank 0, merged; --shard: after cfe merge
            write_and_print([Path(r["metrics_path"]).parent], quiet=as_json)


@app.command("merge")
@handle_errors
def merge(
    out: Annotated[Path, typer.Argument(help="The --out folder the explain/animate --shard I/N runs wrote into.")],
) -> None:
    """Combine the parts of --shard I/N explain/animate runs into one metrics.json and failures.json."""
    from cfe_cli import api

    doc = api.merge(out)
    n_ok = sum(1 for rec in doc["results"] if rec["valid"])
    console.print(f"merged {doc['merged_parts']} parts: {len(doc['results'])} explained, {n_ok} valid, "
                  f"{len(doc['failures'])} failed, {len(doc['skipped'])} skipped -> {doc['metrics_path']}")


@app.command("evaluate")
@handle_errors
def evaluate(
    model: Model,
    pairs: Annotated[str, typer.Option("--pairs", help="Comma-separated SOURCE:TARGET pairs, e.g. 8:3,3:8.")],
    method: Annotated[str, typer.Option("--method", help="One or more methods, comma-separated: "
                                        "mirror,attack,pgd.")] = "mirror",
    n: Annotated[int, typer.Option("--n", "--n-per-pair", help="Images per pair (predicted as the source); "
                                   "under torchrun write --n-per-pair (torchrun takes --n for its own --nnodes).")]
    = 1000,
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
    report: ReportFlag = False,
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
    backend: Backend = None,
    settings: Settings = None,
    precision: Precision = "auto",
    compile_: Compile = False,
    fid_weights: Annotated[Path | None, typer.Option(
        "--fid-weights", help="inception-2015-12-05.pt (TorchScript Inception-v3, sha256-checked): adds "
                              "real FID.")] = None,
    lpips_weights: Annotated[Path | None, typer.Option(
        "--lpips-weights", help="alexnet-owt-7be5be79.pth (torchvision AlexNet, sha256-checked): adds "
                                "real LPIPS.")] = None,
    wide: Wide = False,
    as_json: AsJson = False,
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
                           options=_options(steps, lr, lam, p, alpha, eps, norm, csp_rho, residual, settings, backend),
                           global_attributions=global_attr, classifier=classifier, weights=weights,
                           decoder=decoder, precision=precision, compile=compile_, fid_weights=fid_weights,
                           lpips_weights=lpips_weights, resume=resume, force=force, command=command_line(),
                           progress=update)
    if not rank0():  # rank 0 holds the gathered rows and prints them
        return
    if report:
        write_and_print([Path(doc["metrics_path"]).parent], quiet=True)
    if as_json:  # the table's rows with every metric
        typer.echo(json.dumps({"rows": doc["rows"] + doc["overall"], "metrics_path": doc["metrics_path"]}, indent=2))
        return
    _eval_table(doc, wide)
    for r in doc.get("references", []):
        real = "-" if r["fd_real_effnetlite0"] is None else f"{r['fd_real_effnetlite0']:.2f} (n={r['n_real']})"
        console.print(f"FD-eff¹ scale {r['pair']}: unchanged inputs {r['fd_inputs_effnetlite0']:.2f}, "
                      f"other real {r['pair'].split(':', 1)[1]} images {real}")
    for g in doc["global_rankings"]:
        top = ", ".join(f"{r['name']} {r['score']:+.3f}" for r in g["ranking"][:5])
        console.print(f"global attribution {g['method']} {g['pair']} (n={g['n']}): {top} -> {g['chart']}")
    console.print(f"precision {doc['precision']} ({doc['precision_asked']}: {doc['precision_reason']})", style="dim",
                  highlight=False)
    console.print(f"-> {doc['metrics_path']}")
    if report:
        console.print(f"report -> {Path(doc['metrics_path']).parent / 'index.html'}", highlight=False)


# at a narrow terminal these go first (they stay in metrics.json and --json); FID and LPIPS, computed only when
# their weights are passed, stay longest after validity
EVAL_DROP_ORDER = ("CF/s", "steps", "O.Eff real", "n", "COUT", "D.Val", "SSIM", "FD-eff¹", "O.Eff", "FVA²", "L1",
                   "LPIPS", "FID", "%Fail", "O.Val")


def _eval_table(doc: dict[str, Any], wide: bool) -> None:
    """The comparison table, as many columns as fit the terminal (``--wide``: all), and its legend."""
    from cfe_cli.cli.tables import fit_table, print_wide

    cols = [c for c in EVAL_COLUMNS if any(r.get(c[0]) is not None for r in doc["rows"])]
    fmts = {head: (key, fmt) for key, head, fmt in cols}

    def build(shown: list[str]) -> Table:
        t = Table(title=f"evaluate {doc['dataset']} ({doc['split']})", box=box.SIMPLE_HEAD, padding=(0, 1))
        t.add_column("method", no_wrap=True)
        t.add_column("pair", no_wrap=True)
        for head in shown:
            t.add_column(head, justify="right", no_wrap=True)
        for r in doc["rows"] + doc["overall"]:
            t.add_row(r["method"], r["pair"], *[("-" if r.get(fmts[h][0]) is None else fmts[h][1].format(
                r[fmts[h][0]])) for h in shown])
        return t

    _, dropped = fit_table(console, build, [c[1] for c in cols], EVAL_DROP_ORDER, wide)
    shown = [c[1] for c in cols if c[1] not in dropped]
    legend = _eval_legend(doc, set(shown))
    if dropped:
        legend += (f"\nnot shown at this width: {', '.join(dropped)} (in metrics.json; --wide or --json shows "
                   "every column)")
    print_wide(console, build(shown), wide)
    console.print(legend, highlight=False)  # after the table, not as its caption (see _cf_table)



def _eval_legend(doc: dict[str, Any], shown: set[str]) -> str:
    """One line per column shown, the validity rule of each method, and the footnotes."""
    lines = [f"{k}: {v}" for k, v in EVAL_LEGEND.items() if k in shown]
    lines += [f"{m}: valid = {rule}" for m, rule in doc.get("validity_rules", {}).items()]
    lines.append(REFLECTION_NOTE)
    lines.append(FOOTNOTES[0] + (f"; {FOOTNOTES[1]}" if doc.get("identity") else ""))
    return "\n".join(lines)
