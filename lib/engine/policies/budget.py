"""A frame-rate budget: compute a frame when the time left allows it, warp it by optical flow otherwise.

``--policy budget --budget-fps F`` holds an output rate of F frames per second on whatever machine runs it.
The policy keeps a schedule that starts at the first tracked frame: frame n (0, 1, ... counted from there) is
due ``(n + 1) / F`` seconds after the start. It measures what each kind of frame costs on this machine (a
running mean of the wall time from one frame's decision to the next's: the networks or the warp, the
object's update, and whatever the caller does between frames, decoding and writing included) and, per frame,
computes iff the frame would still be done by its due time at the compute cost; otherwise every object warps
its last computed map (the ``warp`` path, with the learned correction by default). Time saved on warp frames
pays for later computed frames, up to one computed frame's worth (so a machine faster than the budget does
not bank time for a later burst). With ``--budget-max-gap K`` an object computes at least every K frames
whatever the time (for machines too slow for the target: the rate then gives way).

The decisions depend on the machine's timing, so a run is not repeatable bit for bit; the frames per second
achieved are the run's ``fps_tracking`` (``evaluate.py``) or ``fps_end_to_end_tracking`` (``demo.py``).
"""

from __future__ import annotations

import re
import time
from typing import Any, Callable, Dict, Mapping, Optional

from base.errors import ConfigError
from lib.engine.paths import COMPUTE, PathKind
from lib.engine.policies import register
from lib.engine.policies.base import ObjectFrame, Param
from lib.engine.policies.warp import CORRECTOR, REFINE, WARP, _refine_suffix, _WarpPolicy

FPS = Param("fps", "--budget-fps", float, None, "the frame rate to hold (frames per second of the tracked frames)",
            "F")
MAX_GAP = Param("max_gap", "--budget-max-gap", int, 0,
                "compute each object at least every K frames, even past the budget (0: never forced)", "K")
COST_SMOOTHING = 0.25  # weight of the newest measurement in each path's running cost


@register
class BudgetPolicy(_WarpPolicy):
    name = "budget"
    summary = "hold --budget-fps: compute when the time left allows, warp by optical flow otherwise"
    params = (FPS, MAX_GAP, REFINE, CORRECTOR)
    uses_tau = False

    def __init__(self, config):
        super().__init__(config)
        self.clock: Callable[[], float] = time.perf_counter  # tests replace it
        self.period = 1.0 / float(self.values["fps"])
        self.cost: Dict[bool, Optional[float]] = {True: None, False: None}  # computed? -> seconds per frame
        self.start: Optional[float] = None
        self.frames = 0  # tracked frames decided so far
        self.index: Optional[int] = None  # the frame being decided and its decision
        self.computes = False
        self.last_decision = 0.0

    @classmethod
    def validate(cls, tau: float, params: Mapping[str, Any]) -> None:
        if params["fps"] is None or not params["fps"] > 0:
            raise ConfigError(f"policy budget needs --budget-fps > 0 (the frame rate to hold), got {params['fps']}")
        if params["max_gap"] < 0:
            raise ConfigError(f"policy budget needs --budget-max-gap >= 0, got {params['max_gap']}")
        super().validate(tau, params)

    @classmethod
    def label(cls, tau: float, params: Mapping[str, Any]) -> str:
        gap = f"-gap{params['max_gap']}" if params["max_gap"] else ""
        return f"budget-{params['fps']:g}fps{gap}" + _refine_suffix(params)

    @classmethod
    def owns_label(cls, label: str) -> bool:
        return re.fullmatch(r"budget-[0-9.e+-]+fps(-gap\d+)?(-none|-learned)?", label) is not None

    @classmethod
    def point_label(cls, label: str) -> str:
        return label.split("-")[1]

    @classmethod
    def curve(cls, label: str) -> str:
        variant = [v for v in label.split("-")[2:] if not v.startswith("gap")]
        return cls.name + "".join("-" + v for v in variant)

    def estimated_cost(self, computes: bool) -> float:
        """The running cost (seconds) of a computed or a warped frame; 0 until one was measured."""
        return self.cost[computes] or 0.0

    def _new_frame(self, index: int) -> None:
        now = self.clock()
        if self.index is None:
            self.start = now
        else:
            spent = now - self.last_decision
            old = self.cost[self.computes]
            self.cost[self.computes] = spent if old is None else (1 - COST_SMOOTHING) * old + COST_SMOOTHING * spent
            self.frames += 1
        self.index, self.last_decision = index, now
        # seconds behind the schedule at this frame's start (negative: ahead), banking at most one computed frame
        lag = (now - self.start) - self.frames * self.period
        bank = max(self.estimated_cost(True), self.period)
        if lag < -bank:  # move the schedule's start so that it is ``bank`` seconds ahead, no more
            self.start = now - self.frames * self.period + bank
            lag = -bank
        self.computes = lag + self.estimated_cost(True) <= self.period

    def decide(self, frame: ObjectFrame) -> PathKind:
        if frame.index != self.index:
            self._new_frame(frame.index)
        gap = self.values["max_gap"]
        if self.computes or (gap and frame.frames_since_compute >= gap):
            self.computes = True  # the frame's cost is a computed frame's
            return COMPUTE
        return WARP
