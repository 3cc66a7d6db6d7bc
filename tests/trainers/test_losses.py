"""Training losses against hand-computed values (paper Eq. 3-6, the official variant, Loss_Ngate)."""

from __future__ import annotations

import math

import pytest
import torch

from tests.numerics import U32
from trainers.losses import (
    delta_loss,
    gate_margin,
    gate_probability_loss,
    gate_target,
    mask_iou,
    ngate_loss,
    official_gate_loss,
    segmentation_accuracy,
    segmentation_loss,
    straight_through_gate,
)


def test_segmentation_loss_is_bce_of_the_sigmoid():
    logits = torch.tensor([0.0, math.log(3.0)]).view(1, 1, 1, 2)  # sigmoid: 0.5, 0.75
    label = torch.tensor([1, 0], dtype=torch.uint8).view(1, 1, 1, 2)
    expected = (math.log(2.0) + math.log(4.0)) / 2  # -log(0.5), -log(1 - 0.75)
    # float32: sigmoid (exp, add, divide: 4 u relative on p, i.e. 4 u absolute on log p), log (<= 1 ulp of
    # |log p| <= 1.39) and the mean of 2: within 8 u (4.8e-7) of the exact loss, so two float32 forms within 16 u
    assert float(segmentation_loss(logits, label)) == pytest.approx(expected, abs=8 * U32)
    assert float(segmentation_loss(logits, label)) == pytest.approx(
        float(torch.nn.functional.binary_cross_entropy(torch.sigmoid(logits), label.float())), abs=16 * U32)


def test_delta_loss_targets_the_resized_label_minus_the_previous_score():
    label = torch.zeros(1, 1, 4, 4)
    label[..., :2] = 1  # left half; bilinear 4x4 -> 2x2 samples columns 0.5 and 2.5 -> [[1, 0], [1, 0]]
    prev = torch.tensor([[0.5, 0.0], [0.0, 0.25]]).view(1, 1, 2, 2)
    delta = torch.tensor([[0.5, 0.0], [0.0, 0.0]]).view(1, 1, 2, 2)
    # target = [[0.5, 0], [1, -0.25]]; squared errors 0, 0, 1, 0.0625
    assert float(delta_loss(delta, label, prev)) == pytest.approx((1 + 0.0625) / 4)


def test_mask_iou_and_empty_masks():
    a = torch.zeros(3, 1, 2, 3)
    b = torch.zeros(3, 1, 2, 3)
    a[0, 0, 0, :2] = 1
    b[0, 0, 0, 1:] = 1
    b[0, 0, 1, 2] = 1  # inter 1, union 4
    b[2, 0, 0, 0] = 1  # one empty
    assert mask_iou(a, b).tolist() == pytest.approx([0.25, 0.0, 0.0])  # both empty (element 1) -> 0


def test_margin_schedule():
    assert gate_margin(1, 1.0, 120) == pytest.approx(1 / 120)
    assert gate_margin(60, 1.0, 120) == pytest.approx(0.5)
    assert gate_margin(120, 0.7, 120) == pytest.approx(0.7)
    assert gate_margin(200, 0.7, 120) == pytest.approx(0.7)
    assert gate_margin(3, 0.5, 0) == 0.5
    assert gate_target(torch.tensor([0.2, 0.9]), 0.5).tolist() == pytest.approx([0.5, 0.9])


def test_gate_probability_loss_paper_form():
    p = torch.tensor([0.2, 0.9], requires_grad=True)
    iou = torch.tensor([0.5, 0.3])
    # margin 0.4: targets [0.5, 0.4], gaps [0.3, 0.5] -> (0.09 + 0.25) / 2
    assert float(gate_probability_loss(p.detach(), iou, 0.4, 0.0)) == pytest.approx(0.17)
    # m2 = 0.35 bounds the first gap from below: (0.35^2 + 0.5^2) / 2, and no gradient inside the margin
    loss = gate_probability_loss(p, iou, 0.4, 0.35)
    assert float(loss.detach()) == pytest.approx((0.1225 + 0.25) / 2)
    loss.backward()
    assert p.grad.tolist() == pytest.approx([0.0, 0.5])  # d/dp (p - 0.4)^2 / 2 = p - 0.4
    # margin 0: P_target = IoU
    assert float(gate_probability_loss(p.detach(), iou, 0.0, 0.0)) == pytest.approx((0.09 + 0.36) / 2)


def test_official_gate_loss_dead_zone_on_both_channels():
    probs = torch.tensor([[0.2, 0.8], [0.9, 0.1]])
    iou = torch.tensor([0.5, 0.3])
    # |p - t| = 0.3, 0.3, 0.6, 0.6; minus m2 0.1 -> 0.2, 0.2, 0.5, 0.5; squares mean over 4
    assert float(official_gate_loss(probs, iou, 0.1)) == pytest.approx((0.04 + 0.04 + 0.25 + 0.25) / 4)
    # m2 = 0: equals (p_reuse - IoU)^2 averaged over the batch
    assert float(official_gate_loss(probs, iou, 0.0)) == pytest.approx((0.09 + 0.36) / 2)
    assert float(official_gate_loss(probs, iou, 0.7)) == 0.0


def test_ngate_loss():
    p = torch.tensor([[0.1, 0.3], [0.5, 0.7]])  # mean 0.4
    assert float(ngate_loss(p, 0.15)) == pytest.approx(0.0625)
    assert float(ngate_loss(p, 0.4)) == pytest.approx(0.0, abs=1e-12)


def test_straight_through_gate_hard_value_soft_gradient():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.3, 0.2]], requires_grad=True)
    probs = torch.softmax(logits, dim=1)
    gate, hard = straight_through_gate(probs)
    assert gate.tolist() == [1.0, 0.0, 1.0] and hard.tolist() == [1.0, 0.0, 1.0]
    weights = torch.tensor([1.0, -2.0, 0.5])
    (gate * weights).sum().backward()
    st_grad = logits.grad.clone()
    logits.grad = None
    (torch.softmax(logits, dim=1)[:, 0] * weights).sum().backward()
    assert torch.equal(st_grad, logits.grad)  # hard + p - p.detach() passes the gradient through p unchanged


def test_segmentation_accuracy():
    logits = torch.full((2, 1, 2, 2), -5.0)
    logits[0, 0, 0] = 5.0  # predicted: top row
    label = torch.zeros(2, 1, 2, 2)
    label[0, 0, :, 0] = 1  # left column: inter 1, union 3
    assert segmentation_accuracy(logits, label).tolist() == pytest.approx([1 / 3, 1.0])  # both empty -> 1
