"""Pictures and videos of counterfactual explanations: names, PNGs, panels, MP4s.

A leaf module: it imports torch, numpy, Pillow, imageio-ffmpeg and :mod:`cfe_cli.errors`
only. Images are float tensors in [0, 1] of shape (C, H, W) with C = 1 (grey) or 3 (RGB);
stacks are batch-first (T, C, H, W). Every writer is atomic: it writes a temporary file
(``.<name>.<random>.tmp``) in the destination folder and renames it with :func:`os.replace`,
so a reader never sees half a file. Nothing here prints.

The morph video (:func:`render_video`) draws everything that does not change from frame to
frame (titles, the source, 1st CFE and reflection images, the axis, the full curves, the
legend) once into a background array; each frame then only copies that array and pastes the
current image, the moving dot with its label and the red "current k" line.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from cfe_cli.errors import InputError
from cfe_cli.files import atomic_path

__all__ = [
    "cf_name", "explanation_panel", "panel_geometry", "read_video_frames", "render_video", "save_image", "save_png",
    "to_pil",
]  # fmt: skip

# Colours (matplotlib's "tab" palette, which the Mirror-CFE paper's figures use).
ORANGE = (255, 127, 14)
BLUE = (31, 119, 180)
GREEN = (44, 160, 44)
RED = (214, 39, 40)
BLACK = (0, 0, 0)
GREY_TEXT = (90, 90, 90)
GRID = (225, 225, 225)
NO_CFE_GREY = (200, 200, 200)
WHITE = (255, 255, 255)

_SS = 2  # supersampling factor of the static background (smooth lines, then reduce(2))
_BASE = 800.0  # the video layout is designed for 800 x 800 and scaled to `size`


# --------------------------------------------------------------------------- names


def cf_name(prefix: str, pred: str, target: str, gt: str | None = None) -> str:
    """The Mirror-CFE paper's file-name rule for one counterfactual.

    ``{prefix}_{pred}(GT_{gt})_to_{target}_{correct|error}``, with ``correct`` when the
    prediction equals the ground truth; without a ground truth the ``(GT_…)`` part and the
    suffix are left out: ``{prefix}_{pred}_to_{target}``. Class names keep their spaces;
    the characters no file system accepts ("/" and NUL) become "-".

    Args:
        prefix: Leading part, e.g. ``"no12"`` or ``"fig3_row4"``.
        pred: The classifier's predicted class name for the source image.
        target: The counterfactual's target class name.
        gt: The ground-truth class name, or None when unknown.

    Returns:
        The name, without extension.
    """
    if gt is None:
        name = f"{prefix}_{pred}_to_{target}"
    else:
        verdict = "correct" if pred == gt else "error"
        name = f"{prefix}_{pred}(GT_{gt})_to_{target}_{verdict}"
    return name.replace("/", "-").replace("\0", "-")


# --------------------------------------------------------------------------- images


def _check_image(img: torch.Tensor, what: str = "image") -> torch.Tensor:
    """Validate one image tensor and return it detached, on CPU, as float32 in [0, 1]."""
    if not isinstance(img, torch.Tensor):
        raise InputError(f"{what} must be a torch tensor, got {type(img).__name__}")
    if img.dim() == 2:
        img = img.unsqueeze(0)
    if img.dim() != 3 or img.shape[0] not in (1, 3) or img.shape[1] < 1 or img.shape[2] < 1:
        raise InputError(f"{what} must have shape (C,H,W) with C=1 or 3, got {tuple(img.shape)}")
    return img.detach().to("cpu", torch.float32).clamp(0.0, 1.0)


def _to_uint8_hwc(img: torch.Tensor) -> np.ndarray:
    """(C,H,W) or (T,C,H,W) float in [0,1] -> (H,W,3) or (T,H,W,3) uint8 RGB (grey repeated)."""
    x = (img.detach().to("cpu", torch.float32).clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8)
    x = x.movedim(-3, -1).numpy()
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    return np.ascontiguousarray(x)


def to_pil(img: torch.Tensor, size: int | None = None) -> Image.Image:
    """Convert an image tensor to a Pillow image.

    Args:
        img: Image in [0, 1] (values outside are clipped); a 2-D tensor is taken as grey.
        size: If given, resize to ``size`` x ``size`` with nearest-neighbour sampling, so
            that the pixels of a 28 x 28 image stay crisp.

    Returns:
        A mode "L" image for grey input, "RGB" for colour input.

    Shape:
        img: (C, H, W) with C = 1 or 3, or (H, W).
    """
    x = _check_image(img)
    arr = (x * 255.0 + 0.5).to(torch.uint8).numpy()
    pil = Image.fromarray(arr[0], mode="L") if arr.shape[0] == 1 else Image.fromarray(arr.transpose(1, 2, 0), "RGB")
    if size is not None:
        if int(size) < 1:
            raise InputError(f"size must be a positive number of pixels, got {size}")
        pil = pil.resize((int(size), int(size)), Image.NEAREST)
    return pil


def save_image(pil: Image.Image, path: str | os.PathLike[str]) -> Path:
    """Write a Pillow image as PNG, atomically.

    Args:
        pil: The image.
        path: Destination file; missing parent folders are created.

    Returns:
        The path written.
    """
    with atomic_path(path) as tmp:
        try:
            pil.save(tmp, format="PNG")
        except OSError as err:
            raise InputError(f"cannot write {str(path)!r}: {err}") from None
    return Path(path)


def save_png(img: torch.Tensor, path: str | os.PathLike[str]) -> Path:
    """Write an image tensor as a PNG at its own size, atomically.

    Args:
        img: Image in [0, 1].
        path: Destination file; missing parent folders are created.

    Returns:
        The path written.

    Shape:
        img: (C, H, W) with C = 1 (saved as 8-bit grey) or 3 (saved as RGB).
    """
    return save_image(to_pil(img), path)


# --------------------------------------------------------------------------- text helpers


@lru_cache(maxsize=64)
def _font(px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """A sans-serif font of ``px`` pixels: DejaVu Sans if installed, else Pillow's default."""
    px = max(6, int(px))
    try:
        return ImageFont.truetype("DejaVuSans.ttf", px)
    except OSError:
        try:
            return ImageFont.load_default(size=px)
        except TypeError:  # Pillow < 10.1
            return ImageFont.load_default()


@lru_cache(maxsize=1)
def _has_math_glyphs() -> bool:
    """Whether :func:`_font` can draw "Σ" and "−" (DejaVu can; Pillow's default font cannot)."""
    try:
        ImageFont.truetype("DejaVuSans.ttf", 12)
        return True
    except OSError:
        return False


def _distance_label() -> str:
    return "(1/N)Σ|x_k − x_s|" if _has_math_glyphs() else "(1/N)sum|x_k - x_s|"


def _text_w(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont) -> float:
    return font.getlength(text)


def _fit(text: str, max_w: float, px: int, min_px: int) -> tuple[str, ImageFont.FreeTypeFont | ImageFont.ImageFont]:
    """Largest font from ``px`` down to ``min_px`` that fits ``text`` in ``max_w``; else ellipsise."""
    for size in range(int(px), int(min_px) - 1, -1):
        font = _font(size)
        if _text_w(text, font) <= max_w:
            return text, font
    font = _font(min_px)
    while len(text) > 1 and _text_w(text + "…", font) > max_w:
        text = text[:-1]
    return text + "…", font


def _draw_title(draw: ImageDraw.ImageDraw, cx: float, cy: float, text: str, max_w: float, unit: float) -> None:
    """Draw a title centred at (cx, cy): one line from 18 down to 14 design units, else two lines.

    Two lines are split at the space nearest the middle (a class name in brackets stays whole
    when possible), drawn from 15 down to 10 units; anything still too wide is ellipsised.
    """
    for px in range(18, 13, -1):
        font = _font(round(px * unit))
        if _text_w(text, font) <= max_w:
            draw.text((cx, cy), text, font=font, fill=BLACK, anchor="mm")
            return
    cuts = [i for i, ch in enumerate(text) if ch == " "]
    if not cuts:
        t, font = _fit(text, max_w, round(14 * unit), max(6, round(10 * unit)))
        draw.text((cx, cy), t, font=font, fill=BLACK, anchor="mm")
        return
    bracket = text.find(" (")
    cut = bracket if bracket > 0 else min(cuts, key=lambda i: abs(i - len(text) / 2))
    lines = [text[:cut], text[cut + 1 :]]
    for px in range(15, 9, -1):
        font = _font(round(px * unit))
        if all(_text_w(line, font) <= max_w for line in lines):
            break
    else:
        font = _font(max(6, round(10 * unit)))
        fsize = int(getattr(font, "size", 10))
        lines = [_fit(line, max_w, fsize, fsize)[0] for line in lines]
    h = float(getattr(font, "size", 10)) * 1.1
    for j, line in enumerate(lines):
        draw.text((cx, cy + (j - 0.5) * h), line, font=font, fill=BLACK, anchor="mm")


# --------------------------------------------------------------------------- explanation panel


def _heat_map(diff: torch.Tensor) -> np.ndarray:
    """Signed map (H,W) -> RGB uint8: blue (negative) / white (0) / red (positive), symmetric scale."""
    d = diff.numpy().astype(np.float32)
    m = float(np.abs(d).max()) if d.size else 0.0
    v = d / m if m > 0 else np.zeros_like(d)
    pos, neg = np.clip(v, 0, 1), np.clip(-v, 0, 1)
    rgb = np.stack([1.0 - neg, 1.0 - pos - neg, 1.0 - pos], axis=-1)
    return (rgb * 255.0 + 0.5).astype(np.uint8)


def panel_geometry(cell: int = 192) -> dict[str, int]:
    """Pixel geometry of :func:`explanation_panel` for a given cell size.

    Args:
        cell: Side of one image cell in pixels.

    Returns:
        ``pad`` (gap around cells), ``title_h`` / ``caption_h`` (text bands above / below the
        cells; the caption band holds the caption and, under the heat map, its colour bar),
        ``width`` = 4·cell + 5·pad and ``height`` = 2·pad + title_h + cell + caption_h.
    """
    pad = max(4, cell // 16)
    text_h = max(24, cell // 5)
    return {
        "pad": pad,
        "title_h": text_h,
        "caption_h": text_h,
        "width": 4 * cell + 5 * pad,
        "height": 2 * pad + 2 * text_h + cell,
    }


def explanation_panel(
    source: torch.Tensor,
    cf: torch.Tensor | None,
    reflection: torch.Tensor | None,
    *,
    titles: Sequence[str],
    captions: Sequence[str],
    cell: int = 192,
) -> Image.Image:
    """A one-row figure: source | 1st CFE | full reflection | signed difference heat map.

    The heat map shows cf − source averaged over channels, blue = negative, white = 0,
    red = positive, on the symmetric scale ±max|diff|; a colour bar under it says so ("darker −"
    in blue, "+ brighter" in red: the counterfactual is darker / brighter there). Each image is resized to ``cell`` x
    ``cell`` nearest-neighbour; a title is drawn above each cell and a caption (e.g.
    ``"8 (0.99)"``) below. A missing ``cf`` (failed input) gives grey "no CFE" cells for the
    1st CFE and the heat map; a missing ``reflection`` a grey "none" cell.

    Args:
        source: The source image.
        cf: The first counterfactual, or None.
        reflection: The full reflection (last image of the path), or None.
        titles: Four titles, one per cell.
        captions: Four captions, one per cell.
        cell: Side of one image cell in pixels (see :func:`panel_geometry` for the layout).

    Returns:
        An RGB image of size (panel_geometry(cell)["width"], panel_geometry(cell)["height"]).

    Shape:
        source, cf, reflection: (C, H, W), the same shape, C = 1 or 3.
    """
    if len(titles) != 4 or len(captions) != 4:
        raise InputError(f"explanation_panel needs 4 titles and 4 captions, got {len(titles)} and {len(captions)}")
    if int(cell) < 16:
        raise InputError(f"cell must be at least 16 pixels, got {cell}")
    cell = int(cell)
    src = _check_image(source, "source")
    cfx = None if cf is None else _check_image(cf, "cf")
    ref = None if reflection is None else _check_image(reflection, "reflection")
    for name, other in (("cf", cfx), ("reflection", ref)):
        if other is not None and other.shape != src.shape:
            raise InputError(f"{name} has shape {tuple(other.shape)}, source {tuple(src.shape)}")

    g = panel_geometry(cell)
    pad, title_h = g["pad"], g["title_h"]
    canvas = Image.new("RGB", (g["width"], g["height"]), WHITE)
    draw = ImageDraw.Draw(canvas)
    y0 = pad + title_h

    def grey_cell(x0: int, text: str) -> None:
        draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=NO_CFE_GREY)
        t, f = _fit(text, cell - 8, max(10, cell // 10), 8)
        draw.text((x0 + cell / 2, y0 + cell / 2), t, font=f, fill=GREY_TEXT, anchor="mm")

    cells: list[np.ndarray | str] = [
        _to_uint8_hwc(src),
        _to_uint8_hwc(cfx) if cfx is not None else "no CFE",
        _to_uint8_hwc(ref) if ref is not None else "none",
        _heat_map((cfx - src).mean(0)) if cfx is not None else "no CFE",
    ]
    text_px = max(9, int(max(14, cell // 7) * 0.62))
    cap_y = y0 + cell + min(g["caption_h"] / 2, text_px * 0.75)  # caption row; the colour bar goes below it
    for i, content in enumerate(cells):
        x0 = pad + i * (cell + pad)
        if isinstance(content, str):
            grey_cell(x0, content)
        else:
            canvas.paste(Image.fromarray(content, "RGB").resize((cell, cell), Image.NEAREST), (x0, y0))
            if i == 3:
                draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], outline=(160, 160, 160))
        t, f = _fit(str(titles[i]), cell, text_px, 7)
        draw.text((x0 + cell / 2, pad + title_h / 2), t, font=f, fill=BLACK, anchor="mm")
        t, f = _fit(str(captions[i]), cell, text_px, 7)
        draw.text((x0 + cell / 2, cap_y), t, font=f, fill=GREY_TEXT, anchor="mm")
    if cfx is not None:
        x0 = pad + 3 * (cell + pad)
        _colour_bar(draw, x0, cap_y + text_px * 0.6, y0 + cell + g["caption_h"] + pad, cell, text_px)
    return canvas


def _colour_bar(draw: ImageDraw.ImageDraw, x0: int, top: float, bottom: float, cell: int, text_px: int) -> None:
    """The heat map's key in the band ``top..bottom`` under it: "darker −" (blue), a blue-white-red
    gradient, "+ brighter" (red); the words are dropped when the cell is too narrow for them."""
    mid = (top + bottom) / 2
    bar_h = max(3, round((bottom - top) * 0.3))
    f = _font(max(7, round(text_px * 0.72)))
    minus = "−" if _has_math_glyphs() else "-"
    left, right = f"darker {minus}", "+ brighter"
    gap = 4
    bar_w = cell - _text_w(left, f) - _text_w(right, f) - 2 * gap
    if bar_w < cell * 0.2:  # narrow cell: signs only
        left, right = minus, "+"
        bar_w = cell - _text_w(left, f) - _text_w(right, f) - 2 * gap
    bar_w = int(min(bar_w, cell * 0.5))
    lw, rw = _text_w(left, f), _text_w(right, f)
    bx = round(x0 + (cell - (lw + gap + bar_w + gap + rw)) / 2 + lw + gap)
    ramp = _heat_map(torch.linspace(-1.0, 1.0, max(bar_w, 2))[None])[0]  # (bar_w, 3): blue -> white -> red
    for j, rgb in enumerate(ramp[:bar_w]):
        draw.line([(bx + j, mid - bar_h / 2), (bx + j, mid + bar_h / 2)], fill=tuple(int(c) for c in rgb))
    draw.rectangle([bx - 1, round(mid - bar_h / 2) - 1, bx + bar_w, round(mid + bar_h / 2) + 1],
                   outline=(160, 160, 160))
    draw.text((bx - gap, mid), left, font=f, fill=(0, 0, 255), anchor="rm")
    draw.text((bx + bar_w + gap, mid), right, font=f, fill=(255, 0, 0), anchor="lm")


# --------------------------------------------------------------------------- video: layout


def _nice_step(span: float, n: int = 5) -> float:
    raw = span / max(1, n)
    mag = 10.0 ** math.floor(math.log10(raw))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if raw <= m * mag:
            return m * mag
    return 10.0 * mag


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    step = _nice_step(hi - lo, n)
    first = math.ceil(lo / step - 1e-9) * step
    out = []
    v = first
    while v <= hi + step * 1e-6:
        out.append(round(v, 10))
        v += step
    return out


def _fmt_tick(v: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if step < 1 else 0
    if step < 1 and not math.isclose(round(step, decimals), step):
        decimals += 1
    return f"{v:.{decimals}f}"


class _Layout:
    """Pixel positions of the video frame, in output pixels, for a frame of side ``size``."""

    def __init__(self, size: int, img_hw: tuple[int, int]) -> None:
        u = size / _BASE
        self.size = size
        self.u = u
        margin, gap = round(16 * u), round(16 * u)
        self.cell = (size - 2 * margin - 3 * gap) // 4
        self.cell_x = [margin + i * (self.cell + gap) for i in range(4)]
        self.title_y = round(24 * u)  # centre of the title text
        self.title_band = (round(6 * u), round(40 * u))  # rows of the title strip
        self.img_y = round(44 * u)
        # image placement inside a cell (integer nearest-neighbour factor when possible)
        # An integer factor keeps every source pixel the same size; it is used when it fills
        # at least 85% of the cell, else the image is resized to fit (nearest when enlarging).
        h, w = img_hw
        f = min(self.cell // h, self.cell // w)
        if f >= 1 and f * max(h, w) >= 0.85 * self.cell:
            self.img_h, self.img_w = h * f, w * f
            self.factor = f
        else:
            s = self.cell / max(h, w)
            self.img_h, self.img_w = max(1, round(h * s)), max(1, round(w * s))
            self.factor = 0
        self.img_off = ((self.cell - self.img_h) // 2, (self.cell - self.img_w) // 2)
        # middle band: the k axis with the moving dot
        self.axis_y = round(322 * u)
        self.axis_x0, self.axis_x1 = round(112 * u), round(688 * u)
        self.band = (self.img_y + self.cell + round(8 * u), round(366 * u))  # rows redrawn per frame
        # key to the top row's titles, in the gap between the images and the k axis's labels
        self.key_y = (round(240 * u), round(258 * u))
        # bottom plot
        self.plot_title_y = round(386 * u)
        self.legend_y = round(410 * u)
        self.legend2_y = round(429 * u)
        self.px0, self.px1 = round(84 * u), round(696 * u)
        self.py0, self.py1 = round(446 * u), round(732 * u)
        self.xlabel_y = round(780 * u)

    def k_to_x(self, k: float, k0: float, k1: float, x0: int, x1: int) -> float:
        if k1 == k0:
            return float(x0)
        return x0 + (k - k0) / (k1 - k0) * (x1 - x0)


def _upscale(img: np.ndarray, lay: _Layout) -> np.ndarray:
    """(H,W,3) uint8 -> (img_h, img_w, 3) nearest-neighbour (or area-shrunk if too large)."""
    if lay.factor >= 1:
        return np.repeat(np.repeat(img, lay.factor, axis=0), lay.factor, axis=1)
    resample = Image.NEAREST if lay.img_h >= img.shape[0] else Image.BOX
    return np.asarray(Image.fromarray(img, "RGB").resize((lay.img_w, lay.img_h), resample))


def _paste_cell(canvas: np.ndarray, lay: _Layout, i: int, img: np.ndarray) -> None:
    y = lay.img_y + lay.img_off[0]
    x = lay.cell_x[i] + lay.img_off[1]
    canvas[y : y + img.shape[0], x : x + img.shape[1]] = img


def _rotated_text(
    text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, fill: tuple[int, int, int]
) -> Image.Image:
    """Text rendered bottom-to-top (rotated 90°) as an "L" mask plus the colour, for pasting."""
    w = math.ceil(_text_w(text, font)) + 4
    bbox = font.getbbox(text)
    h = bbox[3] + 4
    im = Image.new("L", (w, h), 0)
    ImageDraw.Draw(im).text((2, 2), text, font=font, fill=255)
    mask = im.rotate(90, expand=True)
    solid = Image.new("RGB", mask.size, fill)
    solid.putalpha(mask)
    return solid


def _dashed_hline(draw: ImageDraw.ImageDraw, x0: float, x1: float, y: float, dash: float, width: int, fill) -> None:
    x = x0
    while x < x1:
        draw.line([(x, y), (min(x + dash, x1), y)], fill=fill, width=width)
        x += 2 * dash


def _background(
    lay: _Layout,
    *,
    source_img: np.ndarray,
    first_img: np.ndarray | None,
    last_img: np.ndarray,
    source_name: str,
    target_name: str,
    ks: np.ndarray,
    first_cf_index: int | None,
    intended: np.ndarray | None,
    predicted: np.ndarray,
    distance: np.ndarray,
    x_label: str,
    end_name: str = "Reflection",
) -> np.ndarray:
    """Everything static, drawn once at _SS x and reduced; returns (size, size, 3) uint8."""
    S = _SS
    size = lay.size
    u = lay.u * S  # design unit in supersampled pixels
    im = Image.new("RGB", (size * S, size * S), WHITE)
    d = ImageDraw.Draw(im)

    def font(px: float) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
        return _font(round(px * u))

    # --- top row titles (cell 1's title changes per frame and is pasted later)
    static_titles = {0: f"Source ({source_name})", 2: f"1st CFE ({target_name})", 3: f"{end_name} ({target_name})"}
    for i, title in static_titles.items():
        _draw_title(d, (lay.cell_x[i] + lay.cell / 2) * S, lay.title_y * S, title, lay.cell * S, u)
    # key to those titles: what SFE, CFE and the end of the path are
    end_what = {"Reflection": "k = 1, the source's features mirrored across the source/target boundary",
                "Final": "the optimisation's last image"}.get(end_name, "the end of the path")
    keys = ["SFE (semi-factual): the path's image, still the source class  ·  "
            "CFE (counterfactual): classified as the target",
            f"1st CFE: the first CFE on the path  ·  {end_name}: {end_what}"]
    for y, text in zip(lay.key_y, keys, strict=True):
        t, f = _fit(text, (size - 24 * lay.u) * S, round(13 * u), round(9 * u))
        d.text((size * S / 2, y * S), t, font=f, fill=GREY_TEXT, anchor="mm")
    if first_img is None:
        x0, y0 = lay.cell_x[2] * S, (lay.img_y + lay.img_off[0]) * S
        x1 = x0 + lay.cell * S - 1
        y1 = (lay.img_y + lay.img_off[0] + lay.img_h) * S - 1
        d.rectangle([x0, y0, x1, y1], fill=NO_CFE_GREY)
        d.text(((x0 + x1) / 2, (y0 + y1) / 2), "no CFE", font=font(18), fill=GREY_TEXT, anchor="mm")

    # --- middle: dashed k axis
    k0, k1 = float(ks.min()), float(ks.max())
    ax0, ax1, ay = lay.axis_x0 * S, lay.axis_x1 * S, lay.axis_y * S
    _dashed_hline(d, ax0, ax1, ay, 9 * u, max(1, round(2 * u)), (110, 110, 110))
    r_end = 5 * u
    for x in (ax0, ax1):
        d.ellipse([x - r_end, ay - r_end, x + r_end, ay + r_end], fill=(60, 60, 60))
    f16 = font(16)
    d.text((ax0 - 12 * u, ay), "Source", font=f16, fill=BLACK, anchor="rm")
    d.text((ax1 + 12 * u, ay), end_name, font=f16, fill=BLACK, anchor="lm")
    if first_cf_index is not None:
        gx = lay.k_to_x(float(ks[first_cf_index]), k0, k1, lay.axis_x0, lay.axis_x1) * S
        r = 7 * u
        d.ellipse([gx - r, ay - r, gx + r, ay + r], fill=GREEN)
        lw = _text_w("1st CFE", f16)
        lx = min(max(gx, ax0 + lw / 2), ax1 - lw / 2)
        d.text((lx, ay + 14 * u), "1st CFE", font=f16, fill=GREEN, anchor="mt")

    # --- bottom: the confidence plot
    px0, px1, py0, py1 = lay.px0 * S, lay.px1 * S, lay.py0 * S, lay.py1 * S
    d.text((size * S / 2, lay.plot_title_y * S), "Target Class Confidence", font=font(20), fill=BLACK, anchor="mm")
    # legend: two rows under the title, never over the curves; each entry says what its line measures
    # (colour, text, marker): a solid or dashed line like the curve's, or none (a note)
    rows: list[list[tuple[tuple[int, int, int], str, str]]] = [[], []]
    if intended is not None:
        rows[0].append((ORANGE, "intended p(target): the head on the features", "line"))
    rows[0].append((BLUE, "predicted p(target): the classifier on the image", "line"))
    rows[1] += [(GREEN, f"{_distance_label()} (right axis)", "line"), (RED, "current frame", "dashes"),
                (GREY_TEXT, "K(S:…, T:…): p(source), p(target) at the dot", "none")]
    seg, sp, gap = 26 * u, 6 * u, 20 * u
    for row, ly in zip(rows, (lay.legend_y * S, lay.legend2_y * S), strict=True):
        for px in range(14, 8, -1):  # the largest font that fits the row in the frame
            f_row = font(px)
            widths = [(seg + sp if m != "none" else 0) + _text_w(t, f_row) for _, t, m in row]
            total = sum(widths) + gap * (len(row) - 1)
            if total <= (size - 16 * lay.u) * S:
                break
        x = size * S / 2 - total / 2
        for (colour, text, marker), w in zip(row, widths, strict=True):
            if marker == "dashes":  # as the current-k line: red dashes
                _dashed_hline(d, x, x + seg, ly, 5 * u, max(1, round(2.4 * u)), colour)
            elif marker == "line":
                d.line([(x, ly), (x + seg, ly)], fill=colour, width=max(1, round(3 * u)))
            tx = x + (seg + sp if marker != "none" else 0)
            d.text((tx, ly), text, font=f_row, fill=BLACK if marker != "none" else GREY_TEXT, anchor="lm")
            x += w + gap

    # axes ranges
    xk0, xk1 = (k0, k1) if k1 > k0 else (k0 - 0.5, k0 + 0.5)
    dmax = float(distance.max()) if distance.size else 0.0
    dmax = dmax if dmax > 0 and math.isfinite(dmax) else 1.0
    dstep = _nice_step(dmax, 4)
    dtop = math.ceil(dmax / dstep - 1e-9) * dstep

    def X(k: float) -> float:
        return px0 + (k - xk0) / (xk1 - xk0) * (px1 - px0)

    def Y(p: float) -> float:
        return py1 - p * (py1 - py0)

    def YD(v: float) -> float:
        return py1 - v / dtop * (py1 - py0)

    f13 = font(13)
    tick = 5 * u
    lw_axis = max(1, round(1.5 * u))
    # grid + left ticks (confidence)
    for p in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
        y = Y(p)
        d.line([(px0, y), (px1, y)], fill=GRID, width=max(1, round(u)))
        d.line([(px0 - tick, y), (px0, y)], fill=BLACK, width=lw_axis)
        d.text((px0 - tick - 3 * u, y), f"{p:.1f}", font=f13, fill=BLACK, anchor="rm")
    # x ticks
    xt = _ticks(xk0, xk1, 6)
    xstep = _nice_step(xk1 - xk0, 6)
    for v in xt:
        x = X(v)
        d.line([(x, py0), (x, py1)], fill=GRID, width=max(1, round(u)))
        d.line([(x, py1), (x, py1 + tick)], fill=BLACK, width=lw_axis)
        d.text((x, py1 + tick + 3 * u), _fmt_tick(v, xstep), font=f13, fill=BLACK, anchor="mt")
    # right ticks (distance), green
    for v in _ticks(0.0, dtop, 4):
        y = YD(v)
        d.line([(px1, y), (px1 + tick, y)], fill=GREEN, width=lw_axis)
        d.text((px1 + tick + 3 * u, y), _fmt_tick(v, dstep), font=f13, fill=GREEN, anchor="lm")
    # frame
    d.rectangle([px0, py0, px1, py1], outline=BLACK, width=lw_axis)
    # axis labels
    f15 = font(15)
    d.text(((px0 + px1) / 2, lay.xlabel_y * S), x_label, font=f15, fill=BLACK, anchor="mm")
    left = _rotated_text("confidence", f15, BLACK)
    im.paste(left, (round(px0 - 44 * u - left.width), round((py0 + py1) / 2 - left.height / 2)), left)
    right = _rotated_text(_distance_label(), f15, GREEN)
    im.paste(right, (round(px1 + 52 * u), round((py0 + py1) / 2 - right.height / 2)), right)

    # curves (full paths, drawn once)
    lw_curve = max(1, round(2.5 * u))
    xs = [X(float(k)) for k in ks]
    curves = [(GREEN, [YD(float(v)) for v in distance])]
    if intended is not None:
        curves.append((ORANGE, [Y(float(p)) for p in intended[:, 1]]))
    curves.append((BLUE, [Y(float(p)) for p in predicted[:, 1]]))
    for colour, ys in curves:
        if len(xs) == 1:
            d.ellipse([xs[0] - lw_curve, ys[0] - lw_curve, xs[0] + lw_curve, ys[0] + lw_curve], fill=colour)
        else:
            d.line(list(zip(xs, ys, strict=True)), fill=colour, width=lw_curve, joint="curve")

    bg = np.array(im.reduce(S))
    _paste_cell(bg, lay, 0, source_img)
    if first_img is not None:
        _paste_cell(bg, lay, 2, first_img)
    _paste_cell(bg, lay, 3, last_img)
    return bg


def _title_strip(lay: _Layout, text: str) -> np.ndarray:
    """The title band above cell 1 with ``text``, drawn supersampled, as (h, cell, 3) uint8."""
    S = _SS
    y0, y1 = lay.title_band
    im = Image.new("RGB", (lay.cell * S, (y1 - y0) * S), WHITE)
    u = lay.u * S
    _draw_title(ImageDraw.Draw(im), lay.cell * S / 2, (lay.title_y - y0) * S, text, lay.cell * S, u)
    return np.array(im.reduce(S))


def _video_frames(
    bg: np.ndarray,
    lay: _Layout,
    *,
    imgs: np.ndarray,
    ks: np.ndarray,
    first_cf_index: int | None,
    intended: np.ndarray | None,
    predicted: np.ndarray,
    source_name: str,
    target_name: str,
    end_name: str = "Reflection",
) -> Iterator[np.ndarray]:
    """Yield the (size, size, 3) uint8 RGB frames: background + current image, dot, label, red line."""
    T = imgs.shape[0]
    u = lay.u
    strips = {
        "sfe": _title_strip(lay, f"SFE ({source_name})"),
        "cfe": _title_strip(lay, f"CFE ({target_name})"),
        "ref": _title_strip(lay, f"{end_name} ({target_name})"),
    }
    ty0, ty1 = lay.title_band
    cx0 = lay.cell_x[1]
    by0, by1 = lay.band
    k0, k1 = float(ks.min()), float(ks.max())
    xk0, xk1 = (k0, k1) if k1 > k0 else (k0 - 0.5, k0 + 0.5)
    f_lab = _font(round(15 * u))
    r_dot = max(2, round(8 * u))
    # dashed red line rows within the plot area
    dash = max(2, round(7 * u))
    rows = np.arange(lay.py0 + 1, lay.py1)
    rows = rows[((rows - lay.py0) // dash) % 2 == 0]
    half_w = max(1, round(1.2 * u))
    line_h = round(19 * u)
    for t in range(T):
        frame = bg.copy()
        if t == T - 1:
            key = "ref"
        elif first_cf_index is not None and t >= first_cf_index:
            key = "cfe"
        else:
            key = "sfe"
        frame[ty0:ty1, cx0 : cx0 + lay.cell] = strips[key]
        _paste_cell(frame, lay, 1, _upscale(imgs[t], lay))

        # moving dot + its label, drawn on the middle band only
        band = Image.fromarray(frame[by0:by1])
        d = ImageDraw.Draw(band)
        x = lay.k_to_x(float(ks[t]), k0, k1, lay.axis_x0, lay.axis_x1)
        ay = lay.axis_y - by0
        d.ellipse([x - r_dot, ay - r_dot, x + r_dot, ay + r_dot], fill=BLUE, outline=(255, 255, 255))
        labels = [(BLUE, f"K(S:{predicted[t, 0]:.2f}, T:{predicted[t, 1]:.2f})")]
        if intended is not None:
            labels.insert(0, (ORANGE, f"K(S:{intended[t, 0]:.2f}, T:{intended[t, 1]:.2f})"))
        y = ay - r_dot - round(6 * u) - line_h * (len(labels) - 1)
        for colour, text in labels:
            w = _text_w(text, f_lab)
            lx = min(max(x - w / 2, 2.0), lay.size - 2 - w)
            d.text((lx, y), text, font=f_lab, fill=colour, anchor="ls")
            y += line_h
        frame[by0:by1] = np.asarray(band)

        # red dashed vertical line at the current k
        xp = round(lay.px0 + (float(ks[t]) - xk0) / (xk1 - xk0) * (lay.px1 - lay.px0))
        frame[rows, max(0, xp - half_w) : xp + half_w] = RED
        yield frame


# --------------------------------------------------------------------------- video: public


def _as_numpy(x: torch.Tensor | None, shape: tuple[int | None, ...], what: str) -> np.ndarray | None:
    if x is None:
        return None
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x)
    if x.dim() != len(shape) or any(s is not None and x.shape[i] != s for i, s in enumerate(shape)):
        want = "(" + ",".join("?" if s is None else str(s) for s in shape) + ")"
        raise InputError(f"{what} must have shape {want}, got {tuple(x.shape)}")
    return x.detach().to("cpu", torch.float64).numpy()


def render_video(
    path: str | os.PathLike[str],
    *,
    frames: torch.Tensor,
    source: torch.Tensor,
    ks: torch.Tensor,
    first_cf_index: int | None,
    intended: torch.Tensor | None,
    predicted: torch.Tensor,
    distance: torch.Tensor,
    source_name: str,
    target_name: str,
    size: int = 800,
    fps: float = 10,
    x_label: str = "step, k",
    end_name: str = "Reflection",
) -> Path:
    """Write the morph video of one explanation as an H.264 / yuv420p MP4 (plays in browsers).

    Each frame (white background, after the Mirror-CFE paper's videos) shows: a top row with
    "Source (<s>)", the current image (titled "SFE (<s>)" before the first counterfactual,
    "CFE (<t>)" from it on and "Reflection (<t>)" on the last frame), "1st CFE (<t>)" (grey
    "no CFE" when there is none) and "Reflection (<t>)"; a dashed axis from "Source" (k at
    the first frame) to "Reflection" (k at the last frame) with a green "1st CFE" dot and a
    blue moving dot labelled ``K(S:…, T:…)`` in orange (intended) and blue (predicted); and a
    "Target Class Confidence" plot of the intended (orange) and predicted (blue) target
    confidence and, on its own right-hand scale, the distance (green), with a red dashed line
    at the current k. A grey key under the images says what SFE, CFE, 1st CFE and the end of
    the path (``end_name``) are, and the plot's two-row legend what each curve, the red line
    and the ``K(S:…, T:…)`` labels measure, so a frame explains itself without the docs.
    The file is written to a temporary name and renamed when complete.

    Args:
        path: Destination ``.mp4``; missing parent folders are created.
        frames: The decoded images along the path, in [0, 1].
        source: The source image, in [0, 1].
        ks: Position of each frame (k in [0, 1] for Mirror-CFE, or the optimisation step).
        first_cf_index: Index of the first counterfactual frame, or None if there is none.
        intended: [p_source, p_target] the method aims at per frame, or None.
        predicted: [p_source, p_target] of the classifier on each decoded frame.
        distance: Mean |x_k − x_s| per frame.
        source_name: Source class name, for titles.
        target_name: Target class name, for titles.
        size: Side of the square video in pixels; even, at least 160.
        fps: Frames per second.
        x_label: Label of the plot's x axis.

    Returns:
        The path written.

    Shape:
        frames: (T, C, H, W), C = 1 or 3. source: (C, H, W). ks: (T,). intended, predicted:
        (T, 2). distance: (T,).

    Raises:
        InputError: On inconsistent shapes or options, when the folder is not writable, or
            when ffmpeg / its libx264 encoder is unavailable.
    """
    import imageio_ffmpeg  # imported here so the rest of the module works without it

    size = int(size)
    if size < 160 or size % 2:
        raise InputError(f"video size must be an even number of pixels >= 160, got {size}")
    if not (isinstance(fps, (int, float)) and fps > 0):
        raise InputError(f"fps must be positive, got {fps}")
    if not isinstance(frames, torch.Tensor) or frames.dim() != 4 or frames.shape[1] not in (1, 3):
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise InputError(f"frames must have shape (T,C,H,W) with C=1 or 3, got {shape}")
    T = int(frames.shape[0])
    if T < 1:
        raise InputError("frames is empty")
    src = _check_image(source, "source")
    if src.shape != frames.shape[1:]:
        raise InputError(f"source has shape {tuple(src.shape)}, frames {tuple(frames.shape[1:])}")
    ks_np = _as_numpy(ks, (T,), "ks")
    pred_np = _as_numpy(predicted, (T, 2), "predicted")
    int_np = _as_numpy(intended, (T, 2), "intended")
    dist_np = _as_numpy(distance, (T,), "distance")
    assert ks_np is not None and pred_np is not None and dist_np is not None
    if not np.isfinite(ks_np).all():
        raise InputError("ks has non-finite values")
    if first_cf_index is not None and not 0 <= int(first_cf_index) < T:
        raise InputError(f"first_cf_index {first_cf_index} is outside 0..{T - 1}")
    first = None if first_cf_index is None else int(first_cf_index)
    pred_np = np.nan_to_num(pred_np.clip(0, 1))
    int_np = None if int_np is None else np.nan_to_num(int_np.clip(0, 1))
    dist_np = np.nan_to_num(dist_np, posinf=0.0, neginf=0.0)

    imgs = _to_uint8_hwc(frames)  # (T,H,W,3)
    lay = _Layout(size, imgs.shape[1:3])
    bg = _background(
        lay,
        source_img=_upscale(_to_uint8_hwc(src), lay),
        first_img=None if first is None else _upscale(imgs[first], lay),
        last_img=_upscale(imgs[-1], lay),
        source_name=source_name,
        target_name=target_name,
        ks=ks_np,
        first_cf_index=first,
        intended=int_np,
        predicted=pred_np,
        distance=dist_np,
        x_label=x_label,
        end_name=end_name,
    )
    gen = _video_frames(
        bg, lay, imgs=imgs, ks=ks_np, first_cf_index=first, intended=int_np, predicted=pred_np,
        source_name=source_name, target_name=target_name, end_name=end_name,
    )  # fmt: skip

    try:
        imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError:
        raise InputError("ffmpeg is not available (install imageio-ffmpeg with its bundled binary)") from None

    with atomic_path(path) as tmp:
        try:
            writer = imageio_ffmpeg.write_frames(
                str(tmp), (size, size), fps=fps, codec="libx264", pix_fmt_out="yuv420p", quality=None,
                macro_block_size=1, ffmpeg_log_level="quiet",
                output_params=["-f", "mp4", "-crf", "23", "-preset", "veryfast", "-movflags", "+faststart"],
            )  # fmt: skip
            writer.send(None)
            try:
                for frame in gen:
                    writer.send(frame)
            finally:
                writer.close()
        except (OSError, RuntimeError) as err:
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise InputError(f"cannot encode H.264 video with ffmpeg/libx264: {first_line}") from None
        if tmp.stat().st_size == 0:
            raise InputError("ffmpeg wrote no video (is its libx264 encoder available?)")
    return Path(path)


def frame_strip(
    frames: torch.Tensor,
    ks: torch.Tensor,
    predicted: torch.Tensor,
    *,
    source_name: str,
    target_name: str,
    n: int = 8,
    cell: int = 112,
    x_label: str = "k",
    first_index: int | None = None,
) -> Image.Image:
    """A one-row preview of a video: ``n`` evenly spaced frames, each captioned with its
    position on the path and the source / target confidences; frames from ``first_index`` (the
    first frame the classifier assigns to the target; default: where the target's confidence
    passes the source's) on are outlined in red.

    Shape:
        frames: (T, C, H, W) in [0, 1]; ks: (T,); predicted: (T, 2) — confidences of
        source and target.
    """
    T = frames.shape[0]
    if T < 1 or ks.shape[0] != T or predicted.shape[0] != T:
        raise InputError("frame_strip needs frames, ks and predicted of the same length")
    idx = torch.linspace(0, T - 1, min(n, T)).round().long().tolist()
    pad, cap = max(4, cell // 16), max(28, cell // 3)
    font = _font(max(9, cell // 9))
    img = Image.new("RGB", (len(idx) * (cell + pad) + pad, cell + cap + 2 * pad + cap // 2), "white")
    d = ImageDraw.Draw(img)
    d.text((pad, pad // 2), f"{source_name} -> {target_name}    captions: p({source_name}) / p({target_name}); "
           f"red: classified as {target_name}", fill="black", font=font)
    top = pad + cap // 2
    first = first_index if first_index is not None else next(
        (int(i) for i in range(T) if float(predicted[i, 1]) > float(predicted[i, 0])), None)
    for j, i in enumerate(idx):
        x0 = pad + j * (cell + pad)
        img.paste(to_pil(frames[i], cell).convert("RGB"), (x0, top))
        if first is not None and i >= first:
            d.rectangle([x0 - 2, top - 2, x0 + cell + 1, top + cell + 1], outline=(214, 39, 40), width=2)
        kv = float(ks[i])
        k_txt = f"{x_label}={kv:.2f}" if kv != int(kv) or x_label == "k" else f"{x_label} {int(kv)}"
        d.text((x0, top + cell + 2), k_txt, fill="black", font=font)
        d.text((x0, top + cell + 2 + cap // 2), f"{float(predicted[i, 0]):.2f} / {float(predicted[i, 1]):.2f}",
               fill=(80, 80, 80), font=font)
    return img


def read_video_frames(path: str | os.PathLike[str]) -> tuple[int, tuple[int, int], float]:
    """Count the frames of a video and read its size and frame rate (decodes the whole file).

    Args:
        path: A video file.

    Returns:
        (number of frames, (width, height), frames per second).
    """
    import imageio_ffmpeg

    if not Path(path).is_file():
        raise InputError(f"no video at {str(path)!r}")
    reader = imageio_ffmpeg.read_frames(str(path))
    try:
        meta = next(reader)
        n = sum(1 for _ in reader)
    finally:
        reader.close()
    w, h = meta["size"]
    return n, (int(w), int(h)), float(meta["fps"])
