"""Frozen ResNet feature extractor (the official ``ResnetFeatureExtractor``).

The feature keys follow the official code, which is shifted by one against torchvision's stage names:

==========  ==================================  ======  =====  ======
key         torchvision op producing it         stride  RN18   RN101
==========  ==================================  ======  =====  ======
``layer1``  conv1 + bn1 + relu + maxpool        4       64     64
``layer2``  ``resnet.layer1`` ("f4")            4       64     256
``layer3``  ``resnet.layer2`` ("f8")            8       128    512
``layer4``  ``resnet.layer3`` ("f16")           16      256    1024
``layer5``  ``resnet.layer4`` ("f32")           32      512    2048
==========  ==================================  ======  =====  ======

Spatial sizes: each stride-2 step gives ``ceil(h / 2)``; e.g. 480x854 -> layer3 60x107, layer4 30x54.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Union

import torch
import torchvision
from torch import Tensor, nn

from base.errors import CheckpointError, ConfigError

FEATURE_CHANNELS: Mapping[str, Mapping[str, int]] = {
    "resnet18": {"layer1": 64, "layer2": 64, "layer3": 128, "layer4": 256, "layer5": 512},
    "resnet101": {"layer1": 64, "layer2": 256, "layer3": 512, "layer4": 1024, "layer5": 2048},
}

BACKBONES = tuple(FEATURE_CHANNELS)  # the one list of backbone names ("resnet18", "resnet101")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RANDOM_BACKBONE_SEED = 0  # --pretrained none: the seed-0 draw of torchvision's initialisation

_BUILDERS = {"resnet18": torchvision.models.resnet18, "resnet101": torchvision.models.resnet101}
# torchvision's ImageNet weights of each backbone (metadata only: lib.tools.checkpoint fetches and reads them)
IMAGENET_WEIGHTS = {"resnet18": torchvision.models.ResNet18_Weights.IMAGENET1K_V1,
                    "resnet101": torchvision.models.ResNet101_Weights.IMAGENET1K_V1}


def check_backbone_name(name: str) -> None:
    """Raise :class:`ConfigError` unless ``name`` is one of :data:`BACKBONES`."""
    if name not in _BUILDERS:
        raise ConfigError(f"unknown backbone {name!r}; choose one of {sorted(_BUILDERS)}")


def build_resnet(name: str, state: Optional[Mapping[str, Tensor]] = None) -> torchvision.models.ResNet:
    """A torchvision ResNet without ``avgpool``/``fc``: seeded random weights, or ``state`` loaded into it.

    The random weights are always those of ``torch.manual_seed(RANDOM_BACKBONE_SEED)``, drawn without touching
    the global RNG, so a model trained on a random backbone is evaluated on the same one. ``state`` is a
    torchvision-format state dict (``fc.*`` keys ignored, any floating dtype: cast to float32).
    """
    check_backbone_name(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_BACKBONE_SEED)
        net = _BUILDERS[name](weights=None)
    del net.avgpool, net.fc
    if state is not None:
        load_resnet_state(net, state, "backbone weights")
    return net


def load_resnet_state(net: torchvision.models.ResNet, state: Mapping, where: str, path=None) -> None:
    """Load a torchvision-format ResNet state dict (``fc.*`` ignored; cast to the network's dtypes).

    Raises:
        CheckpointError: not a state dict of tensors, or not this architecture's (``path`` is named).
    """
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{where} are not a state dict of tensors", path)
    try:
        net.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")}, strict=True)
    except RuntimeError as err:
        lines = [line.strip() for line in str(err).strip().splitlines()]
        raise CheckpointError(f"{where} do not match torchvision's architecture: " + " ".join(lines[:3]),
                              path) from None


class FeatureExtractor(nn.Module):
    """Frozen torchvision ResNet that returns the official feature dict.

    Args:
        name: ``'resnet18'`` or ``'resnet101'``.
        weights: ``None`` or ``'none'`` (random init: always torchvision's ``resnetXX(weights=None)`` drawn
            right after ``torch.manual_seed(RANDOM_BACKBONE_SEED)``, whatever the global RNG state, which is
            left untouched; so training and evaluation with ``none`` use the same backbone), or a
            torchvision-format ResNet state dict (a mapping of tensors; float16 values are cast to float32).
            ImageNet weights and weight files are read by :func:`lib.tools.checkpoint.build_backbone`.

    The network is always in eval mode (BatchNorm uses running statistics, ``train()`` is a no-op) and
    no parameter requires a gradient. ``avgpool`` and ``fc`` are removed.
    """

    def __init__(self, name: str = "resnet18", weights: Union[None, str, Mapping[str, Tensor]] = "none"):
        if isinstance(weights, str) and weights != "none":
            raise ConfigError(f"FeatureExtractor takes 'none' or a state dict, not {weights!r}: "
                              "lib.tools.checkpoint.build_backbone reads ImageNet weights and weight files")
        net = build_resnet(name, None if isinstance(weights, str) else weights)
        super().__init__()
        for p in net.parameters():
            p.requires_grad_(False)
        self.name = name
        self.resnet = net
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        # Fused normalisation x * (1/255/std) + (-mean/std), exactly as the official code computes it.
        self.register_buffer("_scale", 1 / 255 / std, persistent=False)
        self.register_buffer("_shift", -mean / std, persistent=False)
        super().train(False)

    def train(self, mode: bool = True) -> FeatureExtractor:
        """The backbone is frozen: it stays in eval mode whatever ``mode`` is."""
        return super().train(False)

    @property
    def channels(self) -> Dict[str, int]:
        """Channel count per feature key, e.g. ``{'layer1': 64, ..., 'layer5': 512}`` for RN18."""
        return dict(FEATURE_CHANNELS[self.name])

    def normalize(self, image: Tensor) -> Tensor:
        """(B,3,H,W) RGB in 0..255 (uint8 or float) -> (B,3,H,W) float, ImageNet-normalised."""
        return image.to(self._scale.dtype) * self._scale + self._shift

    def forward_f8(self, image: Tensor) -> Dict[str, Tensor]:
        """Stem to stride 8 (official ``get_F8``).

        (B,3,H,W) RGB 0..255 -> ``layer1`` (B,64,H4,W4), ``layer2`` (B,C2,H4,W4), ``layer3`` (B,C3,H8,W8).
        """
        r = self.resnet
        x = r.relu(r.bn1(r.conv1(self.normalize(image))))
        if x.device.type == "cpu" and not x.is_contiguous(memory_format=torch.channels_last):
            # Max-pooling is exact in any memory layout, and PyTorch's CPU kernel is several times faster
            # on channels-last tensors; the result goes back to NCHW, so the convolutions are unchanged.
            layer1 = r.maxpool(x.contiguous(memory_format=torch.channels_last)).contiguous()
        else:
            layer1 = r.maxpool(x)
        layer2 = r.layer1(layer1)
        layer3 = r.layer2(layer2)
        return {"layer1": layer1, "layer2": layer2, "layer3": layer3}

    def forward_deep(self, layer3: Tensor) -> Dict[str, Tensor]:
        """Deep stages (official ``get_F32``): ``layer3`` (B,C3,H8,W8) -> ``layer4`` (B,C4,H16,W16),
        ``layer5`` (B,C5,H32,W32)."""
        layer4 = self.resnet.layer3(layer3)
        layer5 = self.resnet.layer4(layer4)
        return {"layer4": layer4, "layer5": layer5}

    def forward_layer4(self, image: Tensor) -> Tensor:
        """Stem to stride 16, the target model's input: (B,3,H,W) RGB 0..255 -> ``layer4`` (B,C4,H16,W16).

        Skips ``layer5`` (the stride-32 stage), which :meth:`forward` also computes.
        """
        return self.resnet.layer3(self.forward_f8(image)["layer3"])

    def forward(self, image: Tensor) -> Dict[str, Tensor]:
        """(B,3,H,W) RGB 0..255 -> dict of all five feature maps ``layer1`` .. ``layer5``."""
        feats = self.forward_f8(image)
        feats.update(self.forward_deep(feats["layer3"]))
        return feats
