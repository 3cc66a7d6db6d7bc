"""every-k: compute k frames after the last computed one."""

from __future__ import annotations

import pytest

from base.errors import ConfigError
from lib.engine.paths import COMPUTE as C
from lib.engine.paths import TRANSLATE as T
from lib.engine.policies import PolicyConfig


@pytest.mark.parametrize("k, since, expected", [(1, 1, C), (3, 1, T), (3, 2, T), (3, 3, C), (3, 4, C)])
def test_every_k_computes_k_frames_after_the_last_computed_one(decide, k, since, expected):
    assert decide(PolicyConfig.of("every-k", k=k), since=since) is expected


def test_every_k_needs_positive_k_and_ignores_tau():
    with pytest.raises(ConfigError, match="--every-k >= 1"):
        PolicyConfig.of("every-k", k=0)
    config = PolicyConfig("every-k")
    assert config.params["k"] == 2 and config.label() == "every-2" and not config.uses_tau
