"""Overlay videos: each object tinted in its DAVIS palette colour and outlined, written as mp4 and GIF."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np
from PIL import Image

from base.errors import ConfigError
from base.io import atomic_path, davis_palette

GIF_MAX_SIDE = 320
GIF_MAX_FRAMES = 150
OVERLAY_ALPHA = 0.5


def object_colours(ids: Sequence[int]) -> Dict[int, np.ndarray]:
    """Overlay colour (RGB uint8) per object id: its DAVIS palette colour, brightened to full intensity."""
    palette = davis_palette()
    colours = {}
    for obj in ids:
        colour = palette[obj].astype(np.float64)
        colours[obj] = (colour * (255.0 / colour.max()) if colour.max() > 0 else colour + 255).astype(np.uint8)
    return colours


def overlay_frame(image: np.ndarray, labels: np.ndarray, colours: Dict[int, np.ndarray],
                  alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """(H, W, 3) uint8 RGB frame with each object tinted in its colour and outlined; labels (H, W) ids.

    Inside an object each channel x becomes round((1 - alpha) x + alpha c) in float32, clipped; the values come
    from a 256-entry table per object (the same float32 arithmetic) applied to the frame and copied where the
    object is (4x faster than blending the masked pixels in float).
    """
    image = np.ascontiguousarray(image, dtype=np.uint8)
    out = image.copy()
    masks = {obj: (labels == obj).astype(np.uint8) for obj in colours}
    levels = np.arange(256, dtype=np.float32)[:, None]
    for obj, colour in colours.items():
        if masks[obj].any():
            table = ((1 - alpha) * levels + alpha * colour.astype(np.float32)).round().clip(0, 255).astype(np.uint8)
            tinted = cv2.LUT(image, table[:, None, :])  # (256, 1, 3): one table per channel
            cv2.copyTo(tinted, masks[obj], out)
    for obj, colour in colours.items():
        contours, _ = cv2.findContours(masks[obj], cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, tuple(int(c) for c in colour), 1)
    return out


class OverlayWriter:
    """Writes overlay frames to an mp4 (OpenCV, mp4v) and a small GIF (Pillow).

    The mp4 is written to a hidden temporary file and renamed on :meth:`close`; odd frame sizes are
    padded by one edge pixel (mp4v needs even sizes). The GIF keeps every ``stride``-th frame so that it
    has at most :data:`GIF_MAX_FRAMES` frames, downscaled to at most :data:`GIF_MAX_SIDE` px; for a stream of
    unknown length (``total_frames`` None) the stride doubles (every other kept frame dropped) whenever the
    GIF would grow past that.
    """

    def __init__(self, mp4: Path, gif: Path, fps: float, size, total_frames: Optional[int]):
        self.mp4, self.gif, self.fps = Path(mp4), Path(gif), float(fps)
        height, width = size
        self.pad = (height % 2, width % 2)
        self.tmp = self.mp4.with_name(f".{self.mp4.stem}.partial{self.mp4.suffix}")
        self.mp4.parent.mkdir(parents=True, exist_ok=True)
        self.video = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps,
                                     (width + self.pad[1], height + self.pad[0]))
        if not self.video.isOpened():
            self.tmp.unlink(missing_ok=True)
            raise ConfigError(f"OpenCV cannot write an mp4 (mp4v codec) to {self.tmp.parent} on this machine")
        self.stride = max(1, math.ceil((total_frames or 1) / GIF_MAX_FRAMES))
        scale = min(1.0, GIF_MAX_SIDE / max(height, width))
        self.gif_size = (max(1, round(width * scale)), max(1, round(height * scale)))
        self.gif_frames: List[Image.Image] = []
        self.count = 0

    def add(self, frame_rgb: np.ndarray) -> None:
        padded = np.pad(frame_rgb, ((0, self.pad[0]), (0, self.pad[1]), (0, 0)), mode="edge") if any(self.pad) \
            else frame_rgb
        self.video.write(cv2.cvtColor(padded, cv2.COLOR_RGB2BGR))
        if self.count % self.stride == 0:
            # each frame gets its own 256-colour palette now, by fast octree quantization: PIL's default median cut
            # at save time took 40 ms a frame (320x180), more than a warped frame's networks
            small = Image.fromarray(frame_rgb).resize(self.gif_size, Image.BILINEAR)
            self.gif_frames.append(small.quantize(colors=256, method=Image.Quantize.FASTOCTREE))
            if len(self.gif_frames) > GIF_MAX_FRAMES:
                self.gif_frames, self.stride = self.gif_frames[::2], 2 * self.stride
        self.count += 1

    def close(self) -> None:
        self.video.release()
        os.replace(self.tmp, self.mp4)
        if self.gif_frames:
            with atomic_path(self.gif) as tmp:
                self.gif_frames[0].save(tmp, format="GIF", save_all=True, append_images=self.gif_frames[1:],
                                        duration=round(1000 * self.stride / self.fps), loop=0)

    def abort(self) -> None:
        self.video.release()
        self.tmp.unlink(missing_ok=True)
