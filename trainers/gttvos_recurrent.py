"""The recurrent training forward of G-TTVOS: the reuse modules learn on a trained, frozen TTVOS.

A sample is ``N`` frames of one object (label 1; 255 is ignored). Frame 0 starts the TTVOS state from its label
and the reuse state (:meth:`models.gttvos.GTTVOS.init_reuse`). Frames 1..N-1, all elements in parallel, nothing
skipped (as G-FRTM's training, :mod:`trainers.recurrent`):

1. TTVOS's full path without gradient (its weights are the base network's and stay as they are);
2. the dissimilarity ``D`` against the last computed frame, the gate logits -> softmax; g = the straight-through
   hard decision (value 1 iff P(reuse) > 0.5, gradient of P(reuse));
3. the reuse path: delta = ``Convert_Diff(D)``, the translated decoder state, its logits;
4. logits = g * reuse logits + (1 - g) * full logits (the straight-through mix that gives the gate its gradient
   from the segmentation loss; with placement ``frame`` the last layer is linear, so this equals the last
   layer on the mixed states);
5. losses of the frame, summed over the frames:

   * segmentation: TTVOS's NLL of the log-softmax of the mixed logits;
   * reuse (``reuse_weight``, default 1; 0 = the paper's terms alone): the same loss on the reuse path's logits on
     every frame. The paper's terms train the translator only on frames the gate reuses; with the base network
     frozen, this term trains it on every frame (see docs/gttvos.md);
   * delta (paper Eq. 3): MSE between the delta and (label - the last computed frame's probability), both
     pooled to /8 as TTVOS pools its masks;
   * gate (paper Eq. 4-5 with the margin schedule, :func:`trainers.losses.gate_probability_loss`; the official
     code's form with ``official_quirks``): the target is max(m, IoU(label, label of the last computed frame));

6. carry-over, per element and by the hard decision (no gradient to the gate): a computed frame updates the
   TTVOS state with its softmax (TTVOS's training update) and becomes the reuse state's last computed frame
   (decoder state, pooled probability, stem features and template, label); a reused frame leaves both as they
   were, as at inference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.gttvos import GTTVOS, ReuseState
from models.ttvos import TTVOSState, pool_mask
from trainers.losses import gate_margin, gate_probability_loss, mask_iou, official_gate_loss, straight_through_gate

IGNORE = 255


@dataclass(frozen=True)
class GTTVOSLossOptions:
    """Loss settings (see :class:`trainers.config.GTTVOSTrainConfig`)."""

    m1: float = 1.0
    m2: float = 0.0
    margin_epochs: int = 120
    reuse_weight: float = 1.0
    official_quirks: bool = False


def _where(hard: Tensor, if_one: Tensor, if_zero: Tensor) -> Tensor:
    return torch.where(hard.view(-1, *([1] * (if_one.dim() - 1))) > 0.5, if_one, if_zero)


def _nll(logits: Tensor, label: Tensor) -> Tensor:
    return F.nll_loss(F.log_softmax(logits.float(), dim=1), label[:, 0].long(), ignore_index=IGNORE)


class GTTVOSRecurrent(nn.Module):
    """Wraps a :class:`GTTVOS` for training its reuse modules; ``forward`` returns the losses and statistics.

    TTVOS's parameters must not require grad (the trainer freezes them) and stay in eval mode; the reuse modules
    train (the gate's BatchNorm with batch statistics, as G-FRTM's training)."""

    def __init__(self, model: GTTVOS, options: GTTVOSLossOptions = GTTVOSLossOptions()):
        super().__init__()
        self.model = model
        self.options = options

    def forward(self, images: Tensor, labels: Tensor, epoch: int) -> Dict[str, Tensor]:
        """Args:
            images: (B, N, 3, H, W) normalised frames, H and W multiples of 16.
            labels: (B, N, 1, H, W) integer labels: 1 object, 0 background, 255 ignored.
            epoch: the current epoch (1-based), for the margin schedule.

        Returns:
            ``loss`` (to minimise); detached per-frame means ``seg``, ``reuse``, ``delta``, ``gate``, ``iou`` (of
            the mixed output), ``reuse_iou`` (of the reuse path), ``reuse_rate``; ``margin``; per element and
            tracked frame (B, N-1) ``p_reuse`` and ``iou_target``.
        """
        opts, model = self.options, self.model
        batch, frames = images.shape[:2]
        assert frames >= 2 and labels.shape[:2] == (batch, frames)
        labels = labels.long()
        fg = (labels == 1).float()
        margin = gate_margin(epoch, opts.m1, opts.margin_epochs)
        with torch.no_grad():
            feats = model.features(images[:, 0])
            state = model.init_state(feats, fg[:, 0])
        reuse = model.init_reuse(feats, fg[:, 0], state)
        prev_label = fg[:, 0]
        zero = images.new_zeros((), dtype=torch.float32)
        total = zero
        sums = {k: zero for k in ("seg", "reuse", "delta", "gate", "iou", "reuse_iou")}
        p_reuse: List[Tensor] = []
        decisions: List[Tensor] = []
        targets: List[Tensor] = []
        for t in range(1, frames):
            label, y = labels[:, t], fg[:, t]
            with torch.no_grad():
                feats = model.features(images[:, t])
                full = model(feats, state)
            dissimilarity = model.match(feats, state, reuse)
            probs = torch.softmax(model.gate_logits(dissimilarity).float(), dim=1)
            gate, hard = straight_through_gate(probs)
            out, delta = model.reuse(feats, reuse, dissimilarity)
            g = gate.view(-1, 1, 1, 1)
            logits = g * out.logits.float() + (1 - g) * full.logits.float()

            seg = _nll(logits, label)
            reuse_seg = _nll(out.logits, label) if opts.reuse_weight > 0 else zero
            target = pool_mask(y) - reuse.prev_prob8
            dlt = F.mse_loss(delta.float(), target)
            iou = mask_iou(y, prev_label)
            gate_term = (official_gate_loss(probs, iou, opts.m2) if opts.official_quirks
                         else gate_probability_loss(probs[:, 0], iou, margin, opts.m2))
            frame_loss = seg + opts.reuse_weight * reuse_seg + dlt + gate_term
            total = total + frame_loss
            with torch.no_grad():
                frame_stats = {"seg": seg, "reuse": reuse_seg, "delta": dlt, "gate": gate_term,
                               "iou": mask_iou((logits[:, 1:2] > logits[:, 0:1]).float(), y).mean(),
                               "reuse_iou": mask_iou((out.logits[:, 1:2] > out.logits[:, 0:1]).float(), y).mean()}
                sums = {k: sums[k] + v.float() for k, v in frame_stats.items()}
            p_reuse.append(probs[:, 0].detach())
            decisions.append(hard)
            targets.append(iou)

            with torch.no_grad():  # carry-over by the hard decision
                prob = torch.softmax(full.logits, dim=1)
                updated = model.update(feats, prob, state, full.update_weight)
                state = TTVOSState(*(_where(hard, old, new) for old, new in
                                     ((state.prev_seg, updated.prev_seg), (state.template, updated.template),
                                      (state.prev_s16, updated.prev_s16))))
                prev_label = _where(hard, prev_label, y)
            after = model.computed(reuse, full, prob[:, 1:2], feats)  # (the new template learns through time)
            reuse = ReuseState(*(None if old is None else _where(hard, old, new) for old, new in
                                 ((reuse.template, after.template), (reuse.prev_prob8, after.prev_prob8),
                                  (reuse.decoder, after.decoder), (reuse.stem8, after.stem8))))

        tracked = frames - 1
        out_stats = {k: (v / tracked).detach().cpu() for k, v in sums.items()}
        decided = torch.stack(decisions, dim=1)
        out_stats.update(loss=total, reuse_rate=decided.mean().cpu(), margin=torch.tensor(margin),
                         p_reuse=torch.stack(p_reuse, dim=1), iou_target=torch.stack(targets, dim=1))
        return out_stats
