"""What every reuse policy is: its decision, the paths it takes, its flags, and its validated configuration.

A policy family is one module of this package: a :class:`Policy` subclass decorated with
:func:`lib.engine.policies.register`. The engine creates one instance per inference session
(:meth:`PolicyConfig.create`), asks it for each tracked object and frame which path to take
(:meth:`Policy.decide`) and tells it when an object's frame was computed (:meth:`Policy.computed`), so a
policy may keep per-object memory of its own. Nothing outside the policy's module knows its name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from base.errors import ConfigError
from lib.engine.paths import PathKind

if TYPE_CHECKING:  # pragma: no cover
    from lib.engine.state import FrameContext, ObjectState


@dataclass(frozen=True)
class Param:
    """One policy parameter, which is also its command-line flag.

    Attributes:
        name: key in :attr:`PolicyConfig.params` (e.g. ``"k"``).
        flag: its option (e.g. ``"--every-k"``); the argparse destination is derived from it.
        type: converts a value (``int``, ``float``).
        default: used when the parameter is not given (None: the policy requires it, see ``validate``).
        help: help text of the flag.
        metavar: shown in the help.
    """

    name: str
    flag: str
    type: Callable[[Any], Any]
    default: Any
    help: str
    metavar: Optional[str] = None

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class ObjectFrame:
    """What a policy may look at to decide one object's path on one frame.

    Attributes:
        obj_id: the object.
        index: the frame index in the session.
        frames_since_compute: frames since the object's last computed frame (>= 1; its first frame counts).
        p_gate: the gate's softmax probability of reuse (when the policy ``needs_gate``).
        ground_truth: (H, W) uint8 object ids of this frame at the networks' size (when the policy
            ``needs_ground_truth``).
        cue: what the policy's own :meth:`Policy.measure` returned for this object and frame (None if it
            measures nothing).
    """

    obj_id: int
    index: int
    frames_since_compute: int
    p_gate: Optional[float] = None
    ground_truth: Optional[np.ndarray] = None
    cue: Optional[float] = None


class Policy:
    """Base of the reuse policies: one instance per session; subclasses set the class attributes.

    Class attributes:
        name: the ``--policy`` value.
        summary: one line for the help texts and the README's table.
        paths: the paths :meth:`decide` can return.
        params: the policy's own parameters (and flags), beyond tau.
        uses_tau: whether tau enters the decision (else one run, whatever ``--TH`` says).
        needs_matching: template matching (tplS) runs on every tracked frame (the translate path needs it).
        needs_gate: the gate's P_gate is evaluated on every tracked frame (implies ``needs_matching``).
        needs_ground_truth: the session must be given the ground truth of every frame.
        keeps_shallow_state: every shallow-stage run keeps its maps in the object's state, for a sparse path
            on a later frame (:mod:`lib.engine.sparse`).
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    paths: ClassVar[Tuple[PathKind, ...]] = ()
    params: ClassVar[Tuple[Param, ...]] = ()
    uses_tau: ClassVar[bool] = True
    needs_matching: ClassVar[bool] = True
    needs_gate: ClassVar[bool] = False
    needs_ground_truth: ClassVar[bool] = False
    keeps_shallow_state: ClassVar[bool] = False

    def __init__(self, config: PolicyConfig):
        self.config = config

    @property
    def tau(self) -> float:
        return self.config.tau

    @property
    def values(self) -> Mapping[str, Any]:
        """This instance's parameter values by :attr:`Param.name` (``params`` lists the parameters)."""
        return self.config.params

    # --- configuration (class level) ----------------------------------------------------------

    @classmethod
    def validate(cls, tau: float, params: Mapping[str, Any]) -> None:
        """Raise :class:`ConfigError` for a bad tau or parameter (tau was checked to be a finite number)."""

    @classmethod
    def label(cls, tau: float, params: Mapping[str, Any]) -> str:
        """Short run name, e.g. ``gate`` or ``every-3``."""
        return cls.name

    @classmethod
    def owns_label(cls, label: str) -> bool:
        """Whether a run name made by :meth:`label` comes from this policy."""
        return label == cls.name

    @classmethod
    def point_label(cls, label: str) -> str:
        """How a report marks a tau-less run of this family on its curve (e.g. ``k=3``)."""
        return label

    @classmethod
    def curve(cls, label: str) -> str:
        """The report's plot curve a run of this family belongs to (default: the family, e.g. every k of
        ``every-k`` on one curve); a variant that is not a point of that curve returns its own name."""
        return cls.name

    # --- per session --------------------------------------------------------------------------

    def measure(self, ctx: FrameContext, obj: ObjectState) -> Optional[float]:
        """A cue of the policy's own for one tracked object on this frame, before :meth:`decide` sees it
        as :attr:`ObjectFrame.cue` (e.g. the photometric error of a flow warp). Default: none."""
        return None

    def decide(self, frame: ObjectFrame) -> PathKind:
        """The path of one tracked object on one frame."""
        raise NotImplementedError

    def computed(self, obj_id: int, index: int, ground_truth: Optional[np.ndarray]) -> None:
        """Called when an object was initialised or took a computing path on frame ``index``."""

    def forget(self, obj_id: int) -> None:
        """Called when an object leaves the session."""


@dataclass(frozen=True)
class PolicyConfig:
    """A policy with its threshold and parameters, checked when made.

    Attributes:
        name: a registered policy (:func:`lib.engine.policies.policy_names`).
        tau: reuse threshold (a finite number). tau >= 1 never reuses with the gate; tau < 0 always reuses.
        params: the policy's own parameters by :attr:`Param.name`; missing ones take their defaults, unknown
            ones are an error.
    """

    name: str = "gate"
    tau: float = 0.7
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        from lib.engine.policies import policy_class

        cls = policy_class(self.name)
        try:
            tau = float(self.tau)
        except (TypeError, ValueError):
            raise ConfigError(f"policy {self.name}: tau must be a number, got {self.tau!r}") from None
        if not math.isfinite(tau):
            raise ConfigError(f"policy {self.name}: tau must be a finite number, got {self.tau!r}")
        known = {p.name: p for p in cls.params}
        unknown = sorted(set(self.params) - set(known))
        if unknown:
            raise ConfigError(f"policy {self.name} has no parameter {', '.join(unknown)}"
                              + (f" (it takes {', '.join(known)})" if known else " (it takes none)"))
        params: Dict[str, Any] = {}
        for name, param in known.items():
            value = self.params.get(name, param.default)
            if value is not None:
                try:
                    value = param.type(value)
                except (TypeError, ValueError):
                    raise ConfigError(f"policy {self.name}: {param.flag} must be {param.type.__name__}, "
                                      f"got {value!r}") from None
            params[name] = value
        cls.validate(tau, params)
        object.__setattr__(self, "tau", tau)
        object.__setattr__(self, "params", MappingProxyType(params))

    @classmethod
    def of(cls, name: str, tau: float = 0.7, **params: Any) -> PolicyConfig:
        """``PolicyConfig.of("every-k", k=3)``."""
        return cls(name, tau, params)

    @property
    def policy_class(self) -> type:
        from lib.engine.policies import policy_class

        return policy_class(self.name)

    def create(self) -> Policy:
        """A fresh policy instance (one per session: it may keep per-object memory)."""
        return self.policy_class(self)

    def label(self) -> str:
        return self.policy_class.label(self.tau, self.params)

    @property
    def needs_gate(self) -> bool:
        return self.policy_class.needs_gate

    @property
    def needs_ground_truth(self) -> bool:
        return self.policy_class.needs_ground_truth

    @property
    def uses_tau(self) -> bool:
        return self.policy_class.uses_tau

    def __hash__(self) -> int:
        return hash((self.name, self.tau, tuple(sorted(self.params.items()))))

    def __deepcopy__(self, memo) -> PolicyConfig:
        return self  # immutable

    def __reduce__(self):
        return (PolicyConfig, (self.name, self.tau, dict(self.params)))


def thresholds(name: str, taus: Sequence[float]) -> list:
    """The distinct thresholds of a sweep, in the given order; a policy that ignores tau takes at most one."""
    from lib.engine.policies import policy_class

    cls = policy_class(name)
    unique = list(dict.fromkeys(float(t) for t in taus))
    for tau in unique:
        if not math.isfinite(tau):
            raise ConfigError(f"--TH values must be finite numbers, got {tau}")
    if not cls.uses_tau and len(unique) > 1:
        raise ConfigError(f"policy {name} does not use --TH; give one value (or none)")
    return unique
