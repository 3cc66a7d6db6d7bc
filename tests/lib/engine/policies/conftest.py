"""``decide(config, p_gate, since=1)``: one decision of a fresh policy instance for object 1 on frame 1."""

from __future__ import annotations

from typing import Optional

import pytest

from lib.engine.policies import ObjectFrame, PolicyConfig


@pytest.fixture
def decide():
    def _decide(config: PolicyConfig, p_gate: Optional[float] = None, since: int = 1):
        return config.create().decide(ObjectFrame(obj_id=1, index=since, frames_since_compute=since, p_gate=p_gate))

    return _decide
