"""The paper's Fig. 7 "copy" ablation: copy the previous probability map iff P_gate > tau, else compute."""

from __future__ import annotations

from lib.engine.paths import COMPUTE, COPY
from lib.engine.policies import register
from lib.engine.policies.gate import GatePolicy


@register
class CopyPolicy(GatePolicy):
    """The gate's decision with the copy path in place of the translate path."""

    name = "copy"
    summary = "copy the previous mask iff P_gate > tau, else compute"
    paths = (COMPUTE, COPY)
    reuse_path = COPY
