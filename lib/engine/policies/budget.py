"""A frame-rate budget: compute a frame when the time left allows it, warp it by optical flow otherwise.

``--policy budget --budget-fps F`` holds an output rate of F frames per second on whatever machine runs it.
The policy keeps a schedule that starts at the first tracked frame: frame n (0, 1, ... counted from there) is
due ``(n + 1) / F`` seconds after the start. It measures what each kind of frame costs on this machine (the
median of the last 9 wall times from one frame's decision to the next's: the networks or the warp, the
object's update, and whatever the caller does between frames, decoding and writing included; each path's
first frame is a warm-up, not a sample) and, per frame, computes iff the frame would still be done by its due
time at the compute cost; otherwise every object warps its last computed map (the ``warp`` path, with the
learned correction by default). Time saved on warp frames pays for later computed frames, up to one computed
frame's worth (a machine faster than the budget banks no time for a later burst).

Peaks are spread out rather than paid back at once: the time of a computed frame beyond the median, as far
as such peaks recur (G-FRTM's target model re-optimises every 8th computed frame, at 3-5 times a frame's cost:
up to the second-largest cost of the last 17 computed frames), and the time beyond one period of each path's
first two frames (a warm-up, then its first measurement, decided without a measured cost: a first call at a
new size is twice as slow or more) become a debt, paid back by a third of what each warped frame saves. Computed
frames then come somewhat further apart for a while, instead of a run of 20 warped frames after each peak. A
one-off stall (a slow disk) beyond that is forgiven: the rate falls short of F by the stall instead of the
accuracy suffering for many frames; so is any delay beyond one computed frame's worth. With
``--budget-max-gap K`` an object computes at least every K frames whatever the time (for machines too slow for
the target: the rate then gives way).

The decisions depend on the machine's timing, so a run is not repeatable bit for bit. The rate it holds is the
end-to-end one of the tracked frames: ``fps_end_to_end_tracking`` in the summaries of ``evaluate.py`` and
``demo.py`` (``fps_tracking`` counts the networks' time alone).
"""

from __future__ import annotations

import re
import statistics
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, Mapping, Optional

from base.errors import ConfigError
from lib.engine.paths import COMPUTE, PathKind
from lib.engine.policies import register
from lib.engine.policies.base import ObjectFrame, Param
from lib.engine.policies.warp import CORRECTOR, REFINE, WARP, _refine_suffix, _WarpPolicy

FPS = Param("fps", "--budget-fps", float, None, "the frame rate to hold (frames per second of the tracked frames)",
            "F")
MAX_GAP = Param("max_gap", "--budget-max-gap", int, 0,
                "compute each object at least every K frames, even past the budget (0: never forced)", "K")
COST_WINDOW = 9  # each path's cost: the median of its last 9 frames (a stall does not move it)
PEAK_WINDOW = 17  # the computed frames whose second-largest cost bounds the time paid back (a recurring peak)


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
        # computed? -> the last frame times (seconds) of that kind: PEAK_WINDOW computed ones (the estimate takes
        # the last COST_WINDOW of them), COST_WINDOW warped ones
        self.costs: Dict[bool, Deque[float]] = {True: deque(maxlen=PEAK_WINDOW), False: deque(maxlen=COST_WINDOW)}
        self.warmed: Dict[bool, bool] = {True: False, False: False}
        self.start: Optional[float] = None
        self.debt = 0.0  # seconds taken out of the schedule (blind frames' and peaks' excess) not yet paid back
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
        """The running cost (seconds) of a computed or a warped frame: the median of its last
        :data:`COST_WINDOW` measurements, their minimum while there are fewer than 3; 0 before any. The first
        frame of each path is not measured: a first call's warm-up (oneDNN building its kernels for a new size,
        a module read from disk) must not stop computing for many frames."""
        costs = list(self.costs[computes])[-COST_WINDOW:]
        if not costs:
            return 0.0
        return statistics.median(costs) if len(costs) >= 3 else min(costs)

    def _new_frame(self, index: int) -> None:
        now = self.clock()
        if self.index is None:
            self.start = now
        else:
            self._close_frame(now - self.last_decision)
        self.index, self.last_decision = index, now
        # seconds behind the schedule at this frame's start (negative: ahead); at most one computed frame's time
        # either way: no bank for a later burst, and a delay beyond it (a stall, such as a slow disk) forgiven
        # instead of paid back by a long run of warped frames
        lag = (now - self.start) - self.frames * self.period
        window = max(self.estimated_cost(True), self.period)
        if abs(lag) > window:  # move the schedule's start so that it is ``window`` seconds off, no more
            lag = window if lag > 0 else -window
            self.start = now - self.frames * self.period - lag
        self.computes = lag + self.estimated_cost(True) <= self.period

    def _close_frame(self, elapsed: float) -> None:
        """Account for the frame just done, which took ``elapsed`` seconds."""
        computes = self.computes
        estimate = self.estimated_cost(computes)
        measured = bool(self.costs[computes])  # the frame was decided with a measured cost of its path
        if self.warmed[computes]:
            self.costs[computes].append(elapsed)
        self.warmed[computes] = True  # each path's first frame is a warm-up: not a cost sample
        peaks = sorted(self.costs[True])
        # time taken out of the lag, and the part of it owed (paid back slowly below; the rest is forgiven)
        excess = owed = 0.0
        if not measured:  # decided blind: its time beyond one period, all owed
            excess = owed = max(elapsed - self.period, 0.0)
        elif computes and elapsed > estimate:  # above the median: a peak, owed as far as peaks recur
            excess = elapsed - estimate
            owed = min(excess, max(peaks[-2] - estimate, 0.0) if len(peaks) >= 2 else 0.0)  # beyond: a one-off stall
        self.start += excess
        self.debt += owed
        self.frames += 1
        # the debt is paid back by a third of what each warped frame saves: computed frames somewhat sparser for
        # a while (at 30 fps about as long as G-FRTM's peaks take to recur) instead of a run of warps after a peak;
        # a debt that grows beyond 4 times the largest peak cannot be paid back so and is forgiven beyond that
        self.debt = min(self.debt, 4 * max(peaks[-1] if peaks else 0.0, self.period))
        saves = self.period - self.estimated_cost(False) if self.costs[False] else 0.0
        pay = min(self.debt, max(saves, 0.0) / 3)
        self.start -= pay
        self.debt -= pay

    def decide(self, frame: ObjectFrame) -> PathKind:
        if frame.index != self.index:
            self._new_frame(frame.index)
        gap = self.values["max_gap"]
        if self.computes or (gap and frame.frames_since_compute >= gap):
            self.computes = True  # the frame's cost is a computed frame's
            return COMPUTE
        return WARP
