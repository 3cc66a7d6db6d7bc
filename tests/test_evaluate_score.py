"""`python evaluate.py --score`: scores existing predictions, prints a table, writes summary.json."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import evaluate as evaluate_cli
from base.io import read_index_png, write_index_png
from tests.cli import call

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data/samples/davis2016-sample"
OSVOS = ROOT / "data/samples/osvos-results"
METRICS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")


def run_evaluate(*args):
    """``python evaluate.py args``, in-process."""
    return call(evaluate_cli.main, *args)


@pytest.mark.slow
def test_score_mode_as_a_script(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "--score", str(OSVOS), "--davis-root",
                           str(SAMPLE), "--sequences", "car-shadow", "--out", str(tmp_path)], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "summary.json").read_text())["runs"][0]["objects"] == 1


def test_score_mode_writes_summary(tmp_path):
    proc = run_evaluate("--score", str(OSVOS), "--dset", "dv2016val", "--davis-root", str(SAMPLE),
                        "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "blackswan" in proc.stdout and "0.9430" in proc.stdout and "0.9174" in proc.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["dataset"] == "dv2016val" and len(summary["runs"]) == 1
    run = summary["runs"][0]
    assert run["tau"] is None
    for key in METRICS:
        assert isinstance(run[key], float)
    assert all(0 <= run[k] <= 1 for k in METRICS if "Decay" not in k)
    assert set(run["sequences"]) == {"blackswan", "car-shadow"}
    assert round(run["sequences"]["car-shadow"]["J-Mean"], 4) == 0.9284
    assert round(run["sequences"]["blackswan"]["F-Mean"], 4) == 0.9741
    assert not (OSVOS / "summary.json").exists()


def test_score_mode_sequence_subset(tmp_path):
    proc = run_evaluate("--score", str(OSVOS), "--davis-root", str(SAMPLE), "--sequences", "car-shadow",
                        "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    run = json.loads((tmp_path / "summary.json").read_text())["runs"][0]
    assert list(run["sequences"]) == ["car-shadow"] and run["objects"] == 1


def test_bad_input_is_one_line_without_traceback(tmp_path):
    proc = run_evaluate("--score", str(OSVOS), "--davis-root", str(tmp_path / "missing"))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "DAVIS root not found" in proc.stderr
    proc = run_evaluate("--score", str(tmp_path), "--davis-root", str(SAMPLE))
    assert proc.returncode == 2 and "no predictions for sequence blackswan" in proc.stderr
    proc = run_evaluate("--score", str(OSVOS), "--dset", "yt2018val", "--ytvos-root", str(tmp_path))
    assert proc.returncode == 2 and "no public ground truth" in proc.stderr


def test_a_prediction_of_the_wrong_size_names_both_files(tmp_path):
    preds = tmp_path / "preds"
    shutil.copytree(OSVOS / "car-shadow", preds / "car-shadow")
    bad = preds / "car-shadow" / "00002.png"
    write_index_png(bad, read_index_png(bad)[::2, ::2])
    proc = run_evaluate("--score", preds, "--davis-root", SAMPLE, "--sequences", "car-shadow", "--out", tmp_path / "o")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert str(bad) in proc.stderr and "prediction is 427x240 (WxH)" in proc.stderr
    assert str(SAMPLE / "Annotations/480p/car-shadow/00002.png") in proc.stderr and "854x480" in proc.stderr
    assert np.asarray(read_index_png(bad)).shape == (240, 427)
