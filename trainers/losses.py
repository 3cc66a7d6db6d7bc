"""G-FRTM training losses (paper Eq. 3-6) and the official code's variants.

Per tracked frame t (losses are summed over the frames of a sample):

* segmentation: binary cross-entropy between sigmoid(logits) (B,1,H,W) and the binary label;
* delta (Eq. 3): mean squared error between the delta map (B,1,H16,W16) and
  (label bilinearly resized to H16xW16 - previous score map);
* gate probability (Eq. 4-5, the paper's form): m = m1 * min(epoch / ep_T, 1),
  P_target = max(m, IoU(label_t, label of the last computed frame)), loss = mean_b max(m2, |P_gate - P_target|)^2;
* gate probability as the official code computes it (``--official-quirks``): the margin m is never applied
  (the code's clamp is a no-op), t = [IoU, 1 - IoU], loss = mean over B x 2 of relu(|p - t| - m2)^2;
* Loss_Ngate (Table 2 ablation): (mean reuse probability over the batch and the tracked frames - R)^2.

P_gate is the soft reuse probability (softmax channel 0). The IoU of two empty masks is 0, as in the
official code (its NaN is replaced by 0).
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from models.refiner import resize


def segmentation_loss(logits: Tensor, label: Tensor) -> Tensor:
    """BCE(sigmoid(logits), label), mean over all pixels.

    Computed from the logits (``binary_cross_entropy_with_logits``): the same value as BCE on the sigmoid
    output, without its overflow for saturated logits, and safe under autocast (evaluated in float32).

    Args:
        logits: (B,1,H,W) full-resolution logits.
        label: (B,1,H,W) binary label, any dtype.
    """
    return F.binary_cross_entropy_with_logits(logits.float(), label.float())


def delta_loss(delta: Tensor, label: Tensor, prev_score16: Tensor) -> Tensor:
    """Eq. 3: MSE(delta, bilinear(label -> H16xW16) - prev_score16).

    Args:
        delta: (B,1,H16,W16) output of the delta-generator.
        label: (B,1,H,W) binary label of the current frame.
        prev_score16: (B,1,H16,W16) the carried previous score map. It never requires grad (the
            recurrent forward routes it by the hard gate decision, as the original), so the loss does not
            reach the gate through its own target; it is detached here all the same.
    """
    target = resize(label.float(), delta.shape[-2:]) - prev_score16.detach().float()
    return F.mse_loss(delta.float(), target)


def mask_iou(current: Tensor, previous: Tensor) -> Tensor:
    """IoU per batch element of two binary masks (B,1,H,W) (> 0.5 is foreground) -> (B,); 0 if both empty."""
    cur = (current > 0.5).flatten(1)
    prev = (previous > 0.5).flatten(1)
    inter = (cur & prev).sum(1).float()
    union = (cur | prev).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(union))


def gate_margin(epoch: int, m1: float, margin_epochs: int) -> float:
    """Eq. 4 margin m = m1 * min(epoch / ep_T, 1) for 1-based ``epoch``; m1 from the start if ep_T = 0."""
    if margin_epochs <= 0:
        return float(m1)
    return float(m1) * min(epoch / margin_epochs, 1.0)


def gate_target(iou: Tensor, margin: float) -> Tensor:
    """Eq. 4: P_target = max(m, IoU), (B,)."""
    return iou.clamp(min=margin)


def gate_probability_loss(p_reuse: Tensor, iou: Tensor, margin: float, m2: float) -> Tensor:
    """Paper Eq. 4-5: mean_b max(m2, |P_gate - max(m, IoU)|)^2.

    Args:
        p_reuse: (B,) soft reuse probability.
        iou: (B,) IoU of the current label with the last computed frame's label.
        margin: m of Eq. 4 (see :func:`gate_margin`).
        m2: lower bound of the gap (the loss is constant, without gradient, inside it).
    """
    gap = (p_reuse.float() - gate_target(iou.float(), margin)).abs()
    return gap.clamp(min=m2).pow(2).mean()


def official_gate_loss(probs: Tensor, iou: Tensor, m2: float) -> Tensor:
    """The official code's gate loss: mean over B x 2 of relu(|p - [IoU, 1 - IoU]| - m2)^2.

    Args:
        probs: (B,2) softmax of the gate logits (channel 0 = reuse).
        iou: (B,) IoU target.
        m2: dead zone on |p - t|.
    """
    iou = iou.float()
    target = torch.stack([iou, 1.0 - iou], dim=1)
    return F.relu((probs.float() - target).abs() - m2).pow(2).mean()


def ngate_loss(p_reuse: Tensor, target_rate: float) -> Tensor:
    """Loss_Ngate: (mean of the soft reuse probabilities - R)^2 over every element of ``p_reuse``.

    Args:
        p_reuse: soft reuse probabilities of all gate decisions considered together, e.g. (B, T-1).
        target_rate: R, the wanted fraction of gates on (reuse).
    """
    return (p_reuse.float().mean() - target_rate).pow(2)


def straight_through_gate(probs: Tensor) -> Tuple[Tensor, Tensor]:
    """Hard reuse decision with the gradient of the soft probability (official training gate).

    Args:
        probs: (B,2) softmax of the gate logits.
    Returns:
        ``gate`` (B,) whose value is 1.0 iff P(reuse) > 0.5 else 0.0 and whose gradient is that of P(reuse),
        and the detached hard decision (B,) (float 0/1).
    """
    p_reuse = probs[:, 0]
    hard = (p_reuse > 0.5).to(p_reuse.dtype).detach()
    return hard + (p_reuse - p_reuse.detach()), hard  # exactly 0/1: the bracket is exactly 0


def segmentation_accuracy(logits: Tensor, label: Tensor) -> Tensor:
    """IoU of (sigmoid(logits) > 0.5) with the label per element (B,); 1 when both are empty."""
    pred = (logits > 0).flatten(1)
    gt = (label > 0.5).flatten(1)
    inter = (pred & gt).sum(1).float()
    union = (pred | gt).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
