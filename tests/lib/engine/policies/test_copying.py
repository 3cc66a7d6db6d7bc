"""The copy ablation: copy the previous mask iff P_gate > tau."""

from __future__ import annotations

import pytest

from lib.engine.paths import COMPUTE as C
from lib.engine.paths import COPY as K
from lib.engine.policies import PolicyConfig


@pytest.mark.parametrize("p, expected", [(0.5, C), (0.7, C), (0.71, K), (1.0, K)])
def test_copy_copies_instead_of_translating(decide, p, expected):
    assert decide(PolicyConfig("copy", 0.7), p) is expected
    assert PolicyConfig("copy", 0.7).needs_gate
