"""int8 post-training quantization of G-FRTM's frozen ResNet backbone (PyTorch's FX flow, x86 backend).

:func:`quantize_backbone` returns a copy of a :class:`~models.backbone.FeatureExtractor` whose stem
(conv1 + bn1 + ReLU, fused) and residual stages ``layer1`` .. ``layer4`` run int8 convolutions: each part is
traced and quantized on its own (``torch.ao.quantization.quantize_fx``, ``get_default_qconfig_mapping("x86")``:
per-channel weights, histogram-calibrated activations), so every feature map the engine reads (``layer1`` ..
``layer5``) comes back as float32 at the stage boundary, and the max-pooling and input normalisation stay
float32. Calibration runs the float32 backbone's stages on the given frames.

This is an approximation, not the same function: the features differ from float32 by a few per cent (relative
L2 error 2-5 % per stage on DAVIS frames), which the target model, fitted on the same int8 features, absorbs
(docs/performance.md gives the measured J&F and speed). Only the frozen backbone is quantized: the refiner, the
gate and the target model keep their precision.
"""

from __future__ import annotations

import copy
import warnings
from typing import List, Sequence

import torch
from torch import Tensor, nn

from base.errors import ConfigError

BACKEND = "x86"


def _quantize_part(module: nn.Module, inputs: List[Tensor]) -> nn.Module:
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation and observer notices
        prepared = prepare_fx(module, get_default_qconfig_mapping(BACKEND), example_inputs=(inputs[0],))
        with torch.no_grad():
            for x in inputs:
                prepared(x)
        return convert_fx(prepared)


def quantize_backbone(backbone: nn.Module, images: Sequence[Tensor]) -> nn.Module:
    """An int8 copy of ``backbone`` (a ResNet :class:`~models.backbone.FeatureExtractor` on the CPU), calibrated on
    ``images``: (1, 3, H, W) RGB tensors in 0..255 (uint8 or float), the frames it will see (their size matters
    little: activation ranges, not shapes, are calibrated). The given backbone is not changed."""
    if not images:
        raise ConfigError("int8 quantization needs calibration frames")
    if BACKEND not in torch.backends.quantized.supported_engines:
        raise ConfigError(f"this PyTorch has no {BACKEND} quantized engine (it has "
                          f"{', '.join(torch.backends.quantized.supported_engines)}): run without --int8-backbone")
    if next(backbone.parameters()).device.type != "cpu":
        raise ConfigError("--int8-backbone quantizes for the CPU (PyTorch's x86 int8 kernels); on a GPU use --amp bf16")
    torch.backends.quantized.engine = BACKEND
    source = copy.deepcopy(backbone).eval().to(memory_format=torch.contiguous_format)
    r = source.resnet
    stem = nn.Sequential(r.conv1, r.bn1, r.relu).eval()
    stages = [stem, r.layer1, r.layer2, r.layer3, r.layer4]
    inputs: List[List[Tensor]] = [[] for _ in stages]
    with torch.no_grad():
        for image in images:
            x = source.normalize(image.float())
            for k, stage in enumerate(stages):
                inputs[k].append(x)
                x = stage(x)
                if k == 0:
                    x = r.maxpool(x)
    quantized = [_quantize_part(stage, feed) for stage, feed in zip(stages, inputs)]
    r.conv1, r.bn1, r.relu = quantized[0], nn.Identity(), nn.Identity()  # the copy's float parts give way
    r.layer1, r.layer2, r.layer3, r.layer4 = quantized[1:]
    source.int8 = True
    return source
