"""TTVOS's training forward: the official losses' frame-0 constants and normalisation, the ignored label, the
temporal-consistency loss that the official softmax cannot fit (and the default tanh can), gradients through
time into the template, and a clip that the losses really fit."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.ttvos import TTVOS
from trainers.ttvos_recurrent import CLAMP, TTVOSLossOptions, TTVOSRecurrent

H, W, N = 64, 96, 4


def clip(seed: int = 0, batch: int = 2):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, N, 3, H, W, generator=g)
    labels = torch.zeros(batch, N, 1, H, W, dtype=torch.long)
    for t in range(N):
        labels[:, t, :, 16:48, 20 + 4 * t:60 + 4 * t] = 1
        images[:, t, :, 16:48, 20 + 4 * t:60 + 4 * t] += 2.0  # a bright object that moves
    return images, labels


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return TTVOS("hrnetv2Sv1")


def test_frame_zero_terms_are_the_official_constants(model):
    """With all tracked frames ignored (255), the segmentation loss is frame 0's constant term alone."""
    images, labels = clip()
    labels[:, 1:] = 255
    out = TTVOSRecurrent(model, TTVOSLossOptions(diff_loss=False, tmp_loss=False))(images, labels)
    constant = -torch.tensor(1 - CLAMP).log().item()  # float32: 1 - 1e-7 rounds to 1 - 2^-23
    assert out["seg"].item() == pytest.approx(constant, rel=1e-6)
    assert out["diff"].item() == 0 and out["tmp"].item() == 0


def test_segmentation_loss_averages_every_frame_including_the_first(model):
    images, labels = clip()
    rec = TTVOSRecurrent(model, TTVOSLossOptions(diff_loss=False, tmp_loss=False))
    full = rec(images, labels)["seg"].item()
    # the same frames scored one by one: mean over all N frames of the per-frame mean NLL (equal pixel counts)
    with torch.no_grad():
        feats = model.features(images[:, 0])
        state = model.init_state(feats, (labels[:, 0] == 1).float())
        per_frame = [-torch.tensor(1 - CLAMP).log().item()]
        for t in range(1, N):
            f = model.features(images[:, t])
            o = model(f, state)
            per_frame.append(F.cross_entropy(o.logits, labels[:, t, 0]).item())
            state = model.update(f, torch.softmax(o.logits, 1), state, o.update_weight)
    assert full == pytest.approx(sum(per_frame) / N, rel=1e-5)


def test_the_official_temporal_loss_cannot_fit_its_target_and_the_default_can():
    """The target T_t - E_{t-1} has channels summing to 0; a softmax sums to 1, so its MSE against a target
    with channel sum 0 is at least 1/4 per pixel pair ((1 - 0)^2 / 2 / 2); tanh reaches the target."""
    target = torch.tensor([[-0.6, 0.6], [0.3, -0.3]]).view(2, 2, 1, 1)
    logits = torch.zeros(2, 2, 1, 1, requires_grad=True)
    for fit, bound in ((lambda x: torch.softmax(x, 1), 0.25), (torch.tanh, 1e-4)):
        x = logits.detach().clone().requires_grad_(True)
        opt = torch.optim.Adam([x], lr=0.1)
        for _ in range(500):
            opt.zero_grad()
            loss = F.mse_loss(fit(x), target)
            loss.backward()
            opt.step()
        if bound == 0.25:
            assert loss.item() >= 0.25 - 1e-6
        else:
            assert loss.item() < bound


def test_gradients_flow_through_time_into_the_template_and_the_finetuned_stage(model):
    images, labels = clip()
    model.zero_grad()
    model.train()
    out = TTVOSRecurrent(model)(images, labels)
    out["loss"].backward()
    model.eval()
    named = dict(model.named_parameters())
    for name in ("gcm.conv_key.0.weight", "gcq.blend.1.weight", "refine.cal_UpW.2.weight",
                 "refine.predictor_Diff.weight", "refine.predictor_Tmp.weight",
                 "backbone.stage4.0.branches.3.0.conv1.weight"):
        assert named[name].grad is not None and named[name].grad.abs().sum() > 0, name
    assert named["refine.deconv2.weight"].grad.abs().sum() > 0  # coarse reaches the logits through blend_s4
    model.zero_grad()


def test_a_few_steps_fit_one_clip():
    torch.manual_seed(0)
    net = TTVOS("hrnetv2Sv1")
    rec = TTVOSRecurrent(net)
    images, labels = clip(batch=1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    first = None
    for _ in range(15):
        opt.zero_grad()
        out = rec(images, labels)
        out["loss"].backward()
        opt.step()
        first = first if first is not None else out
    assert out["seg"] < 0.6 * first["seg"] and out["iou"] > first["iou"]
