"""A learned correction of a flow-warped probability map (GSVNet's guided spatially-varying convolution).

GSVNet propagates a key frame's segmentation to a later frame with optical flow and corrects the warped map
with a light network conditioned on the current frame: a small CNN predicts, per pixel, the weights of a
k x k kernel (normalised by a softmax) that is applied to the warped map at that pixel. Where the flow is
right the kernel stays a delta; where an edge is off by a pixel or two the kernel pulls the map from where the
current frame's edge says it should be. :class:`WarpCorrector` is that module for one object's map, plus a
bounded additive logit for what no re-sampling can fix (disoccluded background, appearing object parts).

The kernel-predicting CNN runs at 1/``scale`` of the map's size on the current frame, the photometric residual
of the warp (current frame - warped key frame: large where the flow is wrong) and the warped map; its output is
upsampled bilinearly and applied at full size, so the cost is a small fraction of one backbone layer.
At initialisation the module is close to the identity (a centred kernel, no additive logit): training starts
from the uncorrected warp.
"""

from __future__ import annotations

import math
from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PROB_EPS = 1e-3  # warped probabilities are clamped to [eps, 1 - eps] before the logit (|logit| <= 6.9)
CENTRE_BIAS = 4.0  # initial softmax logit of the kernel's centre tap (weight ~0.87 with a 3x3 kernel)


def prob_to_logit(prob: Tensor) -> Tensor:
    """Probabilities -> logits, clamped to [PROB_EPS, 1 - PROB_EPS] first."""
    p = prob.clamp(PROB_EPS, 1.0 - PROB_EPS)
    return torch.log(p) - torch.log1p(-p)


class WarpCorrector(nn.Module):
    """Guided spatially-varying correction of one object's warped probability map.

    Args:
        width: channels of the kernel-predicting CNN.
        kernel: side k of the per-pixel kernel (odd).
        dilation: spacing of the kernel's taps in pixels of the map.
        scale: the CNN runs at 1/scale of the map's size.
        max_residual: bound of the additive logit (tanh-scaled).

    Shapes: ``forward(image (B, 3, H, W), warped_image (B, 3, H, W), warped_prob (B, 1, H, W))`` ->
    logits (B, 1, H, W); images in [0, 1] (RGB), probabilities in [0, 1]; any H, W >= 1.
    """

    def __init__(self, width: int = 24, kernel: int = 3, dilation: int = 2, scale: int = 4,
                 max_residual: float = 8.0):
        super().__init__()
        if kernel % 2 != 1 or kernel < 1:
            raise ValueError(f"kernel must be odd and >= 1, got {kernel}")
        self.width, self.kernel, self.dilation, self.scale = width, kernel, dilation, scale
        self.max_residual = float(max_residual)
        taps = kernel * kernel
        self.features = nn.Sequential(
            nn.Conv2d(7, width, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=2, dilation=2), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=4, dilation=4), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True),
        )
        self.head = nn.Conv2d(width, taps + 1, 1)
        # run the kernel-predicting CNN on channels-last tensors (the same function up to float rounding; on a
        # 2-core CPU at 360x640 the CNN 7.8 -> 4.1 ms, the whole correction 22.8 -> 19.2 ms); inference sets it
        self.channels_last = False
        nn.init.zeros_(self.head.weight)
        with torch.no_grad():
            self.head.bias.zero_()
            self.head.bias[taps // 2] = CENTRE_BIAS

    def config(self) -> Dict[str, float]:
        """The constructor's arguments (saved with the weights)."""
        return {"width": self.width, "kernel": self.kernel, "dilation": self.dilation, "scale": self.scale,
                "max_residual": self.max_residual}

    def forward(self, image: Tensor, warped_image: Tensor, warped_prob: Tensor) -> Tensor:
        return self.correct(self.pooled_input(image, warped_image, warped_prob), warped_prob)

    def small_size(self, h: int, w: int) -> Tuple[int, int]:
        """(h', w') at which the kernel-predicting CNN runs for an (h, w) map."""
        return max(1, math.ceil(h / self.scale)), max(1, math.ceil(w / self.scale))

    def pooled_input(self, image: Tensor, warped_image: Tensor, warped_prob: Tensor) -> Tensor:
        """The CNN's input (B, 7, h', w'): the current frame, its photometric residual against the warped key frame
        and the warped map (each centred), average-pooled to :meth:`small_size`. (Pooling is linear: the same
        pooled maps, up to float rounding, can be made from the pooled frames; the engine does so.)"""
        x = torch.cat([image - 0.5, image - warped_image, warped_prob - 0.5], dim=1)
        if self.scale > 1:
            x = F.adaptive_avg_pool2d(x, self.small_size(*warped_prob.shape[-2:]))
        return x

    def correct(self, x: Tensor, warped_prob: Tensor) -> Tensor:
        """Logits (B, 1, H, W) of ``warped_prob`` (B, 1, H, W) corrected with the kernels and the additive logit
        the CNN predicts from ``x`` (:meth:`pooled_input`)."""
        h, w = warped_prob.shape[-2:]
        out = self.predict(x)
        if self.scale > 1:
            out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
        return self.apply_kernels(out, warped_prob)

    def predict(self, x: Tensor) -> Tensor:
        """The CNN's output (B, k*k + 1, h', w') at the pooled size: the kernels' softmax logits, then the additive
        logit's pre-activation."""
        if self.channels_last:
            return self.head(self.features(x.contiguous(memory_format=torch.channels_last))).contiguous()
        return self.head(self.features(x))

    def apply_kernels(self, planes: Tensor, warped_prob: Tensor) -> Tensor:
        """Logits (B, 1, H, W): ``warped_prob``'s logit through each pixel's kernel, plus the bounded additive logit,
        from the CNN's output at the map's size, ``planes`` (B, k*k + 1, H, W)."""
        h, w = warped_prob.shape[-2:]
        taps = self.kernel * self.kernel
        weights = torch.softmax(planes[:, :taps], dim=1)  # (B, k*k, H, W)
        residual = self.max_residual * torch.tanh(planes[:, taps:] / self.max_residual)
        pad = self.dilation * (self.kernel // 2)
        logit = F.pad(prob_to_logit(warped_prob), (pad, pad, pad, pad), mode="replicate")
        # sum_t weights[t] * (the logit shifted to tap t), tap by tap on views of the padded map: the numbers of
        # F.unfold's patches times the weights summed over the taps, in the same order, without materialising
        # the k*k patches (at 360x640: 10 -> 2.5 ms); without autograd, accumulated in place (fused multiply-adds)
        in_place = not torch.is_grad_enabled()
        out = None
        for t in range(taps):
            dy, dx = divmod(t, self.kernel)
            shifted = logit[:, :, dy * self.dilation:dy * self.dilation + h, dx * self.dilation:dx * self.dilation + w]
            if out is None:
                out = weights[:, t:t + 1] * shifted
            elif in_place:
                out.addcmul_(weights[:, t:t + 1], shifted)
            else:
                out = out + weights[:, t:t + 1] * shifted
        return out + residual
