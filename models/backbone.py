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

from pathlib import Path
from typing import Dict, Mapping
from urllib.parse import urlparse

import torch
import torchvision
from torch import Tensor, nn

from lib.errors import CheckpointError, ConfigError

FEATURE_CHANNELS: Mapping[str, Mapping[str, int]] = {
    "resnet18": {"layer1": 64, "layer2": 64, "layer3": 128, "layer4": 256, "layer5": 512},
    "resnet101": {"layer1": 64, "layer2": 256, "layer3": 512, "layer4": 1024, "layer5": 2048},
}

BACKBONES = tuple(FEATURE_CHANNELS)  # the one list of backbone names ("resnet18", "resnet101")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RANDOM_BACKBONE_SEED = 0  # --pretrained none: the seed-0 draw of torchvision's initialisation

_BUILDERS = {
    "resnet18": (torchvision.models.resnet18, torchvision.models.ResNet18_Weights.IMAGENET1K_V1),
    "resnet101": (torchvision.models.resnet101, torchvision.models.ResNet101_Weights.IMAGENET1K_V1),
}


def imagenet_weights_file(name: str) -> Path:
    """Where torchvision's hub cache keeps the ImageNet weights of ``name`` (the file may not exist).

    That is ``<torch.hub.get_dir()>/checkpoints/<file name of the weights URL>``, i.e. by default
    ``$TORCH_HOME/hub/checkpoints/resnet18-f37072fd.pth`` for ResNet-18.
    """
    weights = _BUILDERS[name][1]
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name


def _build_resnet(name: str, weights) -> torchvision.models.ResNet:
    """A torchvision ResNet without ``avgpool``/``fc`` with the requested weights.

    ``weights``: ``'none'``, ``'imagenet'``, a path to a torchvision-format state dict file, or such a
    state dict itself (a mapping of tensors, any floating dtype: e.g. the float16 backbone a shipped
    checkpoint embeds).

    ``imagenet`` goes through torchvision's weights API: the file in the TORCH_HOME hub cache, downloaded
    there first (with its hash checked) when it is missing and the machine is online.
    """
    builder, imagenet = _BUILDERS[name]
    if weights == "imagenet":
        cached = imagenet_weights_file(name)
        try:
            net = builder(weights=imagenet)
        except Exception as err:  # offline, blocked, interrupted or corrupt download
            if cached.is_file():
                raise
            reason = (str(err).strip().splitlines() or [""])[0]
            raise ConfigError(
                f"ImageNet weights for {name} not found and not downloadable here ({err.__class__.__name__}: "
                f"{reason}): expected the file {cached.name} at {cached} (torchvision hub cache, i.e. "
                f"$TORCH_HOME/hub/checkpoints; TORCH_HOME is currently {Path(torch.hub.get_dir()).parent}). "
                f"Download {imagenet.url} on a machine with internet access and place it there, or run with "
                "--pretrained none (random backbone weights)."
            ) from None
    else:
        # The random weights are always those of torch.manual_seed(RANDOM_BACKBONE_SEED), drawn without
        # touching the global RNG: a model trained with --pretrained none is evaluated on the same backbone.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_BACKBONE_SEED)
            net = builder(weights=None)
    del net.avgpool, net.fc
    if isinstance(weights, Mapping):
        _load_resnet_state(net, weights, "embedded backbone weights")
    elif weights not in ("none", "imagenet"):
        _load_resnet_file(net, Path(weights))
    return net


def _load_resnet_state(net: torchvision.models.ResNet, state: Mapping, where, path=None) -> None:
    """Load a torchvision-format ResNet state dict (``fc.*`` ignored; cast to the network's dtypes)."""
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{where} are not a state dict of tensors", path)
    try:
        net.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")}, strict=True)
    except RuntimeError as err:
        lines = [line.strip() for line in str(err).strip().splitlines()]
        raise CheckpointError(f"{where} do not match torchvision's architecture: " + " ".join(lines[:3]),
                              path) from None


def _load_resnet_file(net: torchvision.models.ResNet, path: Path) -> None:
    """Load a torchvision-format ResNet state dict file into ``net`` (its ``fc.*`` keys are ignored)."""
    if not path.is_file():
        raise CheckpointError("backbone weights file not found (expected 'none', 'imagenet' or a path to a "
                              "torchvision ResNet state dict)", path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"cannot read backbone weights ({err.__class__.__name__}); expected a "
                              "torchvision ResNet state dict saved with torch.save", path) from None
    _load_resnet_state(net, state, "backbone weights", path)


class FeatureExtractor(nn.Module):
    """Frozen torchvision ResNet that returns the official feature dict.

    Args:
        name: ``'resnet18'`` or ``'resnet101'``.
        weights: ``'none'`` (random init: always torchvision's ``resnetXX(weights=None)`` drawn right after
            ``torch.manual_seed(RANDOM_BACKBONE_SEED)``, whatever the global RNG state, which is left
            untouched; so training and evaluation with ``none`` use the same backbone),
            ``'imagenet'`` (``IMAGENET1K_V1`` through torchvision's weights API: the TORCH_HOME hub cache,
            downloaded there when missing and online), a path to a torchvision-format ResNet state dict file,
            or such a state dict (a mapping of tensors; float16 values are cast to the network's float32).

    The network is always in eval mode (BatchNorm uses running statistics, ``train()`` is a no-op) and
    no parameter requires a gradient. ``avgpool`` and ``fc`` are removed.
    """

    def __init__(self, name: str = "resnet18", weights="none"):
        if name not in _BUILDERS:
            raise ConfigError(f"unknown backbone {name!r}; choose one of {sorted(_BUILDERS)}")
        net = _build_resnet(name, weights if isinstance(weights, Mapping) else str(weights))
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

    def forward(self, image: Tensor) -> Dict[str, Tensor]:
        """(B,3,H,W) RGB 0..255 -> dict of all five feature maps ``layer1`` .. ``layer5``."""
        feats = self.forward_f8(image)
        feats.update(self.forward_deep(feats["layer3"]))
        return feats
