"""Sparse refinement (SpVOS-style): the ``sparse`` path and the ``sparse-gate`` policy.

The ``sparse`` path is the paper's reuse path (delta-generator, refine-translator) whose shallow stages and
upsampler run only on the tiles that changed (:mod:`lib.engine.sparse`): a tile is active when the frame's mean
absolute grey-level change from the previous frame there is > ``--sparse-threshold`` or the object's previous
mask boundary passes through it; the other tiles keep the previous frame's maps. With ``--sparse-select learned``
a learned tile gate (SpVOS-style, :class:`models.tile_gate.TileGate`, trained by ``train.py --stage tile-gate``)
decides instead, from per-tile measurements of the same frames and mask. ``sparse-gate`` is the paper's gate
with this path in place of the translate path: sparse iff P_gate > tau, else compute. When more than
:data:`DENSE_ABOVE` of the tiles are active, or the previous frame left no maps, the shallow stages run densely.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch

from base.errors import ConfigError
from lib.engine.paths import COMPUTE, PathKind, register_path
from lib.engine.policies import register
from lib.engine.policies.base import ObjectFrame, Param, Policy
from lib.engine.sparse import (
    change_tiles,
    check_size,
    shallow_dense,
    shallow_sparse,
    tile_features,
    tile_grid,
)
from lib.tools.checkpoint import TILE_GATE_KIND, cached_module

if TYPE_CHECKING:  # pragma: no cover
    from lib.engine.state import FrameContext, ObjectState

DEFAULT_TILE = 64
# Above this fraction of active tiles the path runs the shallow stages densely (the same maps as every tile
# active, up to rounding): with 64-pixel tiles every tile active costs 2.9x the dense FLOPs (the halos; 1.9-2.2x
# with 128-pixel tiles), so tiles pay only below about a third of the frame.
DENSE_ABOVE = 1 / 3
THRESHOLD = Param("threshold", "--sparse-threshold", float, 0.02,
                  "a tile is recomputed when its mean grey-level change (0..1) exceeds this", "T")
TILE = Param("tile", "--sparse-tile", int, DEFAULT_TILE, "tile side in pixels of the network input (multiple of 8)",
             "PX")
SELECTIONS = ("change", "learned")
SELECT = Param("select", "--sparse-select", str, "change",
               "which tiles are recomputed: change (grey-level change > --sparse-threshold, or the mask boundary) or "
               "learned (the tile gate of --tile-gate)", "RULE")
SHIPPED_TILE_GATE = Path(__file__).resolve().parents[3] / "weights" / "tile_gate_dv2016_cpu.pth"
TILE_GATE = Param("tile_gate", "--tile-gate", str, str(SHIPPED_TILE_GATE),
                  "weights of --sparse-select learned (train.py --stage tile-gate; default: the shipped "
                  "weights/tile_gate_dv2016_cpu.pth)", "PATH")


REFERENCE = "reference"  # key of the shallow state: (1, 3, H, W) uint8, per tile the image of its maps


def paste_tiles(reference: torch.Tensor, image: torch.Tensor, active: torch.Tensor, tile: int) -> torch.Tensor:
    """``reference`` with the ``active`` tiles (rows, cols) taken from ``image`` (both (1, C, H, W))."""
    h, w = image.shape[-2:]
    mask = active.repeat_interleave(tile, 0).repeat_interleave(tile, 1)[:h, :w]
    return torch.where(mask, image, reference)


def learned_tiles(ctx: FrameContext, obj: ObjectState, tile: int, path: str, reference: torch.Tensor) -> torch.Tensor:
    """The tile gate's decisions (rows, cols) bool: compute iff its logit > 0 (SpVOS's argmax). ``reference``:
    (1, 3, H, W) uint8, per tile the image its maps were computed from."""
    gate = cached_module(TILE_GATE_KIND, path, str(ctx.image.device))
    features = tile_features(ctx.image, reference, obj.prev_prob, tile)
    with torch.inference_mode(), ctx.engine.flops.count("tile_gate", ctx.image_size, tile):
        return gate(features)[0, 0] > 0


def _sparse(ctx: FrameContext, obj: ObjectState, tpl_s):
    assert tpl_s is not None, "the sparse path needs template matching (Policy.needs_matching)"
    if ctx.image is None:
        raise ConfigError(f"frame {ctx.index}: the sparse path needs the frame itself (the session was given "
                          "features)")
    values = ctx.policy.values if ctx.policy is not None else {}
    tile, threshold = values.get("tile", DEFAULT_TILE), values.get("threshold", THRESHOLD.default)
    check_size(ctx.image_size, tile)
    fresh = obj.shallow_state is not None and obj.shallow_index == ctx.index - 1 and obj.shallow_image is not None
    learned = values.get("select", "change") == "learned"
    reference = None
    if fresh and learned:
        # a reused tile keeps older maps: its change is measured against the image they came from
        reference = obj.shallow_state.get(REFERENCE, obj.shallow_image)
        active = learned_tiles(ctx, obj, tile, values.get("tile_gate", TILE_GATE.default), reference)
    elif fresh:
        active = change_tiles(ctx.image, obj.shallow_image, obj.prev_prob, tile, threshold)
    else:  # the previous frame ran no shallow stages (e.g. the object's first frame): everything is new
        active = torch.ones(tile_grid(ctx.image_size, tile), dtype=torch.bool, device=ctx.image.device)
    n_active = int(active.sum())
    tiles = fresh and n_active <= DENSE_ABOVE * active.numel()
    ctx.measure(obj.obj_id, "active_tiles", (n_active if tiles else active.numel()) / active.numel())

    def shallow(x16, score, reduced):
        feats = ctx.feats
        if tiles:
            logits, state = shallow_sparse(ctx.engine.model, x16, score, feats["layer3"], feats["layer2"],
                                           ctx.image_size, reduced, obj.shallow_state, active, tile)
            if reference is not None:
                state[REFERENCE] = paste_tiles(reference, ctx.image, active, tile)
        else:
            logits, state = shallow_dense(ctx.engine.model, x16, score, feats["layer3"], feats["layer2"],
                                          ctx.image_size, reduced)
        obj.shallow_state, obj.shallow_index, obj.shallow_image = state, ctx.index, ctx.image
        return logits

    return ctx.engine.base.run_translate(ctx, obj, tpl_s, shallow=shallow,
                                    flops=("sparse_path", tiles, n_active if tiles else -1, tile))


SPARSE = register_path(PathKind("sparse", "S", False, "the reuse path with the shallow stages on the changed tiles "
                                "only", _sparse))


@register
class SparseGatePolicy(Policy):
    name = "sparse-gate"
    summary = "the gate; its reuse frames run the shallow stages on the changed tiles only"
    paths = (COMPUTE, SPARSE)
    params = (THRESHOLD, TILE, SELECT, TILE_GATE)
    needs_gate = True
    keeps_shallow_state = True

    @classmethod
    def validate(cls, tau: float, params: Mapping[str, Any]) -> None:
        if not params["threshold"] >= 0:
            raise ConfigError(f"policy sparse-gate needs --sparse-threshold >= 0, got {params['threshold']}")
        check_size((8, 8), params["tile"])
        if params["select"] not in SELECTIONS:
            raise ConfigError(f"policy sparse-gate: --sparse-select must be one of {', '.join(SELECTIONS)}, got "
                              f"{params['select']!r}")
        if params["select"] == "learned":
            gate = cached_module(TILE_GATE_KIND, str(params["tile_gate"]), "cpu")  # a bad file fails here
            if gate.tile != params["tile"]:
                raise ConfigError(f"{params['tile_gate']}: the tile gate was trained for {gate.tile}-pixel tiles; "
                                  f"pass --sparse-tile {gate.tile}")

    @classmethod
    def label(cls, tau: float, params: Mapping[str, Any]) -> str:
        tile = "" if params["tile"] == DEFAULT_TILE else f"-t{params['tile']}"
        if params["select"] == "learned":
            return f"sparse-gate-learned{tile}"
        return f"sparse-gate-{params['threshold']:g}{tile}"

    @classmethod
    def owns_label(cls, label: str) -> bool:
        return re.fullmatch(r"sparse-gate-([0-9.e+-]+?|learned)(-t\d+)?", label) is not None

    @classmethod
    def curve(cls, label: str) -> str:
        return label  # one curve (over tau) per tile rule

    def decide(self, frame: ObjectFrame) -> PathKind:
        return SPARSE if frame.p_gate > self.tau else COMPUTE
