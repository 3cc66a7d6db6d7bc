"""Reuse policies: per object and frame, compute the full path or reuse the last computed frame.

Every policy returns one of three :class:`Path` values for a tracked object on a frame:

* ``COMPUTE``: full path (deep backbone, target model, all refiner stages), then a target-model update;
* ``TRANSLATE``: the paper's reuse path (delta-generator + refine-translator + shallow stages);
* ``COPY``: copy the object's previous probability map (the paper's Fig. 7 "copy" ablation).

=============  =======================================================================================
``gate``       the paper: TRANSLATE iff P_gate > tau (strict, as the official code), else COMPUTE
``always``     always COMPUTE (tau = 1: the FRTM-equivalent full path); the gate is not evaluated
``copy``       COPY iff P_gate > tau, else COMPUTE
``fusion``     COPY iff P_gate > TH2, TRANSLATE iff tau < P_gate <= TH2, else COMPUTE (TH2 > tau)
``oracle``     TRANSLATE iff IoU(current GT, GT of the last computed frame) > tau (paper Fig. 8 g_IoU);
               needs ground truth on every frame
``every-k``    COMPUTE on every k-th frame since the object's last computed frame, TRANSLATE otherwise
=============  =======================================================================================
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional

from lib.errors import ConfigError

POLICIES = ("gate", "always", "copy", "fusion", "oracle", "every-k")


class Path(enum.Enum):
    COMPUTE = "compute"
    TRANSLATE = "translate"
    COPY = "copy"

    @property
    def reuses(self) -> bool:
        return self is not Path.COMPUTE


@dataclass(frozen=True)
class PolicyConfig:
    """Which policy, with its thresholds.

    Attributes:
        name: one of :data:`POLICIES`.
        tau: reuse threshold (gate, copy, fusion, oracle). tau >= 1 never reuses; tau < 0 always
            reuses after the first frame.
        tau2: the copy threshold of ``fusion`` (must exceed ``tau``).
        k: the compute period of ``every-k`` (k = 1 computes every frame).
    """

    name: str = "gate"
    tau: float = 0.7
    tau2: Optional[float] = None
    k: int = 2

    def __post_init__(self):
        if self.name not in POLICIES:
            raise ConfigError(f"unknown policy {self.name!r}; choose from {', '.join(POLICIES)}")
        if self.name == "fusion":
            if self.tau2 is None:
                raise ConfigError("policy fusion needs --TH2 (the copy threshold, above tau)")
            if self.tau2 <= self.tau:
                raise ConfigError(f"policy fusion needs TH2 > tau (got TH2 {self.tau2} <= tau {self.tau})")
        if self.name == "every-k" and self.k < 1:
            raise ConfigError(f"policy every-k needs --every-k >= 1, got {self.k}")

    @property
    def needs_gate(self) -> bool:
        """Whether the decision uses P_gate (the gate is then run on every tracked frame)."""
        return self.name in ("gate", "copy", "fusion")

    @property
    def needs_ground_truth(self) -> bool:
        return self.name == "oracle"

    def decide(self, p_reuse: Optional[float] = None, frames_since_compute: int = 1,
               gt_iou: Optional[float] = None) -> Path:
        """The path for one object on one frame.

        Args:
            p_reuse: the gate's softmax probability of reuse (gate, copy, fusion).
            frames_since_compute: frames since this object's last computed frame (>= 1).
            gt_iou: IoU between this frame's GT mask and the GT mask of the last computed frame (oracle).
        """
        if self.name == "always":
            return Path.COMPUTE
        if self.name == "every-k":
            return Path.COMPUTE if frames_since_compute >= self.k else Path.TRANSLATE
        if self.name == "oracle":
            assert gt_iou is not None, "the oracle policy needs the ground-truth IoU"
            return Path.TRANSLATE if gt_iou > self.tau else Path.COMPUTE
        assert p_reuse is not None, f"policy {self.name} needs the gate probability"
        if self.name == "fusion" and p_reuse > self.tau2:
            return Path.COPY
        if p_reuse > self.tau:
            return Path.COPY if self.name == "copy" else Path.TRANSLATE
        return Path.COMPUTE

    def label(self) -> str:
        """Short run name: e.g. ``gate``, ``fusion-0.9``, ``every-3``."""
        if self.name == "fusion":
            return f"fusion-{self.tau2:g}"
        if self.name == "every-k":
            return f"every-{self.k}"
        return self.name
