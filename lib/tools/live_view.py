"""``demo.py --show``: a window with each frame's masks and the live frame rate; boxes drawn on the first frame.

OpenCV's HighGUI (the ``opencv-python`` wheel has it; ``opencv-python-headless`` does not). On Linux a window
needs an X11 or Wayland display: without one (a server, an ssh session without forwarding) ``--show`` is a
one-line error before anything runs, since OpenCV's Qt backend would abort the process.
"""

from __future__ import annotations

import os
import sys
from typing import List, Optional

import cv2
import numpy as np

from base.errors import ConfigError
from lib.tools.box_mask import Box

STOP_KEYS = (ord("q"), ord("Q"), 27)  # q, Esc


def display_problem() -> Optional[str]:
    """Why no window can open here, or None."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display (DISPLAY and WAYLAND_DISPLAY are unset)"
    info = cv2.getBuildInformation()
    gui = info[info.find("GUI:"):].split("\n", 1)[0] if "GUI:" in info else ""
    if "NONE" in gui.upper():
        return "this OpenCV has no GUI (opencv-python-headless?); pip install opencv-python"
    return None


class LiveView:
    """One window: :meth:`show` a frame (RGB) with a status line; it returns False once the user pressed q or
    Esc or closed the window."""

    def __init__(self, title: str = "reuse-vos"):
        problem = display_problem()
        if problem is not None:
            raise ConfigError(f"--show needs a window: {problem}; run without --show (the outputs are written "
                              "to --out either way)")
        self.title = title
        cv2.namedWindow(self.title, cv2.WINDOW_NORMAL)

    def show(self, frame_rgb: np.ndarray, status: str) -> bool:
        bgr = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR)
        scale = max(0.5, frame_rgb.shape[1] / 900)
        for colour, width in (((0, 0, 0), 4), ((255, 255, 255), 1)):  # a dark outline keeps it readable
            cv2.putText(bgr, status, (10, int(30 * scale)), cv2.FONT_HERSHEY_SIMPLEX, 0.7 * scale, colour,
                        max(1, int(width * scale)), cv2.LINE_AA)
        cv2.imshow(self.title, bgr)
        key = cv2.waitKey(1) & 0xFF
        if key in STOP_KEYS:
            return False
        try:  # 0 once the user closed the window; -1 where the backend cannot tell (then only q / Esc stop)
            visible = cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE)
        except cv2.error:
            return False
        return visible != 0

    def draw_boxes(self, frame_rgb: np.ndarray) -> List[Box]:
        """Boxes the user drags on ``frame_rgb`` (Enter or Space after each, Esc when done): (x0, y0, x1, y1)."""
        print("draw a box around each object: drag, then Enter or Space; Esc when done")
        rects = cv2.selectROIs(self.title, cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR), showCrosshair=False)
        boxes = [(int(x), int(y), int(x + w), int(y + h)) for x, y, w, h in np.asarray(rects).reshape(-1, 4)
                 if w > 0 and h > 0]
        if not boxes:
            raise ConfigError("no box was drawn on the first frame: nothing to segment")
        return boxes

    def close(self) -> None:
        try:
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)
        except cv2.error:
            pass
