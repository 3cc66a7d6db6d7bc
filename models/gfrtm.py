"""The learned part of G-FRTM: reuse gate, template module, delta-generator and refiner.

:class:`GFRTM` registers its children in the official order ``convGS``, ``Tmatching``, ``Convert_Diff``,
``refiner`` so that ``state_dict()`` has exactly the official 189 keys, in the official order and with
the official shapes. The frozen backbone and the per-object target models are not part of it.

Grids (ceil of halving): H4 = ceil(H/4), H8 = ceil(H4/2), H16 = ceil(H8/2), H32 = ceil(H16/2). The
batch dimension B runs over objects; per-frame features may have batch 1 and are then shared by all
objects (the template, scores and refined maps are per object).
"""

from __future__ import annotations

from typing import Dict, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from base.errors import CheckpointError
from models.backbone import FEATURE_CHANNELS
from models.refiner import SegmentationNetwork, expand_batch, resize
from models.reuse import DeltaGenerator, ReuseGate, TemplateModule

FTEXT_KEY = "refiner.TSE.layer4.reduce.0.weight"


def nearest_resize(mask: Tensor, size: Sequence[int]) -> Tensor:
    """Nearest-neighbour resize (B,1,H,W) (any dtype) -> float (B,1,*size), as the official inference does
    for the first-frame mask (template input on the layer3 grid, initial score on the layer4 grid)."""
    return F.interpolate(mask.float(), size=tuple(size[-2:]), mode="nearest")


class GFRTM(nn.Module):
    """All trainable G-FRTM modules (what a checkpoint holds).

    Args:
        ftext: backbone the network is built for, ``'resnet18'`` or ``'resnet101'`` (sets the input
            channels of the template module and of the refiner's TSE blocks).
    """

    FTEXT_CHANNELS: Mapping[str, Mapping[str, int]] = FEATURE_CHANNELS

    def __init__(self, ftext: str = "resnet18"):
        super().__init__()
        if ftext not in self.FTEXT_CHANNELS:
            raise ValueError(f"unknown ftext {ftext!r}; choose one of {sorted(self.FTEXT_CHANNELS)}")
        self.ftext = ftext
        channels = self.FTEXT_CHANNELS[ftext]
        self.convGS = ReuseGate()
        self.Tmatching = TemplateModule(channels["layer3"] + 1)
        self.Convert_Diff = DeltaGenerator()
        self.refiner = SegmentationNetwork(channels)

    @classmethod
    def detect_ftext(cls, state_dict: Mapping[str, Tensor]) -> str:
        """Backbone of a G-FRTM or FRTM state dict, from ``refiner.TSE.layer4.reduce.0.weight.shape[1]``
        (256 -> resnet18, 1024 -> resnet101). Raises :class:`CheckpointError` if it cannot tell."""
        weight = state_dict.get(FTEXT_KEY)
        if weight is None or weight.dim() != 4:
            raise CheckpointError(f"no 4-d {FTEXT_KEY} entry: not a G-FRTM or FRTM state dict")
        for ftext, channels in cls.FTEXT_CHANNELS.items():
            if channels["layer4"] == weight.shape[1]:
                return ftext
        raise CheckpointError(f"{FTEXT_KEY} has {weight.shape[1]} input channels; expected one of "
                              + ", ".join(f"{c['layer4']} ({f})" for f, c in cls.FTEXT_CHANNELS.items()))

    # Readable aliases of the official attribute names.
    @property
    def gate(self) -> ReuseGate:
        return self.convGS

    @property
    def template(self) -> TemplateModule:
        return self.Tmatching

    @property
    def delta_generator(self) -> DeltaGenerator:
        return self.Convert_Diff

    @property
    def segmenter(self) -> SegmentationNetwork:
        return self.refiner

    def init_gate_bias(self) -> None:
        """Training init of the gate's last bias to [0.1, 2.0] (P(reuse) ~ 0.13 at the start)."""
        self.convGS.init_bias(0.1, 2.0)

    def make_template(self, layer3: Tensor, mask: Tensor) -> Tensor:
        """Template of the first frame.

        layer3 (1|B,C3,H8,W8), mask (B,1,H,W) any size/dtype (0/1), nearest-resized to the layer3 grid
        -> template (B,64,64).
        """
        mask8 = nearest_resize(mask, layer3.shape[-2:]).to(layer3.dtype)
        layer3 = expand_batch(layer3, mask8.shape[0])
        return self.Tmatching.Tgenerate(torch.cat([layer3, mask8], dim=1))

    def match(self, layer3: Tensor, prev_score16: Tensor, template: Tensor) -> Tensor:
        """Dissimilarity feature ``tplS``.

        layer3 (1|B,C3,H8,W8), prev_score16 (B,1,H16,W16) (bilinearly resized to the layer3 grid),
        template (B,64,64) -> tplS (B,64,H8,W8).
        """
        score8 = resize(prev_score16, layer3.shape[-2:])
        layer3 = expand_batch(layer3, score8.shape[0])
        return self.Tmatching.Tmatching(torch.cat([layer3, score8], dim=1), template)

    def gate_logits(self, tpl_s: Tensor) -> Tensor:
        """tplS (B,64,H8,W8) -> gate logits (B,2); channel 0 = reuse."""
        return self.convGS(tpl_s)

    @staticmethod
    def reuse_probability(logits: Tensor) -> Tensor:
        """Gate logits (B,2) -> P(reuse) (B,) = softmax over the two channels, channel 0."""
        return torch.softmax(logits, dim=1)[:, 0]

    def delta(self, tpl_s: Tensor) -> Tensor:
        """tplS (B,64,H8,W8) -> score delta (B,1,H16,W16); the reuse-path score is prev_score + delta."""
        return self.Convert_Diff(tpl_s)

    def deep(self, score16: Tensor, layer5: Tensor, layer4: Tensor) -> Tensor:
        """Refiner stages layer5, layer4 -> x16 (B,64,H16,W16). See :meth:`SegmentationNetwork.deep`."""
        return self.refiner.deep(score16, layer5, layer4)

    def translate(self, prev_x16: Tensor, delta16: Tensor) -> Tensor:
        """Refine-translator -> x16 (B,64,H16,W16). See :meth:`SegmentationNetwork.translate`."""
        return self.refiner.translate(prev_x16, delta16)

    def reduce_shallow(self, layer3: Tensor, layer2: Tensor) -> Dict[str, Tensor]:
        """The frame-only part of the shallow stages, shared by a frame's objects. See
        :meth:`SegmentationNetwork.reduce_shallow`."""
        return self.refiner.reduce_shallow(layer3, layer2)

    def shallow(self, x16: Tensor, score16: Tensor, layer3: Tensor, layer2: Tensor,
                image_size: Sequence[int], reduced: Mapping[str, Tensor] | None = None,
                maps: Dict[str, Tensor] | None = None) -> Tensor:
        """Refiner stages layer3, layer2 + upsampler -> logits (B,1,H,W). See
        :meth:`SegmentationNetwork.shallow`."""
        return self.refiner.shallow(x16, score16, layer3, layer2, image_size, reduced, maps)
