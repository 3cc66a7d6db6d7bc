"""The ground-truth oracle: IoU with the ground truth of the object's last computed frame, kept per object."""

from __future__ import annotations

import numpy as np
import pytest

from lib.engine.paths import COMPUTE as C
from lib.engine.paths import TRANSLATE as T
from lib.engine.policies import ObjectFrame, PolicyConfig
from lib.engine.policies.oracle import mask_iou


def _labels(columns: int, obj_id: int = 1) -> np.ndarray:
    """A 4x10 id map with ``obj_id`` in the first ``columns`` columns."""
    labels = np.zeros((4, 10), np.uint8)
    labels[:, :columns] = obj_id
    return labels


@pytest.mark.parametrize("columns, expected", [(10, C), (6, C), (8, T), (9, T)])
def test_oracle_uses_the_iou_with_the_last_computed_frame(columns, expected):
    """Computed with 8 columns, then 10 -> IoU 0.8, 6 -> 0.75, 8 -> 1, 9 -> 0.889; tau 0.85, strict."""
    policy = PolicyConfig("oracle", 0.85).create()
    policy.computed(1, 0, _labels(8))
    assert policy.decide(ObjectFrame(1, 1, 1, None, _labels(columns))) is expected


def test_oracle_threshold_is_strict():
    policy = PolicyConfig("oracle", 0.8).create()
    policy.computed(1, 0, _labels(8))
    assert policy.decide(ObjectFrame(1, 1, 1, None, _labels(10))) is C  # IoU exactly 0.8


def test_oracle_memory_is_per_object_and_per_instance():
    config = PolicyConfig("oracle", 0.5)
    assert config.needs_ground_truth and not config.needs_gate
    policy, other = config.create(), config.create()
    both = _labels(5, 1) + (_labels(10, 2) - _labels(5, 2))  # object 1 in columns 0-4, object 2 in 5-9
    policy.computed(1, 0, both)
    policy.computed(2, 0, both)
    assert policy.decide(ObjectFrame(1, 1, 1, None, both)) is T and policy.decide(ObjectFrame(2, 1, 1, None, both)) is T
    assert other.decide(ObjectFrame(1, 1, 1, None, both)) is C  # nothing remembered: IoU with an empty mask
    policy.forget(1)
    assert policy.decide(ObjectFrame(1, 2, 2, None, both)) is C


def test_mask_iou():
    a = np.array([True, True, False, False])
    assert mask_iou(a, np.array([True, False, True, False])) == pytest.approx(1 / 3)
    assert mask_iou(np.zeros(3, bool), None) == 1.0 and mask_iou(a, None) == 0.0
