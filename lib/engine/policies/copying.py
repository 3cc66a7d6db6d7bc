"""The paper's Fig. 7 "copy" ablation: copy the previous probability map iff P_gate > tau, else compute."""

from __future__ import annotations

from lib.engine.paths import COMPUTE, COPY, PathKind
from lib.engine.policies import register
from lib.engine.policies.base import ObjectFrame, Policy


@register
class CopyPolicy(Policy):
    name = "copy"
    summary = "copy the previous mask iff P_gate > tau, else compute"
    paths = (COMPUTE, COPY)
    needs_gate = True

    def decide(self, frame: ObjectFrame) -> PathKind:
        assert frame.p_gate is not None, "the copy policy needs P_gate"
        return COPY if frame.p_gate > self.tau else COMPUTE
