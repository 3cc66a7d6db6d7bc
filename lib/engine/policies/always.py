"""Always compute: the FRTM-equivalent full path (what tau = 1 gives), without evaluating the gate."""

from __future__ import annotations

from lib.engine.paths import COMPUTE, PathKind
from lib.engine.policies import register
from lib.engine.policies.base import ObjectFrame, Policy


@register
class AlwaysPolicy(Policy):
    name = "always"
    summary = "always compute; the gate is not evaluated"
    paths = (COMPUTE,)
    uses_tau = False
    needs_matching = False

    def decide(self, frame: ObjectFrame) -> PathKind:
        return COMPUTE
