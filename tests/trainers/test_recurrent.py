"""The recurrent training forward: paths, carry-over, gradients, batch 1, bf16."""

from __future__ import annotations

import pytest
import torch

from tests.equivalence.test_training import zero_gradient_names
from tests.numerics import BF16_ROUNDINGS_GRAD, BF16_ROUNDINGS_LOSS, BF16_UNIT, gamma, gamma_probabilistic
from trainers.losses import mask_iou
from trainers.recurrent import parse_meta, select, update_prev_x

# frame 0: box A; frames 1, 2: box B (IoU(A, B) = 1/3); frame 3: box C (IoU(B, C) = 0)
BOX_A = (10, 30, 20, 50)
BOX_B = (10, 30, 35, 65)
BOX_C = (40, 60, 70, 100)


def _force_gate(net, reuse: bool) -> None:
    """Gate logits independent of the input: a constant reuse (or compute) decision."""
    last = net.model.convGS[4]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([20.0, -20.0] if reuse else [-20.0, 20.0]))


def _images(batch: int, frames: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, frames, 3, 64, 112), dtype=torch.uint8, generator=gen)


def test_select_and_prev_x_update_rules():
    prev = torch.full((2, 1, 1, 1), 1.0)
    curr = torch.full((2, 1, 1, 1), 2.0)
    gate = torch.tensor([1.0, 0.0])  # element 0 reuses, element 1 computes
    assert select(gate, prev, curr).flatten().tolist() == [1.0, 2.0]
    # fixed (inference semantics): reuse keeps prev, compute stores the current deep feature
    assert update_prev_x(prev, curr, gate).flatten().tolist() == [1.0, 2.0]
    # official training code: inverted
    assert update_prev_x(prev, curr, gate, inverted=True).flatten().tolist() == [2.0, 1.0]


def test_parse_meta():
    key = parse_meta('{"dataset": "dv2017", "seq_name": "bear", "obj_id": 2, "frame0_id": 7, "frames": ["x"]}')
    assert (key.dataset, key.seq_name, key.obj_id, key.frame0_id) == ("dv2017", "bear", 2, 7)


@pytest.mark.parametrize("reuse", [True, False])
def test_forced_paths_and_carry_over(make_recurrent, box_labels, sample_metas, reuse):
    net = make_recurrent()
    _force_gate(net, reuse)
    labels = box_labels(2, [BOX_A, BOX_B, BOX_B, BOX_C])
    out = net(_images(2, 4), labels, sample_metas(2), epoch=1, keep_visuals=True)
    iou_ab = float(mask_iou(labels[:1, 1], labels[:1, 0]))
    assert iou_ab == pytest.approx(1 / 3)
    assert out["reuse"].shape == (2, 3) and out["reuse"].eq(1.0 if reuse else 0.0).all()
    assert float(out["reuse_rate"]) == (1.0 if reuse else 0.0)
    # P_target is measured against the label of the last *computed* frame
    iou_bc = float(mask_iou(labels[:1, 3], labels[:1, 2]))
    expected = [iou_ab, iou_ab, 0.0] if reuse else [iou_ab, 1.0, iou_bc]
    assert out["iou_target"][0].tolist() == pytest.approx(expected)
    vis = net.visuals
    # the score fed to the shallow stages is exactly the translated score (reuse) or the target model's
    assert torch.equal(vis["score_final"], vis["score_translated" if reuse else "score_target"])
    assert set(vis) >= {"input", "gt", "output", "delta"} and vis["output"].shape == (1, 64, 112)


def test_gradients_reach_every_learned_parameter_only(make_recurrent, box_labels, sample_metas):
    net = make_recurrent()
    out = net(_images(2, 3), box_labels(2, [BOX_A, BOX_B, BOX_B]), sample_metas(2), epoch=3)
    assert torch.isfinite(out["loss"]) and out["loss"].requires_grad
    total = out["seg"] + out["delta"] + out["gate"]
    # summed over 2 frames; both sides are float32 sums of 6 positive terms in different orders, each within
    # gamma(6) of the exact value relative (tests/numerics.py)
    assert float(out["loss"].detach()) == pytest.approx(2 * float(total), rel=2 * gamma(6))
    assert float(out["margin"]) == pytest.approx(3 / 120)
    out["loss"].backward()
    missing = [n for n, p in net.model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []
    assert all(p.grad is None and not p.requires_grad for p in net.backbone.parameters())
    # target models are not parameters of the trained module
    assert {id(p) for p in net.parameters() if p.requires_grad} == {id(p) for p in net.model.parameters()}
    assert int(out["cache_hits"]) == 0
    again = net(_images(2, 3), box_labels(2, [BOX_A, BOX_B, BOX_B]), sample_metas(2), epoch=3)
    assert int(again["cache_hits"]) == 2


def test_gate_loss_reaches_the_gate_through_the_straight_through_estimator(make_recurrent, box_labels,
                                                                           sample_metas):
    net = make_recurrent(gate_loss="ngate", target_rate=0.5)
    out = net(_images(1, 3), box_labels(1, [BOX_A, BOX_B, BOX_B]), sample_metas(1), epoch=1)
    p = out["p_reuse"]
    # per-frame mean. The mean of n float32 values is off by gamma(n + 1) p_mean absolute on each side; the
    # difference to 0.5 cancels, so relative to (p_mean - 0.5) that is amplified by p_mean / |p_mean - 0.5|,
    # and squaring doubles it (plus 2 roundings)
    p_mean = float(p.mean())
    rel = 2 * 2 * gamma(p.numel() + 1) * p_mean / abs(p_mean - 0.5) + gamma(2)
    assert float(out["gate"]) == pytest.approx(float((p.mean() - 0.5) ** 2), rel=rel)
    out["loss"].backward()
    assert net.model.convGS[4].bias.grad.abs().sum() > 0


def test_batch_one_and_learned_modules_in_train_mode(make_recurrent, box_labels, sample_metas):
    net = make_recurrent(official_quirks=True, m2=0.1)
    assert net.model.training and not net.backbone.training
    bn = net.model.convGS[2]
    before = bn.running_mean.clone()
    out = net(_images(1, 3, seed=4), box_labels(1, [BOX_A, BOX_B, BOX_C]), sample_metas(1), epoch=1)
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    assert not torch.equal(before, bn.running_mean)  # batch statistics were used and tracked




def test_bf16_autocast_against_float32(make_recurrent, box_labels, sample_metas):
    runs = {}
    for amp in (None, "bf16"):  # the float32 run fills the target-model cache; the bf16 run reads the same models
        net = make_recurrent(amp=amp)
        _force_gate(net, False)  # the same path in both
        dtypes = set()
        for module in net.model.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.register_forward_hook(lambda m, i, o, seen=dtypes: seen.add(o.dtype))
        out = net(_images(2, 3), box_labels(2, [BOX_A, BOX_B, BOX_B]), sample_metas(2), epoch=1)
        out["loss"].backward()
        assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])
        grads = {n: p.grad.double() for n, p in net.model.named_parameters()
                 if p.grad is not None and n not in zero_gradient_names([n])}
        runs[amp] = out, grads, dtypes
    (out32, grads32, dtypes32), (out16, grads16, dtypes16) = runs[None], runs["bf16"]
    assert int(out16["cache_hits"]) == 2  # the same target models
    assert dtypes32 == {torch.float32} and torch.bfloat16 in dtypes16
    loss32, loss16 = float(out32["loss"].detach()), float(out16["loss"].detach())
    assert abs(loss16 - loss32) <= gamma_probabilistic(BF16_ROUNDINGS_LOSS, BF16_UNIT) * abs(loss32)
    g32 = torch.cat([grads32[n].flatten() for n in grads32])
    g16 = torch.cat([grads16[n].flatten() for n in grads32])
    assert (g16 - g32).norm() <= gamma_probabilistic(BF16_ROUNDINGS_GRAD, BF16_UNIT) * g32.norm()
