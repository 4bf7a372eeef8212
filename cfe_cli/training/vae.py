"""The train-gen jobs of the latent methods: the conv VAE with its attribution probes, and the
attribute-conditional VAE GCI edits on faces."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from cfe_cli.data import load_dataset
from cfe_cli.errors import InputError
from cfe_cli.models.weights import LoadedClassifier, save_module
from cfe_cli.runtime import seed_everything
from cfe_cli.training.loops import Progress


def train_vae_job(folder: Path, loaded: LoadedClassifier, dataset: str, *, epochs: int | None, batch_size: int | None,
               device: torch.device, data_dir: str | os.PathLike[str] | None, seed: int, max_steps: int | None,
               command: str, progress: Progress | None) -> dict[str, Any]:
    from cfe_cli import descriptors, distributed
    from cfe_cli.attributions import fit_probes
    from cfe_cli.models.generators import ConvVAE, default_vae_config
    from cfe_cli.models.weights import save_probes
    from cfe_cli.training.loops import VAETrainConfig, train_vae

    seed_everything(seed)
    res = loaded.config.resolution
    train = load_dataset(dataset, "train", root=data_dir, size=res)
    test = load_dataset(dataset, "test", root=data_dir, size=res)
    vcfg = default_vae_config(train.channels, res)
    vae = ConvVAE(vcfg)
    cfg = VAETrainConfig(epochs=epochs or 20, batch_size=batch_size or 128, seed=seed)
    d = distributed.context()
    if cfg.batch_size % d.world:
        raise InputError(f"--batch-size {cfg.batch_size} is the global batch: give a multiple of the {d.world} "
                         "processes")
    start = time.perf_counter()
    history = train_vae(vae, train, cfg, device=device, progress=progress if d.main else None, max_steps=max_steps,
                        dist=d)
    seconds = time.perf_counter() - start
    distributed.finish(d)  # the last collective was the last step
    if not d.main:  # rank 0 measures, saves the VAE and fits the probes
        return {"path": str(folder / "vae.safetensors"), "seconds": seconds, "history": history}
    with torch.inference_mode():
        mu_te = torch.cat([vae.encode(test.images[i:i + 512])[0] for i in range(0, len(test), 512)])
        rec = torch.cat([vae.decode(mu_te[i:i + 512]) for i in range(0, len(test), 512)])
        l1 = float((rec - test.images).abs().mean())
        clf = loaded.model.cpu()
        rec_acc = float((torch.cat([clf(rec[i:i + 512]).argmax(1) for i in range(0, len(test), 512)])
                         == test.labels).float().mean())
        mu_tr = torch.cat([vae.encode(train.images[i:i + 512])[0] for i in range(0, len(train), 512)])
    info = {"dataset": dataset, "classes": loaded.classes, "method": "vae", "train": cfg.__dict__,
            "history": history, "seconds": round(seconds, 1), "device": str(device), "command": command,
            "test_reconstruction_l1": round(l1, 5), "classifier_accuracy_on_reconstructions": round(rec_acc, 5),
            "trained_at": time.strftime("%Y-%m-%d %H:%M:%S"), "torch": torch.__version__}
    path = save_module(folder / "vae.safetensors", vae, kind="vae", config=vcfg.to_dict(), info=info)
    out = {"path": str(path), "seconds": seconds, "history": history, "reconstruction_l1": l1,
           "reconstruction_accuracy": rec_acc}
    # attribution probes: CelebA labels where present, image descriptors otherwise
    if train.attributes is not None and test.attributes is not None and train.attribute_names:
        a_tr, a_te, names, binary = train.attributes, test.attributes, list(train.attribute_names), True
    else:
        a_tr, a_te = descriptors.descriptors(train.images), descriptors.descriptors(test.images)
        names, binary = list(descriptors.NAMES), False
    try:
        probes = fit_probes(mu_tr, a_tr, mu_te, a_te, names, binary=binary)
    except InputError:
        return out  # scikit-learn missing: the VAE is still usable, attributions are not
    save_probes(folder / "probes.safetensors", probes, {"dataset": dataset, "fit_on": "train mu", "command": command})
    out["probe_accuracy"] = dict(zip(names, probes.accuracy, strict=True))
    return out


def train_cvae_job(folder: Path, loaded: LoadedClassifier, dataset: str, *, epochs: int | None,
                batch_size: int | None, device: torch.device, data_dir: str | os.PathLike[str] | None, seed: int,
                max_steps: int | None, command: str, progress: Progress | None,
                out: str | os.PathLike[str] | None) -> dict[str, Any]:
    from cfe_cli.models.generators import ATTGAN_ATTRIBUTES, CondVAE, CondVAEConfig, default_vae_config
    from cfe_cli.training.loops import CondVAETrainConfig, attribute_targets, train_cvae

    seed_everything(seed)
    res = loaded.config.resolution
    train = load_dataset(dataset, "train", root=data_dir, size=res)
    if train.attributes is None or not train.attribute_names:
        raise InputError(f"--method cvae needs a dataset with attributes (CelebA); {dataset} has none. GCI uses "
                         f"the VAE's latent code as the attributes there (cfe train-gen --method vae)")
    test = load_dataset(dataset, "test", root=data_dir, size=res)
    base = default_vae_config(train.channels, res)
    vcfg = CondVAEConfig(**{**base.to_dict(), "attributes": ATTGAN_ATTRIBUTES})
    model = CondVAE(vcfg)
    cfg = CondVAETrainConfig(epochs=epochs or 10, batch_size=batch_size or 128, seed=seed)
    start = time.perf_counter()
    history = train_cvae(model, train, cfg, device=device, progress=progress, max_steps=max_steps)
    seconds = time.perf_counter() - start
    names = list(vcfg.attributes)
    a_te = attribute_targets(test, names)
    clf = loaded.model.cpu()
    with torch.inference_mode():
        chunks = range(0, len(test), 256)
        est = torch.cat([model.estimate_attributes(test.images[i:i + 256]) for i in chunks])
        mu = torch.cat([model.encode(test.images[i:i + 256])[0] for i in chunks])
        rec = torch.cat([model.decode(mu[i:i + 256], a_te[i:i + 256]) for i in chunks])
        # edits: every test image decoded with the attributes of another test image
        shuffled = a_te[torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))]
        edit_est = torch.cat([model.estimate_attributes(model.decode(mu[i:i + 256], shuffled[i:i + 256]))
                              for i in chunks])
        rec_acc = float((torch.cat([clf(rec[i:i + 256]).argmax(1) for i in chunks]) == test.labels).float().mean())
        task = str(dataset).split(":", 1)[1] if ":" in str(dataset) else None
        flip_rate = None
        if task in names:  # flip only the task's attribute: does the explained classifier follow?
            col = names.index(task)
            flipped = a_te.clone()
            flipped[:, col] = -flipped[:, col]
            x_f = torch.cat([model.decode(mu[i:i + 256], flipped[i:i + 256]) for i in chunks])
            pred_f = torch.cat([clf(x_f[i:i + 256]).argmax(1) for i in chunks])
            flip_rate = float((pred_f == (flipped[:, col] > 0).long()).float().mean())
    attr_acc = ((est > 0) == (a_te > 0)).float().mean(0)
    edit_acc = float(((edit_est > 0) == (shuffled > 0)).float().mean())
    l1 = float((rec - test.images).abs().mean())
    info = {"dataset": dataset, "classes": loaded.classes, "method": "cvae", "train": cfg.__dict__,
            "history": history, "seconds": round(seconds, 1), "device": str(device), "command": command,
            "test_reconstruction_l1": round(l1, 5), "classifier_accuracy_on_reconstructions": round(rec_acc, 5),
            "attribute_accuracy": {n: round(float(a), 4) for n, a in zip(names, attr_acc, strict=True)},
            "edit_attribute_accuracy": round(edit_acc, 5), "task_attribute_flip_rate": flip_rate,
            "trained_at": time.strftime("%Y-%m-%d %H:%M:%S"), "torch": torch.__version__}
    path = save_module(Path(out) if out is not None else folder / "cvae.safetensors", model, kind="cvae",
                       config=vcfg.to_dict(), info=info)
    return {"path": str(path), "seconds": seconds, "history": history, "reconstruction_l1": l1,
            "reconstruction_accuracy": rec_acc, "attribute_accuracy": float(attr_acc.mean()),
            "edit_attribute_accuracy": edit_acc, "task_attribute_flip_rate": flip_rate}


# ----------------------------------------------------------------------------- evaluate
