"""Backbone pre-training (pretrain_backbone.py): data split, loss, export in torchvision format, resuming."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from base.errors import ConfigError, DatasetError
from lib.tools.checkpoint import build_backbone
from tests.cli import call
from tests.dataset.conftest import build_davis
from trainers.backbone_pretrain import (
    BACKBONE_FILE,
    BACKBONE_FP16_FILE,
    STATE_FILE,
    FgBgSegmenter,
    PretrainConfig,
    lr_factor,
    random_crop,
    run,
    segmentation_loss,
    split_names,
)

ROOT = Path(__file__).resolve().parents[2]
SIZE = (64, 96)


@pytest.fixture(scope="module")
def davis(tmp_path_factory) -> Path:
    return build_davis(tmp_path_factory.mktemp("pretrain") / "davis",
                       seqs=(("two", 2, 6), ("one", 1, 5), ("val", 1, 5)), train=("two", "one"))


def config(out: Path, davis: Path, **kwargs) -> PretrainConfig:
    values = dict(out=str(out), davis_root=str(davis), holdout=("two",), size=SIZE, batch_size=2, steps=4,
                  warmup=2, checkpoint_every=2, val_every=2)
    values.update(kwargs)
    return PretrainConfig(**values)


def test_split_names_and_errors(davis):
    assert split_names(str(davis), ("two",)) == (["one"], ["two"])
    with pytest.raises(DatasetError, match=r"\['val'\] are not in the DAVIS 2016 train split"):
        split_names(str(davis), ("val",))
    with pytest.raises(ConfigError, match="every sequence of the DAVIS 2016 train split is held out"):
        split_names(str(davis), ("one", "two"))


def test_loss_is_small_for_the_right_answer_and_large_for_the_wrong_one():
    target = torch.zeros(2, 1, 8, 8)
    target[:, :, 2:6, 2:6] = 1
    right = segmentation_loss((target * 2 - 1) * 20, target)
    wrong = segmentation_loss((1 - 2 * target) * 20, target)
    assert float(right) < 1e-3 and float(wrong) > 10


def test_random_crop_keeps_image_and_mask_aligned():
    rng = np.random.default_rng(0)
    image = np.zeros((80, 120, 3), np.uint8)
    mask = np.zeros((80, 120), np.uint8)
    image[20:50, 30:90] = 200
    mask[20:50, 30:90] = 1
    for _ in range(10):
        crop, label = random_crop(image, mask, SIZE, rng)
        assert crop.shape == (*SIZE, 3) and label.shape == SIZE
        bright = crop.mean(axis=2) > 100  # the jitter maps 0 to <= 20 and 200 to >= 140
        assert np.mean(bright == (label > 0)) > 0.97


def test_lr_schedule_warms_up_then_decays_to_one_percent():
    assert lr_factor(0, 100, 10) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10) == pytest.approx(1.0)
    assert lr_factor(10, 100, 10) == pytest.approx(1.0)
    assert lr_factor(100, 100, 10) == pytest.approx(0.01)


@pytest.mark.slow
def test_run_exports_a_torchvision_backbone_and_resumes(tmp_path, davis):
    torch.set_num_threads(1)
    out = tmp_path / "pre"
    logs = []
    stats = run(config(out, davis), log=logs.append)
    assert stats["steps"] == 4 and np.isfinite(stats["loss"]) and 0 <= stats["val_iou"] <= 1
    summary = json.loads((out / "summary.json").read_text())
    assert [h["step"] for h in summary["history"]] == [2, 4]
    fp32 = torch.load(out / BACKBONE_FILE, weights_only=True)
    fp16 = torch.load(out / BACKBONE_FP16_FILE, weights_only=True)
    assert set(fp32) == set(fp16) and "conv1.weight" in fp32 and not any(k.startswith("fc.") for k in fp32)
    assert fp16["conv1.weight"].dtype == torch.float16 and fp32["conv1.weight"].dtype == torch.float32
    # the backbone loads as --pretrained PATH, BatchNorm statistics included, and differs from the random draw
    net = build_backbone("resnet18", out / BACKBONE_FILE)
    for key, value in net.resnet.state_dict().items():
        assert torch.equal(value, fp32[key]), key
    random = FgBgSegmenter("resnet18", seed=0).resnet.state_dict()
    assert not torch.equal(random["bn1.running_mean"], fp32["bn1.running_mean"])
    assert not torch.equal(random["layer4.1.conv2.weight"], fp32["layer4.1.conv2.weight"])
    # more steps continue from the state file; a finished run has nothing to do
    state_step = torch.load(out / STATE_FILE, weights_only=False)["step"]
    assert state_step == 4
    logs.clear()
    run(config(out, davis, steps=6), log=logs.append)
    assert any("resumed" in m and "at step 4" in m for m in logs)
    assert torch.load(out / STATE_FILE, weights_only=False)["step"] == 6
    logs.clear()
    run(config(out, davis, steps=6), log=logs.append)
    assert any(m.startswith("nothing to do") for m in logs)
    with pytest.raises(ConfigError, match="started with other settings.*lr"):
        run(config(out, davis, steps=8, lr=5e-4), log=logs.append)


def test_cli_one_line_errors(tmp_path, davis):
    def cli(*args):
        import pretrain_backbone

        return call(pretrain_backbone.main, "--davis-root", davis, "--out", tmp_path / "o", *args)

    proc = cli("--holdout", "val")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "held-out sequences ['val']" in proc.stderr and "ImageSets/2016/train.txt" in proc.stderr
    proc = cli("--holdout", str(tmp_path / "missing.txt"))
    assert proc.returncode == 2 and "held-out sequence list not found" in proc.stderr


def test_paste_object_moves_the_mask_with_the_object():
    from trainers.backbone_pretrain import paste_object

    rng = np.random.default_rng(0)
    image = np.zeros((40, 60, 3), np.uint8)
    mask = np.zeros((40, 60), np.uint8)
    image[10:20, 15:35], mask[10:20, 15:35] = 200, 1
    background = np.full((48, 64, 3), 30, np.uint8)
    out, out_mask = paste_object(image, mask, background, rng)
    assert out.shape == (48, 64, 3) and out_mask.shape == (48, 64) and out_mask.sum() > 0
    np.testing.assert_array_equal(out[out_mask > 0], 200)  # the object's pixels where its mask is
    np.testing.assert_array_equal(out[out_mask == 0], 30)  # the background elsewhere


@pytest.mark.parametrize("source", ["davis", "duts", "mixed"])
def test_saliency_sources_train_and_validate_on_duts_te(davis, tmp_path, source):
    from tests.dataset.test_saliency import build_duts

    duts = build_duts(tmp_path / "duts")
    stats = run(config(tmp_path / "out", davis, source=source, saliency_root=str(duts), val_images=2),
                log=lambda m: None)
    assert stats["steps"] == 4 and 0 <= stats["saliency_val_iou"] <= 1 and 0 <= stats["val_iou"] <= 1
    history = json.loads((tmp_path / "out/summary.json").read_text())["history"]
    assert [h["step"] for h in history] == [2, 4] and all("saliency_val_iou" in h for h in history)
    build_backbone("resnet18", str(tmp_path / "out" / BACKBONE_FILE))
    if source != "davis":  # davis reads a saliency root for its DUTS-TE validation only
        with pytest.raises(ConfigError, match="needs --saliency-root"):
            config(tmp_path / "x", davis, source=source)


def test_linear_heads_give_one_logit_map_per_stage_and_train_every_stage(davis, tmp_path):
    net = FgBgSegmenter("resnet18", seed=0, head="linear")
    out = net(torch.zeros(2, 3, 64, 96))
    assert out.shape == (2, 3, 64, 96)
    loss = segmentation_loss(out, torch.zeros(2, 1, 64, 96))
    loss.backward()
    assert all(net.resnet.get_submodule(f"layer{i}")[0].conv1.weight.grad.abs().sum() > 0 for i in (1, 2, 3, 4))
    stats = run(config(tmp_path / "lin", davis, head="linear"), log=lambda m: None)
    assert stats["steps"] == 4 and 0 <= stats["val_iou"] <= 1
    with pytest.raises(ConfigError, match="--head"):
        config(tmp_path / "x", davis, head="deep")
