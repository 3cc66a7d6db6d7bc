"""The recurrent training forward of G-FRTM over a batch of samples (spec 4.2).

A sample is ``T`` frames of one object. Frame 0 initialises, per batch element: the fixed target model
(cache or trained on the augmented first frame), the template (from the frame-0 features and the label
bilinearly resized to the stride-8 grid), the previous score (the label bilinearly resized to the stride-16
grid), the previous deep refined feature ``prev_x`` (refiner stages layer5 and layer4 on the target-model
score) and the previous deep backbone features.

Frames 1..T-1, all elements in parallel, no computation skipped:

1. full backbone; ``tplS`` = template matching against the previous score; gate logits -> softmax;
   g = straight-through hard decision (value 1 iff P(reuse) > 0.5, gradient of P(reuse));
2. delta = delta-generator(tplS); translated score = previous score + delta; current score s = target model;
3. routed by the hard decision (per element, no gradient to the gate, as the official per-sample branch):
   ``final`` = reuse ? translated : s; ``mixed`` (the carried score) = reuse ? previous score : s; deep
   backbone features = reuse ? previous : current. The carried score therefore never requires grad (it is a
   target-model score or the resized first label), so no loss back-propagates through its own target;
4. ``curr_x`` = deep refiner stages on (deep features, ``mixed``); x = g * translate(prev_x, delta) + (1 - g) *
   curr_x, the straight-through mix that gives the gate its gradient from the segmentation loss;
   logits = shallow refiner stages on (x, ``final``);
5. losses of the frame (:mod:`trainers.losses`), summed over frames (BPTT through prev_x, the scores, the
   template and the gate);
6. carry-over: previous score <- ``mixed``, previous deep features <- the ones used, previous label <- the
   label of the last *computed* frame; ``prev_x`` <- g ? prev_x : curr_x (the inference semantics: the deep
   feature of the last computed frame), or with ``official_quirks`` the original's inverted update
   ``prev_x <- g ? curr_x : prev_x`` (spec 6.1 item 1); both as straight-through mixes with g.

So the gate receives gradient from its own loss and from the later losses through the two mixes with g (x and
``prev_x``) only, in both modes: the official routing (training fixture README, behaviours 4, 6-8).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

from models.backbone import FeatureExtractor
from models.gfrtm import GFRTM
from models.refiner import resize
from trainers.losses import (
    delta_loss,
    gate_margin,
    gate_probability_loss,
    mask_iou,
    ngate_loss,
    official_gate_loss,
    segmentation_accuracy,
    segmentation_loss,
    straight_through_gate,
)
from trainers.target_models import FirstFrameTargetModels, SampleKey, apply_target_models

DEEP_KEYS = ("layer4", "layer5")


@dataclass(frozen=True)
class RecurrentOptions:
    """Loss and update settings of the recurrent forward (see :class:`trainers.config.TrainConfig`)."""

    gate_loss: str = "paper"
    m1: float = 1.0
    m2: float = 0.0
    margin_epochs: int = 120
    target_rate: Optional[float] = None
    official_quirks: bool = False
    amp: Optional[str] = None
    train_backbone: bool = False  # --backbone-lr: the features carry gradients to the backbone


def parse_meta(meta: str) -> SampleKey:
    """A sample's JSON meta string -> :class:`SampleKey`."""
    info = json.loads(meta)
    return SampleKey(str(info.get("dataset", "")), str(info["seq_name"]), int(info["obj_id"]),
                     int(info["frame0_id"]), bool(info.get("cache", True)))


def select(gate: Tensor, if_one: Tensor, if_zero: Tensor) -> Tensor:
    """gate * if_one + (1 - gate) * if_zero with gate (B,) broadcast over the other dims.

    With a straight-through gate the value is exactly one of the two and the gradient reaches the gate.
    """
    g = gate.view(-1, *([1] * (if_one.dim() - 1)))
    return g * if_one + (1 - g) * if_zero


def choose(hard: Tensor, if_one: Tensor, if_zero: Tensor) -> Tensor:
    """Per element ``if_one`` where ``hard`` (B,) is 1, else ``if_zero``: a routing without gradient to the gate."""
    return torch.where(hard.view(-1, *([1] * (if_one.dim() - 1))) > 0.5, if_one, if_zero)


def update_prev_x(prev_x: Tensor, curr_x: Tensor, gate: Tensor, inverted: bool = False) -> Tensor:
    """The deep refined feature kept for the next frame.

    Fixed (default): compute frames (gate 0) store ``curr_x``, reuse frames keep ``prev_x``, as at inference.
    ``inverted`` (official training code): compute frames keep ``prev_x``, reuse frames store ``curr_x``.
    """
    return select(gate, curr_x, prev_x) if inverted else select(gate, prev_x, curr_x)


class RecurrentTrainingModel(nn.Module):
    """Trainable G-FRTM plus the frozen backbone and the per-sample target models, for one training step.

    Only ``model``'s parameters are trained, and with ``options.train_backbone`` the backbone's weights (the
    target models' scores never carry a gradient to it). The backbone stays in eval mode; the learned modules stay
    in train mode (BatchNorm with batch statistics, as the official training). The gate's BatchNorm
    normalises a (B,16,4,4) map (after an adaptive 7x7 max-pool), so batch 1 works.

    Args:
        model: the learned modules (G-FRTM).
        backbone: frozen feature extractor for ``model.ftext``.
        target_models: provider of the first-frame target models.
        options: loss settings.
    """

    def __init__(self, model: GFRTM, backbone: FeatureExtractor, target_models: FirstFrameTargetModels,
                 options: RecurrentOptions):
        super().__init__()
        self.model = model
        self.backbone = backbone
        self.target_models = target_models
        self.options = options
        self.visuals: Dict[str, Tensor] = {}

    def _autocast(self, device: torch.device):
        if self.options.amp == "bf16":
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _features(self, image: Tensor) -> Dict[str, Tensor]:
        with torch.set_grad_enabled(self.options.train_backbone and torch.is_grad_enabled()), \
                self._autocast(image.device):
            return self.backbone(image)

    def _gate_term(self, probs: Tensor, iou: Tensor, margin: float) -> Optional[Tensor]:
        opts = self.options
        if opts.gate_loss == "ngate":
            return None
        if opts.official_quirks:
            return official_gate_loss(probs, iou, opts.m2)
        return gate_probability_loss(probs[:, 0], iou, margin, opts.m2)

    def forward(self, images: Tensor, labels: Tensor, metas: Sequence[str], epoch: int,
                keep_visuals: bool = False, trace: Optional[List[Dict[str, Tensor]]] = None) -> Dict[str, Tensor]:
        """One recurrent pass over a batch.

        Args:
            images: (B,T,3,H,W) uint8 frames, T >= 2, on the training device.
            labels: (B,T,1,H,W) binary labels of the object.
            metas: B JSON meta strings (``dataset``, ``seq_name``, ``obj_id``, ``frame0_id``, ``frames``).
            epoch: current epoch (1-based), for the margin schedule.
            keep_visuals: store first-element maps of the last frame in :attr:`visuals`.
            trace: if given, receives one dict of detached tensors for the first frame (``template``,
                ``label8``, ``prev_score``, ``tm_score``, ``prevX``) and one per tracked frame (``gate_logits``,
                ``gate_prob``, ``gate``, ``prev_score``, ``delta``, ``trans_score``, ``tm_score``,
                ``final_score``, ``carried_score``, ``logits``, ``curr_x`` (the deep refined feature computed on this
                frame), ``prevX`` (carried to the next frame),
                ``iou_target``, ``loss_seg``, ``loss_diff``, ``loss_gate``, ``loss``), named as in the official
                training fixture, for equivalence tests and debugging.

        Returns:
            ``loss``: the scalar to backpropagate, sum over the T-1 tracked frames of seg + delta + gate;
            detached statistics, each a per-frame mean: ``seg``, ``delta``, ``gate``, ``accuracy``
            (IoU of the thresholded output), ``reuse_rate`` (fraction of reuse decisions); ``cache_hits``
            (number of target models read from the cache), ``margin``; and per element and tracked frame
            (B,T-1): ``p_reuse``, ``reuse`` (hard decisions), ``iou_target`` (IoU with the last computed
            frame's label).
        """
        opts = self.options
        batch, frames = images.shape[:2]
        assert frames >= 2 and labels.shape[:2] == (batch, frames) and len(metas) == batch
        device = images.device
        image_size = images.shape[-2:]
        labels = labels.float()
        margin = gate_margin(epoch, opts.m1, opts.margin_epochs)

        feats = self._features(images[:, 0])
        target_models: List[nn.Module] = []
        hits = 0
        for b, meta in enumerate(metas):
            tm, hit = self.target_models.get(images[b, 0], labels[b, 0], parse_meta(meta))
            target_models.append(tm)
            hits += int(hit)
        score0 = apply_target_models(target_models, feats["layer4"])
        with self._autocast(device):
            mask8 = resize(labels[:, 0], feats["layer3"].shape[-2:]).to(feats["layer3"].dtype)
            template = self.model.Tmatching.Tgenerate(torch.cat([feats["layer3"], mask8], dim=1))
            prev_x = self.model.deep(score0, feats["layer5"], feats["layer4"])
        prev_score = resize(labels[:, 0], feats["layer4"].shape[-2:])
        prev_deep = {k: feats[k] for k in DEEP_KEYS}
        prev_label = labels[:, 0]
        if trace is not None:
            trace.append({k: v.detach() for k, v in (("label8", mask8), ("template", template),
                                                     ("prev_score", prev_score), ("tm_score", score0),
                                                     ("prevX", prev_x))})

        total = images.new_zeros((), dtype=torch.float32)
        zero = torch.zeros((), device=device)
        sums = {"seg": zero, "delta": zero, "gate": zero, "accuracy": zero}
        p_reuse, reuse, iou_targets = [], [], []
        for t in range(1, frames):
            label = labels[:, t]
            feats = self._features(images[:, t])
            score = apply_target_models(target_models, feats["layer4"])
            with self._autocast(device):
                tpl_s = self.model.match(feats["layer3"], prev_score, template)
                gate_logits = self.model.gate_logits(tpl_s)
                delta = self.model.delta(tpl_s)
            probs = torch.softmax(gate_logits.float(), dim=1)
            gate, hard = straight_through_gate(probs)
            translated = prev_score + delta.float()
            final = choose(hard, translated, score)
            mixed = choose(hard, prev_score, score)
            deep = {k: choose(hard, prev_deep[k], feats[k]) for k in DEEP_KEYS}
            with self._autocast(device):
                curr_x = self.model.deep(mixed, deep["layer5"], deep["layer4"])
                x = select(gate, self.model.translate(prev_x, delta), curr_x)
                logits = self.model.shallow(x, final, feats["layer3"], feats["layer2"], image_size)

            iou = mask_iou(label, prev_label)
            seg = segmentation_loss(logits, label)
            dlt = delta_loss(delta, label, prev_score)
            gate_term = self._gate_term(probs, iou, margin)
            frame_loss = seg + dlt + (gate_term if gate_term is not None else 0.0)
            total = total + frame_loss
            sums["seg"] = sums["seg"] + seg.detach()
            sums["delta"] = sums["delta"] + dlt.detach()
            if gate_term is not None:
                sums["gate"] = sums["gate"] + gate_term.detach()
            sums["accuracy"] = sums["accuracy"] + segmentation_accuracy(logits.detach(), label).mean()
            p_reuse.append(probs[:, 0])
            reuse.append(hard)
            iou_targets.append(iou)

            if keep_visuals and t == frames - 1:
                self.visuals = {
                    "input": images[0, t].detach().float().cpu() / 255.0,
                    "gt": label[0].detach().cpu(),
                    "output": torch.sigmoid(logits[0].detach().float()).cpu(),
                    "delta": delta[0].detach().float().cpu(),
                    "score_target": score[0].detach().cpu(),
                    "score_translated": translated[0].detach().cpu(),
                    "score_final": final[0].detach().float().cpu(),
                }

            prev_x = update_prev_x(prev_x, curr_x, gate, inverted=opts.official_quirks)
            if trace is not None:
                frame = {"gate_logits": gate_logits, "gate_prob": probs, "gate": hard, "prev_score": prev_score,
                         "delta": delta, "trans_score": translated, "tm_score": score, "final_score": final,
                         "carried_score": mixed, "logits": logits, "curr_x": curr_x, "prevX": prev_x,
                         "iou_target": iou,
                         "loss_seg": seg, "loss_diff": dlt, "loss_gate": gate_term if gate_term is not None else zero,
                         "loss": frame_loss}
                trace.append({k: v.detach() for k, v in frame.items()})
            prev_score = mixed
            prev_deep = deep
            prev_label = select(hard, prev_label, label)

        tracked = frames - 1
        p_all = torch.stack(p_reuse, dim=1)
        if opts.gate_loss == "ngate":
            term = ngate_loss(p_all, float(opts.target_rate))
            total = total + tracked * term  # the same weight as a per-frame loss summed over the frames
            sums["gate"] = term.detach() * tracked
        reuse_all = torch.stack(reuse, dim=1)
        out = {k: (v / tracked).cpu() for k, v in sums.items()}
        out.update(loss=total, reuse_rate=reuse_all.mean().detach().cpu(), cache_hits=torch.tensor(hits),
                   margin=torch.tensor(margin), p_reuse=p_all.detach(), reuse=reuse_all,
                   iou_target=torch.stack(iou_targets, dim=1))
        return out
