"""The Method contract, parametrised over the registry: every method returns a
CounterfactualResult of the documented shapes, batched equals one by one, and adding a method
is one class (the example below is registered from this test only)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from cfe_cli.cli import app
from cfe_cli.data import load_dataset
from cfe_cli.engine import Context
from cfe_cli.errors import InputError
from cfe_cli.explainer import Explainer
from cfe_cli.methods import METHODS, OptimisationMethod, available_methods, get_method, register, split_options
from cfe_cli.results import CounterfactualResult
from tests.conftest import need

BUILTIN = ["mirror", "attack", "gci", "cecas", "pgd"]
FAST = {"attack": {"max_steps": 30}, "gci": {"max_steps": 30}, "cecas": {"max_steps": 30}, "pgd": {"max_steps": 30}}


@dataclass(frozen=True)
class NudgeConfig:
    nudge_step: float = field(default=0.05, metadata={"flag": "--nudge-step", "help": "signed-gradient step"})
    max_steps: int = field(default=40, metadata={"flag": "--steps", "help": "step budget"})


class Nudge(OptimisationMethod):
    """A toy pixel method (signed gradient steps, no ball): the whole of a new method."""

    Config = NudgeConfig
    optimizer = "custom"
    second_name = "perturbation"

    def init(self, ctx: Context) -> torch.Tensor:
        return torch.zeros_like(ctx.x)

    def decode(self, v: torch.Tensor, ctx: Context) -> torch.Tensor:
        return (ctx.x + v).clamp(0, 1)

    def loss(self, v: torch.Tensor, x: torch.Tensor, logits: torch.Tensor, ctx: Context) -> torch.Tensor:
        return F.cross_entropy(logits, ctx.target, reduction="none")

    def step(self, v: torch.Tensor, grad: torch.Tensor, ctx: Context) -> torch.Tensor:
        return v - self.config.nudge_step * grad.sign()

    def second_image(self, x: torch.Tensor, x_cf: torch.Tensor, ctx: Context) -> torch.Tensor:
        return (0.5 + 0.5 * (x_cf - x)).clamp(0, 1)


@pytest.fixture
def nudge():
    register("nudge")(Nudge)
    yield "nudge"
    METHODS.pop("nudge", None)


def _x(n: int = 4) -> torch.Tensor:
    return load_dataset("mnist", "test", root=need("mnist")).images[:n]


def _check_contract(res: CounterfactualResult, x: torch.Tensor, k_classes: int) -> None:
    B, C, H, W = x.shape
    assert isinstance(res, CounterfactualResult)
    assert res.x_cf.shape == (B, C, H, W) and res.second.shape == (B, C, H, W)
    assert res.found.shape == (B,) and res.found.dtype == torch.bool
    assert res.source.shape == res.target.shape == res.steps.shape == (B,)
    assert res.source_probs.shape == res.cf_probs.shape == res.second_probs.shape == (B, k_classes)
    assert bool((res.source != res.target).all())
    # found means the classifier really assigns x_cf to the target
    assert bool((res.cf_probs.argmax(1)[res.found] == res.target[res.found]).all())


def test_registry_lists_the_builtin_methods():
    assert set(BUILTIN) <= set(available_methods())
    for name in BUILTIN:
        cls = get_method(name)
        assert cls.name == name and cls.validity_rule and cls.second_name in ("reflection", "reconstruction",
                                                                              "perturbation")
    with pytest.raises(InputError, match="unknown method 'nope'; available: mirror"):
        get_method("nope")


@pytest.mark.parametrize("name", BUILTIN)
def test_contract_shapes_and_frames(tiny_model, name):
    x = _x(3)
    ex = Explainer(tiny_model, name, device="cpu", threshold=0.6, **FAST.get(name, {}))
    res = ex.run(x, None, video_frames=5)
    _check_contract(res, x, len(ex.classes))
    assert res.frames is not None and res.frames.x.shape[:2] == (3, 5) and res.frames.predicted.shape == (3, 5, 10)
    assert (res.k is not None) == (name == "mirror")
    assert (res.z0 is not None) == (name in ("attack", "gci", "cecas"))


@pytest.mark.parametrize("name", BUILTIN)
def test_batched_equals_one_by_one(tiny_model, name):
    x = _x(4)
    # float32 (auto picks bf16 on CPUs with native bf16 units, whose kernels round differently per batch size)
    ex = Explainer(tiny_model, name, device="cpu", threshold=0.6, precision="fp32", **FAST.get(name, {}))
    if name != "mirror":  # float64, as in test_engine: Adam's normalised steps amplify float32 summation-order bits
        x = x.double()
        ex.impl.classifier.double()
        if ex.impl.generator is not None:
            ex.impl.generator.double()
    full = ex.run(x, None)
    for i in range(4):
        one = ex.run(x[i:i + 1], None)
        assert bool(one.found[0]) == bool(full.found[i]), (name, i)
        assert int(one.target[0]) == int(full.target[i])
        assert int(one.steps[0]) == int(full.steps[i]), (name, i)
        torch.testing.assert_close(one.x_cf[0], full.x_cf[i], atol=2e-3 if name == "mirror" else 1e-6, rtol=1e-5,
                                   msg=name)


def test_a_method_is_one_class_registered_from_a_test(tiny_model, nudge, tmp_path):
    x = _x(4)
    ex = Explainer(tiny_model, nudge, device="cpu", threshold=0.6, nudge_step=0.1)
    res = ex.run(x, None)
    _check_contract(res, x, len(ex.classes))
    assert float(res.found.float().mean()) >= 0.5
    # the CLI takes it like a built-in method: files, metrics.json, its option refused elsewhere
    r = CliRunner().invoke(app, ["explain", "mnist:test:0", "mnist:test:1", "--model", str(tiny_model),
                                 "--method", nudge, "--set", "nudge_step=0.1", "--out", str(tmp_path),
                                 "--device", "cpu"])
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "metrics.json").read_text())
    assert doc["method"] == "nudge" and doc["options"] == {"nudge_step": 0.1} and len(doc["results"]) == 2
    assert list(tmp_path.glob("*_perturbation.png"))
    with pytest.raises(InputError, match=r"--nudge-step is not an option of --method pgd \(methods that take it: "
                                         r"nudge\)"):
        Explainer(tiny_model, "pgd", device="cpu", nudge_step=1.0)


def test_an_option_of_another_method_is_a_one_line_error(tiny_model, tmp_path):
    assert split_options(["mirror", "pgd"], {"eps": 0.2, "residual": True, "lam": None}) == {
        "mirror": {"residual": True}, "pgd": {"eps": 0.2}}
    r = CliRunner().invoke(app, ["explain", "mnist:test:0", "--model", str(tiny_model), "--method", "pgd",
                                 "--lambda", "5", "--out", str(tmp_path), "--device", "cpu"])
    assert r.exit_code == 1
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert lines == ["error: --lambda is not an option of --method pgd (methods that take it: gci)"], r.output
    assert not (tmp_path / "metrics.json").exists()
