"""G-TTVOS: TTVOS with the reuse gate, the delta-generator and a refine-translator (this project's design).

Neither official repository has G-TTVOS code and the paper's supplement, which places the gate in TTVOS, is not
available (``shared/spec/ttvos_reference.md`` section 10). The design follows G-FRTM: on every tracked frame a
cheap part of the network gives the dissimilarity ``D`` of the frame against the object's **last computed
frame**; the gate maps ``D`` to P_gate (reuse iff P_gate > tau, strictly); on a reused frame the expensive part is
skipped and the translator estimates the skipped part's output from the last computed frame's, the delta
``Convert_Diff(D)`` and the frame's cheap features. Two placements (:data:`PLACEMENTS`):

``frame`` (the default; what the shipped G-TTVOS uses)
    The cheap part is the backbone's stem (HRNet: its two stride-2 convolutions, 64 channels at /4; ResNet:
    conv1 and the max-pool). ``D`` comes from G-FRTM's template modules (``Tmatching``) on the stem features
    pooled to /8: the template is made from the last computed frame (its stem features and its mask; G-FRTM
    makes it once, from the first frame), the query is the frame's stem features, their difference to the last
    computed frame's and that frame's mask. A reused frame skips the rest of the backbone, the
    template attention, the decoder and the state update; the translator estimates the decoder's last input
    ``state4`` (20 channels at /4) from the last computed frame's, and the last layer (``RefineV3.head``) makes
    the logits.
``s16`` (the reference's suggested mapping)
    ``D`` is the template attention's output ``lt`` (TTVOS's own template matching, against the template and
    mask history of the last computed frame). A reused frame skips the decoder's /16 path (the short-term
    branch and ``blend_s16``, and with a ResNet or MobileNet backbone its /16 layers); the translator
    estimates the /16 path's output ``out16`` (2 channels at /8) and the rest of the decoder runs. With HRNet
    every backbone branch feeds s8 and s4, so the whole backbone still runs.

In both the TTVOS state (template, mask history, /16 features) is not updated on a reused frame: the next
computed frame starts from the last computed one, as G-FRTM's target model (docs/gttvos.md measures the
alternative). The TTVOS weights are those of the base network, unchanged: at tau 1 G-TTVOS computes exactly what
TTVOS computes. ``state_dict()`` is TTVOS's keys followed by ``Tmatching.*`` (frame only), ``convGS.*``,
``Convert_Diff.*``, ``Diff_process.*``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from base.errors import ConfigError
from models.reuse import KEY_CHANNELS, ReuseGate, TemplateModule
from models.ttvos import DEFAULT_QUERY_GROUP, TTVOS, RefineOutput, TTVOSState, pool_mask

PLACEMENTS = ("frame", "s16")
DEFAULT_PLACEMENT = "frame"
STATE4_CHANNELS = 4  # + the decoder's inner width: deconv1_2(out16) (2) and coarse (2) before out4


class StateTranslator(nn.Module):
    """The refine-translator of G-TTVOS: the last computed frame's decoder state ``prev`` (B, S, h, w), the delta
    (B, 1, h', w', bilinearly resized to h x w) and the current frame's guide features (B, G, h'', w'',
    average-pooled to h x w when finer) -> the current state, ``prev`` plus a residual. The residual's last
    convolution starts at zero, so an untrained translator copies ``prev``."""

    def __init__(self, state_channels: int, guide_channels: int, hidden: int = 32, guide_hidden: int = 16):
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(guide_channels, guide_hidden, 1), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(state_channels + 1 + guide_hidden, hidden, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(hidden, state_channels, 3, padding=1))
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, prev: Tensor, delta: Tensor, guide: Tensor) -> Tensor:
        size = prev.shape[-2:]
        if delta.shape[-2:] != size:
            delta = F.interpolate(delta, size=size, mode="bilinear", align_corners=False)
        if guide.shape[-2:] != size:
            guide = F.adaptive_avg_pool2d(guide, size)
        guide = self.reduce(guide)
        if guide.shape[0] != prev.shape[0]:
            guide = guide.expand(prev.shape[0], -1, -1, -1)
        return prev + self.body(torch.cat([prev, delta.to(prev.dtype), guide], dim=1))


@dataclass
class ReuseState:
    """One object's reuse state: what its last computed frame leaves to the reuse path.

    Attributes:
        template: (B, 64, 64) the ``frame`` placement's template of the last computed frame (None for ``s16``).
        prev_prob8: (B, 1, h8, w8) the last computed frame's object probability pooled to /8 (``frame``).
        stem8: (1|B, C, h8, w8) the last computed frame's stem features pooled to /8 (``frame``; else None).
        decoder: the last computed frame's decoder state that the translator starts from: ``state4``
            (``frame``) or ``out16`` (``s16``).
    """

    template: Optional[Tensor]
    prev_prob8: Tensor
    decoder: Tensor
    stem8: Optional[Tensor] = None


class GTTVOS(TTVOS):
    """TTVOS plus its reuse modules (children ``Tmatching`` (``frame`` only), ``convGS``, ``Convert_Diff``,
    ``Diff_process``, after TTVOS's). A plain module: the caller keeps the :class:`TTVOSState` and
    :class:`ReuseState` of each object."""

    def __init__(self, backbone: str = "hrnetv2Sv1", query_group: int = DEFAULT_QUERY_GROUP,
                 placement: str = DEFAULT_PLACEMENT):
        super().__init__(backbone, query_group)
        if placement not in PLACEMENTS:
            raise ConfigError(f"unknown G-TTVOS placement {placement!r}; choose one of {', '.join(PLACEMENTS)}")
        self.placement = placement
        c8 = self.refine.conv_s8.conv.out_channels  # the decoder's inner width
        lt_channels = self.gcq.blend[1].out_channels
        if placement == "frame":
            stem = getattr(self.backbone, "stem_channels", None)
            if stem is None:
                raise ConfigError(f"G-TTVOS placement frame needs a backbone with a /4 stem; {backbone} has none "
                                  "(use --placement s16)")
            self.Tmatching = TemplateModule(2 * stem + 1)
            gate_channels, state_channels, guide_channels = KEY_CHANNELS, STATE4_CHANNELS + c8, stem
        else:
            gate_channels, state_channels, guide_channels = lt_channels, 2, lt_channels
        self.convGS = ReuseGate(gate_channels)
        self.Convert_Diff = nn.Conv2d(gate_channels, 1, 3, padding=1)
        self.Diff_process = StateTranslator(state_channels, guide_channels)

    def config(self) -> Dict[str, object]:
        return {**super().config(), "placement": self.placement}

    def reuse_parameters(self):
        """The reuse modules' parameters (what G-TTVOS training learns; TTVOS's stay as trained)."""
        names = ("Tmatching", "convGS", "Convert_Diff", "Diff_process")
        return [p for name, child in self.named_children() if name in names for p in child.parameters()]

    def init_gate_bias(self) -> None:
        """Training init of the gate's last bias (P(reuse) ~ 0.13 at the start), as G-FRTM's."""
        self.convGS.init_bias(0.1, 2.0)

    # --- features -----------------------------------------------------------------------------

    def prefix(self, image: Tensor) -> Dict[str, Tensor]:
        """What every tracked frame computes before the gate decides: ``stem`` (``frame``), or the backbone up to
        s8 (``s16``: all of it with HRNet)."""
        if self.placement == "frame":
            return {"stem": self.backbone.stem(image)}
        if self.backbone.separable_s16:
            return self.backbone.get_features(image, s16=False)
        return self.backbone.get_features(image)

    def complete(self, feats: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """Add the rest of the backbone's features to a :meth:`prefix` dict (in place); returns it."""
        if self.placement == "frame" and "s8" not in feats:
            feats.update(self.backbone.get_features(None, stem=feats["stem"]))
        elif "s16" not in feats:
            feats["s16"] = self.backbone.s16_from_s8(feats["s8"])
        return feats

    def features(self, image: Tensor) -> Dict[str, Tensor]:
        """All features (the prefix's included) of normalised images (B, 3, H, W)."""
        return self.complete(self.prefix(image))

    # --- reuse ---------------------------------------------------------------------------------

    def init_reuse(self, feats: Dict[str, Tensor], mask: Tensor, state: TTVOSState) -> ReuseState:
        """An object's reuse state on its annotated frame: (B, 1, H, W) 0/1 ``mask``; ``feats`` all features, the
        prefix's included. The decoder runs once on the annotated frame itself to give the translator its first
        state (its logits are not used)."""
        out = self(feats, state)
        return self.computed(None, out, mask.to(feats["s8"].dtype), feats)

    def decoder_state(self, out: RefineOutput) -> Tensor:
        """What the translator of this placement starts from, of a decoder output."""
        return out.state4 if self.placement == "frame" else out.out16

    def computed(self, reuse: Optional[ReuseState], out: RefineOutput, prob: Tensor,
                 feats: Dict[str, Tensor]) -> ReuseState:
        """The reuse state after a computed frame (or the annotated one): its decoder output, its (B, 1, H, W)
        object probability and (placement ``frame``) its stem features and the template made from them."""
        prob8 = pool_mask(prob)
        if self.placement != "frame":
            return ReuseState(template=None, prev_prob8=prob8, decoder=self.decoder_state(out))
        stem8 = F.avg_pool2d(feats["stem"], 2)
        query = self._query(stem8, stem8, prob8)
        return ReuseState(template=self.Tmatching.Tgenerate(query), prev_prob8=prob8,
                          decoder=self.decoder_state(out), stem8=stem8)

    @staticmethod
    def _query(stem8: Tensor, last_stem8: Tensor, prob8: Tensor) -> Tensor:
        """The template modules' input: the frame's pooled stem features, their change since the last computed
        frame, and that frame's pooled probability (batch of ``prob8``)."""
        batch = prob8.shape[0]
        stem8 = stem8.expand(batch, -1, -1, -1)
        change = stem8 - last_stem8.expand(batch, -1, -1, -1)
        return torch.cat([stem8, change, prob8.to(stem8.dtype)], dim=1)

    def match(self, feats: Dict[str, Tensor], state: TTVOSState, reuse: ReuseState) -> Tensor:
        """The dissimilarity ``D`` of the frame against the last computed one (the gate's input)."""
        if self.placement == "frame":
            query = self._query(F.avg_pool2d(feats["stem"], 2), reuse.stem8, reuse.prev_prob8)
            return self.Tmatching.Tmatching(query, reuse.template)
        return self.attend(feats, state)

    def gate_logits(self, dissimilarity: Tensor) -> Tensor:
        """D -> gate logits (B, 2); channel 0 = reuse."""
        return self.convGS(dissimilarity)

    @staticmethod
    def reuse_probability(logits: Tensor) -> Tensor:
        """Gate logits (B, 2) -> P(reuse) (B,)."""
        return torch.softmax(logits, dim=1)[:, 0]

    def delta(self, dissimilarity: Tensor) -> Tensor:
        """D -> the delta (B, 1, h8, w8): the estimated change of the object probability pooled to /8."""
        return self.Convert_Diff(dissimilarity)

    def reuse(self, feats: Dict[str, Tensor], reuse: ReuseState, dissimilarity: Tensor,
              delta: Optional[Tensor] = None) -> Tuple[RefineOutput, Tensor]:
        """The reuse path: the decoder output (logits at least) from the translated state, and the delta.
        ``feats`` needs only the :meth:`prefix`."""
        if delta is None:
            delta = self.delta(dissimilarity)
        if self.placement == "frame":
            state4 = self.Diff_process(reuse.decoder, delta, feats["stem"])
            logits = self.refine.head(state4)
            return RefineOutput(logits=logits, coarse=state4[:, 2:4], update_weight=logits.new_zeros(
                logits.shape[0], 1, 1, 1), state4=state4), delta
        out16 = self.Diff_process(reuse.decoder, delta, dissimilarity)
        return self.refine(None, dissimilarity, feats["s4"], None, None, out16=out16), delta


__all__ = ["GTTVOS", "PLACEMENTS", "DEFAULT_PLACEMENT", "ReuseState", "StateTranslator"]
