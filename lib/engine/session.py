"""One video's inference: :class:`InferenceSession` owns every per-video and per-object state.

Made by :meth:`lib.engine.core.InferenceEngine.new_session`; fed one RGB frame at a time with
:meth:`InferenceSession.step`, which takes the masks of objects that start on that frame (any frame) and
returns a :class:`FrameOutput`. The session never sees a dataset: reading frames and writing masks is the
caller's business (``lib/evaluation/run.py`` for datasets, ``demo.py`` for any video).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Dict, Mapping, Optional, Tuple, Union

import cv2
import numpy as np
import torch
from torch import Tensor

from base.errors import ConfigError
from lib.engine.aggregation import upsample_probs
from lib.engine.paths import PathKind
from lib.engine.policies import ObjectFrame, PolicyConfig
from lib.engine.state import FrameContext, ObjectState

if TYPE_CHECKING:  # pragma: no cover
    from lib.engine.core import InferenceEngine

Masks = Union[Mapping[int, np.ndarray], np.ndarray, None]


@dataclass
class ObjectHistory:
    """What happened to one object: its start frame and, per tracked frame, its path and P_gate."""

    obj_id: int
    start_index: int
    paths: Dict[int, PathKind] = field(default_factory=dict)  # frame index -> path (tracked frames)
    p_reuse: Dict[int, float] = field(default_factory=dict)  # frame index -> P_gate (when evaluated)
    # name -> frame index -> value: the policy's cue (``cue``) and what paths measured (e.g. ``warp_error``,
    # ``active_tiles``), see :meth:`FrameContext.measure`
    measures: Dict[str, Dict[int, float]] = field(default_factory=dict)


class FrameResult:
    """Everything one frame computed at the networks' size (tensors on the device).

    Attributes:
        labels: (h, w) uint8 object ids after merging.
        logits: object id -> (1, 1, h, w) refiner logits, for the objects tracked by the network on this
            frame (compute or translate path; not copy, not objects starting on this frame).
        probs: object id -> (h, w) probability that entered the merge (objects starting on this frame:
            their given mask; older objects: masked by the new objects' masks).
        merged: object id -> (h, w) merged map (the base network's aggregation), what its online state learns from.
        paths: object id -> path, for the objects tracked on this frame.
        p_reuse: object id -> P_gate, for the tracked objects whose policy evaluated the gate.

    ``labels`` and ``merged`` may be given as ``merge``, a function returning both, called on first use: the
    session merges at the networks' size only when something needs it (an object's online state, or the
    labels of a frame the networks ran at its own size); a frame resized back to its own size where no state
    learns (a warped or reused frame) takes its labels from the maps at that size, and never pays for this merge.
    """

    def __init__(self, labels: Optional[Tensor], logits: Dict[int, Tensor], probs: Dict[int, Tensor],
                 merged: Optional[Dict[int, Tensor]], paths: Dict[int, PathKind], p_reuse: Dict[int, float],
                 merge: Optional[Callable[[], Tuple[Tensor, Dict[int, Tensor]]]] = None):
        if (labels is None or merged is None) and merge is None:
            raise ValueError("FrameResult needs labels and merged, or merge")
        self._labels, self._merged, self._merge = labels, merged, merge
        self.logits, self.probs, self.paths, self.p_reuse = logits, probs, paths, p_reuse

    def _merged_now(self) -> None:
        if self._labels is None or self._merged is None:
            self._labels, self._merged = self._merge()
            self._merge = None

    @property
    def labels(self) -> Tensor:
        self._merged_now()
        return self._labels

    @property
    def merged(self) -> Dict[int, Tensor]:
        self._merged_now()
        return self._merged

    @property
    def merge_pending(self) -> bool:
        """True while the merge at the networks' size has not run (nothing has asked for it yet)."""
        return self._labels is None or self._merged is None


@dataclass
class FrameOutput:
    """One frame's result at the frame's own size.

    Attributes:
        index: frame index in the session (0 for the first :meth:`InferenceSession.step`).
        labels: (H, W) uint8 object ids.
        paths: object id -> the path it took, for every object tracked on this frame (not on its first frame).
        p_reuse: object id -> P_gate, where the policy evaluated the gate.
        seconds: processing time of the step (object initialisation included).
        init_seconds: the part spent initialising new objects.
        result: the networks' outputs at the networks' size (:class:`FrameResult`; None before any object).
    """

    index: int
    labels: np.ndarray
    paths: Dict[int, PathKind]
    p_reuse: Dict[int, float]
    seconds: float = 0.0
    init_seconds: float = 0.0
    result: Optional[FrameResult] = None
    size: Tuple[int, int] = (0, 0)

    def probabilities(self) -> Dict[int, np.ndarray]:
        """Object id -> (H, W) float32 probability that entered the merge, at the frame's size."""
        if self.result is None:
            return {}
        return {obj_id: p.float().cpu().numpy() for obj_id, p in upsample_probs(self.result.probs, self.size).items()}


@dataclass
class SessionStats:
    """Timing and decisions of a session.

    ``seconds`` covers all processing of every frame (object initialisation included; image reading
    and PNG writing excluded); ``init_seconds`` is the part spent initialising objects.
    ``tracked_frames`` counts the frames on which at least one earlier object was tracked and
    ``tracking_seconds`` the time of those frames without any initialisation work in them; ``flops`` the
    FLOPs measured over the session's frames (0 when the engine does not count them).
    """

    name: str
    frames: int
    seconds: float
    init_seconds: float
    tracked_frames: int
    tracking_seconds: float
    objects: Dict[int, ObjectHistory]
    flops: int = 0

    @property
    def tracked_object_frames(self) -> int:
        return sum(len(o.paths) for o in self.objects.values())

    @property
    def reused_object_frames(self) -> int:
        return sum(p.reuses for o in self.objects.values() for p in o.paths.values())


class InferenceSession:
    """The inference state of one video: its objects, their history, the policy instance and the timings.

    Args:
        engine: the networks.
        policy: the reuse policy of this video.
        name: a name for the stats (e.g. the sequence's).
    """

    def __init__(self, engine: InferenceEngine, policy: PolicyConfig, name: str = ""):
        self.engine = engine
        self.policy_config = policy
        self.policy = policy.create()
        engine.base.check_policy(self.policy)
        self.name = name
        self.index = 0  # index of the next frame
        self.objects: Dict[int, ObjectState] = {}
        self.history: Dict[int, ObjectHistory] = {}
        self._seconds = self._init_seconds = self._tracking_seconds = 0.0
        self._tracked_frames = 0
        self._flops = 0

    # --- frames -------------------------------------------------------------------------------

    def step(self, image: Union[np.ndarray, Tensor], new_masks: Masks = None,
             ground_truth: Optional[np.ndarray] = None) -> FrameOutput:
        """Segment the next frame.

        Args:
            image: (H, W, 3) uint8 RGB frame (a numpy array, or a tensor of that layout).
            new_masks: objects that start on this frame: id -> (H, W) binary mask, or one (H, W) map of object
                ids (0 = background). Ids must be new to the session.
            ground_truth: (H, W) object ids of this frame, for a policy that ``needs_ground_truth`` (on every
                frame, the first one included).

        Returns:
            labels (H, W) of this frame, the path and P_gate of each tracked object, the networks' outputs.

        Raises:
            ConfigError: a frame or mask of the wrong shape or type, an empty or already tracked object, or
                missing ground truth.
        """
        engine = self.engine
        flops_before = engine.flops.total
        start = time.perf_counter()
        index = self.index
        image_np = _rgb_array(image)
        original = image_np.shape[:2]
        masks = _parse_masks(new_masks, original, set(self.objects))
        if self.policy.needs_ground_truth:
            if ground_truth is None:
                raise ConfigError(f"policy {self.policy.name} needs ground truth on every frame; frame {index} "
                                  "has none")
            if tuple(ground_truth.shape) != tuple(original):
                raise ConfigError(f"ground truth of frame {index} is {ground_truth.shape}, the frame {original}")
        else:
            ground_truth = None
        resized = engine.config.size is not None and tuple(engine.config.size) != tuple(original)
        if resized:
            image_np = engine.resize_to_network(image_np, cv2.INTER_AREA)
            if ground_truth is not None:
                ground_truth = engine.resize_to_network(ground_truth, cv2.INTER_NEAREST)
        init_seconds = 0.0
        with torch.inference_mode():
            image_t = engine.frame_tensor(image_np)
            image_size = tuple(image_t.shape[-2:])
            feats = None  # tracked objects alone: computed when a path first needs them (FrameContext.feats)
            if masks:
                feats = engine.base.frame_features(image_t)
                init_start = time.perf_counter()
                engine.base.prepare_init(feats, image_size)
                for obj_id, mask in masks.items():
                    if resized:
                        mask = engine.resize_to_network(mask, cv2.INTER_NEAREST)
                    with engine.flops.count("object_init", image_size):
                        self.objects[obj_id] = engine.base.init_object(obj_id, index, image_t, mask, feats)
                    self.history[obj_id] = ObjectHistory(obj_id, index)
                    self.policy.computed(obj_id, index, ground_truth)
                engine.sync()
                init_seconds = time.perf_counter() - init_start
            result = None
            if self.objects:
                result = self._track(FrameContext(engine, index, image_size, image=image_t, features=feats,
                                                  policy=self.policy), ground_truth, merge_labels=not resized)
                labels = result.labels if not resized else \
                    engine.base.labels(upsample_probs(result.probs, original))
            else:
                labels = torch.zeros(original, dtype=torch.uint8)
        labels_np = labels.cpu().numpy()
        engine.sync()
        elapsed = time.perf_counter() - start
        self.index += 1
        self._seconds += elapsed
        self._init_seconds += init_seconds
        if result is not None and result.paths:
            self._tracked_frames += 1
            self._tracking_seconds += elapsed - init_seconds
        self._flops += engine.flops.total - flops_before
        return FrameOutput(index, labels_np, dict(result.paths) if result else {},
                           dict(result.p_reuse) if result else {}, elapsed, init_seconds, result,
                           (int(original[0]), int(original[1])))

    def step_features(self, feats: Dict[str, Tensor], image_size: Tuple[int, int],
                      ground_truth: Optional[np.ndarray] = None) -> FrameResult:
        """Track the session's objects on the next frame from its given backbone features (steps 3-4).

        For code that computes the features itself (e.g. the equivalence tests, with the official code's
        features). ``feats`` holds at least ``layer2``, ``layer3``; ``layer4``/``layer5`` are computed when a
        path needs them, unless given. No object starts on such a frame and nothing is timed.
        """
        if not self.objects:
            raise ConfigError("step_features needs at least one object in the session")
        index = self.index
        with torch.inference_mode():
            result = self._track(FrameContext(self.engine, index, tuple(int(s) for s in image_size), features=feats,
                                              policy=self.policy), ground_truth)
        self.index += 1
        return result

    def _track(self, ctx: FrameContext, ground_truth: Optional[np.ndarray], merge_labels: bool = True) -> FrameResult:
        """Track every object started before ``ctx.index``, merge, update the computed objects' target models.

        ``merge_labels``: the caller takes the labels at the networks' size (False: it merges at the frame's own
        size, and the merge here runs only if a state needs it, else on first use of the result's labels)."""
        engine, policy, index = self.engine, self.policy, ctx.index
        probs: Dict[int, Tensor] = {}
        logits: Dict[int, Tensor] = {}
        paths: Dict[int, PathKind] = {}
        p_reuse: Dict[int, float] = {}
        for obj in self.objects.values():
            if obj.start_index >= index:
                continue
            tpl_s, p_gate = None, None
            if policy.needs_matching or policy.needs_gate:
                tpl_s, p_gate = engine.base.match(ctx, obj, policy.needs_gate)
            cue = policy.measure(ctx, obj)
            path = policy.decide(ObjectFrame(obj.obj_id, index, index - obj.last_compute_index, p_gate,
                                             ground_truth, cue))
            if path not in policy.paths:
                raise ConfigError(f"policy {policy.name} chose path {path.name}, not one of its paths")
            paths[obj.obj_id] = path
            if p_gate is not None:
                p_reuse[obj.obj_id] = p_gate
            if cue is not None:
                ctx.measure(obj.obj_id, "cue", cue)
            probs[obj.obj_id], obj_logits = path.run(ctx, obj, tpl_s)
            if obj_logits is not None:
                logits[obj.obj_id] = obj_logits
            if path.computes:
                policy.computed(obj.obj_id, index, ground_truth)
        new = {o.obj_id: o.prev_prob for o in self.objects.values() if o.start_index == index}
        if new:
            keep = 1.0 - (torch.stack(list(new.values())).amax(dim=0) > 0.5).float()
            for obj_id in probs:
                probs[obj_id] = probs[obj_id] * keep
            probs.update(new)

        computed = {obj_id: obj_id in paths and paths[obj_id].computes for obj_id in probs}
        # merged at the networks' size when its labels are the frame's, when an object computed (its maps are
        # this frame's network outputs: e.g. TTVOS merges its padded softmax pairs) or a state learns from it
        needed = merge_labels or any(computed.values()) or any(
            engine.base.needs_merged(self.objects[obj_id], done) for obj_id, done in computed.items())
        labels, merged = engine.base.aggregate(ctx, probs) if needed else (None, None)
        for obj_id in probs:
            obj = self.objects[obj_id]
            obj.prev_prob = probs[obj_id]
            if computed[obj_id]:
                obj.key_image, obj.key_prob = ctx.image, probs[obj_id]
            if needed:
                engine.base.after_merge(ctx, obj, probs[obj_id], merged[obj_id], computed[obj_id])
        for obj_id, path in paths.items():
            history = self.history[obj_id]
            history.paths[index] = path
            if obj_id in p_reuse:
                history.p_reuse[index] = p_reuse[obj_id]
            for name, value in ctx.cache.get(("measures", obj_id), {}).items():
                history.measures.setdefault(name, {})[index] = float(value)
        return FrameResult(labels, logits, probs, merged, paths, p_reuse,
                           merge=None if needed else lambda: engine.base.aggregate(None, probs))

    # --- objects ------------------------------------------------------------------------------

    def add_object(self, state: ObjectState) -> None:
        """Add an object from a ready state (e.g. :meth:`InferenceEngine.restore_object`); it is tracked from
        frame ``state.start_index + 1``, and the session's next frame is at least that one."""
        if state.obj_id in self.objects:
            raise ConfigError(f"object {state.obj_id} is already in the session")
        self.objects[state.obj_id] = state
        self.history[state.obj_id] = ObjectHistory(state.obj_id, state.start_index)
        self.policy.computed(state.obj_id, state.last_compute_index, None)
        self.index = max(self.index, state.start_index + 1)

    def remove_object(self, obj_id: int) -> None:
        """Stop tracking an object (its history stays in :attr:`history`)."""
        if obj_id not in self.objects:
            raise ConfigError(f"object {obj_id} is not in the session")
        del self.objects[obj_id]
        self.policy.forget(obj_id)

    def clone(self, policy: Optional[PolicyConfig] = None) -> InferenceSession:
        """An independent copy: objects (target models and their memory included), history and policy memory.

        The engine (networks) is shared. Useful to run the same frame several times from one state. With
        ``policy``, the copy decides with a fresh instance of that policy instead, told of each object's last
        computed frame (without ground truth).
        """
        twin = copy.copy(self)
        twin.objects = {k: copy.deepcopy(v) for k, v in self.objects.items()}
        twin.history = copy.deepcopy(self.history)
        if policy is None:
            twin.policy = copy.deepcopy(self.policy)
        else:
            twin.policy_config, twin.policy = policy, policy.create()
            for obj in twin.objects.values():
                twin.policy.computed(obj.obj_id, obj.last_compute_index, None)
        return twin

    @property
    def stats(self) -> SessionStats:
        return SessionStats(self.name, self.index, self._seconds, self._init_seconds, self._tracked_frames,
                            self._tracking_seconds, self.history, self._flops)


def _rgb_array(image: Union[np.ndarray, Tensor]) -> np.ndarray:
    if isinstance(image, Tensor):
        image = image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ConfigError(f"a frame must be an (H, W, 3) uint8 RGB array, got shape {shape} of {dtype}")
    return image


def _parse_masks(masks: Masks, size: Tuple[int, int], known: set) -> Dict[int, np.ndarray]:
    """New objects' binary (H, W) uint8 masks by id, in ascending id order."""
    if masks is None:
        return {}
    if isinstance(masks, np.ndarray):
        if masks.ndim != 2:
            raise ConfigError(f"a map of object ids must be (H, W), got shape {masks.shape}")
        masks = {int(i): masks == i for i in np.unique(masks) if i != 0}
        if not masks:
            raise ConfigError("the map of object ids has no object (all 0)")
    out = {}
    for obj_id in sorted(masks):
        mask = np.asarray(masks[obj_id])
        if not 0 < int(obj_id) < 256:
            raise ConfigError(f"object ids are 1..255, got {obj_id}")
        if int(obj_id) in known:
            raise ConfigError(f"object {obj_id} is already tracked in this session")
        if mask.shape != tuple(size):
            raise ConfigError(f"the mask of object {obj_id} has shape {mask.shape} but the frame is "
                              f"{size[0]}x{size[1]} (HxW)")
        mask = (mask > 0).astype(np.uint8)
        if not mask.any():
            raise ConfigError(f"the mask of object {obj_id} is empty")
        out[int(obj_id)] = mask
    return out
