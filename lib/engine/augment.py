"""First-frame augmentation: warped copies of the object on an inpainted background.

The target model is initialised from K = ``num_aug`` samples: the original first frame, then
``num_aug - 1`` synthetic frames. Each synthetic frame pastes the object, cut out by its mask and
warped, onto the background of the first frame, from which the object has been removed by
inpainting (OpenCV TELEA, radius 1).

Per synthetic frame, the object gets a rotation, a horizontal flip, a scale, a skew, a motion blur
and a new centre; the background gets a zoom and a Gaussian blur. Each parameter is taken from a
fixed list of options, without replacement (the list is reshuffled when more frames than options are
needed). Scales are clamped so the warped object fits in the image and its bounding box keeps a side
of at least ``MIN_OBJECT_SIDE`` pixels. New centres lie on a jittered grid over the image. A frame is
redrawn (with options picked at random) when the object would vanish or cover the whole image; after
``MAX_TRIES`` failed draws the original frame is used instead.

Everything runs on the CPU with NumPy and OpenCV, and is deterministic given the
``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Tuple

import cv2
import numpy as np
import torch
from torch import Tensor

ROTATIONS_DEG = (-45.0, -30.0, -20.0, -10.0, -5.0, 5.0, 10.0, 20.0, 30.0, 45.0)
FLIPS = (True, False, False, False, False)
SCALES = (0.5, 0.7, 1.0, 1.5, 2.0, 2.5)
SKEWS = ((0.0, 0.0), (0.1, 0.1))
MOTION_BLUR_SIZES = (0, 2)
MOTION_BLUR_ANGLES_DEG = (0.0, 45.0, 90.0, 135.0)
BACKGROUND_SCALES = (1.0, 1.0, 1.2)
BACKGROUND_BLURS = (0.0, 1.0, 2.0, 5.0)



@dataclass(frozen=True)
class AugmentLists:
    """The option lists of the synthetic first frames. A repeated entry is drawn more often."""

    rotations_deg: Tuple[float, ...] = ROTATIONS_DEG
    flips: Tuple[bool, ...] = FLIPS
    scales: Tuple[float, ...] = SCALES
    skews: Tuple[Tuple[float, float], ...] = SKEWS
    blur_sizes: Tuple[int, ...] = MOTION_BLUR_SIZES
    blur_angles_deg: Tuple[float, ...] = MOTION_BLUR_ANGLES_DEG
    background_scales: Tuple[float, ...] = BACKGROUND_SCALES
    background_blurs: Tuple[float, ...] = BACKGROUND_BLURS


# The project's lists (above): each distinct option once, except the flips and background scales.
PROJECT_LISTS = AugmentLists()
# The official lists (``fg_aug_params`` / ``bg_aug_params`` of the original train.py and evaluate.py), with
# their duplicates, which set the probabilities: a skew 1/3 of the time, a motion blur 1/4, a background blur
# 3/5 (the official motion blur of the background is replaced here by the Gaussian blur of the same size).
# ``--official-quirks`` trains with them.
OFFICIAL_LISTS = AugmentLists(skews=((0.0, 0.0), (0.0, 0.0), (0.1, 0.1)), blur_sizes=(0, 0, 0, 2),
                              background_blurs=(0.0, 0.0, 1.0, 2.0, 5.0))
MIN_OBJECT_SIDE = 10
MAX_TRIES = 10
INPAINT_RADIUS = 1


@dataclass(frozen=True)
class ObjectWarp:
    """Parameters of one synthetic frame.

    Attributes:
        rotation: degrees, counter-clockwise on screen.
        flip: mirror the object left-right.
        scale: zoom factor before clamping.
        skew: (horizontal, vertical) shear factors.
        blur_size: motion-blur half length in pixels (0: none).
        blur_angle: motion-blur direction in degrees.
        centre: (x, y) new object centre in pixels.
        background_scale: zoom of the background about the image centre.
        background_blur: Gaussian sigma of the background blur in pixels (0: none).
    """

    rotation: float
    flip: bool
    scale: float
    skew: Tuple[float, float]
    blur_size: int
    blur_angle: float
    centre: Tuple[float, float]
    background_scale: float
    background_blur: float


def augment_first_frame(
    image: Tensor, mask: Tensor, num_aug: int, rng: np.random.Generator, lists: AugmentLists = PROJECT_LISTS
) -> Tuple[Tensor, Tensor]:
    """Build the K = ``num_aug`` first-frame training samples of one object.

    Args:
        image: (3, H, W) uint8 RGB.
        mask: (H, W) or (1, H, W), the object where > 0; must not be empty.
        num_aug: K >= 1, the original included.
        rng: the only source of randomness.
        lists: the option lists (:data:`PROJECT_LISTS`, or :data:`OFFICIAL_LISTS` with the original's
            duplicates).
    Returns:
        images (K, 3, H, W) uint8 and labels (K, 1, H, W) uint8 in {0, 1}; index 0 is the original.
    """
    assert num_aug >= 1, "num_aug counts the original frame"
    img = np.ascontiguousarray(image.permute(1, 2, 0).cpu().numpy())
    obj = (mask.reshape(image.shape[-2:]) > 0).cpu().numpy()
    if not obj.any():
        raise ValueError("augment_first_frame needs a non-empty object mask")
    background = cv2.inpaint(img, obj.astype(np.uint8), INPAINT_RADIUS, cv2.INPAINT_TELEA)

    images, labels = [img], [obj.astype(np.uint8)]
    for warp in _draw_warps(rng, num_aug - 1, obj.shape, lists):
        new_img, new_label = _synthesise_accepted(img, obj, background, warp, rng, lists)
        images.append(new_img)
        labels.append(new_label)
    images_t = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    labels_t = torch.from_numpy(np.stack(labels))[:, None]
    return images_t, labels_t


def _draw_without_replacement(rng: np.random.Generator, options: Sequence, n: int) -> list:
    """n options: a random order of the list, reshuffled and repeated as often as needed."""
    picks = []
    while len(picks) < n:
        picks += [options[i] for i in rng.permutation(len(options))]
    return picks[:n]


def _grid_centres(rng: np.random.Generator, n: int, shape: Tuple[int, int]) -> list:
    """n distinct cells of a grid over the image, each centre jittered by up to 1/4 cell: (x, y)."""
    height, width = shape
    cols = max(1, math.ceil(math.sqrt(n * width / height)))
    rows = max(1, math.ceil(n / cols))
    cell_h, cell_w = height / rows, width / cols
    centres = []
    for cell in rng.permutation(rows * cols)[:n]:
        row, col = divmod(int(cell), cols)
        jitter_x, jitter_y = rng.uniform(-0.25, 0.25, size=2)
        centres.append(((col + 0.5 + jitter_x) * cell_w, (row + 0.5 + jitter_y) * cell_h))
    return centres


def _draw_warps(rng: np.random.Generator, n: int, shape: Tuple[int, int], lists: AugmentLists) -> list:
    """The parameters of n synthetic frames, each list sampled without replacement."""
    columns = zip(
        _draw_without_replacement(rng, lists.rotations_deg, n),
        _draw_without_replacement(rng, lists.flips, n),
        _draw_without_replacement(rng, lists.scales, n),
        _draw_without_replacement(rng, lists.skews, n),
        _draw_without_replacement(rng, lists.blur_sizes, n),
        _draw_without_replacement(rng, lists.blur_angles_deg, n),
        _grid_centres(rng, n, shape),
        _draw_without_replacement(rng, lists.background_scales, n),
        _draw_without_replacement(rng, lists.background_blurs, n),
    )
    return [ObjectWarp(*values) for values in columns]


def _random_warp(rng: np.random.Generator, shape: Tuple[int, int], lists: AugmentLists) -> ObjectWarp:
    """A replacement draw: every option picked at random, the centre uniform over the image."""
    height, width = shape

    def pick(options):
        return options[int(rng.integers(len(options)))]

    return ObjectWarp(
        rotation=pick(lists.rotations_deg),
        flip=pick(lists.flips),
        scale=pick(lists.scales),
        skew=pick(lists.skews),
        blur_size=pick(lists.blur_sizes),
        blur_angle=pick(lists.blur_angles_deg),
        centre=(rng.uniform(0, width), rng.uniform(0, height)),
        background_scale=pick(lists.background_scales),
        background_blur=pick(lists.background_blurs),
    )


def _object_transform(obj: np.ndarray, warp: ObjectWarp) -> np.ndarray:
    """(2, 3) affine map from the first frame to the synthetic frame for the object.

    The object's bounding-box centre goes to ``warp.centre``; about it the object is flipped, scaled,
    skewed and rotated, in that order. The scale is clamped so the warped bounding box fits in the
    image and its shorter original side becomes at least ``MIN_OBJECT_SIDE`` pixels.
    """
    height, width = obj.shape
    ys, xs = np.nonzero(obj)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    centre = np.array([(x0 + x1) / 2.0, (y0 + y1) / 2.0])

    angle = math.radians(warp.rotation)
    rotate = np.array([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]])
    skew = np.array([[1.0, warp.skew[0]], [warp.skew[1], 1.0]])
    flip = np.diag([-1.0 if warp.flip else 1.0, 1.0])
    shape_only = rotate @ skew @ flip

    corners = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], dtype=np.float64) - centre
    extent = np.ptp(corners @ shape_only.T, axis=0)
    fit = min(width / max(extent[0], 1.0), height / max(extent[1], 1.0))
    visible = MIN_OBJECT_SIDE / min(x1 - x0, y1 - y0)
    scale = min(max(warp.scale, visible), fit)

    linear = scale * shape_only
    offset = np.asarray(warp.centre) - linear @ centre
    return np.hstack([linear, offset[:, None]])


def _motion_blur_kernel(size: int, angle_deg: float) -> np.ndarray:
    """(2*size+1, 2*size+1) float32 line kernel through the centre, summing to 1."""
    kernel = np.zeros((2 * size + 1, 2 * size + 1), np.float32)
    angle = math.radians(angle_deg)
    for t in range(-size, size + 1):
        kernel[size - round(t * math.sin(angle)), size + round(t * math.cos(angle))] = 1.0
    return kernel / kernel.sum()


def _warp_background(background: np.ndarray, scale: float, blur: float) -> np.ndarray:
    """Zoom the (H, W, 3) uint8 background about its centre and blur it; float32 result."""
    height, width = background.shape[:2]
    out = background.astype(np.float32)
    if scale != 1.0:
        zoom = cv2.getRotationMatrix2D((width / 2.0, height / 2.0), 0.0, scale)
        out = cv2.warpAffine(out, zoom, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    if blur > 0:
        out = cv2.GaussianBlur(out, (0, 0), blur)
    return out


def _synthesise(
    img: np.ndarray, obj: np.ndarray, background: np.ndarray, warp: ObjectWarp
) -> Tuple[np.ndarray, np.ndarray]:
    """One synthetic frame: (H, W, 3) uint8 image and (H, W) uint8 label in {0, 1}."""
    height, width = obj.shape
    transform = _object_transform(obj, warp)
    alpha = obj.astype(np.float32)
    colour = img.astype(np.float32) * alpha[..., None]
    colour = cv2.warpAffine(colour, transform, (width, height), flags=cv2.INTER_LINEAR)
    alpha = cv2.warpAffine(alpha, transform, (width, height), flags=cv2.INTER_LINEAR)
    if warp.blur_size > 0:
        kernel = _motion_blur_kernel(warp.blur_size, warp.blur_angle)
        colour = cv2.filter2D(colour, -1, kernel, borderType=cv2.BORDER_CONSTANT)
        alpha = cv2.filter2D(alpha, -1, kernel, borderType=cv2.BORDER_CONSTANT)
    back = _warp_background(background, warp.background_scale, warp.background_blur)
    out = colour + (1.0 - alpha[..., None]) * back
    label = (alpha > 0.5).astype(np.uint8)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), label


def _synthesise_accepted(
    img: np.ndarray, obj: np.ndarray, background: np.ndarray, warp: ObjectWarp, rng: np.random.Generator,
    lists: AugmentLists,
) -> Tuple[np.ndarray, np.ndarray]:
    """:func:`_synthesise`, redrawn at random until the object keeps >= 1 pixel and leaves >= 1
    background pixel; the original frame after ``MAX_TRIES`` failures."""
    for _ in range(MAX_TRIES):
        new_img, new_label = _synthesise(img, obj, background, warp)
        if 0 < new_label.sum() < new_label.size:
            return new_img, new_label
        warp = _random_warp(rng, obj.shape, lists)
    return img, obj.astype(np.uint8)
