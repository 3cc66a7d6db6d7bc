"""Flow-warped reuse (GSVNet-style): the ``warp`` path and its two policies, ``warp-every-k`` and ``warp-error``.

On a warp frame no network runs, not even the backbone: the object's last computed probability map is
carried to the frame by DIS optical flow and corrected with a guided filter on the current frame, or with the
learned guided spatially-varying convolution (``--warp-refine learned``, weights ``--warp-corrector``)
(:mod:`lib.engine.warp`). The decision must be as cheap: ``warp-every-k`` computes every k-th frame
(GSVNet's key-frame schedule); ``warp-error`` warps iff the warp's confidence, 1 - the mean photometric
error around the object (grey levels in [0, 1]), is > tau, else computes. Neither runs template matching or
the gate, and the target model learns only on computed frames.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional

import numpy as np
import torch

from base.errors import ConfigError
from lib.engine.paths import COMPUTE, PathKind, register_path
from lib.engine.policies import register
from lib.engine.policies.base import ObjectFrame, Param, Policy
from lib.engine.policies.every_k import EveryKPolicy
from lib.engine.warp import (
    FLOW_SCALE,
    REFINEMENTS,
    Correction,
    Warp,
    dis_flops,
    dis_flow,
    guide_image,
    small_gray,
    warp_object,
    warp_object_flops,
)
from lib.tools.checkpoint import WARP_CORRECTOR_KIND, cached_module

if TYPE_CHECKING:  # pragma: no cover
    from lib.engine.state import FrameContext, ObjectState

SHIPPED_CORRECTOR = Path(__file__).resolve().parents[3] / "weights" / "warp_corrector_dv2016_cpu.pth"
REFINE = Param("refine", "--warp-refine", str, "learned",
               "correction of the warped map: learned (default: the trained guided spatially-varying convolution "
               "of --warp-corrector, better than the guided filter on every measurement, README), guided (a guided "
               "filter on the current frame) or none", "R")
CORRECTOR = Param("corrector", "--warp-corrector", str, str(SHIPPED_CORRECTOR),
                  "weights of --warp-refine learned (train.py --stage warp-corrector; default: the shipped "
                  "weights/warp_corrector_dv2016_cpu.pth)", "PATH")


def _image_rgb(image: torch.Tensor) -> np.ndarray:
    return image[0].permute(1, 2, 0).cpu().numpy()


def _frame_rgb(ctx: FrameContext) -> np.ndarray:
    if ctx.image is None:
        raise ConfigError(f"frame {ctx.index}: the warp path needs the frame itself (the session was given features)")
    if "warp.rgb" not in ctx.cache:
        ctx.cache["warp.rgb"] = _image_rgb(ctx.image)
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
        key_rgb = _image_rgb(obj.key_image)
        key_small = small_gray(key_rgb, FLOW_SCALE)
        ctx.cache[flow_key] = key_rgb, key_small, dis_flow(current, key_small)
        ctx.engine.flops.add("warp_flow", dis_flops(current.shape))
    key_rgb, key_small, flow = ctx.cache[flow_key]
    values = ctx.policy.values if ctx.policy is not None else {}
    correction = Correction(values.get("refine", REFINE.default))
    if correction.mode == "guided":
        if "warp.guide" not in ctx.cache:
            ctx.cache["warp.guide"] = guide_image(rgb)
        correction.guide = ctx.cache["warp.guide"]
    elif correction.mode == "learned":
        correction.corrector = cached_module(WARP_CORRECTOR_KIND, values.get("corrector", CORRECTOR.default),
                                             str(obj.key_prob.device))
        correction.current_rgb, correction.key_rgb = rgb, key_rgb
    key_prob = obj.key_prob.float().cpu().numpy()
    if correction.mode == "learned":
        with ctx.engine.flops.count("warp_correction", ctx.image_size):
            result = warp_object(current, key_small, flow, key_prob, correction)
        taps = correction.corrector.kernel ** 2
        ctx.engine.flops.add("warp_correction", 2 * taps * ctx.image_size[0] * ctx.image_size[1])
    else:
        result = warp_object(current, key_small, flow, key_prob, correction)
    ctx.engine.flops.add("warp_object", warp_object_flops(ctx.image_size, current.shape, correction.mode))
    ctx.cache[("warp", obj.obj_id)] = result
    return result


def _warp(ctx: FrameContext, obj: ObjectState, tpl_s):
    warp = object_warp(ctx, obj)
    ctx.measure(obj.obj_id, "warp_error", warp.error)
    prob = torch.from_numpy(warp.prob).to(obj.key_prob.device)
    return prob, None


WARP = register_path(PathKind("warp", "W", False, "the last computed probability map warped by optical flow "
                              "(no network runs)", _warp))


def _refine_suffix(params: Mapping[str, Any]) -> str:
    return "" if params["refine"] == "guided" else f"-{params['refine']}"


class _WarpPolicy(Policy):
    paths = (COMPUTE, WARP)
    needs_matching = False

    @classmethod
    def validate(cls, tau: float, params: Mapping[str, Any]) -> None:
        if params["refine"] not in REFINEMENTS:
            raise ConfigError(f"policy {cls.name}: --warp-refine must be one of {', '.join(REFINEMENTS)}, "
                              f"got {params['refine']!r}")
        if params["refine"] == "learned":
            cached_module(WARP_CORRECTOR_KIND, str(params["corrector"]), "cpu")  # a bad file fails here


@register
class WarpEveryKPolicy(_WarpPolicy):
    name = "warp-every-k"
    summary = "compute every k-th frame, warp the others by optical flow"
    params = (EveryKPolicy.params[0], REFINE, CORRECTOR)
    uses_tau = False

    @classmethod
    def validate(cls, tau: float, params: Mapping[str, Any]) -> None:
        EveryKPolicy.validate(tau, params)
        super().validate(tau, params)

    @classmethod
    def label(cls, tau: float, params: Mapping[str, Any]) -> str:
        return f"warp-every-{params['k']}" + _refine_suffix(params)

    @classmethod
    def owns_label(cls, label: str) -> bool:
        return re.fullmatch(r"warp-every-(k|\d+)(-none|-learned)?", label) is not None

    @classmethod
    def point_label(cls, label: str) -> str:
        return "k=" + label.split("-")[2]

    @classmethod
    def curve(cls, label: str) -> str:
        """One curve per correction: ``warp-every-k`` (guided), ``warp-every-k-none``, ``warp-every-k-learned``."""
        variant = label.split("-")[3:]
        return cls.name + "".join("-" + v for v in variant)

    def decide(self, frame: ObjectFrame) -> PathKind:
        return COMPUTE if frame.frames_since_compute >= self.values["k"] else WARP


@register
class WarpErrorPolicy(_WarpPolicy):
    name = "warp-error"
    summary = "warp iff 1 - the warp's photometric error around the object > tau, else compute"
    params = (REFINE, CORRECTOR)

    @classmethod
    def label(cls, tau: float, params: Mapping[str, Any]) -> str:
        return "warp-error" + _refine_suffix(params)

    @classmethod
    def owns_label(cls, label: str) -> bool:
        return label in ("warp-error", "warp-error-none", "warp-error-learned")

    @classmethod
    def curve(cls, label: str) -> str:
        return label  # one curve (over tau) per correction

    def measure(self, ctx: FrameContext, obj: ObjectState) -> Optional[float]:
        return 1.0 - object_warp(ctx, obj).error

    def decide(self, frame: ObjectFrame) -> PathKind:
        assert frame.cue is not None, "warp-error decides from its measured confidence"
        return WARP if frame.cue > self.tau else COMPUTE
