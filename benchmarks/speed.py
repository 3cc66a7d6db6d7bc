"""Speed benchmark: per-module and whole-frame timings of the compute and the reuse path.

::

    python -m benchmarks.speed --ftext resnet18 --size 480 854 --dev cpu [--repeats N] [--warmup N]
                               [--threads N] [--amp bf16] [--int8-backbone] [--channels-last | --no-channels-last]
                               [--json OUT]

One object on a synthetic frame pair (a textured background and an elliptic object that moves by a
few pixels), with random-init weights: timings and FLOPs depend on shapes, not on weight values. What
is timed, each after ``--warmup`` untimed runs, ``--repeats`` times (median, quartiles, min, max):

* the modules, each called alone on the frame's real inputs: backbone to stride 8, deep backbone,
  template matching + gate, target-model apply, target-model update (memory insertion + one CG run
  with the evaluation settings), refiner of the compute path (deep stages, shallow stages,
  upsampler), refiner of the reuse path (delta-generator, refine-translator, shallow stages,
  upsampler);
* whole frames through an inference session (:meth:`lib.engine.session.InferenceSession.step`, from the
  RGB array to the label map): a compute-path frame (tau = 1) without the CG update (7 of 8 computed
  frames), the compute-path frame that runs the CG update (every ``train_skipping``-th computed
  frame, memory as after the first 7 computed frames), a reuse-path frame (tau = -1) and a warp-path
  frame (``warp-every-k``: optical flow back to the first frame, no network; with the guided filter and with
  the shipped learned correction), and at sizes that are multiples of 8 three sparse-path frames
  (``sparse-gate``: a still frame, where only the mask-boundary tiles run, one where every tile changed, and
  that one with the shipped learned tile gate choosing the tiles). Each timed
  frame starts from the same session state, cloned untimed (:meth:`InferenceSession.clone`);
* TTVOS, the other base network (HRNet-W18-small-v1, random weights, the frame's own size): a tracked frame
  and a first frame (one object's initialisation and its frame) of the same scene, in the same rounds; and
  G-TTVOS at each placement (``frame``, ``s16``; docs/gttvos.md): a computed frame (tau 1) and a reused frame
  (tau -1), with their ratio.

All measurements run round-robin, one of each per round, so that a change of background load hits
them alike. The table gives every module's share of its path's frame time and FLOPs (lib.tools.flops); the
rest of a frame's time is the engine overhead row (merging, sigmoid, memory insertion, tensor
conversions). The reuse/compute ratios are given for time and FLOPs. Peak memory of one frame per
path: on the CPU the resident set size (``VmHWM`` of ``/proc/self/status``, reset through
``/proc/self/clear_refs`` before the frame), each path in a fresh process; on CUDA
``torch.cuda.max_memory_allocated``. CUDA timings use CUDA events.

``--amp bf16`` times every network in bf16 autocast, as ``evaluate.py --amp bf16`` runs them (the engine's
bf16-weight copies, G-FRTM in NHWC); the table's header names the CPU, the instruction sets it has (AVX2,
AVX-512, AVX512_BF16, AMX) and the ones ATen and oneDNN were limited to (``ATEN_CPU_CAPABILITY``,
``ONEDNN_MAX_CPU_ISA``), so a table says which CPU class it measured.

On a shared CPU, ``--threads 1`` gives far steadier numbers than several threads competing with
other processes.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from base.errors import ConfigError
from base.io import atomic_write_json
from lib.engine.core import EngineConfig, InferenceEngine, ObjectState
from lib.engine.policies import PolicyConfig
from lib.engine.session import InferenceSession
from lib.tools.cli import add_backbone_flags, add_device_flag, apply_threads, resolve_device, run_cli
from lib.tools.cpu import cpu_report
from lib.tools.flops import measure, path_flops
from models.backbone import FeatureExtractor
from models.gfrtm import GFRTM

GIGA = 1e-9
OUTPUT_BIAS = 4.0

# (key, label, path): path is "both", "compute" or "reuse" (where the module runs on a tracked frame)
MODULES: Tuple[Tuple[str, str, str], ...] = (
    ("backbone_stride8", "backbone to stride 8", "both"),
    ("template_matching_gate", "template matching + gate", "both"),
    ("backbone_deep", "deep backbone (stride 16, 32)", "compute"),
    ("target_model_apply", "target-model apply", "compute"),
    ("refiner_full", "refiner, compute path", "compute"),
    ("refiner_reuse", "refiner, reuse path", "reuse"),
)
OBJECT_COUNTS = (1, 2, 4)  # objects per frame of the several-objects measurement
FRAMES: Tuple[Tuple[str, str], ...] = (
    ("frame_compute", "frame: compute path"),
    ("frame_reuse", "frame: reuse path"),
    ("frame_compute_cg", "frame: compute path + CG update"),
    ("frame_warp", "frame: warp path (optical flow, no network)"),
    ("frame_warp_learned", "frame: warp path, learned correction"),
)
SPARSE_FRAMES: Tuple[Tuple[str, str], ...] = (
    ("frame_sparse_still", "frame: sparse path, still frame (boundary tiles)"),
    ("frame_sparse_moving", "frame: sparse path, every tile changed"),
    ("frame_sparse_learned", "frame: sparse path, learned tile gate, all changed"),
)


# --- measurement helpers ----------------------------------------------------------------------


@dataclasses.dataclass
class Timing:
    """Repeated wall-clock measurements of one thing, in seconds."""

    samples: List[float]

    def summary(self) -> Dict[str, float]:
        """median, q1, q3, min, max in milliseconds."""
        ms = sorted(s * 1e3 for s in self.samples)
        if len(ms) >= 2:
            q1, _, q3 = statistics.quantiles(ms, n=4, method="inclusive")
        else:
            q1 = q3 = ms[0]
        return {"median_ms": statistics.median(ms), "q1_ms": q1, "q3_ms": q3, "min_ms": ms[0], "max_ms": ms[-1]}


Job = Tuple[Callable[[object], object], Optional[Callable[[], object]]]
"""(fn, setup): ``fn(setup())`` is timed, ``setup()`` (untimed) may be None."""


class Stopwatch:
    """Times callables on a device: CUDA events on CUDA, ``time.perf_counter`` otherwise.

    :meth:`time_interleaved` runs the jobs round-robin (``warmup`` untimed rounds, then ``repeats``
    timed ones, each round in a rotated order), so that a change of background load affects every
    job alike instead of one job's whole series.
    """

    def __init__(self, device: torch.device, repeats: int, warmup: int):
        self.device = device
        self.repeats = repeats
        self.warmup = warmup

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def once(self, fn: Callable[[object], object], state: object) -> float:
        """Seconds taken by ``fn(state)``."""
        self._sync()
        if self.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn(state)
            end.record()
            torch.cuda.synchronize(self.device)
            return start.elapsed_time(end) / 1e3
        begin = time.perf_counter()
        fn(state)
        return time.perf_counter() - begin

    def time_interleaved(self, jobs: Dict[str, Job]) -> Dict[str, Timing]:
        names = list(jobs)
        samples: Dict[str, List[float]] = {name: [] for name in names}
        for run in range(self.warmup + self.repeats):
            shift = run % len(names)
            for name in names[shift:] + names[:shift]:
                fn, setup = jobs[name]
                elapsed = self.once(fn, setup() if setup is not None else None)
                if run >= self.warmup:
                    samples[name].append(elapsed)
        return {name: Timing(values) for name, values in samples.items()}


class PeakMemory:
    """Peak memory of a block of code: RSS on the CPU, allocated CUDA memory on CUDA (bytes)."""

    STATUS = Path("/proc/self/status")

    def __init__(self, device: torch.device):
        self.device = device

    def _status(self) -> Dict[str, int]:
        text = self.STATUS.read_text()
        return {key: int(re.search(rf"{key}:\s+(\d+)", text).group(1)) * 1024 for key in ("VmRSS", "VmHWM")}

    def measure(self, fn: Callable[[], object]) -> Dict[str, object]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            before = torch.cuda.memory_allocated(self.device)
            fn()
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
            return {"kind": "cuda max_memory_allocated", "peak_bytes": peak, "increase_bytes": peak - before}
        if not self.STATUS.is_file():
            fn()
            return {"kind": "unavailable (no /proc/self/status)", "peak_bytes": None, "increase_bytes": None}
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            reset = True
        except OSError:
            reset = False
        before = self._status()["VmRSS"]
        fn()
        peak = self._status()["VmHWM"]
        kind = "RSS (VmHWM)" if reset else "RSS (VmHWM of the whole process: could not reset it)"
        return {"kind": kind, "peak_bytes": peak, "increase_bytes": peak - before if reset else None}


# --- the scene --------------------------------------------------------------------------------


def synthetic_frames(height: int, width: int, seed: int = 0) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two (H, W, 3) uint8 frames and the (H, W) uint8 object mask of the first.

    A smooth random background with noise; an ellipse (about 1/10 of the image) of another colour,
    moved by (2, 3) pixels in the second frame.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    phases = rng.uniform(0, 2 * np.pi, size=3)
    background = np.stack([np.sin(xx / 23 + p) + np.cos(yy / 17 - p) for p in phases], axis=-1)
    background = 127 + 50 * background + rng.normal(0, 12, size=(height, width, 3))
    cy, cx, ry, rx = height / 2, width / 2, max(height / 5, 3), max(width / 6, 3)
    mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    colour = np.array([200.0, 60.0, 40.0]) + rng.normal(0, 10, size=(height, width, 3))
    frame0 = np.where(mask[..., None], colour, background).clip(0, 255).astype(np.uint8)
    frame1 = np.roll(frame0, shift=(2, 3), axis=(0, 1))
    return frame0, frame1, mask.astype(np.uint8)


# --- the benchmark ----------------------------------------------------------------------------


COMPUTE_POLICY = PolicyConfig("gate", 1.0)  # P_gate > 1 never holds: every frame computes
REUSE_POLICY = PolicyConfig("gate", -1.0)  # every frame reuses
WARP_POLICY = PolicyConfig.of("warp-every-k", k=10**9, refine="guided")  # every frame warps, guided filter
SPARSE_POLICY = PolicyConfig("sparse-gate", -1.0)  # every frame takes the sparse path


def warp_learned_policy() -> PolicyConfig:
    """Every frame warps, corrected by the shipped learned corrector (read when first asked for)."""
    return PolicyConfig.of("warp-every-k", k=10**9, refine="learned")


def sparse_learned_policy() -> PolicyConfig:
    """Every frame takes the sparse path, its tiles chosen by the shipped learned tile gate."""
    return PolicyConfig.of("sparse-gate", -1.0, select="learned")


@dataclasses.dataclass
class Scene:
    """The networks, the engine, the frames and the session right after the object's initialisation."""

    model: GFRTM
    backbone: FeatureExtractor
    engine: InferenceEngine
    frame0: np.ndarray
    frame1: np.ndarray
    mask0: np.ndarray
    initial: InferenceSession  # one object, initialised on frame 0; decides with COMPUTE_POLICY
    several: Dict[int, InferenceSession]  # N -> N objects (the ellipse cut into N bands) initialised on frame 0

    def session(self, path: str, start: Optional[InferenceSession] = None) -> InferenceSession:
        """An independent copy of ``start`` (default: the initial session) that takes ``path`` (compute, reuse,
        warp, warp_learned) on every frame."""
        start = self.initial if start is None else start
        if path == "compute":
            return start.clone()
        if path == "warp_learned":
            return start.clone(warp_learned_policy())
        return start.clone({"reuse": REUSE_POLICY, "warp": WARP_POLICY}[path])

    def frame(self, session: InferenceSession) -> np.ndarray:
        """The next frame (frame 1's image) in ``session``, which advances; the label map."""
        return session.step(self.frame1).labels


def engine_counted(engine: InferenceEngine, run: Callable[[], object]) -> int:
    """FLOPs the engine's meter counts for ``run()`` (switched on for the call: the timing engine counts none)."""
    meter = engine.flops
    enabled, before = meter.enabled, meter.total
    meter.enabled = True
    try:
        run()
    finally:
        meter.enabled = enabled
    return meter.total - before


def build_scene(ftext: str, size: Tuple[int, int], device: torch.device, seed: int,
                channels_last: Optional[bool], several: bool = True, amp: Optional[str] = None,
                int8_backbone: bool = False) -> Scene:
    """Random-init networks (seeded), synthetic frames, and the object initialised on frame 0."""
    height, width = size
    torch.manual_seed(seed)
    model = GFRTM(ftext)
    # A random network predicts p ~ 0.5 everywhere, i.e. an empty mask, and the engine would then skip
    # the target-model update. A positive bias on the last conv makes the predicted mask non-empty, so
    # the engine stores samples and runs CG as with a trained model (costs do not depend on values).
    with torch.no_grad():
        model.refiner.project.conv2.bias.fill_(OUTPUT_BIAS)
    backbone = FeatureExtractor(ftext, "none")
    engine = InferenceEngine(model, backbone, EngineConfig(seed=seed, channels_last=channels_last, amp=amp,
                                                           int8_backbone=int8_backbone),
                             device, count_flops=False)
    frame0, frame1, mask0 = synthetic_frames(height, width, seed)
    initial = engine.new_session(COMPUTE_POLICY, name="synthetic")
    initial.step(frame0, {1: mask0})
    sessions = {}
    for n in OBJECT_COUNTS[1:] if several else ():
        sessions[n] = engine.new_session(COMPUTE_POLICY, name=f"synthetic-{n}")
        sessions[n].step(frame0, object_bands(mask0, n))
    return Scene(model, backbone, engine, frame0, frame1, mask0, initial, sessions)


def object_bands(mask: np.ndarray, n: int) -> np.ndarray:
    """An (H, W) map of ``n`` object ids: ``mask`` cut into ``n`` vertical bands of equal width (ids 1..n)."""
    cols = np.flatnonzero(mask.any(axis=0))
    edges = np.linspace(cols[0], cols[-1] + 1, n + 1).round().astype(int)
    ids = np.zeros(mask.shape, np.uint8)
    for k in range(n):
        band = np.zeros(mask.shape, bool)
        band[:, edges[k]:edges[k + 1]] = True
        ids[band & (mask > 0)] = k + 1
    return ids


def _peak_rss_of_one_frame(ftext: str, size: Tuple[int, int], seed: int, threads: int,
                           channels_last: Optional[bool], path: str, amp: Optional[str] = None,
                           int8_backbone: bool = False) -> Dict[str, object]:
    """In a fresh process: build the scene, then the peak RSS of the first frame on ``path``."""
    torch.set_num_threads(threads)
    scene = build_scene(ftext, size, torch.device("cpu"), seed, channels_last, several=False, amp=amp,
                        int8_backbone=int8_backbone)
    session = scene.session(path)
    return PeakMemory(torch.device("cpu")).measure(lambda: scene.frame(session))


def peak_memory_per_path(ftext: str, size: Tuple[int, int], device: torch.device, seed: int,
                         channels_last: Optional[bool], scene: Scene, amp: Optional[str] = None,
                         int8_backbone: bool = False
                         ) -> Dict[str, Dict[str, object]]:
    """Peak memory of one frame per path. On the CPU each path gets a fresh process, because the RSS of a
    process that already ran frames depends on what its allocator kept; on CUDA the allocator's peak is
    reset in this process."""
    if device.type == "cuda":
        memory = PeakMemory(device)
        return {path: memory.measure(lambda path=path: scene.frame(scene.session(path)))
                for path in ("compute", "reuse")}
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return {path: pool.apply(_peak_rss_of_one_frame,
                                 (ftext, size, seed, torch.get_num_threads(), channels_last, path, amp,
                                  int8_backbone))
                for path in ("compute", "reuse")}


def ttvos_scene(scene: Scene, device: torch.device, seed: int, amp: Optional[str] = None):
    """A TTVOS engine (HRNet-W18-small-v1, seeded random weights) at the scene's size, and a session whose
    object started on frame 0 (untimed)."""
    from models.ttvos import TTVOS

    torch.manual_seed(seed)
    engine = InferenceEngine(TTVOS("hrnetv2Sv1"), config=EngineConfig(size=None, amp=amp), device=device,
                             count_flops=False)
    session = engine.new_session(PolicyConfig("always"))
    session.step(scene.frame0, {1: scene.mask0})
    return engine, session


def gttvos_scene(scene: Scene, device: torch.device, seed: int, placement: str, amp: Optional[str] = None):
    """A G-TTVOS engine (HRNet-W18-small-v1, seeded random weights, ``placement``) at the scene's size, and a
    session whose object started on frame 0 (untimed); its gate is overridden per frame by the policy (tau 1
    computes, tau -1 reuses)."""
    from models.gttvos import GTTVOS

    torch.manual_seed(seed)
    engine = InferenceEngine(GTTVOS("hrnetv2Sv1", placement=placement),
                             config=EngineConfig(size=None, amp=amp), device=device, count_flops=False)
    session = engine.new_session(PolicyConfig("gate", 1.0))
    session.step(scene.frame0, {1: scene.mask0})
    return engine, session


GTTVOS_PLACEMENTS = ("frame", "s16")


def run_benchmark(ftext: str = "resnet18", size: Sequence[int] = (480, 854), device: str = "cpu",
                  repeats: int = 10, warmup: int = 2, threads: Optional[int] = None, seed: int = 0,
                  channels_last: Optional[bool] = None, log: Callable[[str], None] = lambda line: None,
                  amp: Optional[str] = None, int8_backbone: bool = False) -> Dict[str, object]:
    """Measure everything (see the module docstring); returns the JSON-ready result. ``channels_last`` None: the
    base networks' own layouts; ``amp`` ``"bf16"``: every network in bf16 autocast (the engine's bf16 copies)."""
    dev = resolve_device(device)
    if repeats < 1 or warmup < 0:
        raise ConfigError(f"need --repeats >= 1 and --warmup >= 0, got {repeats} and {warmup}")
    height, width = (int(s) for s in size)
    if min(height, width) < 32:
        raise ConfigError(f"--size must be at least 32x32, got {height}x{width}")
    apply_threads(threads)
    log("initialising the object (first-frame augmentation + GN/CG)")
    scene = build_scene(ftext, (height, width), dev, seed, channels_last, amp=amp, int8_backbone=int8_backbone)
    # the networks the engine runs (under amp its bf16 copies, else the scene's own)
    model, backbone, engine, frame1, mask0 = scene.engine.model, scene.engine.backbone, scene.engine, scene.frame1, \
        scene.mask0
    initial = scene.initial.objects[1]  # the object right after its initialisation on frame 0
    train_skipping = engine.config.target.train_skipping
    with torch.inference_mode():
        image1 = engine.frame_tensor(frame1)
        feats1 = engine.base.deep_features(engine.base.frame_features(image1), (height, width))

    # The session before the computed frame that runs CG: train_skipping - 2 computed frames after init
    # (init's own apply counts as one, spec 6.3 item 18), run untimed.
    before_cg = scene.session("compute")
    for _ in range(train_skipping - 2):
        scene.frame(before_cg)
    target = before_cg.objects[1].target
    assert (target.frame_count + 1) % train_skipping == 0
    assert target.memory.current_size == initial.target.memory.current_size + train_skipping - 2, \
        "the engine did not store the computed frames in the target model's memory"
    memory_after_cg = target.memory.current_size + 1

    with torch.inference_mode():
        score = engine.base.target_score(scene.session("compute").objects[1].target, feats1["layer4"])
        with engine.autocast():
            tpl_s = model.match(feats1["layer3"], initial.prev_score, initial.template)
        soft_mask = torch.from_numpy(mask0).to(dev).float()[None, None]
    applied = scene.session("compute").objects[1].target  # apply() only counts frames and caches its projection
    size_hw = (height, width)

    def inference(fn: Callable[[], object]) -> Callable[[object], object]:
        def run(_: object) -> object:
            with torch.inference_mode(), engine.autocast():
                return fn()
        return run

    def refine_reuse() -> torch.Tensor:
        delta = model.delta(tpl_s)
        return model.shallow(model.translate(initial.prev_refine, delta), initial.prev_score + delta,
                             feats1["layer3"], feats1["layer2"], size_hw)

    def applied_before_update() -> ObjectState:
        state = before_cg.clone().objects[1]
        engine.base.target_score(state.target, feats1["layer4"])  # frame_count becomes a multiple of 8
        return state

    def update(state: ObjectState) -> None:
        with torch.inference_mode(False):
            assert state.target.update(soft_mask.clone())

    def frame(path: str, start: Optional[InferenceSession] = None) -> Job:
        return scene.frame, (lambda: scene.session(path, start))

    # The sparse path reuses the previous frame's shallow maps: from a session whose last frame (frame 0 again,
    # run densely: its first tracked frame) left them, the still frame 0 activates only the mask-boundary tiles
    # and frame 1 (the whole scene moved) every tile. Only for sizes the tiles fit (multiples of 8).
    sparse_jobs: Dict[str, Job] = {}
    sparse_flops: Dict[str, float] = {}
    if height % 8 == 0 and width % 8 == 0:
        sparse_start = scene.initial.clone(SPARSE_POLICY)
        sparse_start.step(scene.frame0)
        learned_start = scene.initial.clone(sparse_learned_policy())
        learned_start.step(scene.frame0)
        for key, image, start in (("frame_sparse_still", scene.frame0, sparse_start),
                                  ("frame_sparse_moving", frame1, sparse_start),
                                  ("frame_sparse_learned", frame1, learned_start)):
            sparse_jobs[key] = ((lambda session, image=image: session.step(image).labels), start.clone)
            sparse_flops[key] = measure(lambda image=image, start=start: start.clone().step(image)) * GIGA
    # The warp frames as the engine's own meter counts them in evaluations: the flow, warps and filters from
    # their operations (OpenCV runs them outside torch), the learned correction's convolutions by torch.
    warp_flops = {key: engine_counted(engine, lambda path=path: scene.session(path).step(frame1)) * GIGA
                  for key, path in (("frame_warp", "warp"), ("frame_warp_learned", "warp_learned"))}

    jobs: Dict[str, Job] = {
        "backbone_stride8": (inference(lambda: backbone.forward_f8(image1)), None),
        "backbone_deep": (inference(lambda: backbone.forward_deep(feats1["layer3"])), None),
        "template_matching_gate": (inference(lambda: float(model.reuse_probability(
            model.gate_logits(model.match(feats1["layer3"], initial.prev_score, initial.template)).float())[0])),
            None),
        "target_model_apply": (inference(lambda: engine.base.target_score(applied, feats1["layer4"])), None),
        "refiner_full": (inference(lambda: model.shallow(model.deep(score, feats1["layer5"], feats1["layer4"]),
                                                         score, feats1["layer3"], feats1["layer2"], size_hw)), None),
        "refiner_reuse": (inference(refine_reuse), None),
        "target_model_update": (update, applied_before_update),
        "frame_compute": frame("compute"),
        "frame_reuse": frame("reuse"),
        "frame_compute_cg": frame("compute", before_cg),
        "frame_warp": frame("warp"),
        "frame_warp_learned": frame("warp_learned"),
        **sparse_jobs,
        # the first frame: augmentation, backbone on the augmented copies, GN/CG, template (a fresh session)
        "first_frame_init": ((lambda session: session.step(scene.frame0, {1: scene.mask0})),
                             (lambda: engine.new_session(COMPUTE_POLICY))),
        **{f"frame_compute_objects_{n}": frame("compute", scene.several[n]) for n in OBJECT_COUNTS[1:]},
    }
    # TTVOS, the other base network (HRNet-W18-small-v1, random weights): a tracked frame and a first frame of the
    # same scene through its own session
    ttvos_engine, ttvos_start = ttvos_scene(scene, dev, seed, amp)
    jobs["ttvos_frame"] = ((lambda session: session.step(frame1).labels), ttvos_start.clone)
    jobs["ttvos_first_frame"] = ((lambda session: session.step(scene.frame0, {1: scene.mask0}).labels),
                                 (lambda: ttvos_engine.new_session(PolicyConfig("always"))))
    # G-TTVOS (random weights) at each placement: a computed frame (tau 1: the prefix, matching and gate, then
    # TTVOS) and a reused frame (tau -1), from the same session state
    gttvos = {}
    for placement in GTTVOS_PLACEMENTS:
        g_engine, g_start = gttvos_scene(scene, dev, seed, placement, amp)
        gttvos[placement] = (g_engine, g_start)
        for path, tau in (("compute", 1.0), ("reuse", -1.0)):
            jobs[f"gttvos_{placement}_{path}"] = (
                (lambda session: session.step(frame1).labels),
                (lambda start=g_start, tau=tau: start.clone(PolicyConfig("gate", tau))))
    log(f"timing {len(jobs)} measurements round-robin, {warmup} + {repeats} rounds")
    timings = Stopwatch(dev, repeats, warmup).time_interleaved(jobs)
    assert scene.session("reuse").step(frame1).paths[1].reuses, "tau = -1 must reuse"
    assert not scene.session("compute").step(frame1).paths[1].reuses, "tau = 1 must compute"
    assert scene.session("warp").step(frame1).paths[1].name == "warp"
    assert scene.session("warp_learned").step(frame1).paths[1].name == "warp"

    log("peak memory per path")
    peak = peak_memory_per_path(ftext, (height, width), dev, seed, channels_last, scene, amp, int8_backbone)

    log("counting FLOPs")
    flops = path_flops(ftext, (height, width), engine.config.target.c_channels)
    state = applied_before_update()
    flops_update = measure(update, state) * GIGA
    result = assemble(ftext, (height, width), dev, torch.get_num_threads(), repeats, warmup, timings, flops,
                      flops_update, peak, memory_after_cg, train_skipping, {**sparse_flops, **warp_flops})
    result["channels_last"] = engine.channels_last
    result["amp"] = amp
    result["int8_backbone"] = int8_backbone
    result["cpu"] = cpu_report()
    # one object's initialisation (augmentation, backbone on the copies, GN/CG, template) and its frame
    result["first_frame"] = {"label": "first frame: one object's init + its frame",
                             **timings["first_frame_init"].summary()}
    one = result["frames"]["frame_compute"]["median_ms"]
    ttvos_gflops = engine_counted(ttvos_engine, lambda: ttvos_start.clone().step(frame1)) * GIGA
    result["ttvos"] = {"backbone": "hrnetv2Sv1",
                       "frame": {**timings["ttvos_frame"].summary(), "gflops": ttvos_gflops},
                       "first_frame": timings["ttvos_first_frame"].summary()}
    result["ttvos"]["frame_vs_gfrtm_compute"] = result["ttvos"]["frame"]["median_ms"] / one
    result["gttvos"] = {}
    for placement, (g_engine, g_start) in gttvos.items():
        paths = {}
        for path, tau in (("compute", 1.0), ("reuse", -1.0)):
            session = g_start.clone(PolicyConfig("gate", tau))
            counted = engine_counted(g_engine, lambda session=session: session.step(frame1)) * GIGA
            assert session.history[1].paths[session.index - 1].reuses == (path == "reuse")
            paths[path] = {**timings[f"gttvos_{placement}_{path}"].summary(), "gflops": counted}
        result["gttvos"][placement] = {
            **paths, "reuse_vs_compute_time": paths["reuse"]["median_ms"] / paths["compute"]["median_ms"],
            "reuse_vs_compute_flops": paths["reuse"]["gflops"] / paths["compute"]["gflops"],
            "compute_vs_ttvos_time": paths["compute"]["median_ms"] / result["ttvos"]["frame"]["median_ms"]}
    result["objects"] = {"1": {"median_ms": one, "vs_one_object": 1.0, "target": 1.0}}
    for n in OBJECT_COUNTS[1:]:
        median = timings[f"frame_compute_objects_{n}"].summary()["median_ms"]
        result["objects"][str(n)] = {"median_ms": median, "vs_one_object": median / one,
                                     "target": 1 + 0.35 * (n - 1)}
    return result


def assemble(ftext: str, size: Tuple[int, int], device: torch.device, threads: int, repeats: int, warmup: int,
             timings: Dict[str, Timing], flops: Dict[str, object], flops_update: float,
             peak: Dict[str, Dict[str, object]], memory_samples: int, train_skipping: int,
             extra_flops: Optional[Dict[str, float]] = None) -> Dict[str, object]:
    """Build the result dict: rows with medians, spreads, GFLOPs and per-path shares; ratios."""
    m: Dict[str, float] = flops["modules"]  # type: ignore[assignment]
    head = m["refiner_shallow_stages"] + m["upsampler"]
    gflops = {
        "backbone_stride8": m["backbone_stride8"],
        "template_matching_gate": m["template_matching"] + m["gate"],
        "backbone_deep": m["backbone_deep"],
        "target_model_apply": m["target_model_apply"],
        "refiner_full": m["refiner_deep_stages"] + head,
        "refiner_reuse": m["delta_generator"] + m["refine_translator"] + head,
        "target_model_update": flops_update,
        "frame_compute": float(flops["full"]),
        "frame_reuse": float(flops["reuse"]),
        "frame_compute_cg": float(flops["full"]) + flops_update,
        "frame_warp": 0.0,
        "frame_warp_learned": 0.0,
        # the sparse frames' whole steps as counted (backbone, matching, gate, translator, tiles); the warp frames'
        # flow and filters from their operations, the learned correction's convolutions as counted
        **(extra_flops or {}),
    }
    stats = {key: t.summary() for key, t in timings.items()}
    frame_of = {"compute": "frame_compute", "reuse": "frame_reuse"}
    rows = []
    for key, label, path in MODULES:
        row = {"key": key, "label": label, "path": path, **stats[key], "gflops": gflops[key], "share": {}}
        for p, frame in frame_of.items():
            if path in ("both", p):
                row["share"][p] = {"time_pct": 100 * stats[key]["median_ms"] / stats[frame]["median_ms"],
                                   "flops_pct": 100 * gflops[key] / gflops[frame]}
        rows.append(row)
    overhead = {"key": "engine_overhead", "label": "engine overhead (frame - modules)", "path": "both",
                "median_ms": None, "gflops": 0.0, "share": {}}
    for p, frame in frame_of.items():
        parts = sum(r["median_ms"] for r in rows if p in r["share"])
        flops_rest = gflops[frame] - sum(r["gflops"] for r in rows if p in r["share"])
        overhead["share"][p] = {"time_pct": 100 * (stats[frame]["median_ms"] - parts) / stats[frame]["median_ms"],
                                "flops_pct": 100 * round(flops_rest / gflops[frame], 9)}
        overhead[f"{p}_ms"] = stats[frame]["median_ms"] - parts
    rows.append(overhead)
    update_label = f"target-model update (CG, {memory_samples} samples)"
    rows.append({"key": "target_model_update", "label": update_label, "path": f"compute, every {train_skipping}th",
                 **stats["target_model_update"], "gflops": gflops["target_model_update"], "share": {}})
    frames = {key: {"label": label, **stats[key], "gflops": gflops[key]}
              for key, label in FRAMES + SPARSE_FRAMES if key in stats}
    plain, with_cg = stats["frame_compute"]["median_ms"], stats["frame_compute_cg"]["median_ms"]
    amortised_ms = ((train_skipping - 1) * plain + with_cg) / train_skipping
    amortised_gflops = gflops["frame_compute"] + flops_update / train_skipping
    frames["frame_compute_amortised"] = {
        "label": f"frame: compute path, amortised ({train_skipping - 1} plain + 1 with CG)",
        "median_ms": amortised_ms, "gflops": amortised_gflops}
    reuse_ms = stats["frame_reuse"]["median_ms"]
    ratios = {"time": reuse_ms / plain, "flops": gflops["frame_reuse"] / gflops["frame_compute"],
              "time_vs_amortised": reuse_ms / amortised_ms,
              "flops_vs_amortised": gflops["frame_reuse"] / amortised_gflops,
              "warp_time": stats["frame_warp"]["median_ms"] / plain,
              "warp_learned_time": stats["frame_warp_learned"]["median_ms"] / plain,
              **{f"{key[6:]}_time": stats[key]["median_ms"] / plain for key, _ in SPARSE_FRAMES if key in stats}}
    return {
        "ftext": ftext, "size": list(size), "device": str(device), "threads": threads, "repeats": repeats,
        "warmup": warmup, "torch": torch.__version__,
        "weights": (f"random initialisation (timings and FLOPs depend on shapes only); last conv bias {OUTPUT_BIAS:g} "
                    "so that the predicted mask is non-empty and the target model is updated as in real use"),
        "rows": rows, "frames": frames, "ratios": ratios, "peak_memory": peak,
    }


def _fmt_ms(value: Optional[float]) -> str:
    return "" if value is None else f"{value:9.2f}"


def format_table(result: Dict[str, object]) -> str:
    """The human-readable table of a :func:`run_benchmark` result."""
    h, w = result["size"]
    lines = [
        f"G-FRTM speed, {result['ftext']} at {h}x{w} on {result['device']} ({result['threads']} threads"
        f"{', channels-last' if result.get('channels_last') else ''}"
        f"{', bf16 autocast' if result.get('amp') == 'bf16' else ', float32'}"
        f"{', int8 backbone' if result.get('int8_backbone') else ''}), one object",
        *([f"CPU: {result['cpu']['summary']}"] if result.get("cpu") and result["device"] == "cpu" else []),
        f"weights: {result['weights']}",
        f"{result['repeats']} timed runs after {result['warmup']} warm-up runs; times in ms: median [q1 - q3]",
        "",
        f"{'':56s} {'':>9s} {'':>19s} {'':>8s}   {'share of compute':^17s}   {'share of reuse':^17s}",
        f"{'component':56s} {'median':>9s} {'[q1 - q3]':>19s} {'GFLOPs':>8s}   {'time':>8s} {'FLOPs':>8s}   "
        f"{'time':>8s} {'FLOPs':>8s}",
    ]

    def share(row, path, what):
        s = row["share"].get(path)
        return f"{s[what]:7.1f}%" if s else f"{'-':>8s}"

    def spread(row):
        return f"[{row['q1_ms']:.2f} - {row['q3_ms']:.2f}]" if "q1_ms" in row else ""

    for row in result["rows"]:
        median = row["median_ms"]
        if row["key"] == "engine_overhead":
            median = None
        label = f"{row['label']} ({row['path']})"
        lines.append(f"{label:56s} {_fmt_ms(median):>9s} {spread(row):>19s} {row['gflops']:8.2f}   "
                     f"{share(row, 'compute', 'time_pct')} {share(row, 'compute', 'flops_pct')}   "
                     f"{share(row, 'reuse', 'time_pct')} {share(row, 'reuse', 'flops_pct')}")
    lines.append("")
    for frame in result["frames"].values():
        lines.append(f"{frame['label']:56s} {_fmt_ms(frame['median_ms']):>9s} {spread(frame):>19s} "
                     f"{frame['gflops']:8.2f}")
    first = result["first_frame"]
    lines += ["", f"{first['label']:56s} {_fmt_ms(first['median_ms']):>9s} {spread(first):>19s}"]
    lines.append("compute-path frame with N objects, ms (x one object; target): " + ", ".join(
        f"N={n}: {o['median_ms']:.2f} ({o['vs_one_object']:.2f}x, <= {o['target']:.2f}x)"
        for n, o in result["objects"].items()))
    if "ttvos" in result:
        t = result["ttvos"]
        lines += ["", f"{'TTVOS (hrnetv2Sv1) tracked frame':56s} {_fmt_ms(t['frame']['median_ms']):>9s} "
                      f"{spread(t['frame']):>19s} {t['frame']['gflops']:8.2f}   "
                      f"({t['frame_vs_gfrtm_compute']:.3f} of a G-FRTM compute frame)",
                  f"{'TTVOS first frame: one object init + its frame':56s} "
                  f"{_fmt_ms(t['first_frame']['median_ms']):>9s} {spread(t['first_frame']):>19s}"]
    for placement, g in result.get("gttvos", {}).items():
        for path in ("compute", "reuse"):
            label = f"G-TTVOS ({placement}) {path}d frame"
            lines.append(f"{label:56s} {_fmt_ms(g[path]['median_ms']):>9s} {spread(g[path]):>19s} "
                         f"{g[path]['gflops']:8.2f}")
        lines.append(f"  G-TTVOS ({placement}) reuse / compute: time {g['reuse_vs_compute_time']:.3f}, FLOPs "
                     f"{g['reuse_vs_compute_flops']:.3f}; its computed frame / TTVOS's: "
                     f"{g['compute_vs_ttvos_time']:.3f}")
    r = result["ratios"]
    lines += ["", f"G-FRTM reuse / compute: time {r['time']:.3f}, FLOPs {r['flops']:.3f} "
                  f"(vs the amortised compute frame: time {r['time_vs_amortised']:.3f}, "
                  f"FLOPs {r['flops_vs_amortised']:.3f})",
              f"warp / compute: time {r['warp_time']:.3f}, with the learned correction "
              f"{r['warp_learned_time']:.3f} (the flow's FLOPs estimated from its operations)"]
    if "sparse_still_time" in r:
        lines.append(f"sparse / compute: time {r['sparse_still_time']:.3f} on a still frame, "
                     f"{r['sparse_moving_time']:.3f} with every tile changed, "
                     f"{r['sparse_learned_time']:.3f} with the learned tile gate")
    else:
        lines.append("sparse path: not timed (it needs a size that is a multiple of 8)")
    for path, peak in result["peak_memory"].items():
        if peak["peak_bytes"] is None:
            lines.append(f"peak memory, {path} frame: {peak['kind']}")
            continue
        increase = peak["increase_bytes"]
        increase = "" if increase is None else f" (+{increase / 2**20:.1f} MiB in the frame)"
        lines.append(f"peak memory, {path} frame: {peak['peak_bytes'] / 2**20:.1f} MiB {peak['kind']}{increase}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Time the G-FRTM modules and the compute/reuse path frames")
    add_backbone_flags(parser, ftext_default="resnet18", pretrained_choices=())
    parser.add_argument("--size", type=int, nargs=2, default=[480, 854], metavar=("H", "W"))
    add_device_flag(parser, default="cpu")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per measurement")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs before them")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights and the scene")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                        help="EngineConfig.channels_last: NHWC (or --no-channels-last NCHW) networks; default: each "
                             "base network's own choice (G-FRTM NCHW, under --amp bf16 NHWC; TTVOS NHWC)")
    parser.add_argument("--amp", choices=["bf16"], default=None,
                        help="bf16 autocast for the networks (EngineConfig.amp; the target model stays float32)")
    parser.add_argument("--int8-backbone", action="store_true",
                        help="G-FRTM's backbone as the int8 copy (EngineConfig.int8_backbone, calibrated on the "
                             "bundled rollerblade frames); the TTVOS rows are unaffected")
    parser.add_argument("--json", metavar="OUT", default=None, help="also write the result as JSON to OUT")
    args = parser.parse_args(argv)
    result = run_benchmark(args.ftext, args.size, args.dev, args.repeats, args.warmup, args.threads, args.seed,
                           args.channels_last, log=lambda line: print(line, file=sys.stderr), amp=args.amp,
                           int8_backbone=args.int8_backbone)
    print(format_table(result))
    if args.json:
        atomic_write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
