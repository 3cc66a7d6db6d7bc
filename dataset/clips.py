"""Synthetic training clips from one still image and its object mask (the "Syn" pre-training of VOS).

:func:`make_clip` turns an image/mask pair into ``frames`` frames of smooth random motion, as the reuse-gate
paper's "Syn" column, TTVOS, STM, STCN and XMem pre-train:

* **motion**: one affine transform per frame (translation, rotation, scale, shear about the object's centre),
  interpolated smoothly from a random start to a random end (smoothstep) plus a small per-frame jitter, so
  consecutive frames differ as consecutive video frames do; optionally a thin-plate-spline deformation of
  the object (a 4 x 4 grid of control points with random offsets, growing over the clip);
* **scene**: with probability ``p_background`` the object (image x mask) is pasted onto another image that moves
  by itself (camera motion); otherwise the whole image moves (object and its own background together);
* **clutter**: with probability ``p_distractor`` a second image's salient object is pasted with its own motion,
  in front of the target with probability ``p_occlude`` (its pixels leave the target's mask) or behind it.

Frames are (T, H, W, 3) uint8 RGB, masks (T, H, W) uint8 0/1 (the target's visible pixels). Everything is drawn
from the ``numpy.random.Generator`` passed in: the same generator state gives the same clip.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from typing import Optional, Tuple

import cv2
import numpy as np
import torch

from base.errors import ConfigError


@dataclass(frozen=True)
class ClipConfig:
    """How :func:`make_clip` draws a clip.

    Attributes:
        frames: frames per clip.
        size: (H, W) of the frames.
        crop: range of the fraction of the source image's side kept by the initial random crop.
        translate: largest translation between the first and the last frame, as a fraction of (H, W).
        rotate: largest rotation between the first and the last frame, degrees.
        scale: range of the scale change between the first and the last frame.
        shear: largest shear change (tan of the angle) over the clip.
        jitter: per-frame random translation on top of the smooth path, fraction of (H, W).
        tps: largest thin-plate-spline control-point offset at the last frame, fraction of (H, W); 0: none.
        camera: largest background translation over the clip (pasted scenes), fraction of (H, W).
        p_background: probability of pasting the object onto another image.
        p_distractor: probability of a second pasted object.
        p_occlude: probability that the distractor passes in front of the target.
        distractor_scale: range of the distractor's size relative to the frame.
    """

    frames: int = 6
    size: Tuple[int, int] = (240, 432)
    crop: Tuple[float, float] = (0.7, 1.0)
    translate: float = 0.15
    rotate: float = 15.0
    scale: Tuple[float, float] = (0.85, 1.2)
    shear: float = 0.1
    jitter: float = 0.005
    tps: float = 0.0
    camera: float = 0.05
    p_background: float = 0.5
    p_distractor: float = 0.5
    p_occlude: float = 0.5
    distractor_scale: Tuple[float, float] = (0.3, 0.7)

    def __post_init__(self):
        object.__setattr__(self, "size", tuple(int(s) for s in self.size))
        if self.frames < 2:
            raise ConfigError(f"a clip needs at least 2 frames, got {self.frames}")
        if len(self.size) != 2 or min(self.size) < 16:
            raise ConfigError(f"clip size must be (H, W) >= 16, got {self.size}")
        for name in ("p_background", "p_distractor", "p_occlude"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0 < self.crop[0] <= self.crop[1] <= 1:
            raise ConfigError(f"crop must be 0 < low <= high <= 1, got {self.crop}")
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ConfigError(f"scale must be 0 < low <= high, got {self.scale}")


@dataclass
class Clip:
    """A synthetic clip: ``frames`` (T, H, W, 3) uint8, ``masks`` (T, H, W) uint8 0/1 of the target, and what
    was drawn (``pasted``, ``distractor``: None, "front" or "behind"; ``distractor_masks`` (T, H, W) where the
    distractor is drawn, for tests and visualisation)."""

    frames: np.ndarray
    masks: np.ndarray
    pasted: bool = False
    distractor: Optional[str] = None
    distractor_masks: Optional[np.ndarray] = field(default=None, repr=False)


Pair = Tuple[np.ndarray, np.ndarray]


def random_crop(image: np.ndarray, mask: np.ndarray, size: Tuple[int, int], crop: Tuple[float, float],
                rng: np.random.Generator) -> Pair:
    """A random crop keeping ``crop`` of each side (the object's box kept inside where it fits), resized to
    ``size``: INTER_AREA / nearest."""
    src_h, src_w = mask.shape
    frac = rng.uniform(*crop)
    ch, cw = max(1, int(round(src_h * frac))), max(1, int(round(src_w * frac)))
    ys, xs = np.nonzero(mask)
    if len(ys):  # prefer windows that keep the whole object box
        y_lo, y_hi = max(0, ys.max() + 1 - ch), min(ys.min(), src_h - ch)
        x_lo, x_hi = max(0, xs.max() + 1 - cw), min(xs.min(), src_w - cw)
    else:
        y_lo = y_hi = x_lo = x_hi = -1
    y = int(rng.integers(y_lo, y_hi + 1)) if 0 <= y_lo <= y_hi else int(rng.integers(0, src_h - ch + 1))
    x = int(rng.integers(x_lo, x_hi + 1)) if 0 <= x_lo <= x_hi else int(rng.integers(0, src_w - cw + 1))
    image, mask = image[y:y + ch, x:x + cw], mask[y:y + ch, x:x + cw]
    dsize = (size[1], size[0])
    return (cv2.resize(image, dsize, interpolation=cv2.INTER_AREA),
            cv2.resize(mask, dsize, interpolation=cv2.INTER_NEAREST))


def _smoothstep(t: np.ndarray) -> np.ndarray:
    return t * t * (3 - 2 * t)


def affine_path(config: ClipConfig, centre: Tuple[float, float], rng: np.random.Generator,
                translate: float, rotate: float, scale: Tuple[float, float], shear: float) -> np.ndarray:
    """(T, 2, 3) affine matrices: identity at frame 0, a smooth path to a random end transform (about
    ``centre`` = (x, y)), plus per-frame jitter after frame 0."""
    h, w = config.size
    t = _smoothstep(np.linspace(0.0, 1.0, config.frames))
    end = {"tx": rng.uniform(-translate, translate) * w, "ty": rng.uniform(-translate, translate) * h,
           "angle": rng.uniform(-rotate, rotate), "log_scale": rng.uniform(math.log(scale[0]), math.log(scale[1])),
           "shear": rng.uniform(-shear, shear)}
    cx, cy = centre
    mats = []
    for i, s in enumerate(t):
        jx, jy = (rng.normal(0, config.jitter) * w, rng.normal(0, config.jitter) * h) if i else (0.0, 0.0)
        angle = math.radians(end["angle"] * s)
        k = math.exp(end["log_scale"] * s)
        sh = end["shear"] * s
        rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        linear = k * rot @ np.array([[1.0, sh], [0.0, 1.0]])
        offset = np.array([cx, cy]) - linear @ np.array([cx, cy]) + [end["tx"] * s + jx, end["ty"] * s + jy]
        mats.append(np.hstack([linear, offset[:, None]]))
    return np.stack(mats).astype(np.float64)


def _warp(array: np.ndarray, matrix: np.ndarray, size: Tuple[int, int], nearest: bool,
          border: int = cv2.BORDER_REFLECT101) -> np.ndarray:
    flags = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.warpAffine(array, matrix, (size[1], size[0]), flags=flags, borderMode=border, borderValue=0)


def tps_maps(size: Tuple[int, int], amount: float, rng: np.random.Generator, grid: int = 4,
             ) -> Tuple[np.ndarray, np.ndarray]:
    """A thin-plate-spline deformation as cv2.remap maps (x, y): control points on a ``grid`` x ``grid``
    lattice (borders included, fixed) move by up to ``amount`` x (H, W); the spline interpolates the offsets."""
    h, w = size
    ys, xs = np.meshgrid(np.linspace(0, h - 1, grid), np.linspace(0, w - 1, grid), indexing="ij")
    points = np.stack([xs.ravel(), ys.ravel()], 1)
    inner = (points[:, 0] > 0) & (points[:, 0] < w - 1) & (points[:, 1] > 0) & (points[:, 1] < h - 1)
    offsets = np.zeros_like(points)
    offsets[inner] = rng.uniform(-amount, amount, (int(inner.sum()), 2)) * [w, h]
    scale = float(max(h, w))
    p = points / scale

    def kernel(r2):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(r2 > 0, r2 * np.log(r2), 0.0)

    n = len(p)
    k = kernel(((p[:, None] - p[None]) ** 2).sum(-1))
    a = np.zeros((n + 3, n + 3))
    a[:n, :n], a[:n, n:], a[n:, :n] = k, np.hstack([np.ones((n, 1)), p]), np.hstack([np.ones((n, 1)), p]).T
    rhs = np.zeros((n + 3, 2))
    rhs[:n] = offsets  # backward map: the source position is the pixel plus the interpolated offset
    coef = np.linalg.solve(a, rhs)
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float64)
    q = np.stack([gx.ravel(), gy.ravel()], 1) / scale
    dist = kernel(((q[:, None] - p[None]) ** 2).sum(-1))
    off = dist @ coef[:n] + np.hstack([np.ones((len(q), 1)), q]) @ coef[n:]
    return ((gx.ravel() + off[:, 0]).reshape(h, w).astype(np.float32),
            (gy.ravel() + off[:, 1]).reshape(h, w).astype(np.float32))


def _centre(mask: np.ndarray) -> Tuple[float, float]:
    ys, xs = np.nonzero(mask)
    if not len(ys):
        return (mask.shape[1] - 1) / 2, (mask.shape[0] - 1) / 2
    return float(xs.mean()), float(ys.mean())


def _object_frames(image: np.ndarray, mask: np.ndarray, config: ClipConfig, rng: np.random.Generator,
                   border: int, translate: float, rotate: float, scale: Tuple[float, float], shear: float,
                   tps: float) -> Tuple[np.ndarray, np.ndarray]:
    """The image and mask moved along one smooth path: (T, H, W, 3), (T, H, W)."""
    mats = affine_path(config, _centre(mask), rng, translate, rotate, scale, shear)
    maps = tps_maps(config.size, tps, rng) if tps > 0 else None
    frames, masks = [], []
    for i, matrix in enumerate(mats):
        img = _warp(image, matrix, config.size, False, border)
        msk = _warp(mask, matrix, config.size, True, cv2.BORDER_CONSTANT)
        if maps is not None and i:
            s = i / (config.frames - 1)  # the deformation grows over the clip
            gy, gx = np.mgrid[0:config.size[0], 0:config.size[1]].astype(np.float32)
            mx, my = gx + (maps[0] - gx) * s, gy + (maps[1] - gy) * s
            img = cv2.remap(img, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
            msk = cv2.remap(msk, mx, my, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        frames.append(img)
        masks.append(msk)
    return np.stack(frames), np.stack(masks)


def place_object(image: np.ndarray, mask: np.ndarray, size: Tuple[int, int], scale: Tuple[float, float],
                 rng: np.random.Generator) -> Pair:
    """The object of ``mask`` cut to its box, resized so that it fills a random fraction in ``scale`` of the
    (H, W) = ``size`` frame's limiting side, placed at random on an empty (zero) frame: (frame, its mask)."""
    ys, xs = np.nonzero(mask)
    h, w = size
    if not len(ys):
        return np.zeros((h, w, 3), np.uint8), np.zeros((h, w), np.uint8)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    obj, obj_mask = image[y0:y1, x0:x1], mask[y0:y1, x0:x1]
    frac = rng.uniform(*scale)
    k = frac * min(h / obj.shape[0], w / obj.shape[1])
    oh, ow = max(1, int(obj.shape[0] * k)), max(1, int(obj.shape[1] * k))
    obj = cv2.resize(obj, (ow, oh), interpolation=cv2.INTER_AREA)
    obj_mask = cv2.resize(obj_mask, (ow, oh), interpolation=cv2.INTER_NEAREST)
    canvas, canvas_mask = np.zeros((h, w, 3), np.uint8), np.zeros((h, w), np.uint8)
    y, x = int(rng.integers(0, h - oh + 1)), int(rng.integers(0, w - ow + 1))
    canvas[y:y + oh, x:x + ow], canvas_mask[y:y + oh, x:x + ow] = obj, obj_mask
    return canvas, canvas_mask


def make_clip(target: Pair, config: ClipConfig, rng: np.random.Generator, background: Optional[Pair] = None,
              distractor: Optional[Pair] = None) -> Clip:
    """One synthetic clip of ``target`` = (image (H, W, 3) uint8, mask (H, W) 0/1).

    ``background`` and ``distractor`` are other image/mask pairs, used with the config's probabilities (the
    caller draws them; pass None to never paste / add clutter)."""
    image, mask = random_crop(*target, config.size, config.crop, rng)
    pasted = background is not None and rng.random() < config.p_background
    if pasted:
        frames, masks = _object_frames(image, mask, config, rng, cv2.BORDER_CONSTANT, config.translate,
                                       config.rotate, config.scale, config.shear, config.tps)
        bg_image, bg_mask = random_crop(*background, config.size, config.crop, rng)
        scene, _ = _object_frames(bg_image, bg_mask, config, rng, cv2.BORDER_REFLECT101, config.camera, 2.0,
                                  (0.95, 1.05), 0.0, 0.0)
        alpha = masks[..., None].astype(bool)
        frames = np.where(alpha, frames, scene)
    else:  # the whole picture moves: object and its own background together
        frames, masks = _object_frames(image, mask, config, rng, cv2.BORDER_REFLECT101, config.translate,
                                       config.rotate, config.scale, config.shear, config.tps)
    side, layer_masks = None, None
    if distractor is not None and rng.random() < config.p_distractor:
        obj, obj_mask = place_object(*distractor, config.size, config.distractor_scale, rng)
        layers, layer_masks = _object_frames(obj, obj_mask, config, rng, cv2.BORDER_CONSTANT, config.translate,
                                             config.rotate, config.scale, config.shear, 0.0)
        side = "front" if rng.random() < config.p_occlude else "behind"
        cover = layer_masks.astype(bool)
        if side == "front":
            frames = np.where(cover[..., None], layers, frames)
            masks = np.where(cover, 0, masks).astype(np.uint8)
        else:
            under = cover & ~masks.astype(bool)
            frames = np.where(under[..., None], layers, frames)
            layer_masks = under.astype(np.uint8)
    return Clip(np.ascontiguousarray(frames), np.ascontiguousarray(masks.astype(np.uint8)), pasted, side,
                layer_masks)


class SaliencyClipSet(torch.utils.data.Dataset):
    """Training samples of synthetic clips (``--dset duts``), in :class:`dataset.training.TrainingSet`'s item format.

    Epoch ``e`` holds ``samples_per_epoch`` clips; item ``i`` draws its target image, background and distractor
    and the clip from ``(seed, e, i)``, so it is the same in any worker and order. The meta names the source
    image and marks the sample as not cacheable (its first frame is generated, the target-model cache would
    never hit).

    Args:
        images: a :class:`dataset.saliency.SaliencyDataset` (e.g. DUTS-TR).
        seq_len: frames per clip; size: (H, W).
        clip: the generator's settings (its ``frames`` and ``size`` are replaced by ``seq_len`` and ``size``).
        samples_per_epoch: clips per epoch.
        seed: >= 0.
    """

    def __init__(self, images, *, seq_len: int = 6, size: Tuple[int, int] = (240, 432),
                 clip: Optional[ClipConfig] = None, samples_per_epoch: int = 2000, seed: int = 0):
        if samples_per_epoch < 1:
            raise ConfigError(f"samples per epoch must be >= 1, got {samples_per_epoch}")
        if int(seed) < 0:
            raise ConfigError(f"seed must be >= 0, got {seed}")
        self.images = images
        self.config = replace(clip or ClipConfig(), frames=int(seq_len), size=tuple(size))
        self.samples_per_epoch = int(samples_per_epoch)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        if int(epoch) < 0:
            raise ConfigError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.samples_per_epoch

    @property
    def num_pairs(self) -> int:
        return len(self.images)

    def describe(self) -> str:
        return (f"{self.images.name}: {len(self.images)} images, {self.samples_per_epoch} synthetic clips/epoch "
                f"of {self.config.frames} frames at {self.config.size[0]}x{self.config.size[1]}")

    def clip(self, i: int) -> Tuple[Clip, str]:
        """Item ``i``'s clip and its source image's name."""
        if not 0 <= i < self.samples_per_epoch:
            raise IndexError(f"sample {i} out of range (epoch {self.epoch} has {self.samples_per_epoch})")
        rng = np.random.default_rng([self.seed, self.epoch, i, 1])
        target, background, distractor = (int(k) for k in rng.integers(0, len(self.images), 3))
        clip = make_clip(self.images.read(target), self.config, rng, self.images.read(background),
                         self.images.read(distractor))
        return clip, self.images.pairs[target][0].stem

    def __getitem__(self, i: int) -> dict:
        clip, stem = self.clip(i)
        meta = {"dataset": self.images.name, "seq_name": f"{stem}@{self.epoch}.{i}", "obj_id": 1,
                "frames": [f"{stem}#{t}" for t in range(len(clip.frames))], "frame0_id": 0, "cache": False}
        return {"images": torch.from_numpy(clip.frames).permute(0, 3, 1, 2).contiguous(),
                "labels": torch.from_numpy(clip.masks).unsqueeze(1),
                "meta": json.dumps(meta)}
