"""Sparse refinement (SpVOS-style): the refiner's shallow stages and upsampler on the tiles that changed.

On a sparse frame each shallow stage and the upsampler run only on *active* tiles; every other tile keeps
the previous frame's value at the same location (SpVOS's "reuse"). The saving is real on a CPU because the
active tiles are gathered into one batch of equal-size windows (tile + halo), run through the unchanged
convolutions, and scattered back; the halo covers each segment's receptive field, so with every tile active
the result equals the dense refiner up to float rounding. A window is shifted inwards at the image border
instead of padded, so its edge there is the image's edge and the layers' own padding is the dense one's.

Tiles are squares of ``tile`` pixels of the network input, ``tile / 8`` at stride 8 (stage ``layer3``),
``tile / 4`` at stride 4 (stage ``layer2`` and the upsampler's input). The network size must be a multiple of
8 (and of ``tile``'s stride-8 grid), so that the three grids line up and the upsampler's final resize is the
identity.

A stage is two local segments around a global step: segment A (TSE transform + RRB1, halo 5), then the CAB's
channel attention from the global average of RRB1's output (the updated map: new on active tiles, the previous
frame's elsewhere), then segment B (the CAB's product and sum + RRB2, halo 2). The upsampler is one segment
(halo 4 at stride 4: bicubic 2 + 3x3 conv 0.5 + bicubic 1 + 3x3 at full size 0.25, rounded up).
"""

from __future__ import annotations

from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from base.errors import ConfigError
from models.gfrtm import GFRTM
from models.refiner import SHALLOW_LAYERS, resize

HALO_A = 5  # TSE transform (three 3x3) + RRB1 (two 3x3)
HALO_B = 2  # RRB2 (two 3x3); the CAB's product and sum are pointwise
HALO_UP = 4  # the upsampler, at stride 4 (3.75 rounded up; 3 fails the all-active test)
STATE_KEYS = ("layer3.h1", "layer3.out", "layer2.h1", "layer2.out", "logits")

ShallowState = Dict[str, Tensor]


def shallow_dense(model: GFRTM, x16: Tensor, score16: Tensor, layer3: Tensor, layer2: Tensor,
                  image_size: Sequence[int], reduced: Optional[Mapping[str, Tensor]] = None
                  ) -> Tuple[Tensor, ShallowState]:
    """:meth:`GFRTM.shallow` (the same call: bit for bit) that also returns the maps a later sparse frame reuses:
    each shallow stage's RRB1 output and output, and the logits (batch 1)."""
    state: ShallowState = {}
    state["logits"] = model.shallow(x16, score16, layer3, layer2, image_size, reduced, maps=state)
    return state["logits"], state


def check_size(image_size: Sequence[int], tile: int) -> None:
    """A one-line error unless the sparse path can tile ``image_size`` with ``tile``-pixel tiles."""
    if tile < 8 or tile % 8:
        raise ConfigError(f"--sparse-tile must be a positive multiple of 8 pixels, got {tile}")
    if any(int(s) % 8 for s in image_size):
        raise ConfigError(f"the sparse path needs a network size that is a multiple of 8, got "
                          f"{image_size[0]}x{image_size[1]} (e.g. --size 240 432 or 480 848)")


def tile_grid(image_size: Sequence[int], tile: int) -> Tuple[int, int]:
    """Rows and columns of tiles (the last ones may be partial)."""
    return tuple(-(-int(s) // tile) for s in image_size)  # type: ignore[return-value]


def tile_means(x: Tensor, tile: int) -> Tensor:
    """Per-tile means of ``x`` (N, C, H, W) over the tiles of ``tile`` pixels (the last ones may be partial:
    their mean is over the pixels they hold): (N, C, rows, cols)."""
    rows, cols = tile_grid(x.shape[-2:], tile)
    pad = (0, cols * tile - x.shape[-1], 0, rows * tile - x.shape[-2])
    total = F.avg_pool2d(F.pad(x, pad), tile, divisor_override=1)
    count = F.avg_pool2d(F.pad(torch.ones_like(x[:1, :1]), pad), tile, divisor_override=1)
    return total / count


def change_tiles(image: Tensor, previous: Tensor, previous_prob: Tensor, tile: int, threshold: float) -> Tensor:
    """Active tiles (rows, cols) bool: the mean absolute grey-level change from the previous frame exceeds
    ``threshold`` (grey levels in [0, 1]), or the previous mask's boundary (p = 0.5) passes through the tile.

    image, previous: (1, 3, H, W) uint8 frames; previous_prob: (H, W) the object's previous probability.
    """
    diff = (image.float() - previous.float()).abs().mean(dim=1, keepdim=True) / 255.0  # (1, 1, H, W)
    rows, cols = tile_grid(image.shape[-2:], tile)
    pad = (0, cols * tile - image.shape[-1], 0, rows * tile - image.shape[-2])
    fg = (previous_prob > 0.5).float()[None, None]
    has_fg = F.max_pool2d(F.pad(fg, pad), tile)
    has_bg = F.max_pool2d(F.pad(1 - fg, pad, value=0.0), tile)
    return ((tile_means(diff, tile) > threshold) | ((has_fg > 0) & (has_bg > 0)))[0, 0]


TILE_FEATURES = ("change_mean", "change_max", "uncertain", "foreground", "near_object")


def tile_features(image: Tensor, previous: Tensor, previous_prob: Tensor, tile: int) -> Tensor:
    """The learned tile gate's inputs (:class:`models.tile_gate.TileGate`): (1, 5, rows, cols) float32.

    Per tile: the mean and the maximum (over 8x8 blocks) of the absolute grey-level change from the previous
    frame (grey levels in [0, 1]), the mean uncertainty 4 p (1 - p) of the object's previous probability
    ``previous_prob`` (H, W), its foreground fraction (p > 0.5), and the fraction of the tile's 8x8 blocks
    within ``tile`` pixels (in blocks) of a block holding foreground. ``tile``: a multiple of 8.
    ``image``, ``previous``: (1, 3, H, W) uint8 frames.
    """
    diff = (image.float() - previous.float()).abs().mean(dim=1, keepdim=True) / 255.0  # (1, 1, H, W)
    rows, cols = tile_grid(image.shape[-2:], tile)
    block = F.avg_pool2d(diff, 8, ceil_mode=True)
    block_pad = (0, cols * (tile // 8) - block.shape[-1], 0, rows * (tile // 8) - block.shape[-2])
    change_max = F.max_pool2d(F.pad(block, block_pad), tile // 8)
    p = previous_prob.float()[None, None]
    fg = (p > 0.5).float()
    b = tile // 8  # the tile in 8x8 blocks: "near" is measured on the block grid (cheap)
    near = F.max_pool2d(F.max_pool2d(fg, 8, ceil_mode=True), 2 * b + 1, stride=1, padding=b)
    return torch.cat([tile_means(diff, tile), change_max, tile_means(4 * p * (1 - p), tile), tile_means(fg, tile),
                      F.avg_pool2d(F.pad(near, block_pad), b)], dim=1)


def _windows(active: Tensor, size: Tuple[int, int], tile: int, halo: int) -> List[Tuple[int, int, int, int, int, int]]:
    """Per active tile (y0, y1, x0, x1) of the tile and the top-left (wy, wx) of its window on a map of ``size``."""
    h, w = size
    wh, ww = min(tile + 2 * halo, h), min(tile + 2 * halo, w)
    out = []
    for i, j in active.nonzero().tolist():
        y0, x0 = i * tile, j * tile
        y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
        wy = min(max(y0 - halo, 0), h - wh)
        wx = min(max(x0 - halo, 0), w - ww)
        out.append((y0, y1, x0, x1, wy, wx))
    return out


def run_on_tiles(fn: Callable[..., Tensor], inputs: Sequence[Tensor], target: Tensor, active: Tensor, tile: int,
                 halo: int, scale: int = 1) -> Tensor:
    """``target`` (1, C, s h, s w) with its active tiles replaced by ``fn`` of the gathered windows of ``inputs``
    (each (1, ., h, w)); ``fn`` maps (n, ., wh, ww) windows to (n, C, s wh, s ww). Returns ``target`` (in place)."""
    if not bool(active.any()):
        return target
    size = tuple(inputs[0].shape[-2:])
    wins = _windows(active, size, tile, halo)
    wh, ww = min(tile + 2 * halo, size[0]), min(tile + 2 * halo, size[1])
    batch = [torch.cat([x[:, :, wy:wy + wh, wx:wx + ww] for (_, _, _, _, wy, wx) in wins]) for x in inputs]
    out = fn(*batch)
    s = scale
    for k, (y0, y1, x0, x1, wy, wx) in enumerate(wins):
        target[:, :, y0 * s:y1 * s, x0 * s:x1 * s] = out[k:k + 1, :, (y0 - wy) * s:(y1 - wy) * s,
                                                         (x0 - wx) * s:(x1 - wx) * s]
    return target


def shallow_sparse(model: GFRTM, x16: Tensor, score16: Tensor, layer3: Tensor, layer2: Tensor,
                   image_size: Sequence[int], reduced: Mapping[str, Tensor], previous: ShallowState,
                   active: Tensor, tile: int) -> Tuple[Tensor, ShallowState]:
    """The shallow stages and upsampler on the ``active`` tiles (rows, cols) bool of ``tile`` pixels; elsewhere
    the ``previous`` frame's maps (from :func:`shallow_dense` or this function). Returns logits and the new maps.

    ``reduced``: the frame's shallow reductions (:meth:`GFRTM.reduce_shallow`), computed densely once per frame.
    """
    ref = model.refiner
    state: ShallowState = {}
    x = x16
    for layer, feature, stride in zip(SHALLOW_LAYERS, (layer3, layer2), (8, 4)):
        t = tile // stride
        tse, cab = ref.TSE[layer], ref.CAB[layer]
        red = reduced[layer]
        score = resize(resize(score16, feature.shape[-2:]), red.shape[-2:])

        def segment_a(r, s, tse=tse, rrb=ref.RRB1[layer]):
            return rrb(tse.transform(torch.cat([r, s], dim=1)))

        h1 = run_on_tiles(segment_a, [red, score], previous[f"{layer}.h1"].clone(), active, t, HALO_A)
        deeper_pool = x if x.shape[-2:] == (1, 1) else F.adaptive_avg_pool2d(x, 1)
        att = torch.sigmoid(cab.convreluconv(torch.cat([F.adaptive_avg_pool2d(h1, 1), deeper_pool], dim=1)))
        deeper = resize(x, h1.shape[-2:])

        def segment_b(h, d, att=att, rrb=ref.RRB2[layer]):
            return rrb(h * att + d)

        x = run_on_tiles(segment_b, [h1, deeper], previous[f"{layer}.out"].clone(), active, t, HALO_B)
        state[f"{layer}.h1"], state[f"{layer}.out"] = h1, x
    t = tile // 4

    def upsample(v):
        return ref.project(v, (4 * v.shape[-2], 4 * v.shape[-1]))

    state["logits"] = run_on_tiles(upsample, [x], previous["logits"].clone(), active, t, HALO_UP, scale=4)
    assert tuple(state["logits"].shape[-2:]) == tuple(int(s) for s in image_size)
    return state["logits"], state
