"""G-TTVOS's training forward: TTVOS frozen and untouched, the straight-through gate routes and mixes, the losses
reach exactly the reuse modules, and a computed frame carries the state while a reused one keeps it."""

from __future__ import annotations

import pytest
import torch

from models.gttvos import GTTVOS, PLACEMENTS
from tests.trainers.test_ttvos_recurrent import N, clip
from trainers.gttvos_recurrent import GTTVOSLossOptions, GTTVOSRecurrent
from trainers.losses import mask_iou

REUSE_MODULES = ("Tmatching", "convGS", "Convert_Diff", "Diff_process")


def frozen(placement: str, reuse_logit: float = 0.0) -> GTTVOS:
    torch.manual_seed(0)
    model = GTTVOS(placement=placement)
    for name, child in model.named_children():
        if name not in REUSE_MODULES:
            child.requires_grad_(False)
    model.train()
    for name, child in model.named_children():
        if name not in REUSE_MODULES:
            child.eval()
    with torch.no_grad():
        model.convGS[4].weight.zero_()
        model.convGS[4].bias.copy_(torch.tensor([reuse_logit, 0.0]))
    return model


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_gradients_reach_the_reuse_modules_only(placement):
    model = frozen(placement, reuse_logit=0.0)  # P(reuse) 0.5 exactly: hard decision compute
    images, labels = clip()
    out = GTTVOSRecurrent(model, GTTVOSLossOptions(m1=0.0))(images, labels, epoch=1)
    out["loss"].backward()
    grads = {name.split(".")[0] for name, p in model.named_parameters()
             if p.grad is not None and p.grad.abs().sum() > 0}
    assert grads and grads <= set(REUSE_MODULES)
    assert "Diff_process" in grads and "Convert_Diff" in grads and "convGS" in grads
    assert all(p.grad is None for name, p in model.named_parameters() if name.split(".")[0] not in REUSE_MODULES)
    assert torch.isfinite(out["loss"]) and out["p_reuse"].shape == (2, N - 1)


def test_forced_compute_mixes_to_the_full_path_and_forced_reuse_to_the_reuse_path():
    images, labels = clip()
    compute = GTTVOSRecurrent(frozen("frame", reuse_logit=-20.0), GTTVOSLossOptions(m1=0.0, reuse_weight=0.0))
    out_c = compute(images, labels, epoch=1)
    assert out_c["reuse_rate"] == 0
    # every frame computed: the gate's target is the IoU with the previous frame's label
    expected = torch.stack([mask_iou((labels[:, t] == 1).float(), (labels[:, t - 1] == 1).float())
                            for t in range(1, N)], dim=1)
    assert torch.allclose(out_c["iou_target"], expected)
    reuse = GTTVOSRecurrent(frozen("frame", reuse_logit=20.0), GTTVOSLossOptions(m1=0.0, reuse_weight=1.0))
    out_r = reuse(images, labels, epoch=1)
    assert out_r["reuse_rate"] == 1
    # every frame reused: the last computed frame stays frame 0, and the mixed output is the reuse path's
    expected = torch.stack([mask_iou((labels[:, t] == 1).float(), (labels[:, 0] == 1).float())
                            for t in range(1, N)], dim=1)
    assert torch.allclose(out_r["iou_target"], expected)
    assert out_r["seg"] == pytest.approx(out_r["reuse"].item(), rel=1e-6)
    assert out_r["iou"] == pytest.approx(out_r["reuse_iou"].item(), rel=1e-6)


def test_the_paper_margin_raises_the_gate_target():
    images, labels = clip()
    model = frozen("frame", reuse_logit=-20.0)  # P(reuse) ~ 0: the gate loss is the target squared
    plain = GTTVOSRecurrent(model, GTTVOSLossOptions(m1=0.0))(images, labels, epoch=1)["gate"]
    margin = GTTVOSRecurrent(model, GTTVOSLossOptions(m1=1.0, margin_epochs=1))(images, labels, epoch=1)["gate"]
    assert margin.item() == pytest.approx(1.0, rel=1e-5) and plain.item() < margin.item()


def test_training_steps_lower_the_reuse_paths_loss():
    torch.manual_seed(0)
    model = frozen("frame", reuse_logit=20.0)
    images, labels = clip()
    recurrent = GTTVOSRecurrent(model, GTTVOSLossOptions(m1=0.0))
    optimizer = torch.optim.Adam(model.reuse_parameters(), lr=3e-3)
    before = {k: v.clone() for k, v in model.state_dict().items() if k.split(".")[0] not in REUSE_MODULES}
    losses = []
    for _ in range(12):
        optimizer.zero_grad()
        out = recurrent(images, labels, epoch=1)
        out["loss"].backward()
        optimizer.step()
        losses.append(out["reuse"].item())
    assert losses[-1] < 0.8 * losses[0]
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # TTVOS untouched (BN statistics included)
