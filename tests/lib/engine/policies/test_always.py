"""Always compute; neither template matching nor the gate runs."""

from __future__ import annotations

from lib.engine.paths import COMPUTE as C
from lib.engine.policies import PolicyConfig


def test_always_ignores_the_gate(decide):
    policy = PolicyConfig("always", -1.0)
    assert decide(policy, 1.0) is C and decide(policy, None) is C
    assert not policy.needs_gate and not policy.uses_tau and not policy.policy_class.needs_matching
