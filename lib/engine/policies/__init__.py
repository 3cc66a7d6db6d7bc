"""Reuse policies: per object and frame, which path to take. One module per policy family, registered here.

==================  ======================================================================================
``gate``            the paper: translate iff P_gate > tau (strict, as the official code), else compute
``always``          always compute (tau = 1: the FRTM-equivalent full path); the gate is not evaluated
``copy``            copy iff P_gate > tau, else compute
``fusion``          copy iff P_gate > TH2, translate iff tau < P_gate <= TH2, else compute (TH2 > tau)
``oracle``          translate iff IoU(current GT, GT of the last computed frame) > tau (paper Fig. 8 g_IoU);
                    needs ground truth on every frame
``every-k``         compute on every k-th frame since the object's last computed frame, translate otherwise
``warp-every-k``    compute every k-th frame, warp the last computed probability map by optical flow
                    otherwise (no network runs on a warp frame: GSVNet's key-frame schedule)
``warp-error``      warp iff 1 - the warp's photometric error around the object > tau, else compute
``budget``          hold ``--budget-fps``: compute a frame when the time left in the budget allows, warp it
                    otherwise (running estimates of both paths' cost on this machine)
``sparse-gate``     the gate; its reuse frames run the shallow stages and upsampler on the changed tiles only
                    (SpVOS-style; the other tiles keep the previous frame's maps)
==================  ======================================================================================

Adding a policy: a new module here with a :class:`~lib.engine.policies.base.Policy` subclass decorated with
:func:`register`, imported at the bottom of this file, and its test in ``tests/lib/engine/policies/``. The
command-line choices and flags (:func:`add_policy_flags`), the run labels of the report and the path codes
of the evaluation come from here.
"""

from __future__ import annotations

import argparse
from typing import Dict, Iterable, List, Optional, Type

from base.errors import ConfigError
from lib.engine.policies.base import ObjectFrame, Param, Policy, PolicyConfig, thresholds

_REGISTRY: Dict[str, Type[Policy]] = {}


def register(cls: Type[Policy]) -> Type[Policy]:
    """Class decorator: add a policy family under ``cls.name`` (names and flags must be unique)."""
    if not cls.name or not cls.paths:
        raise ConfigError(f"policy class {cls.__name__} needs a name and its paths")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ConfigError(f"policy {cls.name} is registered twice")
    for other in _REGISTRY.values():
        for param in cls.params:
            clash = next((p for p in other.params if p.flag == param.flag), None)
            if other is not cls and clash is not None and clash != param:
                raise ConfigError(f"policy {cls.name}: flag {param.flag} is already policy {other.name}'s")
    _REGISTRY[cls.name] = cls
    return cls


def policy_names() -> List[str]:
    """Registered policy names, in registration order."""
    return list(_REGISTRY)


def policy_class(name: str) -> Type[Policy]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown policy {name!r}; choose from {', '.join(_REGISTRY)}") from None


def policy_of_label(label: str) -> Optional[Type[Policy]]:
    """The policy family that made a run label (e.g. ``every-3`` -> every-k), or None."""
    return next((cls for cls in _REGISTRY.values() if cls.owns_label(label)), None)


def add_policy_flags(parser, *, exclude: Iterable[str] = ()) -> None:
    """``--policy`` with the registered choices (minus ``exclude``) and every policy's own flags."""
    excluded = set(exclude)
    names = [n for n in _REGISTRY if n not in excluded]
    lines = "; ".join(f"{n}: {_REGISTRY[n].summary}" for n in names)
    parser.add_argument("--policy", choices=names, default=None,
                        help=f"reuse policy (default: gate; always for a base network without a gate, such as "
                             f"TTVOS; {lines})")
    seen = set()
    for name in names:
        for param in _REGISTRY[name].params:
            if param.flag in seen:
                continue
            seen.add(param.flag)
            parser.add_argument(param.flag, dest=param.dest, type=param.type, default=param.default,
                                metavar=param.metavar, help=f"{param.help} (--policy {name})")


DEFAULT_POLICY = "gate"
GATELESS_DEFAULT_POLICY = "always"


def default_policy(args: argparse.Namespace, has_gate: bool = True) -> str:
    """``--policy`` as given, else the default for a base network with or without a reuse gate."""
    return args.policy or (DEFAULT_POLICY if has_gate else GATELESS_DEFAULT_POLICY)


def policy_from_args(args: argparse.Namespace, tau: float) -> PolicyConfig:
    """The :class:`PolicyConfig` of parsed :func:`add_policy_flags` flags at threshold ``tau`` (``--policy``
    unset: the gate)."""
    cls = policy_class(default_policy(args))
    return PolicyConfig(cls.name, tau, {p.name: getattr(args, p.dest) for p in cls.params})


# The built-in families, in the order of the table above (registration order = --policy choices' order).
from lib.engine.policies import gate, always, copying, fusion, oracle, every_k, warp, budget, sparse  # noqa: E402,F401,I001

__all__ = ["ObjectFrame", "Param", "Policy", "PolicyConfig", "add_policy_flags", "default_policy", "policy_class",
           "policy_from_args", "policy_names", "policy_of_label", "register", "thresholds"]
