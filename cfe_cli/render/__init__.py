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

from cfe_cli.render.images import cf_name, explanation_panel, image_grid, panel_geometry, save_image, save_png, to_pil
from cfe_cli.render.video import _Layout, frame_strip, read_video_frames, render_video

__all__ = [
    "_Layout", "cf_name", "explanation_panel", "frame_strip", "image_grid", "panel_geometry", "read_video_frames",
    "render_video", "save_image", "save_png", "to_pil",
]  # fmt: skip
