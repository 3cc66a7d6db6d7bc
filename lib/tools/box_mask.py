"""A first-frame mask from boxes: OpenCV's GrabCut inside each box, for a user who has no mask.

``demo.py --box x0,y0,x1,y1`` (one flag per object, ids 1, 2, ... in the given order; a later box's object
covers an earlier one where they overlap), or boxes drawn on the first frame with ``--show``. GrabCut
(Rother et al. 2004) fits colour models of the object (inside the box) and the background (outside) and cuts
along the image's edges; it runs on the frame downscaled to at most :data:`GRABCUT_SIDE` px (its cost grows
with the pixels, at full HD it takes seconds), and its mask is upscaled back. Of what it returns inside the box
the largest connected part is kept (small specks of object colour elsewhere in the box are dropped).
"""

from __future__ import annotations

from typing import Sequence, Tuple

import cv2
import numpy as np

from base.errors import ConfigError

Box = Tuple[int, int, int, int]
GRABCUT_SIDE = 480
GRABCUT_ITERATIONS = 5
MIN_BOX_SIDE = 4


def parse_box(text: str) -> Box:
    """``"x0,y0,x1,y1"`` (pixels; x1, y1 exclusive) as a tuple of ints."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = tuple(int(round(float(p))) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 4:
        raise ConfigError(f"--box takes x0,y0,x1,y1 (four pixel coordinates), got {text!r}")
    return values  # type: ignore[return-value]


def check_box(box: Box, size: Tuple[int, int]) -> Box:
    """``box`` clipped to the frame (H, W); a box outside it, inverted or under :data:`MIN_BOX_SIDE` px is an error."""
    height, width = size
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        raise ConfigError(f"--box {x0},{y0},{x1},{y1}: needs x0 < x1 and y0 < y1")
    cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
    if cx1 - cx0 < MIN_BOX_SIDE or cy1 - cy0 < MIN_BOX_SIDE:
        raise ConfigError(f"--box {x0},{y0},{x1},{y1}: less than {MIN_BOX_SIDE} px of it is inside the "
                          f"{width}x{height} (WxH) frame")
    return cx0, cy0, cx1, cy1


def grabcut_box(image_rgb: np.ndarray, box: Box, iterations: int = GRABCUT_ITERATIONS) -> np.ndarray:
    """(H, W) uint8 0/1 mask of the object GrabCut finds inside ``box`` (x0, y0, x1, y1) of ``image_rgb``."""
    height, width = image_rgb.shape[:2]
    x0, y0, x1, y1 = check_box(box, (height, width))
    scale = min(1.0, GRABCUT_SIDE / max(height, width))
    small = image_rgb if scale == 1.0 else cv2.resize(image_rgb, (max(1, round(width * scale)),
                                                                  max(1, round(height * scale))),
                                                      interpolation=cv2.INTER_AREA)
    sh, sw = small.shape[:2]
    sx0, sy0 = int(x0 * scale), int(y0 * scale)
    sx1, sy1 = max(sx0 + 2, min(sw, int(np.ceil(x1 * scale)))), max(sy0 + 2, min(sh, int(np.ceil(y1 * scale))))
    if sx0 == 0 and sy0 == 0 and sx1 >= sw and sy1 >= sh:
        raise ConfigError(f"--box {x0},{y0},{x1},{y1} covers the whole frame: GrabCut needs background outside it")
    cut = np.zeros((sh, sw), np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)  # GrabCut's k-means starts from OpenCV's generator: the same mask every run
    cv2.grabCut(cv2.cvtColor(small, cv2.COLOR_RGB2BGR), cut, (sx0, sy0, sx1 - sx0, sy1 - sy0), bgd, fgd,
                iterations, cv2.GC_INIT_WITH_RECT)
    fg = np.isin(cut, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.uint8)
    count, parts, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    if count > 1:
        fg = (parts == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
    if scale != 1.0:
        fg = (cv2.resize(fg.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR) >= 0.5)
        fg = fg.astype(np.uint8)
    inside = np.zeros_like(fg)
    inside[y0:y1, x0:x1] = 1
    return fg * inside


def boxes_to_labels(image_rgb: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
    """(H, W) uint8 object ids: box i's GrabCut object is id i + 1 (later boxes over earlier ones)."""
    if not boxes:
        raise ConfigError("no box given")
    if len(boxes) > 255:
        raise ConfigError(f"at most 255 objects, got {len(boxes)} boxes")
    labels = np.zeros(image_rgb.shape[:2], np.uint8)
    for obj_id, box in enumerate(boxes, start=1):
        mask = grabcut_box(image_rgb, box)
        if not mask.any():
            x0, y0, x1, y1 = box
            raise ConfigError(f"--box {x0},{y0},{x1},{y1}: GrabCut found no object in it; draw a tighter box "
                              "around the object or give --mask")
        labels[mask > 0] = obj_id
    missing = [i for i in range(1, len(boxes) + 1) if not (labels == i).any()]
    if missing:
        raise ConfigError(f"the object of box {missing[0]} is entirely covered by a later box's object; "
                          "give the boxes from back to front or use --mask")
    return labels
