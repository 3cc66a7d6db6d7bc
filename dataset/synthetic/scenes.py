"""Synthetic videos in memory: textures, shapes, motion regimes, occlusions, and :func:`render_video`.

Every video is a pure function of its seed (see the package docstring for what the content is built to show).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from base.errors import ConfigError

PathLike = Union[str, Path]
SeedLike = Union[int, Sequence[int], np.random.Generator]

REGIMES = ("still", "slow", "fast")
SHAPE_KINDS = ("ellipse", "polygon", "star", "roundrect")

# px per frame of each regime (object motion, camera pan)
SLOW_SPEED = (0.7, 1.3)
FAST_SPEED = (8.0, 15.0)
SLOW_PAN = (0.3, 0.8)
FAST_PAN = (1.0, 2.5)


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
                "first_frame_name": frame_name(o.first_frame),
                "z": o.z,
                "pixels": list(o.pixels),
                "unoccluded_pixels": list(o.unoccluded_pixels),
                "iou_prev": [_round(v) for v in self.object_iou_prev(o.obj_id)],
            }
        return {
            "num_frames": self.num_frames,
            "size": list(self.size),
            "frames": [frame_name(t) for t in range(self.num_frames)],
            "regimes": list(self.regimes),
            "camera": [[round(float(x), 3), round(float(y), 3)] for x, y in self.camera],
            "mask_iou_prev": [_round(v) for v in iou],
            "objects": objects,
        }


def _round(v: Optional[float]) -> Optional[float]:
    return None if v is None else round(float(v), 6)


def frame_name(t: int) -> str:
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
