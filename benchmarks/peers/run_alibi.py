"""cfe (Mirror-CFE, latent attack) side by side with alibi's counterfactual explainers on MNIST.

Runs in its own virtual environment (TensorFlow + alibi next to the CPU torch; see
requirements.txt), never in the project's dev venv:

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 \
    nice -n 10 /work/peers-venv/bin/python benchmarks/peers/run_alibi.py --n 20 \
        --peers cf-keras,proto-keras,cf-bb,proto-bb --n-bb 3

Images: the first ``--n`` MNIST test images that cfe's shipped classifier predicts as
``--source`` (8); every method is asked for ``--target`` (3) on exactly those images.

Peers (alibi 0.9.6, TF1 graph mode via ``tf.compat.v1.disable_eager_execution()``):

- ``cf-keras``   ``alibi.explainers.Counterfactual`` (Wachter et al. 2017) on a tf.keras copy of
  cfe's classifier (same weights, logits checked against torch): alibi's white-box mode,
  TF autograd gradients.
- ``proto-keras`` ``alibi.explainers.CounterfactualProto`` (Van Looveren & Klaise 2021) on the
  same tf.keras copy, k-d tree prototypes of the training set, ``target_class=[target]``.
- ``cf-bb``      ``Counterfactual`` with a black-box ``predict_fn`` (the torch classifier behind a
  numpy function): central-difference numerical gradients, 2·784 forward passes per step.
- ``proto-bb``   ``CounterfactualProto`` with the same black-box ``predict_fn``.

The black-box variants are orders of magnitude slower on CPU, so they run on the first
``--n-bb`` of the same images with their own (smaller) budget.

Metrics per method, on the same images (a method that reports no CF counts as invalid):
validity (cfe classifier argmax == target), oracle validity (independent oracle's argmax,
``weights/mnist/oracle.safetensors``; null when that file is absent), mean L1 (mean absolute
pixel difference per image, averaged over the CFs the method reports), seconds per image.
"""

from __future__ import annotations

import os

for _k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
    os.environ.setdefault(_k, "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PEERS = ("cf-keras", "proto-keras", "cf-bb", "proto-bb")
PEER_NAMES = {
    "cf-keras": "alibi Counterfactual (Wachter), tf.keras copy, autograd",
    "proto-keras": "alibi CounterfactualProto, tf.keras copy, autograd, k-d tree prototypes",
    "cf-bb": "alibi Counterfactual (Wachter), black-box predict_fn, numerical gradients",
    "proto-bb": "alibi CounterfactualProto, black-box predict_fn, numerical gradients, k-d tree prototypes",
}


# ----------------------------------------------------------------------------- tf.keras copy


def keras_copy(model: torch.nn.Module, flat: bool = False):
    """A tf.keras model (channels-last, softmax output) with the torch GAPClassifier's weights.

    Supports cfe's ``resnet-*`` GAP classifiers (stem conv-BN-ReLU, BasicBlocks, GAP, linear).
    Torch pads 3×3 convs by 1 on every side (TF 'same' pads stride-2 convs asymmetrically), so
    each 3×3 conv is ZeroPadding2D(1) + a 'valid' conv. ``flat``: the input is a flat vector
    (B, H·W·C), reshaped inside the model (CounterfactualProto's k-d trees need 2-D inputs).
    """
    import tensorflow as tf

    cfg = model.config
    if not cfg.arch.startswith("resnet"):
        raise SystemExit(f"keras_copy supports the resnet GAP classifiers, not '{cfg.arch}'")
    L = tf.keras.layers
    weights: list[tuple] = []  # (keras layer, list of numpy arrays)

    def conv(t_conv, h):
        k, s, p = t_conv.kernel_size[0], t_conv.stride[0], t_conv.padding[0]
        if p:
            h = L.ZeroPadding2D(p)(h)
        layer = L.Conv2D(t_conv.out_channels, k, strides=s, padding="valid", use_bias=t_conv.bias is not None)
        h = layer(h)
        w = [t_conv.weight.detach().numpy().transpose(2, 3, 1, 0)]
        if t_conv.bias is not None:
            w.append(t_conv.bias.detach().numpy())
        weights.append((layer, w))
        return h

    def bn(t_bn, h):
        layer = L.BatchNormalization(epsilon=t_bn.eps)
        h = layer(h, training=False)
        weights.append((layer, [t_bn.weight.detach().numpy(), t_bn.bias.detach().numpy(),
                                t_bn.running_mean.numpy(), t_bn.running_var.numpy()]))
        return h

    hwc = (cfg.resolution, cfg.resolution, cfg.in_channels)
    inp = L.Input((int(np.prod(hwc)),) if flat else hwc)
    h = L.Reshape(hwc)(inp) if flat else inp
    mean = np.asarray(cfg.mean, np.float32)
    std = np.asarray(cfg.std, np.float32)
    h = L.Rescaling(1.0 / std, offset=-mean / std)(h)
    h = L.ReLU()(bn(model.stem[1], conv(model.stem[0], h)))
    for stage in model.stages_:
        for blk in stage:
            out = L.ReLU()(bn(blk.bn1, conv(blk.conv1, h)))
            out = bn(blk.bn2, conv(blk.conv2, out))
            short = h if isinstance(blk.short, torch.nn.Identity) else bn(blk.short[1], conv(blk.short[0], h))
            h = L.ReLU()(L.Add()([out, short]))
    h = L.GlobalAveragePooling2D()(h)
    dense = L.Dense(cfg.num_classes)
    h = dense(h)
    weights.append((dense, [model.head.weight.detach().numpy().T, model.head.bias.detach().numpy()]))
    out = L.Softmax()(h)
    km = tf.keras.Model(inp, out)
    for layer, w in weights:
        layer.set_weights(w)
    return km


# ----------------------------------------------------------------------------- helpers


def to_nhwc(x: torch.Tensor) -> np.ndarray:
    return x.permute(0, 2, 3, 1).contiguous().numpy().astype(np.float32)


def to_nchw(x: np.ndarray, hwc: tuple = (28, 28, 1)) -> torch.Tensor:
    x = np.asarray(x, np.float32)
    if x.ndim == 2:  # flat vectors (CounterfactualProto runs on (B, H·W·C))
        x = x.reshape(-1, *hwc)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


class BlackBox:
    """numpy (B, H, W, C) in [0, 1] -> softmax probabilities (B, K), the torch classifier behind it."""

    def __init__(self, model: torch.nn.Module, chunk: int = 2048) -> None:
        self.model, self.chunk, self.calls, self.images = model, chunk, 0, 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        t = to_nchw(x)
        self.calls += 1
        self.images += len(t)
        with torch.inference_mode():
            out = [self.model(t[i:i + self.chunk]).softmax(1) for i in range(0, len(t), self.chunk)]
        return torch.cat(out).numpy()


def probs(model: torch.nn.Module | None, x: torch.Tensor) -> torch.Tensor | None:
    if model is None:
        return None
    with torch.inference_mode():
        return model(x).softmax(1)


def lscpu() -> str:
    try:
        return subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for p in ("cfe", "torch", "numpy", "alibi", "tensorflow", "keras", "scikit-learn", "pillow"):
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = None
    return out


# ----------------------------------------------------------------------------- cfe


def run_cfe(method: str, x: torch.Tensor, target: int, per_image: bool) -> dict:
    from cfe_cli import api

    t0 = time.perf_counter()
    ex = api.Explainer("mnist", method, device="cpu")
    setup = time.perf_counter() - t0
    tgt = torch.full((len(x),), target)
    ex.run(x[:1], tgt[:1])  # warm-up (first-call allocations), not timed
    t0 = time.perf_counter()
    res = ex.run(x, tgt)
    batch_s = time.perf_counter() - t0
    out = {"x_cf": res.x_cf.detach().cpu().float(), "found": res.found.detach().cpu().bool(),
           "setup_s": setup, "batch_s": batch_s, "seconds": [batch_s / len(x)] * len(x),
           "timing": f"one batch of {len(x)}; s/image = batch time / n"}
    if per_image:  # the same images one at a time (alibi explains one instance per call)
        secs = []
        for i in range(len(x)):
            t0 = time.perf_counter()
            ex.run(x[i:i + 1], tgt[i:i + 1])
            secs.append(time.perf_counter() - t0)
        out["seconds_batch1"] = secs
    return out


# ----------------------------------------------------------------------------- alibi


def build_peer(kind: str, clf: torch.nn.Module, shape: tuple, args, train_nhwc: np.ndarray | None):
    import tensorflow as tf
    from alibi.explainers import Counterfactual, CounterfactualProto

    tf.keras.backend.clear_session()
    tf.compat.v1.reset_default_graph()
    info: dict = {}
    proto = kind.startswith("proto")
    if kind.endswith("keras"):
        predictor = keras_copy(clf, flat=proto)
        info["keras"] = predictor
    else:
        predictor = BlackBox(clf)
        info["blackbox"] = predictor
    bb = kind.endswith("bb")
    if kind.startswith("cf-"):
        params = {"distance_fn": "l1", "target_proba": 1.0, "target_class": args.target, "tol": args.tol,
                  "max_iter": args.bb_max_iter if bb else args.max_iter, "early_stop": args.early_stop,
                  "lam_init": 1e-1, "max_lam_steps": args.bb_max_lam_steps if bb else args.max_lam_steps,
                  "learning_rate_init": 0.1, "feature_range": (0.0, 1.0), "eps": 0.01}
        exp = Counterfactual(predictor, shape=shape, **params)
    else:
        params = {"kappa": 0.0, "beta": 0.1, "gamma": 0.0, "theta": args.theta, "use_kdtree": True,
                  "feature_range": (0.0, 1.0), "learning_rate_init": 1e-2,
                  "max_iterations": args.bb_proto_iter if bb else args.proto_iter,
                  "c_init": args.c_init, "c_steps": args.bb_c_steps if bb else args.c_steps,
                  "eps": (1e-3, 1e-3), "update_num_grad": 1}
        exp = CounterfactualProto(predictor, shape=shape, **params)
        t0 = time.perf_counter()
        exp.fit(train_nhwc)
        info["fit_s"] = time.perf_counter() - t0
    info["params"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items()}
    return exp, info


def run_peer(kind: str, clf: torch.nn.Module, x: torch.Tensor, args, train_nhwc) -> dict:
    proto = kind.startswith("proto")
    shape = (1, int(np.prod(x.shape[1:]))) if proto else (1, *x.shape[2:], x.shape[1])
    t0 = time.perf_counter()
    exp, info = build_peer(kind, clf, shape, args, train_nhwc)
    setup = time.perf_counter() - t0
    xs = to_nhwc(x)
    if proto:
        xs = xs.reshape(len(xs), -1)
    cfs, found, secs, notes = [], [], [], []
    bb = info.pop("blackbox", None)
    for i in range(len(x)):
        calls0 = (bb.calls, bb.images) if bb else None
        t0 = time.perf_counter()
        if kind.startswith("cf-"):
            e = exp.explain(xs[i:i + 1])
        else:
            e = exp.explain(xs[i:i + 1], target_class=[args.target])
        secs.append(time.perf_counter() - t0)
        cf = e.cf
        ok = cf is not None and cf.get("X") is not None
        found.append(ok)
        cfs.append(to_nchw(cf["X"])[0] if ok else x[i].clone())
        note = {}
        if ok:
            note["alibi_class"] = int(np.asarray(cf["class"]).item())
        if bb:
            note["predict_calls"], note["predicted_images"] = bb.calls - calls0[0], bb.images - calls0[1]
        notes.append(note)
        print(f"  {kind} image {i + 1}/{len(x)}: found={ok} {secs[-1]:.1f}s {note}", flush=True)
    km = info.pop("keras", None)
    if km is not None:  # the tf.keras copy must agree with torch on these images
        diff = np.abs(km.predict(xs, verbose=0) - probs(clf, x).numpy())
        info["keras_vs_torch_max_abs_prob_diff"] = float(diff.max())
    return {"x_cf": torch.stack(cfs), "found": torch.tensor(found), "seconds": secs, "setup_s": setup,
            "notes": notes, **info}


# ----------------------------------------------------------------------------- metrics / output


def metrics(name: str, r: dict, x: torch.Tensor, idx: list[int], target: int, clf, oracle) -> tuple[dict, list]:
    x_cf, found = r["x_cf"], r["found"].bool()
    p = probs(clf, x_cf)
    po = probs(oracle, x_cf)
    l1 = (x_cf - x).abs().flatten(1).mean(1)
    valid = found & (p.argmax(1) == target)
    ovalid = None if po is None else found & (po.argmax(1) == target)
    n = len(x)
    rows = []
    for i in range(n):
        row = {"method": name, "test_index": idx[i], "found": bool(found[i]),
               "pred": int(p[i].argmax()), "p_target": round(float(p[i, target]), 5),
               "valid": bool(valid[i]), "l1": round(float(l1[i]), 6) if found[i] else None,
               "seconds": round(r["seconds"][i], 4)}
        if po is not None:
            row["oracle_pred"], row["oracle_valid"] = int(po[i].argmax()), bool(ovalid[i])
        if "seconds_batch1" in r:
            row["seconds_batch1"] = round(r["seconds_batch1"][i], 4)
        if r.get("notes"):
            row.update(r["notes"][i])
        rows.append(row)
    nf = int(found.sum())
    total = float(sum(r["seconds"]))
    summ = {"n": n, "found": nf, "validity": round(int(valid.sum()) / n, 4),
            "oracle_validity": None if ovalid is None else round(int(ovalid.sum()) / n, 4),
            "mean_l1": round(float(l1[found].mean()), 6) if nf else None,
            "mean_l1_valid": round(float(l1[valid].mean()), 6) if int(valid.sum()) else None,
            "mean_p_target_found": round(float(p[found, target].mean()), 4) if nf else None,
            "s_per_image": round(total / n, 4),
            "s_per_valid_cf": round(total / int(valid.sum()), 4) if int(valid.sum()) else None,
            "setup_s": round(r.get("setup_s", 0.0), 3)}
    if "seconds_batch1" in r:
        summ["s_per_image_batch1"] = round(float(np.mean(r["seconds_batch1"])), 4)
    for k in ("timing", "params", "fit_s", "keras_vs_torch_max_abs_prob_diff"):
        if k in r:
            summ[k] = r[k]
    return summ, rows


def ratios(peer: dict, ref: dict) -> dict:
    """peer / cfe for each metric (s/image also against cfe explaining one image at a time)."""
    pairs = {k: (peer.get(k), ref.get(k)) for k in ("validity", "oracle_validity", "mean_l1", "s_per_image")}
    pairs["s_per_image_vs_cfe_batch1"] = (peer.get("s_per_image"), ref.get("s_per_image_batch1"))
    return {k: (round(a / b, 4) if a is not None and b not in (None, 0) else None) for k, (a, b) in pairs.items()}


def grid_png(path: Path, x: torch.Tensor, cols: dict[str, dict], clf, target: int, rows: int = 6,
             scale: int = 3) -> None:
    from PIL import Image, ImageDraw

    names = ["source", *cols]
    cell, pad, head = 28 * scale, 4, 16
    label_h = 12
    rows = min(rows, len(x))
    W = len(names) * (cell + pad) + pad
    H = head + rows * (cell + label_h + pad) + pad
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    for j, nm in enumerate(names):
        d.text((pad + j * (cell + pad), 2), nm[:14], fill="black")
    for i in range(rows):
        y = head + i * (cell + label_h + pad)
        for j, nm in enumerate(names):
            xx = pad + j * (cell + pad)
            if nm == "source":
                im, ok = x[i], True
            elif i >= len(cols[nm]["x_cf"]):
                d.text((xx, y + cell // 2), "not run", fill="gray")
                continue
            else:
                im, ok = cols[nm]["x_cf"][i], bool(cols[nm]["found"][i])
            pr = probs(clf, im[None])[0]
            arr = (im[0].clamp(0, 1).numpy() * 255).astype(np.uint8)
            tile = Image.fromarray(arr, "L").resize((cell, cell), Image.NEAREST).convert("RGB")
            img.paste(tile, (xx, y))
            txt = f"{int(pr.argmax())} p{target}={float(pr[target]):.2f}" if ok else "no CF"
            colour = "green" if ok and int(pr.argmax()) == target else ("black" if nm == "source" else "red")
            d.text((xx, y + cell), txt, fill=colour)
    img.save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--source", type=int, default=8)
    ap.add_argument("--target", type=int, default=3)
    ap.add_argument("--peers", default="cf-keras,proto-keras,cf-bb,proto-bb")
    ap.add_argument("--n-bb", type=int, default=3, help="images for the black-box (numerical-gradient) peers")
    ap.add_argument("--data-root", default="/work/shared/datasets")
    ap.add_argument("--oracle", default=str(REPO / "weights/mnist/oracle.safetensors"))
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--tag", default="alibi_mnist_8to3")
    ap.add_argument("--no-batch1", action="store_true", help="skip timing cfe one image at a time")
    # Counterfactual (Wachter): target_proba=1.0 with tol=0.25 -> found when p_target >= 0.75 (cfe's threshold)
    ap.add_argument("--tol", type=float, default=0.25)
    ap.add_argument("--max-iter", type=int, default=1000)
    ap.add_argument("--max-lam-steps", type=int, default=10)
    ap.add_argument("--early-stop", type=int, default=50)
    ap.add_argument("--bb-max-iter", type=int, default=100)
    ap.add_argument("--bb-max-lam-steps", type=int, default=1)
    # CounterfactualProto
    ap.add_argument("--proto-iter", type=int, default=1000)
    ap.add_argument("--c-init", type=float, default=1.0)
    ap.add_argument("--c-steps", type=int, default=2)
    ap.add_argument("--theta", type=float, default=100.0)
    ap.add_argument("--bb-proto-iter", type=int, default=100)
    ap.add_argument("--bb-c-steps", type=int, default=1)
    ap.add_argument("--n-train", type=int, default=10000, help="training images for the k-d tree prototypes")
    ap.add_argument("--rescore", action="store_true",
                    help="only recompute the metrics of a finished run (its JSON + _cfs.npz), e.g. with the oracle")
    ap.add_argument("--table", action="store_true", help="print the markdown tables of a finished run")
    args = ap.parse_args()
    if args.table:
        print(markdown_table(json.loads((Path(args.out) / f"{args.tag}.json").read_text())))
        return
    if args.rescore:
        rescore(args)
        return
    peers = [p for p in args.peers.split(",") if p]
    for p in peers:
        if p not in PEERS:
            raise SystemExit(f"unknown peer {p}; known: {', '.join(PEERS)}")

    t_start = time.perf_counter()
    logging.getLogger("alibi").setLevel(logging.ERROR)
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    tf.compat.v1.disable_eager_execution()
    tf.config.threading.set_intra_op_parallelism_threads(int(os.environ["TF_NUM_INTRAOP_THREADS"]))
    tf.config.threading.set_inter_op_parallelism_threads(int(os.environ["TF_NUM_INTEROP_THREADS"]))

    from cfe_cli import api
    from cfe_cli.data import load_dataset

    m = api.load_model("mnist")
    clf = m.model.eval()
    ds = load_dataset("mnist", "test", root=args.data_root)
    pred = probs(clf, ds.images).argmax(1)
    idx = torch.nonzero(pred == args.source).flatten()[: args.n].tolist()
    x = ds.images[idx].float()
    n = len(idx)
    print(f"{n} test images predicted {args.source} (indices {idx[:5]}...), target {args.target}", flush=True)

    raw: dict[str, dict] = {}
    for method in ("mirror", "attack"):
        print(f"cfe {method} ...", flush=True)
        raw[f"cfe-{method}"] = run_cfe(method, x, args.target, per_image=not args.no_batch1)
    train_nhwc = None
    if any(p.startswith("proto") for p in peers):
        tr = load_dataset("mnist", "train", root=args.data_root)
        train_nhwc = to_nhwc(tr.images[: args.n_train].float()).reshape(-1, 28 * 28)  # flat for the k-d trees
    for p in peers:
        nn_ = min(args.n_bb, n) if p.endswith("bb") else n
        print(f"alibi {p} on {nn_} images ...", flush=True)
        raw[f"alibi-{p}"] = run_peer(p, clf, x[:nn_], args, train_nhwc)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "command": "OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 "
                   "nice -n 10 " + shlex.join([sys.executable, *sys.argv]),
        "args": vars(args),
        "images": {"dataset": "mnist test (cfe_cli.data.load_dataset)", "source": args.source,
                   "target": args.target, "test_indices": idx, "labels": ds.labels[idx].tolist()},
        "versions": versions(),
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "lscpu": lscpu().splitlines()[:15], "torch_threads": torch.get_num_threads(),
                    "env_threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                                   "TF_NUM_INTRAOP_THREADS",
                                                                   "TF_NUM_INTEROP_THREADS")}},
        "total_seconds": round(time.perf_counter() - t_start, 1),
    }
    # the counterfactuals themselves, so --rescore can re-evaluate them (e.g. once the oracle exists)
    arrays = {"x": x.numpy(), "test_indices": np.asarray(idx)}
    for name, r in raw.items():
        arrays[f"{name}/x_cf"] = r["x_cf"].numpy()
        arrays[f"{name}/found"] = r["found"].numpy()
    np.savez_compressed(out / f"{args.tag}_cfs.npz", **arrays)
    timing = {name: {k: v for k, v in r.items() if k not in ("x_cf", "found")} for name, r in raw.items()}
    write_results(out, args.tag, meta, timing, x, idx, args.target, clf, args.oracle, raw)


def summarise(raw: dict, x: torch.Tensor, idx: list[int], target: int, clf, oracle) -> tuple[dict, list]:
    n = len(x)
    summary, rows = {}, []
    for name, r in raw.items():
        nn_ = len(r["x_cf"])
        s, rw = metrics(name, r, x[:nn_], idx[:nn_], target, clf, oracle)
        if not name.startswith("cfe-"):
            s["description"] = PEER_NAMES[name.removeprefix("alibi-")]
            if nn_ < n:  # the cfe numbers on the same subset, for the ratios
                for ref in ("cfe-mirror", "cfe-attack"):
                    sub = {k: v[:nn_] if isinstance(v, (list, torch.Tensor)) else v for k, v in raw[ref].items()}
                    s[f"{ref}_same_images"], _ = metrics(ref, sub, x[:nn_], idx[:nn_], target, clf, oracle)
        summary[name] = s
        rows += rw
    for name, s in summary.items():
        if name.startswith("cfe-"):
            continue
        for ref in ("cfe-mirror", "cfe-attack"):
            base = s.get(f"{ref}_same_images", summary[ref])
            s[f"ratio_vs_{ref}"] = ratios(s, base)
    return summary, rows


def write_results(out: Path, tag: str, meta: dict, timing: dict, x, idx, target, clf, oracle_path, raw) -> None:
    from cfe_cli.models.weights import load_classifier

    oracle = load_classifier(oracle_path).model.eval() if Path(oracle_path).is_file() else None
    summary, rows = summarise(raw, x, idx, target, clf, oracle)
    record = {
        **meta,
        "oracle": str(oracle_path) if oracle is not None else None,
        "metric_definitions": {
            "validity": "share of the n images whose reported CF the cfe classifier assigns to the target "
                        "(argmax); no CF counts as invalid",
            "oracle_validity": "the same with the independent oracle classifier; null if no oracle file",
            "mean_l1": "mean |x_cf - x| over the 784 pixels, averaged over the CFs the method reports",
            "s_per_image": "wall seconds per explained image (cfe: one batch of n / n; alibi: one call per image)",
            "s_per_image_batch1": "cfe only: mean wall seconds explaining the same images one at a time",
            "ratio_vs_*": "peer / cfe for each metric, on the same images",
        },
        "summary": summary,
        "rows": rows,
        "timing": timing,
    }
    jpath = out / f"{tag}.json"
    jpath.write_text(json.dumps(record, indent=2, default=str) + "\n")
    grid_png(out / f"{tag}.png", x, raw, clf, target, rows=6)
    print(json.dumps(summary, indent=1, default=str))
    print(f"wrote {jpath}, {out / (tag + '.png')}, {out / (tag + '_cfs.npz')}")


def markdown_table(rec: dict) -> str:
    """The README's tables from a results JSON."""
    def f(v, nd=3):
        return "–" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))

    lines = ["| method | n | validity | oracle validity | mean L1 | mean p_target | s / image | "
             "s / image, cfe one at a time |", "|---|---|---|---|---|---|---|---|"]
    for name, s in rec["summary"].items():
        lines.append(f"| {name} | {s['n']} | {f(s['validity'], 2)} | {f(s['oracle_validity'], 2)} | "
                     f"{f(s['mean_l1'], 4)} | {f(s['mean_p_target_found'], 2)} | {f(s['s_per_image'], 3)} | "
                     f"{f(s.get('s_per_image_batch1'), 3)} |")
    lines += ["", "| peer / cfe | vs | validity | oracle validity | mean L1 | s / image | "
              "s / image vs cfe one at a time |", "|---|---|---|---|---|---|---|"]
    for name, s in rec["summary"].items():
        for ref in ("cfe-mirror", "cfe-attack"):
            r = s.get(f"ratio_vs_{ref}")
            if r:
                lines.append(f"| {name} | {ref} (same {s['n']} images) | {f(r['validity'], 2)} | "
                             f"{f(r['oracle_validity'], 2)} | {f(r['mean_l1'], 2)} | {f(r['s_per_image'], 1)} | "
                             f"{f(r['s_per_image_vs_cfe_batch1'], 1)} |")
    return "\n".join(lines)


def rescore(args) -> None:
    """Recompute every metric from a finished run's saved counterfactuals and timings."""
    from cfe_cli import api

    out = Path(args.out)
    rec = json.loads((out / f"{args.tag}.json").read_text())
    z = np.load(out / f"{args.tag}_cfs.npz")
    x = torch.from_numpy(z["x"])
    idx = z["test_indices"].tolist()
    raw = {}
    for name, t in rec["timing"].items():
        raw[name] = {**t, "x_cf": torch.from_numpy(z[f"{name}/x_cf"]), "found": torch.from_numpy(z[f"{name}/found"])}
    meta = {k: rec[k] for k in ("command", "args", "images", "versions", "machine", "total_seconds")}
    meta["rescored"] = {"at": time.strftime("%Y-%m-%d %H:%M:%S"),
                        "command": shlex.join([sys.executable, *sys.argv])}
    clf = api.load_model("mnist").model.eval()
    write_results(out, args.tag, meta, rec["timing"], x, idx, rec["images"]["target"], clf, args.oracle, raw)


if __name__ == "__main__":
    main()
