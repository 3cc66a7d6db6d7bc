"""``python -m benchmarks.amp``: float32 against bf16 on the shipped model, alternating; table and JSON."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks.amp import main
from tests.cli import call


@pytest.mark.slow
def test_it_times_both_precisions_and_compares_their_masks(tmp_path):
    out = tmp_path / "amp.json"
    proc = call(main, "--frames", "3", "--rounds", "1", "--threads", "1", "--json", out)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["base"] == "gfrtm" and result["size"] == [360, 640] and result["frames"] == 3
    assert result["layout"] == {"float32": "NCHW", "bf16": "NHWC"}
    assert result["cpu"]["aten_capability"] == torch.backends.cpu.get_cpu_capability()
    for path in ("compute", "warp"):
        row = result["paths"][path]
        assert row["float32"]["median_ms"] > 0 and row["bf16"]["median_ms"] > 0
        assert row["speedup_median"] == pytest.approx(row["float32"]["median_ms"] / row["bf16"]["median_ms"])
        assert row["mask_iou_bf16_vs_float32"] > 0.95
    assert "CPU: " in proc.stdout and "compute" in proc.stdout and "warp" in proc.stdout


def test_bad_counts_are_one_line_errors():
    proc = call(main, "--frames", "1")
    assert proc.returncode == 2 and "--frames >= 2" in proc.stderr and "Traceback" not in proc.stderr


def test_bf16_is_native_only_with_the_instructions_and_no_cap():
    from lib.tools.cpu import bf16_is_native

    def report(flags, cap=None):
        return {"flags": flags, "onednn_max_isa": cap}

    assert bf16_is_native(report(["avx2", "avx512f", "avx512_bf16", "amx_bf16"]))
    assert bf16_is_native(report(["avx512_bf16"], "AVX512_CORE_BF16"))
    assert not bf16_is_native(report(["avx2", "avx512f"]))
    assert not bf16_is_native(report(["avx512_bf16", "amx_bf16"], "AVX2"))
    assert not bf16_is_native(report(["avx512_bf16", "amx_bf16"], "AVX512_CORE"))
