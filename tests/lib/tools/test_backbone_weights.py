"""Backbone weights from outside the network module: torchvision's ImageNet weights (hub cache, download,
offline error) and torchvision-format state dict files (lib.tools.checkpoint.build_backbone)."""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision
import torchvision.models._api

from base.errors import CheckpointError, ConfigError
from lib.tools.checkpoint import build_backbone, imagenet_weights_file
from models.backbone import FeatureExtractor
from tests.models.test_backbone import _assert_same_weights, _resnet18_state


def _offline(url, *args, **kwargs):
    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


def test_imagenet_missing_file_explains_where_to_put_it(tmp_path, monkeypatch):
    """Offline and not cached: one line naming the file, the cache and the way out."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", _offline)
    expected = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert imagenet_weights_file("resnet18") == expected
    with pytest.raises(ConfigError) as err:
        build_backbone("resnet18", "imagenet")
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
    _assert_same_weights(build_backbone("resnet18", "imagenet"), state)
    assert calls == [(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url, True)]
    assert imagenet_weights_file("resnet18").is_file()
    # the real loader now finds the cached file (no network needed)
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", real_loader)
    _assert_same_weights(build_backbone("resnet18", "imagenet"), state)


def test_imagenet_loads_from_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    state = _resnet18_state(3)
    target = imagenet_weights_file("resnet18")
    target.parent.mkdir(parents=True)
    torch.save(state, target)
    _assert_same_weights(build_backbone("resnet18", "imagenet"), state)


@pytest.mark.parametrize("with_fc", [True, False])
def test_weights_from_path(tmp_path, with_fc):
    state = _resnet18_state(5)
    if not with_fc:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    path = tmp_path / "rn18.pth"
    torch.save(state, path)
    _assert_same_weights(build_backbone("resnet18", path), state)


def test_weights_path_errors(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(CheckpointError, match="not found") as err:
        build_backbone("resnet18", missing)
    assert str(missing) in str(err.value)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="cannot read"):
        build_backbone("resnet18", corrupt)
    wrong = tmp_path / "rn18.pth"
    torch.save(_resnet18_state(0), wrong)
    with pytest.raises(CheckpointError, match="do not match") as err:
        build_backbone("resnet101", wrong)
    assert str(wrong) in str(err.value)


def test_none_and_unknown_names():
    assert isinstance(build_backbone("resnet18", "none"), FeatureExtractor)
    with pytest.raises(ConfigError, match="resnet50"):
        build_backbone("resnet50", "imagenet")
