"""The Method contract, the registry and the shared optimisation method.

Every method is one class registered by name::

    @register("pgd")
    class PGD(OptimisationMethod):
        Config = PGDConfig          # frozen dataclass: its defaults are written once, here
        second_name = "perturbation"
        ...hooks (init, decode, loss, step, project, finalize)

and is used the same way, whatever its search::

    method = get_method("pgd").load(setup, config)   # loads what it needs from the model folder
    result = method.explain(x, target)               # -> CounterfactualResult

A config field that the CLI exposes carries ``metadata={"flag": "--lambda"}``; options are
checked against the chosen methods' configs (:func:`split_options`), so an option no chosen
method takes is a one-line error instead of being recorded and ignored.
"""

from __future__ import annotations

import os
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import torch

from cfe_cli import engine
from cfe_cli.errors import InputError
from cfe_cli.results import CounterfactualResult, Frames

Tensor = torch.Tensor
METHODS: dict[str, type[Method]] = {}
BUILTIN = ("mirror", "latent_attack", "gci", "cecas", "pgd")  # modules of the built-in methods


def register(name: str) -> Any:
    """Class decorator: add a :class:`Method` to :data:`METHODS` under ``name``."""

    def wrap(cls: type[Method]) -> type[Method]:
        if name in METHODS and METHODS[name] is not cls:
            raise ValueError(f"method '{name}' is already registered")
        cls.name = name
        METHODS[name] = cls
        return cls

    return wrap


def get_method(name: str) -> type[Method]:
    """The registered class of ``name``; an unknown name is an InputError listing the known ones."""
    _load_builtin()
    if name not in METHODS:
        raise InputError(f"unknown method '{name}'; available: {', '.join(METHODS)}")
    return METHODS[name]


def available_methods() -> list[str]:
    """Names accepted by ``--method``, in registration order."""
    _load_builtin()
    return list(METHODS)


def _load_builtin() -> None:
    """Import the built-in method modules (each registers itself), in the order ``--method`` lists them."""
    import importlib

    for module in BUILTIN:
        importlib.import_module(f"cfe_cli.methods.{module}")


def option_flag(key: str) -> str:
    """The CLI flag of a config field (``lam`` -> ``--lambda``), from any method's metadata."""
    for cls in METHODS.values():
        for f in fields(cls.Config):
            if f.name == key and "flag" in f.metadata:
                return str(f.metadata["flag"])
    return "--" + key.replace("_", "-")


def option_owners(key: str) -> list[str]:
    """The registered methods whose config has the field ``key``."""
    _load_builtin()
    return [n for n, cls in METHODS.items() if key in {f.name for f in fields(cls.Config)}]


def split_options(methods: list[str], options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Give each method the options its config takes; an option none of them takes is an error.

    Returns ``{method: {field: value}}``. ``None`` values (flags not given) are dropped.
    """
    given = {k: v for k, v in options.items() if v is not None}
    out: dict[str, dict[str, Any]] = {}
    for m in methods:
        names = {f.name for f in fields(get_method(m).Config)}
        out[m] = {k: v for k, v in given.items() if k in names}
    for k in given:
        if not any(k in out[m] for m in methods):
            owners = option_owners(k)
            who = f"methods that take it: {', '.join(owners)}" if owners else "no method takes it"
            raise InputError(f"{option_flag(k)} is not an option of --method {','.join(methods)} ({who})")
    return out


@dataclass
class Setup:
    """What a method may load its networks from: the model folder and the explained classifier.

    Attributes:
        folder: the model folder; classifier: the loaded classifier (``LoadedClassifier``);
        device; threshold τ the optimisation methods stop at; precision ``fp32``/``bf16``;
        compile (Mirror-CFE); seed; decoder: a Mirror-CFE decoder file for a user's classifier.
    """

    folder: Path
    classifier: Any
    device: torch.device
    threshold: float = 0.75
    precision: str = "fp32"
    compile: bool = False
    seed: int = 0
    decoder: str | os.PathLike[str] | None = None


class Method:
    """A counterfactual method: ``explain(x, target) -> CounterfactualResult``.

    Subclasses set ``Config`` (a frozen dataclass), ``second_name`` (what their second image
    is) and ``validity_rule`` (when a counterfactual counts as found), and implement
    :meth:`load` and :meth:`explain`.
    """

    name: ClassVar[str] = "base"
    Config: ClassVar[type] = object
    second_name: ClassVar[str] = "reconstruction"
    steps_name: ClassVar[str] = "steps"
    validity_rule: ClassVar[str] = ""
    uses_threshold: ClassVar[bool] = False
    supports_compile: ClassVar[bool] = False
    probes: Any = None

    @classmethod
    def make_config(cls, options: dict[str, Any] | None = None) -> Any:
        """The method's config with ``options`` (field names) over its defaults; unknown keys are errors."""
        opts = {k: v for k, v in (options or {}).items() if v is not None}
        names = {f.name for f in fields(cls.Config)}
        bad = [k for k in opts if k not in names]
        if bad:
            split_options([cls.name], opts)  # raises the one-line error naming the owners
        return cls.Config(**opts)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Field -> default of the method's config (for ``cfe methods`` and the docs)."""
        out = {}
        for f in fields(cls.Config):
            out[f.name] = None if f.default is MISSING else f.default
        return out

    @classmethod
    def load(cls, setup: Setup, config: Any) -> Method:
        """Build the method for ``setup``'s classifier, loading its generator from the folder."""
        raise NotImplementedError

    def explain(self, x: Tensor, target: Tensor | None = None, *, probs: Tensor | None = None,
                frames: int = 0) -> CounterfactualResult:
        """Counterfactuals of ``x (B, C, H, W)`` towards ``target (B,)`` (default: the runner-up).

        ``probs (B, K)``: the classifier's probabilities on ``x`` when the caller has them
        already; ``frames``: also return the path as ``frames`` evenly spaced images.
        """
        raise NotImplementedError


class OptimisationMethod(Method, engine.Objective):
    """A method run by the batched engine: subclasses only write the objective's hooks."""

    uses_threshold = True
    validity_rule = "the engine stopped with p_target >= threshold and argmax = target"

    def __init__(self, config: Any = None, *, generator: torch.nn.Module | None = None,
                 classifier: torch.nn.Module | None = None, threshold: float = 0.75, amp: bool = False,
                 seed: int = 0) -> None:
        self.config = config if config is not None else self.Config()
        self.generator = generator
        self.classifier = classifier
        self.threshold, self.amp, self.seed = threshold, amp, seed

    @classmethod
    def load(cls, setup: Setup, config: Any) -> Method:
        return cls(config, **cls._runtime(setup))

    @staticmethod
    def _runtime(setup: Setup) -> dict[str, Any]:
        """The run's settings every optimisation method takes from the setup."""
        return {"classifier": setup.classifier.model, "threshold": setup.threshold, "seed": setup.seed,
                "amp": setup.precision == "bf16"}

    def second_image(self, x: Tensor, x_cf: Tensor, ctx: engine.Context) -> Tensor:
        """The method's second image (``second_name``); latent methods: the reconstruction G(E(x))."""
        return self.decode(ctx.v0, ctx)  # type: ignore[arg-type]

    @torch.inference_mode()
    def _predict(self, x: Tensor) -> Tensor:
        return self.classifier(x).softmax(1)  # type: ignore[misc]

    def explain(self, x: Tensor, target: Tensor | None = None, *, probs: Tensor | None = None,
                frames: int = 0) -> CounterfactualResult:
        probs = self._predict(x) if probs is None else probs
        source = probs.argmax(1)
        if target is None:
            target = probs.topk(2, dim=1).indices[:, 1]
        target = target.to(x.device)
        max_steps = int(self.config.max_steps)
        cfg = engine.EngineConfig(max_steps=max_steps, threshold=self.threshold, record_every=1 if frames else 0,
                                  amp=self.amp)
        torch.manual_seed(self.seed)
        ctx = engine.Context(self.classifier, x, source, target)  # type: ignore[arg-type]
        out = engine.run(self, ctx, cfg)
        with torch.inference_mode():
            second = self.second_image(x, out.x_cf, ctx)
            second_probs = self._predict(second)
        latent = self.generator is not None
        return CounterfactualResult(
            x_cf=out.x_cf, found=out.success, source=source, target=target, source_probs=probs,
            cf_probs=out.logits.softmax(1), second=second, second_probs=second_probs,
            second_name=self.second_name, steps=out.steps, steps_name=self.steps_name, p_target=out.p_target,
            z0=ctx.v0 if latent else None, z_cf=out.v_cf if latent else None,
            frames=self._frames(out, frames) if frames and out.frames is not None else None)

    def _frames(self, out: engine.EngineResult, frames: int) -> Frames:
        """``frames`` evenly spaced steps of the trajectory (it runs until the slowest sample is done)."""
        assert out.frames is not None and out.frame_steps is not None
        pick = torch.linspace(0, out.frames.shape[0] - 1, frames).round().long()
        fr = out.frames[pick].transpose(0, 1)  # (B, T, C, H, W)
        pred = self._predict(fr.flatten(0, 1)).view(fr.shape[0], fr.shape[1], -1)  # (B, T, K)
        return Frames(ks=out.frame_steps[pick].float(), x=fr, predicted=pred, intended=None, x_label="step")


class LatentMethod(OptimisationMethod):
    """Shared by the latent methods: z0 = μ(x), decode = G(z), z clipped to the prior's range;
    loads the model folder's VAE and its attribution probes."""

    second_name = "reconstruction"

    @classmethod
    def load(cls, setup: Setup, config: Any) -> Method:
        from cfe_cli.models.loading import channels_last
        from cfe_cli.models.weights import load_probes, load_vae

        gen, _ = load_vae(setup.folder, setup.device)
        channels_last(gen)
        m = cls._with_generator(setup, config, gen)
        m.probes = load_probes(setup.folder)
        return m

    @classmethod
    def _with_generator(cls, setup: Setup, config: Any, generator: torch.nn.Module) -> LatentMethod:
        return cls(config, generator=generator, **cls._runtime(setup))

    @property
    def lr(self) -> float:  # type: ignore[override]
        return float(self.config.lr)

    def init(self, ctx: engine.Context) -> Tensor:
        return self.generator.encode(ctx.x)[0]  # type: ignore[union-attr]

    def decode(self, v: Tensor, ctx: engine.Context) -> Tensor:
        return self.generator.decode(v)  # type: ignore[union-attr]

    def project(self, v: Tensor, ctx: engine.Context) -> Tensor:
        return v.clamp(-self.config.z_clip, self.config.z_clip)
