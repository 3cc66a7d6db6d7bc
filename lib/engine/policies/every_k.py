"""A fixed schedule: compute on every k-th frame since the object's last computed frame, translate otherwise."""

from __future__ import annotations

import re
from typing import Any, Mapping

from base.errors import ConfigError
from lib.engine.paths import COMPUTE, TRANSLATE, PathKind
from lib.engine.policies import register
from lib.engine.policies.base import ObjectFrame, Param, Policy


@register
class EveryKPolicy(Policy):
    name = "every-k"
    summary = "compute every k-th frame, translate the others"
    paths = (COMPUTE, TRANSLATE)
    params = (Param("k", "--every-k", int, 2, "compute period (k = 1 computes every frame)", "K"),)
    uses_tau = False

    @classmethod
    def validate(cls, tau: float, params: Mapping[str, Any]) -> None:
        if params["k"] < 1:
            raise ConfigError(f"policy every-k needs --every-k >= 1, got {params['k']}")

    @classmethod
    def label(cls, tau: float, params: Mapping[str, Any]) -> str:
        return f"every-{params['k']}"

    @classmethod
    def owns_label(cls, label: str) -> bool:
        return re.fullmatch(r"every-(k|\d+)", label) is not None

    @classmethod
    def point_label(cls, label: str) -> str:
        return "k=" + label.split("-", 1)[1]

    def decide(self, frame: ObjectFrame) -> PathKind:
        return COMPUTE if frame.frames_since_compute >= self.values["k"] else TRANSLATE
