"""G-TTVOS as a base network (``models.gttvos``): TTVOS with the reuse gate and a reuse path.

Everything a computed frame does is TTVOS's (:class:`~lib.engine.bases.ttvos.TTVOSBase`): at tau 1 the masks are
TTVOS's. What G-TTVOS adds, per tracked object and frame:

* before the decision, the placement's prefix of the backbone (``frame``: the stem; ``s16``: the backbone to s8,
  all of it with HRNet), once per frame (:meth:`GTTVOSBase.frame_features`), and the dissimilarity ``D``
  against the object's last computed frame and P_gate (:meth:`GTTVOSBase.match`);
* the compute path completes the backbone (once per frame, whichever objects compute) and runs TTVOS, keeping
  the decoder state the translator will start from;
* the reuse path (:meth:`GTTVOSBase.run_translate`): the delta-generator, the translator and the rest of the
  decoder of the placement. On such a frame (and on a copy or warp frame) the object's TTVOS state takes the
  frame's mask into its mask history (``EngineConfig.reuse_state``: ``mask`` by default; ``keep`` leaves it as
  the last computed frame left it, ``full`` runs TTVOS's whole update, placement ``s16`` only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from base.errors import ConfigError
from lib.engine.bases.base import register
from lib.engine.bases.ttvos import PAIR, TTVOSBase, TTVOSObject, crop, pad, required_padding
from lib.engine.state import FrameContext
from models.gttvos import GTTVOS, ReuseState
from models.ttvos import RefineOutput, TTVOSState, normalise_image, pool_mask

LT = "gttvos_lt"  # ctx.cache key: (object id) -> the template attention's output (placement s16's D)


@dataclass
class GTTVOSObject(TTVOSObject):
    """TTVOS's object state plus the reuse state of its last computed frame."""

    reuse: Optional[ReuseState] = None
    pending: Optional[RefineOutput] = None  # this frame's compute-path decoder output, kept until the merge
    reuse_weight: Optional[Tensor] = None  # W of this frame's reuse-path decoder (placement s16; --reuse-state full)


def _floats(reuse: ReuseState) -> ReuseState:
    return ReuseState(*(None if t is None else t.float() for t in (reuse.template, reuse.prev_prob8, reuse.decoder,
                                                                     reuse.stem8)))


@register
class GTTVOSBase(TTVOSBase):
    """G-TTVOS (TTVOS and its reuse modules, its backbone inside the model)."""

    name = "gttvos"
    model_type = GTTVOS
    reuse = True
    unsupported_paths = frozenset({"sparse"})  # the sparse path re-runs G-FRTM's shallow refiner stages
    reuse_states = frozenset({"keep", "mask", "full"})
    # held-out and bundled val at 360x640, the shipped model: tau 0.6 reuses 0.48 / 0.83 of the object-frames with
    # J&F 0.391 / 0.642 (keep) against 0.411 / 0.665 (mask); docs/gttvos.md
    default_reuse_state = "mask"

    def __init__(self, engine, model: GTTVOS, backbone=None):
        if engine.reuse_state == "full" and model.placement != "s16":
            raise ConfigError(f"--reuse-state full needs G-TTVOS placement s16: a reused frame of placement "
                              f"{model.placement} has no /8 features to update the template with")
        super().__init__(engine, model, backbone)

    def frame_features(self, image: Tensor) -> Dict[str, Tensor]:
        """The placement's prefix of a (1, 3, H, W) uint8 frame, normalised and padded; the rest of the backbone
        runs when a path needs it (:meth:`full_features`)."""
        padding = required_padding(*image.shape[-2:])
        with torch.inference_mode(), self.engine.flops.count("backbone_prefix", tuple(image.shape[-2:])), \
                self.engine.autocast():
            feats = dict(self.model.prefix(pad(normalise_image(image), padding)))
        return {k: v.float() for k, v in feats.items()}

    def full_features(self, feats: Dict[str, Tensor], image_size) -> Dict[str, Tensor]:
        """Add the rest of the backbone's features to ``feats`` (in place, at most once per frame)."""
        if "s8" not in feats or "s16" not in feats:
            with torch.inference_mode(), self.engine.flops.count("backbone_rest", tuple(image_size)), \
                    self.engine.autocast():
                done = set(feats)
                self.model.complete(feats)
            for key in set(feats) - done:
                feats[key] = feats[key].float()
        return feats

    def prepare_init(self, feats: Dict[str, Tensor], image_size) -> None:
        self.full_features(feats, image_size)

    def init_object(self, obj_id: int, index: int, image: Tensor, mask: np.ndarray,
                    feats: Dict[str, Tensor]) -> GTTVOSObject:
        base = super().init_object(obj_id, index, image, mask, feats)
        mask_t = pad(base.key_prob[None, None].float(), required_padding(*image.shape[-2:]))
        with self.engine.autocast():
            reuse = self.model.init_reuse(feats, mask_t, base.state)
        return GTTVOSObject(**vars(base), reuse=_floats(reuse))

    def match(self, ctx: FrameContext, obj: GTTVOSObject, gate: bool) -> Tuple[Tensor, Optional[float]]:
        """D of ``obj`` against its last computed frame and, with ``gate``, P_gate."""
        feats = ctx.feats
        with self.engine.flops.count("template_matching_gate", ctx.image_size), self.engine.autocast():
            dissimilarity = self.model.match(feats, obj.state, obj.reuse)
            p_gate = (float(self.model.reuse_probability(self.model.gate_logits(dissimilarity).float())[0])
                      if gate else None)
        if self.model.placement == "s16":
            ctx.cache[(LT, obj.obj_id)] = dissimilarity
        return dissimilarity, p_gate

    def compute_features(self, ctx: FrameContext) -> Dict[str, Tensor]:
        return self.full_features(ctx.feats, ctx.image_size)

    def decode(self, ctx: FrameContext, obj: GTTVOSObject):
        out = self.model(ctx.feats, obj.state, lt=ctx.cache.get((LT, obj.obj_id)))
        obj.pending = out
        return out

    def run_translate(self, ctx: FrameContext, obj: GTTVOSObject, tpl_s: Tensor, **kwargs) -> Tuple[Tensor, Tensor]:
        """The reuse path: probability (H, W) and the logit of object over background (1, 1, H, W)."""
        with self.engine.flops.count("reuse_path", ctx.image_size), self.engine.autocast():
            out, _ = self.model.reuse(ctx.feats, obj.reuse, tpl_s)
        pair = torch.softmax(out.logits.float(), dim=1)
        padding = required_padding(*ctx.image_size)
        prob = crop(pair[0, 1], padding)
        logits = crop(out.logits.float(), padding)
        ctx.cache[(PAIR, obj.obj_id)] = (prob, pair)
        if self.model.placement == "s16":
            obj.reuse_weight = out.update_weight.float()
        return prob, (logits[:, 1:2] - logits[:, 0:1])

    def needs_merged(self, obj, computed: bool) -> bool:
        return obj.learns and (computed or self.engine.reuse_state != "keep")  # (after_merge's conditions)

    def after_merge(self, ctx: FrameContext, obj: GTTVOSObject, prob: Tensor, merged: Tensor, computed: bool) -> None:
        """A computed object: TTVOS's state update, and its reuse state becomes this frame's (decoder state and
        aggregated map pooled to /8)."""
        super().after_merge(ctx, obj, prob, merged, computed)
        if computed and obj.learns and obj.pending is not None:
            a = self.padded_merged(ctx, obj, merged)
            with self.engine.flops.count("reuse_state", ctx.image_size), self.engine.autocast():
                obj.reuse = _floats(self.model.computed(obj.reuse, obj.pending, a, ctx.feats))
        elif not computed and obj.learns and obj.start_index < ctx.index and self.engine.reuse_state != "keep":
            self.update_on_reuse(ctx, obj, self.padded_merged(ctx, obj, merged))
        obj.pending = obj.reuse_weight = None

    def update_on_reuse(self, ctx: FrameContext, obj: GTTVOSObject, a: Tensor) -> None:
        """``--reuse-state mask``: the reused frame's aggregated map ``a`` (1, 1, Hp, Wp) enters the mask history;
        ``full`` (after a reuse-path frame of placement s16): TTVOS's whole update with the reuse path's W."""
        pair = torch.cat([1 - a, a], dim=1)
        state = obj.state
        full = self.engine.reuse_state == "full" and obj.reuse_weight is not None
        feats = self.full_features(ctx.feats, ctx.image_size) if full else None  # (counted on their own)
        with self.engine.flops.count("state_update_on_reuse", ctx.image_size), self.engine.autocast():
            if full:
                new = self.model.update(feats, pair, state, obj.reuse_weight)
            else:
                prev_seg = torch.cat([pool_mask(pair), state.prev_seg[:, 0:4]], dim=1)
                new = TTVOSState(prev_seg=prev_seg, template=state.template, prev_s16=state.prev_s16)
        obj.state = TTVOSState(prev_seg=new.prev_seg.float(), template=new.template.float(), prev_s16=new.prev_s16)
