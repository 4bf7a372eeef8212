"""Speed benchmark: counterfactuals per second against batch size, peak memory, video render time.

    python benchmarks/speed.py --model mnist --methods mirror,attack,pgd --batch-sizes 1,16,64,256 \
        [--device cpu|cuda] [--n 512] [--precision auto|fp32|bf16] [--compile] [--sweep-check 512] \
        [--json out/speed.json]

Prints the machine first (CPU kernel level and native bf16 units, torch threads) and, after the
runs, the ratios that carry across machines: Mirror-CFE ÷ PGD and ÷ attack CF/s in the same run.
``--sweep-check N`` also decodes the whole 100-point path of the first N inputs and reports how
often the search's 1st-CFE index equals the exhaustive sweep's.

Runs on test images of the model's dataset (``$CFE_DATA_DIR``), target = runner-up class.
Mirror-CFE is timed for the whole explanation (features, reflection, 1st-CFE search);
the optimisation methods until every sample passes the threshold (0.75) or the step cap.
Also times one 100-frame 800×800 video: the batched decode of all frames and, separately,
the CPU time of rendering + encoding beyond the model passes.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from pathlib import Path

import torch

from cfe_cli import api
from cfe_cli.data import load_dataset


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def machine() -> dict:
    """The machine in the terms that decide speed: CPU kernel level, bf16 units, threads."""
    from cfe_cli.precision import cpu_description

    name = next((ln.split(":", 1)[1].strip() for ln in _cpuinfo().splitlines() if ln.startswith("model name")),
                platform.processor() or platform.machine())
    return {"cpu": name, "cpu_capability": cpu_description(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def bench(model: str, spec: str, batch_sizes: list[int], n: int, device: str, precision: str = "auto",
          compile: bool = False, decoder: str | None = None) -> list[dict]:
    """CF/s of one method; ``spec`` is a method name with optional ``+onnx`` (Mirror-CFE's --backend onnx)
    and ``+fp32``/``+bf16`` (this row's precision), e.g. ``mirror+onnx`` or ``mirror+fp32``."""
    method, *tags = spec.split("+")
    options = {"backend": "onnx"} if "onnx" in tags else {}
    precision = next((t for t in tags if t in ("fp32", "bf16")), precision)
    t0 = time.perf_counter()
    if decoder and method == "mirror":
        options["decoder"] = decoder
    ex = api.Explainer(model, method, device=device, precision=precision, compile=compile and method == "mirror",
                       **options)
    data = load_dataset(ex.clf.info["dataset"], "test", size=ex.clf.config.resolution)
    rows = []
    if compile and method == "mirror":  # one compilation (dynamic shapes) serves every batch size
        ex.run(data.images[:max(batch_sizes)].to(ex.device), None)
        print(json.dumps({"method": method, "compile_and_warmup_s": round(time.perf_counter() - t0, 1)}), flush=True)
    for bs in batch_sizes:
        x_all = data.images[: max(n, bs)]
        ex.run(x_all[:bs].to(ex.device), None)  # warm-up
        if ex.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(ex.device)
        _sync(ex.device)
        t0, done, valid, steps = time.perf_counter(), 0, 0, 0.0
        for i in range(0, len(x_all) - bs + 1, bs):
            x = x_all[i:i + bs].to(ex.device)
            res = ex.run(x, None)
            valid += int(res.found.sum())
            steps += float(res.steps.float().sum()) if res.steps is not None else 0.0
            done += len(x)
        _sync(ex.device)
        sec = time.perf_counter() - t0
        mem = (torch.cuda.max_memory_allocated(ex.device) / 2**20 if ex.device.type == "cuda"
               else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        rows.append({"method": spec, "batch_size": bs, "n": done, "seconds": round(sec, 3),
                     "cf_per_second": round(done / sec, 1), "validity": round(valid / max(done, 1), 4),
                     f"{ex.impl.steps_name}_per_input": round(steps / max(done, 1), 2),
                     "peak_memory_mb": round(mem, 1), "device": str(ex.device), "precision": ex.precision,
                     "compile": compile and method == "mirror"})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def ratios(rows: list[dict]) -> list[dict]:
    """Mirror-CFE's CF/s ÷ each other method's, per batch size, from the same run."""
    out = []
    by = {(r["method"], r["batch_size"]): r["cf_per_second"] for r in rows}
    for (m, bs), v in by.items():
        if m.startswith("mirror"):
            continue
        for (mm, bb), vm in by.items():
            if mm.startswith("mirror") and bb == bs:
                out.append({"batch_size": bs, "ratio": f"{mm}/{m}", "value": round(vm / v, 2)})
    return out


@torch.inference_mode()
def sweep_check(model: str, n: int, device: str, precision: str = "auto", decoder: str | None = None) -> dict:
    """How often the search's 1st-CFE index equals the exhaustive 100-point sweep's (first ``n`` inputs)."""
    ex = api.Explainer(model, "mirror", device=device, precision=precision, decoder=decoder)
    m = ex.mirror
    data = load_dataset(ex.clf.info["dataset"], "test", size=ex.clf.config.resolution)
    same = total = 0
    for i in range(0, n, 32):
        x = data.images[i:min(i + 32, n)].to(ex.device)
        prep = m.prepare(x)
        found = m.first_cfe(prep)["index"]
        pred = m.sweep(prep, 100)["predicted"].argmax(-1)  # (B, 100)
        hit = pred == prep["target"][:, None]
        hit[:, 0] = False  # k = 0 is the source itself
        exhaustive = torch.where(hit.any(1), hit.float().argmax(1).long(), torch.full_like(found, -1))
        same += int((exhaustive == found).sum())
        total += len(x)
    out = {"sweep_check_n": total, "same_index_as_exhaustive": round(same / max(total, 1), 4)}
    print(json.dumps(out), flush=True)
    return out


def video(model: str, device: str) -> dict:
    from cfe_cli import render

    ex = api.Explainer(model, "mirror", device=device)
    data = load_dataset(ex.clf.info["dataset"], "test", size=ex.clf.config.resolution)
    x = data.images[:1].to(ex.device)
    t0 = time.perf_counter()
    res = ex.run(x, None, video_frames=100)
    _sync(ex.device)
    model_s = time.perf_counter() - t0
    v = res.frames
    s, t = int(res.source[0]), int(res.target[0])
    st = torch.tensor([s, t])
    c0, w0 = time.process_time(), time.perf_counter()
    ch0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    path = render.render_video(Path("/tmp/cfe_bench_video.mp4"), frames=v.x[0].cpu(), source=x[0].cpu(),
                               ks=v.ks.cpu(), first_cf_index=None, intended=v.intended[0].cpu()[:, st],
                               predicted=v.predicted[0].cpu()[:, st],
                               distance=(v.x[0].cpu() - x[0].cpu()).abs().mean(dim=(1, 2, 3)),
                               source_name=ex.classes[s], target_name=ex.classes[t], size=800, fps=10)
    ch1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    ffmpeg_cpu = (ch1.ru_utime + ch1.ru_stime) - (ch0.ru_utime + ch0.ru_stime)
    out = {"frames": 100, "size": 800, "model_passes_s": round(model_s, 3),
           "render_python_cpu_s": round(time.process_time() - c0, 3), "ffmpeg_cpu_s": round(ffmpeg_cpu, 3),
           "render_wall_s": round(time.perf_counter() - w0, 3), "file": str(path)}
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mnist")
    ap.add_argument("--methods", default="mirror,attack,pgd",
                    help="methods; mirror+onnx: --backend onnx, mirror+fp32 / mirror+bf16: that precision")
    ap.add_argument("--batch-sizes", default="1,16,64,256")
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--compile", action="store_true", help="torch.compile Mirror-CFE's decoder and classifier")
    ap.add_argument("--no-video", action="store_true")
    ap.add_argument("--sweep-check", type=int, default=0, help="inputs whose search is checked against the sweep")
    ap.add_argument("--json", default=None)
    ap.add_argument("--decoder", default=None, help="Mirror-CFE decoder file instead of the model folder's")
    a = ap.parse_args()
    info = machine()
    print(json.dumps({"machine": info}), flush=True)
    rows = []
    for m in a.methods.split(","):
        rows += bench(a.model, m, [int(b) for b in a.batch_sizes.split(",")], a.n, a.device, a.precision, a.compile,
                      a.decoder)
    rat = ratios(rows)
    for r in rat:
        print(json.dumps(r), flush=True)
    check = sweep_check(a.model, a.sweep_check, a.device, a.precision, a.decoder) if a.sweep_check else None
    vid = None if a.no_video else video(a.model, a.device)
    doc = {"decoder": a.decoder, "machine": info, "rows": rows, "ratios": rat, "sweep_check": check, "video": vid}
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
