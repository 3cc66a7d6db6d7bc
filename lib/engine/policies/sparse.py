"""Sparse refinement (SpVOS-style): the ``sparse`` path and the ``sparse-gate`` policy.

The ``sparse`` path is the paper's reuse path (delta-generator, refine-translator) whose shallow stages and
upsampler run only on the tiles that changed (:mod:`lib.engine.sparse`): a tile is active when the frame's mean
absolute grey-level change from the previous frame there is > ``--sparse-threshold`` or the object's previous
mask boundary passes through it; the other tiles keep the previous frame's maps. ``sparse-gate`` is the paper's
gate with this path in place of the translate path: sparse iff P_gate > tau, else compute. When more than
:data:`DENSE_ABOVE` of the tiles are active, or the previous frame left no maps, the shallow stages run densely.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Mapping

import torch

from base.errors import ConfigError
from lib.engine.paths import COMPUTE, PathKind, register_path
from lib.engine.policies import register
from lib.engine.policies.base import ObjectFrame, Param, Policy
from lib.engine.sparse import change_tiles, check_size, shallow_dense, shallow_sparse, tile_grid

if TYPE_CHECKING:  # pragma: no cover
    from lib.engine.core import FrameContext, ObjectState

DEFAULT_TILE = 64
# Above this fraction of active tiles the path runs the shallow stages densely (the same maps as every tile
# active, up to rounding): with 64-pixel tiles every tile active costs 2.9x the dense FLOPs (the halos; 1.9-2.2x
# with 128-pixel tiles), so tiles pay only below about a third of the frame.
DENSE_ABOVE = 1 / 3
THRESHOLD = Param("threshold", "--sparse-threshold", float, 0.02,
                  "a tile is recomputed when its mean grey-level change (0..1) exceeds this", "T")
TILE = Param("tile", "--sparse-tile", int, DEFAULT_TILE, "tile side in pixels of the network input (multiple of 8)",
             "PX")


def _sparse(ctx: FrameContext, obj: ObjectState, tpl_s):
    assert tpl_s is not None, "the sparse path needs template matching (Policy.needs_matching)"
    if ctx.image is None:
        raise ConfigError(f"frame {ctx.index}: the sparse path needs the frame itself (the session was given "
                          "features)")
    values = ctx.policy.values if ctx.policy is not None else {}
    tile, threshold = values.get("tile", DEFAULT_TILE), values.get("threshold", THRESHOLD.default)
    check_size(ctx.image_size, tile)
    fresh = obj.shallow_state is not None and obj.shallow_index == ctx.index - 1 and obj.shallow_image is not None
    if fresh:
        active = change_tiles(ctx.image, obj.shallow_image, obj.prev_prob, tile, threshold)
    else:  # the previous frame ran no shallow stages (e.g. the object's first frame): everything is new
        active = torch.ones(tile_grid(ctx.image_size, tile), dtype=torch.bool, device=ctx.image.device)
    n_active = int(active.sum())
    tiles = fresh and n_active <= DENSE_ABOVE * active.numel()
    ctx.cache[("sparse.active", obj.obj_id)] = (n_active if tiles else active.numel(), active.numel())

    def shallow(x16, score, reduced):
        feats = ctx.feats
        if tiles:
            logits, state = shallow_sparse(ctx.engine.model, x16, score, feats["layer3"], feats["layer2"],
                                           ctx.image_size, reduced, obj.shallow_state, active, tile)
        else:
            logits, state = shallow_dense(ctx.engine.model, x16, score, feats["layer3"], feats["layer2"],
                                          ctx.image_size, reduced)
        obj.shallow_state, obj.shallow_index, obj.shallow_image = state, ctx.index, ctx.image
        return logits

    return ctx.engine.run_translate(ctx, obj, tpl_s, shallow=shallow,
                                    flops=("sparse_path", tiles, n_active if tiles else -1, tile))


SPARSE = register_path(PathKind("sparse", "S", False, "the reuse path with the shallow stages on the changed tiles "
                                "only", _sparse))


@register
class SparseGatePolicy(Policy):
    name = "sparse-gate"
    summary = "the gate; its reuse frames run the shallow stages on the changed tiles only"
    paths = (COMPUTE, SPARSE)
    params = (THRESHOLD, TILE)
    needs_gate = True
    keeps_shallow_state = True

    @classmethod
    def validate(cls, tau: float, params: Mapping[str, Any]) -> None:
        if not params["threshold"] >= 0:
            raise ConfigError(f"policy sparse-gate needs --sparse-threshold >= 0, got {params['threshold']}")
        check_size((8, 8), params["tile"])

    @classmethod
    def label(cls, tau: float, params: Mapping[str, Any]) -> str:
        tile = "" if params["tile"] == DEFAULT_TILE else f"-t{params['tile']}"
        return f"sparse-gate-{params['threshold']:g}{tile}"

    @classmethod
    def owns_label(cls, label: str) -> bool:
        return re.fullmatch(r"sparse-gate-[0-9.e+-]+?(-t\d+)?", label) is not None

    def decide(self, frame: ObjectFrame) -> PathKind:
        return SPARSE if frame.p_gate > self.tau else COMPUTE
