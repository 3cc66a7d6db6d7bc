"""G-TTVOS's model: TTVOS's keys and outputs unchanged, the prefixes, the reuse modules per placement."""

from __future__ import annotations

import pytest
import torch

from base.errors import ConfigError
from models.gttvos import GTTVOS, PLACEMENTS, StateTranslator
from models.ttvos import TTVOS


def _mask(h, w):
    mask = torch.zeros(1, 1, h, w)
    mask[..., h // 4:h // 2, w // 4:w // 2] = 1
    return mask


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_the_ttvos_keys_come_first_and_a_ttvos_state_dict_leaves_only_the_reuse_modules(placement):
    torch.manual_seed(0)
    ttvos, model = TTVOS(), GTTVOS(placement=placement)
    keys = list(model.state_dict())
    assert keys[:len(ttvos.state_dict())] == list(ttvos.state_dict())
    missing, unexpected = model.load_state_dict(ttvos.state_dict(), strict=False)
    expected = {"convGS", "Convert_Diff", "Diff_process"} | ({"Tmatching"} if placement == "frame" else set())
    assert not unexpected and {k.split(".")[0] for k in missing} == expected
    assert model.config() == {"backbone": "hrnetv2Sv1", "query_group": 4, "placement": placement}
    assert sum(p.numel() for p in model.reuse_parameters()) == sum(
        p.numel() for name, p in model.named_parameters() if name.split(".")[0] in expected)


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_full_path_is_ttvos_and_an_untrained_translator_copies_the_last_computed_frame(placement):
    torch.manual_seed(0)
    ttvos = TTVOS().eval()
    model = GTTVOS(placement=placement).eval()
    model.load_state_dict(ttvos.state_dict(), strict=False)
    image, other = torch.randn(1, 3, 64, 96), torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        feats, ref = model.features(image), ttvos.features(image)
        assert set(ref) <= set(feats) and all(torch.equal(feats[k], ref[k]) for k in ref)
        state = model.init_state(feats, _mask(64, 96))
        out = model(feats, state)
        assert torch.equal(out.logits, ttvos(ref, state).logits)
        reuse = model.init_reuse(feats, _mask(64, 96), state)
        assert torch.equal(reuse.decoder, model.decoder_state(out))
        # on another frame: the translator's last convolution is zero, so the state is carried unchanged
        feats2 = model.features(other)
        dissimilarity = model.match(feats2, state, reuse)
        p = model.reuse_probability(model.gate_logits(dissimilarity))
        assert p.shape == (1,) and 0 < float(p) < 1
        reused, delta = model.reuse(feats2 if placement == "s16" else model.prefix(other), reuse, dissimilarity)
        assert delta.shape[-2:] == feats2["s8"].shape[-2:]
        if placement == "frame":
            assert torch.equal(reused.logits, model.refine.head(reuse.decoder))
        else:
            assert torch.equal(reused.out16, reuse.decoder)


def test_the_stem_split_computes_the_same_features():
    torch.manual_seed(0)
    for backbone in ("hrnetv2Sv1", "resnet18s16"):
        model = GTTVOS(backbone, placement="frame").eval()
        image = torch.randn(1, 3, 64, 96)
        with torch.no_grad():
            prefix = model.prefix(image)
            assert set(prefix) == {"stem"} and prefix["stem"].shape[-2:] == (16, 24)
            full = model.complete(dict(prefix))
            direct = model.backbone.get_features(image)
        assert all(torch.equal(full[k], direct[k]) for k in direct)


def test_placement_s16_stops_a_resnet_at_s8_but_runs_all_of_hrnet():
    torch.manual_seed(0)
    image = torch.randn(1, 3, 64, 96)
    resnet = GTTVOS("resnet18s16", placement="s16").eval()
    with torch.no_grad():
        prefix = resnet.prefix(image)
        assert set(prefix) == {"s8", "s4"}
        full = resnet.complete(dict(prefix))
        assert torch.equal(full["s16"], resnet.backbone.get_features(image)["s16"])
        assert set(GTTVOS(placement="s16").eval().prefix(image)) == {"s16", "s8", "s4"}


def test_bad_placements_are_refused():
    with pytest.raises(ConfigError, match="unknown G-TTVOS placement"):
        GTTVOS(placement="s4")
    with pytest.raises(ConfigError, match="needs a backbone with a /4 stem"):
        GTTVOS("mobileNetV3Larges16", placement="frame")
    GTTVOS("mobileNetV3Larges16", placement="s16")


def test_translator_resizes_its_inputs_and_starts_as_identity():
    translator = StateTranslator(20, 64)
    prev = torch.randn(2, 20, 16, 24)
    out = translator(prev, torch.randn(2, 1, 8, 12), torch.randn(1, 64, 16, 24))
    assert torch.equal(out, prev)
    torch.nn.init.normal_(translator.body[-1].weight)
    assert not torch.equal(translator(prev, torch.randn(2, 1, 8, 12), torch.randn(1, 64, 32, 48)), prev)
