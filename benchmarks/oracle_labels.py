"""Which classes do the two oracles give Mirror-CFE reflections? (issue 28 diagnostic)

    python benchmarks/oracle_labels.py --model bloodmnist --pairs lymphocyte:erythroblast,erythroblast:lymphocyte \
        [--n 100] [--decoder FILE]

For the first ``n`` test images the classifier predicts as each pair's source, prints the class
histogram of the reflections (k = 1) under the EfficientNet-Lite0 probe (``oracle_effnet``) and
the convnet oracle, and the probe's labels of the unchanged sources. Needs ``cfe[metrics]`` and
``oracle_effnet.safetensors`` in the model folder. CPU, one thread.
"""

from __future__ import annotations

import argparse

import torch

from cfe_cli.api import Explainer
from cfe_cli.data import load_dataset
from cfe_cli.features import EffNetFeatures, embed
from cfe_cli.models.weights import load_classifier
from cfe_cli.oracle_effnet import load_folder_probe


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--pairs", required=True)
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--decoder", default=None)
    a = p.parse_args()
    torch.set_num_threads(1)
    ex = Explainer(a.model, "mirror", device="cpu", decoder=a.decoder)
    cl = ex.classes
    data = load_dataset(ex.clf.info["dataset"], "test", size=ex.clf.config.resolution)
    with torch.inference_mode():
        preds = torch.cat([ex.clf.model(data.images[i:i + 512]).argmax(1) for i in range(0, len(data), 512)])
    probe = load_folder_probe(ex.folder)
    if probe is None:
        raise SystemExit(f"{ex.folder} has no oracle_effnet.safetensors")
    oracle = load_classifier(ex.folder / "oracle.safetensors").model
    net = EffNetFeatures()

    def hist(p: torch.Tensor) -> dict[str, int]:
        return {cl[int(c)]: int((p == c).sum()) for c in p.unique()}

    def index(name: str) -> int:
        return cl.index(name) if name in cl else int(name)

    for s, t in (tuple(index(v.strip()) for v in pair.split(":")) for pair in a.pairs.split(",")):
        x = data.images[(preds == s).nonzero()[:, 0][:a.n]]
        r = ex.run(x, torch.full((len(x),), t)).second.detach()  # the reflections (k = 1)
        with torch.inference_mode():
            on_refl, by_oracle = probe(embed(r, net)).argmax(1), oracle(r).argmax(1)
            on_src = probe(embed(x, net)).argmax(1)
        print(f"{cl[s]} -> {cl[t]} (n={len(x)}): probe on reflections {hist(on_refl)} | convnet oracle on "
              f"reflections {hist(by_oracle)} | probe on sources {hist(on_src)}")


if __name__ == "__main__":
    main()
