"""The registry: names, labels, flags built from it, tau validation, and a new policy as a plug-in."""

from __future__ import annotations

import argparse
import math

import pytest

from base.errors import ConfigError
from lib.engine import policies
from lib.engine.paths import COMPUTE, COPY, PATHS, TRANSLATE, PathKind, path_by_code, register_path
from lib.engine.policies import (
    ObjectFrame,
    Param,
    Policy,
    PolicyConfig,
    add_policy_flags,
    policy_class,
    policy_from_args,
    policy_names,
    policy_of_label,
    thresholds,
)


def test_builtin_policies_and_their_labels():
    assert policy_names()[:6] == ["gate", "always", "copy", "fusion", "oracle", "every-k"]
    configs = [PolicyConfig.of("fusion", 0.7, tau2=0.9) if n == "fusion" else
               PolicyConfig.of("every-k", k=3) if n == "every-k" else PolicyConfig(n, 0.7) for n in policy_names()[:6]]
    labels = [c.label() for c in configs]
    assert labels == ["gate", "always", "copy", "fusion-0.9", "oracle", "every-3"]
    assert [policy_of_label(label).name for label in labels] == policy_names()[:6]
    assert policy_of_label("every-k").name == "every-k" and policy_of_label("nonsense") is None
    assert {c.name for c in configs if c.needs_gate} == {"gate", "copy", "fusion"}
    assert [p.reuses for p in (COMPUTE, TRANSLATE, COPY)] == [False, True, True]
    assert [path_by_code(c) for c in "CTP"] == [COMPUTE, TRANSLATE, COPY]


def test_bad_configs_are_one_line_errors():
    with pytest.raises(ConfigError, match="unknown policy 'sometimes'; choose from gate"):
        PolicyConfig("sometimes")
    with pytest.raises(ConfigError, match="has no parameter k"):
        PolicyConfig.of("gate", 0.7, k=3)
    for bad in (math.nan, math.inf, "x"):
        with pytest.raises(ConfigError, match="tau must be a"):
            PolicyConfig("gate", bad)
    with pytest.raises(ConfigError, match="does not use --TH"):
        thresholds("every-k", [0.5, 0.7])
    assert thresholds("gate", [1, 0.7, 1.0]) == [1.0, 0.7] and thresholds("always", [0.7, 0.7]) == [0.7]
    with pytest.raises(ConfigError, match="finite"):
        thresholds("gate", [math.nan])


def test_cli_flags_come_from_the_registry():
    parser = argparse.ArgumentParser()
    add_policy_flags(parser, exclude={"oracle"})
    choices = next(a for a in parser._actions if a.dest == "policy").choices
    assert "oracle" not in choices and "gate" in choices
    args = parser.parse_args(["--policy", "fusion", "--TH2", "0.9"])
    assert policy_from_args(args, 0.5) == PolicyConfig.of("fusion", 0.5, tau2=0.9)
    args = parser.parse_args(["--policy", "every-k", "--every-k", "4"])
    assert policy_from_args(args, 0.5).label() == "every-4"
    with pytest.raises(SystemExit):
        parser.parse_args(["--policy", "oracle"])


def test_a_new_policy_is_one_class(monkeypatch):
    """A plug-in with its own path and parameter: registered, offered on the command line, run by its path."""
    monkeypatch.setattr(policies, "_REGISTRY", dict(policies._REGISTRY))
    monkeypatch.setattr("lib.engine.paths.PATHS", dict(PATHS))
    half = register_path(PathKind("half", "H", False, "0.5 everywhere", lambda ctx, obj, tpl: (obj.prev_prob * 0 + 0.5,
                                                                                              None)))

    @policies.register
    class Alternate(Policy):
        name = "alternate"
        summary = "half on odd frames"
        paths = (COMPUTE, half)
        params = (Param("phase", "--alternate-phase", int, 1, "frames with index % 2 == phase take the half path"),)
        uses_tau = False
        needs_matching = False

        def decide(self, frame: ObjectFrame) -> PathKind:
            return half if frame.index % 2 == self.values["phase"] else COMPUTE

    assert policy_class("alternate") is Alternate and path_by_code("H") is half
    parser = argparse.ArgumentParser()
    add_policy_flags(parser)
    args = parser.parse_args(["--policy", "alternate", "--alternate-phase", "0"])
    config = policy_from_args(args, 0.7)
    assert config.params["phase"] == 0 and config.create().decide(ObjectFrame(1, 2, 1)) is half
    with pytest.raises(ConfigError, match="clashes"):
        register_path(PathKind("other", "H", False, "", half.run))
