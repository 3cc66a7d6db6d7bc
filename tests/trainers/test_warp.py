"""``train.py --stage warp-corrector``: the pairs it learns from, its loss and validation, and the run itself
(checkpoints, resuming, the weights file the warp path reads, one-line errors)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import train as train_cli
from dataset.davis import DAVISDataset
from dataset.synthetic import generate_davis2017
from lib.tools.checkpoint import load_warp_corrector
from models.warp_corrector import WarpCorrector
from tests.cli import call
from trainers.config import WarpTrainConfig
from trainers.warp import FrameStore, WarpPairs, corrector_loss, soften_mask, validate, validation_pairs

SIZE = (48, 80)


@pytest.fixture(scope="module")
def davis_root(tmp_path_factory):
    return generate_davis2017(tmp_path_factory.mktemp("davis"), seed=5, size=SIZE, num_train=3, num_val=1,
                              frames=(8, 10))


@pytest.fixture(scope="module")
def store(davis_root):
    ds = DAVISDataset(davis_root, year=2017, split="train")
    return FrameStore([ds.sequence(n) for n in ds.names], SIZE)


def test_pairs_are_fixed_by_seed_epoch_and_index(store):
    pairs = WarpPairs(store, max_distance=3, samples_per_epoch=6, seed=1)
    first = [pairs[i] for i in range(3)]
    again = WarpPairs(store, max_distance=3, samples_per_epoch=6, seed=1)
    for a, b in zip(first, (again[i] for i in range(3))):
        for key in a:
            assert torch.equal(a[key], b[key]), key
    pairs.set_epoch(2)
    assert any(not torch.equal(first[0][k], pairs[0][k]) for k in first[0])
    sample = first[0]
    assert sample["image"].shape == sample["warped_image"].shape == (3, *SIZE)
    assert sample["warped_prob"].shape == sample["target"].shape == (1, *SIZE)
    assert set(torch.unique(sample["target"]).tolist()) <= {0.0, 1.0}
    assert 0 <= float(sample["warped_prob"].min()) and float(sample["warped_prob"].max()) <= 1


def test_softened_masks_look_like_probabilities():
    mask = np.zeros((40, 40), np.uint8)
    mask[10:30, 10:30] = 1
    for seed in range(5):
        soft = soften_mask(mask, np.random.default_rng(seed))
        assert soft.dtype == np.float32 and 0 <= soft.min() and soft.max() <= 1
        assert soft[20, 20] > 0.9 and soft[0, 0] < 0.1
        assert ((soft > 0) & (soft < 1)).any()  # soft edges


def test_loss_prefers_the_target_and_validation_reports_each_refinement(store):
    target = torch.zeros(2, 1, 8, 8)
    target[:, :, 2:6, 2:6] = 1
    good, _ = corrector_loss(20 * (target - 0.5), target)
    bad, parts = corrector_loss(-20 * (target - 0.5), target)
    assert good < 0.05 < bad and set(parts) == {"bce", "soft_iou"}
    pairs = validation_pairs(store, max_distance=2)
    assert pairs and all(frame - key in (1, 2) for _, key, frame, _ in pairs)
    stats = validate(WarpCorrector(), store, pairs[:6], torch.device("cpu"))
    assert {"J_none", "J_guided", "J_learned", "J_none_d1"} <= set(stats)
    assert all(0 <= v <= 1 for v in stats.values())


def run_args(davis_root, *extra):
    return ["--stage", "warp-corrector", "--dset", "dv2017", "--davis-root", davis_root, "--size", *map(str, SIZE),
            "--samples-per-epoch", "8", "--batch-size", "4", "--workers", "0", "--dev", "cpu", *extra]


def test_a_run_trains_checkpoints_resumes_and_writes_the_weights(davis_root, tmp_path):
    name = "wc"
    names = DAVISDataset(davis_root, year=2017, split="train").names
    result = call(train_cli.main, *run_args(davis_root, "--name", name, "--epochs", "1", "--holdout", names[0]),
                  cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "held-out J none" in result.stdout
    run_dir = tmp_path / "runs" / name
    first = torch.load(run_dir / "checkpoints" / f"{name}_ep0001.pth", weights_only=True)
    assert first["kind"] == "warp-corrector" and first["epoch"] == 1 and "J_learned" in first["stats"]
    config = json.loads((run_dir / "checkpoints" / "config.json").read_text())
    assert config["holdout"] == [names[0]] and config["max_distance"] == WarpTrainConfig.max_distance
    result = call(train_cli.main, *run_args(davis_root, "--name", name, "--epochs", "2", "--holdout", names[0]),
                  cwd=tmp_path)
    assert result.returncode == 0 and "continuing at epoch 2" in result.stdout, result.stdout + result.stderr
    second = torch.load(run_dir / "checkpoints" / f"{name}_ep0002.pth", weights_only=True)
    assert any(not torch.equal(first["model"][k], second["model"][k]) for k in first["model"])
    corrector = load_warp_corrector(run_dir / "warp_corrector.pth")
    for key, value in corrector.state_dict().items():
        assert torch.equal(value, second["model"][key]), key
    assert "optimizer" not in torch.load(run_dir / "warp_corrector.pth", weights_only=True)


@pytest.mark.parametrize("extra, message", [
    (["--m1", "0.5"], "--m1: not a flag of --stage warp-corrector"),
    (["--official-quirks"], "--official-quirks: not a flag of --stage warp-corrector"),
    (["--dset", "ytvos2018"], "--dset must be one of dv2016, dv2017"),
    (["--max-distance", "0"], "--max-distance must be >= 1"),
])
def test_wrong_flags_are_one_line_errors(davis_root, tmp_path, extra, message):
    result = call(train_cli.main, *run_args(davis_root, *extra), cwd=tmp_path)
    assert result.returncode != 0 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_the_g_frtm_stage_refuses_warp_flags_and_keeps_its_defaults(tmp_path):
    result = call(train_cli.main, "--max-distance", "3", cwd=tmp_path)
    assert result.returncode != 0 and "--max-distance: not a flag of --stage gfrtm" in result.stderr
    args = train_cli.build_parser().parse_args([])
    cfg = train_cli.config_from_args(args)
    assert (cfg.name, cfg.dset, cfg.epochs, cfg.lr, cfg.lr_step, cfg.size, cfg.workers) == (
        "All_RN18_m1000_b8seq6", "all", 260, 5e-4, 127, (480, 854), 4)
    warp = train_cli.warp_config_from_args(train_cli.build_parser().parse_args(["--stage", "warp-corrector"]))
    assert (warp.name, warp.dset, warp.size, warp.epochs) == ("warp_corrector_dv2016", "dv2016", (240, 432), 10)
