"""The backbones of TTVOS: HRNet-W18-Small-v1 (the official default) and the stride-16 ResNet / MobileNetV3.

Every backbone maps a normalised image (B, 3, H, W) to three feature maps, as the official
``get_features`` does:

=========================  ===========  ==========  ==========
backbone (official name)   ``s16`` /16  ``s8`` /8   ``s4`` /4
=========================  ===========  ==========  ==========
``hrnetv2Sv1`` (default)   192          32          16
``resnet18s16``            512          128         64
``resnet50s16``            1024         512         256
``mobileNetV3Larges16``    960          40          24
=========================  ===========  ==========  ==========

Module and parameter names are the official ones, so an official ``VOS`` state dict (its keys less the
``vos.backbone.`` prefix) loads strictly. Each stride-2 step gives ``ceil(size / 2)``.

* HRNet-W18-Small-v1 (the HRNet semantic-segmentation network's ``w18_small_v1`` configuration): stem of
  two 3x3 stride-2 convolutions, one Bottleneck, then stages of 2, 3 and 4 parallel branches (16/32/64/128
  channels at /4../32) with two BasicBlocks per branch and a fusion after each stage. ``s16`` is the /16
  branch concatenated with the /32 branch resized bilinearly to /16.
* ``resnet18s16``: torchvision's ResNet-18 with ``layer4`` kept at /16 (block 0 stride 1, block 1's second
  convolution dilated by 2); s16/s8/s4 = layer4/layer2/layer1.
* ``resnet50s16``: torchvision's ResNet-50 without ``layer4``; blocks 4 and 5 of ``layer3`` dilated by 2
  (stride unchanged); s16/s8/s4 = layer3/layer2/layer1.
* ``mobileNetV3Larges16``: torchvision's MobileNetV3-Large with its last stage dilated (stride 16), cut
  into ``layer0``-``layer4`` that keep torchvision's block indices as names; s16/s8/s4 = layer4/layer2/layer1.

Which child trains (the others stay frozen, in eval mode) is :data:`FINETUNE_CHILD`, as in the official
training: ``stage4`` for HRNet, ``layer4`` for ResNet-18 and MobileNetV3, ``layer3`` for ResNet-50.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from base.errors import ConfigError

HRNET_BN_MOMENTUM = 0.01

# (C16, C8, C4) of each backbone, the official get_feature_count()
FEATURE_COUNTS: Mapping[str, Tuple[int, int, int]] = {
    "hrnetv2Sv1": (192, 32, 16),
    "resnet18s16": (512, 128, 64),
    "resnet50s16": (1024, 512, 256),
    "mobileNetV3Larges16": (960, 40, 24),
}
TTVOS_BACKBONES = tuple(FEATURE_COUNTS)
FINETUNE_CHILD: Mapping[str, str] = {"hrnetv2Sv1": "stage4", "resnet18s16": "layer4", "resnet50s16": "layer3",
                                     "mobileNetV3Larges16": "layer4"}


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=HRNET_BN_MOMENTUM)


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """HRNet's residual block: two 3x3 convolutions with BN, ReLU after the sum."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = _bn(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = _bn(planes)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + residual)


class Bottleneck(nn.Module):
    """HRNet's bottleneck block: 1x1, 3x3, 1x1 (x4 channels) with BN, ReLU after the sum."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = _bn(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = _bn(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = _bn(planes * self.expansion)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + residual)


def _resize_to(x: Tensor, like: Tensor) -> Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class HighResolutionModule(nn.Module):
    """Parallel branches of BasicBlocks followed by the all-to-all fusion.

    Output branch i = ReLU(sum over input branches j of: x_j (j = i); BN(1x1 conv(x_j)) resized bilinearly to
    branch i (j > i); a chain of i - j stride-2 3x3 convolutions with BN, ReLU between them (j < i)).
    """

    def __init__(self, channels: Sequence[int], blocks: int):
        super().__init__()
        n = len(channels)
        self.branches = nn.ModuleList(
            nn.Sequential(*[BasicBlock(c, c) for _ in range(blocks)]) for c in channels)
        fuse = []
        for i in range(n):
            row: List[Optional[nn.Module]] = []
            for j in range(n):
                if j > i:
                    row.append(nn.Sequential(nn.Conv2d(channels[j], channels[i], 1, bias=False), _bn(channels[i])))
                elif j == i:
                    row.append(None)
                else:
                    steps = []
                    for k in range(i - j):
                        last = k == i - j - 1
                        cout = channels[i] if last else channels[j]
                        layers = [_conv3x3(channels[j], cout, stride=2), _bn(cout)]
                        if not last:
                            layers.append(nn.ReLU())
                        steps.append(nn.Sequential(*layers))
                    row.append(nn.Sequential(*steps))
            fuse.append(nn.ModuleList(row))
        self.fuse_layers = nn.ModuleList(fuse)
        self.relu = nn.ReLU()

    def forward(self, xs: List[Tensor]) -> List[Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        out = []
        for i, row in enumerate(self.fuse_layers):
            y = xs[0] if i == 0 else row[0](xs[0])
            for j in range(1, len(xs)):
                if j == i:
                    y = y + xs[j]
                elif j > i:
                    y = y + _resize_to(row[j](xs[j]), xs[i])
                else:
                    y = y + row[j](xs[j])
            out.append(self.relu(y))
        return out


def _transition(previous: Sequence[int], current: Sequence[int]) -> nn.ModuleList:
    """HRNet's transition between stages: adapt existing branches (None if equal), add new stride-2 ones."""
    layers: List[Optional[nn.Module]] = []
    for i, c in enumerate(current):
        if i < len(previous):
            layers.append(None if c == previous[i] else
                          nn.Sequential(_conv3x3(previous[i], c), _bn(c), nn.ReLU()))
        else:
            steps = []
            for k in range(i + 1 - len(previous)):
                cout = c if k == i - len(previous) else previous[-1]
                steps.append(nn.Sequential(_conv3x3(previous[-1], cout, stride=2), _bn(cout), nn.ReLU()))
            layers.append(nn.Sequential(*steps))
    return nn.ModuleList(layers)


class HRNetW18SmallV1(nn.Module):
    """HRNet-W18-Small-v1 (``hrnetv2Sv1``): features s4 (16 ch), s8 (32), s16 (64 + 128 = 192)."""

    STAGES = ((16, 32), (16, 32, 64), (16, 32, 64, 128))

    def __init__(self):
        super().__init__()
        self.conv1 = _conv3x3(3, 64, stride=2)
        self.bn1 = _bn(64)
        self.conv2 = _conv3x3(64, 64, stride=2)
        self.bn2 = _bn(64)
        self.relu = nn.ReLU()
        down = nn.Sequential(nn.Conv2d(64, 128, 1, bias=False), _bn(128))
        self.layer1 = nn.Sequential(Bottleneck(64, 32, downsample=down))
        s2, s3, s4 = self.STAGES
        self.transition1 = _transition((128,), s2)
        self.stage2 = nn.Sequential(HighResolutionModule(s2, 2))
        self.transition2 = _transition(s2, s3)
        self.stage3 = nn.Sequential(HighResolutionModule(s3, 2))
        self.transition3 = _transition(s3, s4)
        self.stage4 = nn.Sequential(HighResolutionModule(s4, 2))

    @staticmethod
    def _next(transition: nn.ModuleList, ys: List[Tensor]) -> List[Tensor]:
        out = []
        for i, layer in enumerate(transition):
            if layer is None:
                out.append(ys[i])
            else:
                out.append(layer(ys[i] if i < len(ys) else ys[-1]))
        return out

    stem_channels = 64
    separable_s16 = False  # every branch feeds every output: s8 / s4 need the whole network

    def stem(self, x: Tensor) -> Tensor:
        """The two stride-2 convolutions: (B, 64, H/4, W/4), the first part of :meth:`branches`."""
        x = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(x)))

    def branches(self, x: Tensor, stem: Optional[Tensor] = None) -> List[Tensor]:
        """The four stage-4 branch outputs (/4, /8, /16, /32); ``stem``: :meth:`stem` of ``x`` when already
        computed (``x`` is then not read)."""
        x = self.layer1(self.stem(x) if stem is None else stem)
        ys = self.stage2(self._next(self.transition1, [x]))
        ys = self.stage3(self._next(self.transition2, ys))
        return self.stage4(self._next(self.transition3, ys))

    def get_features(self, x: Tensor, stem: Optional[Tensor] = None) -> Dict[str, Tensor]:
        b4, b8, b16, b32 = self.branches(x, stem)
        return {"s16": torch.cat([b16, _resize_to(b32, b16)], dim=1), "s8": b8, "s4": b4}


class ResNetS16(nn.Module):
    """torchvision's ResNet-18 / -50 kept at stride 16 (``resnet18s16`` / ``resnet50s16``)."""

    def __init__(self, depth: int):
        super().__init__()
        if depth not in (18, 50):
            raise ConfigError(f"ResNetS16: depth 18 or 50, got {depth}")
        net = torchvision.models.resnet18() if depth == 18 else torchvision.models.resnet50()
        self.depth = depth
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3 = net.layer1, net.layer2, net.layer3
        if depth == 18:
            self.layer4 = net.layer4
            block0, block1 = self.layer4[0], self.layer4[1]
            block0.conv1.stride = (1, 1)
            block0.downsample[0].stride = (1, 1)
            block1.conv2.dilation = (2, 2)
            block1.conv2.padding = (2, 2)
        else:
            for block in (self.layer3[4], self.layer3[5]):
                block.conv2.dilation = (2, 2)
                block.conv2.padding = (2, 2)

    stem_channels = 64
    separable_s16 = True  # s8 and s4 come before the /16 layers

    def stem(self, x: Tensor) -> Tensor:
        """conv1, BN, ReLU, max-pool: (B, 64, H/4, W/4)."""
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def get_features(self, x: Tensor, stem: Optional[Tensor] = None, s16: bool = True) -> Dict[str, Tensor]:
        """``stem``: :meth:`stem` of ``x`` when already computed; ``s16`` False stops at s8 (s16 absent)."""
        s4 = self.layer1(self.stem(x) if stem is None else stem)
        s8 = self.layer2(s4)
        if not s16:
            return {"s8": s8, "s4": s4}
        return {"s16": self.s16_from_s8(s8), "s8": s8, "s4": s4}

    def s16_from_s8(self, s8: Tensor) -> Tensor:
        """The /16 layers on ``s8``."""
        s16 = self.layer3(s8)
        return self.layer4(s16) if self.depth == 18 else s16


class MobileNetV3LargeS16(nn.Module):
    """torchvision's MobileNetV3-Large with its last stage dilated (``mobileNetV3Larges16``)."""

    SLICES = {"layer0": (0, 2), "layer1": (2, 4), "layer2": (4, 7), "layer3": (7, 13), "layer4": (13, 17)}

    def __init__(self):
        super().__init__()
        features = torchvision.models.mobilenet_v3_large(dilated=True).features
        for name, (start, stop) in self.SLICES.items():
            setattr(self, name, nn.Sequential(OrderedDict((str(i), features[i]) for i in range(start, stop))))

    stem_channels = None  # no /4 stem before s4 (G-TTVOS's frame placement is refused)
    separable_s16 = True

    def get_features(self, x: Tensor, s16: bool = True) -> Dict[str, Tensor]:
        """``s16`` False stops at s8 (s16 absent)."""
        s4 = self.layer1(self.layer0(x))
        s8 = self.layer2(s4)
        if not s16:
            return {"s8": s8, "s4": s4}
        return {"s16": self.s16_from_s8(s8), "s8": s8, "s4": s4}

    def s16_from_s8(self, s8: Tensor) -> Tensor:
        """The /16 layers on ``s8``."""
        return self.layer4(self.layer3(s8))


def build_ttvos_backbone(name: str) -> nn.Module:
    """The backbone called ``name`` (official names, :data:`TTVOS_BACKBONES`), PyTorch's default init."""
    if name == "hrnetv2Sv1":
        return HRNetW18SmallV1()
    if name == "resnet18s16":
        return ResNetS16(18)
    if name == "resnet50s16":
        return ResNetS16(50)
    if name == "mobileNetV3Larges16":
        return MobileNetV3LargeS16()
    raise ConfigError(f"unknown TTVOS backbone {name!r}; choose one of {', '.join(TTVOS_BACKBONES)}")
