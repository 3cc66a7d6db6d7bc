"""Deterministic synthetic videos, written in the real DAVIS 2017 and YouTube-VOS 2018 on-disk layouts.

The generated trees are read by the project's ordinary dataset readers, so training, inference and
scoring can run end to end without any downloaded data. Every video is a pure function of
``(seed, format, split, index)``: the same arguments give byte-identical files.

Content is built to give a reuse gate something to learn:

* textured backgrounds (colour gradients, stripes / checkers / rings / blobs, fixed fine noise) and
  textured objects of several shape kinds (``ellipse``, ``polygon``, ``star``, ``roundrect``);
* motion in segments of three regimes. ``regimes[t]`` describes the step from frame ``t - 1`` to
  frame ``t`` (``regimes[0]`` is the regime of the first segment; frame 0 has no predecessor):

  - ``still``: nothing moves, frame ``t`` is pixel-identical to frame ``t - 1`` and so is its mask;
  - ``slow``: objects move about 1 px per frame (0.7-1.3), tiny scale and rotation changes;
  - ``fast``: objects jump 8-15 px per frame, with larger scale / rotation / heading changes;

  on some moving segments the camera pans slightly (the whole background shifts);
* occlusions: objects have a fixed z-order, and in every multi-object video a larger convex object is
  steered over a smaller one for a while, so the smaller one is partly (often briefly fully) hidden;
* for YouTube-VOS, objects that first appear in the middle of a video (on an annotated 5-stride frame).

Every object is visible on its first frame, and the objects never cover the whole image.
``<out>/synthetic_meta.json`` records the generation: seed, size and, per sequence, the per-frame
regimes, camera offsets, mask IoU with the previous frame and, per object, its shape kind, first
frame, z-order and per-frame visible / unoccluded pixel counts.

Command line::

    python -m dataset.synthetic --format davis2017 --out data/synthetic-davis
    python -m dataset.synthetic --format youtubevos --out data/synthetic-ytvos --seed 3 --size 96 160
"""

from __future__ import annotations

import argparse
import hashlib
import io
import math
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
from PIL import Image

from base.errors import ConfigError, ReuseVOSError
from base.io import atomic_write_bytes, atomic_write_json, atomic_write_text, encode_index_png

__all__ = [
    "FORMATS",
    "REGIMES",
    "SHAPE_KINDS",
    "SyntheticObject",
    "SyntheticVideo",
    "generate",
    "generate_davis2017",
    "generate_youtubevos",
    "main",
    "render_video",
]

PathLike = Union[str, Path]
SeedLike = Union[int, Sequence[int], np.random.Generator]

FORMATS = ("davis2017", "youtubevos")
REGIMES = ("still", "slow", "fast")
SHAPE_KINDS = ("ellipse", "polygon", "star", "roundrect")
JPEG_QUALITY = 95
YTVOS_STRIDE = 5
GENERATOR_VERSION = 1

# px per frame of each regime (object motion, camera pan)
SLOW_SPEED = (0.7, 1.3)
FAST_SPEED = (8.0, 15.0)
SLOW_PAN = (0.3, 0.8)
FAST_PAN = (1.0, 2.5)

# the top-level entries each format writes (removed on --overwrite of an earlier synthetic tree)
_FORMAT_ENTRIES = {
    "davis2017": ("JPEGImages", "Annotations", "ImageSets", "synthetic_meta.json"),
    "youtubevos": ("train", "valid", "train_all_frames", "valid_all_frames", "jjval.txt", "jjtrain.txt",
                   "synthetic_meta.json"),
}
_FORMAT_CODE = {"davis2017": 2017, "youtubevos": 2018}
_SPLIT_CODE = {"train": 1, "val": 2, "valid": 2}


# ------------------------------------------------------------------------------------------------
# In-memory videos
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticObject:
    """One object of a :class:`SyntheticVideo`.

    Attributes:
        obj_id: the id its pixels carry in the masks (1..N).
        kind: shape kind, one of :data:`SHAPE_KINDS` (also used as its YouTube-VOS category).
        first_frame: index of the first frame it exists on (it is visible there).
        z: depth order, higher is in front.
        pixels: per frame, its visible pixel count in the mask (0 before it exists or when hidden).
        unoccluded_pixels: per frame, the pixel count its shape would have inside the image if no
            other object were in front of it.
    """

    obj_id: int
    kind: str
    first_frame: int
    z: int
    pixels: Tuple[int, ...]
    unoccluded_pixels: Tuple[int, ...]


@dataclass(frozen=True)
class SyntheticVideo:
    """A rendered video: RGB frames, object-id masks and the generation record.

    Attributes:
        name: video name.
        images: (T, H, W, 3) uint8 RGB frames.
        masks: (T, H, W) uint8 object-id maps (0 background).
        regimes: per frame, the motion regime of the step from the previous frame (see module doc).
        objects: the objects, by ascending id.
        camera: (T, 2) float, the camera offset (x, y) in background pixels per frame.
    """

    name: str
    images: np.ndarray
    masks: np.ndarray
    regimes: Tuple[str, ...]
    objects: Tuple[SyntheticObject, ...]
    camera: np.ndarray

    @property
    def num_frames(self) -> int:
        return int(self.images.shape[0])

    @property
    def size(self) -> Tuple[int, int]:
        """(H, W)."""
        return int(self.images.shape[1]), int(self.images.shape[2])

    @property
    def object_ids(self) -> Tuple[int, ...]:
        return tuple(o.obj_id for o in self.objects)

    def object(self, obj_id: int) -> SyntheticObject:
        for o in self.objects:
            if o.obj_id == obj_id:
                return o
        raise KeyError(obj_id)

    def object_iou_prev(self, obj_id: int) -> List[Optional[float]]:
        """Per frame, IoU of the object's mask with its mask on the previous frame.

        ``None`` on frame 0 and where the object is absent on both frames.
        """
        out: List[Optional[float]] = [None]
        for t in range(1, self.num_frames):
            a = self.masks[t - 1] == obj_id
            b = self.masks[t] == obj_id
            union = int(np.count_nonzero(a | b))
            out.append(None if union == 0 else int(np.count_nonzero(a & b)) / union)
        return out

    def mask_iou_prev(self) -> List[Optional[float]]:
        """Per frame, the mean over objects of :meth:`object_iou_prev`.

        Only objects that already existed on the previous frame count (an object appearing on frame
        ``t`` is not a motion); ``None`` on frame 0 or when no object counts.
        """
        per_obj = {o.obj_id: self.object_iou_prev(o.obj_id) for o in self.objects}
        out: List[Optional[float]] = [None]
        for t in range(1, self.num_frames):
            vals = [per_obj[o.obj_id][t] for o in self.objects if o.first_frame < t]
            vals = [v for v in vals if v is not None]
            out.append(float(np.mean(vals)) if vals else None)
        return out

    def describe(self) -> dict:
        """The JSON-able generation record of this video (one entry of ``synthetic_meta.json``)."""
        iou = self.mask_iou_prev()
        objects = {}
        for o in self.objects:
            objects[str(o.obj_id)] = {
                "id": o.obj_id,
                "kind": o.kind,
                "category": o.kind,
                "first_frame": o.first_frame,
                "first_frame_name": _frame_name(o.first_frame),
                "z": o.z,
                "pixels": list(o.pixels),
                "unoccluded_pixels": list(o.unoccluded_pixels),
                "iou_prev": [_round(v) for v in self.object_iou_prev(o.obj_id)],
            }
        return {
            "num_frames": self.num_frames,
            "size": list(self.size),
            "frames": [_frame_name(t) for t in range(self.num_frames)],
            "regimes": list(self.regimes),
            "camera": [[round(float(x), 3), round(float(y), 3)] for x, y in self.camera],
            "mask_iou_prev": [_round(v) for v in iou],
            "objects": objects,
        }


def _round(v: Optional[float]) -> Optional[float]:
    return None if v is None else round(float(v), 6)


def _frame_name(t: int) -> str:
    return f"{t:05d}"


# ------------------------------------------------------------------------------------------------
# Textures and shapes
# ------------------------------------------------------------------------------------------------


def _grid(h: int, w: int) -> Tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w]
    return yy.astype(np.float32), xx.astype(np.float32)


def _pattern(rng: np.random.Generator, h: int, w: int, kind: str, period: float) -> np.ndarray:
    """A (h, w) float32 pattern in [-1, 1]."""
    yy, xx = _grid(h, w)
    a = rng.uniform(0.0, math.pi)
    u = xx * math.cos(a) + yy * math.sin(a)
    v = -xx * math.sin(a) + yy * math.cos(a)
    if kind == "stripes":
        out = np.sin(2 * math.pi * u / period)
    elif kind == "checker":
        out = np.tanh(4.0 * np.sin(math.pi * u / period) * np.sin(math.pi * v / period))
    elif kind == "rings":
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        out = np.sin(2 * math.pi * np.hypot(yy - cy, xx - cx) / period)
    elif kind == "dots":
        s = np.sin(math.pi * u / period) * np.sin(math.pi * v / period)
        out = np.where(np.abs(s) > 0.55, 1.0, -0.4)
    elif kind == "blobs":
        cells = max(2.0, period)
        low = rng.normal(size=(int(h / cells) + 3, int(w / cells) + 3)).astype(np.float32)
        out = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
        out = out / max(1e-6, float(np.abs(out).max()))
    else:  # pragma: no cover - programming error
        raise ValueError(kind)
    return out.astype(np.float32)


def _colour(rng: np.random.Generator, lo: float = 30.0, hi: float = 225.0) -> np.ndarray:
    return rng.uniform(lo, hi, size=3).astype(np.float32)


def _unit_colour(rng: np.random.Generator) -> np.ndarray:
    c = rng.normal(size=3).astype(np.float32) + 0.6
    return c / max(1e-6, float(np.linalg.norm(c)))


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(h, w, 3) float32 textured background canvas."""
    yy, xx = _grid(h, w)
    fy, fx = (yy / max(1, h - 1))[..., None], (xx / max(1, w - 1))[..., None]
    c00, c01, c10, c11 = (_colour(rng, 40, 215) for _ in range(4))
    img = (c00 * (1 - fy) * (1 - fx) + c01 * (1 - fy) * fx + c10 * fy * (1 - fx) + c11 * fy * fx)
    kind = ("stripes", "checker", "rings", "blobs")[int(rng.integers(4))]
    period = rng.uniform(0.06, 0.16) * min(h, w) + 4
    img = img + rng.uniform(18, 40) * _pattern(rng, h, w, kind, period)[..., None] * _unit_colour(rng)
    img = img + rng.uniform(10, 22) * _pattern(rng, h, w, "blobs", min(h, w) / 4)[..., None] * \
        _unit_colour(rng)
    img = img + rng.normal(0.0, 4.0, size=img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.float32)


def _shape_mask(rng: np.random.Generator, kind: str, radius: float, side: int, fat: bool) -> np.ndarray:
    """(side, side) uint8 0/1 mask of a shape centred in the square, of extent at most ``radius``."""
    mask = np.zeros((side, side), np.uint8)
    c = (side - 1) / 2.0
    sh = 4  # sub-pixel bits for the cv2 drawing calls
    one = 1 << sh

    def fix(v: float) -> int:
        return int(round(v * one))

    if kind == "ellipse":
        minor = radius * (rng.uniform(0.8, 0.95) if fat else rng.uniform(0.5, 0.9))
        cv2.ellipse(mask, (fix(c), fix(c)), (fix(radius), fix(minor)), 0.0, 0.0, 360.0, 1, -1,
                    cv2.LINE_8, sh)
    elif kind in ("polygon", "star"):
        if kind == "polygon":
            n = int(rng.integers(6, 9) if fat else rng.integers(5, 9))
            jitter = 0.15 if fat else 0.3
            ang = 2 * math.pi * np.arange(n) / n + rng.uniform(-jitter, jitter, n) * 2 * math.pi / n
            rad = radius * rng.uniform(0.88 if fat else 0.7, 1.0, n)
        else:
            n = int(rng.integers(5, 8))
            ang = math.pi * np.arange(2 * n) / n
            inner = rng.uniform(0.4, 0.6)
            rad = radius * np.where(np.arange(2 * n) % 2 == 0, 1.0, inner)
        ang = ang + rng.uniform(0, 2 * math.pi)
        pts = np.stack([c + rad * np.cos(ang), c + rad * np.sin(ang)], axis=1)
        cv2.fillPoly(mask, [np.round(pts * one).astype(np.int32)], 1, cv2.LINE_8, sh)
    elif kind == "roundrect":
        hw = radius * 0.92
        hh = radius * (rng.uniform(0.75, 0.9) if fat else rng.uniform(0.5, 0.85))
        cr = 0.35 * hh
        cv2.rectangle(mask, (fix(c - hw + cr), fix(c - hh)), (fix(c + hw - cr), fix(c + hh)), 1, -1,
                      cv2.LINE_8, sh)
        cv2.rectangle(mask, (fix(c - hw), fix(c - hh + cr)), (fix(c + hw), fix(c + hh - cr)), 1, -1,
                      cv2.LINE_8, sh)
        for sx in (-1, 1):
            for sy in (-1, 1):
                cv2.circle(mask, (fix(c + sx * (hw - cr)), fix(c + sy * (hh - cr))), fix(cr), 1, -1,
                           cv2.LINE_8, sh)
    else:  # pragma: no cover - programming error
        raise ValueError(kind)
    return mask


class _Sprite:
    """An object's texture and alpha in its own (unscaled, unrotated) frame."""

    def __init__(self, rng: np.random.Generator, kind: str, radius: float, avoid: np.ndarray, fat: bool):
        half = int(math.ceil(radius)) + 3
        side = 2 * half + 1
        self.centre = float(half)
        self.alpha = _shape_mask(rng, kind, radius, side, fat).astype(np.float32)
        # a base colour that stands out from the background
        base = _colour(rng)
        for _ in range(24):
            if float(np.linalg.norm(base - avoid)) >= 90.0:
                break
            base = _colour(rng)
        yy, xx = _grid(side, side)
        r2 = ((yy - half) ** 2 + (xx - half) ** 2) / max(1.0, radius) ** 2
        kind_tex = ("stripes", "checker", "dots", "blobs")[int(rng.integers(4))]
        tex = base + rng.uniform(20, 40) * _pattern(rng, side, side, kind_tex, rng.uniform(3.0, 7.0))[
            ..., None] * _unit_colour(rng)
        tex = tex - 28.0 * r2[..., None]  # darker rim: reads as a solid body
        tex = tex + rng.normal(0.0, 3.0, size=tex.shape).astype(np.float32)
        self.texture = np.clip(tex, 0, 255).astype(np.float32)

    def warp(self, x: float, y: float, scale: float, angle: float, size: Tuple[int, int]):
        """(texture, alpha) of the sprite placed with its centre at image point (x, y)."""
        h, w = size
        ca, sa = scale * math.cos(angle), scale * math.sin(angle)
        c = self.centre
        m = np.array([[ca, -sa, x - (ca * c - sa * c)], [sa, ca, y - (sa * c + ca * c)]], np.float64)
        tex = cv2.warpAffine(self.texture, m, (w, h), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        alpha = cv2.warpAffine(self.alpha, m, (w, h), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return tex, alpha


# ------------------------------------------------------------------------------------------------
# Motion
# ------------------------------------------------------------------------------------------------


def _regime_schedule(rng: np.random.Generator, num_frames: int, moving: Sequence[int]) -> List[str]:
    """Per-frame regimes in segments of 3-7 frames; the first three segments cover every regime.

    Frames listed in ``moving`` (where an object appears) are never ``still``.
    """
    first = [REGIMES[int(i)] for i in rng.permutation(len(REGIMES))]
    out: List[str] = []
    prev = None
    while len(out) < num_frames:
        if first:
            regime = first.pop(0)
        else:
            choices = [r for r in REGIMES if r != prev]
            weights = np.array([{"still": 0.3, "slow": 0.35, "fast": 0.35}[r] for r in choices])
            regime = choices[int(rng.choice(len(choices), p=weights / weights.sum()))]
        out.extend([regime] * int(rng.integers(3, 8)))
        prev = regime
    out = out[:num_frames]
    for t in moving:
        if 0 < t < num_frames and out[t] == "still":
            out[t] = "slow"
    return out


def _runs(regimes: Sequence[str]) -> List[Tuple[int, int, str]]:
    """Maximal runs (start, end-exclusive, regime) of equal regimes."""
    runs = []
    start = 0
    for t in range(1, len(regimes) + 1):
        if t == len(regimes) or regimes[t] != regimes[start]:
            runs.append((start, t, regimes[start]))
            start = t
    return runs


@dataclass
class _Obj:
    obj_id: int
    kind: str
    radius: float
    first_frame: int
    z: int
    sprite: _Sprite
    x: float = 0.0  # world (background canvas) coordinates, camera offset excluded
    y: float = 0.0
    heading: float = 0.0
    scale: float = 1.0
    angle: float = 0.0


class _Scene:
    """The simulation state of one video; :meth:`run` renders it frame by frame."""

    def __init__(self, rng: np.random.Generator, size: Tuple[int, int], num_frames: int,
                 first_frames: Sequence[int]):
        self.rng = rng
        self.h, self.w = size
        self.t_count = num_frames
        self.first_frames = list(first_frames)
        n = len(first_frames)
        h, w = size
        short = min(h, w)
        self.pad = max(6, int(round(0.15 * short)))
        self.canvas = _background(rng, h + 2 * self.pad, w + 2 * self.pad)
        bg_mean = self.canvas.reshape(-1, 3).mean(axis=0)
        self.regimes = _regime_schedule(rng, num_frames, [f for f in first_frames if f > 0])
        self.pans = self._plan_pans()
        # centre bounds (image coordinates): objects may leave the frame partly, never wholly
        self.lo = (0.1 * w, 0.14 * h)
        self.hi = (0.9 * w, 0.86 * h)

        z_order = [int(v) for v in rng.permutation(n)]
        radii = [float(rng.uniform(0.1, 0.17) * short) for _ in range(n)]
        kinds = [SHAPE_KINDS[int(rng.integers(len(SHAPE_KINDS)))] for _ in range(n)]
        # occlusion pair: a larger convex "chaser" in front is steered over a "target"
        self.chaser = self.target = None
        self.window = (num_frames, num_frames)
        if n >= 2:
            starting = sorted(range(n), key=lambda i: (first_frames[i], i))
            ti, ci = (starting[0], starting[1]) if rng.random() < 0.5 else (starting[1], starting[0])
            radii[ci] = min(0.3 * short, radii[ti] * rng.uniform(1.6, 1.9))
            kinds[ci] = ("ellipse", "roundrect", "polygon")[int(rng.integers(3))]
            if z_order[ci] < z_order[ti]:
                z_order[ci], z_order[ti] = z_order[ti], z_order[ci]
            self.chaser, self.target = ci, ti
            begin = max(first_frames[ci], first_frames[ti]) + 1
            w0 = max(begin, int(rng.integers(int(0.2 * num_frames), int(0.45 * num_frames) + 1)))
            length = int(rng.integers(max(2, int(0.25 * num_frames)), max(3, int(0.4 * num_frames)) + 1))
            self.window = (w0, min(num_frames, w0 + length))
        self.objs = [
            _Obj(obj_id=i + 1, kind=kinds[i], radius=radii[i], first_frame=first_frames[i], z=z_order[i],
                 sprite=_Sprite(rng, kinds[i], radii[i], bg_mean, fat=(i == self.chaser)))
            for i in range(n)
        ]

    # --- planning ------------------------------------------------------------------------------

    def _plan_pans(self) -> np.ndarray:
        pans = np.zeros((self.t_count, 2), np.float64)
        for start, end, regime in _runs(self.regimes):
            if regime == "still" or self.rng.random() >= 0.45:
                continue
            lo, hi = SLOW_PAN if regime == "slow" else FAST_PAN
            speed, ang = self.rng.uniform(lo, hi), self.rng.uniform(0, 2 * math.pi)
            pans[start:end] = (speed * math.cos(ang), speed * math.sin(ang))
        pans[0] = 0.0
        return pans

    # --- placement ------------------------------------------------------------------------------

    def _bounds(self, r: float) -> Tuple[Tuple[float, float], Tuple[float, float]]:
        """Centre ranges (x, y) in image coordinates keeping a radius-r object inside if possible."""
        out = []
        for k, size in enumerate((self.w, self.h)):
            lo, hi = max(self.lo[k], r), min(self.hi[k], size - r)
            if lo > hi:
                lo, hi = self.lo[k], self.hi[k]
            out.append((lo, hi))
        return out[0], out[1]

    def _place(self, obj: _Obj, active: List[_Obj], cam: np.ndarray) -> None:
        rng = self.rng
        (x0, x1), (y0, y1) = self._bounds(obj.radius)
        best, best_gap = None, -math.inf
        target = self.objs[self.target] if self.target is not None else None
        near = (obj is self.objs[self.chaser]) if self.chaser is not None else False
        for _ in range(60):
            if near and target in active:
                d = (obj.radius + target.radius) * rng.uniform(1.1, 1.7)
                a = rng.uniform(0, 2 * math.pi)
                x = float(np.clip(target.x - cam[0] + d * math.cos(a), x0, x1))
                y = float(np.clip(target.y - cam[1] + d * math.sin(a), y0, y1))
            else:
                x, y = rng.uniform(x0, x1), rng.uniform(y0, y1)
            gap = min((math.hypot(x - (o.x - cam[0]), y - (o.y - cam[1])) - (o.radius + obj.radius)
                       for o in active), default=math.inf)
            if gap > best_gap:
                best, best_gap = (x, y), gap
            if gap >= 3.0:
                break
        obj.x, obj.y = best[0] + cam[0], best[1] + cam[1]
        obj.heading = rng.uniform(0, 2 * math.pi)
        obj.scale = rng.uniform(0.95, 1.05)
        obj.angle = rng.uniform(0, 2 * math.pi)

    # --- dynamics -------------------------------------------------------------------------------

    def _bounce(self, obj: _Obj, cam: np.ndarray) -> None:
        for k in (0, 1):
            pos = (obj.x if k == 0 else obj.y) - cam[k]
            lo, hi = self.lo[k], self.hi[k]
            flipped = False
            if pos < lo:
                pos, flipped = 2 * lo - pos, True
            elif pos > hi:
                pos, flipped = 2 * hi - pos, True
            pos = min(max(pos, lo), hi)
            if flipped:
                obj.heading = (math.pi - obj.heading) if k == 0 else -obj.heading
            if k == 0:
                obj.x = pos + cam[0]
            else:
                obj.y = pos + cam[1]

    def _step(self, obj: _Obj, t: int, regime: str, cam: np.ndarray) -> None:
        rng = self.rng
        fast = regime == "fast"
        speed = rng.uniform(*(FAST_SPEED if fast else SLOW_SPEED))
        obj.heading += rng.normal(0.0, 0.4 if fast else 0.12)
        obj.scale = float(np.clip(obj.scale * math.exp(rng.normal(0.0, 0.03 if fast else 0.005)), 0.85, 1.18))
        obj.angle += rng.normal(0.0, 0.08 if fast else 0.015)
        is_chaser = self.chaser is not None and obj is self.objs[self.chaser]
        if is_chaser:
            tgt = self.objs[self.target]
            dx, dy = tgt.x - obj.x, tgt.y - obj.y
            dist = math.hypot(dx, dy)
            w0, w1 = self.window
            if w0 <= t < w1:  # steer straight over the target, landing on it
                if dist > 1e-9:
                    obj.heading = math.atan2(dy, dx)
                    step = min(speed, dist)
                    obj.x += step * dx / dist
                    obj.y += step * dy / dist
                return
            if t < w0:  # stay in the target's neighbourhood
                want = math.atan2(dy, dx)
                diff = math.atan2(math.sin(want - obj.heading), math.cos(want - obj.heading))
                obj.heading += 0.3 * diff
            elif t == w1:  # leave it
                obj.heading = math.atan2(-dy, -dx) + rng.normal(0.0, 0.5)
        obj.x += speed * math.cos(obj.heading)
        obj.y += speed * math.sin(obj.heading)
        self._bounce(obj, cam)

    # --- rendering ------------------------------------------------------------------------------

    def _render(self, active: List[_Obj], cam: np.ndarray):
        h, w = self.h, self.w
        m = np.array([[1.0, 0.0, self.pad + cam[0]], [0.0, 1.0, self.pad + cam[1]]], np.float64)
        img = cv2.warpAffine(self.canvas, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_REFLECT)
        labels = np.zeros((h, w), np.uint8)
        full: Dict[int, int] = {}
        for obj in sorted(active, key=lambda o: o.z):
            tex, alpha = obj.sprite.warp(obj.x - cam[0], obj.y - cam[1], obj.scale, obj.angle, (h, w))
            a = alpha[..., None]
            img = img * (1.0 - a) + tex * a
            fg = alpha >= 0.5
            labels[fg] = obj.obj_id
            full[obj.obj_id] = int(np.count_nonzero(fg))
        img = np.clip(img + 0.5, 0, 255).astype(np.uint8)
        return img, labels, full

    def run(self):
        t_count, n = self.t_count, len(self.objs)
        images = np.zeros((t_count, self.h, self.w, 3), np.uint8)
        masks = np.zeros((t_count, self.h, self.w), np.uint8)
        unoccluded = np.zeros((t_count, n), np.int64)
        cams = np.zeros((t_count, 2), np.float64)
        cam = np.zeros(2, np.float64)
        pan = self.pans.copy()
        limit = self.pad - 1.0
        active: List[_Obj] = []
        # the target moves before the chaser, which steers towards the target's new position
        order = [o for i, o in enumerate(self.objs) if i != self.chaser]
        if self.chaser is not None:
            order.append(self.objs[self.chaser])
        # the target is placed before the others, so that the chaser can be placed near it
        spawn = list(self.objs) if self.target is None else \
            [self.objs[self.target]] + [o for i, o in enumerate(self.objs) if i != self.target]
        for t in range(t_count):
            regime = self.regimes[t]
            if t > 0 and regime != "still":
                cam = cam + pan[t]
                for k in (0, 1):
                    if abs(cam[k]) > limit:  # reflect the pan at the canvas border
                        cam[k] = math.copysign(2 * limit - abs(cam[k]), cam[k])
                        pan[t:, k] = -pan[t:, k]
                for obj in order:
                    if obj in active:
                        self._step(obj, t, regime, cam)
            for obj in spawn:
                if obj.first_frame == t:
                    self._place(obj, active, cam)
                    active.append(obj)
            images[t], masks[t], full = self._render(active, cam)
            for obj in active:
                unoccluded[t, obj.obj_id - 1] = full[obj.obj_id]
            cams[t] = cam
        return images, masks, unoccluded, cams


def _as_rng(seed: SeedLike) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def render_video(seed: SeedLike, *, size: Tuple[int, int] = (120, 216), num_frames: int = 32,
                 num_objects: int = 2, first_frames: Optional[Sequence[int]] = None,
                 name: str = "synthetic", max_attempts: int = 25) -> SyntheticVideo:
    """Render one synthetic video in memory.

    Args:
        seed: an int, a sequence of ints (hashed by :class:`numpy.random.SeedSequence`) or a
            :class:`numpy.random.Generator`; the video is a pure function of it and the other args.
        size: (H, W) of the frames.
        num_frames: number of frames T.
        num_objects: number of objects N (ids 1..N).
        first_frames: per object, the frame it first appears on (default: all on frame 0).
        name: the video's name.
        max_attempts: a scene whose objects are not all visible on their first frame is drawn again.

    Returns:
        a :class:`SyntheticVideo`.
    """
    h, w = int(size[0]), int(size[1])
    if h < 16 or w < 16:
        raise ConfigError(f"frame size must be at least 16x16, got {h}x{w}")
    if num_frames < 1:
        raise ConfigError(f"a video needs at least one frame, got {num_frames}")
    if not 1 <= num_objects <= 255:
        raise ConfigError(f"number of objects must be in 1..255, got {num_objects}")
    firsts = [0] * num_objects if first_frames is None else [int(f) for f in first_frames]
    if len(firsts) != num_objects or any(not 0 <= f < num_frames for f in firsts) or 0 not in firsts:
        raise ConfigError(f"first_frames must give one frame in 0..{num_frames - 1} per object, "
                          f"with at least one object on frame 0, got {firsts}")
    rng = _as_rng(seed)
    for _ in range(max_attempts):
        scene = _Scene(rng, (h, w), num_frames, firsts)
        images, masks, unoccluded, cams = scene.run()
        counts = np.stack([np.count_nonzero(masks == i + 1, axis=(1, 2)) for i in range(num_objects)], 1)
        ok = all(counts[f, i] >= max(12, 0.25 * unoccluded[f, i]) for i, f in enumerate(firsts))
        ok = ok and not bool(np.any(np.all(masks > 0, axis=(1, 2))))
        if ok:
            break
    else:  # pragma: no cover - never seen with sane sizes
        raise RuntimeError(f"could not place {num_objects} visible objects in a {h}x{w} frame")
    objects = tuple(
        SyntheticObject(obj_id=o.obj_id, kind=o.kind, first_frame=o.first_frame, z=o.z,
                        pixels=tuple(int(v) for v in counts[:, o.obj_id - 1]),
                        unoccluded_pixels=tuple(int(v) for v in unoccluded[:, o.obj_id - 1]))
        for o in scene.objs)
    return SyntheticVideo(name=name, images=images, masks=masks, regimes=tuple(scene.regimes),
                          objects=objects, camera=cams)


# ------------------------------------------------------------------------------------------------
# Writing datasets
# ------------------------------------------------------------------------------------------------


def _encode_jpeg(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img, dtype=np.uint8)).save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def _check_range(name: str, value: Sequence[int], lo: int) -> Tuple[int, int]:
    try:
        a, b = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be two integers (min, max), got {value!r}") from None
    if a < lo or b < a:
        raise ConfigError(f"{name} must satisfy {lo} <= min <= max, got ({a}, {b})")
    return a, b


def _check_size(size: Sequence[int]) -> Tuple[int, int]:
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ConfigError(f"size must be two integers (H, W), got {size!r}") from None
    if not (32 <= h <= 4096 and 32 <= w <= 4096):
        raise ConfigError(f"size must be between 32x32 and 4096x4096 (H W), got {h} {w}")
    return h, w


def _check_counts(counts: Sequence[int]) -> None:
    if any(int(c) < 0 for c in counts) or sum(int(c) for c in counts) < 1:
        raise ConfigError(f"numbers of videos must be >= 0 and not all 0, got {list(counts)}")


def _prepare_out(out_dir: PathLike, fmt: str, overwrite: bool) -> Path:
    """Make the output folder; refuse a non-empty one unless ``overwrite``.

    With ``overwrite``, the entries this format writes are removed first only when the folder holds
    an earlier synthetic tree (``synthetic_meta.json``); other files are never deleted.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError("output path exists and is not a folder", out)
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError("output folder is not empty (pass --overwrite / overwrite=True to write "
                              "into it)", out)
        if (out / "synthetic_meta.json").is_file():
            for entry in _FORMAT_ENTRIES[fmt]:
                p = out / entry
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                elif p.exists() or p.is_symlink():
                    p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out


def _video_seeds(seed: int, fmt: str, split: str, index: int) -> Tuple[np.random.Generator, List[int]]:
    """(planning rng, content seed) of one video: independent of every other video."""
    base = [int(seed) & 0xFFFFFFFF, _FORMAT_CODE[fmt], _SPLIT_CODE[split], int(index)]
    return np.random.default_rng(base + [0]), base + [1]


def _lines(names: Sequence[str]) -> str:
    return "".join(f"{n}\n" for n in names)


def _meta_header(fmt: str, seed: int, size: Tuple[int, int]) -> dict:
    return {
        "generator": "reuse-vos dataset.synthetic",
        "version": GENERATOR_VERSION,
        "format": fmt,
        "seed": int(seed),
        "size": [int(size[0]), int(size[1])],
        "regimes": {"still": 0.0, "slow": list(SLOW_SPEED), "fast": list(FAST_SPEED),
                    "note": "regimes[t] is the motion from frame t-1 to t (px/frame of objects)"},
        "splits": {},
        "sequences": {},
    }


def generate_davis2017(out_dir: PathLike, *, seed: int = 0, size: Sequence[int] = (120, 216),
                       num_train: int = 4, num_val: int = 3, frames: Sequence[int] = (24, 40),
                       objects: Sequence[int] = (2, 3), single_object_videos: int = 1,
                       overwrite: bool = False, log: Optional[Callable[[str], None]] = None) -> Path:
    """Write a synthetic DAVIS 2017 tree (also usable as DAVIS 2016: same split files).

    Layout: ``JPEGImages/480p/<seq>/00000.jpg ...``, ``Annotations/480p/<seq>/00000.png ...`` (every
    frame, palette PNGs, ids 1..N), ``ImageSets/2017/{train,val}.txt``,
    ``ImageSets/2016/{train,val}.txt`` and ``synthetic_meta.json``. All objects start on frame 0.

    Args:
        out_dir: output folder (created; must be empty unless ``overwrite``).
        seed: generation seed.
        size: (H, W) of the frames.
        num_train, num_val: sequences per split.
        frames: (min, max) frames per sequence.
        objects: (min, max) objects per sequence.
        single_object_videos: the first that many sequences of each split hold one object.
        overwrite: write into a non-empty folder.
        log: called with one line per thing written.

    Returns:
        the output folder.
    """
    size = _check_size(size)
    frames = _check_range("frames", frames, 1)
    objects = _check_range("objects", objects, 1)
    _check_counts([num_train, num_val])
    out = _prepare_out(out_dir, "davis2017", overwrite)
    meta = _meta_header("davis2017", seed, size)
    for split, count in (("train", num_train), ("val", num_val)):
        names = []
        n_frames = 0
        for i in range(count):
            plan, content = _video_seeds(seed, "davis2017", split, i)
            t_count = int(plan.integers(frames[0], frames[1] + 1))
            n_obj = 1 if i < single_object_videos else int(plan.integers(objects[0], objects[1] + 1))
            name = f"synth-{split}-{i:02d}"
            video = render_video(content, size=size, num_frames=t_count, num_objects=n_obj, name=name)
            for t in range(t_count):
                atomic_write_bytes(out / "JPEGImages" / "480p" / name / f"{_frame_name(t)}.jpg",
                                   _encode_jpeg(video.images[t]))
                atomic_write_bytes(out / "Annotations" / "480p" / name / f"{_frame_name(t)}.png",
                                   encode_index_png(video.masks[t]))
            entry = video.describe()
            entry["split"] = split
            meta["sequences"][name] = entry
            names.append(name)
            n_frames += t_count
        for year in (2016, 2017):
            atomic_write_text(out / "ImageSets" / str(year) / f"{split}.txt", _lines(names))
        meta["splits"][split] = names
        if log:
            log(f"{split}: {len(names)} sequence(s), {n_frames} frames + annotations in JPEGImages/480p, "
                f"Annotations/480p; ImageSets/2016,2017/{split}.txt")
    atomic_write_json(out / "synthetic_meta.json", meta)
    if log:
        log("synthetic_meta.json: seed, size, per-frame regimes, mask IoU, object visibility")
    return out


def _video_id(seed: int, split: str, index: int, taken: set) -> str:
    k = 0
    while True:
        vid = hashlib.sha256(f"reuse-vos-synthetic:{seed}:{split}:{index}:{k}".encode()).hexdigest()[:10]
        if vid not in taken:
            taken.add(vid)
            return vid
        k += 1  # pragma: no cover


def generate_youtubevos(out_dir: PathLike, *, seed: int = 0, size: Sequence[int] = (120, 216),
                        num_train: int = 6, num_valid: int = 3, frames: Sequence[int] = (30, 50),
                        objects: Sequence[int] = (2, 3), single_object_videos: int = 1,
                        overwrite: bool = False, log: Optional[Callable[[str], None]] = None) -> Path:
    """Write a synthetic YouTube-VOS 2018 tree.

    Layout, for ``split`` in ``train`` / ``valid``: ``<split>/JPEGImages/<vid>/<frame>.jpg`` (every 5th
    frame, named by the 5-digit original frame number), ``<split>_all_frames/JPEGImages/<vid>/`` (every
    frame), ``<split>/Annotations/<vid>/<frame>.png`` and ``<split>/meta.json``. ``train`` has an
    annotation on every 5-stride frame and its meta lists, per object, the 5-stride frames where it is
    present; ``valid`` has annotations only on frames where an object first appears (holding only those
    objects) and its meta lists the 5-stride frames from the object's first appearance to the end. Also
    ``jjval.txt`` / ``jjtrain.txt`` (a disjoint split of the train videos) and ``synthetic_meta.json``.

    Videos with an odd index (in each split) hold one object that first appears mid-video; the first
    ``single_object_videos`` videos of each split hold one object.

    Args: as :func:`generate_davis2017` (``frames`` counts all frames; ``num_valid`` the valid videos).

    Returns:
        the output folder.
    """
    size = _check_size(size)
    frames = _check_range("frames", frames, 1)
    objects = _check_range("objects", objects, 1)
    _check_counts([num_train, num_valid])
    out = _prepare_out(out_dir, "youtubevos", overwrite)
    meta = _meta_header("youtubevos", seed, size)
    taken: set = set()
    train_names: List[str] = []
    for split, count in (("train", num_train), ("valid", num_valid)):
        ytmeta: Dict[str, dict] = {}
        order: List[Tuple[int, str]] = []
        n_all = n_strided = n_ann = 0
        for i in range(count):
            plan, content = _video_seeds(seed, "youtubevos", split, i)
            t_count = int(plan.integers(frames[0], frames[1] + 1))
            n_obj = 1 if i < single_object_videos else int(plan.integers(objects[0], objects[1] + 1))
            strided = list(range(0, t_count, YTVOS_STRIDE))
            firsts = [0] * n_obj
            if i % 2 == 1 and n_obj >= 2 and len(strided) >= 2:
                # an object appearing mid-video on an annotated frame, in the first half of the video
                last = max(1, (len(strided) - 1) // 2 + 1)
                firsts[-1] = strided[int(plan.integers(1, last + 1))]
            vid = _video_id(seed, split, i, taken)
            video = render_video(content, size=size, num_frames=t_count, num_objects=n_obj,
                                 first_frames=firsts, name=vid)
            for t in range(t_count):
                jpg = _encode_jpeg(video.images[t])
                atomic_write_bytes(out / f"{split}_all_frames" / "JPEGImages" / vid / f"{_frame_name(t)}.jpg",
                                   jpg)
                n_all += 1
                if t % YTVOS_STRIDE == 0:
                    atomic_write_bytes(out / split / "JPEGImages" / vid / f"{_frame_name(t)}.jpg", jpg)
                    n_strided += 1
            objs: Dict[str, dict] = {}
            for o in video.objects:
                if split == "train":
                    listed = [t for t in strided if o.pixels[t] > 0]
                else:
                    listed = [t for t in strided if t >= o.first_frame]
                objs[str(o.obj_id)] = {"category": o.kind, "frames": [_frame_name(t) for t in listed]}
            ytmeta[vid] = {"objects": objs}
            for t in strided:
                labels = video.masks[t]
                if split == "valid":
                    starting = [o.obj_id for o in video.objects if o.first_frame == t]
                    if not starting:
                        continue
                    labels = np.where(np.isin(labels, starting), labels, 0).astype(np.uint8)
                atomic_write_bytes(out / split / "Annotations" / vid / f"{_frame_name(t)}.png",
                                   encode_index_png(labels))
                n_ann += 1
            entry = video.describe()
            entry["split"] = split
            entry["annotated_frames"] = [_frame_name(t) for t in strided]
            meta["sequences"][vid] = entry
            order.append((i, vid))
        names = sorted(v for _, v in order)
        atomic_write_json(out / split / "meta.json", {"videos": {v: ytmeta[v] for v in names}})
        meta["splits"][split] = names
        if split == "train":
            train_names = names
            jjval = sorted(v for i, v in order if count >= 2 and i % 3 == 0)
            meta["splits"]["jjval"] = jjval
            meta["splits"]["jjtrain"] = [v for v in names if v not in jjval]
        if log:
            log(f"{split}: {len(names)} video(s), {n_strided} frames in {split}/JPEGImages, {n_all} in "
                f"{split}_all_frames/JPEGImages, {n_ann} annotations, {split}/meta.json")
    atomic_write_text(out / "jjval.txt", _lines(meta["splits"]["jjval"]))
    atomic_write_text(out / "jjtrain.txt", _lines(meta["splits"]["jjtrain"]))
    if log:
        log(f"jjval.txt ({len(meta['splits']['jjval'])} videos), jjtrain.txt "
            f"({len(meta['splits']['jjtrain'])} videos): a split of the {len(train_names)} train videos")
    atomic_write_json(out / "synthetic_meta.json", meta)
    if log:
        log("synthetic_meta.json: seed, size, per-frame regimes, mask IoU, object visibility")
    return out


def generate(format: str, out_dir: PathLike, **kwargs) -> Path:
    """Write a synthetic dataset of ``format`` (``davis2017`` or ``youtubevos``) into ``out_dir``."""
    if format == "davis2017":
        return generate_davis2017(out_dir, **kwargs)
    if format == "youtubevos":
        return generate_youtubevos(out_dir, **kwargs)
    raise ConfigError(f"unknown synthetic dataset format {format!r}; expected one of {', '.join(FORMATS)}")


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m dataset.synthetic",
        description="Write a deterministic synthetic video dataset in the DAVIS 2017 or YouTube-VOS 2018 "
                    "on-disk layout.")
    p.add_argument("--format", required=True, choices=FORMATS, help="on-disk layout to write")
    p.add_argument("--out", required=True, help="output folder (must be empty unless --overwrite)")
    p.add_argument("--seed", type=int, default=0, help="generation seed (default 0)")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=(120, 216),
                   help="frame size (default 120 216)")
    p.add_argument("--num-videos", type=int, nargs="+", metavar="N",
                   help="videos per split: TRAIN [VAL] (one number: the same for both; default "
                        "davis2017 4 3, youtubevos 6 3)")
    p.add_argument("--frames", type=int, nargs=2, metavar=("MIN", "MAX"),
                   help="frames per video (default davis2017 24 40; youtubevos 30 50, all frames)")
    p.add_argument("--objects", type=int, nargs=2, metavar=("MIN", "MAX"),
                   help="objects per video (default 2 3; the first video of each split has one)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty folder")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    header = [f"wrote a synthetic {args.format} dataset (seed {args.seed}, {args.size[0]}x{args.size[1]}) "
              f"to {args.out}:"]

    def log(line: str) -> None:
        while header:
            print(header.pop(), flush=True)
        print(f"  {line}", flush=True)

    kwargs: Dict[str, object] = {"seed": args.seed, "size": tuple(args.size), "overwrite": args.overwrite,
                                 "log": log}
    if args.num_videos is not None:
        if len(args.num_videos) > 2:
            print("error: --num-videos takes one or two numbers (TRAIN [VAL])", file=sys.stderr)
            return 2
        train = args.num_videos[0]
        val = args.num_videos[1] if len(args.num_videos) == 2 else train
        kwargs["num_train"] = train
        kwargs["num_val" if args.format == "davis2017" else "num_valid"] = val
    if args.frames is not None:
        kwargs["frames"] = tuple(args.frames)
    if args.objects is not None:
        kwargs["objects"] = tuple(args.objects)
    try:
        generate(args.format, args.out, **kwargs)
    except ReuseVOSError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
