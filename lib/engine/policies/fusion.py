"""Gate with two thresholds: copy iff P_gate > TH2, translate iff tau < P_gate <= TH2, else compute."""

from __future__ import annotations

from typing import Any, Mapping

from base.errors import ConfigError
from lib.engine.paths import COMPUTE, COPY, TRANSLATE, PathKind
from lib.engine.policies import register
from lib.engine.policies.base import ObjectFrame, Param, Policy


@register
class FusionPolicy(Policy):
    name = "fusion"
    summary = "copy iff P_gate > TH2, translate iff tau < P_gate <= TH2, else compute"
    paths = (COMPUTE, TRANSLATE, COPY)
    params = (Param("tau2", "--TH2", float, None, "copy threshold, above tau", "TH2"),)
    needs_gate = True

    @classmethod
    def validate(cls, tau: float, params: Mapping[str, Any]) -> None:
        tau2 = params["tau2"]
        if tau2 is None:
            raise ConfigError("policy fusion needs --TH2 (the copy threshold, above tau)")
        if not tau2 > tau:
            raise ConfigError(f"policy fusion needs TH2 > tau (got TH2 {tau2:g} <= tau {tau:g})")

    @classmethod
    def label(cls, tau: float, params: Mapping[str, Any]) -> str:
        return f"fusion-{params['tau2']:g}"

    @classmethod
    def owns_label(cls, label: str) -> bool:
        return label == "fusion" or label.startswith("fusion-")

    def decide(self, frame: ObjectFrame) -> PathKind:
        assert frame.p_gate is not None, "the fusion policy needs P_gate"
        if frame.p_gate > self.values["tau2"]:
            return COPY
        return TRANSLATE if frame.p_gate > self.tau else COMPUTE
