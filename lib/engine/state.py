"""What the frame loop, the paths and the policies see of an object and of a frame, whatever the base network.

:class:`ObjectState` holds what every base network keeps for an object (its probability maps, its last
computed frame, the key frame of the warp path, the sparse path's last shallow-stage run); a base network
subclasses it with its own state (G-FRTM: the online target model, the template, the last computed score and
deep refined feature; TTVOS: the mask history, the template and the last /16 features). :class:`FrameContext`
is one frame: its image, its features (computed by the base network on first use) and a per-frame cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, Hashable, Optional, Tuple

from torch import Tensor

from base.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from lib.engine.core import InferenceEngine
    from lib.engine.policies.base import Policy


@dataclass
class ObjectState:
    """What the engine keeps for one object between frames (tensors on the engine's device).

    Attributes:
        obj_id: the object's id (1..255).
        start_index: the frame its mask was given on; it is tracked from the next frame.
        prev_prob: (H, W) probability map of the previous frame (the copy path's output).
        last_compute_index: its last computed frame.
        learns: whether the base network's online state learns after computed frames (False when restored).
        key_image: (1, 3, H, W) uint8 frame of the last computed frame (None: not known).
        key_prob: (H, W) probability map (or given mask) of the last computed frame.
        shallow_state, shallow_index, shallow_image: maps of its last shallow-stage run, its frame and image
            (the sparse path's, :mod:`lib.engine.sparse`).
    """

    obj_id: int
    start_index: int
    prev_prob: Tensor
    last_compute_index: int
    learns: bool = True
    key_image: Optional[Tensor] = None
    key_prob: Optional[Tensor] = None
    shallow_state: Optional[Dict[str, Tensor]] = None
    shallow_index: int = -1
    shallow_image: Optional[Tensor] = None


@dataclass
class FrameContext:
    """One frame as the paths and policies see it: the engine, the frame, its features and sizes.

    The base network's features are computed on first use (:attr:`feats`): a path that never reads them (e.g. a
    flow-warped reuse) skips the backbone altogether.
    """

    engine: InferenceEngine
    index: int
    image_size: Tuple[int, int]  # (H, W) the networks run at
    image: Optional[Tensor] = None  # (1, 3, H, W) uint8 on the device; None when the session was given features
    features: Optional[Dict[str, Tensor]] = None  # the base network's per-frame features, when already computed
    policy: Optional[Policy] = None  # the session's policy, for paths with settings of its own
    reduced: Dict[str, Tensor] = field(default_factory=dict)  # a base network's per-frame shared work, on first use
    cache: Dict[Hashable, Any] = field(default_factory=dict)  # per-frame results a path or policy shares

    def measure(self, obj_id: int, name: str, value: float) -> None:
        """Record a number about ``obj_id`` on this frame (kept in its history's ``measures[name]``, written to
        the evaluation's records and averaged in its summary)."""
        self.cache.setdefault(("measures", obj_id), {})[name] = float(value)

    @property
    def feats(self) -> Dict[str, Tensor]:
        """The base network's features of this frame, computed on first use."""
        if self.features is None:
            if self.image is None:
                raise ConfigError(f"frame {self.index}: no image and no backbone features")
            self.features = self.engine.base.frame_features(self.image)
        return self.features
