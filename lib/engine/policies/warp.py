"""Flow-warped reuse (GSVNet-style): the ``warp`` path and its two policies, ``warp-every-k`` and ``warp-error``.

On a warp frame no network runs, not even the backbone: the object's last computed probability map is
carried to the frame by DIS optical flow and corrected with a guided filter on the current frame
(:mod:`lib.engine.warp`). The decision must be as cheap: ``warp-every-k`` computes every k-th frame
(GSVNet's key-frame schedule); ``warp-error`` warps iff the warp's confidence, 1 - the mean photometric
error around the object (grey levels in [0, 1]), is > tau, else computes. Neither runs template matching or
the gate, and the target model learns only on computed frames.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Mapping, Optional

import numpy as np
import torch

from base.errors import ConfigError
from lib.engine.paths import COMPUTE, PathKind, register_path
from lib.engine.policies import register
from lib.engine.policies.base import ObjectFrame, Param, Policy
from lib.engine.policies.every_k import EveryKPolicy
from lib.engine.warp import FLOW_SCALE, REFINEMENTS, Warp, dis_flow, small_gray, warp_object

if TYPE_CHECKING:  # pragma: no cover
    from lib.engine.core import FrameContext, ObjectState

REFINE = Param("refine", "--warp-refine", str, "guided",
               "correction of the warped map: guided (a guided filter on the current frame) or none", "R")


def _frame_rgb(ctx: FrameContext) -> np.ndarray:
    if ctx.image is None:
        raise ConfigError(f"frame {ctx.index}: the warp path needs the frame itself (the session was given features)")
    if "warp.rgb" not in ctx.cache:
        ctx.cache["warp.rgb"] = ctx.image[0].permute(1, 2, 0).cpu().numpy()
    return ctx.cache["warp.rgb"]


def object_warp(ctx: FrameContext, obj: ObjectState) -> Warp:
    """``obj``'s key-frame probability warped to this frame (computed once per object and frame; the flow once
    per key frame, so objects computed on the same frame share it)."""
    cached = ctx.cache.get(("warp", obj.obj_id))
    if cached is not None:
        return cached
    if obj.key_image is None or obj.key_prob is None:
        raise ConfigError(f"object {obj.obj_id}: the warp path needs its last computed frame's image, which a "
                          "restored object does not have")
    rgb = _frame_rgb(ctx)
    if "warp.small" not in ctx.cache:
        ctx.cache["warp.small"] = small_gray(rgb, FLOW_SCALE)
    current = ctx.cache["warp.small"]
    flow_key = ("warp.flow", obj.last_compute_index)
    if flow_key not in ctx.cache:
        key_small = small_gray(obj.key_image[0].permute(1, 2, 0).cpu().numpy(), FLOW_SCALE)
        ctx.cache[flow_key] = key_small, dis_flow(current, key_small)
    key_small, flow = ctx.cache[flow_key]
    refine = ctx.policy.values.get("refine", "guided") if ctx.policy is not None else "guided"
    guide = None
    if refine == "guided":
        if "warp.guide" not in ctx.cache:
            ctx.cache["warp.guide"] = small_gray(rgb, 1).astype(np.float32) / 255.0
        guide = ctx.cache["warp.guide"]
    result = warp_object(current, key_small, flow, obj.key_prob.float().cpu().numpy(), guide)
    ctx.cache[("warp", obj.obj_id)] = result
    return result


def _warp(ctx: FrameContext, obj: ObjectState, tpl_s):
    prob = torch.from_numpy(object_warp(ctx, obj).prob).to(obj.key_prob.device)
    return prob, None


WARP = register_path(PathKind("warp", "W", False, "the last computed probability map warped by optical flow "
                              "(no network runs)", _warp))


class _WarpPolicy(Policy):
    paths = (COMPUTE, WARP)
    needs_matching = False

    @classmethod
    def validate(cls, tau: float, params: Mapping[str, Any]) -> None:
        if params["refine"] not in REFINEMENTS:
            raise ConfigError(f"policy {cls.name}: --warp-refine must be one of {', '.join(REFINEMENTS)}, "
                              f"got {params['refine']!r}")


@register
class WarpEveryKPolicy(_WarpPolicy):
    name = "warp-every-k"
    summary = "compute every k-th frame, warp the others by optical flow"
    params = (EveryKPolicy.params[0], REFINE)
    uses_tau = False

    @classmethod
    def validate(cls, tau: float, params: Mapping[str, Any]) -> None:
        EveryKPolicy.validate(tau, params)
        super().validate(tau, params)

    @classmethod
    def label(cls, tau: float, params: Mapping[str, Any]) -> str:
        return f"warp-every-{params['k']}" + ("" if params["refine"] == "guided" else f"-{params['refine']}")

    @classmethod
    def owns_label(cls, label: str) -> bool:
        return re.fullmatch(r"warp-every-(k|\d+)(-none)?", label) is not None

    @classmethod
    def point_label(cls, label: str) -> str:
        return "k=" + label.split("-")[2]

    def decide(self, frame: ObjectFrame) -> PathKind:
        return COMPUTE if frame.frames_since_compute >= self.values["k"] else WARP


@register
class WarpErrorPolicy(_WarpPolicy):
    name = "warp-error"
    summary = "warp iff 1 - the warp's photometric error around the object > tau, else compute"
    params = (REFINE,)

    @classmethod
    def label(cls, tau: float, params: Mapping[str, Any]) -> str:
        return "warp-error" + ("" if params["refine"] == "guided" else f"-{params['refine']}")

    @classmethod
    def owns_label(cls, label: str) -> bool:
        return label in ("warp-error", "warp-error-none")

    def measure(self, ctx: FrameContext, obj: ObjectState) -> Optional[float]:
        return 1.0 - object_warp(ctx, obj).error

    def decide(self, frame: ObjectFrame) -> PathKind:
        assert frame.cue is not None, "warp-error decides from its measured confidence"
        return WARP if frame.cue > self.tau else COMPUTE
