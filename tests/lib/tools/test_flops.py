"""FLOP accounting: ``python -m lib.tools.flops`` against the spec's reference figures (spec 3.3), the JSON
output, and :class:`lib.tools.flops.FlopMeter`.

The counts are taken at the full 480x854 size on the meta device (shapes only, no compute), so no
scaling from a reduced size is needed.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from lib.tools.cli import run_cli
from lib.tools.flops import FlopMeter, main, measure, path_flops, polyphase_bicubic_flops

SIZE = (480, 854)
# spec 3.3, GFLOPs per frame and object at 480x854, measured on the official code with FlopCounterMode
SPEC = {
    "resnet18": {"full": 54.31, "reuse": 40.72, "backbone_stride8": 16.23, "backbone_deep": 13.59,
                 "template_matching": 0.70, "gate": 0.0003, "delta_generator": 0.002, "target_model_apply": 0.08,
                 "refine_translator": 1.27, "refiner_deep_stages": 1.19, "upsampler": 4.66,
                 "first_frame_template": 0.43, "refiner_full": 23.70, "refiner_reuse": 23.79},
    "resnet101": {"full": 155.17, "reuse": 55.76, "backbone_stride8": 29.70, "backbone_deep": 98.93,
                  "template_matching": 1.33, "target_model_apply": 0.32, "refine_translator": 1.27,
                  "refiner_deep_stages": 1.43, "upsampler": 4.66, "first_frame_template": 1.06,
                  "refiner_full": 24.89, "refiner_reuse": 24.74},
}
MODULES = {"backbone_stride8", "backbone_deep", "template_matching", "gate", "delta_generator", "target_model_apply",
           "refiner_deep_stages", "refine_translator", "refiner_shallow_stages", "upsampler", "first_frame_template"}


def spec_approx(value: float) -> object:
    """2 % of the spec figure, or half a unit of its last printed digit for the tiny ones."""
    return pytest.approx(value, rel=0.02, abs=0.005)


@pytest.fixture(scope="module")
def rn18() -> dict:
    return path_flops("resnet18", SIZE)


def test_rn18_full_and_reuse_paths_match_the_spec(rn18):
    spec = SPEC["resnet18"]
    # counted here (the bicubic upsampling is F.interpolate, not counted): within 2 %
    assert rn18["full"] == pytest.approx(spec["full"], rel=0.02)
    assert rn18["reuse"] == pytest.approx(spec["reuse"], rel=0.02)
    # as the official code counts them (its polyphase bicubic filters are convolutions): exact to the digit
    assert rn18["official_count"]["full"] == pytest.approx(spec["full"], abs=0.005)
    assert rn18["official_count"]["reuse"] == pytest.approx(spec["reuse"], abs=0.005)
    assert rn18["reuse"] / rn18["full"] == pytest.approx(0.75, abs=0.005)


@pytest.mark.parametrize("ftext", ["resnet18", "resnet101"])
def test_every_module_matches_the_spec(rn18, ftext):
    result = rn18 if ftext == "resnet18" else path_flops(ftext, SIZE)
    spec, modules, official = SPEC[ftext], result["modules"], result["official_count"]
    for name in MODULES & set(spec):
        value = official["upsampler"] if name == "upsampler" else modules[name]
        assert value == spec_approx(spec[name]), name
    head = modules["refiner_shallow_stages"] + official["upsampler"]
    assert modules["refiner_deep_stages"] + head == spec_approx(spec["refiner_full"])
    assert modules["refine_translator"] + head == spec_approx(spec["refiner_reuse"])
    assert official["full"] == spec_approx(spec["full"])
    assert official["reuse"] == spec_approx(spec["reuse"])


def test_path_totals_are_sums_of_their_modules(rn18):
    m = rn18["modules"]
    shared = m["backbone_stride8"] + m["template_matching"] + m["gate"] + m["refiner_shallow_stages"] + m["upsampler"]
    assert rn18["full"] == pytest.approx(shared + m["backbone_deep"] + m["target_model_apply"]
                                         + m["refiner_deep_stages"], rel=1e-12)
    assert rn18["reuse"] == pytest.approx(shared + m["delta_generator"] + m["refine_translator"], rel=1e-12)
    extra = rn18["official_count"]["upsampler"] - m["upsampler"]
    assert rn18["official_count"]["full"] - rn18["full"] == pytest.approx(extra, rel=1e-9)


def test_polyphase_bicubic_flops_by_hand():
    # four 4x4 depthwise convs, each with a (1+1) x (1+1) output: 4 * 16 MACs * 4 outputs * 2 FLOPs
    assert polyphase_bicubic_flops(1, 1, 1) == 512
    assert polyphase_bicubic_flops(3, 2, 4) == 4 * 2 * 16 * 3 * 3 * 5


def test_meta_device_counts_equal_real_computation():
    torch.manual_seed(0)
    assert path_flops("resnet18", (64, 96), device="cpu") == path_flops("resnet18", (64, 96), device="meta")


def test_cli_json_schema(capsys):
    assert main(["--ftext", "resnet18", "--size", "64", "96", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"ftext", "size", "full", "reuse", "modules", "official_count"}
    assert result["ftext"] == "resnet18" and result["size"] == [64, 96]
    assert set(result["modules"]) == MODULES
    assert all(isinstance(v, float) and v >= 0 for v in result["modules"].values())
    assert set(result["official_count"]) == {"upsampler", "full", "reuse"}
    assert 0 < result["reuse"] < result["full"] < result["official_count"]["full"]


def test_cli_table(capsys):
    assert main(["--size", "64", "96"]) == 0
    out = capsys.readouterr().out
    assert "resnet18 at 64x96" in out
    assert all(name in out for name in MODULES)
    assert "full path" in out and "reuse path" in out and "reuse / full" in out


def test_cli_rejects_a_size_below_the_stride(capsys):
    assert run_cli(main, ["--size", "16", "96"]) == 2
    assert "--size must be at least 32x32" in capsys.readouterr().err


def test_flop_meter_counts_each_key_once_and_accumulates():
    conv = nn.Conv2d(2, 3, 1, bias=False)
    x = torch.randn(1, 2, 4, 5)
    expected = 2 * 2 * 3 * 4 * 5  # 2 FLOPs per MAC, 2 -> 3 channels, 20 pixels
    assert measure(conv, x) == expected
    meter = FlopMeter()
    for _ in range(3):
        with meter.count("conv", (4, 5)):
            conv(x)
    with meter.count("conv", (8, 10)):
        conv(torch.randn(1, 2, 8, 10))
    assert meter.by_component["conv"] == 3 * expected + 4 * expected
    assert meter.total == 7 * expected and len(meter.cache) == 2
    meter.reset_totals()
    assert meter.total == 0 and len(meter.cache) == 2
    with pytest.raises(RuntimeError, match="FLOP count 'inner' inside count 'conv'"):
        with meter.count("conv", (4, 5)), meter.count("inner"):
            pass
    with meter.count("after", (4, 5)):  # the meter is usable again
        conv(x)
    assert meter.by_component["after"] == expected
    off = FlopMeter(enabled=False)
    with off.count("conv", (4, 5)):
        conv(x)
    assert off.total == 0 and not off.cache
    off.add("flow", 100)
    assert off.total == 0


def test_flop_meter_adds_counts_made_outside_torch():
    meter = FlopMeter()
    meter.add("flow", 120)
    meter.add("flow", 80.0)
    with meter.count("conv", (1,)), torch.no_grad():
        nn.Conv2d(1, 1, 1)(torch.randn(1, 1, 2, 2))
        meter.add("flow", 1)  # adding inside a count is kept apart from the torch count
    assert meter.by_component["flow"] == 201 and meter.by_component["conv"] == 8


# The official TTVOS README's FLOP and parameter columns, which its own counter gives on test.py's dummy call
# (2 frames at 480x854, padded to 480x864); MobileNetV3: 7.55 with the official code here, 7.56 in its README.
TTVOS_README = {"hrnetv2Sv1": (10.61, 1.61), "mobileNetV3Larges16": (7.55, 3.66),
                "resnet18s16": (55.23, 12.45), "resnet50s16": (83.86, 14.80)}


@pytest.mark.parametrize("backbone", [
    "hrnetv2Sv1", "mobileNetV3Larges16",
    pytest.param("resnet18s16", marks=pytest.mark.slow), pytest.param("resnet50s16", marks=pytest.mark.slow)])
def test_ttvos_counts_reproduce_the_official_readme(backbone):
    from lib.tools.flops import ttvos_flops

    result = ttvos_flops(backbone, (480, 854), "cpu")
    gmac, params = TTVOS_README[backbone]
    assert round(result["official_gmac_dummy"], 2) == gmac
    assert round(result["parameters"] / 1e6, 2) == params
    parts = result["parts"]
    assert result["tracked_frame"] == pytest.approx(parts["backbone"] + parts["head"] + parts["state_update"])
    assert parts["refine_decoder"] == pytest.approx(parts["head"] - parts["template_attention"])


def test_gttvos_counts_add_up_and_the_placements_save_what_they_skip():
    """G-TTVOS (meta device): a computed frame is TTVOS's plus the matching and gate; a reused frame of placement
    frame skips all but the stem (HRNet: under 0.45 of a computed frame), of s16 on HRNet almost nothing (the whole
    backbone still runs), of s16 on ResNet-50 its /16 layers."""
    from lib.tools.flops import gttvos_flops, ttvos_flops

    ttvos = ttvos_flops("hrnetv2Sv1", (240, 432), "meta")["tracked_frame"]
    frame = gttvos_flops("hrnetv2Sv1", "frame", (240, 432))
    assert frame["ttvos_frame"] == pytest.approx(ttvos, rel=1e-6)
    assert frame["computed_frame"] == pytest.approx(ttvos + frame["parts"]["matching_gate"], rel=1e-6)
    assert frame["reused_vs_computed"] < 0.45
    s16 = gttvos_flops("hrnetv2Sv1", "s16", (240, 432))
    assert s16["parts"]["backbone_rest"] == 0 and s16["ttvos_frame"] == pytest.approx(ttvos, rel=1e-4)
    assert 0.9 < s16["reused_vs_computed"] < 1
    resnet = gttvos_flops("resnet50s16", "s16", (240, 432))
    assert resnet["parts"]["backbone_rest"] > 0 and resnet["reused_vs_computed"] < 0.7
