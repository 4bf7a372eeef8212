"""End to end on CPU: train-gen on a tiny model, explain and animate through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cfe_cli import api
from cfe_cli.cli import app
from cfe_cli.models.weights import weights_roots
from cfe_cli.render import read_video_frames
from tests.conftest import ROOT, need

runner = CliRunner()
REQUIRED = ("input", "name", "cf_path", "reflection_path", "source_pred", "source_conf", "gt", "target",
            "first_cfe_k", "cf_pred", "cf_conf", "reflection_pred", "reflection_conf", "valid", "l1", "seconds")


def test_tiny_explain_and_animate(tiny_model, tmp_path):
    root = need("mnist")
    out = tmp_path / "out"
    r = runner.invoke(app, ["explain", "mnist:test:12", "mnist:test:3", "--model", str(tiny_model), "--target", "3",
                            "--out", str(out), "--data-dir", str(root), "--device", "cpu"])
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["method"] == "mirror" and doc["command"].startswith("cfe ")
    recs = doc["results"] + doc["failures"]
    assert len(recs) == 2
    for rec in doc["results"]:
        for key in REQUIRED:
            assert key in rec
        assert rec["name"].startswith(("no12_", "no3_")) and rec["name"].endswith(("_correct", "_error"))
        assert f"(GT_{rec['gt']})_to_3_" in rec["name"]
        assert (out / f"{rec['name']}.png").is_file() and (out / f"{rec['name']}_reflection.png").is_file()
    assert r.exit_code == (1 if doc["failures"] else 0)
    r = runner.invoke(app, ["animate", "mnist:test:5", "--model", str(tiny_model), "--frames", "12", "--size", "320",
                            "--out", str(out / "v"), "--data-dir", str(root), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    vids = list((out / "v").glob("*.mp4"))
    assert len(vids) == 1
    n, (w, h), fps = read_video_frames(vids[0])
    assert (n, w, h, fps) == (12, 320, 320, 10)
    rec = json.loads((out / "v" / "metrics.json").read_text())["results"][0]
    from PIL import Image

    with Image.open(rec["strip_path"]) as strip:  # 8 of the 12 frames in one row
        assert strip.width > 8 * 112 and strip.height < 2 * 112
    assert not list(out.rglob("*.tmp"))


def test_file_input_without_gt_and_bad_inputs(tiny_model, tmp_path):
    from cfe_cli.data import load_dataset
    from cfe_cli.render import save_png

    ds = load_dataset("mnist", "test", root=need("mnist"))
    img = save_png(ds.images[7], tmp_path / "digit.png")
    (tmp_path / "broken.png").write_bytes(b"garbage")
    out = tmp_path / "o"
    r = runner.invoke(app, ["explain", str(img), str(tmp_path / "broken.png"), "--model", str(tiny_model),
                            "--out", str(out), "--device", "cpu"])
    assert r.exit_code == 1  # one input failed
    doc = json.loads((out / "metrics.json").read_text())
    assert len(doc["results"]) == 1 and len(doc["failures"]) == 1
    name = doc["results"][0]["name"]
    assert name.startswith("digit_") and "(GT_" not in name and not name.endswith(("_correct", "_error"))
    assert "not an image" in doc["failures"][0]["error"]
    r = runner.invoke(app, ["explain", str(img), "--model", str(tiny_model), "--target", "seven", "--out", str(out)])
    assert r.exit_code == 1 and "unknown target class 'seven'" in r.stderr
    r = runner.invoke(app, ["explain", str(img), "--model", "no-such-model", "--out", str(out)])
    assert r.exit_code == 1 and "not found" in r.stderr


def _shipped(name: str) -> Path | None:
    for root in weights_roots():
        if (root / name / "mirror.safetensors").is_file():
            return root / name
    return None


def test_shipped_mnist_flips_prediction(tmp_path):
    """The shipped MNIST decoder moves the classifier to the target on the seeds' pairs."""
    folder = _shipped("mnist")
    if folder is None:
        pytest.skip("no shipped weights/mnist/mirror.safetensors")
    root = need("mnist")
    from cfe_cli.data import load_dataset

    ds = load_dataset("mnist", "test", root=root)
    refs, targets = [], []
    for s, t in ((8, 3), (3, 8), (9, 4), (4, 9), (6, 5), (5, 6)):
        idx = (ds.labels == s).nonzero()[:4, 0].tolist()
        refs += [f"mnist:test:{i}" for i in idx]
        targets += [t] * len(idx)
    out = tmp_path / "o"
    records = []
    for t in sorted(set(targets)):
        group = [r for r, tt in zip(refs, targets, strict=True) if tt == t]
        res = api.explain(group, model=folder, target=str(t), out=out, data_dir=root, device="cpu")
        records += res["results"]
        for rec in res["results"]:
            if rec["valid"]:  # a valid record really is classified as the target, at k in (0, 1]
                assert rec["cf_pred"] == str(t) and 0.0 < rec["first_cfe_k"] <= 1.0
                assert Path(rec["cf_path"]).is_file()
    assert len(records) == 24
    assert sum(r["valid"] for r in records) >= 22  # measured on 1,200 images: validity 0.99


def test_global_attributions_are_the_mean_of_local_scores(tmp_path):
    """`evaluate --global` ranks descriptors by the mean of the per-input scores `explain --attributions` gives."""
    import json

    from typer.testing import CliRunner

    from cfe_cli import api
    from cfe_cli.cli import app
    from cfe_cli.data import load_dataset

    root = need("mnist")
    r = CliRunner().invoke(app, ["evaluate", "--model", "mnist", "--method", "attack", "--pairs", "8:3", "--n", "12",
                                 "--global", "--no-realism", "--out", str(tmp_path / "ev")])
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "ev" / "global_attributions.json").read_text())
    g = doc["rankings"][0]
    assert g["method"] == "attack" and g["pair"] == "8:3" and Path(g["chart"]).is_file()
    mags = [abs(e["score"]) for e in g["ranking"]]
    assert mags == sorted(mags, reverse=True) and len(mags) == 16
    # the same 12 images through explain --attributions: the global score is their mean over valid CFs
    test = load_dataset("mnist", "test", root=root)
    pred = api.predict(api.load_model("mnist"), test.images).argmax(1)
    refs = [f"mnist:test:{int(i)}" for i in (pred == 8).nonzero()[:12, 0]]
    res = api.explain(refs, model="mnist", method="attack", target="3", attributions=True, out=tmp_path / "ex",
                      data_dir=root, device="cpu")
    valid = [rec for rec in res["results"] if rec["valid"]]
    assert g["n"] == len(valid) > 0
    for e in g["ranking"]:
        mean = sum(rec["attributions"][e["name"]] for rec in valid) / len(valid)
        assert abs(mean - e["score"]) < 2e-3, e


def test_fine_tune_a_decoder_and_refuse_a_foreign_one(tiny_model, tmp_path):
    root = need("mnist")
    start = tiny_model / "mirror.safetensors"
    out = tmp_path / "ft.safetensors"
    r = runner.invoke(app, ["train-gen", "--model", str(tiny_model), "--init", str(start), "--max-steps", "2",
                            "--lambda-cls", "2", "--disc", "class", "--out", str(out), "--data-dir", str(root),
                            "--device", "cpu"])
    assert r.exit_code == 0, r.output
    from cfe_cli.models.weights import load_decoder

    dec, info = load_decoder(tmp_path, device="cpu", file=out)
    old, _ = load_decoder(tiny_model, device="cpu")
    assert info["train"]["lambda_cls"] == 2.0 and info["earlier_training"][0]["init"] == str(start)
    assert info["train"]["disc"] == "class"
    changed = [not torch.equal(a, b) for a, b in zip(dec.state_dict().values(), old.state_dict().values(), strict=True)]
    assert any(changed)  # two steps moved the weights
    # a decoder may start the training of another classifier's decoder when the shapes fit (here
    # the shipped MNIST classifier); the result belongs to the new classifier and records where it began
    x = tmp_path / "x.safetensors"
    r = runner.invoke(app, ["train-gen", "--model", "mnist", "--init", str(out), "--max-steps", "1",
                            "--out", str(x), "--data-dir", str(root), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    _, info2 = load_decoder(tmp_path, device="cpu", file=x)
    assert info2["earlier_training"][0]["init_classifier_sha256"] == info["classifier_sha256"]
    assert info2["classifier_sha256"] != info["classifier_sha256"]
    # ... but using a decoder with a classifier it was not trained for is refused
    r = runner.invoke(app, ["explain", "mnist:test:0", "--model", "mnist", "--decoder", str(out),
                            "--out", str(tmp_path / "e"), "--data-dir", str(root)])
    assert r.exit_code != 0 and "another classifier" in r.output and "Traceback" not in r.output
    # a decoder of another shape (BloodMNIST: RGB) cannot start an MNIST decoder
    r = runner.invoke(app, ["train-gen", "--model", str(tiny_model), "--init",
                            str(ROOT / "weights/bloodmnist/mirror.safetensors"),
                            "--max-steps", "1", "--out", str(tmp_path / "y.safetensors"), "--data-dir", str(root)])
    assert r.exit_code != 0 and "does not fit" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["train-gen", "--model", str(tiny_model), "--method", "vae", "--init", str(start)])
    assert r.exit_code != 0 and "--method mirror" in r.output
    r = runner.invoke(app, ["train-gen", "--model", str(tiny_model), "--disc", "global", "--max-steps", "1",
                            "--out", str(tmp_path / "z.safetensors"), "--data-dir", str(root)])
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 1 and len(lines) == 1 and "unknown discriminator 'global'" in lines[0]


def test_evaluate_writes_fid_and_lpips_only_with_verified_files(tiny_model, tmp_path, monkeypatch):
    """`--fid-weights` / `--lpips-weights` wire the sha256-checked networks into evaluate's rows."""
    from cfe_cli import fid, lpips
    from cfe_cli.models.external import file_sha256
    from tests.test_metrics import _alexnet_file, _stand_in_file

    root = need("mnist")
    incep, incep_sha = _stand_in_file(tmp_path)
    alex, alex_sha = _alexnet_file(tmp_path)
    base = ["evaluate", "--model", str(tiny_model), "--method", "mirror", "--pairs", "8:3", "--n", "6", "--no-realism",
            "--data-dir", str(root), "--device", "cpu"]
    r = runner.invoke(app, [*base, "--out", str(tmp_path / "a"), "--fid-weights", str(incep)])
    assert r.exit_code != 0 and "not the original FID Inception" in r.output and "Traceback" not in r.output
    monkeypatch.setattr(fid, "INCEPTION_SHA256", incep_sha)
    monkeypatch.setattr(lpips, "ALEXNET_SHA256_PREFIX", alex_sha[:8])
    r = runner.invoke(app, [*base, "--out", str(tmp_path / "b"), "--fid-weights", str(incep),
                            "--lpips-weights", str(alex)])
    assert r.exit_code == 0, r.output
    # the table explains itself: a legend line per column shown and the method's validity rule, no "all" rows
    for line in ("Val: validity", "FID: Inception-v3 FID", "LPIPS: LPIPS-Alex", "mirror: valid = the 1st CFE"):
        assert line in r.output, line
    assert " all " not in r.output
    doc = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert doc["fid_weights"]["sha256"] == file_sha256(incep)
    for row in doc["rows"]:  # mirror and mirror@reflection
        assert row["fid"] >= 0 and row["lpips"] > 0
    assert "fid" in doc["notes"] and "lpips" in doc["notes"]


@pytest.mark.slow
def test_evaluate_sources_predicted_or_correctly_classified(tiny_model, tmp_path):
    """`--sources correct` explains only images whose label is the source too; rows say how many were."""
    from cfe_cli import api
    from cfe_cli.data import load_dataset

    root = need("mnist")
    test = load_dataset("mnist", "test", root=root)
    pred = api.predict(api.load_model(tiny_model), test.images).argmax(1)
    docs = {}
    for sources in ("predicted", "correct"):
        out = tmp_path / sources
        r = runner.invoke(app, ["evaluate", "--model", str(tiny_model), "--pairs", "8:3", "--n", "60", "--no-realism",
                                "--sources", sources, "--save-images", "--out", str(out), "--data-dir", str(root),
                                "--device", "cpu"])
        assert r.exit_code == 0, r.output
        docs[sources] = json.loads((out / "metrics.json").read_text())
        names = sorted(int(p.stem[2:]) for p in (out / "images" / "mirror_8_to_3").glob("no*.png"))
        chosen = (pred == 8) & (test.labels == 8) if sources == "correct" else pred == 8
        assert names == sorted(chosen.nonzero()[:60, 0].tolist())
        assert docs[sources]["sources"] == sources
    expected = float((test.labels[(pred == 8).nonzero()[:60, 0]] == 8).float().mean())
    assert abs(docs["predicted"]["rows"][0]["source_correct"] - expected) < 1e-4
    assert expected < 1.0  # the tiny classifier misreads some digits as 8, so the two runs differ
    assert docs["correct"]["rows"][0]["source_correct"] == 1.0
    assert docs["correct"]["rows"][1]["method"] == "mirror@reflection"
    r = runner.invoke(app, ["evaluate", "--model", str(tiny_model), "--pairs", "8:3", "--sources", "all",
                            "--out", str(tmp_path / "bad"), "--data-dir", str(root)])
    assert r.exit_code == 1 and "--sources must be 'predicted' or 'correct'" in r.output
    assert "Traceback" not in r.output


@pytest.mark.slow
def test_hard_share_trains_on_the_images_the_classifier_is_unsure_of(tiny_model, tmp_path):
    """`train-gen --hard-share` draws that share of each batch from the ambiguous training images."""
    from cfe_cli.data import load_dataset
    from cfe_cli.models.weights import load_decoder
    from cfe_cli.training import hard_pool, mix_hard

    root = need("mnist")
    clf = api.load_model(tiny_model)
    images = load_dataset("mnist", "train", root=root).images[:2000]
    top = api.predict(clf, images).amax(1)
    pool = hard_pool(clf.model, images, 0.7)
    assert 0 < len(pool) < len(images) and torch.equal(pool, (top < 0.7).nonzero()[:, 0])
    gen = torch.Generator().manual_seed(0)
    idx = torch.arange(1000, 1064)
    assert torch.equal(mix_hard(idx, pool, 0.0, gen), idx)
    assert set(mix_hard(idx, pool, 1.0, gen).tolist()) <= set(pool.tolist())
    half = mix_hard(idx, pool, 0.5, gen)
    assert 10 < int((half != idx).sum()) < 54 and torch.equal(idx, torch.arange(1000, 1064))
    out = tmp_path / "hard.safetensors"
    r = runner.invoke(app, ["train-gen", "--model", str(tiny_model), "--init", str(tiny_model / "mirror.safetensors"),
                            "--max-steps", "2", "--hard-share", "0.5", "--hard-below", "0.8", "--out", str(out),
                            "--data-dir", str(root), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    _, info = load_decoder(tmp_path, device="cpu", file=out)
    assert info["train"]["hard_share"] == 0.5 and info["train"]["hard_below"] == 0.8
    assert info["history"][0]["hard_pool"] > 0
    for bad, msg in ((["--hard-share", "1.5"], "--hard-share must be in [0, 1]"),
                     (["--hard-below", "0.5"], "--hard-below needs --hard-share"),
                     (["--hard-share", "0.5", "--hard-below", "0.01"], "no training image has a top class")):
        r = runner.invoke(app, ["train-gen", "--model", str(tiny_model), "--max-steps", "1", *bad,
                                "--out", str(tmp_path / "x.safetensors"), "--data-dir", str(root), "--device", "cpu"])
        lines = [ln for ln in r.output.splitlines() if ln.strip()]
        assert r.exit_code == 1 and len(lines) == 1 and msg in lines[0] and "Traceback" not in r.output, r.output


def test_time_limit_stops_decoder_training_and_saves(tiny_model, tmp_path):
    """`train-gen --time-limit` stops at the limit, saves a working decoder and says where it stopped."""
    from cfe_cli.models.weights import load_decoder

    root = need("mnist")
    out = tmp_path / "timed.safetensors"
    r = runner.invoke(app, ["train-gen", "--model", str(tiny_model), "--init", str(tiny_model / "mirror.safetensors"),
                            "--epochs", "50", "--schedule", "cosine", "--time-limit", "3", "--out", str(out),
                            "--data-dir", str(root), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "stopped at the time limit (3 s) after" in r.output
    _, info = load_decoder(tmp_path, device="cpu", file=out)
    last = info["history"][-1]
    assert info["time_limit"] == 3 and last["time_limit"] == 3
    assert 0 < last["stopped_at_step"] < last["of_steps"] == 50 * (8000 // 64)
    assert len(info["history"]) == 1 and info["seconds"] < 60  # one (partial) epoch, well under 50 epochs' time
    r = runner.invoke(app, ["train-gen", "--model", str(tiny_model), "--time-limit", "0", "--out", str(out),
                            "--data-dir", str(root)])
    assert r.exit_code == 1 and "--time-limit must be a positive number of seconds" in r.output


@pytest.mark.slow
def test_decoder_width_is_set_stored_and_kept_by_init(tiny_model, tmp_path):
    """`train-gen --width/--min-width` build a wider decoder, stored in its config; --init keeps it."""
    from cfe_cli.models.weights import load_decoder

    root = need("mnist")
    wide = tmp_path / "wide.safetensors"
    r = runner.invoke(app, ["train-gen", "--model", str(tiny_model), "--max-steps", "1", "--width", "96",
                            "--min-width", "48", "--out", str(wide), "--data-dir", str(root), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    dec, _ = load_decoder(tmp_path, device="cpu", file=wide)
    assert (dec.config.width, dec.config.min_width) == (96, 48)
    narrow, _ = load_decoder(tiny_model, device="cpu")
    assert sum(p.numel() for p in dec.parameters()) > sum(p.numel() for p in narrow.parameters())
    again = tmp_path / "again.safetensors"
    r = runner.invoke(app, ["train-gen", "--model", str(tiny_model), "--init", str(wide), "--max-steps", "1",
                            "--out", str(again), "--data-dir", str(root), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert load_decoder(tmp_path, device="cpu", file=again)[0].config.width == 96
    smooth = tmp_path / "smooth.safetensors"  # a skip decoder whose SPE resizes bilinearly
    r = runner.invoke(app, ["train-gen", "--model", str(tiny_model), "--max-steps", "1", "--skip-stem",
                            "--spe-upsample", "bilinear", "--out", str(smooth), "--data-dir", str(root),
                            "--device", "cpu"])
    assert r.exit_code == 0, r.output
    dec, _ = load_decoder(tmp_path, device="cpu", file=smooth)
    assert dec.config.spe_upsample == "bilinear" and dec.spe_dec[0][2].mode == "bilinear"
    focus = tmp_path / "focus.safetensors"  # GAN losses on the CSP mask's patches only
    r = runner.invoke(app, ["train-gen", "--model", str(tiny_model), "--init", str(smooth), "--max-steps", "1",
                            "--adv-focus", "edit", "--out", str(focus), "--data-dir", str(root), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert load_decoder(tmp_path, device="cpu", file=focus)[1]["train"]["adv_focus"] == "edit"
    fine = tmp_path / "fine.safetensors"  # SPE on a 2x finer grid + the perceptual reconstruction loss
    r = runner.invoke(app, ["train-gen", "--model", str(tiny_model), "--init", str(smooth), "--max-steps", "1",
                            "--spe-grid", "14", "--lambda-perc", "1", "--rec-mask-weight", "10", "--out", str(fine),
                            "--data-dir", str(root), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    dec, meta = load_decoder(tmp_path, device="cpu", file=fine)
    assert dec.config.spe_grid == 14 and meta["train"]["lambda_perc"] == 1.0
    assert meta["train"]["rec_mask_weight"] == 10.0
    for bad, msg in ((["--width", "2"], "--width must be in [4, 1024]"),
                     (["--init", str(wide), "--width", "64"], "does not fit"),
                     (["--spe-upsample", "bicubic", "--skips"], "unknown --spe-upsample 'bicubic'"),
                     (["--spe-upsample", "bilinear"], "--spe-upsample belongs to a skip decoder"),
                     (["--adv-focus", "edit"], "--adv-focus edit belongs to a skip decoder"),
                     (["--adv-focus", "mouth", "--skips"], "unknown --adv-focus 'mouth'"),
                     (["--spe-grid", "14"], "--spe-grid belongs to a skip decoder"),
                     (["--spe-grid", "-1", "--skips"], "--spe-grid must be in [0, 1024]"),
                     (["--lambda-perc", "-1"], "--lambda-perc must be 0 or more"),
                     (["--rec-mask-weight", "0.5", "--skips"], "--rec-mask-weight must be 1 or more"),
                     (["--rec-mask-weight", "10"], "--rec-mask-weight belongs to a skip decoder")):
        r = runner.invoke(app, ["train-gen", "--model", str(tiny_model), "--max-steps", "1", *bad,
                                "--out", str(tmp_path / "x.safetensors"), "--data-dir", str(root), "--device", "cpu"])
        lines = [ln for ln in r.output.splitlines() if ln.strip()]
        assert r.exit_code == 1 and len(lines) == 1 and msg in lines[0] and "Traceback" not in r.output, r.output
