"""Optical-flow reuse (GSVNet-style): carry an object's last computed probability map to the current frame.

No network runs: the motion from the current frame back to the object's last computed frame (its key frame)
is estimated with OpenCV's DIS optical flow on grey frames downscaled by ``scale``; the key frame's
probability map is backward-warped with it at the networks' size, then optionally corrected: by a guided
filter whose guide is the current frame (training-free: the warped map's edges snap to the current frame's
edges), or by GSVNet's guided spatially-varying convolution, learned (:class:`models.warp_corrector.WarpCorrector`,
trained by ``train.py --stage warp-corrector``; its inputs come from :func:`corrector_inputs`, the same function
for training and inference). Flow, warps and filters are numpy on the CPU; the learned module runs on the
session's device.

Flow convention (OpenCV's): ``flow = dis_flow(a, b)`` has ``a(x) ~ b(x + flow(x))``; so with
``a`` = current frame and ``b`` = key frame, ``warped(x) = key_prob(x + flow(x))``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Optional, Tuple

import cv2
import numpy as np
import torch

FLOW_SCALE = 4  # the flow runs on frames downscaled by this factor (GSVNet: 1/8 of a 2048x1024 frame)
DIS_PRESET = "fast"
_PRESETS = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
            "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}
REFINEMENTS = ("guided", "learned", "none")


def _dis(preset: str) -> cv2.DISOpticalFlow:
    """A new DIS object per flow (5 us): OpenCV's object is not stateless, a frame too small for its finest scale
    lowers that scale for good, so a kept object would make later flows depend on earlier inputs."""
    return cv2.DISOpticalFlow_create(_PRESETS[preset])


def dis_flops(shape: Tuple[int, int], preset: str = DIS_PRESET) -> int:
    """Estimated FLOPs of one :func:`dis_flow` of two ``shape`` = (h, w) frames.

    OpenCV runs the flow outside torch, so it is counted from the algorithm (Kroeger et al., ECCV 2016) with
    the preset's settings, not measured: per pyramid level from the coarsest (OpenCV's rule: about
    log2(max side / 4 patch sizes)) to the finest, the level's gradients (40 / pixel), per patch of P x P
    pixels on a grid of stride S the inverse-search set-up (6 P^2) and its gradient-descent iterations (13 P^2
    each: bilinear sample, residual, the 2-vector update), the densification (12 per pixel and overlapping
    patch, (P / S)^2 of them) and the variational refinement (50 per pixel and iteration). An order of
    magnitude, good enough to show where a warp frame's cost goes.
    """
    dis = _dis(preset)
    p, stride = dis.getPatchSize(), dis.getPatchStride()
    h, w = shape
    coarsest = min(int(math.log2(max(h, w) / (4.0 * p)) + 0.5), int(math.log2(max(min(h, w), 1) / p)))
    coarsest = max(coarsest, 0)
    finest = dis.getFinestScale()
    if coarsest < finest:  # OpenCV then picks a finer finest level itself
        finest = max(coarsest - 2, 0)
    total = 0.0
    for level in range(finest, coarsest + 1):
        hs, ws = max(1, h >> level), max(1, w >> level)
        pixels = hs * ws
        patches = (max(hs - p, 0) // stride + 1) * (max(ws - p, 0) // stride + 1)
        total += 40 * pixels + patches * (6 + 13 * dis.getGradientDescentIterations()) * p * p
        total += 12 * (p / stride) ** 2 * pixels + 50 * dis.getVariationalRefinementIterations() * pixels
    return int(total)


def warp_object_flops(size: Tuple[int, int], small: Tuple[int, int], mode: str) -> int:
    """FLOPs of :func:`warp_object` outside torch, by its operations: resizing the flow (2 bilinear channels,
    8 per value), warping the map (8 per pixel), the photometric error at the flow's scale (12 per pixel) and,
    for ``guided``, the guided filter (6 box filters of 4 per pixel with running sums, 14 per pixel besides);
    for ``learned``, warping the key frame's 3 channels for the corrector (8 per value; the correction's
    convolutions are counted by torch's counter and its per-pixel kernel by the caller)."""
    pixels = size[0] * size[1]
    total = 2 * 8 * pixels + 8 * pixels + 12 * small[0] * small[1]
    if mode == "guided":
        total += (6 * 4 + 14) * pixels
    elif mode == "learned":
        total += 3 * 8 * pixels
    return total


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


@functools.lru_cache(maxsize=4)
def _pixel_grid(h: int, w: int) -> Tuple[np.ndarray, np.ndarray]:
    """x and y of every pixel of an (h, w) map, float32 (read-only: shared between calls)."""
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    grid_x.flags.writeable = grid_y.flags.writeable = False
    return grid_x, grid_y


def warp_maps(flow: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """The sampling maps ``x + flow(x)`` (x and y, (H, W) float32) of :func:`backward_warp`: made once when several
    arrays are warped by the same flow."""
    grid_x, grid_y = _pixel_grid(*flow.shape[:2])
    return grid_x + flow[..., 0], grid_y + flow[..., 1]


def backward_warp(array: np.ndarray, flow: np.ndarray,
                  maps: Optional[Tuple[np.ndarray, np.ndarray]] = None) -> np.ndarray:
    """``out(x) = array(x + flow(x))`` (bilinear; outside the frame the nearest border value), (H, W[, C]) float32.
    ``maps``: :func:`warp_maps` of ``flow``, if already made."""
    map_x, map_y = maps if maps is not None else warp_maps(flow)
    return cv2.remap(np.ascontiguousarray(array, dtype=np.float32), map_x, map_y, cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


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


def corrector_inputs(current_rgb: np.ndarray, key_rgb: np.ndarray, key_prob: np.ndarray,
                     flow: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The learned corrector's inputs from (H, W, 3) uint8 RGB frames, the key frame's (H, W) probability map and
    the flow (H, W, 2) at that size: current frame (3, H, W), key frame warped to it (3, H, W), both float32 in
    [0, 1], and the warped probability map (1, H, W)."""
    image = current_rgb.astype(np.float32).transpose(2, 0, 1) / 255.0
    warped = backward_warp(key_rgb.astype(np.float32), flow).reshape(*flow.shape[:2], -1).transpose(2, 0, 1) / 255.0
    return image, np.ascontiguousarray(warped), backward_warp(key_prob, flow)[None]


def learned_correction(corrector: torch.nn.Module, current_rgb: np.ndarray, key_rgb: np.ndarray,
                       key_prob: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``key_prob`` warped by ``flow`` (both at the networks' size) and corrected by ``corrector``: (H, W) float32
    probabilities. The module runs under inference mode on its own device; on a CPU, where the map's sides are
    multiples of the corrector's scale, by :func:`fast_learned_correction` (the same function up to float rounding)."""
    device = next(corrector.parameters()).device
    h, w = key_prob.shape
    scale = corrector.scale
    if device.type == "cpu" and scale > 1 and h % scale == 0 and w % scale == 0:
        return fast_learned_correction(corrector, current_rgb, key_rgb, key_prob, flow)
    tensors = [torch.from_numpy(a)[None].to(device) for a in corrector_inputs(current_rgb, key_rgb, key_prob, flow)]
    with torch.inference_mode():
        logits = corrector(*tensors)
    return torch.sigmoid(logits)[0, 0].float().cpu().numpy()


def _area(array: np.ndarray, small: Tuple[int, int]) -> np.ndarray:
    return cv2.resize(array, (small[1], small[0]), interpolation=cv2.INTER_AREA)


def fast_learned_correction(corrector: torch.nn.Module, current_rgb: np.ndarray, key_rgb: np.ndarray,
                            key_prob: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """:func:`learned_correction` on a CPU for a map whose sides are multiples of the corrector's scale s:
    the module's function, rearranged for a 2-core CPU (at 360x640 the correction 12.9 -> 8.4 ms).

    - The CNN's input is pooled from the pooled frames (pooling is linear; OpenCV's area resize of a side that
      is a multiple of s is the s x s block mean that ``adaptive_avg_pool2d`` takes there), so the frames'
      full-size differences are never made.
    - The CNN's output is upsampled plane by plane by OpenCV's bilinear resize (the same half-pixel sampling as
      torch's ``align_corners=False``, 6x faster here) into one (k*k + 1, H, W) buffer; the kernels are the
      module's own (:meth:`~models.warp_corrector.WarpCorrector.apply_kernels`).

    The two warps share one pair of sampling maps. Probabilities within ~1e-6 of the module's (tested).
    """
    h, w = key_prob.shape
    small = corrector.small_size(h, w)
    maps = warp_maps(flow)
    current = _area(np.ascontiguousarray(current_rgb, dtype=np.float32), small)
    warped_key = _area(backward_warp(key_rgb, flow, maps), small)
    warped_prob = backward_warp(key_prob, flow, maps)
    x = np.concatenate([current / 255.0 - 0.5, (current - warped_key) / 255.0,
                        _area(warped_prob, small)[..., None] - 0.5], axis=2).astype(np.float32)
    with torch.inference_mode():
        # (1, 7, h', w') with channels-last strides (the batch stride too: oneDNN takes a stride-7 batch of one
        # for a strided tensor, 2.5x slower)
        features = torch.from_numpy(x)[None].permute(0, 3, 1, 2)
        out = corrector.predict(features)[0].contiguous().numpy()  # (k*k + 1, h', w')
        planes = np.empty((out.shape[0], h, w), np.float32)
        for c in range(out.shape[0]):
            cv2.resize(out[c], (w, h), dst=planes[c], interpolation=cv2.INTER_LINEAR)
        logits = corrector.apply_kernels(torch.from_numpy(planes)[None], torch.from_numpy(warped_prob)[None, None])
        return torch.sigmoid(logits)[0, 0].numpy()


@dataclass
class Correction:
    """How a warped map is corrected: ``mode`` one of :data:`REFINEMENTS`, with what that mode needs
    (``guide``: the current frame (H, W) grey float32 in [0, 1] for ``guided``; ``corrector``, ``current_rgb``
    and ``key_rgb`` (H, W, 3) uint8 for ``learned``)."""

    mode: str = "none"
    guide: Optional[np.ndarray] = None
    corrector: Optional[torch.nn.Module] = None
    current_rgb: Optional[np.ndarray] = None
    key_rgb: Optional[np.ndarray] = None


def guide_image(rgb: np.ndarray) -> np.ndarray:
    """The guided filter's guide: an (H, W, 3) uint8 RGB frame as (H, W) float32 grey in [0, 1]."""
    return small_gray(rgb, 1).astype(np.float32) / 255.0


def guided_correction(prob: np.ndarray, guide: np.ndarray) -> np.ndarray:
    """The ``guided`` correction of a warped (H, W) map: the guided filter with the current frame's grey
    ``guide`` (H, W) in [0, 1] at the map's radius, clipped to [0, 1]."""
    return np.clip(guided_filter(guide, prob, guided_radius(prob.shape), GUIDED_EPS), 0.0, 1.0)


def warp_object(current_small: np.ndarray, key_small: np.ndarray, flow_small: np.ndarray, key_prob: np.ndarray,
                correction: Optional[Correction] = None) -> Warp:
    """Warp ``key_prob`` (H, W) to the current frame with the low-resolution flow (from :func:`dis_flow`).

    ``correction``: how to correct the warped map (None: no correction).
    """
    size = key_prob.shape
    correction = correction or Correction()
    flow = resize_flow(flow_small, size)
    if correction.mode == "learned":
        prob = learned_correction(correction.corrector, correction.current_rgb, correction.key_rgb,
                                  key_prob.astype(np.float32), flow)
    else:
        prob = backward_warp(key_prob, flow)
        if correction.mode == "guided":
            prob = guided_correction(prob, correction.guide)
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
