"""The G-FRTM inference engine: the networks and what one frame does with them.

The networks (:class:`~models.gfrtm.GFRTM`, :class:`~models.backbone.FeatureExtractor`) are stateless and
so is the engine: everything that lives across the frames of a video (each object's online target model,
template, last computed score and deep refined feature, previous probability map, and the policy's
memory) belongs to an :class:`~lib.engine.session.InferenceSession`, one per video::

    engine = InferenceEngine(model, backbone, EngineConfig(size=(240, 432)), device="cpu")
    session = engine.new_session(PolicyConfig("gate", 0.7))
    out = session.step(first_rgb, new_masks={1: mask})      # labels, probabilities, paths, P_gate
    out = session.step(next_rgb)

Frame steps (official semantics; see the README for where this engine saves work):

1. Stride-8 backbone features (``layer1..layer3``) once per frame.
2. Objects whose given mask is on this frame are initialised (:meth:`InferenceEngine.init_object`): the deep
   backbone runs, the target model is trained on the augmented frame (GN/CG), the template is made from
   ``layer3`` and the mask, the initial score is the mask nearest-resized to the stride-16 grid, and the deep
   refined feature is the refiner's deep stages on the target model's score.
3. Every object started earlier is tracked: template matching against its previous score gives ``tplS`` and
   P_gate (if its policy needs them); the policy picks a path (:mod:`lib.engine.paths`), which runs.
4. New objects' masks are cut out of the older objects' probabilities; all are merged by soft aggregation;
   the target models of computed objects are updated with their merged soft masks.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, Hashable, Mapping, Optional, Tuple
from typing import Sequence as Seq

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from base.errors import ConfigError
from lib.engine.aggregation import soft_aggregate
from lib.engine.augment import augment_first_frame
from lib.engine.policies import PolicyConfig
from lib.engine.sparse import shallow_dense
from lib.tools.flops import FlopMeter
from models.backbone import FeatureExtractor
from models.gfrtm import GFRTM, nearest_resize
from models.target_model import MIN_OBJECT_PIXELS, OnlineTargetModel, TargetModel, TargetModelConfig

if TYPE_CHECKING:  # pragma: no cover
    from lib.engine.policies.base import Policy
    from lib.engine.session import InferenceSession


COMPILABLE = ("backbone", "refiner")  # the parts EngineConfig.compile may name


def _shape_key(value: Any) -> Hashable:
    if isinstance(value, Tensor):
        return tuple(value.shape)
    if isinstance(value, Mapping):
        return tuple((k, _shape_key(v)) for k, v in value.items())
    if isinstance(value, (tuple, list)):
        return tuple(_shape_key(v) for v in value)
    return value


class _Compiled:
    """``torch.compile(fn)`` whose first call per input shape is timed into ``engine.compile_seconds``."""

    def __init__(self, fn, engine: InferenceEngine):
        self.fn, self.engine, self.shapes = torch.compile(fn), engine, set()

    def __call__(self, *args):
        shapes = tuple(_shape_key(a) for a in args)
        if shapes in self.shapes:
            return self.fn(*args)
        start = time.perf_counter()
        out = self.fn(*args)
        self.engine.sync()
        self.engine.compile_seconds += time.perf_counter() - start
        self.shapes.add(shapes)
        return out


@dataclass(frozen=True)
class EngineConfig:
    """Inference settings shared by every session of an engine.

    Attributes:
        policy: the policy of :meth:`InferenceEngine.new_session` when it is given none.
        target: target-model hyper-parameters (default: the official evaluation's fast mode).
        seed: seeds each object's target-model initial weights and its first-frame augmentation.
        amp: ``None`` (float32) or ``"bf16"`` (autocast for the networks; the target-model
            optimisation stays float32).
        channels_last: run the networks on channels-last (NHWC) tensors, which some backends run faster
            (e.g. CUDA with AMP; on a 2-core CPU it measured within noise of the default). Results
            equal the default layout's up to float rounding (~1e-7), not bit for bit. The engine
            converts the networks given to it in place.
        size: (H, W) to run the networks at, or None for each frame's own size (the official behaviour).
            Frames are resized with INTER_AREA (as the training frames), given masks with INTER_NEAREST; the
            object probabilities are upsampled bilinearly to the frame's size and merged there, so the labels
            come at the original resolution.
        compile: parts to run through ``torch.compile`` (inductor): ``"backbone"`` (stride-8 and deep
            backbone) and / or ``"refiner"`` (the shallow stages and upsampler of both paths). Outputs equal
            the eager ones up to float rounding. Each new input shape compiles anew; the first call per shape
            (compilation + that run) is added to :attr:`InferenceEngine.compile_seconds`. Measured on a
            2-core CPU at 480x854: backbone to stride 8 133 -> 115 ms after 8 s of compilation, the shallow
            refiner 259 -> 360 ms (slower) after 66 s: off by default.
    """

    policy: PolicyConfig = field(default_factory=PolicyConfig)
    target: TargetModelConfig = field(default_factory=TargetModelConfig.eval_fast)
    seed: int = 0
    amp: Optional[str] = None
    channels_last: bool = False
    size: Optional[Tuple[int, int]] = None
    compile: Tuple[str, ...] = ()

    def __post_init__(self):
        if self.amp not in (None, "bf16"):
            raise ConfigError(f"--amp must be bf16 or absent, got {self.amp!r}")
        parts = tuple(dict.fromkeys(self.compile))
        unknown = [p for p in parts if p not in COMPILABLE]
        if unknown:
            raise ConfigError(f"--compile takes {', '.join(COMPILABLE)}; got {', '.join(map(str, unknown))}")
        object.__setattr__(self, "compile", parts)
        if self.size is not None:
            if len(self.size) != 2 or min(int(s) for s in self.size) < 32:
                raise ConfigError(f"--size must be two sizes H W of at least 32 pixels, got {self.size}")
            object.__setattr__(self, "size", (int(self.size[0]), int(self.size[1])))


@dataclass
class ObjectState:
    """What the engine keeps for one object between frames (tensors on the engine's device)."""

    obj_id: int
    start_index: int
    target: OnlineTargetModel
    template: Tensor  # (1, 64, 64)
    prev_score: Tensor  # (1, 1, H16, W16) score of the last computed frame
    prev_refine: Tensor  # (1, 64, H16, W16) deep refined feature of the last computed frame
    prev_prob: Tensor  # (H, W) probability map of the previous frame (for the copy path)
    last_compute_index: int
    learns: bool = True  # whether the target model is updated after computed frames (False when restored)
    key_image: Optional[Tensor] = None  # (1, 3, H, W) uint8 frame of the last computed frame (None: not known)
    key_prob: Optional[Tensor] = None  # (H, W) probability map (or given mask) of the last computed frame
    shallow_state: Optional[Dict[str, Tensor]] = None  # maps of its last shallow-stage run (lib.engine.sparse)
    shallow_index: int = -1  # the frame of that run
    shallow_image: Optional[Tensor] = None  # (1, 3, H, W) uint8: that frame


@dataclass
class FrameContext:
    """One frame as the paths and policies see it: the engine, the frame, its backbone features and sizes.

    The stride-8 backbone features are computed on first use (:attr:`feats`): a path that never reads them
    (e.g. a flow-warped reuse) skips the backbone altogether.
    """

    engine: InferenceEngine
    index: int
    image_size: Tuple[int, int]  # (H, W) the networks run at
    image: Optional[Tensor] = None  # (1, 3, H, W) uint8 on the device; None when the session was given features
    features: Optional[Dict[str, Tensor]] = None  # layer2, layer3 (+ layer4, layer5), when already computed
    policy: Optional[Policy] = None  # the session's policy, for paths with settings of its own
    reduced: Dict[str, Tensor] = field(default_factory=dict)  # the shallow stages' frame-only part, on first use
    cache: Dict[Hashable, Any] = field(default_factory=dict)  # per-frame results a path or policy shares

    def measure(self, obj_id: int, name: str, value: float) -> None:
        """Record a number about ``obj_id`` on this frame (kept in its history's ``measures[name]``, written to
        the evaluation's records and averaged in its summary)."""
        self.cache.setdefault(("measures", obj_id), {})[name] = float(value)

    @property
    def feats(self) -> Dict[str, Tensor]:
        """The stride-8 features (``layer1`` .. ``layer3``; deep ones once computed), computed on first use."""
        if self.features is None:
            if self.image is None:
                raise ConfigError(f"frame {self.index}: no image and no backbone features")
            self.features = self.engine.frame_features(self.image)
        return self.features

    @property
    def deep(self) -> Dict[str, Tensor]:
        """The features with ``layer4`` / ``layer5``, computed on first use (once per frame)."""
        return self.engine.deep_features(self.feats, self.image_size)

    @property
    def shallow_reduced(self) -> Dict[str, Tensor]:
        """The refiner's shallow-stage reductions of this frame's features, computed on first use (once per
        frame, whichever objects and paths need them)."""
        return self.engine.shallow_reductions(self.feats, self.reduced, self.image_size)


class InferenceEngine:
    """The networks and the per-frame computations; videos run in :meth:`new_session`'s sessions.

    Args:
        model: the learned modules (eval mode is set here).
        backbone: the frozen feature extractor matching ``model.ftext``.
        config: inference settings.
        device: where to run (``cpu``, ``cuda:0``, ...).
        count_flops: measure FLOPs per component (:attr:`flops`) with torch.utils.flop_counter; each
            distinct (component, shapes) call is counted once, so the timed loop is barely affected.
    """

    def __init__(self, model: GFRTM, backbone: FeatureExtractor, config: Optional[EngineConfig] = None,
                 device: torch.device | str = "cpu", count_flops: bool = True):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.backbone = backbone.to(self.device).eval()
        self.config = config if config is not None else EngineConfig()
        self.in_channels = backbone.channels["layer4"]
        self.flops = FlopMeter(count_flops)
        if self.config.channels_last:
            self.model.to(memory_format=torch.channels_last)
            self.backbone.to(memory_format=torch.channels_last)
        self.compile_seconds = 0.0  # first calls per shape of the compiled parts (EngineConfig.compile)
        compiled = self.config.compile
        self._forward_f8 = _Compiled(self.backbone.forward_f8, self) if "backbone" in compiled \
            else self.backbone.forward_f8
        self._forward_deep = _Compiled(self.backbone.forward_deep, self) if "backbone" in compiled \
            else self.backbone.forward_deep
        self._shallow = _Compiled(self.model.shallow, self) if "refiner" in compiled else self.model.shallow

    def new_session(self, policy: Optional[PolicyConfig] = None, name: str = "") -> InferenceSession:
        """A session for one video (``policy`` defaults to the engine config's)."""
        from lib.engine.session import InferenceSession

        return InferenceSession(self, policy if policy is not None else self.config.policy, name)

    # --- helpers ------------------------------------------------------------------------------

    def autocast(self):
        if self.config.amp == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def frame_tensor(self, image: np.ndarray) -> Tensor:
        """(H, W, 3) uint8 -> (1, 3, H, W) uint8 on the device (a view with channels-last strides)."""
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].to(self.device)

    def resize_to_network(self, array: np.ndarray, interpolation: int) -> np.ndarray:
        """An (h, w[, 3]) array resized to ``config.size``."""
        height, width = self.config.size
        return cv2.resize(array, (width, height), interpolation=interpolation)

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
            torch.manual_seed(self.config.seed)
            return TargetModel(self.in_channels, self.config.target.c_channels).to(self.device)

    def init_object(self, obj_id: int, index: int, image: Tensor, mask: np.ndarray,
                    feats: Dict[str, Tensor]) -> ObjectState:
        """Initialise one object on frame ``index`` from its given mask.

        Args:
            image: (1, 3, H, W) uint8 frame; mask: (H, W) binary; feats: all five backbone features
                of the frame.
        """
        cfg = self.config.target
        mask_t = torch.from_numpy(mask.astype(np.uint8))
        rng = np.random.default_rng(self.config.seed)
        aug_images, aug_labels = augment_first_frame(image[0].cpu(), mask_t, cfg.num_aug, rng)
        # Sample 0 is the frame itself, whose layer4 is already computed. The synthetic copies go through
        # the backbone one at a time and only to stride 16 (the official code runs the whole backbone on
        # the batch of all K): the same features (bit for bit on the CPU measured), and on a 2-core CPU a
        # batch of 4 full-size frames took 1.5-2.3x as long as 4 frames one after the other.
        with self.autocast():
            aug_feats = torch.cat([feats["layer4"]] + [self.backbone.forward_layer4(aug_images[k:k + 1].to(self.device))
                                                       for k in range(1, aug_images.shape[0])])
        with torch.inference_mode(False):
            target = OnlineTargetModel(self.new_target_model(), cfg)
            target.init(aug_feats.float().clone(), aug_labels.to(self.device).float())
        score = self.target_score(target, feats["layer4"])
        mask4 = mask_t[None, None].to(self.device)
        with self.autocast():
            template = self.model.make_template(feats["layer3"], mask4)
            prev_refine = self.model.deep(score, feats["layer5"], feats["layer4"])
        prev_score = nearest_resize(mask4, feats["layer4"].shape[-2:])
        return ObjectState(
            obj_id=obj_id, start_index=index, target=target, template=template.float(),
            prev_score=prev_score, prev_refine=prev_refine.float(),
            prev_prob=mask_t.to(self.device).float(), last_compute_index=index,
            key_image=image, key_prob=mask_t.to(self.device).float(),
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
        expected = (self.config.target.c_channels, self.in_channels, 1, 1)
        if tuple(project.shape) != expected or tuple(filt.shape) != (1, expected[0], 3, 3):
            raise ConfigError(f"target-model weights of shapes {tuple(project.shape)}, {tuple(filt.shape)} do not "
                              f"fit project {expected} / filter {(1, expected[0], 3, 3)}")
        model = TargetModel(self.in_channels, self.config.target.c_channels)
        model.load_state_dict({"project.weight": project, "filter.weight": filt})
        on_device = {name: t.to(self.device, torch.float32) for name, t in
                     (("template", template), ("prev_score", prev_score), ("prev_refine", prev_refine),
                      ("prev_prob", prev_prob))}
        return ObjectState(
            obj_id=obj_id, start_index=start_index,
            target=OnlineTargetModel(model.to(self.device), self.config.target),
            last_compute_index=start_index if last_compute_index is None else last_compute_index,
            learns=False, **on_device,
        )

    # --- features -----------------------------------------------------------------------------

    def frame_features(self, image: Tensor) -> Dict[str, Tensor]:
        """Stride-8 backbone features of a (1, 3, H, W) uint8 frame: ``layer1`` .. ``layer3``.

        The deep features are added to the same dict by :meth:`deep_features` when first needed.
        """
        with torch.inference_mode(), self.flops.count("backbone_stride8", tuple(image.shape[-2:])), \
                self.autocast():
            return dict(self._forward_f8(image))

    def deep_features(self, feats: Dict[str, Tensor], image_size: Seq[int]) -> Dict[str, Tensor]:
        """Add ``layer4``, ``layer5`` to ``feats`` (in place) unless present; returns ``feats``.

        Run at most once per frame, whichever objects need it (the official code recomputes them for
        every object on the compute path; the result is the same).
        """
        if "layer4" not in feats:
            with torch.inference_mode(), self.flops.count("backbone_deep", tuple(image_size)), self.autocast():
                feats.update(self._forward_deep(feats["layer3"]))
        return feats

    def shallow_reductions(self, feats: Dict[str, Tensor], reduced: Dict[str, Tensor],
                           image_size: Seq[int]) -> Dict[str, Tensor]:
        """Fill ``reduced`` (in place) with the refiner's frame-only shallow reductions unless present.

        The TSE ``reduce`` of layer3 / layer2 depends on the frame only: computed once per frame and shared
        by its objects (the official code recomputes it per object; the result is the same, bit for bit).
        """
        if not reduced:
            with torch.inference_mode(), self.flops.count("refiner_reduce", tuple(image_size)), self.autocast():
                reduced.update(self.model.reduce_shallow(feats["layer3"], feats["layer2"]))
        return reduced

    # --- the paths' computations --------------------------------------------------------------

    def match(self, ctx: FrameContext, obj: ObjectState, gate: bool) -> Tuple[Tensor, Optional[float]]:
        """Template matching of ``obj`` on the frame: tplS and, with ``gate``, P_gate."""
        layer3 = ctx.feats["layer3"]  # (the backbone, if it has not run yet, is counted on its own)
        with self.flops.count("template_matching_gate", ctx.image_size), self.autocast():
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
        reduced = ctx.shallow_reduced  # counted on its own, once per frame
        with self.flops.count(flops[0], ctx.image_size, *flops[1:]), self.autocast():
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
        deep, reduced = ctx.deep, ctx.shallow_reduced
        with self.flops.count("compute_path", ctx.image_size):
            score = self.target_score(obj.target, deep["layer4"])
            with self.autocast():
                x16 = self.model.deep(score, deep["layer5"], deep["layer4"])
                logits = self.run_shallow(ctx, obj, x16, score, reduced)
        obj.prev_score = score
        obj.prev_refine = x16.float()
        obj.last_compute_index = ctx.index
        logits = logits.float()
        return torch.sigmoid(logits)[0, 0], logits

    def update_target(self, target: OnlineTargetModel, merged: Tensor, size_key: tuple) -> None:
        """Store the last applied frame with its merged soft mask (H, W); CG every train_skipping frames."""
        if self.flops.enabled:
            stores = int((merged > 0.5).sum()) >= MIN_OBJECT_PIXELS  # else update() skips
            cost_key = (size_key, stores, target.memory.current_size,
                        (target.frame_count % target.config.train_skipping) == 0)
        else:
            cost_key = ()
        with self.flops.count("target_model_update", *cost_key), torch.inference_mode(False):
            target.update(merged[None, None].clone())


def aggregate_objects(probs: Dict[int, Tensor]) -> Tuple[Tensor, Dict[int, Tensor]]:
    """Soft aggregation of per-object probabilities (H, W) by id: (H, W) uint8 object ids, merged mask by id."""
    ids = sorted(probs)
    labels, merged = soft_aggregate(torch.stack([probs[i] for i in ids]))
    lut = torch.tensor([0] + ids, dtype=torch.uint8, device=labels.device)
    return lut[labels], {obj_id: merged[k] for k, obj_id in enumerate(ids, start=1)}


def labels_at(probs: Dict[int, Tensor], size: Seq[int]) -> Tensor:
    """Object ids at ``size``: each object's probability upsampled bilinearly, then soft aggregation."""
    return aggregate_objects(upsample_probs(probs, size))[0]


def upsample_probs(probs: Dict[int, Tensor], size: Seq[int]) -> Dict[int, Tensor]:
    """Each (h, w) probability bilinearly resized to ``size`` (unchanged when already there)."""
    return {obj_id: p if tuple(p.shape) == tuple(size) else
            F.interpolate(p[None, None].float(), size=tuple(size), mode="bilinear", align_corners=False)[0, 0]
            for obj_id, p in probs.items()}
