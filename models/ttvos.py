"""TTVOS (Park et al., "TTVOS: lightweight video object segmentation with adaptive template attention module
and temporal consistency loss"), as the official code (HYOJINPARK/TTVOS @ 2eac7c9) computes it.

The network, per object:

* a **template** (``gcm``, "global context memory"): from the /8 features with coordinate channels and a
  3-deep history of pooled masks, two branches (key, value: 1x1 conv, grouped 5x5 conv, LeakyReLU 0.2) and
  ``T = softmax_rows(K V^T / sqrt(h w))``, a (C8, C8) matrix;
* the **template attention** (``gcq``): the same input of the current frame, a value and a feature branch;
  ``lt = ReLU(blend([F, T V]))`` replaces the /8 features in the decoder;
* the decoder ``refine`` (refine v3): a short-term branch on the previous frame's /16 features and mask, the
  current /16 features, ``lt`` and the /4 features, three x2 transposed convolutions and a x2 pixel shuffle
  to full-resolution logits (channel 0 background, 1 object), plus the update weight W (a sigmoid scalar);
* the **state update** after each frame: the mask history gets the new aggregated mask (pooled 3x to /8),
  the /16 features are kept for the next frame, and the template becomes the running average
  ``T (1 / (W + 1)) + T_cur (W / (W + 1))``.

Module names and registration order are the official ones: ``state_dict()`` is the official ``VOS`` state
dict less its ``vos.`` prefix (474 keys with HRNet). :class:`TTVOS` is a plain module: the per-object state
is a :class:`TTVOSState` that the caller keeps; multi-object aggregation is
``lib.engine.aggregation.odds_aggregate``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from base.errors import ConfigError
from models.ttvos_backbones import FEATURE_COUNTS, FINETUNE_CHILD, TTVOS_BACKBONES, build_ttvos_backbone

MASK_HISTORY = 3  # masks kept in the state (6 channels: [bg, fg] of each, newest first)
COORD_CHANNELS = 3
LEAKY_SLOPE = 0.2
MEMORY_GROUP = 4  # channels per group of the template's 5x5 convolutions
DEFAULT_QUERY_GROUP = 4  # --ltG: channels per group of the attention's 5x5 convolutions
MASK_POOLINGS = 3  # avg_pool2d(3, 2, 1) steps from the image grid to /8


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalise_image(images: Tensor) -> Tensor:
    """uint8 RGB (B, 3, H, W) -> the official input: ``/255``, minus the ImageNet mean, over its std (float32;
    bit for bit torchvision's ``ToTensor`` + ``Normalize``)."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(3, 1, 1)
    return images.float().div(255).sub(mean).div(std)


def pool_mask(mask: Tensor, times: int = MASK_POOLINGS) -> Tensor:
    """``times`` x ``avg_pool2d(kernel 3, stride 2, padding 1)`` (zero padding counted, as the official code)."""
    for _ in range(times):
        mask = F.avg_pool2d(mask, 3, 2, 1)
    return mask


def coordinate_channels(height: int, width: int, device=None, dtype=torch.float32) -> Tensor:
    """The 3 CoordConv channels (1, 3, h, w): row and column index scaled to [-1, 1], and their radius."""
    rows = (torch.arange(height, device=device, dtype=torch.float32) / (height - 1) * 2 - 1)
    cols = (torch.arange(width, device=device, dtype=torch.float32) / (width - 1) * 2 - 1)
    rows = rows.view(1, 1, height, 1).expand(1, 1, height, width)
    cols = cols.view(1, 1, 1, width).expand(1, 1, height, width)
    radius = torch.sqrt(rows.pow(2) + cols.pow(2))
    return torch.cat([rows, cols, radius], dim=1).to(dtype)


class AddCoords(nn.Module):
    """Append :func:`coordinate_channels` to a (B, C, h, w) map (the official ``AddCoords(with_r=True)``)."""

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        return torch.cat([x, coordinate_channels(h, w, x.device, x.dtype).expand(b, -1, -1, -1)], dim=1)


def _branch(cin: int, cout: int, group: int) -> nn.Sequential:
    """1x1 conv, grouped 5x5 conv (``group`` channels per group), LeakyReLU 0.2."""
    if cout % group:
        raise ConfigError(f"TTVOS: {cout} channels do not split into groups of {group}")
    return nn.Sequential(nn.Conv2d(cin, cout, 1), nn.Conv2d(cout, cout, 5, padding=2, groups=cout // group),
                         nn.LeakyReLU(LEAKY_SLOPE))


class GlobalContextMemory(nn.Module):
    """The template (official ``GlobalContextMemoryMV1``): ``softmax_rows(K V^T / sqrt(h w))``, (B, C, C)."""

    def __init__(self, cin: int, keys: int, values: int):
        super().__init__()
        self.conv_key = _branch(cin, keys, MEMORY_GROUP)
        self.conv_val = _branch(cin, values, MEMORY_GROUP)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = torch.cat([x, mask], dim=1)
        b, _, h, w = x.shape
        key = self.conv_key(x).view(b, -1, h * w)
        value = self.conv_val(x).view(b, -1, h * w)
        return torch.softmax(torch.bmm(key, value.transpose(1, 2)).mul(1.0 / math.sqrt(h * w)), dim=-1)


class GlobalContextQuery(nn.Module):
    """The template attention (official ``GlobalContextQueryMV1``): ``ReLU(blend([F, T V]))``."""

    def __init__(self, cin: int, values: int, feats: int, group: int = DEFAULT_QUERY_GROUP):
        super().__init__()
        self.conv_val = _branch(cin, values, group)
        self.conv_feat = _branch(cin, feats, group)
        both = values + feats
        self.blend = nn.Sequential(nn.Conv2d(both, both, 5, padding=2, groups=both // 4), nn.Conv2d(both, feats, 1))

    def forward(self, x: Tensor, template: Optional[Tensor]) -> Tensor:
        b, _, h, w = x.shape
        value = self.conv_val(x)
        feat = self.conv_feat(x)
        if template is None:
            attended = torch.zeros_like(value)
        else:
            attended = torch.bmm(template, value.view(b, -1, h * w)).view(b, -1, h, w)
        return F.relu(self.blend(torch.cat([feat, attended], dim=1)))


class ConvRelu(nn.Sequential):
    """Convolution (with bias) + ReLU, the official decoder's building block: children ``conv`` and ``naf``
    (a ReLU module, which the official FLOP counter counts), Kaiming-uniform weights, zero bias."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1):
        super().__init__()
        self.add_module("conv", nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2))
        self.add_module("naf", nn.ReLU())
        nn.init.kaiming_uniform_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)


@dataclass
class RefineOutput:
    """What the decoder computes for one frame.

    Attributes:
        logits: (B, 2, H, W) full-resolution scores (channel 0 background, 1 object).
        coarse: (B, 2, H/4, W/4) the official ``segscore_coarse`` (unused at inference and in the losses).
        update_weight: (B, 1, 1, 1) W of the template update, in (0, 1).
        diff: (B, 2, h8, w8) the temporal-consistency head (training only, else None).
        tmp: (B, 1, h8, w8) sigmoid of the template head on ``lt`` (training only, else None).
        out16: (B, 2, h8, w8) the /16 path's output (``deconv1_1``), what G-TTVOS's ``s16`` placement reuses.
        state4: (B, 20, h4, w4) the last layer's input (``deconv1_2(out16)``, ``coarse``, ``out4``), what
            G-TTVOS's ``frame`` placement reuses: ``logits = RefineV3.head(state4)``.
    """

    logits: Tensor
    coarse: Tensor
    update_weight: Tensor
    diff: Optional[Tensor] = None
    tmp: Optional[Tensor] = None
    out16: Optional[Tensor] = None
    state4: Optional[Tensor] = None


class RefineV3(nn.Module):
    """The official decoder ``REFINEV3`` (refine v3)."""

    def __init__(self, ch_s16: int, ch_s8: int, ch_s4: int):
        super().__init__()
        inter = min(128, ch_s4)
        s16out = min(2 * inter, ch_s16)
        hist = 2 * MASK_HISTORY
        self.conv_s16 = ConvRelu(hist + ch_s16, s16out, 3)
        self.blend_s16 = ConvRelu(ch_s16 + s16out, inter, 3)
        self.conv_s8 = ConvRelu(ch_s8, inter, 1)
        self.blend_s8 = ConvRelu(inter + 2, inter, 3)
        self.cal_UpW = nn.Sequential(ConvRelu(inter + 2, (inter + 2) // 2, 3, stride=2), nn.AdaptiveAvgPool2d(1),
                                     nn.Conv2d((inter + 2) // 2, 1, 1), nn.Sigmoid())
        self.conv_s4 = ConvRelu(ch_s4, inter, 1)
        self.blend_s4 = ConvRelu(inter + 2, inter, 3)
        self.deconv1_1 = nn.ConvTranspose2d(inter, 2, 4, stride=2, padding=1)
        self.deconv1_2 = nn.ConvTranspose2d(2, 2, 4, stride=2, padding=1)
        self.deconv2 = nn.ConvTranspose2d(inter, 2, 4, stride=2, padding=1)
        self.deconv3 = nn.ConvTranspose2d(inter + 4, 8, 4, stride=2, padding=1)
        self.predictor_Diff = nn.Conv2d(inter, 2, 3, padding=1)
        self.predictor_Tmp = nn.Conv2d(ch_s8, 1, 3, padding=1)

    def path16(self, s16: Tensor, prev_seg: Tensor, prev_s16: Tensor) -> Tensor:
        """The /16 path: the short-term branch on the previous /16 features and mask history, blended with the
        current /16 features, up to /8 -> ``out16`` (B, 2, h8, w8)."""
        short = self.conv_s16(torch.cat([F.avg_pool2d(prev_seg, 3, 2, 1), prev_s16], dim=1))
        return self.deconv1_1(self.blend_s16(torch.cat([s16, short], dim=1)))

    def head(self, state4: Tensor) -> Tensor:
        """The last layer: ``state4`` (B, 20, h4, w4) -> full-resolution logits (B, 2, H, W)."""
        return F.pixel_shuffle(self.deconv3(state4), 2)

    def forward(self, s16: Optional[Tensor], lt: Tensor, s4: Tensor, prev_seg: Optional[Tensor],
                prev_s16: Optional[Tensor], heads: bool = False, out16: Optional[Tensor] = None) -> RefineOutput:
        """The decoder; with ``out16`` given (G-TTVOS's translated one) the /16 path is skipped and ``s16``,
        ``prev_seg``, ``prev_s16`` are not read."""
        if out16 is None:
            out16 = self.path16(s16, prev_seg, prev_s16)
        u8 = torch.cat([self.conv_s8(lt), out16], dim=1)
        weight = self.cal_UpW(u8)
        blended8 = self.blend_s8(u8)
        coarse = self.deconv2(blended8)
        out4 = self.blend_s4(torch.cat([self.conv_s4(s4), coarse], dim=1))
        state4 = torch.cat([self.deconv1_2(out16), coarse, out4], dim=1)
        out = RefineOutput(logits=self.head(state4), coarse=coarse, update_weight=weight, out16=out16, state4=state4)
        if heads:
            out.diff = self.predictor_Diff(blended8)
            out.tmp = torch.sigmoid(self.predictor_Tmp(lt))
        return out


@dataclass
class TTVOSState:
    """One object's state between frames (the official per-object ``state`` dict).

    Attributes:
        prev_seg: (B, 6, h8, w8) pooled [bg, fg] of the last three masks, newest first.
        template: (B, C8, C8) the template ``gc``.
        prev_s16: (B, C16, h16, w16) the last frame's /16 features (``prev_seg_feats16``).
    """

    prev_seg: Tensor
    template: Tensor
    prev_s16: Tensor


class TTVOS(nn.Module):
    """The TTVOS network (the official ``TTVOS``, children ``backbone``, ``refine``, ``addCoords``, ``gcm``,
    ``gcq``). It never reads files: the caller loads weights into it.

    Per video: :meth:`features` once per frame (shared by the objects); per object :meth:`init_state` on the
    annotated frame, then every frame :meth:`forward` (logits and W) and, once the objects' masks are
    aggregated, :meth:`update` with the object's aggregated [1 - a, a].
    """

    def __init__(self, backbone: str = "hrnetv2Sv1", query_group: int = DEFAULT_QUERY_GROUP):
        super().__init__()
        if backbone not in TTVOS_BACKBONES:
            raise ConfigError(f"unknown TTVOS backbone {backbone!r}; choose one of {', '.join(TTVOS_BACKBONES)}")
        self.backbone_name = backbone
        self.query_group = query_group
        c16, c8, c4 = FEATURE_COUNTS[backbone]
        self.backbone = build_ttvos_backbone(backbone)
        self.refine = RefineV3(c16, c8, c4)
        self.addCoords = AddCoords()
        cin = c8 + COORD_CHANNELS + 2 * MASK_HISTORY
        self.gcm = GlobalContextMemory(cin, c8, c8)
        self.gcq = GlobalContextQuery(cin, c8, c8, group=query_group)

    def config(self) -> Dict[str, object]:
        """The constructor arguments (stored in the project's model files)."""
        return {"backbone": self.backbone_name, "query_group": self.query_group}

    def features(self, image: Tensor) -> Dict[str, Tensor]:
        """Backbone features ``s16``, ``s8``, ``s4`` of normalised images (B, 3, H, W), H and W multiples of 16."""
        return self.backbone.get_features(image)

    def init_state(self, feats: Dict[str, Tensor], mask: Tensor) -> TTVOSState:
        """The state of one object from its annotated frame's features and (B, 1, H, W) 0/1 mask."""
        given = torch.cat([1 - mask, mask], dim=1).to(feats["s8"].dtype)
        pooled = pool_mask(given)
        prev_seg = torch.cat([pooled, pooled.new_zeros(pooled.shape[0], 2 * MASK_HISTORY - 2, *pooled.shape[-2:])],
                             dim=1)
        template = self.gcm(self.addCoords(feats["s8"]), prev_seg)
        return TTVOSState(prev_seg=prev_seg, template=template, prev_s16=feats["s16"])

    def attend(self, feats: Dict[str, Tensor], state: TTVOSState) -> Tensor:
        """``lt``: the template attention on the current /8 features and the mask history."""
        return self.gcq(torch.cat([self.addCoords(feats["s8"]), state.prev_seg], dim=1), state.template)

    def forward(self, feats: Dict[str, Tensor], state: TTVOSState, heads: bool = False,
                lt: Optional[Tensor] = None) -> RefineOutput:
        """One object's logits on the current frame (the state is read, not changed); ``lt``: :meth:`attend`'s
        output when already computed."""
        if lt is None:
            lt = self.attend(feats, state)
        return self.refine(feats["s16"], lt, feats["s4"], state.prev_seg, state.prev_s16, heads=heads)

    def update(self, feats: Dict[str, Tensor], prob: Tensor, state: TTVOSState, update_weight: Tensor) -> TTVOSState:
        """The state after a frame: ``prob`` is the object's (B, 2, H, W) [1 - a, a], ``update_weight`` the
        frame's W (B, 1, 1, 1)."""
        pooled = pool_mask(prob)
        prev_seg = torch.cat([pooled, state.prev_seg[:, 0:2], state.prev_seg[:, 2:4]], dim=1)
        current = self.gcm(self.addCoords(feats["s8"]), prev_seg)
        w = update_weight.view(-1, 1, 1)
        template = state.template * (1 / (w + 1)) + current * (w / (w + 1))
        return TTVOSState(prev_seg=prev_seg, template=template, prev_s16=feats["s16"])

    def train(self, mode: bool = True) -> TTVOS:
        """As the official training: only the backbone's fine-tuned child follows ``mode``; the rest of the
        backbone stays in eval mode (BN running statistics)."""
        super().train(mode)
        for name, child in self.backbone.named_children():
            if name != FINETUNE_CHILD[self.backbone_name]:
                child.train(False)
        return self


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["TTVOS", "TTVOSState", "RefineOutput", "RefineV3", "GlobalContextMemory", "GlobalContextQuery",
           "AddCoords", "normalise_image", "coordinate_channels", "pool_mask", "count_parameters",
           "TTVOS_BACKBONES", "FEATURE_COUNTS"]
