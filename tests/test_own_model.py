"""Bring your own classifier and images: cfe import-model, folder datasets, --classifier file paths, and
tables that fit 80 columns. Everything runs on a tiny GAP CNN written to a temporary .py file and a
temporary 3-class PNG folder (16x16), so no dataset download is needed."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

from cfe_cli.cli import app, console

runner = CliRunner()
CLASSES = ("circle", "square", "stripes")
NET_SOURCE = textwrap.dedent('''
    """A plain PyTorch classifier: conv features -> global average pooling -> one linear layer."""
    import torch
    from torch import nn


    class MyNet(nn.Module):
        def __init__(self, classes: int = 3) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(16, classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.pool(self.body(x)).flatten(1))


    def make_net() -> nn.Module:
        return MyNet()


    def make_wide_net() -> nn.Module:
        return MyNet(classes=5)
''')


def _shape(c: int, rng: np.random.Generator) -> np.ndarray:
    """A 16x16 grey image of class c: a disc, a square or vertical stripes, at a random place, with noise."""
    yy, xx = np.mgrid[:16, :16]
    cx, cy = rng.integers(5, 11, 2)
    if c == 0:
        img = ((xx - cx) ** 2 + (yy - cy) ** 2 < 16).astype(float)
    elif c == 1:
        img = ((abs(xx - cx) < 4) & (abs(yy - cy) < 4)).astype(float)
    else:
        img = ((xx + rng.integers(0, 4)) % 4 < 2).astype(float)
    return np.clip(img * 0.8 + rng.random((16, 16)) * 0.2, 0, 1)


@pytest.fixture(scope="module")
def own(tmp_path_factory) -> dict[str, Path]:
    """``data/shapes/{train,test}/<class>/*.png``, ``proj/mynet.py`` and its trained ``mynet.safetensors``."""
    root = tmp_path_factory.mktemp("own")
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 4)):
        for c, name in enumerate(CLASSES):
            d = root / "data" / "shapes" / split / name
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray((_shape(c, rng) * 255).astype(np.uint8)).save(d / f"{i:02d}.png")
    proj = root / "proj"
    proj.mkdir()
    (proj / "mynet.py").write_text(NET_SOURCE)
    from cfe_cli.data import load_dataset
    from cfe_cli.models.external import module_from_file

    train = load_dataset(f"folder:{root / 'data' / 'shapes'}", "train")
    torch.manual_seed(0)
    net = module_from_file(proj / "mynet.py").make_net()
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(120):  # full batch: ~1 s, >90 % on these shapes
        loss = torch.nn.functional.cross_entropy(net(train.images), train.labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(proj / "mynet.safetensors"))
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    return {"root": root, "data": root / "data", "shapes": root / "data" / "shapes", "proj": proj,
            "net": proj / "mynet.py", "weights": proj / "mynet.safetensors", "elsewhere": elsewhere,
            "models": root / "models"}


@pytest.fixture
def in_elsewhere(own, monkeypatch) -> dict[str, Path]:
    """Run from a folder that holds neither the module nor the data; models go to a private weights dir."""
    monkeypatch.chdir(own["elsewhere"])
    monkeypatch.setenv("CFE_WEIGHTS_DIR", str(own["models"]))
    return own


@pytest.fixture
def console80():
    """The CLI's Rich console at 80 columns (the width of a default terminal)."""
    saved = console._width  # None: the console follows the terminal (and $COLUMNS), which later tests rely on
    console.width = 80
    yield console
    console._width = saved


def _ok(args: list[str]) -> str:
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    return r.stdout


def _one_line_error(args: list[str], *words: str) -> str:
    r = runner.invoke(app, args)
    assert r.exit_code == 1, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.output
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def _import(own: dict[str, Path], name: str = "shapes", *extra: str) -> dict:
    out = _ok(["import-model", name, "--classifier", f"{own['net']}:make_net", "--weights", str(own["weights"]),
               "--data", f"folder:{own['shapes']}", "--json", "--force", *extra])
    return json.loads(out)


def test_the_whole_journey_by_name_only(in_elsewhere, console80):
    """import-model, then predict, explain (pgd), train-gen (mirror), explain (mirror) and animate with
    --model NAME only, from a folder that is not the module's; cfe models shows the measured accuracy."""
    own = in_elsewhere
    r = _import(own)
    folder = Path(r["path"])
    assert folder == own["models"] / "shapes" and r["copied"] and r["mirror"] and r["classes"] == list(CLASSES)
    assert r["n_test"] == 12 and r["test_accuracy"] >= 0.75
    listed = {m["name"]: m for m in json.loads(_ok(["models", "--json"]))}
    assert listed["shapes"]["test_accuracy"] == pytest.approx(r["test_accuracy"], abs=1e-5)
    assert listed["shapes"]["imported"] and listed["shapes"]["arch"] == "imported"
    # no placeholder classifier: the folder's classifier is the user's network with the user's tensors
    from safetensors.torch import load_file

    assert load_file(str(folder / "classifier.safetensors")).keys() == load_file(str(own["weights"])).keys()
    ref = f"folder:{own['shapes']}:test:0"
    pred = json.loads(_ok(["predict", ref, "folder:shapes:test:5", "--data-dir", str(own["data"]), "--model",
                           "shapes", "--json"]))
    assert [p["gt"] for p in pred["results"]] == ["circle", "square"]
    _ok(["explain", ref, "--model", "shapes", "--method", "pgd", "--out", "pgd"])
    assert json.loads(Path("pgd/metrics.json").read_text())["results"][0]["valid"] is not None
    _ok(["train-gen", "--model", "shapes", "--method", "mirror", "--max-steps", "3", "--batch-size", "16"])
    assert (folder / "mirror.safetensors").is_file()
    _ok(["explain", ref, "--model", "shapes", "--target", "square", "--out", "mirror"])
    rec = json.loads(Path("mirror/metrics.json").read_text())["results"][0]
    assert rec["target"] == "square" and Path(rec["cf_path"] or "mirror/x").parent.name == "mirror"
    _ok(["animate", ref, "--model", "shapes", "--target", "square", "--frames", "4", "--size", "160", "--out",
         "video"])
    assert len(list(Path("video").glob("*.mp4"))) == 1
    assert not (own["elsewhere"] / "weights").exists()  # nothing written beside the user's work


def test_evaluate_table_fits_80_columns(in_elsewhere, console80):
    _import(in_elsewhere, "shapes80")
    out = _ok(["evaluate", "--model", "shapes80", "--method", "pgd", "--pairs", "circle:square,square:circle",
               "--n", "3", "--no-realism", "--out", "ev"])
    head = next(ln for ln in out.splitlines() if "method" in ln and "pair" in ln)
    assert "…" not in out.split("─")[0] and all(len(w) > 1 or w == "n" for w in head.split())
    assert max(len(ln) for ln in out.splitlines()) <= 80
    assert "not shown at this width" in out
    rows = json.loads(_ok(["evaluate", "--model", "shapes80", "--method", "pgd", "--pairs", "circle:square",
                           "--n", "3", "--no-realism", "--out", "ev2", "--json"]))["rows"]
    assert rows[0]["pair"] == "circle:square" and "cf_per_second" in rows[0]


def test_import_refuses_wrong_logits_and_links_weights_by_sha256(in_elsewhere):
    own = in_elsewhere
    _one_line_error(["import-model", "wide", "--classifier", f"{own['net']}:make_wide_net", "--weights",
                     str(own["weights"]), "--data", f"folder:{own['shapes']}"], "does not match")
    copy = own["root"] / "linked.safetensors"
    copy.write_bytes(own["weights"].read_bytes())
    r = _import(own, "linked", "--link", "--weights", str(copy))
    assert not r["copied"] and r["weights"] == str(copy)
    _ok(["predict", f"folder:{own['shapes']}:test:1", "--model", "linked"])
    copy.write_bytes(own["weights"].read_bytes() + b" ")  # changed after the import
    _one_line_error(["predict", f"folder:{own['shapes']}:test:1", "--model", "linked"], "changed since",
                    "cfe import-model linked")
    _one_line_error(["import-model", "linked", "--classifier", f"{own['net']}:make_net", "--weights",
                     str(own["weights"]), "--data", f"folder:{own['shapes']}"], "--force")


def test_folder_references_and_their_errors(in_elsewhere):
    own = in_elsewhere
    _import(own, "refs")
    base = ["predict", "--model", "refs"]
    _ok([*base, f"folder:{own['shapes']}:test:5"])  # absolute
    _ok([*base, "folder:shapes:test:5", "--data-dir", str(own["data"])])  # relative to --data-dir
    _one_line_error([*base, "shapes:test:5"], "unknown dataset 'shapes'", "folder:shapes:test:5")
    _one_line_error([*base, "folder:fash3:test:5", "--data-dir", str(own["data"])], "not found",
                    str(own["data"] / "fash3"), "folder:PATH")
    _one_line_error([*base, f"folder:{own['root']}/nope:test:5"], "image folder not found", "folder:PATH")
    _one_line_error([*base, f"folder:{own['shapes']}:val:0"], "has splits train, test, not 'val'")
    _one_line_error([*base, f"folder:{own['shapes']}"], "folder:PATH:SPLIT:INDEX")


def test_classifier_spec_errors_name_the_fix(in_elsewhere):
    own = in_elsewhere
    ref = f"folder:{own['shapes']}:test:0"
    base = ["explain", ref, "--model", "refs", "--method", "pgd", "--out", "o"]
    _import(own, "refs")
    _one_line_error([*base, "--classifier", "mynet:make_net", "--weights", str(own["weights"])],
                    "cannot import module 'mynet'", "--classifier path/to/mynet.py:FACTORY", "PYTHONPATH")
    _one_line_error([*base, "--classifier", str(own["root"] / "gone.py") + ":make_net", "--weights",
                     str(own["weights"])], "classifier file not found")
    # a file path is imported without sys.path edits: no module called mynet leaks to later imports
    before = list(sys.path)
    _ok([*base, "--classifier", f"{own['net']}:make_net", "--weights", str(own["weights"])])
    assert sys.path == before and "mynet" not in sys.modules
    bad = own["root"] / "bad.py"
    bad.write_text("import no_such_dependency_xyz\n")
    _one_line_error([*base, "--classifier", f"{bad}:make_net", "--weights", str(own["weights"])],
                    "no_such_dependency_xyz", "PYTHONPATH")


def test_weight_mismatch_lists_keys_and_shapes(in_elsewhere, tmp_path):
    own = in_elsewhere
    _import(own, "refs")
    state = {"body.0.weight": torch.zeros(4, 1, 3, 3), "body.0.bias": torch.zeros(8), "extra.weight": torch.zeros(1)}
    save_file(state, str(tmp_path / "wrong.safetensors"))
    line = _one_line_error(["explain", f"folder:{own['shapes']}:test:0", "--model", "refs", "--method", "pgd",
                            "--classifier", f"{own['net']}:make_net", "--weights", str(tmp_path / "wrong.safetensors"),
                            "--out", "o"], "does not match its architecture (MyNet)", "missing key(s): body.2.weight",
                           "1 unexpected key(s): extra.weight", "body.0.weight file (4, 1, 3, 3) vs model (8, 1, 3, 3)")
    assert "Error(s) in loading" not in line


def test_torchscript_without_features_reads_as_a_sentence(in_elsewhere, tmp_path):
    from user_models import to_torchscript

    from cfe_cli.models.external import module_from_file

    own = in_elsewhere
    _import(own, "refs")
    net = module_from_file(own["net"]).make_net()
    to_torchscript(net).save(str(tmp_path / "net.pt"))
    _one_line_error(["explain", f"folder:{own['shapes']}:test:0", "--model", "refs", "--classifier",
                     str(tmp_path / "net.pt"), "--decoder", "x.safetensors", "--out", "o"],
                    "Mirror-CFE needs logits = W·GAP(features) + b, but the TorchScript module exports no features(x) "
                    "method: add one")


def test_folder_layouts_classes_txt_and_datasets_listing(tmp_path):
    from cfe_cli.data import load_dataset

    rng = np.random.default_rng(1)
    flat = tmp_path / "flat"
    for c, name in enumerate(CLASSES):
        (flat / name).mkdir(parents=True)
        for i in range(5):
            Image.fromarray((_shape(c, rng) * 255).astype(np.uint8)).save(flat / name / f"{i}.png")
    (flat / "classes.txt").write_text("stripes\nsquare\ncircle\n")
    train, test = load_dataset(f"folder:{flat}", "train"), load_dataset(f"folder:{flat}", "test")
    assert train.classes == ["stripes", "square", "circle"] and len(train) == 12 and len(test) == 3
    assert test.labels.tolist() == [0, 1, 2]  # every 5th file of stripes/, square/, circle/ in classes.txt order
    rows = json.loads(_ok(["datasets", "--data-dir", str(tmp_path), "--json"]))
    assert rows == [{"name": "folder:flat", "path": str(flat), "classes": 3, "class_names": ["stripes", "square",
                     "circle"], "splits": {"train": 12, "test": 3},
                     "class_counts": {"train": {"stripes": 4, "square": 4, "circle": 4},
                                      "test": {"stripes": 1, "square": 1, "circle": 1}},
                     "layout": "single folder (every 5th image is test)", "class_order": "classes.txt"}]
    (flat / "classes.txt").write_text("stripes\nsquare\n")
    _one_line_error(["predict", f"folder:{flat}:test:0", "--model", "mnist"], "classes.txt must list each class",
                    "folders not listed: circle")


def test_classes_option_names_or_refuses(in_elsewhere):
    """--classes renames the classes in logit order; a wrong count or a mere reordering of the data's names is
    refused in one line that says what to do."""
    own = in_elsewhere
    r = _import(own, "named", "--classes", "round,boxy,lined")
    assert r["classes"] == ["round", "boxy", "lined"]
    pred = json.loads(_ok(["predict", f"folder:{own['shapes']}:test:0", "--model", "named", "--json"]))
    assert pred["results"][0]["prediction"] in ("round", "boxy", "lined")
    base = ["import-model", "named2", "--classifier", f"{own['net']}:make_net", "--weights", str(own["weights"]),
            "--data", f"folder:{own['shapes']}"]
    _one_line_error([*base, "--classes", "a,b"], "--classes names 2 classes", "has 3")
    _one_line_error([*base, "--classes", "square,circle,stripes"], "another order", "classes.txt")


def test_decoder_of_a_replaced_classifier_is_refused(in_elsewhere):
    """A model folder's mirror.safetensors trained for the classifier imported before --force replaced it is
    refused with the command that retrains it, not used silently."""
    own = in_elsewhere
    _import(own, "stale")
    _ok(["train-gen", "--model", "stale", "--method", "mirror", "--max-steps", "1", "--batch-size", "8"])
    from safetensors.torch import load_file

    changed = {k: (v + 0.01 if v.is_floating_point() else v) for k, v in load_file(str(own["weights"])).items()}
    other = own["root"] / "other.safetensors"
    save_file(changed, str(other))
    _import(own, "stale", "--weights", str(other))
    _one_line_error(["explain", f"folder:{own['shapes']}:test:0", "--model", "stale", "--target", "square",
                     "--out", "o"], "trained for another classifier", "cfe train-gen --model stale --method mirror")
