"""--precision auto: bf16 only where the device runs it natively; the selection logic and this machine."""

from __future__ import annotations

import pytest
import torch

from cfe_cli import precision
from cfe_cli.errors import InputError

CPU = torch.device("cpu")


def test_cpu_flags_parse_linux_cpuinfo() -> None:
    info = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f amx_bf16\n\nprocessor\t: 1\nflags\t: fpu avx2\n"
    assert {"avx2", "avx512f", "amx_bf16"} <= precision.cpu_flags(info)
    assert precision.cpu_flags("") == set()


def test_auto_is_fp32_on_a_cpu_without_bf16_units() -> None:
    p = precision.resolve("auto", CPU, flags={"avx2", "fma"})
    assert (p.name, p.asked, p.warning) == ("fp32", "auto", None)
    assert "no native bfloat16" in p.reason


def test_auto_is_bf16_on_a_cpu_with_amx_when_not_probed() -> None:
    p = precision.resolve("auto", CPU, flags={"amx_bf16"}, probe=False)
    assert p.name == "bf16" and "natively" in p.reason


def test_explicit_choices_are_kept_and_emulated_bf16_warns() -> None:
    assert precision.resolve("fp32", CPU).name == "fp32"
    p = precision.resolve("bf16", CPU, flags=set(), probe=False)
    assert p.name == "bf16" and p.warning is not None and "auto" in p.warning
    assert p.as_record() == {"precision": "bf16", "precision_asked": "bf16", "precision_reason": p.reason}


def test_unknown_precision_is_an_input_error() -> None:
    with pytest.raises(InputError, match="available: auto, fp32, bf16"):
        precision.resolve("fp16", CPU)


def test_auto_never_picks_a_slower_precision_on_this_machine() -> None:
    """The default on the machine running the tests: bf16 only if a probe measures it no slower."""
    p = precision.resolve("auto", CPU)
    if p.name == "bf16":
        assert precision.bf16_slowdown() <= 1.0
    else:
        assert p.name == "fp32"


def test_probe_measures_a_positive_ratio() -> None:
    assert precision.bf16_slowdown() > 0
