"""Every policy's decision, directly: thresholds strict as the official code, fusion's three bands, every-k, oracle."""

from __future__ import annotations

import pytest

from lib.errors import ConfigError
from lib.policies import POLICIES, Path, PolicyConfig

C, T, K = Path.COMPUTE, Path.TRANSLATE, Path.COPY


@pytest.mark.parametrize("p, expected", [(0.0, C), (0.69, C), (0.7, C), (0.7000001, T), (1.0, T)])
def test_gate_reuses_iff_p_above_tau_strictly(p, expected):
    assert PolicyConfig("gate", 0.7).decide(p) is expected


def test_gate_extremes_tau_one_never_and_negative_always():
    assert PolicyConfig("gate", 1.0).decide(1.0) is C  # P_gate <= 1: tau = 1 never reuses
    assert PolicyConfig("gate", -1.0).decide(0.0) is T


@pytest.mark.parametrize("p, expected", [(0.5, C), (0.7, C), (0.71, K), (1.0, K)])
def test_copy_copies_instead_of_translating(p, expected):
    assert PolicyConfig("copy", 0.7).decide(p) is expected


@pytest.mark.parametrize("p, expected", [(0.3, C), (0.7, C), (0.75, T), (0.9, T), (0.90001, K), (1.0, K)])
def test_fusion_bands(p, expected):
    """COPY above TH2, TRANSLATE in (tau, TH2], COMPUTE at or below tau."""
    assert PolicyConfig("fusion", 0.7, tau2=0.9).decide(p) is expected


def test_fusion_needs_th2_above_tau():
    with pytest.raises(ConfigError, match="needs --TH2"):
        PolicyConfig("fusion", 0.7)
    with pytest.raises(ConfigError, match="TH2 > tau"):
        PolicyConfig("fusion", 0.7, tau2=0.7)


def test_always_ignores_the_gate():
    policy = PolicyConfig("always", -1.0)
    assert policy.decide(1.0) is C and policy.decide(None) is C and not policy.needs_gate


@pytest.mark.parametrize("k, since, expected", [(1, 1, C), (3, 1, T), (3, 2, T), (3, 3, C), (3, 4, C)])
def test_every_k_computes_k_frames_after_the_last_computed_one(k, since, expected):
    assert PolicyConfig("every-k", k=k).decide(None, frames_since_compute=since) is expected


def test_every_k_needs_positive_k():
    with pytest.raises(ConfigError, match="--every-k >= 1"):
        PolicyConfig("every-k", k=0)


@pytest.mark.parametrize("iou, expected", [(0.5, C), (0.8, C), (0.81, T)])
def test_oracle_uses_the_ground_truth_iou(iou, expected):
    policy = PolicyConfig("oracle", 0.8)
    assert policy.needs_ground_truth and not policy.needs_gate
    assert policy.decide(None, gt_iou=iou) is expected


def test_labels_gate_use_and_unknown_policy():
    assert [PolicyConfig(n, 0.7, tau2=0.9 if n == "fusion" else None, k=3).label() for n in POLICIES] == [
        "gate", "always", "copy", "fusion-0.9", "oracle", "every-3"]
    assert {n for n in POLICIES if PolicyConfig(n, 0.7, tau2=0.9).needs_gate} == {"gate", "copy", "fusion"}
    assert [p.reuses for p in (C, T, K)] == [False, True, True]
    with pytest.raises(ConfigError, match="unknown policy"):
        PolicyConfig("sometimes")
