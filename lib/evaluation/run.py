"""Evaluation runs: track a dataset for one or more thresholds, write masks, measure, score.

Layout of an evaluation folder ``OUT``::

    OUT/summary.json                    one run per tau (schema in lib/evaluation/summary.py, extended below)
    OUT/tau_<v>/<seq>/<frame>.png       palette PNGs of object ids, original resolution
    OUT/tau_<v>/progress.json           finished sequences and their measurements (resume)
    OUT/tau_<v>_submission.zip          YouTube-VOS valid sets: Annotations/<vid>/<frame>.png

Measurements added to each run of summary.json (and to each of its sequences):

* ``fps``: frames / processing time over the whole dataset, object initialisation (first-frame
  augmentation and target-model optimisation) included; image reading and PNG writing excluded.
* ``fps_tracking``: tracked frames / their processing time, all initialisation work excluded.
* ``reuse_rate``: reused object-frames / tracked object-frames (initialisation frames excluded).
* ``reuse_rate_official``: the original code's figure: per object, reuses / frames from its start
  frame on, the start frame counted as a reuse; averaged over objects.
* ``gflops_per_frame``: FLOPs measured with torch.utils.flop_counter over the run (initialisation and
  target-model optimisation included) / frames.
* ``wall_seconds``: the sequences' wall-clock time from the first frame read to the last mask written (frames
  are decoded by a reader thread ahead of the networks and masks written by a writer thread behind them where
  there are spare cores, see ``--overlap-io``), and
  ``wall_over_processing``: that over the processing time of ``fps`` (1.0 = the file I/O is fully hidden);
  ``fps_end_to_end`` (frames over ``wall_seconds``) and ``fps_end_to_end_tracking`` (the same without each
  sequence's first frame: reading, tracking and writing the tracked frames).
* ``frames``, ``policy``, and ``tau``.
* ``worst_case_by_distance`` (scored datasets only): per-frame J binned by the number of frames since
  the object's last computed frame (0 on computed frames; the start frame counts as computed); per bin
  the count of scored object-frames, the mean, the minimum and the 5th percentile (numpy's linear
  interpolation) of J. Only the frames the benchmark scores count (YouTube-VOS: the annotated ones).

Each sequence of progress.json records, per object, its start frame index ``start`` and ``paths``: one
letter per frame from ``start + 1`` to the last frame (the path's code, :mod:`lib.engine.paths`: ``C``
computed, ``T`` translated = the paper's reuse path, ``P`` copied), so finished and resumed sequences keep
their per-frame decisions.
"""

from __future__ import annotations

import json
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Tuple
from typing import Sequence as Seq

import numpy as np
import torch
from tqdm import tqdm

from base.background import BackgroundWriter, prefetch, spare_cpu_cores
from base.errors import ConfigError
from base.io import atomic_path, atomic_write_json, write_index_png
from dataset.sequence import VideoSequence
from lib.engine.core import InferenceEngine
from lib.engine.paths import PATHS, path_by_code
from lib.engine.policies import PolicyConfig
from lib.engine.session import FrameOutput, SessionStats
from lib.evaluation.metrics import METRIC_KEYS, ObjectScore, format_table, score_prediction_folder, summarize

PROGRESS_FILE = "progress.json"
# (label, smallest distance, largest distance or None = unbounded): frames since the last computed frame.
DISTANCE_BINS: Tuple[Tuple[str, int, Optional[int]], ...] = (
    ("0", 0, 0), ("1", 1, 1), ("2", 2, 2), ("3-4", 3, 4), ("5-8", 5, 8), ("9-16", 9, 16), (">16", 17, None))


def tau_dirname(tau: float) -> str:
    """``tau_0.7``, ``tau_1``, ``tau_-1``."""
    return f"tau_{tau:g}"


@dataclass
class RunSpec:
    """Where and how one evaluation run writes (the policy and its threshold are :func:`run_dataset`'s)."""

    dataset: str
    out_dir: Path
    scored: bool
    submission_zip: bool
    overwrite: bool = False
    overlap_io: Optional[bool] = None  # reader/writer threads; None: only where there are spare cores


def track_sequence(engine: InferenceEngine, seq: VideoSequence, policy: Optional[PolicyConfig] = None,
                   on_frame: Optional[Callable[[FrameOutput], None]] = None, read_ahead: int = 0) -> SessionStats:
    """Track every frame of ``seq`` in a new session; ``on_frame`` receives each frame's output (untimed).

    Each object's given mask is passed on its start frame; with a policy that needs ground truth, every
    frame's annotation too. With ``read_ahead`` > 0 a background thread reads the frames (and masks) that many
    frames ahead of the networks.
    """
    session = engine.new_session(policy, name=seq.name)
    needs_gt = session.policy.needs_ground_truth
    if needs_gt:
        missing = [f for f in seq.frames if not seq.has_annotation(f)]
        if missing:
            raise ConfigError(f"policy {session.policy.name} needs ground truth on every frame; {seq.name} has "
                              f"none for {len(missing)} frames (e.g. {missing[0]})")
    def inputs():
        for index in range(len(seq)):
            new = {obj_id: seq.start_mask(obj_id) for obj_id in seq.objects_starting_at(index)}
            yield seq.image(index), new or None, seq.annotation(seq.frames[index]) if needs_gt else None

    for image, new, gt in prefetch(inputs(), depth=read_ahead):
        out = session.step(image, new, gt)
        if on_frame is not None:
            on_frame(out)
    return session.stats


def sequence_record(stats: SessionStats) -> Dict[str, object]:
    """The measurements of one finished sequence, as stored in progress.json.

    Per object: ``start`` (index of its given frame), ``paths`` (one path code per tracked frame, frames
    ``start + 1 ..`` in order), ``first_tracked`` and the gate probabilities.
    """
    objects = {}
    for obj_id, obj in stats.objects.items():
        frames = sorted(obj.paths)
        objects[str(obj_id)] = {
            "start": obj.start_index,
            "paths": "".join(obj.paths[i].code for i in frames),
            "first_tracked": frames[0] if frames else None,
            "p_reuse": [round(obj.p_reuse[i], 6) for i in frames if i in obj.p_reuse],
        }
        if obj.measures:
            objects[str(obj_id)]["measures"] = {name: {str(i): round(v, 6) for i, v in sorted(values.items())}
                                                for name, values in sorted(obj.measures.items())}
    return {"frames": stats.frames, "seconds": stats.seconds, "init_seconds": stats.init_seconds,
            "tracked_frames": stats.tracked_frames, "tracking_seconds": stats.tracking_seconds,
            "flops": stats.flops, "objects": objects}


def speed_and_reuse(records: List[Dict[str, object]]) -> Dict[str, float]:
    """fps, fps_tracking, reuse rates, GFLOPs/frame and frames over some sequence records."""
    frames = sum(r["frames"] for r in records)
    seconds = sum(r["seconds"] for r in records)
    tracked = sum(r["tracked_frames"] for r in records)
    tracking_seconds = sum(r["tracking_seconds"] for r in records)
    paths = [o["paths"] for r in records for o in r["objects"].values()]
    object_frames = sum(len(p) for p in paths)
    computing = "".join(p.code for p in PATHS.values() if p.computes)
    reuses = [sum(c not in computing for c in p) for p in paths]
    reused = sum(reuses)
    # Official: per object, (reuses + the start frame) / (tracked frames + the start frame).
    official = [(r + 1) / (len(p) + 1) for r, p in zip(reuses, paths)]
    return {
        "fps": frames / seconds if seconds > 0 else float("nan"),
        "fps_tracking": tracked / tracking_seconds if tracking_seconds > 0 else float("nan"),
        "reuse_rate": reused / object_frames if object_frames else 0.0,
        "reuse_rate_official": sum(official) / len(official) if official else 0.0,
        "gflops_per_frame": sum(r["flops"] for r in records) / frames * 1e-9 if frames else 0.0,
        "frames": frames,
        **_measure_means(records),
        **_wall_clock(records, seconds),
    }


def _measure_means(records: List[Dict[str, object]]) -> Dict[str, float]:
    """``<name>_mean`` of every per-object measure (e.g. ``active_tiles_mean``: the mean fraction of tiles a
    sparse frame computed), over the object-frames that have it."""
    values: Dict[str, List[float]] = {}
    for record in records:
        for obj in record["objects"].values():
            for name, per_frame in obj.get("measures", {}).items():
                values.setdefault(name, []).extend(per_frame.values())
    return {f"{name}_mean": float(np.mean(v)) for name, v in sorted(values.items()) if v}


def _wall_clock(records: List[Dict[str, object]], seconds: float) -> Dict[str, float]:
    """``wall_seconds`` (reading + tracking + writing the sequences), its ratio to the processing time and the
    end-to-end frame rate (``fps_end_to_end``; ``fps_end_to_end_tracking`` without each sequence's first frame,
    where the records give its wall time), when every record has it (records written before it was measured
    do not)."""
    if not records or any("wall_seconds" not in r for r in records):
        return {}
    wall = sum(float(r["wall_seconds"]) for r in records)
    frames = sum(r["frames"] for r in records)
    out = {"wall_seconds": wall, "wall_over_processing": wall / seconds if seconds > 0 else float("nan"),
           "fps_end_to_end": frames / wall if wall > 0 else float("nan")}
    if all("wall_first_seconds" in r for r in records):  # the frames after each sequence's first, end to end
        later = wall - sum(float(r["wall_first_seconds"]) for r in records)
        out["fps_end_to_end_tracking"] = (frames - len(records)) / later if later > 0 else float("nan")
    return out


def frames_since_compute(paths: str) -> np.ndarray:
    """Frames since the last computed frame for an object's start frame and each tracked frame.

    ``paths`` holds one path code per tracked frame (the frames after the start frame); the start frame
    (initialisation) counts as computed. E.g. ``"TTCT"`` -> ``[0, 1, 2, 0, 1]``.
    """
    distances = np.zeros(len(paths) + 1, dtype=np.int64)
    for k, code in enumerate(paths, start=1):
        distances[k] = 0 if path_by_code(code).computes else distances[k - 1] + 1
    return distances


def distance_bins(distances: Iterable[int], j_values: Iterable[float]) -> List[Dict[str, object]]:
    """Per :data:`DISTANCE_BINS` bin: count, mean, minimum and 5th percentile of the J values.

    Empty bins have count 0 and ``None`` statistics.
    """
    distances = np.asarray(list(distances), dtype=np.int64)
    j_values = np.asarray(list(j_values), dtype=np.float64)
    assert distances.shape == j_values.shape, "one distance per J value"
    rows = []
    for label, low, high in DISTANCE_BINS:
        inside = (distances >= low) & (distances <= (high if high is not None else np.iinfo(np.int64).max))
        values = j_values[inside]
        row: Dict[str, object] = {"distance": label, "min_distance": low, "max_distance": high,
                                  "count": int(values.size), "J-Mean": None, "J-Min": None, "J-P5": None}
        if values.size:
            row.update({"J-Mean": float(values.mean()), "J-Min": float(values.min()),
                        "J-P5": float(np.percentile(values, 5))})
        rows.append(row)
    return rows


def worst_case_by_distance(scores: Seq[ObjectScore], sequences: Seq[VideoSequence],
                           records: Dict[str, Dict[str, object]]) -> List[Dict[str, object]]:
    """J of every scored object-frame, binned by frames since the object's last computed frame.

    ``scores`` are the per-frame scores of the run (:func:`lib.evaluation.metrics.score_prediction_folder`),
    ``records`` the progress.json records holding each object's per-frame paths.
    """
    by_name = {s.name: s for s in sequences}
    distances: List[int] = []
    j_values: List[float] = []
    for score in scores:
        seq = by_name[score.sequence]
        obj = records[score.sequence]["objects"][str(score.object_id)]
        since = frames_since_compute(obj["paths"])
        for frame, j in zip(score.frames, score.j):
            offset = seq.frame_index(frame) - obj["start"]
            assert 0 <= offset < len(since), f"{score.sequence}/{frame}: not a tracked frame of object"
            distances.append(int(since[offset]))
            j_values.append(float(j))
    return distance_bins(distances, j_values)


class ProgressFile:
    """progress.json of one run folder: finished sequences and their records (written atomically)."""

    def __init__(self, run_dir: Path, reset: bool):
        self.path = run_dir / PROGRESS_FILE
        self.records: Dict[str, Dict[str, object]] = {}
        if self.path.is_file() and not reset:
            try:
                self.records = json.loads(self.path.read_text())["sequences"]
            except (json.JSONDecodeError, KeyError, TypeError):
                self.records = {}  # unreadable: everything is recomputed

    def finished(self, seq: VideoSequence, run_dir: Path) -> bool:
        """Recorded as finished and every PNG it must have is present."""
        return seq.name in self.records and all((run_dir / seq.name / f"{f}.png").is_file()
                                                for f in seq.save_frames)

    def add(self, name: str, record: Dict[str, object]) -> None:
        self.records[name] = record
        atomic_write_json(self.path, {"sequences": self.records})


def run_dataset(engine: InferenceEngine, policy: PolicyConfig, sequences: Seq[VideoSequence], spec: RunSpec,
                log: Callable[[str], None] = print) -> Dict[str, object]:
    """Track every sequence with ``policy`` (one session each); returns the run entry of summary.json.

    Frames are read ahead and masks written behind the networks in background threads when
    ``spec.overlap_io`` says so (None: where there are spare cores, :func:`base.background.spare_cpu_cores`).
    """
    overlap = spec.overlap_io
    if overlap is None:
        overlap = spare_cpu_cores(torch.get_num_threads(), engine.device.type)
    label, tau = policy.label(), policy.tau
    run_dir = spec.out_dir / tau_dirname(tau)
    run_dir.mkdir(parents=True, exist_ok=True)
    progress = ProgressFile(run_dir, reset=spec.overwrite)
    bar = tqdm(sequences, desc=f"{label} tau={tau:g}", unit="seq", dynamic_ncols=True)
    for seq in bar:
        bar.set_postfix_str(seq.name)
        if progress.finished(seq, run_dir):
            continue
        save = set(seq.save_frames)
        frame_bar = tqdm(total=len(seq), desc=seq.name, unit="frame", leave=False, dynamic_ncols=True)
        start = time.perf_counter()
        first: Dict[str, float] = {}
        with BackgroundWriter(threaded=overlap) as writer:  # with overlap, PNGs written behind the networks

            def write(out: FrameOutput, seq=seq, save=save, frame_bar=frame_bar, writer=writer, first=first,
                      start=start) -> None:
                frame = seq.frames[out.index]
                if frame in save:
                    writer.submit(write_index_png, run_dir / seq.name / f"{frame}.png", out.labels)
                if out.index == 0:
                    first["wall"] = time.perf_counter() - start
                frame_bar.update(1)

            stats = track_sequence(engine, seq, policy, on_frame=write, read_ahead=2 if overlap else 0)
        frame_bar.close()
        record = sequence_record(stats)
        record["wall_seconds"] = time.perf_counter() - start  # reading, tracking and writing, end to end
        record["wall_first_seconds"] = first.get("wall", 0.0)  # the first frame's part of it
        progress.add(seq.name, record)

    records = [progress.records[s.name] for s in sequences]
    run: Dict[str, object] = {"tau": tau, "policy": label, "overlap_io": overlap}
    per_seq = {s.name: speed_and_reuse([progress.records[s.name]]) for s in sequences}
    if spec.scored:
        scores = score_prediction_folder(sequences, run_dir)
        summary = summarize(scores)
        run.update({k: summary[k] for k in METRIC_KEYS})
        run["objects"] = summary["objects"]
        run["worst_case_by_distance"] = worst_case_by_distance(scores, sequences, progress.records)
        for name, row in summary["sequences"].items():
            per_seq[name].update(row)
        log(format_table(summary, f"{spec.dataset} {label} tau={tau:g}"))
    run.update(speed_and_reuse(records))
    run["sequences"] = per_seq
    if spec.submission_zip:
        run["submission"] = str(write_submission_zip(run_dir, sequences,
                                                     spec.out_dir / f"{tau_dirname(tau)}_submission.zip"))
    return run


def write_submission_zip(run_dir: Path, sequences: Seq[VideoSequence], path: Path) -> Path:
    """Zip ``Annotations/<vid>/<frame>.png`` (the YouTube-VOS server's layout), atomically."""
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for seq in sequences:
                for frame in seq.save_frames:
                    zf.write(run_dir / seq.name / f"{frame}.png", f"Annotations/{seq.name}/{frame}.png")
    return path


def format_runs(dataset: str, runs: List[Dict[str, object]]) -> str:
    """One line per run: policy, tau, J&F, J, F, FPS, fps_tracking, reuse rate, GFLOPs/frame, wall/processing."""
    lines = [f"{dataset}: {'policy':<10} {'tau':>6} {'J&F':>7} {'J':>7} {'F':>7} {'FPS':>7} "
             f"{'FPS trk':>7} {'reuse':>6} {'GFLOPs/fr':>9} {'wall/proc':>9}"]
    for run in runs:
        jf, j, f = (f"{run[k]:7.4f}" if k in run else f"{'-':>7}" for k in ("J&F-Mean", "J-Mean", "F-Mean"))
        wall = f"{run['wall_over_processing']:9.3f}" if "wall_over_processing" in run else f"{'-':>9}"
        lines.append(f"{'':{len(dataset) + 2}}{run['policy']:<10} {run['tau']:6g} {jf} "
                     f"{j} {f} {run['fps']:7.3f} {run['fps_tracking']:7.3f} "
                     f"{run['reuse_rate']:6.3f} {run['gflops_per_frame']:9.2f} {wall}")
    return "\n".join(lines)
