"""G-FRTM reuse modules: template generation/matching, the reuse gate and the delta-generator.

* :class:`TemplateGenerator` (official ``Tgenerate``) builds the object template once from the first
  frame's stride-8 features and mask.
* :class:`TemplateMatcher` (official ``Tmatching``) compares the current frame (stride-8 features plus
  the previous score map) with the template and returns the dissimilarity feature ``tplS``.
* :class:`ReuseGate` (official ``convGS``) maps ``tplS`` to two logits: channel 0 = reuse, 1 = compute.
* :class:`DeltaGenerator` (official ``Convert_Diff``) maps ``tplS`` to the score delta at stride 16.

Attribute names and ``nn.Sequential`` indices match the official state-dict keys.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

KEY_CHANNELS = 64
GROUP_SIZE = 4  # channels per group of the grouped 5x5 convs (official group_n)


def _grouped5x5(channels: int) -> nn.Conv2d:
    """5x5 grouped conv channels->channels with ``GROUP_SIZE`` channels per group, padding 2."""
    return nn.Conv2d(channels, channels, 5, padding=2, groups=channels // GROUP_SIZE)


def _flat(x: Tensor) -> Tensor:
    """(B,C,H,W) -> (B,C,H*W)."""
    return x.flatten(2)


class TemplateGenerator(nn.Module):
    """Template from the first frame (official ``TemplateUpdate``, mode "M").

    ``conv_key`` and ``conv_val``: 1x1 ch_in->64, LeakyReLU(0.2), 5x5 grouped 64->64 (16 groups).
    Template = softmax_lastdim(val @ key^T / sqrt(H*W)), shape (B, 64 val, 64 key).
    """

    def __init__(self, ch_in: int, channels: int = KEY_CHANNELS):
        super().__init__()
        self.conv_key = nn.Sequential(nn.Conv2d(ch_in, channels, 1), nn.LeakyReLU(0.2), _grouped5x5(channels))
        self.conv_val = nn.Sequential(nn.Conv2d(ch_in, channels, 1), nn.LeakyReLU(0.2), _grouped5x5(channels))

    def forward(self, x: Tensor) -> Tensor:
        """x = concat[f8, mask] (B,ch_in,H8,W8) -> template (B,64,64)."""
        key = _flat(self.conv_key(x))
        val = _flat(self.conv_val(x))
        return torch.softmax(torch.bmm(val, key.transpose(1, 2)) / math.sqrt(key.shape[-1]), dim=-1)


class TemplateMatcher(nn.Module):
    """Query the template with the current frame (official ``TemplateMatching``, mode "Q").

    ``conv_key`` and ``conv_feat``: 1x1 ch_in->64, 5x5 grouped 64->64 (16 groups), LeakyReLU(0.2).
    similarity = template @ key (B,64,H8*W8). ``blend``: 5x5 grouped 128->128 (32 groups), 1x1 128->64
    on concat[feat, similarity] (feat first, as the official code; checked against its outputs), then ReLU.
    """

    def __init__(self, ch_in: int, channels: int = KEY_CHANNELS):
        super().__init__()
        self.conv_key = nn.Sequential(nn.Conv2d(ch_in, channels, 1), _grouped5x5(channels), nn.LeakyReLU(0.2))
        self.conv_feat = nn.Sequential(nn.Conv2d(ch_in, channels, 1), _grouped5x5(channels), nn.LeakyReLU(0.2))
        self.blend = nn.Sequential(_grouped5x5(2 * channels), nn.Conv2d(2 * channels, channels, 1))

    def forward(self, x: Tensor, template: Tensor) -> Tensor:
        """x = concat[f8, previous score] (B,ch_in,H8,W8), template (B,64,64) -> tplS (B,64,H8,W8)."""
        key = self.conv_key(x)
        feat = self.conv_feat(x)
        similarity = torch.bmm(template, _flat(key)).view_as(key)
        return F.relu(self.blend(torch.cat([feat, similarity], dim=1)))


class TemplateModule(nn.Module):
    """Container of the matcher and the generator (official ``LongtermTemplate``).

    Children are registered in the official order ``Tmatching``, ``Tgenerate``. ``ch_in`` is the
    stride-8 feature channel count + 1 (129 for ResNet-18, 513 for ResNet-101).
    """

    def __init__(self, ch_in: int, channels: int = KEY_CHANNELS):
        super().__init__()
        self.Tmatching = TemplateMatcher(ch_in, channels)
        self.Tgenerate = TemplateGenerator(ch_in, channels)


class ReuseGate(nn.Sequential):
    """Reuse gate (official ``convGS``): tplS (B,64,H8,W8) -> logits (B,2); channel 0 = reuse.

    AdaptiveMaxPool2d(7), Conv 64->16 k3 s2 p1, BatchNorm2d(16), AdaptiveMaxPool2d(3), Conv 16->2 k3 s2
    p0 (spatial 1x1). No ReLU: the only non-linearities are the max-pools.
    """

    def __init__(self, channels: int = KEY_CHANNELS, hidden: int = 16):
        super().__init__(
            nn.AdaptiveMaxPool2d(7),
            nn.Conv2d(channels, hidden, 3, stride=2, padding=1),
            nn.BatchNorm2d(hidden),
            nn.AdaptiveMaxPool2d(3),
            nn.Conv2d(hidden, 2, 3, stride=2, padding=0),
        )

    def forward(self, tpl_s: Tensor) -> Tensor:
        return super().forward(tpl_s).flatten(1)

    def init_bias(self, reuse: float = 0.1, compute: float = 2.0) -> None:
        """Set the last conv's bias to [reuse, compute] (training init; P(reuse) = 0.13 on zero input)."""
        with torch.no_grad():
            self[4].bias.copy_(torch.tensor([reuse, compute]))


class DeltaGenerator(nn.Conv2d):
    """Delta-generator (official ``Convert_Diff``): Conv 64->1 k3 s2 p1.

    tplS (B,64,H8,W8) -> delta (B,1,H16,W16) with H16 = ceil(H8/2), the target-model score grid.
    """

    def __init__(self, channels: int = KEY_CHANNELS):
        super().__init__(channels, 1, 3, stride=2, padding=1)
