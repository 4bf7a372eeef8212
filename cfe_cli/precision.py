"""``--precision auto``: bfloat16 only where the hardware runs it natively.

bfloat16 halves the decoder's memory traffic and, on GPUs with bf16 units and CPUs with
AVX-512-BF16 or AMX, runs faster than float32. Elsewhere torch emulates it (an AVX2 CPU ran
Mirror-CFE ~7x slower in bf16), so ``auto`` picks float32 there. :func:`resolve` returns the
choice with a one-line reason that explain, animate and evaluate print and record.
"""

from __future__ import annotations

import functools
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from cfe_cli.errors import InputError

CHOICES = ("auto", "fp32", "bf16")
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of CPUs with native bfloat16 arithmetic


@dataclass(frozen=True)
class Precision:
    """The precision a run uses (``fp32``/``bf16``), what was asked for, and why."""

    name: str
    asked: str
    reason: str
    warning: str | None = None

    def as_record(self) -> dict[str, str]:
        return {"precision": self.name, "precision_asked": self.asked, "precision_reason": self.reason}


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU feature flags (Linux ``/proc/cpuinfo``; empty elsewhere)."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        try:
            cpuinfo = path.read_text() if path.exists() else ""
        except OSError:
            cpuinfo = ""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[1].split())
    return flags


def cpu_description() -> str:
    """E.g. ``AVX2`` or ``AVX512 + AMX``: torch's kernel level plus native bf16 units."""
    cap = torch.backends.cpu.get_cpu_capability()
    extra = [f.upper() for f in CPU_BF16_FLAGS if f in cpu_flags()]
    return " + ".join([cap, *extra])


@functools.cache
def bf16_slowdown(reps: int = 3) -> float:
    """Measured time of a bfloat16 3×3 convolution ÷ the same in float32 on this CPU (> 1: slower).

    The convolution is the shape of Mirror-CFE's decoder at 14² (64 channels, batch 16); each
    dtype is warmed up twice and its fastest of ``reps`` runs counts (~0.1 s in all).
    """
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 64, 14, 14, generator=g)
    w = torch.randn(64, 64, 3, 3, generator=g)
    best = []
    for dtype in (torch.float32, torch.bfloat16):
        xd, wd = x.to(dtype), w.to(dtype)
        times = []
        with torch.inference_mode():
            for i in range(reps + 2):
                t0 = time.perf_counter()
                torch.nn.functional.conv2d(xd, wd, padding=1)
                if i >= 2:
                    times.append(time.perf_counter() - t0)
        best.append(min(times))
    return best[1] / max(best[0], 1e-9)


def native_bf16(device: torch.device, flags: set[str] | None = None, probe: bool = True) -> tuple[bool, str]:
    """Whether ``device`` runs bfloat16 natively, with the evidence in words."""
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        name = torch.cuda.get_device_name(device)
        return ok, f"{name} {'has' if ok else 'has no'} bfloat16 support"
    if device.type != "cpu":
        return False, f"{device.type} bfloat16 is not measured; float32 is the safe choice"
    flags = cpu_flags() if flags is None else flags
    cap = torch.backends.cpu.get_cpu_capability()
    units = [f for f in CPU_BF16_FLAGS if f in flags]
    if not units and not (platform.machine() == "arm64" and platform.system() == "Darwin"):
        return False, f"this CPU ({cap}) has no native bfloat16 units"
    if probe:
        ratio = bf16_slowdown()
        if ratio > 1.0:
            return False, f"this CPU ({cap}) runs bfloat16 {ratio:.1f}x slower than float32 in a probe"
    return True, f"this CPU ({cap}, {', '.join(units) or 'arm64'}) runs bfloat16 natively"


def resolve(asked: str, device: torch.device, *, flags: set[str] | None = None, probe: bool = True) -> Precision:
    """Turn ``--precision auto|fp32|bf16`` into the precision the run uses.

    ``auto`` is bf16 only where :func:`native_bf16` holds, else fp32 — so the default is never
    slower than fp32 on the machine it runs on. An explicit ``bf16`` is kept, with a warning
    carrying the measured slowdown where the CPU emulates it.
    """
    if asked not in CHOICES:
        raise InputError(f"unknown precision '{asked}'; available: {', '.join(CHOICES)}")
    if asked == "fp32":
        return Precision("fp32", asked, "asked for (exact)")
    native, why = native_bf16(device, flags, probe=probe and asked == "auto")
    if asked == "auto":
        return Precision("bf16" if native else "fp32", asked, why)
    warning = None
    if not native:
        if device.type == "cpu" and probe and "slower" not in why:
            why += f"; a probe ran it {bf16_slowdown():.1f}x slower than float32"
        warning = f"--precision bf16: {why}; --precision auto (or fp32) would be faster here"
    return Precision("bf16", asked, why, warning)
