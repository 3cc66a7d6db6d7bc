"""The paper's policy: translate iff P_gate > tau (strictly, as the official code), else compute."""

from __future__ import annotations

from lib.engine.paths import COMPUTE, TRANSLATE, PathKind
from lib.engine.policies import register
from lib.engine.policies.base import ObjectFrame, Policy


@register
class GatePolicy(Policy):
    name = "gate"
    summary = "translate iff P_gate > tau, else compute (the paper)"
    paths = (COMPUTE, TRANSLATE)
    needs_gate = True
    reuse_path: PathKind = TRANSLATE  # taken iff P_gate > tau

    def decide(self, frame: ObjectFrame) -> PathKind:
        assert frame.p_gate is not None, f"the {self.name} policy needs P_gate"
        return self.reuse_path if frame.p_gate > self.tau else COMPUTE
