"""The paper's gate: translate iff P_gate > tau, strictly, as the official code."""

from __future__ import annotations

import pytest

from lib.engine.paths import COMPUTE as C
from lib.engine.paths import TRANSLATE as T
from lib.engine.policies import PolicyConfig


@pytest.mark.parametrize("p, expected", [(0.0, C), (0.69, C), (0.7, C), (0.7000001, T), (1.0, T)])
def test_gate_reuses_iff_p_above_tau_strictly(decide, p, expected):
    assert decide(PolicyConfig("gate", 0.7), p) is expected


def test_gate_extremes_tau_one_never_and_negative_always(decide):
    assert decide(PolicyConfig("gate", 1.0), 1.0) is C  # P_gate <= 1: tau = 1 never reuses
    assert decide(PolicyConfig("gate", -1.0), 0.0) is T


def test_gate_needs_the_gate_and_names_itself():
    policy = PolicyConfig("gate", 0.5)
    assert policy.needs_gate and policy.uses_tau and not policy.needs_ground_truth and policy.label() == "gate"
    assert set(policy.policy_class.paths) == {C, T}
