"""GFRTM container: official state-dict keys/order/shapes, parameter counts, inference primitives."""

from __future__ import annotations

import copy
from typing import List, Tuple

import pytest
import torch

from base.errors import CheckpointError
from models.gfrtm import GFRTM, nearest_resize

HEIGHT, WIDTH = 64, 112
STAGES = ("layer5", "layer4", "layer3", "layer2")
FT = {"resnet18": {"layer5": 512, "layer4": 256, "layer3": 128, "layer2": 64},
      "resnet101": {"layer5": 2048, "layer4": 1024, "layer3": 512, "layer2": 256}}
Entry = Tuple[str, tuple]


def _rrb(prefix: str) -> List[Entry]:
    return [(f"{prefix}.conv1x1.weight", (64, 64, 1, 1)), (f"{prefix}.conv1x1.bias", (64,)),
            (f"{prefix}.bblock.0.weight", (64, 64, 3, 3)), (f"{prefix}.bblock.0.bias", (64,)),
            (f"{prefix}.bblock.1.weight", (64,)), (f"{prefix}.bblock.1.bias", (64,)),
            (f"{prefix}.bblock.1.running_mean", (64,)), (f"{prefix}.bblock.1.running_var", (64,)),
            (f"{prefix}.bblock.1.num_batches_tracked", ()), (f"{prefix}.bblock.3.weight", (64, 64, 3, 3))]


def _conv(prefix: str, weight: tuple) -> List[Entry]:
    return [(f"{prefix}.weight", weight), (f"{prefix}.bias", (weight[0],))]


def official_entries(ftext: str) -> List[Entry]:
    """The official G-FRTM state dict (spec 3.1), generated per block and stage."""
    ch_in = FT[ftext]["layer3"] + 1
    out: List[Entry] = [("convGS.1.weight", (16, 64, 3, 3)), ("convGS.1.bias", (16,)),
                        ("convGS.2.weight", (16,)), ("convGS.2.bias", (16,)), ("convGS.2.running_mean", (16,)),
                        ("convGS.2.running_var", (16,)), ("convGS.2.num_batches_tracked", ()),
                        ("convGS.4.weight", (2, 16, 3, 3)), ("convGS.4.bias", (2,))]
    for branch in ("conv_key", "conv_feat"):
        out += _conv(f"Tmatching.Tmatching.{branch}.0", (64, ch_in, 1, 1))
        out += _conv(f"Tmatching.Tmatching.{branch}.1", (64, 4, 5, 5))
    out += _conv("Tmatching.Tmatching.blend.0", (128, 4, 5, 5)) + _conv("Tmatching.Tmatching.blend.1",
                                                                          (64, 128, 1, 1))
    for branch in ("conv_key", "conv_val"):
        out += _conv(f"Tmatching.Tgenerate.{branch}.0", (64, ch_in, 1, 1))
        out += _conv(f"Tmatching.Tgenerate.{branch}.2", (64, 4, 5, 5))
    out += _conv("Convert_Diff", (1, 64, 3, 3))
    for L in STAGES:
        out += _conv(f"refiner.TSE.{L}.reduce.0", (64, FT[ftext][L], 1, 1))
        out += _conv(f"refiner.TSE.{L}.reduce.2", (64, 64, 1, 1))
        out += _conv(f"refiner.TSE.{L}.transform.0", (65, 65, 3, 3))
        out += _conv(f"refiner.TSE.{L}.transform.2", (65, 65, 3, 3))
        out += _conv(f"refiner.TSE.{L}.transform.4", (64, 65, 3, 3))
    for L in STAGES:
        out += _rrb(f"refiner.RRB1.{L}")
    for L in STAGES:
        out += _conv(f"refiner.CAB.{L}.convreluconv.0", (64, 128, 1, 1))
        out += _conv(f"refiner.CAB.{L}.convreluconv.2", (64, 64, 1, 1))
    for L in STAGES:
        out += _rrb(f"refiner.RRB2.{L}")
    for i in (1, 2, 3):
        out += _conv(f"refiner.Diff_process.conv_multi.conv{i}", (48, 65, 3, 3))
    out += _conv("refiner.Diff_process.conv_multi.convBlend", (64, 144, 5, 5))
    out += _rrb("refiner.Diff_process.postRBB")
    out += _conv("refiner.project.conv1", (32, 64, 3, 3)) + _conv("refiner.project.conv2", (1, 32, 3, 3))
    return out


@pytest.fixture(scope="module")
def model() -> GFRTM:
    torch.manual_seed(0)
    return GFRTM("resnet18").eval()


@pytest.mark.parametrize("ftext", ["resnet18", "resnet101"])
def test_state_dict_equals_official_keys_order_shapes(ftext):
    state = GFRTM(ftext).state_dict()
    expected = official_entries(ftext)
    assert len(state) == len(expected) == 189
    assert [(k, tuple(v.shape)) for k, v in state.items()] == expected
    for key, value in state.items():
        assert value.dtype == (torch.int64 if key.endswith("num_batches_tracked") else torch.float32), key
    keys = list(state)
    # 1-based positions quoted in the spec's listing.
    for position, key in [(1, "convGS.1.weight"), (10, "Tmatching.Tmatching.conv_key.0.weight"),
                          (22, "Tmatching.Tgenerate.conv_key.0.weight"), (30, "Convert_Diff.weight"),
                          (32, "refiner.TSE.layer5.reduce.0.weight"), (72, "refiner.RRB1.layer5.conv1x1.weight"),
                          (112, "refiner.CAB.layer5.convreluconv.0.weight"),
                          (128, "refiner.RRB2.layer5.conv1x1.weight"),
                          (168, "refiner.Diff_process.conv_multi.conv1.weight"),
                          (186, "refiner.project.conv1.weight"), (189, "refiner.project.conv2.bias")]:
        assert keys[position - 1] == key


@pytest.mark.parametrize("ftext,total,tmatching", [("resnet18", 1_709_508, 80_320),
                                                   ("resnet101", 1_992_132, 178_624)])
def test_trainable_parameter_counts(ftext, total, tmatching):
    net = GFRTM(ftext)
    count = {name: sum(p.numel() for p in child.parameters()) for name, child in net.named_children()}
    assert count["convGS"] == 9_554 and count["Tmatching"] == tmatching and count["Convert_Diff"] == 577
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == total


def test_detect_ftext():
    assert GFRTM.detect_ftext(GFRTM("resnet18").state_dict()) == "resnet18"
    assert GFRTM.detect_ftext(GFRTM("resnet101").state_dict()) == "resnet101"
    with pytest.raises(CheckpointError, match="refiner.TSE.layer4.reduce.0.weight"):
        GFRTM.detect_ftext({"convGS.1.weight": torch.zeros(16, 64, 3, 3)})
    with pytest.raises(CheckpointError, match="333"):
        GFRTM.detect_ftext({"refiner.TSE.layer4.reduce.0.weight": torch.zeros(64, 333, 1, 1)})
    with pytest.raises(ValueError):
        GFRTM("resnet50")


def test_aliases_and_gate_init(model):
    assert model.gate is model.convGS and model.template is model.Tmatching
    assert model.delta_generator is model.Convert_Diff and model.segmenter is model.refiner
    net = GFRTM()
    net.init_gate_bias()
    assert net.convGS[4].bias.tolist() == pytest.approx([0.1, 2.0])


def test_inference_primitives_shapes(model, random_features, feature_grid):
    feats = random_features(batch=1, height=HEIGHT, width=WIDTH)
    grid = feature_grid(HEIGHT, WIDTH)
    masks = (torch.rand(2, 1, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(0)) > 0.5).to(torch.uint8)
    with torch.no_grad():
        template = model.make_template(feats["layer3"], masks)
        assert template.shape == (2, 64, 64)
        prev_score16 = nearest_resize(masks, grid["layer4"])
        assert prev_score16.shape == (2, 1, *grid["layer4"]) and prev_score16.dtype == torch.float32
        tpl_s = model.match(feats["layer3"], prev_score16, template)
        assert tpl_s.shape == (2, 64, *grid["layer3"])
        logits = model.gate_logits(tpl_s)
        assert logits.shape == (2, 2)
        p_reuse = model.reuse_probability(logits)
        assert p_reuse.shape == (2,)
        assert torch.equal(p_reuse, torch.softmax(logits, 1)[:, 0])  # the same operation
        delta = model.delta(tpl_s)
        assert delta.shape == (2, 1, *grid["layer4"])
        x16 = model.deep(prev_score16, feats["layer5"], feats["layer4"])
        assert x16.shape == (2, 64, *grid["layer4"])
        x16_reuse = model.translate(x16, delta)
        logits_full = model.shallow(x16_reuse, prev_score16 + delta, feats["layer3"], feats["layer2"],
                                    (HEIGHT, WIDTH))
        assert logits_full.shape == (2, 1, HEIGHT, WIDTH)


def test_shared_layer3_equals_per_object(model, random_features, feature_grid):
    """In float64: batch 2 and batch 1 may be blocked (summed) differently by a kernel, so they agree to float64
    rounding, far below a sharing mistake."""
    net = copy.deepcopy(model).double()
    feats = random_features(batch=1, height=HEIGHT, width=WIDTH)
    grid = feature_grid(HEIGHT, WIDTH)
    masks = (torch.rand(2, 1, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(1)) > 0.5).double()
    layer3 = feats["layer3"].double()
    with torch.no_grad():
        template = net.make_template(layer3, masks)
        score = torch.randn(2, 1, *grid["layer4"], generator=torch.Generator().manual_seed(2)).double()
        tpl_s = net.match(layer3, score, template)
        for i in range(2):
            torch.testing.assert_close(net.make_template(layer3, masks[i:i + 1]), template[i:i + 1], rtol=1e-12,
                                       atol=1e-12)
            torch.testing.assert_close(net.match(layer3, score[i:i + 1], template[i:i + 1]), tpl_s[i:i + 1],
                                       rtol=1e-12, atol=1e-12)


def test_template_uses_nearest_mask():
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 1, 1] = 1.0  # nearest to a 4x4 grid samples rows/cols 0,2,4,6: the pixel disappears
    assert nearest_resize(mask, (4, 4)).sum() == 0
    mask[..., 2, 2] = 1.0
    assert nearest_resize(mask, (4, 4))[0, 0, 1, 1] == 1


def test_all_modules_train(random_features, feature_grid):
    """One training-style step reaches every trainable parameter."""
    torch.manual_seed(0)
    net = GFRTM().train()
    feats = random_features(batch=2, height=32, width=48)
    grid = feature_grid(32, 48)
    masks = (torch.rand(2, 1, 32, 48, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    prev = nearest_resize(masks, grid["layer4"])
    tpl_s = net.match(feats["layer3"], prev, net.make_template(feats["layer3"], masks))
    gate = net.reuse_probability(net.gate_logits(tpl_s)).view(-1, 1, 1, 1)
    delta = net.delta(tpl_s)
    x_full = net.deep(prev, feats["layer5"], feats["layer4"])
    x16 = gate * net.translate(x_full, delta) + (1 - gate) * x_full
    net.shallow(x16, prev + delta, feats["layer3"], feats["layer2"], (32, 48)).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
