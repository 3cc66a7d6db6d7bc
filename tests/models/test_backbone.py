"""FeatureExtractor: weights sources, frozen eval mode, feature keys and shapes, normalisation."""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision
import torchvision.models._api

from lib.errors import CheckpointError, ConfigError
from models.backbone import FEATURE_CHANNELS, IMAGENET_MEAN, IMAGENET_STD, FeatureExtractor, imagenet_weights_file


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
    torch.testing.assert_close(rn18.normalize(image), (image.float() / 255 - mean) / std)
    with torch.no_grad():
        assert torch.equal(rn18(image)["layer3"], rn18(image.float())["layer3"])


def test_unknown_name():
    with pytest.raises(ConfigError, match="resnet50"):
        FeatureExtractor("resnet50", "none")


def _offline(url, *args, **kwargs):
    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


def test_imagenet_missing_file_explains_where_to_put_it(tmp_path, monkeypatch):
    """Offline and not cached: one line naming the file, the cache and the way out."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", _offline)
    expected = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert imagenet_weights_file("resnet18") == expected
    with pytest.raises(ConfigError) as err:
        FeatureExtractor("resnet18", "imagenet")
    message = str(err.value)
    assert "resnet18-f37072fd.pth" in message and str(expected) in message
    assert "TORCH_HOME" in message and "--pretrained none" in message and "URLError" in message
    assert "\n" not in message


def test_imagenet_is_downloaded_into_the_hub_cache_when_online(tmp_path, monkeypatch):
    """Online: torchvision's weights API fetches the file into $TORCH_HOME/hub/checkpoints (simulated here:
    no network on the test machines) and the next run reads it from there without a download."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    state, calls = _resnet18_state(4), []
    real_loader = torchvision.models._api.load_state_dict_from_url

    def download(url, *args, **kwargs):
        calls.append((url, kwargs.get("check_hash")))
        target = imagenet_weights_file("resnet18")
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, target)
        return torch.load(target, weights_only=True)

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", download)
    _assert_same_weights(FeatureExtractor("resnet18", "imagenet"), state)
    assert calls == [(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url, True)]
    assert imagenet_weights_file("resnet18").is_file()
    # the real loader now finds the cached file (no network needed)
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", real_loader)
    _assert_same_weights(FeatureExtractor("resnet18", "imagenet"), state)


def test_imagenet_loads_from_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    state = _resnet18_state(3)
    target = imagenet_weights_file("resnet18")
    target.parent.mkdir(parents=True)
    torch.save(state, target)
    _assert_same_weights(FeatureExtractor("resnet18", "imagenet"), state)


@pytest.mark.parametrize("with_fc", [True, False])
def test_weights_from_path(tmp_path, with_fc):
    state = _resnet18_state(5)
    if not with_fc:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    path = tmp_path / "rn18.pth"
    torch.save(state, path)
    _assert_same_weights(FeatureExtractor("resnet18", str(path)), state)


def test_weights_path_errors(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(CheckpointError, match="not found") as err:
        FeatureExtractor("resnet18", str(missing))
    assert str(missing) in str(err.value)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="cannot read"):
        FeatureExtractor("resnet18", str(corrupt))
    wrong = tmp_path / "rn18.pth"
    torch.save(_resnet18_state(0), wrong)
    with pytest.raises(CheckpointError, match="do not match") as err:
        FeatureExtractor("resnet101", str(wrong))
    assert str(wrong) in str(err.value)
