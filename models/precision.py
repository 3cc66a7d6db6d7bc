"""Networks for autocast inference: the convolution and linear weights stored in the autocast dtype.

Under ``torch.autocast(dtype=bfloat16)`` every convolution and linear layer casts its float32 weight to bfloat16
on each call (a copy of every weight per frame: 5.5 ms of a 90 ms G-FRTM frame at 360x640 on a 2-core CPU).
:func:`cast_matmul_weights` stores those weights in bfloat16 once: autocast then finds them in its dtype and
computes with exactly the values it would have cast, so the outputs are the same. Only the weights: biases stay
float32 (autocast casts a convolution's bias itself; elsewhere a bias may enter float32 arithmetic), and so do
normalisation layers. Use it on a copy that runs only under autocast (in float32 such a layer would fail with
a dtype mismatch, not compute silently in bfloat16).
"""

from __future__ import annotations

import torch
from torch import nn

MATMUL_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
                 nn.Linear)


def cast_matmul_weights(module: nn.Module, dtype: torch.dtype = torch.bfloat16) -> int:
    """Store the weight of every convolution and linear layer of ``module`` in ``dtype``, in place (memory
    layout kept); returns how many were cast."""
    count = 0
    for layer in module.modules():
        if isinstance(layer, MATMUL_LAYERS) and layer.weight.dtype != dtype:
            weight = layer.weight.detach()
            layout = torch.channels_last if weight.dim() == 4 and weight.is_contiguous(
                memory_format=torch.channels_last) and not weight.is_contiguous() else torch.contiguous_format
            layer.weight = nn.Parameter(weight.to(dtype).contiguous(memory_format=layout), requires_grad=False)
            count += 1
    return count
