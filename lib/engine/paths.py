"""The paths an object can take on a tracked frame, each with its one-letter code.

A path says how an object's probability map on a frame is produced. The session runs whichever path the
object's policy chose by calling :attr:`PathKind.run`; it never tests a path's or a policy's name. The
three built-in paths (compute and translate run the base network's full and reuse paths through its seam,
:class:`~lib.engine.bases.base.BaseNetwork`):

==========  ====  ===================================================================================
compute     C     deep backbone (once per frame, shared by the objects), target-model score, all refiner
                  stages; becomes the object's new last computed frame, and its target model is updated
translate   T     the paper's reuse path: delta = delta-generator(tplS), score = last computed score +
                  delta, refined feature = refine-translator(last computed refined feature, delta),
                  then the shallow stages
copy        P     the object's previous probability map, unchanged (the paper's Fig. 7 "copy")
==========  ====  ===================================================================================

A new path (e.g. a flow-warped reuse) is a :class:`PathKind` with its own ``run``, registered with
:func:`register_path` in the policy module that takes it. Its code is stored per frame in progress.json
(``lib/evaluation/run.py``); every path whose ``computes`` is False counts as a reuse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, Optional, Tuple

from torch import Tensor

from base.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from lib.engine.state import FrameContext, ObjectState

# run(ctx, obj, tpl_s) -> (probability (H, W), logits (1, 1, H, W) or None)
PathRun = Callable[["FrameContext", "ObjectState", Optional[Tensor]], Tuple[Tensor, Optional[Tensor]]]


@dataclass(frozen=True)
class PathKind:
    """One path.

    Attributes:
        name: e.g. ``"translate"``; unique.
        code: one letter for the per-frame path strings of progress.json; unique.
        computes: the object's state becomes this frame's (last computed frame, score, refined feature) and
            its target model is updated with the merged mask. False: the frame counts as a reuse.
        summary: one line for help texts.
        run: produces the object's probability map; see :data:`PathRun`.
    """

    name: str
    code: str
    computes: bool
    summary: str
    run: PathRun

    @property
    def reuses(self) -> bool:
        return not self.computes

    def __repr__(self) -> str:
        return f"PathKind({self.name})"


PATHS: Dict[str, PathKind] = {}


def register_path(path: PathKind) -> PathKind:
    """Add ``path`` to :data:`PATHS` (its name and code must be new, or it is the same object)."""
    if len(path.code) != 1:
        raise ConfigError(f"path {path.name}: its code must be one letter, got {path.code!r}")
    for other in PATHS.values():
        if other is not path and (other.name == path.name or other.code == path.code):
            raise ConfigError(f"path {path.name} ({path.code}) clashes with path {other.name} ({other.code})")
    PATHS[path.name] = path
    return path


def path_by_code(code: str) -> PathKind:
    """The registered path of a one-letter code."""
    for path in PATHS.values():
        if path.code == code:
            return path
    raise ConfigError(f"unknown path code {code!r}; known: {', '.join(p.code for p in PATHS.values())}")


def _compute(ctx: FrameContext, obj: ObjectState, tpl_s: Optional[Tensor]):
    return ctx.engine.base.run_compute(ctx, obj)


def _translate(ctx: FrameContext, obj: ObjectState, tpl_s: Optional[Tensor]):
    assert tpl_s is not None, "the translate path needs template matching (Policy.needs_matching)"
    return ctx.engine.base.run_translate(ctx, obj, tpl_s)


def _copy(ctx: FrameContext, obj: ObjectState, tpl_s: Optional[Tensor]):
    return obj.prev_prob, None


COMPUTE = register_path(PathKind("compute", "C", True, "the full network", _compute))
TRANSLATE = register_path(PathKind("translate", "T", False, "delta-generator + refine-translator + shallow stages",
                                   _translate))
COPY = register_path(PathKind("copy", "P", False, "the previous probability map, unchanged", _copy))
