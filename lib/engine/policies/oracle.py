"""The paper's Fig. 8 g_IoU oracle: translate iff IoU(this frame's ground truth, the ground truth of the
object's last computed frame) > tau, else compute. Needs the ground truth of every frame."""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from lib.engine.paths import COMPUTE, TRANSLATE, PathKind
from lib.engine.policies import register
from lib.engine.policies.base import ObjectFrame, Policy


def mask_iou(a: np.ndarray, b: Optional[np.ndarray]) -> float:
    """IoU of two boolean masks; 1.0 when both are empty (``b`` None counts as empty)."""
    if b is None:
        b = np.zeros_like(a)
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


@register
class OraclePolicy(Policy):
    name = "oracle"
    summary = "translate iff the ground-truth IoU with the last computed frame > tau (needs ground truth)"
    paths = (COMPUTE, TRANSLATE)
    needs_ground_truth = True

    def __init__(self, config):
        super().__init__(config)
        self.last_computed: Dict[int, Optional[np.ndarray]] = {}  # object id -> its GT mask on that frame

    def computed(self, obj_id: int, index: int, ground_truth: Optional[np.ndarray]) -> None:
        self.last_computed[obj_id] = None if ground_truth is None else ground_truth == obj_id

    def forget(self, obj_id: int) -> None:
        self.last_computed.pop(obj_id, None)

    def decide(self, frame: ObjectFrame) -> PathKind:
        assert frame.ground_truth is not None, "the oracle policy needs the ground truth"
        iou = mask_iou(frame.ground_truth == frame.obj_id, self.last_computed.get(frame.obj_id))
        return TRANSLATE if iou > self.tau else COMPUTE
