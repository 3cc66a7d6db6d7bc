"""models/quantize.py: the int8 backbone copy is close to float32 at every feature map, leaves the original
alone, and refuses what it cannot quantize."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from base.errors import ConfigError
from models.backbone import FeatureExtractor
from models.quantize import quantize_backbone


def frames(n=3, size=(64, 96), seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        image = rng.integers(0, 90, (*size, 3), dtype=np.uint8)
        image[16:48, 20:70] = rng.integers(150, 255, 3, dtype=np.uint8)
        out.append(torch.from_numpy(image).permute(2, 0, 1)[None])
    return out


def test_the_int8_copy_is_close_to_float32_and_the_original_untouched():
    torch.manual_seed(0)
    backbone = FeatureExtractor("resnet18", "none")
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    calibration = frames(4)
    quantized = quantize_backbone(backbone, calibration)
    assert quantized is not backbone and getattr(quantized, "int8", False)
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())
    assert any("quantized" in type(m).__module__ for m in quantized.resnet.layer1.modules())  # int8 convolutions
    image = frames(1, seed=5)[0]  # not a calibration frame
    with torch.inference_mode():
        exact, approx = backbone(image), quantized(image)
    assert set(exact) == set(approx) == {"layer1", "layer2", "layer3", "layer4", "layer5"}
    for key in exact:
        assert approx[key].dtype == torch.float32 and approx[key].shape == exact[key].shape
        assert ((approx[key] - exact[key]).norm() / exact[key].norm()).item() < 0.2, key


def test_no_calibration_frames_is_an_error():
    with pytest.raises(ConfigError, match="calibration frames"):
        quantize_backbone(FeatureExtractor("resnet18", "none"), [])
