"""Tests of cfe_cli.render: names, PNGs, the explanation panel and the MP4 morph video."""

from __future__ import annotations

from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import torch
from PIL import Image

from cfe_cli.errors import InputError
from cfe_cli.render import (
    cf_name,
    explanation_panel,
    panel_geometry,
    read_video_frames,
    render_video,
    save_image,
    save_png,
    to_pil,
)

# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ("no12", "lymphocyte", "erythroblast", "lymphocyte"),
            "no12_lymphocyte(GT_lymphocyte)_to_erythroblast_correct",
        ),
        (
            ("no189", "erythroblast", "lymphocyte", "lymphocyte"),
            "no189_erythroblast(GT_lymphocyte)_to_lymphocyte_error",
        ),
        (
            ("no4262", "closed mouth", "slightly opened mouth", "slightly opened mouth"),
            "no4262_closed mouth(GT_slightly opened mouth)_to_slightly opened mouth_error",
        ),
        (("fig3_row4", "T-shirt", "Pullover", "T-shirt"), "fig3_row4_T-shirt(GT_T-shirt)_to_Pullover_correct"),
        (("digit", "8", "3"), "digit_8_to_3"),
    ],
)
def test_cf_name_paper_examples(args: tuple[str, ...], expected: str) -> None:
    assert cf_name(*args) == expected


def test_cf_name_replaces_illegal_characters() -> None:
    assert cf_name("a/b", "T-shirt/top", "x\0y", "T-shirt/top") == "a-b_T-shirt-top(GT_T-shirt-top)_to_x-y_correct"


# --------------------------------------------------------------------------- PNGs


def test_to_pil_modes_and_nearest_upscale() -> None:
    grey = torch.zeros(1, 2, 2)
    grey[0, 0, 0] = 1.0
    pil = to_pil(grey, size=4)
    assert pil.mode == "L" and pil.size == (4, 4)
    assert np.array_equal(np.asarray(pil), np.array([[255, 255, 0, 0]] * 2 + [[0, 0, 0, 0]] * 2, dtype=np.uint8))
    assert to_pil(torch.rand(3, 5, 7)).mode == "RGB"
    assert to_pil(torch.rand(3, 5, 7)).size == (7, 5)
    with pytest.raises(InputError):
        to_pil(torch.rand(2, 5, 5))


@pytest.mark.parametrize("channels", [1, 3])
def test_save_png_round_trip(tmp_path: Path, channels: int) -> None:
    img = torch.rand(channels, 28, 28)
    out = save_png(img, tmp_path / "sub" / "img.png")
    assert out == tmp_path / "sub" / "img.png"
    with Image.open(out) as pil:
        assert pil.size == (28, 28)
        assert pil.mode == ("L" if channels == 1 else "RGB")
        arr = np.asarray(pil)
    expected = (img * 255 + 0.5).to(torch.uint8).numpy()
    expected = expected[0] if channels == 1 else expected.transpose(1, 2, 0)
    assert np.array_equal(arr, expected)
    assert not list(tmp_path.rglob("*.tmp"))


def test_save_image_unwritable_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(InputError):
        save_image(Image.new("RGB", (4, 4)), blocker / "img.png")


# --------------------------------------------------------------------------- panel


def _cells(panel: Image.Image, cell: int) -> list[np.ndarray]:
    g = panel_geometry(cell)
    arr = np.asarray(panel)
    y0 = g["pad"] + g["title_h"]
    return [arr[y0 : y0 + cell, g["pad"] + i * (cell + g["pad"]) :][:, :cell] for i in range(4)]


def test_explanation_panel_layout(tmp_path: Path) -> None:
    torch.manual_seed(0)
    src, cf, ref = torch.rand(1, 28, 28), torch.rand(1, 28, 28), torch.rand(1, 28, 28)
    titles = ["Source", "1st CFE", "Reflection", "cf − source"]
    captions = ["8 (0.99)", "3 (0.51)", "3 (0.99)", "±0.9"]
    panel = explanation_panel(src, cf, ref, titles=titles, captions=captions, cell=64)
    g = panel_geometry(64)
    assert panel.mode == "RGB"
    assert panel.size == (g["width"], g["height"]) == (4 * 64 + 5 * g["pad"], 64 + 2 * g["pad"] + 2 * g["title_h"])
    cells = _cells(panel, 64)
    # cells 0-2 hold the (grey) images, nearest-upscaled
    assert np.array_equal(cells[0][..., 0], np.asarray(to_pil(src, size=64)))
    assert np.array_equal(cells[1][..., 0], np.asarray(to_pil(cf, size=64)))
    # the heat map: red where cf > source, blue where cf < source
    diff = (cf - src)[0]
    iy, ix = np.unravel_index(int(diff.argmax()), diff.shape)
    red = cells[3][int(iy * 64 / 28) + 1, int(ix * 64 / 28) + 1]
    assert red[0] == 255 and red[2] < 10
    iy, ix = np.unravel_index(int(diff.argmin()), diff.shape)
    blue = cells[3][int(iy * 64 / 28) + 1, int(ix * 64 / 28) + 1]
    assert blue[2] == 255 and blue[0] < 10
    assert save_image(panel, tmp_path / "panel.png").is_file()


def test_explanation_panel_without_cfe() -> None:
    src = torch.rand(3, 16, 16)
    titles, captions = ["a", "b", "c", "d"], ["", "", "", ""]
    panel = explanation_panel(src, None, src, titles=titles, captions=captions, cell=48)
    cells = _cells(panel, 48)
    assert panel.size == (panel_geometry(48)["width"], panel_geometry(48)["height"])
    # 1st CFE and heat-map cells are grey with text, not images
    for c in (cells[1], cells[3]):
        assert tuple(c[2, 2]) == (200, 200, 200)
    with pytest.raises(InputError):
        explanation_panel(src, None, src, titles=titles[:3], captions=captions, cell=48)


# --------------------------------------------------------------------------- video


def _video_inputs(t: int = 20, channels: int = 1) -> dict:
    torch.manual_seed(0)
    ks = torch.linspace(0, 1, t)
    pt = torch.sigmoid((ks - 0.5) * 10)
    intended = torch.stack([1 - pt, pt], 1)
    return {
        "frames": torch.rand(t, channels, 28, 28),
        "source": torch.rand(channels, 28, 28),
        "ks": ks,
        "first_cf_index": t // 2,
        "intended": intended,
        "predicted": (intended + 0.05 * torch.randn(t, 2)).clamp(0, 1),
        "distance": ks * 0.2,
        "source_name": "8",
        "target_name": "3",
    }


def test_render_video_h264(tmp_path: Path) -> None:
    out = render_video(tmp_path / "v" / "morph.mp4", size=400, fps=10, **_video_inputs(20))
    assert out == tmp_path / "v" / "morph.mp4" and out.is_file()
    assert read_video_frames(out) == (20, (400, 400), 10.0)
    reader = imageio_ffmpeg.read_frames(str(out))
    meta = next(reader)
    reader.close()
    assert meta["codec"] == "h264"
    assert meta["pix_fmt"].startswith("yuv420p")
    assert not list(tmp_path.rglob("*.tmp"))


def test_render_video_without_cfe_or_intended(tmp_path: Path) -> None:
    inputs = _video_inputs(5, channels=3)
    inputs.update(first_cf_index=None, intended=None, ks=torch.arange(5.0) * 10)
    out = render_video(tmp_path / "m.mp4", size=200, x_label="optimisation step", **inputs)
    assert read_video_frames(out)[:2] == (5, (200, 200))


def test_render_video_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        render_video(tmp_path / "odd.mp4", size=401, **_video_inputs(4))
    bad = _video_inputs(4)
    bad["predicted"] = bad["predicted"][:3]
    with pytest.raises(InputError):
        render_video(tmp_path / "short.mp4", size=200, **bad)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(InputError):
        render_video(blocker / "m.mp4", size=200, **_video_inputs(4))
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob("*.mp4"))


def test_render_video_encoder_failure_is_input_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = imageio_ffmpeg.write_frames

    def no_such_codec(*args, **kwargs):  # what a build of ffmpeg without libx264 does
        kwargs["codec"] = "no_such_codec"
        return original(*args, **kwargs)

    monkeypatch.setattr(imageio_ffmpeg, "write_frames", no_such_codec)
    with pytest.raises(InputError):
        render_video(tmp_path / "m.mp4", size=200, **_video_inputs(3))
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- keys: what the colours and names mean


def _blue_red(region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column indices of saturated blue and red pixels in an RGB region."""
    r, g, b = (region[..., i].astype(int) for i in range(3))
    blue = (b > 200) & (r < 90) & (g < 90)
    red = (r > 200) & (g < 90) & (b < 90)
    return np.nonzero(blue)[1], np.nonzero(red)[1]


def test_explanation_panel_colour_bar_says_which_sign_is_which_colour() -> None:
    """Under the heat map (and only there) a bar runs from blue (x_cf darker, left) to red (brighter, right)."""
    torch.manual_seed(0)
    src, cf = torch.rand(1, 28, 28), torch.rand(1, 28, 28)
    cell = 192
    g = panel_geometry(cell)
    arr = np.asarray(explanation_panel(src, cf, src, titles=["a"] * 4, captions=["c"] * 4, cell=cell))
    below = arr[g["pad"] + g["title_h"] + cell :]  # caption band and bottom pad
    x3 = g["pad"] + 3 * (cell + g["pad"])
    blue, red = _blue_red(below[:, x3 : x3 + cell])
    assert len(blue) > 50 and len(red) > 50
    assert blue.mean() < red.mean()  # blue on the negative (left) end, red on the positive end
    assert all(len(c) == 0 for c in _blue_red(below[:, : x3 - g["pad"]]))  # no bar under the other cells
    # no counterfactual, no heat map, no colour bar
    arr = np.asarray(explanation_panel(src, None, src, titles=["a"] * 4, captions=["c"] * 4, cell=cell))
    assert all(len(c) == 0 for c in _blue_red(arr[g["pad"] + g["title_h"] + cell :]))


def test_video_frames_carry_a_key_to_titles_and_curves(tmp_path: Path) -> None:
    """Between the images and the k axis, text explains SFE / CFE / the end of the path; the plot's
    legend has a second row with the distance (green) and the current-frame line (red dashes)."""
    from cfe_cli.render import _Layout

    size = 800
    out = render_video(tmp_path / "m.mp4", size=size, **_video_inputs(6))
    reader = imageio_ffmpeg.read_frames(str(out))
    next(reader)
    frame = np.frombuffer(next(reader), np.uint8).reshape(size, size, 3)
    reader.close()
    lay = _Layout(size, (28, 28))
    for y in lay.key_y:  # two lines of grey text spanning most of the frame's width
        ink = np.nonzero((frame[y - 5 : y + 6].astype(int).sum(-1) < 600).any(0))[0]
        assert len(ink) > 0 and ink.max() - ink.min() > 0.6 * size
    row2 = frame[lay.legend2_y - 3 : lay.legend2_y + 4].astype(int)
    r, g, b = row2[..., 0], row2[..., 1], row2[..., 2]
    assert ((g > 120) & (r < 110) & (b < 110)).any()  # green distance entry
    assert ((r > 170) & (g < 90) & (b < 90)).any()  # red dashes: the current frame
