"""Commands that explain: explain, animate and evaluate, with their tables and legends."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from cfe_cli.cli.app import (  # the shared options and helpers
    PANEL_IO,
    Alpha,
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

SECOND_HEAD = {"reflection": "reflection (k=1)", "reconstruction": "reconstruction", "perturbation": "perturbation"}


def _report(r: dict[str, Any], what: str) -> None:
    """The run's table with a legend, the failed and skipped inputs, and the exit code (1 only on failures).

    Under torchrun only rank 0 reports (the merged run); a ``--shard`` run reports its part.
    """
    if not rank0():
        return
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
            t.add_column(col, overflow="fold")

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
        t.caption_justify = "left"
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
    settings: Settings = None,
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
                        options=_options(steps, lr, lam, p, alpha, eps, norm, csp_rho, residual, settings),
                        classifier=classifier,
                        weights=weights, decoder=decoder, precision=precision, compile=compile_,
                        command=command_line(), shard=shard, progress=update)
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
    shard: Shard = None,
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
    settings: Settings = None,
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
                        options=_options(steps, lr, lam, p, alpha, eps, norm, csp_rho, residual, settings),
                        classifier=classifier,
                        weights=weights, decoder=decoder, precision=precision, compile=compile_,
                        command=command_line(), shard=shard, progress=update)
    _report(r, "videos")


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
    settings: Settings = None,
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
                           options=_options(steps, lr, lam, p, alpha, eps, norm, csp_rho, residual, settings),
                           global_attributions=global_attr, classifier=classifier, weights=weights,
                           decoder=decoder, precision=precision, compile=compile_, fid_weights=fid_weights,
                           lpips_weights=lpips_weights, resume=resume, force=force, command=command_line(),
                           progress=update)
    if not rank0():  # rank 0 holds the gathered rows and prints them
        return
    # the terminal shows the headline columns (the rest — L2, sparsity, PSNR, DFD, KD, timings — are in metrics.json)
    cols = [("n", "n", "{}"), ("valid", "Val", "{:.3f}"), ("denoised_valid", "D.Val", "{:.3f}"),
            ("oracle_valid", "O.Val", "{:.3f}"), ("oracle_effnet", "O.Eff", "{:.3f}"),
            ("oracle_effnet_real", "O.Eff real", "{:.3f}"), ("fail_pct", "%Fail", "{:.1f}"), ("l1", "L1", "{:.3f}"),
            ("ssim", "SSIM", "{:.3f}"), ("cout", "COUT", "{:.3f}"), ("fid", "FID", "{:.2f}"),
            ("lpips", "LPIPS", "{:.3f}"), ("fd_effnetlite0", "FD-eff¹", "{:.2f}"), ("fva_dlib", "FVA²", "{:.3f}"),
            ("steps_mean", "steps", "{:.1f}"), ("cf_per_second", "CF/s", "{:.1f}")]
    cols = [c for c in cols if any(r.get(c[0]) is not None for r in doc["rows"])]
    t = Table(title=f"evaluate {doc['dataset']} ({doc['split']})", caption=_eval_legend(doc, {c[1] for c in cols}),
              box=box.SIMPLE_HEAD, padding=(0, 1), caption_justify="left")
    t.add_column("method", no_wrap=True)
    t.add_column("pair", no_wrap=True)
    for _, head, _ in cols:
        t.add_column(head, justify="right", no_wrap=True)
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
    "O.Eff": "validity by oracle_effnet, a linear probe on EfficientNet-Lite0 ImageNet features nobody trains against",
    "O.Eff real": "the share of real target-class test images oracle_effnet labels as the target (its ceiling)",
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
    lines.append("mirror@reflection: the full reflection (k = 1) scored like a counterfactual; every other metric "
                 "(L2, sparsity, PSNR, KD, DFD, timings) is in metrics.json")
    lines.append("¹ EfficientNet-Lite0 features: not comparable to published FID / LPIPS"
                 + ("; ² share within dlib's 0.6 same-person distance" if doc.get("identity") else ""))
    return "\n".join(lines)
