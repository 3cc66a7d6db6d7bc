"""The G-FRTM inference engine: per-video, per-object state and the frame loop.

The networks (:class:`~models.gfrtm.GFRTM`, :class:`~models.backbone.FeatureExtractor`) are stateless;
everything that lives across frames is here, per object: its online target model, its template, the
score map and the deep refined feature of its last *computed* frame, its previous probability map and
the history of its reuse decisions.

Frame loop (official semantics; see the README for where this engine saves work):

1. Stride-8 backbone features (``layer1..layer3``) once per frame.
2. Objects whose given mask is on this frame are initialised: the deep backbone runs, the target model
   is trained on the augmented frame (GN/CG), the template is made from ``layer3`` and the mask, the
   initial score is the mask nearest-resized to the stride-16 grid, and the deep refined feature is the
   refiner's deep stages on the target model's score.
3. Every object started earlier is tracked: template matching against its previous score gives
   ``tplS`` and P_gate; the policy picks a path:

   * compute: deep backbone (run at most once per frame, shared by all objects), target-model score,
     all refiner stages; the score and the deep refined feature become the object's new "previous";
   * translate (reuse): delta = delta-generator(tplS), score = previous score + delta, refined feature =
     refine-translator(previous refined feature, delta), then the shallow stages;
   * copy: the previous probability map is copied.

4. New objects' masks are cut out of the older objects' probabilities; all are merged by soft
   aggregation; target models of computed objects are updated with their merged soft masks.

Entry points: :meth:`Tracker.run_sequence` (a video), :meth:`Tracker.process_frame` (one RGB frame:
steps 1-4), :meth:`Tracker.track_objects` (steps 3-4 from given features), and for object state
:meth:`Tracker.init_object` (step 2) and :meth:`Tracker.restore_object` (from given tensors).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Mapping, Optional, Tuple
from typing import Sequence as Seq

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dataset.sequence import Sequence
from lib.aggregation import soft_aggregate
from lib.augment import augment_first_frame
from lib.errors import ConfigError
from lib.flops import FlopMeter
from lib.policies import Path, PolicyConfig
from models.backbone import FeatureExtractor
from models.gfrtm import GFRTM, nearest_resize
from models.target_model import MIN_OBJECT_PIXELS, OnlineTargetModel, TargetModel, TargetModelConfig


@dataclass(frozen=True)
class TrackerConfig:
    """Inference settings.

    Attributes:
        policy: reuse policy and thresholds.
        target: target-model hyper-parameters (default: the official evaluation's fast mode).
        seed: seeds each object's target-model initial weights and its first-frame augmentation.
        amp: ``None`` (float32) or ``"bf16"`` (autocast for the networks; the target-model
            optimisation stays float32).
        channels_last: run the networks on channels-last (NHWC) tensors, which some backends run faster
            (e.g. CUDA with AMP; on a 2-core CPU it measured within noise of the default). Results
            equal the default layout's up to float rounding (~1e-7), not bit for bit. The tracker
            converts the networks given to it in place.
        size: (H, W) to run the networks at, or None for each frame's own size (the official behaviour).
            Frames are resized with INTER_AREA (as the training frames), given masks with INTER_NEAREST; the
            object probabilities are upsampled bilinearly to the frame's size and merged there, so the labels
            come at the original resolution.
    """

    policy: PolicyConfig = field(default_factory=PolicyConfig)
    target: TargetModelConfig = field(default_factory=TargetModelConfig.eval_fast)
    seed: int = 0
    amp: Optional[str] = None
    channels_last: bool = False
    size: Optional[Tuple[int, int]] = None

    def __post_init__(self):
        if self.amp not in (None, "bf16"):
            raise ConfigError(f"--amp must be bf16 or absent, got {self.amp!r}")
        if self.size is not None:
            if len(self.size) != 2 or min(int(s) for s in self.size) < 32:
                raise ConfigError(f"--size must be two sizes H W of at least 32 pixels, got {self.size}")
            object.__setattr__(self, "size", (int(self.size[0]), int(self.size[1])))


@dataclass
class ObjectState:
    """Everything the tracker keeps for one object between frames."""

    obj_id: int
    start_index: int
    target: OnlineTargetModel
    template: Tensor  # (1, 64, 64)
    prev_score: Tensor  # (1, 1, H16, W16) score of the last computed frame
    prev_refine: Tensor  # (1, 64, H16, W16) deep refined feature of the last computed frame
    prev_prob: Tensor  # (H, W) probability map of the previous frame (for the copy path)
    last_compute_index: int
    last_compute_gt: Optional[np.ndarray] = None  # (H, W) bool, for the oracle policy
    paths: Dict[int, Path] = field(default_factory=dict)  # frame index -> path (tracked frames)
    p_reuse: Dict[int, float] = field(default_factory=dict)  # frame index -> P_gate (when evaluated)
    learns: bool = True  # whether the target model is updated after computed frames (False when restored)


@dataclass
class FrameOutput:
    """Result of one frame: object-id labels and, per tracked object, the path taken."""

    index: int
    labels: np.ndarray  # (H, W) uint8 object ids
    paths: Dict[int, Path]
    p_reuse: Dict[int, float]


@dataclass
class FrameResult:
    """Everything :meth:`Tracker.track_objects` computed on one frame (tensors on the device).

    Attributes:
        labels: (H, W) uint8 object ids after merging.
        logits: object id -> (1, 1, H, W) refiner logits, for the objects tracked by the network on this
            frame (compute or translate path; not copy, not objects starting on this frame).
        probs: object id -> (H, W) probability that entered the merge (objects starting on this frame:
            their given mask; older objects: masked by the new objects' masks).
        merged: object id -> (H, W) merged soft mask (soft aggregation), the target models' label.
    """

    labels: Tensor
    logits: Dict[int, Tensor]
    probs: Dict[int, Tensor]
    merged: Dict[int, Tensor]


@dataclass
class SequenceStats:
    """Timing and decisions of one sequence.

    ``seconds`` covers all processing of every frame (object initialisation included; image reading
    and PNG writing excluded); ``init_seconds`` is the part spent initialising objects.
    ``tracked_frames`` counts the frames on which at least one earlier object was tracked and
    ``tracking_seconds`` the time of those frames without any initialisation work in them.
    """

    name: str
    frames: int
    seconds: float
    init_seconds: float
    tracked_frames: int
    tracking_seconds: float
    objects: Dict[int, ObjectState]

    @property
    def tracked_object_frames(self) -> int:
        return sum(len(o.paths) for o in self.objects.values())

    @property
    def reused_object_frames(self) -> int:
        return sum(p.reuses for o in self.objects.values() for p in o.paths.values())


class Tracker:
    """Runs G-FRTM over sequences.

    Args:
        model: the learned modules (eval mode is set here).
        backbone: the frozen feature extractor matching ``model.ftext``.
        config: inference settings.
        device: where to run (``cpu``, ``cuda:0``, ...).
        count_flops: measure FLOPs per component (:attr:`flops`) with torch.utils.flop_counter; each
            distinct (component, shapes) call is counted once, so the timed loop is barely affected.
    """

    def __init__(self, model: GFRTM, backbone: FeatureExtractor, config: TrackerConfig,
                 device: torch.device | str = "cpu", count_flops: bool = True):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.backbone = backbone.to(self.device).eval()
        self.config = config
        self.in_channels = backbone.channels["layer4"]
        self.flops = FlopMeter(count_flops)
        if config.channels_last:
            self.model.to(memory_format=torch.channels_last)
            self.backbone.to(memory_format=torch.channels_last)

    # --- helpers ------------------------------------------------------------------------------

    def _autocast(self):
        if self.config.amp == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _to_tensor(self, image: np.ndarray) -> Tensor:
        """(H, W, 3) uint8 -> (1, 3, H, W) uint8 on the device (a view with channels-last strides)."""
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].to(self.device)

    def _target_score(self, target: OnlineTargetModel, layer4: Tensor) -> Tensor:
        # Outside inference mode: the target model stores the projected sample for later CG runs.
        with torch.inference_mode(False):
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
        with self._autocast():
            aug_feats = self.backbone(aug_images.to(self.device))["layer4"]
        with torch.inference_mode(False):
            target = OnlineTargetModel(self.new_target_model(), cfg)
            target.init(aug_feats.float().clone(), aug_labels.to(self.device).float())
        score = self._target_score(target, feats["layer4"])
        mask4 = mask_t[None, None].to(self.device)
        with self._autocast():
            template = self.model.make_template(feats["layer3"], mask4)
            prev_refine = self.model.deep(score, feats["layer5"], feats["layer4"])
        prev_score = nearest_resize(mask4, feats["layer4"].shape[-2:])
        return ObjectState(
            obj_id=obj_id, start_index=index, target=target, template=template.float(),
            prev_score=prev_score, prev_refine=prev_refine.float(),
            prev_prob=mask_t.to(self.device).float(), last_compute_index=index,
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

    # --- tracking -----------------------------------------------------------------------------

    def frame_features(self, image: Tensor) -> Dict[str, Tensor]:
        """Stride-8 backbone features of a (1, 3, H, W) uint8 frame: ``layer1`` .. ``layer3``.

        The deep features are added to the same dict by :meth:`deep_features` when first needed.
        """
        with torch.inference_mode(), self.flops.count("backbone_stride8", tuple(image.shape[-2:])), \
                self._autocast():
            return dict(self.backbone.forward_f8(image))

    def deep_features(self, feats: Dict[str, Tensor], image_size: Seq[int]) -> Dict[str, Tensor]:
        """Add ``layer4``, ``layer5`` to ``feats`` (in place) unless present; returns ``feats``.

        Run at most once per frame, whichever objects need it (the official code recomputes them for
        every object on the compute path; the result is the same).
        """
        if "layer4" not in feats:
            with torch.inference_mode(), self.flops.count("backbone_deep", tuple(image_size)), self._autocast():
                feats.update(self.backbone.forward_deep(feats["layer3"]))
        return feats

    def _track_object(self, obj: ObjectState, index: int, feats: Dict[str, Tensor], image_size,
                      gt: Optional[np.ndarray]) -> Tuple[Tensor, Optional[Tensor]]:
        """Decide the path for one object on frame ``index``.

        Returns its probability map (H, W) and its logits (1, 1, H, W) (None on the copy path).
        """
        policy = self.config.policy
        p_reuse = None
        tpl_s = None
        size_key = tuple(image_size)
        if policy.name != "always":
            with self.flops.count("template_matching_gate", size_key), self._autocast():
                tpl_s = self.model.match(feats["layer3"], obj.prev_score, obj.template)
                if policy.needs_gate:
                    p_reuse = float(self.model.reuse_probability(self.model.gate_logits(tpl_s).float())[0])
        gt_iou = None
        if policy.needs_ground_truth:
            gt_iou = _iou(gt == obj.obj_id, obj.last_compute_gt)
        path = policy.decide(p_reuse, index - obj.last_compute_index, gt_iou)
        obj.paths[index] = path
        if p_reuse is not None:
            obj.p_reuse[index] = p_reuse

        if path is Path.COPY:
            return obj.prev_prob, None
        if path is Path.TRANSLATE:
            with self.flops.count("reuse_path", size_key), self._autocast():
                delta = self.model.delta(tpl_s)
                score = obj.prev_score + delta.float()
                x16 = self.model.translate(obj.prev_refine, delta)
                logits = self.model.shallow(x16, score, feats["layer3"], feats["layer2"], image_size)
            logits = logits.float()
            return torch.sigmoid(logits)[0, 0], logits
        deep = self.deep_features(feats, image_size)
        with self.flops.count("compute_path", size_key):
            score = self._target_score(obj.target, deep["layer4"])
            with self._autocast():
                x16 = self.model.deep(score, deep["layer5"], deep["layer4"])
                logits = self.model.shallow(x16, score, feats["layer3"], feats["layer2"], image_size)
        obj.prev_score = score
        obj.prev_refine = x16.float()
        obj.last_compute_index = index
        if gt is not None:
            obj.last_compute_gt = gt == obj.obj_id
        logits = logits.float()
        return torch.sigmoid(logits)[0, 0], logits

    def track_objects(self, index: int, feats: Dict[str, Tensor], objects: Dict[int, ObjectState],
                      image_size: Seq[int], gt: Optional[np.ndarray] = None) -> FrameResult:
        """Track, merge and update all objects on frame ``index`` (steps 3-4 of the module docstring).

        Objects that started before ``index`` are tracked (their state is updated in place); objects
        starting on ``index`` contribute their given mask (``prev_prob``), which is cut out of the
        older objects' probabilities. All are merged by soft aggregation, and the target models of
        the objects that took the compute path (and learn) are updated with their merged soft masks.

        Args:
            index: frame index.
            feats: the frame's backbone features, at least ``layer2``, ``layer3``; ``layer4``/``layer5``
                are computed from ``layer3`` when an object needs them (unless given).
            objects: every object started so far, by id (at least one).
            image_size: (H, W) of the frame.
            gt: (H, W) ground-truth object ids (oracle policy only).
        """
        size_key = tuple(image_size)
        with torch.inference_mode():
            probs: Dict[int, Tensor] = {}
            logits: Dict[int, Tensor] = {}
            for obj in objects.values():
                if obj.start_index < index:
                    probs[obj.obj_id], obj_logits = self._track_object(obj, index, feats, image_size, gt)
                    if obj_logits is not None:
                        logits[obj.obj_id] = obj_logits
            new = {o.obj_id: o.prev_prob for o in objects.values() if o.start_index == index}
            if new:
                keep = 1.0 - (torch.stack(list(new.values())).amax(dim=0) > 0.5).float()
                for obj_id in probs:
                    probs[obj_id] = probs[obj_id] * keep
                probs.update(new)

            labels, merged_by_id = aggregate_objects(probs)
            for obj_id in merged_by_id:
                obj = objects[obj_id]
                obj.prev_prob = probs[obj_id]
                if obj.learns and obj.paths.get(index) is Path.COMPUTE:
                    self._update_target(obj.target, merged_by_id[obj_id], size_key)
            return FrameResult(labels, logits, probs, merged_by_id)

    def _update_target(self, target: OnlineTargetModel, merged: Tensor, size_key: tuple) -> None:
        """Store the last applied frame with its merged soft mask (H, W); CG every train_skipping frames."""
        if self.flops.enabled:
            stores = int((merged > 0.5).sum()) >= MIN_OBJECT_PIXELS  # else update() skips
            cost_key = (size_key, stores, target.memory.current_size,
                        (target.frame_count % target.config.train_skipping) == 0)
        else:
            cost_key = ()
        with self.flops.count("target_model_update", *cost_key), torch.inference_mode(False):
            target.update(merged[None, None].clone())

    def process_frame(self, seq: Sequence, index: int, image_np: np.ndarray,
                      objects: Dict[int, ObjectState], gt: Optional[np.ndarray] = None) -> tuple:
        """Run one frame; updates ``objects`` in place.

        Returns (labels (H, W) uint8 object ids, seconds spent initialising objects).
        """
        original = image_np.shape[:2]
        resized = self.config.size is not None and tuple(self.config.size) != tuple(original)
        if resized:
            image_np = self._resize(image_np, cv2.INTER_AREA)
            gt = None if gt is None else self._resize(gt, cv2.INTER_NEAREST)
        image = self._to_tensor(image_np)
        image_size = image.shape[-2:]
        size_key = tuple(image_size)
        init_seconds = 0.0
        with torch.inference_mode():
            feats = self.frame_features(image)
            new_ids = seq.objects_starting_at(index)
            if new_ids:
                start = time.perf_counter()
                self.deep_features(feats, image_size)
                for obj_id in new_ids:
                    mask = seq.start_mask(obj_id)
                    if resized:
                        mask = self._resize(mask.astype(np.uint8), cv2.INTER_NEAREST)
                    with self.flops.count("object_init", size_key):
                        objects[obj_id] = self.init_object(obj_id, index, image, mask, feats)
                    if gt is not None:
                        objects[obj_id].last_compute_gt = gt == obj_id
                self._sync()
                init_seconds = time.perf_counter() - start

            if not objects:
                return np.zeros(original, np.uint8), init_seconds
            result = self.track_objects(index, feats, objects, image_size, gt)
            out = result.labels if not resized else self._labels_at(result.probs, original)
        self._sync()
        return out.cpu().numpy(), init_seconds

    def _resize(self, array: np.ndarray, interpolation: int) -> np.ndarray:
        """An (h, w[, 3]) array resized to ``config.size``."""
        height, width = self.config.size
        return cv2.resize(array, (width, height), interpolation=interpolation)

    @staticmethod
    def _labels_at(probs: Dict[int, Tensor], size: Seq[int]) -> Tensor:
        """Object ids at ``size``: each object's probability upsampled bilinearly, then soft aggregation."""
        up = {obj_id: F.interpolate(p[None, None].float(), size=tuple(size), mode="bilinear",
                                    align_corners=False)[0, 0] for obj_id, p in probs.items()}
        return aggregate_objects(up)[0]

    def run_sequence(self, seq: Sequence, on_frame: Optional[Callable[[FrameOutput], None]] = None,
                     ) -> SequenceStats:
        """Track every frame of ``seq``; ``on_frame`` receives each frame's output (untimed)."""
        needs_gt = self.config.policy.needs_ground_truth
        if needs_gt:
            missing = [f for f in seq.frames if not seq.has_annotation(f)]
            if missing:
                raise ConfigError(f"policy oracle needs ground truth on every frame; {seq.name} has none "
                                  f"for {len(missing)} frames (e.g. {missing[0]})")
        objects: Dict[int, ObjectState] = {}
        total = init_total = tracking = 0.0
        tracked_frames = 0
        for index in range(len(seq)):
            image = seq.image(index)
            gt = seq.annotation(seq.frames[index]) if needs_gt else None
            start = time.perf_counter()
            labels, init_seconds = self.process_frame(seq, index, image, objects, gt)
            elapsed = time.perf_counter() - start
            total += elapsed
            init_total += init_seconds
            if any(index in o.paths for o in objects.values()):
                tracked_frames += 1
                tracking += elapsed - init_seconds
            if on_frame is not None:
                on_frame(FrameOutput(index, labels,
                                     {o: s.paths[index] for o, s in objects.items() if index in s.paths},
                                     {o: s.p_reuse[index] for o, s in objects.items() if index in s.p_reuse}))
        return SequenceStats(seq.name, len(seq), total, init_total, tracked_frames, tracking, objects)


def aggregate_objects(probs: Dict[int, Tensor]) -> Tuple[Tensor, Dict[int, Tensor]]:
    """Soft aggregation of per-object probabilities (H, W) by id: (H, W) uint8 object ids, merged mask by id."""
    ids = sorted(probs)
    labels, merged = soft_aggregate(torch.stack([probs[i] for i in ids]))
    lut = torch.tensor([0] + ids, dtype=torch.uint8, device=labels.device)
    return lut[labels], {obj_id: merged[k] for k, obj_id in enumerate(ids, start=1)}


def _iou(a: np.ndarray, b: Optional[np.ndarray]) -> float:
    """IoU of two boolean masks; 1.0 when both are empty (or when ``b`` is unknown and ``a`` empty)."""
    if b is None:
        b = np.zeros_like(a)
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)
