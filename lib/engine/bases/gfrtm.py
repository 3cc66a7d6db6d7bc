"""G-FRTM as a base network: the frozen ResNet, the online target model and the learned modules.

Per frame (official semantics; docs/performance.md says where this saves work):

1. stride-8 backbone features (``layer1..layer3``) once per frame (:meth:`GFRTMBase.frame_features`);
2. an object starting on the frame (:meth:`GFRTMBase.init_object`): the deep backbone runs (once per frame,
   :meth:`GFRTMBase.prepare_init`), the target model is trained on the augmented frame (GN/CG), the template is
   made from ``layer3`` and the mask, the initial score is the mask nearest-resized to the stride-16 grid, and
   the deep refined feature is the refiner's deep stages on the target model's score;
3. a tracked object: template matching against its previous score gives ``tplS`` and P_gate
   (:meth:`GFRTMBase.match`); the full path (:meth:`GFRTMBase.run_compute`) or the reuse path
   (:meth:`GFRTMBase.run_translate`: delta-generator, refine-translator, shallow stages);
4. soft aggregation of the objects (:meth:`GFRTMBase.aggregate`); the target models of the computed objects learn
   from their merged soft masks (:meth:`GFRTMBase.after_merge`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Hashable, List, Mapping, Optional, Tuple
from typing import Sequence as Seq

import numpy as np
import torch
from torch import Tensor

from base.errors import ConfigError
from lib.engine.aggregation import channel_ids, soft_aggregate, soft_labels
from lib.engine.augment import augment_first_frame
from lib.engine.bases.base import BaseNetwork, register
from lib.engine.sparse import shallow_dense
from lib.engine.state import FrameContext, ObjectState
from models.backbone import FeatureExtractor
from models.gfrtm import GFRTM, nearest_resize
from models.target_model import MIN_OBJECT_PIXELS, OnlineTargetModel, TargetModel


@dataclass
class GFRTMObject(ObjectState):
    """G-FRTM's state of one object: its online target model, template, and last computed score and deep
    refined feature (the reuse path's starting point)."""

    target: Optional[OnlineTargetModel] = None
    template: Optional[Tensor] = None  # (1, 64, 64)
    prev_score: Optional[Tensor] = None  # (1, 1, H16, W16) score of the last computed frame
    prev_refine: Optional[Tensor] = None  # (1, 64, H16, W16) deep refined feature of the last computed frame


@register
class GFRTMBase(BaseNetwork):
    """G-FRTM on its frozen ResNet feature extractor."""

    name = "gfrtm"
    model_type = GFRTM
    reuse = True
    needs_backbone = True
    # under bf16 autocast NHWC saves oneDNN's layout conversions: a computed frame at 360x640, 2-core AMX Xeon,
    # 106 -> 89-99 ms (in float32 NHWC measured within noise of NCHW)
    channels_last_amp = True

    def __init__(self, engine, model: GFRTM, backbone: Optional[FeatureExtractor] = None):
        if backbone is None:
            raise ConfigError("G-FRTM needs its backbone (a FeatureExtractor)")
        super().__init__(engine, model, backbone)
        self.in_channels = backbone.channels["layer4"]
        compiled = engine.config.compile
        wrap = engine.compiled
        self._forward_f8 = wrap(backbone.forward_f8) if "backbone" in compiled else backbone.forward_f8
        self._forward_deep = wrap(backbone.forward_deep) if "backbone" in compiled else backbone.forward_deep
        self._shallow = wrap(model.shallow) if "refiner" in compiled else model.shallow

    def deep(self, ctx: FrameContext) -> Dict[str, Tensor]:
        """The frame's features with ``layer4`` / ``layer5``, computed on first use (once per frame)."""
        return self.deep_features(ctx.feats, ctx.image_size)

    def reduced(self, ctx: FrameContext) -> Dict[str, Tensor]:
        """The refiner's shallow-stage reductions of the frame, computed on first use (once per frame, whichever
        objects and paths need them)."""
        return self.shallow_reductions(ctx.feats, ctx.reduced, ctx.image_size)

    def prepare_init(self, feats: Dict[str, Tensor], image_size) -> None:
        self.deep_features(feats, image_size)

    def target_score(self, target: OnlineTargetModel, layer4: Tensor) -> Tensor:
        """The target model's score (1, 1, H16, W16) of ``layer4``; the sample is kept for later CG runs."""
        with torch.inference_mode(False):  # the target model stores the projected sample for later CG runs
            return target.apply(layer4.float().clone())

    # --- object initialisation ----------------------------------------------------------------

    def new_target_model(self) -> TargetModel:
        """A target model with random initial weights drawn under ``config.seed`` (global RNG untouched).

        Every object starts from the same weights; ``torch.manual_seed(seed)`` followed by
        ``TargetModel(C4, c)`` draws them, exactly as the official code does when seeded right before
        creating its target model.
        """
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.engine.config.seed)
            return TargetModel(self.in_channels, self.engine.config.target.c_channels).to(self.engine.device)

    def init_object(self, obj_id: int, index: int, image: Tensor, mask: np.ndarray,
                    feats: Dict[str, Tensor]) -> ObjectState:
        """Initialise one object on frame ``index`` from its given mask.

        Args:
            image: (1, 3, H, W) uint8 frame; mask: (H, W) binary; feats: all five backbone features
                of the frame.
        """
        cfg = self.engine.config.target
        mask_t = torch.from_numpy(mask.astype(np.uint8))
        rng = np.random.default_rng(self.engine.config.seed)
        aug_images, aug_labels = augment_first_frame(image[0].cpu(), mask_t, cfg.num_aug, rng)
        # Sample 0 is the frame itself, whose layer4 is already computed. The synthetic copies go through
        # the backbone one at a time and only to stride 16 (the official code runs the whole backbone on
        # the batch of all K): the same features (bit for bit on the CPU measured), and on a 2-core CPU a
        # batch of 4 full-size frames took 1.5-2.3x as long as 4 frames one after the other.
        device = self.engine.device
        with self.engine.autocast():
            aug_feats = torch.cat([feats["layer4"]] + [self.backbone.forward_layer4(aug_images[k:k + 1].to(device))
                                                       for k in range(1, aug_images.shape[0])])
        with torch.inference_mode(False):
            target = OnlineTargetModel(self.new_target_model(), cfg)
            target.init(aug_feats.float().clone(), aug_labels.to(self.engine.device).float())
        score = self.target_score(target, feats["layer4"])
        mask4 = mask_t[None, None].to(self.engine.device)
        with self.engine.autocast():
            template = self.model.make_template(feats["layer3"], mask4)
            prev_refine = self.model.deep(score, feats["layer5"], feats["layer4"])
        prev_score = nearest_resize(mask4, feats["layer4"].shape[-2:])
        return GFRTMObject(
            obj_id=obj_id, start_index=index, target=target, template=template.float(),
            prev_score=prev_score, prev_refine=prev_refine.float(),
            prev_prob=mask_t.to(self.engine.device).float(), last_compute_index=index,
            key_image=image, key_prob=mask_t.to(self.engine.device).float(),
        )

    def restore_object(self, obj_id: int, start_index: int, template: Tensor, prev_score: Tensor,
                       prev_refine: Tensor, target_weights: Mapping[str, Tensor], prev_prob: Tensor,
                       last_compute_index: Optional[int] = None) -> ObjectState:
        """An object's state built from given tensors instead of :meth:`init_object`.

        For resuming from a known state (e.g. the official code's state after its first-frame
        initialisation, in the equivalence tests). The target model gets ``target_weights`` but no
        sample memory, so it scores frames but is **not updated online** (``learns`` is False): on
        computed frames the merged mask is not stored and no CG runs. Nothing that a frame outputs
        (logits, probabilities, merged masks, labels) depends on that update, which comes last.

        Args:
            obj_id: object id (> 0).
            start_index: frame on which the object was initialised; tracked on later frames.
            template: (1, 64, 64) template.
            prev_score: (1, 1, H16, W16) score of the last computed frame.
            prev_refine: (1, 64, H16, W16) deep refined feature of the last computed frame.
            target_weights: ``{"project.weight": (c, C4, 1, 1), "filter.weight": (1, c, 3, 3)}`` with
                ``c = config.target.c_channels``.
            prev_prob: (H, W) probability (or given mask) of the object on its last frame.
            last_compute_index: the object's last computed frame (default ``start_index``).

        Raises:
            ConfigError: the target-model weights do not fit the backbone or the configured width.
        """
        missing = {"project.weight", "filter.weight"} - set(target_weights)
        if missing:
            raise ConfigError(f"target-model weights lack {', '.join(sorted(missing))}")
        project, filt = target_weights["project.weight"], target_weights["filter.weight"]
        expected = (self.engine.config.target.c_channels, self.in_channels, 1, 1)
        if tuple(project.shape) != expected or tuple(filt.shape) != (1, expected[0], 3, 3):
            raise ConfigError(f"target-model weights of shapes {tuple(project.shape)}, {tuple(filt.shape)} do not "
                              f"fit project {expected} / filter {(1, expected[0], 3, 3)}")
        model = TargetModel(self.in_channels, self.engine.config.target.c_channels)
        model.load_state_dict({"project.weight": project, "filter.weight": filt})
        on_device = {name: t.to(self.engine.device, torch.float32) for name, t in
                     (("template", template), ("prev_score", prev_score), ("prev_refine", prev_refine),
                      ("prev_prob", prev_prob))}
        return GFRTMObject(
            obj_id=obj_id, start_index=start_index,
            target=OnlineTargetModel(model.to(self.engine.device), self.engine.config.target),
            last_compute_index=start_index if last_compute_index is None else last_compute_index,
            learns=False, **on_device,
        )

    # --- features -----------------------------------------------------------------------------

    def frame_features(self, image: Tensor) -> Dict[str, Tensor]:
        """Stride-8 backbone features of a (1, 3, H, W) uint8 frame: ``layer1`` .. ``layer3``.

        The deep features are added to the same dict by :meth:`deep_features` when first needed.
        """
        with torch.inference_mode(), self.engine.flops.count("backbone_stride8", tuple(image.shape[-2:])), \
                self.engine.autocast():
            return dict(self._forward_f8(image))

    def deep_features(self, feats: Dict[str, Tensor], image_size: Seq[int]) -> Dict[str, Tensor]:
        """Add ``layer4``, ``layer5`` to ``feats`` (in place) unless present; returns ``feats``.

        Run at most once per frame, whichever objects need it (the official code recomputes them for
        every object on the compute path; the result is the same).
        """
        if "layer4" not in feats:
            with torch.inference_mode(), self.engine.flops.count("backbone_deep", tuple(image_size)), \
                    self.engine.autocast():
                feats.update(self._forward_deep(feats["layer3"]))
        return feats

    def shallow_reductions(self, feats: Dict[str, Tensor], reduced: Dict[str, Tensor],
                           image_size: Seq[int]) -> Dict[str, Tensor]:
        """Fill ``reduced`` (in place) with the refiner's frame-only shallow reductions unless present.

        The TSE ``reduce`` of layer3 / layer2 depends on the frame only: computed once per frame and shared
        by its objects (the official code recomputes it per object; the result is the same, bit for bit).
        """
        if not reduced:
            with torch.inference_mode(), self.engine.flops.count("refiner_reduce", tuple(image_size)), \
                    self.engine.autocast():
                reduced.update(self.model.reduce_shallow(feats["layer3"], feats["layer2"]))
        return reduced

    # --- the paths' computations --------------------------------------------------------------

    def match(self, ctx: FrameContext, obj: ObjectState, gate: bool) -> Tuple[Tensor, Optional[float]]:
        """Template matching of ``obj`` on the frame: tplS and, with ``gate``, P_gate."""
        layer3 = ctx.feats["layer3"]  # (the backbone, if it has not run yet, is counted on its own)
        with self.engine.flops.count("template_matching_gate", ctx.image_size), self.engine.autocast():
            tpl_s = self.model.match(layer3, obj.prev_score, obj.template)
            p_gate = float(self.model.reuse_probability(self.model.gate_logits(tpl_s).float())[0]) if gate else None
        return tpl_s, p_gate

    def run_shallow(self, ctx: FrameContext, obj: ObjectState, x16: Tensor, score: Tensor,
                    reduced: Dict[str, Tensor]) -> Tensor:
        """The shallow stages and upsampler -> logits (1, 1, H, W). For a policy that ``keeps_shallow_state`` the
        maps a later sparse frame reuses are kept in ``obj`` (the same logits, bit for bit)."""
        if ctx.policy is not None and ctx.policy.keeps_shallow_state:
            logits, state = shallow_dense(self.model, x16, score, ctx.feats["layer3"], ctx.feats["layer2"],
                                          ctx.image_size, reduced)
            obj.shallow_state, obj.shallow_index, obj.shallow_image = state, ctx.index, ctx.image
            return logits
        return self._shallow(x16, score, ctx.feats["layer3"], ctx.feats["layer2"], ctx.image_size, reduced)

    def run_translate(self, ctx: FrameContext, obj: ObjectState, tpl_s: Tensor,
                      shallow: Optional[Callable[[Tensor, Tensor, Dict[str, Tensor]], Tensor]] = None,
                      flops: Tuple[Hashable, ...] = ("reuse_path",)) -> Tuple[Tensor, Tensor]:
        """The paper's reuse path: probability (H, W) and logits (1, 1, H, W).

        ``shallow(x16, score, reduced) -> logits`` replaces the shallow stages (a sparse path's); ``flops``: the
        FLOP component and the key beyond the image size that fixes its cost.
        """
        reduced = self.reduced(ctx)  # counted on its own, once per frame
        with self.engine.flops.count(flops[0], ctx.image_size, *flops[1:]), self.engine.autocast():
            delta = self.model.delta(tpl_s)
            score = obj.prev_score + delta.float()
            x16 = self.model.translate(obj.prev_refine, delta)
            if shallow is None:
                logits = self.run_shallow(ctx, obj, x16, score, reduced)
            else:
                logits = shallow(x16, score, reduced)
        logits = logits.float()
        return torch.sigmoid(logits)[0, 0], logits

    def run_compute(self, ctx: FrameContext, obj: ObjectState) -> Tuple[Tensor, Tensor]:
        """The full path; the object's last computed score / refined feature / index become this frame's."""
        deep, reduced = self.deep(ctx), self.reduced(ctx)
        with self.engine.flops.count("compute_path", ctx.image_size):
            score = self.target_score(obj.target, deep["layer4"])
            with self.engine.autocast():
                x16 = self.model.deep(score, deep["layer5"], deep["layer4"])
                logits = self.run_shallow(ctx, obj, x16, score, reduced)
        obj.prev_score = score
        obj.prev_refine = x16.float()
        obj.last_compute_index = ctx.index
        logits = logits.float()
        return torch.sigmoid(logits)[0, 0], logits

    def update_target(self, target: OnlineTargetModel, merged: Tensor, size_key: tuple) -> None:
        """Store the last applied frame with its merged soft mask (H, W); CG every train_skipping frames."""
        if self.engine.flops.enabled:
            stores = int((merged > 0.5).sum()) >= MIN_OBJECT_PIXELS  # else update() skips
            cost_key = (size_key, stores, target.memory.current_size,
                        (target.frame_count % target.config.train_skipping) == 0)
        else:
            cost_key = ()
        with self.engine.flops.count("target_model_update", *cost_key), torch.inference_mode(False):
            target.update(merged[None, None].clone())

    def aggregate(self, ctx: Optional[FrameContext], probs: Dict[int, Tensor]) -> Tuple[Tensor, Dict[int, Tensor]]:
        """Soft aggregation (FRTM's): (H, W) uint8 object ids and each object's merged soft mask."""
        ids, stacked = _by_id(probs)
        labels, merged = soft_aggregate(stacked)
        return channel_ids(labels, ids), {obj_id: merged[k] for k, obj_id in enumerate(ids, start=1)}

    def labels(self, probs: Dict[int, Tensor]) -> Tensor:
        ids, stacked = _by_id(probs)
        return channel_ids(soft_labels(stacked), ids)

    def needs_merged(self, obj, computed: bool) -> bool:
        return computed and obj.learns  # (after_merge's condition)

    def after_merge(self, ctx: FrameContext, obj: GFRTMObject, prob: Tensor, merged: Tensor, computed: bool) -> None:
        """A computed object's target model stores the frame with its merged soft mask (CG every few frames)."""
        if computed and obj.learns:
            self.update_target(obj.target, merged, ctx.image_size)


def _by_id(probs: Dict[int, Tensor]) -> Tuple[List[int], Tensor]:
    """The object ids ascending and their maps stacked (N, H, W) in that order."""
    ids = sorted(probs)
    return ids, torch.stack([probs[i] for i in ids])
