"""FRTM segmentation ("refinement") network with the G-FRTM refine-translator.

The network refines the coarse target score map (stride 16) into full-resolution logits, top-down over
four feature levels (official keys, see :mod:`models.backbone`): ``layer5`` (/32), ``layer4`` (/16),
``layer3`` (/8), ``layer2`` (/4). Each level is a stage ``TSE -> RRB1 -> CAB -> RRB2`` with 64 channels;
a stage's output feeds the next (shallower) stage as its "deeper" input. An upsampler (``project``)
turns the ``layer2`` stage's output into 1-channel logits at the image size.

G-FRTM splits the path for reuse at inference:

* :meth:`SegmentationNetwork.deep`: stages ``layer5``, ``layer4`` -> ``x16`` (B,64,H16,W16), the
  quantity that is stored and reused across frames;
* :meth:`SegmentationNetwork.translate`: the refine-translator (``Diff_process``) estimates the current
  ``x16`` from the stored one and the score delta (reuse path, replaces :meth:`deep`);
* :meth:`SegmentationNetwork.shallow`: stages ``layer3``, ``layer2`` and the upsampler -> logits.

Attribute names match the official state-dict keys (``TSE``, ``RRB1``, ``CAB``, ``RRB2``,
``Diff_process``, ``project``). ReLUs work in place on freshly computed tensors (same values, less
memory traffic).
"""

from __future__ import annotations

from typing import Dict, Mapping, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DEEP_LAYERS = ("layer5", "layer4")
SHALLOW_LAYERS = ("layer3", "layer2")
LAYERS = DEEP_LAYERS + SHALLOW_LAYERS
CHANNELS = 64


def resize(x: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear resize (align_corners=False) of (B,C,h,w) to (B,C,*size); same size returns ``x``."""
    size = tuple(int(s) for s in size[-2:])
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size, mode="bilinear", align_corners=False)


BICUBIC_A = -0.75  # the cubic convolution coefficient of PyTorch's (and OpenCV's) bicubic interpolation


def _bicubic_phase_taps() -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """The 4-tap filters of 2x bicubic upsampling (align_corners=False), padded to 5 common taps.

    Output 2i samples the input at i - 1/4 (taps i-2 .. i+1, fraction 3/4); output 2i+1 at i + 1/4
    (taps i-1 .. i+2, fraction 1/4). Over the window i-2 .. i+2 the even phase uses the first four
    taps and the odd phase the last four.
    """
    a = BICUBIC_A

    def near(d: float) -> float:  # |d| <= 1
        return ((a + 2) * d - (a + 3)) * d * d + 1

    def far(d: float) -> float:  # 1 < |d| < 2
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a

    def taps(t: float) -> Tuple[float, ...]:
        return far(1 + t), near(t), near(1 - t), far(2 - t)

    return taps(0.75) + (0.0,), (0.0,) + taps(0.25)


BICUBIC_TAPS = _bicubic_phase_taps()


def bicubic_up2(x: Tensor) -> Tensor:
    """2x bicubic upsampling, ``F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)``.

    Computed as the official code does in spirit, with fixed polyphase filters: the border is
    replicated by 2 pixels (PyTorch clamps the taps to the image), then one depthwise convolution per
    axis produces both output phases, which are interleaved. Equal to ``F.interpolate`` up to float
    rounding (about 1e-7 of the values' range) and about twice as fast on CPU.

    Under autocast, or given bfloat16 / float16, it runs in float32 (and returns float32): oneDNN's
    reduced-precision depthwise kernels for these shapes measured 3x slower than float32 on an AMX Xeon
    (20.7 against 6.2 ms for the refiner's 64-channel step at 360x640, plus a 10 ms layout copy), and float32
    is the closer bicubic.

    (B,C,H,W) -> (B,C,2H,2W).
    """
    if x.dtype in (torch.bfloat16, torch.float16) or _autocast_on(x.device.type):
        with torch.autocast(x.device.type, enabled=False):
            return _bicubic_up2(x.float())
    return _bicubic_up2(x)


def _autocast_on(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except RuntimeError:  # a device type without autocast (e.g. meta, for FLOP counts)
        return False


def _bicubic_up2(x: Tensor) -> Tensor:
    b, c, h, w = x.shape
    taps = torch.tensor(BICUBIC_TAPS, dtype=x.dtype, device=x.device)  # (2 phases, 5 taps)
    x = F.pad(x, (2, 2, 2, 2), mode="replicate")
    rows = F.conv2d(x, taps.view(2, 1, 1, 5).repeat(c, 1, 1, 1), groups=c)  # (B, 2C, H+4, W)
    rows = rows.reshape(b, c, 2, h + 4, w).permute(0, 1, 3, 4, 2).reshape(b, c, h + 4, 2 * w)
    out = F.conv2d(rows, taps.view(2, 1, 5, 1).repeat(c, 1, 1, 1), groups=c)  # (B, 2C, H, 2W)
    return out.reshape(b, c, 2, h, 2 * w).transpose(2, 3).reshape(b, c, 2 * h, 2 * w)


def channel_taps(x: Tensor, weight: Tensor) -> Tensor:
    """The channel sums of a one-output k x k convolution, one plane per kernel tap.

    Plane ``dy * k + dx`` is ``sum_c weight[0, c, dy, dx] * x[:, c]``. x (B,C,h,w), weight (1,C,k,k) ->
    (B,k*k,h,w). :func:`sum_shifted_taps` completes the convolution.
    """
    k = weight.shape[-1]
    return F.conv2d(x, weight[0].permute(1, 2, 0).reshape(k * k, weight.shape[1], 1, 1))


def sum_shifted_taps(planes: Tensor, bias: Tensor | None = None) -> Tensor:
    """Sum the tap planes of :func:`channel_taps`, each shifted to its tap, with zeros outside.

    ``out[i, j] = bias + sum_{dy,dx} planes[dy * k + dx, i + dy - p, j + dx - p]`` with p = k // 2, so
    ``sum_shifted_taps(channel_taps(x, w), b)`` is ``F.conv2d(x, w, b, padding=k // 2)`` (odd k).
    (B,k*k,H,W) -> (B,1,H,W).
    """
    k = round(planes.shape[1] ** 0.5)
    p = k // 2
    height, width = planes.shape[-2:]
    centre = p * k + p
    out = planes[:, centre:centre + 1].clone() if bias is None else planes[:, centre:centre + 1] + bias.view(1, 1, 1, 1)
    for dy in range(k):
        for dx in range(k):
            if dy == dx == p:
                continue
            sy, sx = dy - p, dx - p  # out[i, j] += plane[i + sy, j + sx] where that lies inside
            tap = dy * k + dx
            out[:, :, max(0, -sy):height - max(0, sy), max(0, -sx):width - max(0, sx)] += \
                planes[:, tap:tap + 1, max(0, sy):height + min(0, sy), max(0, sx):width + min(0, sx)]
    return out


def expand_batch(x: Tensor, batch: int) -> Tensor:
    """(1,...) -> (batch,...) view for features shared by several objects; other batch sizes as is."""
    return x.expand(batch, *x.shape[1:]) if x.shape[0] == 1 and batch > 1 else x


def _conv(cin: int, cout: int, k: int, bias: bool = True, dilation: int = 1) -> nn.Conv2d:
    """k x k convolution with 'same' padding (``dilation * (k // 2)``)."""
    return nn.Conv2d(cin, cout, k, padding=dilation * (k // 2), dilation=dilation, bias=bias)


class TSE(nn.Module):
    """Target segmentation encoder: reduce the backbone feature, add the score, transform.

    ``reduce``: 1x1 fc->64, ReLU, 1x1 64->64. ``transform``: 3x3 65->65, ReLU, 3x3 65->65, ReLU,
    3x3 65->64, ReLU.
    """

    def __init__(self, feature_channels: int, oc: int = CHANNELS):
        super().__init__()
        self.reduce = nn.Sequential(_conv(feature_channels, oc, 1), nn.ReLU(inplace=True), _conv(oc, oc, 1))
        self.transform = nn.Sequential(_conv(oc + 1, oc + 1, 3), nn.ReLU(inplace=True), _conv(oc + 1, oc + 1, 3),
                                       nn.ReLU(inplace=True), _conv(oc + 1, oc, 3), nn.ReLU(inplace=True))

    def forward(self, feature: Tensor, score: Tensor, deeper: Tensor | None,
                reduced: Tensor | None = None) -> Tuple[Tensor, Tensor]:
        """feature (1 or B,fc,h,w), score (B,1,h',w'), deeper (B,64,·,·) or None.

        Returns ``h`` (B,64,h,w) and ``hpool``: ``deeper`` when given, else GAP of the reduced feature
        (B,64,1,1). A batch-1 ``feature`` is shared by all B scores (several objects, one frame).
        ``reduced``: ``self.reduce(feature)`` when the caller already has it (it depends on the frame only,
        so objects of one frame share it); ``feature`` is then not read.
        """
        h = expand_batch(self.reduce(feature) if reduced is None else reduced, score.shape[0])
        hpool = F.adaptive_avg_pool2d(h, 1) if deeper is None else deeper
        h = self.transform(torch.cat([h, resize(score, h.shape[-2:])], dim=1))
        return h, hpool


class RRB(nn.Module):
    """Residual refinement block: h = 1x1(x); ReLU(h + [3x3, BN, ReLU, 3x3 (no bias)](h)). (B,C,h,w)."""

    def __init__(self, oc: int = CHANNELS, use_bn: bool = True):
        super().__init__()
        self.conv1x1 = _conv(oc, oc, 1)
        norm: nn.Module = nn.BatchNorm2d(oc) if use_bn else nn.Identity()
        self.bblock = nn.Sequential(_conv(oc, oc, 3), norm, nn.ReLU(inplace=True), _conv(oc, oc, 3, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1x1(x)
        return (h + self.bblock(h)).relu_()


class CAB(nn.Module):
    """Channel attention block fusing a deeper map into a shallower one.

    att = 1x1(128->64), ReLU, 1x1(64->64) on concat[GAP(shallow), GAP(deeper)] (a 1x1 ``deeper`` is used
    as is); output = shallow * sigmoid(att) + bilinear_resize(deeper -> shallow size).
    """

    def __init__(self, oc: int = CHANNELS):
        super().__init__()
        self.convreluconv = nn.Sequential(_conv(2 * oc, oc, 1), nn.ReLU(inplace=True), _conv(oc, oc, 1))

    def forward(self, deeper: Tensor, shallow: Tensor) -> Tensor:
        """deeper (B,64,hd,wd) (or (B,64,1,1)), shallow (B,64,h,w) -> (B,64,h,w)."""
        shallow_pool = F.adaptive_avg_pool2d(shallow, 1)
        deeper_pool = deeper if deeper.shape[-2:] == (1, 1) else F.adaptive_avg_pool2d(deeper, 1)
        att = self.convreluconv(torch.cat([shallow_pool, deeper_pool], dim=1))
        return shallow * torch.sigmoid(att) + resize(deeper, shallow.shape[-2:])


class MultiReceptiveConv(nn.Module):
    """Three parallel 3x3 convs (dilation 1, 2, 3; ic->mid) concatenated, then a 5x5 conv 3*mid->oc.

    No activation. (B,ic,h,w) -> (B,oc,h,w).
    """

    def __init__(self, ic: int, mid: int, oc: int):
        super().__init__()
        self.conv1 = _conv(ic, mid, 3, dilation=1)
        self.conv2 = _conv(ic, mid, 3, dilation=2)
        self.conv3 = _conv(ic, mid, 3, dilation=3)
        self.convBlend = _conv(3 * mid, oc, 5)

    def forward(self, x: Tensor) -> Tensor:
        return self.convBlend(torch.cat([self.conv1(x), self.conv2(x), self.conv3(x)], dim=1))


class RefineTranslator(nn.Module):
    """Refine-translator (official ``Translate_F(ic=65, mid=48, oc=64)``).

    Estimates the current deep refined map from the previous one and the score delta:
    ``postRBB(conv_multi(concat[prev_x16, delta16]))``.
    """

    def __init__(self, ic: int = CHANNELS + 1, mid: int = 48, oc: int = CHANNELS, use_bn: bool = True):
        super().__init__()
        self.conv_multi = MultiReceptiveConv(ic, mid, oc)
        self.postRBB = RRB(oc, use_bn=use_bn)

    def forward(self, prev_x16: Tensor, delta16: Tensor) -> Tensor:
        """prev_x16 (B,64,H16,W16), delta16 (B,1,H16,W16) -> (B,64,H16,W16)."""
        return self.postRBB(self.conv_multi(torch.cat([prev_x16, delta16], dim=1)))


class Upsampler(nn.Module):
    """Logits head (official ``BackwardCompatibleUpsampler``).

    2x bicubic up -> 3x3 64->32 + ReLU -> 2x bicubic up -> bilinear resize to the image size ->
    3x3 32->1. (B,64,H4,W4) -> (B,1,H,W). The official fixed polyphase bicubic filter equals
    ``F.interpolate(scale_factor=2, mode='bicubic', align_corners=False)``; :func:`bicubic_up2` computes
    it with depthwise convolutions.

    :meth:`forward` sums the 32 channels of the last convolution before the second upsampling, not after
    the resize: the bicubic upsampling and the bilinear resize treat every channel alike and linearly, so
    ``conv2(resize(up(x)))`` is ``sum_shifted_taps(resize(up(channel_taps(x, w))), b)``, the same numbers up
    to float rounding, with the two resamplings on 9 tap planes instead of 32 channels. (The 3x3 window
    itself still runs at the image size, after the resize, with zero padding there.) :meth:`forward_plain`
    computes it in the architecture's order.
    """

    def __init__(self, ic: int = CHANNELS):
        super().__init__()
        self.conv1 = _conv(ic, ic // 2, 3)
        self.conv2 = _conv(ic // 2, 1, 3)

    def forward(self, x: Tensor, image_size: Sequence[int]) -> Tensor:
        x = self.conv1(bicubic_up2(x)).relu_()
        planes = channel_taps(x, self.conv2.weight)  # (B,9,2h,2w)
        return sum_shifted_taps(resize(bicubic_up2(planes), image_size), self.conv2.bias)

    def forward_plain(self, x: Tensor, image_size: Sequence[int]) -> Tensor:
        """The same logits computed in the order of the architecture (the reference of :meth:`forward`)."""
        x = bicubic_up2(self.conv1(bicubic_up2(x)).relu_())
        return self.conv2(resize(x, image_size))


class SegmentationNetwork(nn.Module):
    """FRTM refiner plus the G-FRTM refine-translator (official ``SegNetwork``).

    Args:
        feature_channels: channels of ``layer5``, ``layer4``, ``layer3``, ``layer2`` (any mapping with
            those keys, e.g. :data:`models.backbone.FEATURE_CHANNELS` ``['resnet18']``).
        use_bn: BatchNorm in the residual blocks (the official model uses it).

    Score maps are (B,1,H16,W16) target-model scores (or translated scores); each stage resizes it to its
    own grid. Features may have batch 1 and then are shared by all B score maps (several objects).
    """

    def __init__(self, feature_channels: Mapping[str, int], use_bn: bool = True):
        super().__init__()
        self.TSE = nn.ModuleDict({L: TSE(feature_channels[L]) for L in LAYERS})
        self.RRB1 = nn.ModuleDict({L: RRB(use_bn=use_bn) for L in LAYERS})
        self.CAB = nn.ModuleDict({L: CAB() for L in LAYERS})
        self.RRB2 = nn.ModuleDict({L: RRB(use_bn=use_bn) for L in LAYERS})
        self.Diff_process = RefineTranslator(use_bn=use_bn)
        self.project = Upsampler()

    def _stage(self, layer: str, feature: Tensor, score: Tensor, deeper: Tensor | None,
               reduced: Mapping[str, Tensor] | None = None, maps: Dict[str, Tensor] | None = None) -> Tensor:
        """One stage: feature (1|B,fc,h,w), score (B,1,·,·), deeper (B,64,·,·)|None -> (B,64,h,w).

        ``maps``: receives ``"<layer>.h1"`` (the RRB1 output) and ``"<layer>.out"`` (the stage's output)."""
        h, hpool = self.TSE[layer](feature, resize(score, feature.shape[-2:]), deeper,
                                   None if reduced is None else reduced[layer])
        h = self.RRB1[layer](h)
        out = self.RRB2[layer](self.CAB[layer](hpool, h))
        if maps is not None:
            maps[f"{layer}.h1"], maps[f"{layer}.out"] = h, out
        return out

    def deep(self, score16: Tensor, layer5: Tensor, layer4: Tensor) -> Tensor:
        """Stages ``layer5``, ``layer4`` (official ``Test_Init`` / ``prev_ft``).

        score16 (B,1,H16,W16), layer5 (1|B,C5,H32,W32), layer4 (1|B,C4,H16,W16) -> x16 (B,64,H16,W16).
        """
        x = self._stage("layer5", layer5, score16, None)
        return self._stage("layer4", layer4, score16, x)

    def translate(self, prev_x16: Tensor, delta16: Tensor) -> Tensor:
        """Refine-translator: prev_x16 (B,64,H16,W16), delta16 (B,1,H16,W16) -> x16 (B,64,H16,W16)."""
        return self.Diff_process(prev_x16, delta16)

    def reduce_shallow(self, layer3: Tensor, layer2: Tensor) -> Dict[str, Tensor]:
        """The frame-only part of stages ``layer3``, ``layer2``: their TSE ``reduce`` of layer3 (B,C3,H8,W8)
        and layer2 (B,C2,H4,W4) -> ``{"layer3": (B,64,H8,W8), "layer2": (B,64,H4,W4)}``, to pass as
        ``reduced`` to :meth:`shallow` for every object of the frame."""
        return {"layer3": self.TSE["layer3"].reduce(layer3), "layer2": self.TSE["layer2"].reduce(layer2)}

    def shallow_features(self, x16: Tensor, score16: Tensor, layer3: Tensor, layer2: Tensor,
                         reduced: Mapping[str, Tensor] | None = None,
                         maps: Dict[str, Tensor] | None = None) -> Tensor:
        """Stages ``layer3``, ``layer2``: x16 (B,64,H16,W16), score16 (B,1,H16,W16), layer3 (1|B,C3,H8,W8),
        layer2 (1|B,C2,H4,W4) -> the upsampler's input (B,64,H4,W4). ``reduced``: :meth:`reduce_shallow` of
        the same features, when already computed (the result is the same). ``maps``: receives each stage's
        RRB1 output and output (``"layer3.h1"``, ``"layer3.out"``, ``"layer2.h1"``, ``"layer2.out"``)."""
        x = self._stage("layer3", layer3, score16, x16, reduced, maps)
        return self._stage("layer2", layer2, score16, x, reduced, maps)

    def shallow(self, x16: Tensor, score16: Tensor, layer3: Tensor, layer2: Tensor,
                image_size: Sequence[int], reduced: Mapping[str, Tensor] | None = None,
                maps: Dict[str, Tensor] | None = None) -> Tensor:
        """Stages ``layer3``, ``layer2`` and the upsampler -> logits (B,1,H,W), (H,W) = ``image_size``.
        ``reduced``, ``maps``: as for :meth:`shallow_features`."""
        return self.project(self.shallow_features(x16, score16, layer3, layer2, reduced, maps), image_size)

    def forward(self, score16: Tensor, features: Mapping[str, Tensor], image_size: Sequence[int]) -> Tensor:
        """Full path: score16 (B,1,H16,W16), features with keys ``layer5`` .. ``layer2`` -> logits (B,1,H,W)."""
        x16 = self.deep(score16, features["layer5"], features["layer4"])
        return self.shallow(x16, score16, features["layer3"], features["layer2"], image_size)

