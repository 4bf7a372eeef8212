"""The paper-style morph video (MP4) and its one-row frame strip."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from cfe_cli.errors import InputError
from cfe_cli.files import atomic_path
from cfe_cli.render.images import (
    _SS,
    BLACK,
    BLUE,
    GREEN,
    GREY_TEXT,
    GRID,
    NO_CFE_GREY,
    ORANGE,
    RED,
    WHITE,
    _check_image,
    _distance_label,
    _draw_title,
    _fit,
    _font,
    _text_w,
    _to_uint8_hwc,
    to_pil,
)
from cfe_cli.render.layout import (
    _fmt_tick,
    _Layout,
    _nice_step,
    _paste_cell,
    _ticks,
    _upscale,
)


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
    im = Image.new("RGB", (lay.size * S, lay.size * S), WHITE)
    c = _Canvas(im, ImageDraw.Draw(im), lay, S, lay.u * S)
    _draw_titles(c, source_name, target_name, end_name, first_img is None)
    k0, k1 = float(ks.min()), float(ks.max())
    _draw_k_axis(c, ks, k0, k1, first_cf_index, end_name)
    _draw_plot_legend(c, intended is not None)
    _draw_plot(c, ks, k0, k1, intended, predicted, distance, x_label)
    bg = np.array(im.reduce(S))
    _paste_cell(bg, lay, 0, source_img)
    if first_img is not None:
        _paste_cell(bg, lay, 2, first_img)
    _paste_cell(bg, lay, 3, last_img)
    return bg




@dataclass
class _Canvas:
    """The supersampled background being drawn: image, its drawer, the layout, S and the design unit u."""

    im: Image.Image
    d: ImageDraw.ImageDraw
    lay: _Layout
    S: int
    u: float

    def font(self, px: float) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
        return _font(round(px * self.u))


def _draw_titles(c: _Canvas, source_name: str, target_name: str, end_name: str, no_cfe: bool) -> None:
    """The top row's static titles, their key (what SFE, CFE and the path's end are) and the "no CFE" cell."""
    d, lay, S, u, size, font = c.d, c.lay, c.S, c.u, c.lay.size, c.font
    # top row titles (cell 1's title changes per frame and is pasted later)
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
    if no_cfe:
        x0, y0 = lay.cell_x[2] * S, (lay.img_y + lay.img_off[0]) * S
        x1 = x0 + lay.cell * S - 1
        y1 = (lay.img_y + lay.img_off[0] + lay.img_h) * S - 1
        d.rectangle([x0, y0, x1, y1], fill=NO_CFE_GREY)
        d.text(((x0 + x1) / 2, (y0 + y1) / 2), "no CFE", font=font(18), fill=GREY_TEXT, anchor="mm")


def _draw_k_axis(c: _Canvas, ks: np.ndarray, k0: float, k1: float, first_cf_index: int | None, end_name: str) -> None:
    """The dashed k axis from Source to the path's end, with the 1st CFE marked."""
    d, lay, S, u, font = c.d, c.lay, c.S, c.u, c.font
# --- middle: dashed k axis
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


def _draw_plot_legend(c: _Canvas, has_intended: bool) -> None:
    """The plot's title and its two-row legend (each entry says what its line measures)."""
    d, lay, S, u, size, font = c.d, c.lay, c.S, c.u, c.lay.size, c.font
    d.text((size * S / 2, lay.plot_title_y * S), "Target Class Confidence", font=font(20), fill=BLACK, anchor="mm")
    # legend: two rows under the title, never over the curves; each entry says what its line measures
    # (colour, text, marker): a solid or dashed line like the curve's, or none (a note)
    rows: list[list[tuple[tuple[int, int, int], str, str]]] = [[], []]
    if has_intended:
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


def _draw_plot(c: _Canvas, ks: np.ndarray, k0: float, k1: float, intended: np.ndarray | None, predicted: np.ndarray,
               distance: np.ndarray, x_label: str) -> None:
    """The confidence plot: axes, grid, ticks, labels and the full curves."""
    im, d, lay, S, u, font = c.im, c.d, c.lay, c.S, c.u, c.font
    px0, px1, py0, py1 = lay.px0 * S, lay.px1 * S, lay.py0 * S, lay.py1 * S
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
    size = int(size)
    src, ks_np, int_np, pred_np, dist_np, first = _check_video_inputs(size, fps, frames, source, ks, first_cf_index,
                                                                     intended, predicted, distance)
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

    _encode(path, size, fps, gen)
    return Path(path)


def _check_video_inputs(size: int, fps: float, frames: torch.Tensor, source: torch.Tensor, ks: torch.Tensor,
                        first_cf_index: int | None, intended: torch.Tensor | None, predicted: torch.Tensor,
                        distance: torch.Tensor) -> tuple[torch.Tensor, np.ndarray, np.ndarray | None, np.ndarray,
                                                         np.ndarray, int | None]:
    """render_video's inputs checked (one InputError per problem) and as clean numpy arrays."""
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

    return src, ks_np, int_np, pred_np, dist_np, first


def _encode(path: str | os.PathLike[str], size: int, fps: float, gen: Iterator[np.ndarray]) -> None:
    """Encode the frames of ``gen`` as H.264 / yuv420p MP4, atomically."""
    import imageio_ffmpeg  # imported here so the rest of the module works without it

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
