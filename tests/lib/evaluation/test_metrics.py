"""J&F scoring: the DAVIS organizers' published OSVOS numbers, protocol details, aggregation."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from base.errors import ScoringError
from base.io import write_index_png
from dataset.davis import DAVISDataset
from dataset.registry import open_eval_dataset
from dataset.sequence import VideoSequence
from lib.evaluation.metrics import (
    frame_scores,
    region_similarity,
    score_prediction_folder,
    score_sequence,
    statistics,
    summarize,
)

ROOT = Path(__file__).resolve().parents[3]
SAMPLE = ROOT / "data/samples/davis2016-sample"
OSVOS = ROOT / "data/samples/osvos-results"


def test_reproduces_published_osvos_scores():
    ds = open_eval_dataset("dv2016val", str(SAMPLE))
    summary = summarize(score_prediction_folder(ds, OSVOS))
    published = {"blackswan": (0.9430, 0.9741), "car-shadow": (0.9284, 0.9174)}
    for name, (j, f) in published.items():
        assert round(summary["sequences"][name]["J-Mean"], 4) == j
        assert round(summary["sequences"][name]["F-Mean"], 4) == f
    assert summary["objects"] == 2
    assert summary["J-Mean"] == pytest.approx((0.94302 + 0.92840) / 2, abs=1e-4)
    assert summary["J&F-Mean"] == pytest.approx((summary["J-Mean"] + summary["F-Mean"]) / 2)


def test_parallel_scoring_gives_the_same_numbers():
    ds = list(open_eval_dataset("dv2016val", str(SAMPLE)))
    serial = summarize(score_prediction_folder(ds, OSVOS))
    parallel = summarize(score_prediction_folder(ds, OSVOS, workers=2))
    assert serial == parallel


def test_frame_scores_edge_cases():
    a = np.zeros((40, 60), np.uint8)
    a[10:30, 10:30] = 1
    b = np.zeros_like(a)
    b[10:30, 40:55] = 1
    empty = np.zeros_like(a)
    assert frame_scores(a, a) == (1.0, 1.0)
    assert frame_scores(empty, empty) == (1.0, 1.0)  # DAVIS: both empty counts as perfect
    assert frame_scores(a, b)[0] == 0.0
    assert frame_scores(empty, a) == (0.0, 0.0)
    half = a.copy()
    half[20:30] = 0
    assert frame_scores(half, a)[0] == pytest.approx(0.5)
    for pred, gt in ((a, a), (empty, empty), (a, b), (empty, a), (half, a)):  # J alone: the same J
        assert region_similarity(pred, gt) == frame_scores(pred, gt)[0]


def test_statistics_hand_computed():
    mean, recall, decay = statistics(np.array([1, 1, 1, 1, 0, 0, 0, 0], float))
    # bins over 8 frames: [0..2], [2..4], [4..5], [5..7] -> first 1.0, last 0.0
    assert (mean, recall, decay) == (0.5, 0.5, 1.0)
    mean, recall, decay = statistics(np.array([0.2, 0.6, 0.8, 0.9, 0.4]))
    assert mean == pytest.approx(0.58) and recall == pytest.approx(0.6)
    assert decay == pytest.approx(np.mean([0.2, 0.6]) - np.mean([0.9, 0.4]))


def _seq_with_mid_video_object(tmp_path) -> VideoSequence:
    """Two objects; object 2 starts at frame 2 of 6. GT saved as PNGs."""
    gt_dir = tmp_path / "gt"
    files = {}
    for t in range(6):
        lab = np.zeros((30, 40), np.uint8)
        lab[5:15, 5 + t:15 + t] = 1
        if t >= 2:
            lab[18:26, 20:30] = 2
        files[f"{t:05d}"] = gt_dir / f"{t:05d}.png"
        write_index_png(files[f"{t:05d}"], lab)
    frames = tuple(files)
    return VideoSequence(name="mid", frames=frames, image_files=tuple(files.values()), annotation_files=files,
                    object_ids=(1, 2), start_frames={1: "00000", 2: "00002"},
                    score_frames={1: frames[1:5], 2: frames[3:5]}, save_frames=frames)


def test_mid_video_object_scored_only_after_its_start(tmp_path):
    seq = _seq_with_mid_video_object(tmp_path)
    gt = {f: seq.annotation(f) for f in seq.frames}

    def pred(frame):  # object 1 perfect, object 2 predicted everywhere (wrongly before it starts)
        p = gt[frame].copy()
        p[18:26, 20:30] = 2
        return p

    scores = score_sequence(seq, pred)
    assert [(s.object_id, len(s.j)) for s in scores] == [(1, 4), (2, 2)]
    assert all(np.all(s.j == 1.0) for s in scores)


def test_dataset_mean_is_over_objects(tmp_path):
    seq = _seq_with_mid_video_object(tmp_path)
    gt = {f: seq.annotation(f) for f in seq.frames}
    scores = score_sequence(seq, lambda f: np.where(gt[f] == 2, 0, gt[f]))  # object 2 missed
    summary = summarize(scores)
    assert summary["sequences"]["mid"]["J-Mean"] == pytest.approx(0.5)
    assert summary["J-Mean"] == pytest.approx(0.5) and summary["objects"] == 2


def test_missing_predictions_raise(tmp_path):
    pred = tmp_path / "pred"
    shutil.copytree(OSVOS, pred)
    (pred / "blackswan/00017.png").unlink()
    ds = open_eval_dataset("dv2016val", str(SAMPLE))
    with pytest.raises(ScoringError, match="predicted masks missing .*00017.png") as err:
        score_prediction_folder(ds, pred)
    assert err.value.path == pred / "blackswan"
    shutil.rmtree(pred / "car-shadow")
    ds = DAVISDataset(SAMPLE, year=2016, sequences=["car-shadow"])
    with pytest.raises(ScoringError, match="no predictions for sequence car-shadow"):
        score_prediction_folder(ds, pred)


def test_wrong_size_prediction_raises(tmp_path):
    pred = tmp_path / "pred"
    shutil.copytree(OSVOS / "car-shadow", pred / "car-shadow")
    write_index_png(pred / "car-shadow/00005.png", np.zeros((240, 427), np.uint8))
    ds = DAVISDataset(SAMPLE, year=2016, sequences=["car-shadow"])
    with pytest.raises(ScoringError, match="prediction is 427x240 .WxH. but the ground truth .* is 854x480") as err:
        score_prediction_folder(ds, pred)
    assert err.value.path == pred / "car-shadow/00005.png" and str(pred / "car-shadow/00005.png") in str(err.value)


def test_unscorable_dataset_raises(tmp_path):
    seq = _seq_with_mid_video_object(tmp_path)
    no_gt = VideoSequence(name="x", frames=seq.frames, image_files=seq.image_files,
                     annotation_files=seq.annotation_files, object_ids=(1,), start_frames={1: "00000"})
    with pytest.raises(ScoringError, match="no ground truth"):
        score_prediction_folder([no_gt], tmp_path)
