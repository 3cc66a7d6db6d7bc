"""models/precision.py: weights stored in bfloat16 give exactly what autocast computes from float32 weights."""

from __future__ import annotations

import torch
from torch import nn

from models.precision import cast_matmul_weights
from models.refiner import _bicubic_up2, bicubic_up2


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8).eval(), nn.ReLU(),
                         nn.Conv2d(8, 8, 5, padding=2, groups=4), nn.Flatten(), nn.Linear(8 * 12 * 10, 4))


def test_autocast_gives_the_same_outputs_with_stored_bf16_weights():
    x = torch.randn(2, 3, 12, 10)
    plain, cast = net(), net()
    assert cast_matmul_weights(cast) == 3
    assert cast[0].weight.dtype == torch.bfloat16 and cast[5].weight.dtype == torch.bfloat16
    assert cast[0].bias.dtype == torch.float32 and cast[1].weight.dtype == torch.float32  # biases, norms stay
    assert not cast[0].weight.requires_grad
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected, got = plain(x), cast(x)
    assert got.dtype == expected.dtype == torch.bfloat16
    assert torch.equal(got, expected)
    assert cast_matmul_weights(cast) == 0  # already cast


def test_the_channels_last_layout_of_a_weight_is_kept():
    layer = nn.Conv2d(4, 6, 3).to(memory_format=torch.channels_last)
    cast_matmul_weights(layer)
    assert layer.weight.dtype == torch.bfloat16 and layer.weight.is_contiguous(memory_format=torch.channels_last)


def test_bicubic_upsampling_stays_float32_under_autocast():
    x = torch.randn(1, 6, 9, 11)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        up = bicubic_up2(x)
    assert up.dtype == torch.float32 and torch.equal(up, _bicubic_up2(x))
    half = bicubic_up2(x.bfloat16())
    assert half.dtype == torch.float32 and torch.equal(half, _bicubic_up2(x.bfloat16().float()))
