"""The morph video's layout (every position scaled from an 800 x 800 design) and axis ticks."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from cfe_cli.render.images import _BASE


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
