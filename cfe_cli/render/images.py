"""Names, PNGs, fonts and the explanation panel (source | counterfactual | second image | difference)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from cfe_cli.errors import InputError
from cfe_cli.files import atomic_path

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


def image_grid(rows: Sequence[torch.Tensor], path: str | os.PathLike[str], *, marked: torch.Tensor | None = None,
               cell: int = 64, gap: int = 4) -> Path:
    """A grid PNG without text, one row per stack (e.g. sources | 1st CFEs | reflections), written atomically.

    Images are enlarged by an integer nearest-neighbour factor to about ``cell`` pixels, so small
    images stay crisp; columns where ``marked`` is true get a red frame (e.g. no counterfactual).

    Shape:
        rows: each (N, C, H, W), the same N, C, H and W; marked: (N,) bool.
    """
    n, _, h, w = rows[0].shape
    f = max(1, cell // max(h, w))
    ch, cw = h * f, w * f
    canvas = np.full((len(rows) * (ch + gap) + gap, n * (cw + gap) + gap, 3), 255, np.uint8)
    for r, stack in enumerate(rows):
        arr = _to_uint8_hwc(stack).repeat(f, axis=1).repeat(f, axis=2)  # (N, ch, cw, 3)
        for j in range(n):
            y, x = gap + r * (ch + gap), gap + j * (cw + gap)
            if marked is not None and bool(marked[j]):
                canvas[y - gap // 2:y + ch + gap // 2, x - gap // 2:x + cw + gap // 2] = RED
            canvas[y:y + ch, x:x + cw] = arr[j]
    return save_image(Image.fromarray(canvas, "RGB"), path)


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
