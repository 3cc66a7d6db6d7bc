"""TTVOS as a base network (``models.ttvos``), computing what the official evaluation computes.

Per frame: the backbone once (shared by the objects) on the normalised frame, reflect-padded to a multiple of 16
as the official code pads (left / top get the larger half); per object the template attention and the decoder
(the full path: TTVOS has no gate, so every policy that needs one is refused), a softmax, the official odds
aggregation of all objects on the padded canvas, and each object's state update with its aggregated
``[1 - a, a]``. Outputs are cropped back to the frame. An object given on a later frame starts from that frame
(the official code would re-initialise it from frame 0's image, ``tests/fixtures/ttvos/DIFFERENCES.md``).

Reuse paths that need no network (copy, the flow-warped paths) run too; on such a frame the object's TTVOS
state is not updated (no features of that frame exist): the next computed frame starts from the state of the
last computed one.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from base.errors import ConfigError
from lib.engine.aggregation import channel_ids, odds_aggregate
from lib.engine.bases.base import BaseNetwork, register
from lib.engine.state import FrameContext, ObjectState
from models.fold import fold_batchnorm
from models.ttvos import TTVOS, TTVOSState, normalise_image

DIVISOR = 16
PAIR = "ttvos_pair"  # ctx.cache key: (prob as returned, padded softmax pair (1, 2, Hp, Wp)) per object
MERGED = "ttvos_merged"  # ctx.cache key: padded aggregated probability (1, 1, Hp, Wp) per object


def required_padding(height: int, width: int, divisor: int = DIVISOR) -> Tuple[int, int, int, int]:
    """(left, right, top, bottom) reflect padding to multiples of ``divisor``; left and top get the larger half."""
    pad_h, pad_w = (-height) % divisor, (-width) % divisor
    return (pad_w + 1) // 2, pad_w // 2, (pad_h + 1) // 2, pad_h // 2


def pad(x: Tensor, padding: Tuple[int, int, int, int]) -> Tensor:
    return F.pad(x, padding, mode="reflect") if any(padding) else x


def crop(x: Tensor, padding: Tuple[int, int, int, int]) -> Tensor:
    left, right, top, bottom = padding
    return x[..., top:x.shape[-2] - bottom, left:x.shape[-1] - right]


@dataclass
class TTVOSObject(ObjectState):
    """TTVOS's state of one object: the network state and the update weight W of its last computed frame."""

    state: Optional[TTVOSState] = None
    update_weight: Optional[Tensor] = None


@register
class TTVOSBase(BaseNetwork):
    """TTVOS (its backbone inside the model)."""

    name = "ttvos"
    model_type = TTVOS
    reuse = False
    channels_last = True  # HRNet-W18-small-v1 at 240x432, 2 threads: backbone 34 -> 20 ms (docs/performance.md)
    unsupported_paths = frozenset({"translate", "sparse"})

    def __init__(self, engine, model: TTVOS, backbone=None):
        if backbone is not None:
            raise ConfigError("TTVOS holds its own backbone; pass none")
        if engine.config.compile:
            raise ConfigError("--compile applies to G-FRTM only")
        if engine.config.fold_bn is not False:
            # inference on a copy whose backbone BatchNorms are folded into their convolutions (the caller's
            # model keeps its layers and keys); the same function up to float rounding
            model = copy.deepcopy(model).eval()
            fold_batchnorm(model.backbone)
        super().__init__(engine, model, None)

    def frame_features(self, image: Tensor) -> Dict[str, Tensor]:
        """Backbone features ``s16``/``s8``/``s4`` of a (1, 3, H, W) uint8 frame, normalised and padded."""
        padding = required_padding(*image.shape[-2:])
        with torch.inference_mode(), self.engine.flops.count("backbone", tuple(image.shape[-2:])), \
                self.engine.autocast():
            feats = dict(self.model.features(pad(normalise_image(image), padding)))
        return {k: v.float() for k, v in feats.items()}

    def init_object(self, obj_id: int, index: int, image: Tensor, mask: np.ndarray,
                    feats: Dict[str, Tensor]) -> TTVOSObject:
        size = tuple(image.shape[-2:])
        mask_t = torch.from_numpy(mask.astype(np.uint8)).to(self.engine.device).float()
        with self.engine.autocast():
            state = self.model.init_state(feats, pad(mask_t[None, None], required_padding(*size)))
        state = TTVOSState(prev_seg=state.prev_seg.float(), template=state.template.float(), prev_s16=state.prev_s16)
        return TTVOSObject(obj_id=obj_id, start_index=index, prev_prob=mask_t, last_compute_index=index,
                           key_image=image, key_prob=mask_t, state=state)

    def compute_features(self, ctx: FrameContext) -> Dict[str, Tensor]:
        """The features the full path reads (the frame's, computed on first use)."""
        return ctx.feats

    def decode(self, ctx: FrameContext, obj: TTVOSObject):
        """The template attention and the decoder on the frame (the full path's network part)."""
        return self.model(ctx.feats, obj.state)

    def run_compute(self, ctx: FrameContext, obj: TTVOSObject) -> Tuple[Tensor, Tensor]:
        """Template attention + decoder: probability (H, W) and the logit of object over background (1, 1, H, W)."""
        self.compute_features(ctx)  # (counted on their own)
        with self.engine.flops.count("compute_path", ctx.image_size), self.engine.autocast():
            out = self.decode(ctx, obj)
        pair = torch.softmax(out.logits.float(), dim=1)
        padding = required_padding(*ctx.image_size)
        prob = crop(pair[0, 1], padding)
        logits = crop(out.logits.float(), padding)
        ctx.cache[(PAIR, obj.obj_id)] = (prob, pair)
        obj.update_weight = out.update_weight.float()
        obj.last_compute_index = ctx.index
        return prob, (logits[:, 1:2] - logits[:, 0:1])

    def aggregate(self, ctx: Optional[FrameContext], probs: Dict[int, Tensor]) -> Tuple[Tensor, Dict[int, Tensor]]:
        """The official odds aggregation. Where every object's map is its softmax of this frame, it runs on the
        padded canvas with the softmax pairs, as the official code (its merged maps are kept for the state
        updates); otherwise on the given maps as [1 - p, p]."""
        ids = sorted(probs)
        stored = [ctx.cache.get((PAIR, i)) if ctx is not None else None for i in ids]
        if all(s is not None and s[0] is probs[i] for s, i in zip(stored, ids)):
            padding = required_padding(*ctx.image_size)
            labels, merged = odds_aggregate(torch.cat([s[1] for s in stored]))
            for k, obj_id in enumerate(ids, start=1):
                ctx.cache[(MERGED, obj_id)] = merged[k][None, None]
            labels, merged = crop(labels, padding), crop(merged, padding)
        else:
            labels, merged = odds_aggregate(torch.stack([torch.stack([1 - probs[i], probs[i]]) for i in ids]))
        return channel_ids(labels, ids), {obj_id: merged[k] for k, obj_id in enumerate(ids, start=1)}

    def needs_merged(self, obj, computed: bool) -> bool:
        return computed and obj.learns  # (after_merge's condition)

    def after_merge(self, ctx: FrameContext, obj: TTVOSObject, prob: Tensor, merged: Tensor, computed: bool) -> None:
        """A computed object's state takes its aggregated map (the mask history, the template's running
        average with the frame's W, and the frame's /16 features)."""
        if not computed or not obj.learns:
            return
        a = self.padded_merged(ctx, obj, merged)
        with self.engine.flops.count("state_update", ctx.image_size), self.engine.autocast():
            state = self.model.update(ctx.feats, torch.cat([1 - a, a], dim=1), obj.state, obj.update_weight)
        obj.state = TTVOSState(prev_seg=state.prev_seg.float(), template=state.template.float(),
                               prev_s16=state.prev_s16)

    @staticmethod
    def padded_merged(ctx: FrameContext, obj: TTVOSObject, merged: Tensor) -> Tensor:
        """The object's aggregated map on the padded canvas (1, 1, Hp, Wp)."""
        a = ctx.cache.get((MERGED, obj.obj_id))
        return a if a is not None else pad(merged[None, None].float(), required_padding(*ctx.image_size))
