"""BatchNorm folding (models.fold): the folded network computes the same function up to float rounding, every
conv -> BN pair of TTVOS's backbones is folded, and a module in training mode is refused."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models.fold import fold_batchnorm
from models.ttvos_backbones import build_ttvos_backbone


def _randomise_bn(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)


@pytest.mark.parametrize("name", ["hrnetv2Sv1", "resnet18s16"])
def test_folded_backbone_gives_the_same_features(name):
    torch.manual_seed(0)
    net = build_ttvos_backbone(name).eval()
    _randomise_bn(net)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ref = net.get_features(x)
        bns = sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())
        assert fold_batchnorm(net) == bns  # every BatchNorm follows a convolution
        assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
        out = net.get_features(x)
    for key in ref:
        err = (out[key] - ref[key]).abs().max() / ref[key].abs().max()
        assert err < 1e-5, (key, float(err))


def test_training_mode_and_unpaired_layers():
    seq = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.BatchNorm2d(4), nn.Conv2d(4, 5, 1), nn.BatchNorm2d(6))
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(seq)
    assert fold_batchnorm(seq.eval()) == 1  # a BN after a BN, or of another width, stays
    assert isinstance(seq[1], nn.Identity)
    assert isinstance(seq[2], nn.BatchNorm2d) and isinstance(seq[4], nn.BatchNorm2d)
