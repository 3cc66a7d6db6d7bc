"""Trade-off report: distance binning, report.md numbers against summary.json, the plot, merging folders."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
from PIL import Image

from dataset.sequence import Sequence
from lib.errors import ConfigError
from lib.evaluation import distance_bins, frames_since_compute, worst_case_by_distance
from lib.metrics import ObjectScore
from lib.report import load_runs, speedup, write_report

ROOT = Path(__file__).resolve().parents[2]


# --- distance binning ----------------------------------------------------------------------------

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
    seq = Sequence("s", frames, tuple(tmp_path / f"{f}.jpg" for f in frames),
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


# --- report.md and tradeoff.png ----------------------------------------------------------------

def _run(policy: str, tau: float, jf: float, fps: float, reuse: float, worst: bool = True) -> dict:
    run = {"tau": tau, "policy": policy, "J&F-Mean": jf, "J-Mean": jf - 0.01, "F-Mean": jf + 0.01,
           "fps": fps, "fps_tracking": fps * 1.25, "reuse_rate": reuse, "reuse_rate_official": reuse,
           "gflops_per_frame": 54.0 - 13 * reuse, "frames": 40, "sequences": {}}
    if worst:
        run["worst_case_by_distance"] = distance_bins([0, 0, 1, 3, 20], [0.9, 0.8, 0.7, 0.6, 0.123456])
    return run


def _write_summary(folder: Path, dataset: str, runs: List[dict]) -> Path:
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"dataset": dataset, "runs": runs}))
    return folder


def parse_tables(text: str) -> List[List[Dict[str, str]]]:
    """Every markdown table of ``text`` as a list of {column: cell} rows."""
    tables, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("| ") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            header = [c.strip() for c in lines[i].strip("|").split("|")]
            rows = []
            i += 2
            while i < len(lines) and lines[i].startswith("| "):
                rows.append(dict(zip(header, (c.strip() for c in lines[i].strip("|").split("|")))))
                i += 1
            tables.append(rows)
        else:
            i += 1
    return tables


def _assert_png(path: Path) -> None:
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] > 100 and img.size[1] > 100


def test_single_folder_report_matches_summary(tmp_path):
    runs = [_run("gate", 0.7, 0.70, 6.0, 0.45), _run("gate", 1.0, 0.72, 4.0, 0.0), _run("gate", 0.5, 0.65, 8.0, 0.7)]
    folder = _write_summary(tmp_path / "gate", "dv2017val", runs)
    report, plot = write_report([folder])
    assert report == folder / "report.md" and plot == folder / "tradeoff.png"
    _assert_png(plot)
    table, worst = parse_tables(report.read_text())
    assert [r["tau"] for r in table] == ["1", "0.7", "0.5"]  # tau descending
    by_tau = {float(r["tau"]): r for r in table}
    for run in runs:
        row = by_tau[run["tau"]]
        assert row["policy"] == "gate" and "folder" not in row and "dataset" not in row
        for column, key, digits in (("J&F", "J&F-Mean", 4), ("J", "J-Mean", 4), ("F", "F-Mean", 4),
                                    ("reuse rate", "reuse_rate", 3), ("FPS", "fps", 2),
                                    ("FPS tracking", "fps_tracking", 2), ("GFLOPs/frame", "gflops_per_frame", 2)):
            assert float(row[column]) == pytest.approx(run[key], abs=0.5 * 10 ** -digits)
    assert [r["speed-up"] for r in table] == ["1.00x", "1.50x", "2.00x"]
    # worst case: the 4 non-empty bins of each run, numbers as in summary.json
    assert len(worst) == 3 * 4 and {r["frames since compute"] for r in worst} == {"0", "1", "3-4", ">16"}
    far = next(r for r in worst if r["tau"] == "0.7" and r["frames since compute"] == ">16")
    assert far["object-frames"] == "1" and far["min J"] == "0.1235" and far["mean J"] == "0.1235"
    zero = next(r for r in worst if r["tau"] == "1" and r["frames since compute"] == "0")
    assert zero["object-frames"] == "2" and float(zero["5th pct J"]) == pytest.approx(0.805, abs=5e-5)


def test_merge_two_folders_with_different_policies(tmp_path):
    gate = _write_summary(tmp_path / "gate", "dv2017val",
                          [_run("gate", 1.0, 0.72, 4.0, 0.0), _run("gate", 0.7, 0.70, 6.0, 0.45)])
    copy = _write_summary(tmp_path / "copy", "dv2017val",
                          [_run("copy", 0.7, 0.60, 9.0, 0.5), _run("every-3", 0.7, 0.58, 7.0, 0.66, worst=False),
                           _run("always", 0.7, 0.72, 3.9, 0.0, worst=False)])
    with pytest.raises(ConfigError, match="--out"):
        write_report([gate, copy])
    out = tmp_path / "merged"
    proc = subprocess.run([sys.executable, "-m", "lib.report", str(gate), str(copy), "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    _assert_png(out / "tradeoff.png")
    table = parse_tables((out / "report.md").read_text())[0]
    assert [(r["folder"], r["policy"], r["tau"]) for r in table] == [
        ("gate", "gate", "1"), ("gate", "gate", "0.7"), ("copy", "copy", "0.7"), ("copy", "every-3", "-"),
        ("copy", "always", "-")]
    assert [r["speed-up"] for r in table] == ["1.00x", "1.50x", "n/a", "n/a", "1.00x"]
    assert table[2]["J&F"] == "0.6000" and table[3]["FPS"] == "7.00"
    assert not (gate / "report.md").exists()  # the inputs are left alone


def test_unscored_runs_show_dashes_and_plot_fps_against_reuse(tmp_path):
    runs = [_run("gate", 1.0, 0, 4.0, 0.0, worst=False), _run("gate", 0.7, 0, 5.0, 0.4, worst=False)]
    for run in runs:
        for key in ("J&F-Mean", "J-Mean", "F-Mean"):
            del run[key]
    folder = _write_summary(tmp_path / "yt", "yt2018val", runs)
    report, plot = write_report([folder])
    _assert_png(plot)
    text = report.read_text()
    table = parse_tables(text)[0]
    assert [(r["J&F"], r["J"], r["F"]) for r in table] == [("-", "-", "-")] * 2
    assert [r["FPS"] for r in table] == ["4.00", "5.00"] and table[1]["speed-up"] == "1.25x"
    assert "no ground truth, so FPS against reuse rate" in text and "No per-frame scores" in text


def test_score_only_summary_has_no_plot_and_removes_a_stale_one(tmp_path):
    folder = _write_summary(tmp_path / "osvos", "dv2016val",
                            [{"tau": None, "J&F-Mean": 0.9, "J-Mean": 0.89, "F-Mean": 0.91, "sequences": {}}])
    (folder / "tradeoff.png").write_bytes(b"old")
    report, plot = write_report([folder])
    assert plot is None and not (folder / "tradeoff.png").exists()
    row = parse_tables(report.read_text())[0][0]
    assert row["J&F"] == "0.9000" and row["FPS"] == "-" and row["speed-up"] == "n/a"


def test_missing_or_broken_summary_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no summary.json"):
        load_runs(tmp_path)
    (tmp_path / "summary.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not a readable summary.json"):
        load_runs(tmp_path)


def test_speedup_needs_a_tau_one_run_of_the_same_policy(tmp_path):
    folder = _write_summary(tmp_path / "a", "dv2016val", [_run("gate", 0.7, 0.7, 6.0, 0.4),
                                                         _run("copy", 1.0, 0.7, 3.0, 0.0)])
    rows = load_runs(folder)
    assert speedup(rows[0], rows) is None and speedup(rows[1], rows) == pytest.approx(1.0)


def test_nearby_point_labels_are_stacked_apart():
    """Labels of points within 4 % of the axis spans of each other get different offsets (tau 0.5 and 0.7 used
    to print on top of each other); distant points keep the default offset above."""
    from lib.report import label_offsets

    xs, ys = [1.0, 1.01, 1.02, 5.0], [50.0, 50.1, 49.9, 80.0]
    offsets = label_offsets(xs, ys)
    assert offsets[0] == (4, 4) and offsets[3] == (4, 4)
    assert len(set(offsets[:3])) == 3  # the three crowded labels all differ
    assert offsets[1][1] < 0  # the second one goes below its point
