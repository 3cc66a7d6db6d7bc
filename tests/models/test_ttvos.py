"""TTVOS's modules beyond the fixture (which covers HRNet at 240x432): the other backbones' structure (the
reference's key and parameter counts), feature grids, the state's shapes and the training mode."""

from __future__ import annotations

import pytest
import torch

from base.errors import ConfigError
from models.ttvos import TTVOS, count_parameters, pool_mask
from models.ttvos_backbones import FEATURE_COUNTS, FINETUNE_CHILD

# shared/spec/ttvos_reference.md section 3.1, counted on the official models
OFFICIAL_COUNTS = {"hrnetv2Sv1": (474, 1_605_830, 1_477_920), "resnet18s16": (168, 12_446_630, 11_176_512),
                   "mobileNetV3Larges16": (356, 3_664_470, 2_971_952), "resnet50s16": (306, 14_802_086, 8_543_296)}


@pytest.mark.parametrize("name", list(OFFICIAL_COUNTS))
def test_keys_and_parameters_are_the_official_counts(name):
    keys, total, backbone = OFFICIAL_COUNTS[name]
    model = TTVOS(name)
    assert len(model.state_dict()) == keys
    assert count_parameters(model) == total and count_parameters(model.backbone) == backbone
    assert all(k.split(".")[0] in ("backbone", "refine", "gcm", "gcq") for k in model.state_dict())


@pytest.mark.parametrize("name", ["hrnetv2Sv1", "resnet18s16", "mobileNetV3Larges16"])
def test_feature_grids_and_one_tracked_frame(name):
    torch.manual_seed(0)
    model = TTVOS(name).eval()
    image = torch.randn(1, 3, 64, 96)
    mask = torch.zeros(1, 1, 64, 96)
    mask[..., 16:48, 24:72] = 1
    c16, c8, c4 = FEATURE_COUNTS[name]
    with torch.no_grad():
        feats = model.features(image)
        assert feats["s16"].shape == (1, c16, 4, 6) and feats["s8"].shape == (1, c8, 8, 12)
        assert feats["s4"].shape == (1, c4, 16, 24)
        state = model.init_state(feats, mask)
        assert state.prev_seg.shape == (1, 6, 8, 12) and state.template.shape == (1, c8, c8)
        assert torch.allclose(state.template.sum(-1), torch.ones(1, c8), atol=1e-5 * c8)  # softmax rows
        out = model(feats, state, heads=True)
        assert out.logits.shape == (1, 2, 64, 96) and out.coarse.shape == (1, 2, 16, 24)
        assert out.diff.shape == (1, 2, 8, 12) and out.tmp.shape == (1, 1, 8, 12)
        assert 0 < out.update_weight.item() < 1
        prob = torch.softmax(out.logits, 1)
        new = model.update(feats, prob, state, out.update_weight)
    # the newest pooled mask first, the older ones shifted, the oldest dropped
    assert torch.equal(new.prev_seg[:, :2], pool_mask(prob))
    assert torch.equal(new.prev_seg[:, 2:4], state.prev_seg[:, :2])
    assert torch.equal(new.prev_seg[:, 4:], state.prev_seg[:, 2:4])
    assert new.prev_s16 is feats["s16"]


def test_initial_mask_history_pools_with_zero_padding_counted():
    mask = torch.zeros(1, 1, 16, 16)
    once = pool_mask(torch.cat([1 - mask, mask], 1), times=1)
    # a corner window of an all-background map covers 4 pixels of 9: the zero padding counts
    assert once.shape == (1, 2, 8, 8) and abs(once[0, 0, 0, 0].item() - 4 / 9) < 1e-7
    assert once[0, 0, 3, 3] == 1 and torch.all(once[0, 1] == 0)
    assert pool_mask(torch.cat([1 - mask, mask], 1)).shape == (1, 2, 2, 2)


def test_training_mode_keeps_the_frozen_backbone_children_in_eval():
    model = TTVOS("hrnetv2Sv1").train()
    for name, child in model.backbone.named_children():
        assert child.training == (name == FINETUNE_CHILD["hrnetv2Sv1"]), name
    assert model.refine.training and model.gcq.training
    model.eval()
    assert not any(m.training for m in model.modules())


def test_unknown_backbone_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown TTVOS backbone"):
        TTVOS("resnet34s16")
