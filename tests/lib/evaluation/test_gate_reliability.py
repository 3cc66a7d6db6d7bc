"""P_gate against the true IoU with the last computed frame, read from an evaluation run's progress.json."""

from __future__ import annotations

import json

import numpy as np
import pytest

from base.errors import ConfigError
from dataset.davis import DAVISDataset
from lib.evaluation.gate_reliability import analyse, auroc, collect, last_computed, main, mask_iou
from tests.dataset.conftest import build_davis


def test_last_computed_frame_of_each_tracked_frame():
    # start 2, paths of frames 3..8: C T T C T T
    assert last_computed("CTTCTT", 2, "C") == [2, 3, 3, 3, 6, 6]
    assert last_computed("", 0, "C") == []


def test_auroc_and_analysis_on_known_numbers():
    assert auroc(np.array([0.9, 0.8, 0.2, 0.1]), np.array([True, True, False, False])) == 1.0
    assert auroc(np.array([0.1, 0.2, 0.8, 0.9]), np.array([True, True, False, False])) == 0.0
    assert auroc(np.array([0.5, 0.5]), np.array([True, False])) == 0.5
    data = {"p": np.array([0.95, 0.85, 0.75, 0.1]), "iou": np.array([0.99, 0.9, 0.5, 0.2]),
            "gap": np.ones(4, int)}
    result = analyse(data, taus=(0.8, 0.5))
    assert result["spearman"] == pytest.approx(1.0) and result["auroc_iou_gt_0.8"] == 1.0
    assert [r["reuse_rate"] for r in result["taus"]] == [0.5, 0.75]
    assert result["taus"][0]["mean_iou_reused"] == pytest.approx((0.99 + 0.9) / 2)
    assert result["taus"][1]["oracle_mean_iou_at_rate"] == pytest.approx((0.99 + 0.9 + 0.5) / 3)
    assert sum(b["frames"] for b in result["bins"]) == 4


def test_collect_reads_the_run_and_the_ground_truth(tmp_path):
    root = build_davis(tmp_path / "davis", seqs=(("one", 1, 5),), train=("one",))
    seq = DAVISDataset(root, year=2016, split="train")
    seq = list(seq)[0]
    run = tmp_path / "run"
    run.mkdir()
    # frames 1..4 tracked: C T T C; the gate's P on each
    record = {"objects": {"1": {"start": 0, "paths": "CTTC", "p_reuse": [0.1, 0.9, 0.8, 0.2]}}}
    (run / "progress.json").write_text(json.dumps({"sequences": {"one": record}}))
    data = collect({"one": record}, [seq])
    gts = [seq.annotation(f) == 1 for f in seq.frames]
    expected = [mask_iou(gts[1], gts[0]), mask_iou(gts[2], gts[1]), mask_iou(gts[3], gts[1]), mask_iou(gts[4], gts[1])]
    np.testing.assert_allclose(data["iou"], expected)
    np.testing.assert_array_equal(data["gap"], [1, 1, 2, 3])
    assert main([str(run), "--dset", "dv2016train", "--davis-root", str(root), "--out", str(tmp_path / "out")]) == 0
    saved = json.loads((tmp_path / "out/reliability.json").read_text())
    assert saved["object_frames"] == 4 and (tmp_path / "out/reliability.png").stat().st_size > 1000
    bad = {"objects": {"1": {"start": 0, "paths": "CTTC", "p_reuse": [0.1]}}}
    with pytest.raises(ConfigError, match="did not evaluate the gate on every frame"):
        collect({"one": bad}, [seq])
    with pytest.raises(ConfigError, match="progress.json: not found"):
        main([str(tmp_path), "--dset", "dv2016train", "--davis-root", str(root)])
