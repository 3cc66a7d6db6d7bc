"""``train.py --stage tile-gate``: per-tile losses, SpVOS's objective, the validation's decision statistics, and
the run itself (collection cache, checkpoints, resuming, the weights the sparse path reads, one-line errors)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import train as train_cli
from dataset.davis import DAVISDataset
from dataset.synthetic import generate_davis2017
from lib.tools.checkpoint import load_tile_gate
from models.tile_gate import TileGate, gumbel_sigmoid
from tests.cli import call
from tests.numerics import gamma
from trainers.tile_gate import change_rule, decision_stats, gate_loss, oracle, tile_bce


def test_tile_bce_is_the_mean_bce_of_each_tile_partial_ones_included():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 1, 20, 28, generator=g)
    target = (torch.rand(20, 28, generator=g) > 0.5).float()
    out = tile_bce(logits, target, 16)
    assert out.shape == (1, 1, 2, 2)
    full = F.binary_cross_entropy_with_logits(logits[0, 0], target, reduction="none")
    # the same elementwise BCE, then two float32 means of n >= 0 terms in different orders: within
    # 2 gamma(n + 1) mean of each other (Higham 3.1; the division adds the 1)
    for got, part in ((out[0, 0, 0, 0], full[:16, :16]), (out[0, 0, 1, 1], full[16:, 16:])):  # a 4x12 partial tile
        ref = part.mean()
        assert abs(float(got) - float(ref)) <= 2 * gamma(part.numel() + 1) * float(ref)


def test_the_objective_prefers_computing_where_it_helps_and_holds_the_fraction():
    dense = torch.tensor([[[[0.1, 0.5]]]])  # computing helps in tile 0, hurts in tile 1
    reuse = torch.tensor([[[[0.9, 0.2]]]])
    logits = torch.zeros(1, 1, 1, 2, requires_grad=True)
    gate_loss(logits, dense, reuse, target=0.5, weight=0.0, norm=1.0,
              generator=torch.Generator().manual_seed(0))["loss"].backward()
    assert logits.grad[0, 0, 0, 0] < 0 < logits.grad[0, 0, 0, 1]  # descent raises tile 0's logit, lowers tile 1's
    high = torch.full((1, 1, 1, 2), 5.0, requires_grad=True)
    parts = gate_loss(high, dense, dense, target=0.1, weight=1.0, norm=1.0, generator=torch.Generator().manual_seed(0))
    parts["loss"].backward()
    assert parts["fraction"] > 0.5 and (high.grad > 0).all()  # the sparsity loss pulls an all-compute gate down
    samples = gumbel_sigmoid(torch.zeros(20000), generator=torch.Generator().manual_seed(1))
    assert abs(float((samples > 0.5).float().mean()) - 0.5) < 0.02  # logit 0: compute half the time


def test_decision_statistics_oracle_and_change_rule():
    dense = torch.tensor([[[[0.1, 0.2, 0.3, 0.4]]]])
    reuse = torch.tensor([[[[0.5, 0.2, 0.2, 1.4]]]])  # gains 0.4, 0, -0.1, 1.0
    best = oracle(dense, reuse, 0.5)
    assert best.tolist() == [[[[True, False, False, True]]]]
    stats = decision_stats(best, dense, reuse)
    assert stats == pytest.approx({"fraction": 0.5, "captured": 1.0, "loss": (0.1 + 0.2 + 0.2 + 0.4) / 4})
    assert decision_stats(torch.zeros_like(best), dense, reuse)["captured"] == 0
    features = torch.zeros(1, 5, 1, 3)
    features[0, 0] = torch.tensor([0.0, 0.05, 0.0])  # mean change
    features[0, 3] = torch.tensor([1.0, 0.0, 0.4])  # foreground fraction: the third tile holds a boundary
    assert change_rule(features).tolist() == [[[[False, True, True]]]]


SIZE = (64, 96)


@pytest.fixture(scope="module")
def davis_root(tmp_path_factory):
    return generate_davis2017(tmp_path_factory.mktemp("davis"), seed=4, size=SIZE, num_train=3, num_val=1,
                              frames=(5, 6))


def run_args(davis_root, *extra):
    return ["--stage", "tile-gate", "--dset", "dv2017", "--davis-root", davis_root, "--size", *map(str, SIZE),
            "--sparse-tile", "32", "--dev", "cpu", "--batch-size", "4", *extra]


@pytest.mark.slow
def test_a_run_collects_once_trains_resumes_and_writes_the_weights(davis_root, tmp_path):
    names = DAVISDataset(davis_root, year=2017, split="train").names
    args = run_args(davis_root, "--name", "tg", "--holdout", names[0])
    result = call(train_cli.main, *args, "--epochs", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("collected") == 2 and "held out: learned computes" in result.stdout
    run_dir = tmp_path / "runs" / "tg"
    data = torch.load(run_dir / "tiles_train.pt", weights_only=True)
    n = len(data["features"])
    assert n > 0 and data["features"].shape[1:] == (5, 2, 3) and data["dense"].shape == (n, 1, 2, 3)
    assert data["meta"]["tile"] == 32 and data["meta"]["sequences"] == names[1:]
    result = call(train_cli.main, *args, "--epochs", "2", cwd=tmp_path)
    assert result.returncode == 0 and "continuing at epoch 2" in result.stdout, result.stdout + result.stderr
    assert "collected" not in result.stdout  # read from the cache
    gate = load_tile_gate(run_dir / "tile_gate.pth")
    assert isinstance(gate, TileGate) and gate.tile == 32
    second = torch.load(run_dir / "checkpoints" / "tg_ep0002.pth", weights_only=True)
    assert second["kind"] == "tile-gate" and "learned_captured" in second["stats"]
    for key, value in gate.state_dict().items():
        assert torch.equal(value, second["model"][key]), key


@pytest.mark.parametrize("extra, message", [
    (["--lr-step", "3"], "--lr-step: not a flag of --stage tile-gate"),
    (["--max-distance", "2"], "--max-distance: not a flag of --stage tile-gate"),
    (["--sparsity-target", "1.5"], "--sparsity-target must be in (0, 1)"),
    (["--sparse-tile", "12"], "--sparse-tile must be a positive multiple of 8"),
])
def test_wrong_flags_are_one_line_errors(davis_root, tmp_path, extra, message):
    result = call(train_cli.main, *run_args(davis_root, *extra), cwd=tmp_path)
    assert result.returncode != 0 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_other_stages_refuse_its_flags(tmp_path):
    result = call(train_cli.main, "--model", "x.pth", cwd=tmp_path)
    assert result.returncode != 0 and "--model: not a flag of --stage gfrtm" in result.stderr
    result = call(train_cli.main, "--stage", "warp-corrector", "--sparsity-target", "0.2", cwd=tmp_path)
    assert result.returncode != 0 and "--sparsity-target: not a flag of --stage warp-corrector" in result.stderr
