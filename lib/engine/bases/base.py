"""The seam between the frame loop and a base network (G-FRTM, TTVOS).

A base network says what it computes per frame (:meth:`BaseNetwork.frame_features`), how it starts an object
(:meth:`BaseNetwork.init_object`), its full path (:meth:`BaseNetwork.run_compute`), how the objects' maps merge
(:meth:`BaseNetwork.aggregate`) and what its online state learns afterwards (:meth:`BaseNetwork.after_merge`);
a base with a reuse gate also offers the gate's input and P_gate (:meth:`BaseNetwork.match`) and its reuse path
(:meth:`BaseNetwork.run_translate`). The session, the paths and the policies call only these.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar, Dict, FrozenSet, List, Optional, Tuple, Type

import numpy as np
from torch import Tensor, nn

from base.errors import ConfigError
from lib.engine.state import FrameContext, ObjectState

if TYPE_CHECKING:  # pragma: no cover
    from lib.engine.core import InferenceEngine


class BaseNetwork(ABC):
    """One base network's per-frame computations on an engine's device (stateless: objects keep the state).

    Class attributes:
        name: e.g. ``"gfrtm"``; what checkpoints and reports call it.
        model_type: the ``nn.Module`` class it runs (the engine picks the base from its model).
        reuse: True if it has a gate and a reuse path (``match`` and ``run_translate``).
        needs_backbone: True if the model comes with a separate backbone (G-FRTM's frozen ResNet).
        channels_last: the memory layout the engine runs it on unless ``EngineConfig.channels_last`` says
            otherwise: the faster one as measured (NHWC where True).
        channels_last_amp: the same under ``EngineConfig.amp`` (None: as ``channels_last``).
    """

    name: ClassVar[str]
    model_type: ClassVar[type]
    reuse: ClassVar[bool] = False
    needs_backbone: ClassVar[bool] = False
    channels_last: ClassVar[bool] = False
    channels_last_amp: ClassVar[Optional[bool]] = None
    # path names this base cannot run (e.g. "sparse": it has no G-FRTM shallow stages)
    unsupported_paths: ClassVar[FrozenSet[str]] = frozenset()
    # EngineConfig.reuse_state values it implements (what a reused frame does to the object's online state)
    reuse_states: ClassVar[FrozenSet[str]] = frozenset({"keep"})
    default_reuse_state: ClassVar[str] = "keep"

    def __init__(self, engine: InferenceEngine, model: nn.Module, backbone: Optional[nn.Module] = None):
        self.engine = engine
        self.model = model
        self.backbone = backbone

    @property
    def backbone_name(self) -> str:
        """The backbone, as reports name it (e.g. ``resnet18``, ``hrnetv2Sv1``)."""
        return str(getattr(self.model, "ftext", None) or getattr(self.model, "backbone_name", "?"))

    # --- per frame ----------------------------------------------------------------------------------

    @abstractmethod
    def frame_features(self, image: Tensor) -> Dict[str, Tensor]:
        """The features of a (1, 3, H, W) uint8 frame that every object's computations share."""

    def prepare_init(self, feats: Dict[str, Tensor], image_size: Tuple[int, int]) -> None:  # noqa: B027
        """Work shared by the objects that start on a frame, before their :meth:`init_object` (default none)."""

    @abstractmethod
    def init_object(self, obj_id: int, index: int, image: Tensor, mask: np.ndarray,
                    feats: Dict[str, Tensor]) -> ObjectState:
        """Start one object on frame ``index`` from its (H, W) binary mask."""

    @abstractmethod
    def run_compute(self, ctx: FrameContext, obj: ObjectState) -> Tuple[Tensor, Optional[Tensor]]:
        """The full path: the object's probability (H, W) and logits; the frame becomes its last computed one."""

    def match(self, ctx: FrameContext, obj: ObjectState, gate: bool) -> Tuple[Tensor, Optional[float]]:
        """The gate's input for ``obj`` on this frame and, with ``gate``, P_gate."""
        raise ConfigError(f"base network {self.name} has no reuse gate")

    def run_translate(self, ctx: FrameContext, obj: ObjectState, tpl_s: Tensor, **kwargs) -> Tuple[Tensor, Tensor]:
        """The reuse path: probability (H, W) and logits."""
        raise ConfigError(f"base network {self.name} has no reuse path")

    @abstractmethod
    def aggregate(self, ctx: Optional[FrameContext], probs: Dict[int, Tensor]) -> Tuple[Tensor, Dict[int, Tensor]]:
        """Merge the objects' (H, W) probabilities: (H, W) uint8 object ids, and each object's merged map."""

    def labels(self, probs: Dict[int, Tensor]) -> Tensor:
        """The object ids :meth:`aggregate` gives for ``probs`` (no frame context), without its merged maps: the
        labels of a frame at its own size when the networks ran at another."""
        return self.aggregate(None, probs)[0]

    @abstractmethod
    def after_merge(self, ctx: FrameContext, obj: ObjectState, prob: Tensor, merged: Tensor, computed: bool) -> None:
        """Update ``obj``'s online state once the frame is merged (``computed``: its path computed)."""

    def needs_merged(self, obj: ObjectState, computed: bool) -> bool:
        """Whether :meth:`after_merge` reads ``obj``'s merged map on a frame where its path did (``computed``) or
        did not compute. False lets the session skip merging at the networks' size on a frame resized back to
        its own size where nothing computed (:class:`lib.engine.session.FrameResult`); True (this default)
        always merges."""
        return True

    def check_policy(self, policy) -> None:
        """Refuse a policy whose paths or gate this base cannot run."""
        if (policy.needs_gate or policy.needs_matching) and not self.reuse:
            raise ConfigError(f"policy {policy.name} needs a reuse gate; base network {self.name} has none "
                              "(use --policy always, every-k is not available either)")
        bad = [p.name for p in policy.paths if p.name in self.unsupported_paths or (p.name == "translate"
                                                                                     and not self.reuse)]
        if bad:
            raise ConfigError(f"policy {policy.name} takes the {', '.join(bad)} path, which base network "
                              f"{self.name} does not have")


_REGISTRY: Dict[str, Type[BaseNetwork]] = {}


def register(cls: Type[BaseNetwork]) -> Type[BaseNetwork]:
    """Class decorator: add a base network under ``cls.name``."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ConfigError(f"base network {cls.name} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def base_names() -> List[str]:
    """Registered base networks, in registration order."""
    return list(_REGISTRY)


def base_class_for(model: nn.Module) -> Type[BaseNetwork]:
    """The registered base network that runs ``model``: the one of its own class, else of its nearest base class
    (G-TTVOS's model is a TTVOS)."""
    for model_class in type(model).__mro__:
        for cls in _REGISTRY.values():
            if cls.model_type is model_class:
                return cls
    raise ConfigError(f"no base network runs a {type(model).__name__}; known: "
                      f"{', '.join(c.model_type.__name__ for c in _REGISTRY.values())}")
