"""`python evaluate.py --model ...`: real sample and synthetic YouTube-VOS, PNGs, summary.json, resume."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import evaluate as evaluate_cli
from dataset.registry import open_eval_dataset
from dataset.synthetic import generate_youtubevos
from tests.cli import call

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data/samples/davis2016-sample"
SHIPPED_ROLLERBLADE_MIN = 0.55  # measured 0.672 when shipped at 360x640 (rollerblade is a training sequence)
RUN_KEYS = ("tau", "policy", "J&F-Mean", "J-Mean", "F-Mean", "fps", "fps_tracking", "reuse_rate",
            "reuse_rate_official", "gflops_per_frame", "frames", "sequences")


def evaluate(*args, script: bool = False):
    """``python evaluate.py --pretrained none --dev cpu args``: in-process, or with ``script`` a real subprocess."""
    args = ("--pretrained", "none", "--dev", "cpu", *map(str, args))
    if script:
        proc = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), *args], capture_output=True, text=True,
                              cwd=ROOT, timeout=900)
    else:
        proc = call(evaluate_cli.main, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_bundled_sample_two_thresholds_and_resume(checkpoint, tmp_path):
    """The script itself on a real 480p sequence (40 frames, two thresholds), then resumed."""
    out = tmp_path / "run"
    proc = evaluate("--dset", "dv2016val", "--davis-root", SAMPLE, "--sequences", "car-shadow", "--model",
                    checkpoint, "--TH", "1.0", "-1", "--out", out, script=True)
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
    check_worst_case_and_report(out, summary)

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


def markdown_tables(text):
    """Every markdown table of ``text`` as a list of {column: cell} rows."""
    tables, rows, header = [], None, None
    for line in text.splitlines() + [""]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|---"):
            rows = []
        elif line.startswith("| ") and rows is None:
            header = cells
        elif line.startswith("| "):
            rows.append(dict(zip(header, cells)))
        elif rows is not None:
            tables.append(rows)
            rows = None
    return tables


def check_worst_case_and_report(out, summary):
    """car-shadow (40 frames, one object from frame 0; frames 1..38 scored) at tau 1 and tau -1."""
    never, always = summary["runs"]
    progress = json.loads((out / "tau_-1" / "progress.json").read_text())["sequences"]["car-shadow"]
    assert progress["objects"]["1"]["start"] == 0 and progress["objects"]["1"]["paths"] == "T" * 39
    counts = {run["tau"]: {b["distance"]: b["count"] for b in run["worst_case_by_distance"]} for run in summary["runs"]}
    assert counts[1.0] == {"0": 38, "1": 0, "2": 0, "3-4": 0, "5-8": 0, "9-16": 0, ">16": 0}
    # tau = -1 reuses every frame after the first: frame i is i frames from the last computed one
    assert counts[-1.0] == {"0": 0, "1": 1, "2": 1, "3-4": 2, "5-8": 4, "9-16": 8, ">16": 22}
    for run in summary["runs"]:
        bins = [b for b in run["worst_case_by_distance"] if b["count"]]
        # one object: the count-weighted mean of the bins is the object's (and the run's) J-Mean
        assert sum(b["J-Mean"] * b["count"] for b in bins) / 38 == pytest.approx(run["J-Mean"], abs=1e-9)
        assert all(b["J-Min"] <= b["J-P5"] <= b["J-Mean"] for b in bins)

    with Image.open(out / "tradeoff.png") as img:
        assert img.format == "PNG" and img.size[0] > 0
    table, worst = markdown_tables((out / "report.md").read_text())
    assert [(r["policy"], r["tau"]) for r in table] == [("gate", "1"), ("gate", "-1")]
    for row, run in zip(table, (never, always)):
        assert float(row["J&F"]) == pytest.approx(run["J&F-Mean"], abs=5e-5)
        assert float(row["FPS"]) == pytest.approx(run["fps"], abs=5e-3)
        assert float(row["reuse rate"]) == pytest.approx(run["reuse_rate"], abs=5e-4)
        assert float(row["GFLOPs/frame"]) == pytest.approx(run["gflops_per_frame"], abs=5e-3)
    assert table[0]["speed-up"] == "1.00x"
    assert float(table[1]["speed-up"].rstrip("x")) == pytest.approx(always["fps"] / never["fps"], abs=5e-3)
    assert [(r["tau"], r["frames since compute"], r["object-frames"]) for r in worst] == [
        ("1", "0", "38"), ("-1", "1", "1"), ("-1", "2", "1"), ("-1", "3-4", "2"), ("-1", "5-8", "4"),
        ("-1", "9-16", "8"), ("-1", ">16", "22")]
    far = always["worst_case_by_distance"][-1]
    assert float(worst[-1]["min J"]) == pytest.approx(far["J-Min"], abs=5e-5)
    assert float(worst[-1]["mean J"]) == pytest.approx(far["J-Mean"], abs=5e-5)


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
    assert "worst_case_by_distance" not in run
    report = (out / "report.md").read_text()
    row = markdown_tables(report)[0][0]
    assert (row["J&F"], row["J"], row["F"]) == ("-", "-", "-")
    assert float(row["FPS"]) == pytest.approx(run["fps"], abs=5e-3)
    assert "no ground truth, so FPS against reuse rate" in report
    with Image.open(out / "tradeoff.png") as img:
        assert img.format == "PNG"
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
    # every tracked frame is computed; only the annotated (scored) object-frames are binned
    dataset = open_eval_dataset("yt2018jjval", ytvos_root=str(ytvos_root), split_list=str(ytvos_root / "jjval.txt"))
    scored = sum(len(frames) for seq in dataset for frames in seq.score_frames.values())
    counts = {b["distance"]: b["count"] for b in run["worst_case_by_distance"]}
    assert counts["0"] == scored > 0 and sum(counts.values()) == scored


def test_io_threads_change_nothing_but_the_clock(checkpoint, ytvos_root, tmp_path):
    """--overlap-io (reader and writer threads) writes the same masks and scores as --no-overlap-io; both record
    the wall clock of the sequences, which covers their processing time."""
    runs = {}
    for flag in ("--overlap-io", "--no-overlap-io"):
        out = tmp_path / flag
        evaluate("--dset", "yt2018jjval", "--ytvos-root", ytvos_root, "--split-list", ytvos_root / "jjval.txt",
                 "--model", checkpoint, "--TH", "0.5", flag, "--no-flops", "--out", out)
        runs[flag] = json.loads((out / "summary.json").read_text())["runs"][0]
        pngs = sorted((out / "tau_0.5").rglob("*.png"))
        runs[flag]["masks"] = {p.relative_to(out).as_posix(): p.read_bytes() for p in pngs}
    on, off = runs["--overlap-io"], runs["--no-overlap-io"]
    assert on["overlap_io"] is True and off["overlap_io"] is False
    assert on["masks"] == off["masks"] and len(on["masks"]) > 0
    assert on["J&F-Mean"] == off["J&F-Mean"] and on["reuse_rate"] == off["reuse_rate"]
    for run in (on, off):
        processing = run["frames"] / run["fps"]
        assert run["wall_seconds"] >= processing * 0.999 and run["wall_over_processing"] >= 0.999


def test_reduced_network_size_writes_and_scores_the_original_size(checkpoint, ytvos_root, tmp_path):
    """--size H W: networks at H x W, masks written and scored at the videos' own 48 x 80, size recorded."""
    out = tmp_path / "small"
    evaluate("--dset", "yt2018jjval", "--ytvos-root", ytvos_root, "--split-list", ytvos_root / "jjval.txt",
             "--model", checkpoint, "--TH", "0.7", "--size", "32", "48", "--out", out)
    run = json.loads((out / "summary.json").read_text())["runs"][0]
    assert run["setup"]["size"] == [32, 48] and 0 <= run["J&F-Mean"] <= 1
    pngs = sorted(out.rglob("*.png"))
    masks = [p for p in pngs if p.name != "tradeoff.png"]
    assert masks and all(Image.open(p).size == (80, 48) for p in masks)


def test_bad_flags_are_one_line(checkpoint, tmp_path):
    proc = call(evaluate_cli.main, "--davis-root", SAMPLE, "--model", checkpoint, "--pretrained", "none",
                "--policy", "fusion", "--TH", "0.7", "--TH2", "0.5", "--out", tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "TH2 > tau" in proc.stderr
    proc = call(evaluate_cli.main, "--davis-root", SAMPLE, "--model", tmp_path / "missing.pth")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "missing.pth" in proc.stderr


@pytest.mark.slow
def test_shipped_model_needs_only_its_path_and_scores_dv2016train(tmp_path):
    """--model alone: the shipped bundle's backbone and 360x640 size; dv2016train scores train sequences (here
    rollerblade, the bundled sample's one DAVIS 2016 train sequence, which the shipped model was trained on)."""
    out = tmp_path / "shipped"
    proc = call(evaluate_cli.main, "--dset", "dv2016train", "--davis-root", SAMPLE, "--sequences", "rollerblade",
                "--model", ROOT / "weights/gfrtm_rn18_dv2016_cpu.pth", "--dev", "cpu", "--TH", "1.0", "--no-flops",
                "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RANDOM" not in proc.stdout and "the checkpoint's own resnet18 weights" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    run = summary["runs"][0]
    assert summary["dataset"] == "dv2016train" and run["setup"]["size"] == [360, 640]
    assert run["setup"]["pretrained"] == "embedded" and run["frames"] == 35
    assert run["J&F-Mean"] > SHIPPED_ROLLERBLADE_MIN, run["J&F-Mean"]
    img = Image.open(out / "tau_1" / "rollerblade" / "00010.png")
    assert img.size == (854, 480)


def test_a_ttvos_model_runs_with_model_alone_and_refuses_the_gate(tmp_path):
    """--model PATH of a TTVOS file picks the TTVOS base (summary's setup says so); without --policy its gate-less
    network runs policy always; asking for the gate stops with one line."""
    model = ROOT / "tests/fixtures/ttvos/official_ttvos_hrnetv2Sv1_seed0.pth"
    common = ("--dset", "dv2016val", "--davis-root", SAMPLE, "--sequences", "car-shadow", "--model", model,
              "--dev", "cpu", "--size", "64", "112")
    proc = call(evaluate_cli.main, *map(str, common), "--out", str(tmp_path / "ok"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = json.loads((tmp_path / "ok" / "summary.json").read_text())["runs"][0]
    assert run["setup"]["base"] == "ttvos" and run["setup"]["backbone"] == "hrnetv2Sv1"
    assert run["frames"] == 40 and run["reuse_rate"] == 0.0 and run["gflops_per_frame"] > 0
    assert run["setup"]["channels_last"] is True  # TTVOS's layout unless told otherwise
    proc = call(evaluate_cli.main, *map(str, common), "--no-channels-last", "--out", str(tmp_path / "nchw"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    nchw = json.loads((tmp_path / "nchw" / "summary.json").read_text())["runs"][0]
    assert nchw["setup"]["channels_last"] is False and abs(nchw["J&F-Mean"] - run["J&F-Mean"]) < 1e-3
    proc = call(evaluate_cli.main, *map(str, common), "--policy", "gate", "--out", str(tmp_path / "gate"))
    assert proc.returncode != 0 and "needs a reuse gate" in proc.stderr and "Traceback" not in proc.stderr
