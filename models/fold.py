"""Folding inference-mode BatchNorm into the convolution before it (the same function up to float rounding)."""

from __future__ import annotations

import re

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def _fold_pair(parent: nn.Module, conv_name: str, bn_name: str) -> bool:
    conv, bn = getattr(parent, conv_name), getattr(parent, bn_name)
    if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats
            and conv.out_channels == bn.num_features):
        return False
    setattr(parent, conv_name, fuse_conv_bn_eval(conv, bn))
    setattr(parent, bn_name, nn.Identity())
    return True


def fold_batchnorm(module: nn.Module) -> int:
    """Fold, in place, every BatchNorm2d that directly follows a Conv2d: consecutive children of an
    ``nn.Sequential``, and ``convN`` / ``bnN`` attribute pairs of a block whose forward applies ``bnN`` to
    ``convN``'s output (ResNet / HRNet blocks and stems). The module must be in eval mode (running statistics);
    returns the number of folded pairs. The folded module computes the same function up to float rounding."""
    if module.training:
        raise ValueError("fold_batchnorm needs a module in eval mode")
    folded = 0
    for parent in list(module.modules()):
        if isinstance(parent, nn.Sequential):
            names = list(parent._modules)
            for a, b in zip(names, names[1:]):
                folded += _fold_pair(parent, a, b)
            continue
        for name in list(parent._modules):
            match = re.fullmatch(r"conv(\d+)", name)
            if match and f"bn{match.group(1)}" in parent._modules:
                folded += _fold_pair(parent, name, f"bn{match.group(1)}")
    return folded
