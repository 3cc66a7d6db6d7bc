"""`python evaluate.py --score`: scores existing predictions, prints a table, writes summary.json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data/samples/davis2016-sample"
OSVOS = ROOT / "data/samples/osvos-results"
METRICS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")


def run_evaluate(*args, env=None):
    return subprocess.run([sys.executable, str(ROOT / "evaluate.py"), *args], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=300)


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
