"""FeatureExtractor: weights sources, frozen eval mode, feature keys and shapes, normalisation."""

from __future__ import annotations

import pytest
import torch
import torchvision
import torchvision.models._api

from base.errors import CheckpointError, ConfigError
from models.backbone import FEATURE_CHANNELS, IMAGENET_MEAN, IMAGENET_STD, FeatureExtractor
from tests.numerics import gamma


@pytest.fixture(scope="module")
def rn18() -> FeatureExtractor:
    return FeatureExtractor("resnet18", "none")


def _image(height: int = 64, width: int = 112, batch: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (batch, 3, height, width), generator=gen, dtype=torch.uint8)


def _resnet18_state(seed: int) -> dict:
    torch.manual_seed(seed)
    return torchvision.models.resnet18(weights=None).state_dict()


def _assert_same_weights(extractor: FeatureExtractor, state: dict) -> None:
    own = extractor.resnet.state_dict()
    assert set(own) == {k for k in state if not k.startswith("fc.")}
    for key, value in own.items():
        assert torch.equal(value, state[key]), key


def test_none_is_torchvision_init_of_seed_0(rn18):
    _assert_same_weights(rn18, _resnet18_state(0))


def test_none_ignores_and_keeps_the_global_rng():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    extractor = FeatureExtractor("resnet18", "none")
    assert torch.equal(torch.get_rng_state(), before)  # training/evaluation RNG streams are unaffected
    _assert_same_weights(extractor, _resnet18_state(0))  # same backbone whatever the run's seed


@pytest.mark.parametrize("height,width", [(64, 112), (65, 113)])
def test_feature_keys_shapes_and_split(rn18, feature_grid, height, width):
    image = _image(height, width, batch=2)
    with torch.no_grad():
        feats = rn18(image)
        f8 = rn18.forward_f8(image)
        deep = rn18.forward_deep(f8["layer3"])
    grid = feature_grid(height, width)
    assert list(feats) == ["layer1", "layer2", "layer3", "layer4", "layer5"]
    for key, value in feats.items():
        assert value.shape == (2, rn18.channels[key], *grid[key]), key
    for key in ("layer1", "layer2", "layer3"):
        assert torch.equal(f8[key], feats[key])
    for key in ("layer4", "layer5"):
        assert torch.equal(deep[key], feats[key])


def test_channels_table():
    assert FEATURE_CHANNELS["resnet18"] == {"layer1": 64, "layer2": 64, "layer3": 128, "layer4": 256, "layer5": 512}
    assert FEATURE_CHANNELS["resnet101"] == {"layer1": 64, "layer2": 256, "layer3": 512, "layer4": 1024,
                                             "layer5": 2048}


def test_resnet101_channels():
    extractor = FeatureExtractor("resnet101", "none")
    with torch.no_grad():
        feats = extractor(_image(32, 32))
    assert {k: v.shape[1] for k, v in feats.items()} == FEATURE_CHANNELS["resnet101"] == extractor.channels


def test_frozen_and_always_eval(rn18):
    assert not any(p.requires_grad for p in rn18.parameters())
    assert not hasattr(rn18.resnet, "fc") and not hasattr(rn18.resnet, "avgpool")
    rn18.train()
    assert not rn18.training and not any(m.training for m in rn18.modules())
    assert rn18.state_dict().keys() == {f"resnet.{k}" for k in rn18.resnet.state_dict()}


def test_fused_normalisation_and_float_input(rn18):
    image = _image()
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    expected = image.float() * (1 / 255 / std) + (-mean / std)
    assert torch.equal(rn18.normalize(image), expected)
    # against the textbook form (x / 255 - mean) / std: the fused constants carry 2 (scale) and 1 (shift) roundings,
    # its multiply-add 2; the textbook form 3 (divide, subtract, divide): elementwise within
    # gamma(4) (|x scale| + |shift|) + gamma(3) (x / 255 + mean) / std
    scale, shift = 1 / 255 / std, mean / std
    x = image.double()
    bound = gamma(4) * (x * scale.double() + shift.double()) + gamma(3) * (x / 255 + mean.double()) / std.double()
    diff = (rn18.normalize(image).double() - ((image.float() / 255 - mean) / std).double()).abs()
    assert (diff <= bound).all()
    with torch.no_grad():
        assert torch.equal(rn18(image)["layer3"], rn18(image.float())["layer3"])


def test_unknown_name():
    with pytest.raises(ConfigError, match="resnet50"):
        FeatureExtractor("resnet50", "none")




def test_the_network_module_reads_no_files():
    """ImageNet weights and weight files go through lib.tools.checkpoint.build_backbone, never models/."""
    with pytest.raises(ConfigError, match="build_backbone"):
        FeatureExtractor("resnet18", "imagenet")
    with pytest.raises(ConfigError, match="build_backbone"):
        FeatureExtractor("resnet18", "weights/some.pth")


def test_a_state_dict_is_loaded_and_a_wrong_one_refused():
    state = _resnet18_state(5)
    _assert_same_weights(FeatureExtractor("resnet18", state), state)
    with pytest.raises(CheckpointError, match="do not match"):
        FeatureExtractor("resnet101", state)
