"""Optical-flow reuse (GSVNet-style): carry an object's last computed probability map to the current frame.

No network runs: the motion from the current frame back to the object's last computed frame (its key frame)
is estimated with OpenCV's DIS optical flow on grey frames downscaled by ``scale``; the key frame's
probability map is backward-warped with it at the networks' size, then optionally corrected by a guided
filter whose guide is the current frame (a training-free stand-in for GSVNet's guided spatially-varying
convolution: the warped map's edges snap to the current frame's edges). All arrays are numpy on the CPU.

Flow convention (OpenCV's): ``flow = dis_flow(a, b)`` has ``a(x) ~ b(x + flow(x))``; so with
``a`` = current frame and ``b`` = key frame, ``warped(x) = key_prob(x + flow(x))``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import cv2
import numpy as np

FLOW_SCALE = 4  # the flow runs on frames downscaled by this factor (GSVNet: 1/8 of a 2048x1024 frame)
DIS_PRESET = "fast"
_PRESETS = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
            "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}
REFINEMENTS = ("guided", "none")


def _dis(preset: str) -> cv2.DISOpticalFlow:
    """A new DIS object per flow (5 us): OpenCV's object is not stateless, a frame too small for its finest scale
    lowers that scale for good, so a kept object would make later flows depend on earlier inputs."""
    return cv2.DISOpticalFlow_create(_PRESETS[preset])


def small_gray(image: np.ndarray, scale: int = FLOW_SCALE) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (ceil(H/scale), ceil(W/scale)) uint8 grey, area-downscaled."""
    gray = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    if scale == 1:
        return gray
    h, w = gray.shape
    return cv2.resize(gray, (-(-w // scale), -(-h // scale)), interpolation=cv2.INTER_AREA)


def dis_flow(current: np.ndarray, key: np.ndarray, preset: str = DIS_PRESET) -> np.ndarray:
    """DIS optical flow (h, w, 2) float32 (x, y) of two (h, w) uint8 grey frames: ``current(x) ~ key(x + flow)``."""
    return _dis(preset).calc(current, key, None)


def resize_flow(flow: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """A (h, w, 2) flow bilinearly resized to ``size`` = (H, W), its vectors scaled by W/w and H/h."""
    h, w = flow.shape[:2]
    height, width = size
    if (h, w) == (height, width):
        return flow
    out = cv2.resize(flow, (width, height), interpolation=cv2.INTER_LINEAR)
    out[..., 0] *= width / w
    out[..., 1] *= height / h
    return out


def backward_warp(array: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``out(x) = array(x + flow(x))`` (bilinear; outside the frame the nearest border value), (H, W) float32."""
    h, w = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(np.ascontiguousarray(array, dtype=np.float32), grid_x + flow[..., 0], grid_y + flow[..., 1],
                     cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter of ``src`` (H, W) float32 with a grey ``guide`` (H, W) in [0, 1].

    Per window of side ``2 radius + 1``, ``src ~ a guide + b`` by least squares (``eps`` regularises ``a``);
    the output averages the windows' fits, so it follows the guide's edges where ``src`` changes with them.
    """
    def box(x):
        return cv2.boxFilter(x, cv2.CV_32F, (2 * radius + 1, 2 * radius + 1), borderType=cv2.BORDER_REFLECT)

    mean_i, mean_p = box(guide), box(src)
    cov_ip = box(guide * src) - mean_i * mean_p
    var_i = box(guide * guide) - mean_i * mean_i
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return box(a) * guide + box(b)


def guided_radius(size: Tuple[int, int]) -> int:
    """The guided filter's radius at a network size: 1/60 of the shorter side (8 px at 480p), at least 1."""
    return max(1, round(min(size) / 60))


GUIDED_EPS = 1e-2  # of a [0, 1] grey guide: edges of contrast below ~0.1 are smoothed over


@dataclass
class Warp:
    """One object's warp onto the current frame.

    Attributes:
        prob: (H, W) float32 warped (and corrected) probability map at the networks' size.
        error: mean absolute grey-level difference in [0, 1] between the current frame and the warped key
            frame, over the object's warped region dilated by 1/16 of the longer side (the whole frame if the
            object is empty), at the flow's scale.
    """

    prob: np.ndarray
    error: float


def warp_object(current_small: np.ndarray, key_small: np.ndarray, flow_small: np.ndarray, key_prob: np.ndarray,
                current_gray: np.ndarray | None) -> Warp:
    """Warp ``key_prob`` (H, W) to the current frame with the low-resolution flow (from :func:`dis_flow`).

    ``current_gray``: the current frame (H, W) float32 in [0, 1], the guided filter's guide; None: no
    correction.
    """
    size = key_prob.shape
    prob = backward_warp(key_prob, resize_flow(flow_small, size))
    if current_gray is not None:
        prob = np.clip(guided_filter(current_gray, prob, guided_radius(size), GUIDED_EPS), 0.0, 1.0)
    warped_key = backward_warp(key_small.astype(np.float32), flow_small)
    diff = np.abs(current_small.astype(np.float32) - warped_key) / 255.0
    h, w = current_small.shape
    region = cv2.resize(prob, (w, h), interpolation=cv2.INTER_AREA) > 0.5
    if region.any():
        r = max(1, round(max(h, w) / 16))
        region = cv2.dilate(region.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1,) * 2))
        error = float(diff[region > 0].mean())
    else:
        error = float(diff.mean())
    return Warp(prob.astype(np.float32), error)
