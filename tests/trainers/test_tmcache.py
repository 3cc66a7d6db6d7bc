"""Target-model cache: official layout, atomic writes, bad files recomputed, hits counted; the provider."""

from __future__ import annotations

import warnings

import pytest
import torch

from models.backbone import FeatureExtractor
from models.target_model import TargetModelConfig
from trainers.target_models import FirstFrameTargetModels, SampleKey, apply_target_models
from trainers.tmcache import TargetModelCache, cache_variant

SHAPES = {"project.weight": (32, 256, 1, 1), "filter.weight": (1, 32, 3, 3)}


def _state(seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(*s, generator=gen) for k, s in SHAPES.items()}


def test_layout_and_variant_names(tmp_path):
    cache = TargetModelCache(tmp_path, cache_variant("resnet18"), SHAPES)
    assert cache.path("bear", 7, 2) == tmp_path / "resnet18-c32_gTrue" / "bear" / "00007.2.layer4.pth"
    assert cache_variant("resnet101", (480, 854), "imagenet") == "resnet101-c32_gTrue"
    # the project's own augmentation lists (no --official-quirks) never share the official folder
    project_lists = cache_variant("resnet101", (480, 854), "imagenet", official_augment=False)
    assert project_lists == "resnet101-c32_gTrue_aug-project"
    assert cache_variant("resnet18", (64, 112), "none", seed=3) == "resnet18-c32_gTrue_64x112_bb-random"
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"abc")
    assert cache_variant("resnet18", (480, 854), str(weights)).startswith("resnet18-c32_gTrue_bb-")


def test_roundtrip_hits_and_atomic_write(tmp_path):
    cache = TargetModelCache(tmp_path, "v", SHAPES)
    assert cache.load("seq", 0, 1) is None and (cache.hits, cache.misses) == (0, 1)
    state = _state()
    path = cache.save("seq", 0, 1, state)
    assert path.is_file() and [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left
    # the official format: a plain state dict, readable with weights_only=True
    raw = torch.load(path, weights_only=True)
    assert set(raw) == set(SHAPES)
    loaded = cache.load("seq", 0, 1)
    assert all(torch.equal(loaded[k], state[k]) for k in SHAPES)
    assert (cache.hits, cache.misses) == (1, 1) and cache.hit_rate == 0.5


@pytest.mark.parametrize("problem", ["truncated", "wrong_shape", "wrong_keys", "nan"])
def test_bad_files_are_misses_with_a_warning(tmp_path, problem):
    cache = TargetModelCache(tmp_path, "v", SHAPES)
    path = cache.save("seq", 3, 1, _state())
    if problem == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    elif problem == "wrong_shape":  # e.g. a ResNet-101 cache
        torch.save({"project.weight": torch.zeros(32, 1024, 1, 1), "filter.weight": torch.zeros(1, 32, 3, 3)}, path)
    elif problem == "wrong_keys":
        torch.save({"weight": torch.zeros(3)}, path)
    else:
        bad = _state()
        bad["filter.weight"][0, 0, 0, 0] = float("nan")
        torch.save(bad, path)
    with pytest.warns(UserWarning, match="recomputing"):
        assert cache.load("seq", 3, 1) is None
    assert cache.misses == 1 and cache.hits == 0


def test_read_only_never_writes(tmp_path):
    cache = TargetModelCache(tmp_path, "v", SHAPES, read_only=True)
    assert cache.save("seq", 0, 1, _state()) is None
    assert not any(tmp_path.rglob("*.pth"))


def test_provider_caches_and_recomputes_identically(tmp_path):
    torch.manual_seed(0)
    backbone = FeatureExtractor("resnet18", "none")
    image = torch.randint(0, 256, (3, 64, 112), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    label = torch.zeros(1, 64, 112, dtype=torch.uint8)
    label[:, 20:40, 30:70] = 1
    key = SampleKey("synthetic", "seq", 1, 4)
    cache = TargetModelCache(tmp_path, "v", SHAPES)
    provider = FirstFrameTargetModels(backbone, TargetModelConfig.train(), cache, seed=0)
    first, hit = provider.get(image, label, key)
    assert not hit and cache.path("seq", 4, 1).is_file()
    second, hit = provider.get(image, label, key)
    assert hit and cache.hits == 1
    fresh, _ = FirstFrameTargetModels(backbone, TargetModelConfig.train(), None, seed=0).get(image, label, key)
    for name, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[name]) and torch.equal(value, fresh.state_dict()[name])
    assert not any(p.requires_grad for p in first.parameters())
    other, _ = FirstFrameTargetModels(backbone, TargetModelConfig.train(), None, seed=1).get(image, label, key)
    assert not torch.equal(other.project.weight, first.project.weight)
    # the fitted model separates the object from the background on its own frame
    feats = backbone(image[None])["layer4"]
    score = apply_target_models([first], feats)
    inside = torch.nn.functional.interpolate(label[None].float(), score.shape[-2:]) > 0.5
    assert score[inside].mean() > score[~inside].mean() + 0.3


def test_provider_empty_first_mask(tmp_path):
    torch.manual_seed(0)
    backbone = FeatureExtractor("resnet18", "none")
    provider = FirstFrameTargetModels(backbone, TargetModelConfig.train(), None, seed=0)
    image = torch.zeros(3, 64, 112, dtype=torch.uint8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, hit = provider.get(image, torch.zeros(1, 64, 112, dtype=torch.uint8), SampleKey("d", "s", 1, 0))
    assert not hit and any("empty first-frame mask" in str(w.message) for w in caught)
    assert all(torch.isfinite(p).all() for p in model.parameters())
