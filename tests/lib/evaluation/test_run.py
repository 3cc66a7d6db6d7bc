"""Evaluation bookkeeping: frames since the last computed frame, worst-case J binned by that distance."""

from __future__ import annotations

from typing import Dict

import numpy as np
import pytest

from dataset.sequence import VideoSequence
from lib.evaluation.metrics import ObjectScore
from lib.evaluation.run import distance_bins, frames_since_compute, worst_case_by_distance


def test_frames_since_compute():
    np.testing.assert_array_equal(frames_since_compute(""), [0])
    np.testing.assert_array_equal(frames_since_compute("TTCTPT"), [0, 1, 2, 0, 1, 2, 3])
    np.testing.assert_array_equal(frames_since_compute("CCC"), [0, 0, 0, 0])


def _bins(rows) -> Dict[str, dict]:
    return {r["distance"]: r for r in rows}


def test_distance_bins_hand_computed():
    distances = [0, 0, 1, 2, 3, 4, 4, 5, 8, 9, 16, 17, 40]
    j = [0.9, 0.7, 0.8, 0.6, 0.5, 0.3, 0.4, 0.2, 0.1, 0.05, 0.15, 0.0, 1.0]
    bins = _bins(distance_bins(distances, j))
    assert list(bins) == ["0", "1", "2", "3-4", "5-8", "9-16", ">16"]
    assert [bins[k]["count"] for k in bins] == [2, 1, 1, 3, 2, 2, 2]
    assert bins["0"]["J-Mean"] == pytest.approx(0.8) and bins["0"]["J-Min"] == pytest.approx(0.7)
    assert bins["0"]["J-P5"] == pytest.approx(0.7 + 0.05 * 0.2)  # linear interpolation between 0.7 and 0.9
    assert bins["3-4"]["J-Mean"] == pytest.approx(0.4) and bins["3-4"]["J-Min"] == pytest.approx(0.3)
    assert bins["3-4"]["J-P5"] == pytest.approx(0.3 + 0.1 * 0.1)
    assert bins["5-8"]["J-Min"] == pytest.approx(0.1) and bins["9-16"]["J-Mean"] == pytest.approx(0.1)
    assert bins[">16"]["J-Min"] == 0.0 and bins[">16"]["J-Mean"] == pytest.approx(0.5)
    assert bins[">16"]["min_distance"] == 17 and bins[">16"]["max_distance"] is None
    empty = _bins(distance_bins([0, 0], [1.0, 1.0]))
    assert empty["1"] == {"distance": "1", "min_distance": 1, "max_distance": 1, "count": 0, "J-Mean": None,
                          "J-Min": None, "J-P5": None}


def test_worst_case_uses_each_objects_paths_and_start(tmp_path):
    frames = tuple(f"{i:05d}" for i in range(8))
    seq = VideoSequence("s", frames, tuple(tmp_path / f"{f}.jpg" for f in frames),
                   {f: tmp_path / f"{f}.png" for f in frames}, (1, 2), {1: frames[0], 2: frames[3]})
    # object 1 starts on frame 0: paths of frames 1..7; object 2 starts on frame 3: paths of frames 4..7
    records = {"s": {"objects": {"1": {"start": 0, "paths": "TTCTTTT"}, "2": {"start": 3, "paths": "CTTT"}}}}
    scores = [ObjectScore("s", 1, frames[1:7], np.array([0.9, 0.8, 1.0, 0.7, 0.6, 0.5]), np.zeros(6)),
              ObjectScore("s", 2, frames[4:7], np.array([0.95, 0.4, 0.3]), np.zeros(3))]
    # object 1 distances on frames 1..6: 1, 2, 0, 1, 2, 3; object 2 on frames 4..6: 0, 1, 2
    bins = _bins(worst_case_by_distance(scores, [seq], records))
    assert [bins[k]["count"] for k in ("0", "1", "2", "3-4", "5-8")] == [2, 3, 3, 1, 0]
    assert bins["0"]["J-Mean"] == pytest.approx((1.0 + 0.95) / 2)
    assert bins["1"]["J-Min"] == pytest.approx(0.4) and bins["1"]["J-Mean"] == pytest.approx((0.9 + 0.7 + 0.4) / 3)
    assert bins["2"]["J-Min"] == pytest.approx(0.3) and bins["3-4"]["J-Mean"] == pytest.approx(0.5)
