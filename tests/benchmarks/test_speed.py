"""The speed benchmark (``python -m benchmarks.speed``) at a tiny size: table, JSON and their arithmetic."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch

from benchmarks.speed import MODULES, Timing, main, object_bands, synthetic_frames
from lib.tools.cli import run_cli
from lib.tools.flops import path_flops

SIZE = (64, 96)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One benchmark run: (printed table, JSON result)."""
    out = tmp_path_factory.mktemp("bench") / "speed.json"
    buffer = io.StringIO()
    threads = torch.get_num_threads()
    try:  # one thread: fast and steady on a shared CPU; the setting is restored for the other tests
        with contextlib.redirect_stdout(buffer):
            assert main(["--size", *map(str, SIZE), "--repeats", "1", "--warmup", "0", "--threads", "1",
                         "--json", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    return buffer.getvalue(), json.loads(out.read_text())


@pytest.mark.slow
def test_json_structure(run):
    _, result = run
    assert result["ftext"] == "resnet18" and result["size"] == list(SIZE) and result["device"] == "cpu"
    assert result["repeats"] == 1 and result["warmup"] == 0 and result["threads"] == 1
    assert "random" in result["weights"] and result["channels_last"] is False
    assert [row["key"] for row in result["rows"]] == [k for k, _, _ in MODULES] + ["engine_overhead",
                                                                                   "target_model_update"]
    assert set(result["frames"]) == {"frame_compute", "frame_reuse", "frame_compute_cg", "frame_warp",
                                     "frame_warp_learned", "frame_sparse_still", "frame_sparse_moving",
                                     "frame_sparse_learned", "frame_compute_amortised"}
    # the still frame recomputes only the mask-boundary tiles, the moving one every tile
    assert 0 < result["frames"]["frame_sparse_still"]["gflops"] < result["frames"]["frame_sparse_moving"]["gflops"]
    first = result["first_frame"]  # one sample each: structure only, no comparison of single wall times
    assert first["label"].startswith("first frame") and 0 < first["min_ms"] <= first["median_ms"] <= first["max_ms"]
    assert list(result["objects"]) == ["1", "2", "4"] and result["objects"]["1"]["vs_one_object"] == 1.0
    ttvos = result["ttvos"]  # the other base network's tracked and first frame, in the same rounds
    assert ttvos["backbone"] == "hrnetv2Sv1"
    assert ttvos["frame"]["median_ms"] > 0 and ttvos["first_frame"]["median_ms"] > 0
    assert 0 < ttvos["frame"]["gflops"] < result["frames"]["frame_compute"]["gflops"]
    assert ttvos["frame_vs_gfrtm_compute"] == pytest.approx(ttvos["frame"]["median_ms"]
                                                            / result["frames"]["frame_compute"]["median_ms"])
    for n, row in result["objects"].items():
        assert row["target"] == pytest.approx(1 + 0.35 * (int(n) - 1)) and row["median_ms"] > 0
    for row in result["rows"]:
        if row["key"] != "engine_overhead":
            assert row["min_ms"] <= row["q1_ms"] <= row["median_ms"] <= row["q3_ms"] <= row["max_ms"]
            assert row["median_ms"] > 0
        assert row["gflops"] >= 0
    assert set(result["ratios"]) == {"time", "flops", "time_vs_amortised", "flops_vs_amortised", "warp_time",
                                     "warp_learned_time", "sparse_still_time", "sparse_moving_time",
                                     "sparse_learned_time"}
    frames = result["frames"]
    assert frames["frame_warp"]["median_ms"] > 0 and frames["frame_warp_learned"]["median_ms"] > 0
    # the flow and filters are counted from their operations, the learned correction's convolutions on top
    assert 0 < frames["frame_warp"]["gflops"] < frames["frame_warp_learned"]["gflops"]
    assert frames["frame_warp_learned"]["gflops"] < 0.1 * frames["frame_compute"]["gflops"]
    # the learned tile gate recomputes at most the change rule's tiles (all) on the moving frame, plus its own
    # convolutions on the tile grid (a few kFLOPs)
    assert 0 < frames["frame_sparse_learned"]["gflops"] <= frames["frame_sparse_moving"]["gflops"] + 1e-4
    for path in ("compute", "reuse"):
        peak = result["peak_memory"][path]
        assert peak["peak_bytes"] > 0 and "RSS" in peak["kind"]


@pytest.mark.slow
@pytest.mark.parametrize("path", ["compute", "reuse"])
def test_shares_sum_to_one_hundred_percent(run, path):
    _, result = run
    rows = [row for row in result["rows"] if path in row["share"]]
    expected = {"compute": {"backbone_stride8", "template_matching_gate", "backbone_deep", "target_model_apply",
                            "refiner_full", "engine_overhead"},
                "reuse": {"backbone_stride8", "template_matching_gate", "refiner_reuse", "engine_overhead"}}[path]
    assert {row["key"] for row in rows} == expected
    assert sum(row["share"][path]["time_pct"] for row in rows) == pytest.approx(100.0, abs=1e-6)
    assert sum(row["share"][path]["flops_pct"] for row in rows) == pytest.approx(100.0, abs=1e-6)
    overhead = next(row for row in rows if row["key"] == "engine_overhead")
    assert overhead["share"][path]["flops_pct"] == pytest.approx(0.0, abs=1e-6)  # every FLOP is in a module


@pytest.mark.slow
def test_flops_and_ratios_agree_with_lib_flops(run):
    _, result = run
    flops = path_flops("resnet18", SIZE)
    frames, ratios = result["frames"], result["ratios"]
    assert frames["frame_compute"]["gflops"] == pytest.approx(flops["full"], rel=1e-9)
    assert frames["frame_reuse"]["gflops"] == pytest.approx(flops["reuse"], rel=1e-9)
    update = next(row for row in result["rows"] if row["key"] == "target_model_update")
    assert update["gflops"] > 0  # the CG update ran and was counted
    assert frames["frame_compute_cg"]["gflops"] == pytest.approx(flops["full"] + update["gflops"], rel=1e-9)
    assert ratios["flops"] == pytest.approx(flops["reuse"] / flops["full"], rel=1e-9)
    assert ratios["time"] == pytest.approx(frames["frame_reuse"]["median_ms"] / frames["frame_compute"]["median_ms"])
    plain, with_cg = frames["frame_compute"]["median_ms"], frames["frame_compute_cg"]["median_ms"]
    assert frames["frame_compute_amortised"]["median_ms"] == pytest.approx((7 * plain + with_cg) / 8)


@pytest.mark.slow
def test_printed_table(run):
    table, result = run
    assert "resnet18 at 64x96 on cpu" in table and "random initialisation" in table
    for _, label, _ in MODULES:
        assert label in table
    assert "frame: compute path" in table and "frame: reuse path" in table
    assert f"reuse / compute: time {result['ratios']['time']:.3f}, FLOPs {result['ratios']['flops']:.3f}" in table
    assert "peak memory, compute frame" in table and "peak memory, reuse frame" in table
    assert "first frame: one object's init + its frame" in table and "N=4:" in table
    assert f"warp / compute: time {result['ratios']['warp_time']:.3f}" in table
    assert f"sparse / compute: time {result['ratios']['sparse_still_time']:.3f} on a still frame" in table


def test_timing_summary_by_hand():
    summary = Timing([0.004, 0.001, 0.003, 0.002]).summary()
    assert summary == pytest.approx({"median_ms": 2.5, "q1_ms": 1.75, "q3_ms": 3.25, "min_ms": 1.0, "max_ms": 4.0})
    assert Timing([0.005]).summary() == pytest.approx({"median_ms": 5.0, "q1_ms": 5.0, "q3_ms": 5.0, "min_ms": 5.0,
                                                       "max_ms": 5.0})


def test_object_bands_cut_the_mask_into_n_objects():
    _, _, mask = synthetic_frames(40, 60)
    ids = object_bands(mask, 4)
    assert set(np.unique(ids)) == {0, 1, 2, 3, 4} and np.array_equal(ids > 0, mask > 0)
    assert np.array_equal(object_bands(mask, 1), mask)


def test_synthetic_frames():
    frame0, frame1, mask = synthetic_frames(40, 60)
    assert frame0.shape == frame1.shape == (40, 60, 3) and frame0.dtype == np.uint8 and mask.shape == (40, 60)
    assert 0.05 < mask.mean() < 0.2
    np.testing.assert_array_equal(frame1, np.roll(frame0, (2, 3), axis=(0, 1)))


def test_bad_arguments(capsys):
    assert run_cli(main, ["--size", "16", "96", "--repeats", "1"]) == 2
    assert "--size must be at least 32x32" in capsys.readouterr().err
    assert run_cli(main, ["--size", *map(str, SIZE), "--repeats", "0"]) == 2
    assert "--repeats >= 1" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert run_cli(main, ["--size", *map(str, SIZE), "--dev", "cuda"]) == 2
        assert "CUDA is not available" in capsys.readouterr().err


@pytest.mark.slow
def test_bf16_run_says_so_and_names_the_cpu(tmp_path):
    """``--amp bf16``: every path is timed in bf16 autocast (G-FRTM on its NHWC bf16 copies), with the same FLOPs;
    the header names the precision and the CPU class."""
    out = tmp_path / "bf16.json"
    buffer = io.StringIO()
    threads = torch.get_num_threads()
    try:
        with contextlib.redirect_stdout(buffer):
            assert main(["--size", *map(str, SIZE), "--repeats", "1", "--warmup", "0", "--threads", "1", "--amp",
                         "bf16", "--json", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    result = json.loads(out.read_text())
    assert result["amp"] == "bf16" and result["channels_last"] is True and result["int8_backbone"] is False
    assert result["cpu"]["aten_capability"] == torch.backends.cpu.get_cpu_capability()
    assert "bf16 autocast" in buffer.getvalue() and f"CPU: {result['cpu']['summary']}" in buffer.getvalue()
    assert all(row["median_ms"] > 0 for row in result["rows"] if row["key"] != "engine_overhead")
    assert result["frames"]["frame_compute"]["gflops"] > 0


@pytest.mark.slow
def test_int8_backbone_run_says_so():
    buffer = io.StringIO()
    threads = torch.get_num_threads()
    try:
        with contextlib.redirect_stdout(buffer):
            assert main(["--size", *map(str, SIZE), "--repeats", "1", "--warmup", "0", "--threads", "1",
                         "--int8-backbone"]) == 0
    finally:
        torch.set_num_threads(threads)
    table = buffer.getvalue()
    assert "int8 backbone" in table and "float32" in table
