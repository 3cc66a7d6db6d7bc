"""`python evaluate.py --model ...`: real sample and synthetic YouTube-VOS, PNGs, summary.json, resume."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dataset.synthetic import generate_youtubevos
from lib.checkpoint import save_model
from models.gfrtm import GFRTM

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data/samples/davis2016-sample"
RUN_KEYS = ("tau", "policy", "J&F-Mean", "J-Mean", "F-Mean", "fps", "fps_tracking", "reuse_rate",
            "reuse_rate_official", "gflops_per_frame", "frames", "sequences")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "random_rn18.pth"
    save_model(path, GFRTM("resnet18"))
    return path


def evaluate(*args):
    proc = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "--pretrained", "none", "--dev", "cpu",
                           *map(str, args)], capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_bundled_sample_two_thresholds_and_resume(checkpoint, tmp_path):
    out = tmp_path / "run"
    proc = evaluate("--dset", "dv2016val", "--davis-root", SAMPLE, "--sequences", "car-shadow", "--model",
                    checkpoint, "--TH", "1.0", "-1", "--out", out)
    assert "RANDOM weights" in proc.stdout and "GFLOPs/fr" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"] == "dv2016val" and [r["tau"] for r in summary["runs"]] == [1.0, -1.0]
    never, always = summary["runs"]
    for run in summary["runs"]:
        assert set(RUN_KEYS) <= set(run) and run["frames"] == 40 and run["policy"] == "gate"
        assert 0 <= run["J-Mean"] <= 1 and run["fps"] > 0 and run["fps_tracking"] > 0
        assert set(run["sequences"]["car-shadow"]) >= {"J-Mean", "F-Mean", "fps", "reuse_rate", "gflops_per_frame"}
    assert never["reuse_rate"] == 0.0 and always["reuse_rate"] == 1.0
    assert never["reuse_rate_official"] == pytest.approx(1 / 40)  # the start frame counts as a reuse
    assert always["reuse_rate_official"] == 1.0
    # full path costs more than the reuse path (~54 vs ~41 GFLOPs per tracked frame at 480x854)
    assert never["gflops_per_frame"] > always["gflops_per_frame"] > 30
    pngs = sorted((out / "tau_1" / "car-shadow").glob("*.png"))
    assert len(pngs) == 40
    img = Image.open(pngs[5])
    assert img.mode == "P" and img.size == (854, 480) and set(np.unique(np.array(img))) <= {0, 1}
    first = np.array(Image.open(pngs[0]))
    gt = np.array(Image.open(SAMPLE / "Annotations/480p/car-shadow/00000.png"))
    np.testing.assert_array_equal(first, (gt > 0).astype(np.uint8))  # the given mask is written as is

    # resume: a finished sequence is not recomputed; --overwrite recomputes it
    mtime = pngs[5].stat().st_mtime_ns
    evaluate("--dset", "dv2016val", "--davis-root", SAMPLE, "--sequences", "car-shadow", "--model", checkpoint,
             "--TH", "1.0", "--out", out)
    assert pngs[5].stat().st_mtime_ns == mtime
    rerun = json.loads((out / "summary.json").read_text())["runs"][0]
    assert rerun["fps"] == never["fps"] and rerun["J-Mean"] == never["J-Mean"]
    pngs[7].unlink()  # an incomplete sequence is recomputed
    evaluate("--dset", "dv2016val", "--davis-root", SAMPLE, "--sequences", "car-shadow", "--model", checkpoint,
             "--TH", "1.0", "--out", out)
    assert pngs[7].is_file() and pngs[5].stat().st_mtime_ns != mtime


@pytest.fixture(scope="module")
def ytvos_root(tmp_path_factory):
    return generate_youtubevos(tmp_path_factory.mktemp("yt"), seed=2, size=(48, 80), num_train=2, num_valid=2,
                               frames=(12, 16))


def test_synthetic_youtubevos_valid_all_frames_and_zip(checkpoint, ytvos_root, tmp_path):
    out = tmp_path / "yt"
    evaluate("--dset", "yt2018valAll", "--ytvos-root", ytvos_root, "--model", checkpoint, "--TH", "0.5",
             "--out", out)
    run = json.loads((out / "summary.json").read_text())["runs"][0]
    assert "J-Mean" not in run and run["frames"] > 0  # no ground truth for valid
    meta = json.loads((ytvos_root / "valid/meta.json").read_text())["videos"]
    with zipfile.ZipFile(out / "tau_0.5_submission.zip") as zf:
        names = sorted(zf.namelist())
    for vid in meta:
        strided = sorted(p.stem for p in (ytvos_root / "valid/JPEGImages" / vid).glob("*.jpg"))
        written = sorted(p.stem for p in (out / "tau_0.5" / vid).glob("*.png"))
        assert written == strided  # only the frames the benchmark asks for
        assert [n for n in names if n.split("/")[1] == vid] == [f"Annotations/{vid}/{f}.png" for f in strided]


def test_synthetic_youtubevos_jjval_is_scored(checkpoint, ytvos_root, tmp_path):
    out = tmp_path / "jj"
    evaluate("--dset", "yt2018jjval", "--ytvos-root", ytvos_root, "--split-list", ytvos_root / "jjval.txt",
             "--model", checkpoint, "--TH", "1", "--policy", "always", "--out", out)
    run = json.loads((out / "summary.json").read_text())["runs"][0]
    assert run["policy"] == "always" and 0 <= run["J&F-Mean"] <= 1 and run["reuse_rate"] == 0


def test_bad_flags_are_one_line(checkpoint, tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "--davis-root", str(SAMPLE), "--model",
                           str(checkpoint), "--pretrained", "none", "--policy", "fusion", "--TH", "0.7",
                           "--TH2", "0.5", "--out", str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "TH2 > tau" in proc.stderr
    proc = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "--davis-root", str(SAMPLE), "--model",
                           str(tmp_path / "missing.pth")], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "missing.pth" in proc.stderr
