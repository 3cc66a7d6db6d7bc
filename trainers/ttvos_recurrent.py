"""The recurrent training forward of TTVOS over a batch of clips, and its three losses (the official code's).

A sample is ``N`` frames of one object (label 1; 255 is ignored by the segmentation loss). Frame 0
initialises the state from its label; frames 1..N-1 run as at inference (backbone, template attention,
decoder), except that the state update takes the object's **softmax** (no aggregation: one object) and
nothing is detached: gradients flow through the mask history, the template and the kept /16 features across
all frames (full back-propagation through time). The decoder's two training heads run.

Losses (weights 1, 1, 1; summed), as the official trainer computes them:

* **segmentation**: NLL of the log-softmax over all ``B N`` frames (mean over the pixels that are not 255);
  frame 0's "prediction" is ``log(clamp([1 - y0, y0], 1e-7, 1 - 1e-7))``, a constant term;
* **temporal consistency** (``Diff``): for frames t >= 1 the head's estimate at /8 against
  ``T_t - E_{t-1}``, both resized bilinearly to /8: ``T_t = clamp([1 - y_t, y_t], 1e-7, 1 - 1e-7)`` the
  label and ``E_{t-1}`` the previous frame's softmax prediction (frame 0: the given label), not detached; MSE.
  The target lies in [-1, 1] with channels summing to 0. The official estimate is a softmax over the two
  channels, in (0, 1) and summing to 1, so it can never reach its target (``official_quirks``); by default the
  estimate is ``tanh`` of the head's output instead, which can;
* **template** (``Tmp``): BCE between the sigmoid of the template head on ``lt`` and the label resized to /8
  (nearest), over all ``N`` frames; frame 0's "prediction" is ``avg_pool2d(y0, 8)``, a constant term.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.ttvos import TTVOS

IGNORE = 255
CLAMP = 1e-7
TMP_STRIDE = 8


@dataclass(frozen=True)
class TTVOSLossOptions:
    """Which auxiliary losses run and how.

    Attributes:
        diff_loss: the temporal-consistency loss (official ``--DiffLoss``, on by default).
        tmp_loss: the template loss (official ``--TmpLoss``, on by default).
        official_quirks: the temporal-consistency estimate is the official softmax (which cannot fit its
            target) instead of tanh.
        weights: (segmentation, Diff, Tmp) weights, the official ``loss_W``.
    """

    diff_loss: bool = True
    tmp_loss: bool = True
    official_quirks: bool = False
    weights: tuple = (1.0, 1.0, 1.0)


def _pair(label: Tensor) -> Tensor:
    """(B, 1, H, W) 0/1 label -> clamped [1 - y, y] (B, 2, H, W)."""
    y = (label == 1).float().clamp(CLAMP, 1 - CLAMP)
    return torch.cat([1 - y, y], dim=1)


def _resize(x: Tensor, size, mode: str) -> Tensor:
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class TTVOSRecurrent(nn.Module):
    """Wraps a :class:`TTVOS` for training; ``forward`` returns the losses and statistics of a batch."""

    def __init__(self, model: TTVOS, options: TTVOSLossOptions = TTVOSLossOptions()):
        super().__init__()
        self.model = model
        self.options = options

    def forward(self, images: Tensor, labels: Tensor) -> Dict[str, Tensor]:
        """Args:
            images: (B, N, 3, H, W) normalised frames (:func:`models.ttvos.normalise_image`), H and W multiples of 16.
            labels: (B, N, 1, H, W) integer labels: 1 object, 0 background, 255 ignored.

        Returns:
            ``loss`` (the sum to minimise), ``seg``, ``diff``, ``tmp`` (each weighted term; 0 when off) and
            ``iou`` (mean IoU of the argmax over the tracked frames, detached).
        """
        opts, model = self.options, self.model
        batch, frames = images.shape[:2]
        assert frames >= 2 and labels.shape[:2] == (batch, frames)
        labels = labels.long()
        label0 = labels[:, 0]
        given = torch.cat([label0 != 1, label0 == 1], dim=1).float()
        feats = model.features(images[:, 0])
        state = model.init_state(feats, given[:, 1:2])
        logsegs: List[Tensor] = [_pair(label0).log()]
        diff_est: List[Tensor] = []
        previous: List[Tensor] = [given]
        tmp_maps: List[Tensor] = [F.avg_pool2d((label0 == 1).float(), TMP_STRIDE)]
        for t in range(1, frames):
            feats = model.features(images[:, t])
            out = model(feats, state, heads=True)
            prob = torch.softmax(out.logits, dim=1)
            logsegs.append(F.log_softmax(out.logits, dim=1))
            diff_est.append(torch.softmax(out.diff, dim=1) if opts.official_quirks else torch.tanh(out.diff))
            tmp_maps.append(out.tmp)
            if t < frames - 1:
                previous.append(prob)
            state = model.update(feats, prob, state, out.update_weight)

        weights = opts.weights
        logsegs_t = torch.stack(logsegs, dim=1)  # (B, N, 2, H, W)
        seg = weights[0] * F.nll_loss(logsegs_t.flatten(0, 1), labels.flatten(0, 1)[:, 0], ignore_index=IGNORE)
        zero = seg.new_zeros(())
        diff = tmp = zero
        if opts.diff_loss:
            est = torch.stack(diff_est, dim=1)  # (B, N-1, 2, h, w)
            h8, w8 = est.shape[-2:]
            target = _resize(_pair(labels[:, 1:].flatten(0, 1)), (h8, w8), "bilinear")
            prev = _resize(torch.stack(previous, dim=1).flatten(0, 1), (h8, w8), "bilinear")
            diff = weights[1] * F.mse_loss(est.flatten(0, 1), target - prev)
        if opts.tmp_loss:
            maps = torch.stack(tmp_maps, dim=1).flatten(0, 1)  # (B N, 1, h, w)
            small = _resize((labels.flatten(0, 1) == 1).float(), maps.shape[-2:], "nearest")
            tmp = weights[2] * F.binary_cross_entropy(maps, small)
        with torch.no_grad():
            pred = logsegs_t[:, 1:].argmax(dim=2) == 1
            gt = labels[:, 1:, 0] == 1
            valid = labels[:, 1:, 0] != IGNORE
            inter = (pred & gt & valid).flatten(2).sum(-1).float()
            union = ((pred | gt) & valid).flatten(2).sum(-1).float()
            iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union)).mean()
        return {"loss": seg + diff + tmp, "seg": seg.detach(), "diff": diff.detach(), "tmp": tmp.detach(),
                "iou": iou}
