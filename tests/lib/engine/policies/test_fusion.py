"""Fusion: three bands of P_gate, and TH2 checked with the config."""

from __future__ import annotations

import pytest

from base.errors import ConfigError
from lib.engine.paths import COMPUTE as C
from lib.engine.paths import COPY as K
from lib.engine.paths import TRANSLATE as T
from lib.engine.policies import PolicyConfig


@pytest.mark.parametrize("p, expected", [(0.3, C), (0.7, C), (0.75, T), (0.9, T), (0.90001, K), (1.0, K)])
def test_fusion_bands(decide, p, expected):
    """COPY above TH2, TRANSLATE in (tau, TH2], COMPUTE at or below tau."""
    assert decide(PolicyConfig.of("fusion", 0.7, tau2=0.9), p) is expected


def test_fusion_needs_th2_above_tau():
    with pytest.raises(ConfigError, match="needs --TH2"):
        PolicyConfig("fusion", 0.7)
    with pytest.raises(ConfigError, match="TH2 > tau"):
        PolicyConfig.of("fusion", 0.7, tau2=0.7)
    with pytest.raises(ConfigError, match="--TH2 must be float"):
        PolicyConfig.of("fusion", 0.7, tau2="high")


def test_fusion_label_carries_th2():
    config = PolicyConfig.of("fusion", 0.5, tau2="0.95")  # converted by the parameter's type
    assert config.params["tau2"] == 0.95 and config.label() == "fusion-0.95"
