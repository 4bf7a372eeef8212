"""Commands that train: train-clf and train-gen (the decoder's flags generated from MirrorTrainConfig's table)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any

import typer

from cfe_cli.cli.app import (  # the shared options and helpers
    PANEL_DEC,
    DataDir,
    Device,
    F,
    Model,
    UserClf,
    UserWeights,
    _parse_rho,
    _tagged,
    app,
    command_line,
    console,
    handle_errors,
    progress_bar,
    rank0,
)


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
    adv_eps: Annotated[float, typer.Option("--adv-eps", help="Adversarial training: the L2 radius of the PGD "
                                           "examples (pixels in [0, 1]; e.g. 0.5; 0 = off). Gives a robust "
                                           "classifier, e.g. a realism critic for train-gen --critic.")] = 0.0,
    adv_steps: Annotated[int, typer.Option("--adv-steps", help="with --adv-eps: PGD steps per batch.")] = 3,
    device: Device = "auto",
    data_dir: DataDir = None,
) -> None:
    """Train a GAP + linear-head classifier, evaluate it on the test split, save safetensors."""
    from cfe_cli import api

    with progress_bar(f"train {dataset}", ("epoch", "loss", "acc")) as update:
        r = api.train_clf(dataset, out=out, arch=arch, epochs=epochs, batch_size=batch_size, lr=lr, device=device,
                          data_dir=data_dir, size=size, seed=seed, kind="oracle" if oracle else "classifier", init=init,
                          augment=augment, label_smoothing=label_smoothing, ema=ema, max_steps=max_steps,
                          adv_eps=adv_eps, adv_steps=adv_steps, command=command_line(), progress=update)
    if not rank0():  # under torchrun rank 0 reports (and saved the file)
        return
    val = f", val accuracy {r['val_accuracy'] * 100:.2f} %" if r["val_accuracy"] is not None else ""
    if r.get("robust_test_accuracy") is not None:
        val += f", robust accuracy {r['robust_test_accuracy'] * 100:.2f} % (L2 PGD, eps {adv_eps})"
    console.print(_tagged(f"test accuracy {r['test_accuracy'] * 100:.2f} %", "green",
                          f"{val} ({r['epochs']} epochs, {r['seconds']:.0f} s) -> {r['path']}"))


def _with_decoder_flags(fn: F) -> F:
    """Add one ``--flag`` per entry of ``training.generators.MIRROR_FLAGS`` to a command (declared once,
    there, beside the checks; defaults are MirrorTrainConfig's) and hand them to ``fn`` as ``decoder``."""
    import inspect

    from cfe_cli.config import MIRROR_FLAGS

    extra = []
    for name, (typ, text) in MIRROR_FLAGS.items():
        flag = "--" + name.replace("_", "-")
        decl = f"{flag}/--no-{name.replace('_', '-')}" if typ is bool else flag
        ann = Annotated[typ | None, typer.Option(decl, help=text, rich_help_panel=PANEL_DEC, show_default=False)]
        extra.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ann))
    import typing

    sig = inspect.signature(fn)
    hints = typing.get_type_hints(fn, include_extras=True)  # the string annotations, resolved for Typer
    params = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in sig.parameters.values()
              if p.name != "decoder"]

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
    fresh_state: Annotated[bool, typer.Option(
        "--fresh-state", rich_help_panel=PANEL_DEC,
        help="With --init: start the discriminator and optimisers afresh instead of continuing the "
             "<decoder>.train-state.safetensors saved beside it.")] = False,
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
                                                                            else ())
              + (("match",) if opts.get("lambda_match") else ()) + (("critic",) if opts.get("lambda_critic") else ()),
              "cvae": ("epoch", "attr_bce", "rec", "kl", "edit_bce")}.get(method, ("epoch", "rec", "kl"))
    with progress_bar(f"train-gen {method}", fields) as update:
        r = api.train_gen(model, method=method, epochs=epochs, batch_size=batch_size, lr=lr, device=device,
                          data_dir=data_dir, seed=seed, max_steps=max_steps, classifier=classifier, weights=weights,
                          out=out, init=init, time_limit=time_limit, fresh_state=fresh_state, config=config,
                          settings=settings,
                          command=command_line(), progress=update, **opts)
    _print_generator(method, r)


def _print_generator(method: str, r: dict[str, Any]) -> None:
    if not rank0():  # under torchrun rank 0 reports (and saved the file)
        return
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
    st = r.get("state") or {}
    if st.get("from"):
        console.print(f"continued {', '.join(st['continued']) or 'nothing (it did not fit)'} from {st['from']}")
    if r.get("state_path"):
        console.print(f"training state (discriminator, optimisers) -> {r['state_path']}: --init {r['path']} "
                      "continues it")
    last = r["history"][-1] if r["history"] else {}
    if "stopped_at_step" in last:
        console.print(f"stopped at the time limit ({last['time_limit']:g} s) after {last['stopped_at_step']} of "
                      f"{last['of_steps']} steps")
