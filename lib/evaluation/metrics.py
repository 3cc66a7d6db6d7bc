"""J&F scoring with the official DAVIS semi-supervised protocol.

The per-frame region similarity J (IoU; 1 when both masks are empty) and boundary F-measure (boundary
tolerance ceil(0.008 * image diagonal) px, disk dilation) come from the ``vos-benchmark`` package's
``Evaluator``; this module decides *which* frames are scored and aggregates:

* per object, the frames after its first (given) frame, the last annotated frame excluded
  (:attr:`dataset.sequence.VideoSequence.score_frames`);
* per object: mean, recall (fraction of frames > 0.5) and decay (mean of the first quarter of its
  frames minus mean of the last quarter);
* per dataset: the mean over **all objects** of those per-object values; J&F = (J-Mean + F-Mean) / 2.

vos-benchmark's own ``benchmark()`` entry point is not used: it calls ``exit()`` on a missing file and
writes ``results.csv`` into the prediction folder. Missing or mismatched predictions are reported here
as :class:`~base.errors.ScoringError` before any scoring starts.
"""

from __future__ import annotations

import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np

from base.errors import ReuseVOSError, ScoringError
from base.io import read_index_png
from dataset.sequence import VideoSequence

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from vos_benchmark.evaluator import Evaluator, get_iou

METRIC_KEYS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")


@dataclass
class ObjectScore:
    """Per-frame J and F of one object of one sequence (values in [0, 1])."""

    sequence: str
    object_id: int
    frames: Tuple[str, ...]
    j: np.ndarray
    f: np.ndarray


def region_similarity(pred: np.ndarray, gt: np.ndarray) -> float:
    """J alone (IoU, 1 when both are empty, vos-benchmark's rule) of one binary (H, W) prediction against one
    binary ground truth; no boundary F (cheaper than :func:`frame_scores`)."""
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    return float(get_iou(np.logical_and(pred, gt).sum(), pred.sum() + gt.sum()))


def frame_scores(pred: np.ndarray, gt: np.ndarray) -> Tuple[float, float]:
    """J and F of one binary prediction against one binary ground truth, both (H, W)."""
    scores = object_frame_scores([pred], [gt])
    return float(scores[0][0]), float(scores[1][0])


def object_frame_scores(preds: Iterable[np.ndarray], gts: Iterable[np.ndarray]
                        ) -> Tuple[np.ndarray, np.ndarray]:
    """Per-frame J and F of one object over a list of binary (H, W) prediction/GT pairs."""
    evaluator = Evaluator()
    # Register the object up front: otherwise frames where it is absent from both masks before it
    # was ever seen would be skipped, not scored 1 as the DAVIS protocol does.
    evaluator.objects_in_gt.add(1)
    for pred, gt in zip(preds, gts):
        if pred.shape != gt.shape:
            raise ScoringError(f"prediction is {pred.shape} but ground truth is {gt.shape}")
        evaluator.feed_frame(np.asarray(pred, dtype=np.uint8) != 0, np.asarray(gt, dtype=np.uint8) != 0)
    return (np.asarray(evaluator.object_iou[1], dtype=np.float64),
            np.asarray(evaluator.boundary_f[1], dtype=np.float64))


def statistics(values: np.ndarray) -> Tuple[float, float, float]:
    """(mean, recall, decay) of one object's per-frame values, as the DAVIS toolkit defines them.

    Decay splits the frames into four consecutive bins whose edges are the rounded positions
    ``linspace(1, n, 5)`` (1-based, each bin including its right edge) and returns the mean of the
    first bin minus the mean of the last.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(values.mean())
    recall = float((values > 0.5).mean())
    edges = (np.round(np.linspace(1, len(values), 5) + 1e-10) - 1).astype(np.int64)
    bins = [values[edges[i]:edges[i + 1] + 1] for i in range(4)]
    decay = float(bins[0].mean() - bins[3].mean())
    return mean, recall, decay


PredictionLoader = Callable[[str], np.ndarray]


def score_sequence(sequence: VideoSequence, load_prediction: PredictionLoader,
                   prediction_path: Optional[Callable[[str], Optional[Path]]] = None) -> List[ObjectScore]:
    """Score every object of ``sequence``; ``load_prediction(frame)`` gives an (H, W) id map, read from the file
    ``prediction_path(frame)`` when given (named in errors)."""
    needed = sorted({f for frames in sequence.score_frames.values() for f in frames},
                    key=sequence.frame_index)
    gt = {f: sequence.annotation(f) for f in needed}
    pred = {}
    for f in needed:
        p = load_prediction(f)
        if p.shape != gt[f].shape:
            where = prediction_path(f) if prediction_path is not None else None
            gt_file = sequence.annotation_files.get(f)
            raise ScoringError(f"{'' if where else f'{sequence.name}/{f}: '}prediction is {p.shape[1]}x{p.shape[0]} "
                               f"(WxH) but the ground truth{f' {gt_file}' if gt_file else ''} is "
                               f"{gt[f].shape[1]}x{gt[f].shape[0]}", where)
        pred[f] = (p != 0).astype(np.uint8) if sequence.merge_objects else p
    scores = []
    for obj in sequence.object_ids:
        frames = tuple(sequence.score_frames.get(obj, ()))
        if not frames:
            continue
        j, f = object_frame_scores((pred[x] == obj for x in frames), (gt[x] == obj for x in frames))
        scores.append(ObjectScore(sequence.name, obj, frames, j, f))
    return scores


def prediction_files(sequence: VideoSequence, pred_dir: Path) -> Dict[str, Path]:
    """The prediction PNG of every scored frame of ``sequence`` under ``pred_dir/<name>/``."""
    folder = Path(pred_dir) / sequence.name
    if not folder.is_dir():
        raise ScoringError(f"no predictions for sequence {sequence.name}", folder)
    needed = sorted({f for frames in sequence.score_frames.values() for f in frames},
                    key=sequence.frame_index)
    files = {f: folder / f"{f}.png" for f in needed}
    missing = [p.name for p in files.values() if not p.is_file()]
    if missing:
        raise ScoringError(f"{len(missing)} predicted masks missing (first: {missing[0]})", folder)
    return files


def _score_folder_sequence(args) -> List[ObjectScore]:
    sequence, files = args
    return score_sequence(sequence, lambda f: read_index_png(files[f]), files.get)


def score_prediction_folder(sequences: Iterable[VideoSequence], pred_dir, workers: int = 1
                            ) -> List[ObjectScore]:
    """Score a folder ``pred_dir/<sequence>/<frame>.png`` of predictions against the ground truth."""
    sequences = list(sequences)
    unscorable = [s.name for s in sequences if not s.score_frames]
    if unscorable:
        raise ScoringError(f"sequences {unscorable[:3]} have no ground truth to score against")
    jobs = [(s, prediction_files(s, Path(pred_dir))) for s in sequences]
    if workers <= 1:
        results = [_score_folder_sequence(job) for job in jobs]
    else:
        try:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                results = list(pool.map(_score_folder_sequence, jobs))
        except ReuseVOSError:
            raise
        except (SystemExit, OSError) as err:  # a worker died or the pool could not start
            raise ScoringError(f"scoring worker failed: {err!r}", pred_dir) from None
    return [score for result in results for score in result]


def summarize(scores: List[ObjectScore]) -> Dict[str, object]:
    """Dataset metrics (``METRIC_KEYS``) and per-sequence J/F means from per-object scores.

    Returns ``{"J&F-Mean": .., "J-Mean": .., ..., "sequences": {seq: {"J-Mean", "F-Mean", "J&F-Mean"}},
    "objects": n}``; dataset values are means over all objects.
    """
    if not scores:
        raise ScoringError("nothing to score: no object has a scored frame")
    j_stats = np.array([statistics(s.j) for s in scores])
    f_stats = np.array([statistics(s.f) for s in scores])
    out: Dict[str, object] = {}
    j_mean, j_recall, j_decay = j_stats.mean(axis=0)
    f_mean, f_recall, f_decay = f_stats.mean(axis=0)
    out.update({"J&F-Mean": (j_mean + f_mean) / 2, "J-Mean": j_mean, "J-Recall": j_recall,
                "J-Decay": j_decay, "F-Mean": f_mean, "F-Recall": f_recall, "F-Decay": f_decay})
    out = {k: float(v) for k, v in out.items()}
    per_seq: Dict[str, Dict[str, float]] = {}
    for name in dict.fromkeys(s.sequence for s in scores):
        rows = [i for i, s in enumerate(scores) if s.sequence == name]
        j = float(j_stats[rows, 0].mean())
        f = float(f_stats[rows, 0].mean())
        per_seq[name] = {"J-Mean": j, "F-Mean": f, "J&F-Mean": (j + f) / 2}
    out["sequences"] = per_seq
    out["objects"] = len(scores)
    return out


def format_table(summary: Dict[str, object], title: Optional[str] = None) -> str:
    """A plain-text table: one line per sequence, then the dataset line."""
    seqs: Dict[str, Dict[str, float]] = summary["sequences"]  # type: ignore[assignment]
    width = max([len("sequence"), len("Global (mean over objects)")] + [len(n) for n in seqs])
    lines = []
    if title:
        lines.append(title)
    lines.append(f"{'sequence':<{width}}  {'J&F':>6}  {'J':>6}  {'F':>6}")
    for name, row in seqs.items():
        lines.append(f"{name:<{width}}  {row['J&F-Mean']:6.4f}  {row['J-Mean']:6.4f}  {row['F-Mean']:6.4f}")
    lines.append("-" * len(lines[-1]))
    lines.append(f"{'Global (mean over objects)':<{width}}  {summary['J&F-Mean']:6.4f}  "
                 f"{summary['J-Mean']:6.4f}  {summary['F-Mean']:6.4f}")
    lines.append(f"J-Recall {summary['J-Recall']:.4f}  J-Decay {summary['J-Decay']:.4f}  "
                 f"F-Recall {summary['F-Recall']:.4f}  F-Decay {summary['F-Decay']:.4f}  "
                 f"({summary['objects']} objects)")
    return "\n".join(lines)
