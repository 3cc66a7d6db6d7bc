"""train.py flags -> TrainConfig: defaults, --official-quirks, validation, JSON round trip."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from base.errors import ConfigError
from trainers.config import TrainConfig

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def train_cli():
    spec = importlib.util.spec_from_file_location("train_cli", ROOT / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _config(train_cli, *argv) -> TrainConfig:
    return train_cli.config_from_args(train_cli.build_parser().parse_args(list(argv)))


def test_original_command_and_defaults(train_cli):
    cfg = _config(train_cli, "--name", "RUN", "--ftext", "resnet18", "--dset", "all", "--dev", "cpu", "--m1", "1.0",
                  "--m2", "0")
    assert (cfg.name, cfg.ftext, cfg.dset, cfg.device, cfg.m1, cfg.m2) == ("RUN", "resnet18", "all", "cpu", 1.0, 0.0)
    assert (cfg.epochs, cfg.batch_size, cfg.seq_len, cfg.size, cfg.margin_epochs) == (260, 8, 6, (480, 854), 120)
    assert (cfg.lr, cfg.lr_step, cfg.lr_gamma, cfg.sampling, cfg.gate_loss) == (5e-4, 127, 0.1, "temporal", "paper")
    assert cfg.resume and not cfg.official_quirks and cfg.pretrained == "imagenet" and cfg.amp is None
    assert cfg.checkpoints == "runs/RUN/checkpoints" and cfg.tensorboard == "runs/RUN/tensorboard"
    assert cfg.tmcache == "runs/RUN/tmcache" and cfg.synthetic_root is None
    assert cfg.checkpoint_path(7) == Path("runs/RUN/checkpoints/RUN_ep0007.pth")


def test_official_quirks_switch_sampling_unless_given(train_cli):
    assert _config(train_cli, "--official-quirks").sampling == "official"
    assert _config(train_cli, "--official-quirks", "--sampling", "temporal").sampling == "temporal"
    assert _config(train_cli, "--sampling", "official").sampling == "official"


def test_aliases_paths_and_flags(train_cli):
    cfg = _config(train_cli, "--name", "x", "--dset", "yt2018", "--no-resume", "--marginEp", "40", "--initPth",
                  "a.pth", "--size", "240", "432", "--checkpoints", "/c", "--gate-loss", "ngate", "--target-rate",
                  "0.3", "--amp", "bf16", "--max-iters-per-epoch", "5")
    assert (cfg.dset, cfg.resume, cfg.margin_epochs, cfg.init_pth, cfg.size) == ("ytvos2018", False, 40, "a.pth",
                                                                                 (240, 432))
    assert (cfg.checkpoints, cfg.gate_loss, cfg.target_rate, cfg.amp, cfg.max_iters_per_epoch) == (
        "/c", "ngate", 0.3, "bf16", 5)
    assert _config(train_cli, "--name", "s", "--dset", "synthetic").synthetic_root == "runs/s/synthetic"


@pytest.mark.parametrize("argv, message", [
    (["--gate-loss", "ngate"], "needs --target-rate"),
    (["--target-rate", "0.2"], "only applies to --gate-loss ngate"),
    (["--seq-len", "1"], "--seq-len must be >= 2"),
    (["--size", "16", "100"], "--size"),
    (["--size", "32", "32", "--batch-size", "1"], "BatchNorm"),
    (["--m1", "1.5"], "--m1"),
    (["--name", "a/b"], "run name"),
    (["--epochs", "0"], "--epochs"),
])
def test_invalid_settings(train_cli, argv, message):
    with pytest.raises(ConfigError, match=message):
        _config(train_cli, "--dev", "cpu", *argv)


def test_json_round_trip_and_differences(train_cli):
    cfg = _config(train_cli, "--name", "x", "--size", "64", "112", "--synthetic-size", "64", "112", "--dset",
                  "synthetic")
    saved = json.loads(json.dumps(cfg.to_dict()))
    assert TrainConfig.from_dict(saved) == cfg
    assert cfg.differences(saved) == {}
    saved["batch_size"] = 3
    assert cfg.differences(saved) == {"batch_size": (3, 8)}
    with pytest.raises(ConfigError, match="unknown training config keys: bogus"):
        TrainConfig.from_dict({**saved, "bogus": 1})
