"""`python train.py` end to end on tiny synthetic data: checkpoints that evaluate.py loads, TensorBoard logs,
determinism with --seed, resuming after a kill, --official-quirks / bf16, one-line errors."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import evaluate as evaluate_cli
import train as train_cli
from base.errors import CheckpointError, ConfigError
from dataset.training import prepare_synthetic_davis
from lib.tools.checkpoint import build_model_from_checkpoint
from tests.cli import call
from tests.numerics import BF16_ROUNDINGS_LOSS, BF16_UNIT, gamma, gamma_probabilistic

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--size", "64", "112", "--synthetic-size", "64", "112"]
COMMON = ["--dset", "synthetic", "--dev", "cpu", "--pretrained", "none", "--workers", "0", "--batch-size", "2",
          "--seq-len", "3", "--max-iters-per-epoch", "2", *TINY]


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    return prepare_synthetic_davis(tmp_path_factory.mktemp("synthetic") / "davis", size=(64, 112), seed=0)


def train(cwd: Path, *args: str, env: dict = None, expect: int = 0) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == expect, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def run_args(synthetic_root: Path, name: str = "ref", epochs: int = 2) -> list:
    return ["--name", name, "--synthetic-root", str(synthetic_root), "--epochs", str(epochs), *COMMON]


def model_state(path: Path) -> dict:
    return torch.load(path, weights_only=True)["model"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def reference(synthetic_root, tmp_path_factory):
    """An uninterrupted 2-epoch run (2 iterations per epoch); returns its working folder and output."""
    cwd = tmp_path_factory.mktemp("reference")
    proc = train(cwd, *run_args(synthetic_root))
    return cwd, proc


@pytest.mark.slow
def test_smoke_run_writes_checkpoints_logs_and_evaluates(reference, synthetic_root, tmp_path):
    cwd, proc = reference
    ckpt_dir = cwd / "runs/ref/checkpoints"
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["config.json", "ref_ep0001.pth", "ref_ep0002.pth"]
    config = json.loads((ckpt_dir / "config.json").read_text())
    assert config["size"] == [64, 112] and config["seq_len"] == 3 and config["sampling"] == "temporal"
    assert "epoch 2/2: loss" in proc.stdout and "s/it" in proc.stdout
    raw = torch.load(ckpt_dir / "ref_ep0002.pth", weights_only=True)
    assert raw["epoch"] == 2 and raw["scheduler"]["last_epoch"] == 2 and len(raw["optimizer"]["param_groups"]) == 4
    stats = raw["stats"]
    assert stats["iterations"] == 2 and 0 <= stats["reuse_rate"] <= 1 and stats["tmcache_lookups"] == 4
    # the loss is summed over the 2 tracked frames; the components are per-frame means. All terms are positive
    # float32/float64 sums over 2 iterations x 2 frames x 3 losses in different orders: within gamma(12) of the
    # exact value each (tests/numerics.py); gamma(64) leaves room for the averaging over iterations
    assert stats["loss"] == pytest.approx(2 * (stats["seg"] + stats["delta"] + stats["gate"]), rel=gamma(64))
    assert any((cwd / "runs/ref/tmcache").rglob("*.layer4.pth"))

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(cwd / "runs/ref/tensorboard"), size_guidance={"images": 0}).Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"loss/seg", "loss/delta", "loss/gate", "train/accuracy", "train/reuse_rate", "train/lr",
            "train/tmcache_hit_rate"} <= scalars
    assert [e.step for e in events.Scalars("loss/seg")] == [1, 2]
    assert {"images/input", "images/gt", "images/output", "images/delta", "images/score_final"} <= set(
        events.Tags()["images"])

    model, report = build_model_from_checkpoint(ckpt_dir / "ref_ep0002.pth")
    assert model.ftext == "resnet18" and "189 keys" in report
    out = tmp_path / "eval"
    proc = call(evaluate_cli.main, "--model", ckpt_dir / "ref_ep0001.pth", "--dset", "dv2017val", "--davis-root",
                synthetic_root, "--sequences", "synth-val-00", "--pretrained", "none", "--dev", "cpu", "--TH", "0.7",
                "--no-flops", "--out", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = json.loads((out / "summary.json").read_text())["runs"][0]
    assert run["frames"] > 0 and 0 <= run["J&F-Mean"] <= 1


@pytest.mark.slow
def test_same_seed_gives_identical_weights(reference, synthetic_root, tmp_path):
    cwd, _ = reference
    train(tmp_path, *run_args(synthetic_root))
    assert_same_weights(model_state(tmp_path / "runs/ref/checkpoints/ref_ep0002.pth"),
                        model_state(cwd / "runs/ref/checkpoints/ref_ep0002.pth"))


@pytest.mark.slow
def test_resume_after_a_kill_mid_epoch(reference, synthetic_root, tmp_path, monkeypatch):
    ref_cwd, _ = reference
    args = run_args(synthetic_root)
    train(tmp_path, *args, env={"REUSE_VOS_TRAIN_EXIT_AT": "2:1"}, expect=75)  # killed inside epoch 2
    ckpts = tmp_path / "runs/ref/checkpoints"
    assert (ckpts / "ref_ep0001.pth").is_file() and not (ckpts / "ref_ep0002.pth").exists()

    # what a resumed run starts from: epoch 2, with exactly the optimizer state of the epoch-1 checkpoint
    spec = importlib.util.spec_from_file_location("train_cli", ROOT / "train.py")
    train_cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_cli)
    from trainers.loop import Trainer

    monkeypatch.chdir(tmp_path)
    trainer = Trainer(train_cli.config_from_args(train_cli.build_parser().parse_args(args)), log=lambda m: None)
    saved = torch.load(ckpts / "ref_ep0001.pth", weights_only=True)
    assert trainer.start_epoch == 2 and trainer.resumed_from.resolve() == ckpts / "ref_ep0001.pth"
    restored = trainer.optimizer.state_dict()
    assert restored["param_groups"] == saved["optimizer"]["param_groups"]
    assert restored["state"].keys() == saved["optimizer"]["state"].keys()
    for index, state in saved["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(restored["state"][index][name], value), (index, name)
    assert trainer.scheduler.state_dict() == saved["scheduler"]

    proc = train(tmp_path, *args)
    assert "continuing at epoch 2" in proc.stdout and "epoch 1/2: loss" not in proc.stdout
    # the resumed run ends exactly where the uninterrupted one did
    assert_same_weights(model_state(ckpts / "ref_ep0002.pth"),
                        model_state(ref_cwd / "runs/ref/checkpoints/ref_ep0002.pth"))
    proc = train(tmp_path, *args)  # nothing left to do
    assert "already finished" in proc.stdout


@pytest.mark.slow
def test_official_quirks_bf16_without_cache(synthetic_root, tmp_path):
    """--amp bf16 through the CLI, against the same run in float32: the epoch's loss within the bf16 bound of
    tests/trainers/test_recurrent.py (where a no-op autocast is caught by the activations' dtype)."""
    args = [*run_args(synthetic_root, name="quirks", epochs=1), "--official-quirks", "--tmcache-mode", "off",
            "--m2", "0.1", "--max-iters-per-epoch", "1"]
    proc = train(tmp_path, *args, "--amp", "bf16")
    config = json.loads((tmp_path / "runs/quirks/checkpoints/config.json").read_text())
    assert config["official_quirks"] and config["sampling"] == "official" and config["amp"] == "bf16"
    assert not (tmp_path / "runs/quirks/tmcache").exists()
    assert "target-model cache hits 0/2" in proc.stdout
    build_model_from_checkpoint(tmp_path / "runs/quirks/checkpoints/quirks_ep0001.pth")
    (tmp_path / "f32").mkdir()
    reference = train(tmp_path / "f32", *args)
    loss16, loss32 = (float(re.search(r"epoch 1/1: loss ([0-9.]+)", p.stdout).group(1)) for p in (proc, reference))
    # + 1e-4: the printed losses' 4 decimals
    assert abs(loss16 - loss32) <= gamma_probabilistic(BF16_ROUNDINGS_LOSS, BF16_UNIT) * loss32 + 1e-4


@pytest.mark.parametrize("args, message", [
    (["--gate-loss", "ngate"], "--target-rate"),
    (["--dset", "dv2017", "--davis-root", "/nonexistent/davis"], "/nonexistent/davis"),
    (["--initPth", "/nonexistent/frtm.pth", "--dset", "synthetic"], "frtm.pth"),
])
def test_errors_are_one_line(synthetic_root, tmp_path, args, message):
    proc = call(train_cli.main, "--dev", "cpu", "--pretrained", "none", "--synthetic-root", synthetic_root, *TINY,
                *args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and message in proc.stderr
    assert proc.stderr.strip().count("\n") == 0


@pytest.mark.slow
def test_duts_clips_stage(tmp_path):
    """--dset duts: synthetic clips of a saliency set, no target-model cache writes, a loadable checkpoint."""
    from tests.dataset.test_saliency import build_duts

    root = build_duts(tmp_path / "duts")
    proc = train(tmp_path, "--name", "syn", "--dset", "duts", "--saliency-root", str(root), "--dev", "cpu",
                 "--pretrained", "none", "--workers", "0", "--batch-size", "2", "--seq-len", "3", "--size", "64",
                 "112", "--epochs", "1", "--max-iters-per-epoch", "2", "--clips-per-epoch", "4")
    assert "DUTS-TR: 3 images, 4 synthetic clips/epoch of 3 frames at 64x112" in proc.stdout
    assert "target-model cache hits 0/4" in proc.stdout and not (tmp_path / "runs/syn/tmcache").exists()
    build_model_from_checkpoint(tmp_path / "runs/syn/checkpoints/syn_ep0001.pth")
    proc = train(tmp_path, "--name", "nosal", "--dset", "duts", "--dev", "cpu", "--pretrained", "none",
                 "--saliency-root", str(tmp_path / "missing"), expect=2)
    assert "saliency root not found" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_train_only_the_gate_from_a_trained_model(reference, synthetic_root, tmp_path):
    """--initPth MODEL --train-only convGS: the gate's weights move, every other parameter and BatchNorm buffer
    keeps the model's values (the frozen modules run in eval mode)."""
    ref_cwd, _ = reference
    init = ref_cwd / "runs/ref/checkpoints/ref_ep0002.pth"
    train(tmp_path, *run_args(synthetic_root, name="gate", epochs=1), "--initPth", str(init), "--train-only",
          "convGS", "--m2", "0.0")
    before, after = model_state(init), model_state(tmp_path / "runs/gate/checkpoints/gate_ep0001.pth")
    gate = [k for k in before if k.startswith("convGS.") and k.endswith("weight")]
    assert gate and any(not torch.equal(before[k], after[k]) for k in gate)
    for key in before:
        if not key.startswith("convGS."):
            assert torch.equal(before[key], after[key]), key
    proc = train(tmp_path, *run_args(synthetic_root, name="bad", epochs=1), "--train-only", "gate", expect=2)
    assert "--train-only gate: choose from convGS, Tmatching, Convert_Diff, refiner" in proc.stderr


@pytest.mark.slow
def test_backbone_lr_finetunes_the_backbone_resumably(synthetic_root, tmp_path):
    """--backbone-lr: the ResNet's weights learn (BatchNorm statistics do not), the checkpoints carry them, a killed
    run resumes to exactly the uninterrupted run's model and backbone, the target-model cache is off, and the
    checkpoint evaluates, bundles (float16) and serves as --pretrained with its own backbone."""
    from lib.tools.checkpoint import BACKBONE_KEY, build_backbone, bundle, load_inference_model, read_backbone_file

    args = [*run_args(synthetic_root, name="ft"), "--backbone-lr", "1e-3"]
    (tmp_path / "whole").mkdir()
    proc = train(tmp_path / "whole", *args)
    assert "target-model cache off" in proc.stdout and not (tmp_path / "whole/runs/ft/tmcache").exists()
    final = torch.load(tmp_path / "whole/runs/ft/checkpoints/ft_ep0002.pth", weights_only=True)
    tuned, start = final[BACKBONE_KEY], build_backbone("resnet18", "none").resnet.state_dict()
    assert final["backbone_source"] == "fine-tuned from none at lr 0.001"
    assert [g["name"] for g in final["optimizer"]["param_groups"]][-1] == "backbone"
    assert final["optimizer"]["param_groups"][-1]["lr"] == 1e-3
    weights = [k for k in start if k.endswith("conv1.weight")]
    assert weights and all(not torch.equal(tuned[k], start[k]) for k in weights)
    for key in start:
        if "running_" in key or "num_batches" in key:
            assert torch.equal(tuned[key], start[key]), key

    train(tmp_path, *args, env={"REUSE_VOS_TRAIN_EXIT_AT": "2:1"}, expect=75)
    proc = train(tmp_path, *args)
    assert "continuing at epoch 2" in proc.stdout
    resumed = torch.load(tmp_path / "runs/ft/checkpoints/ft_ep0002.pth", weights_only=True)
    assert_same_weights(resumed["model"], final["model"])
    assert_same_weights(resumed[BACKBONE_KEY], tuned)

    ckpt = tmp_path / "whole/runs/ft/checkpoints/ft_ep0002.pth"
    loaded = load_inference_model(ckpt)
    assert loaded.pretrained == "embedded"
    assert torch.equal(loaded.backbone.resnet.state_dict()["conv1.weight"], tuned["conv1.weight"])
    out = bundle(ckpt, tmp_path / "bundle.pth", size=(64, 112))
    raw = torch.load(out, weights_only=True)
    assert raw[BACKBONE_KEY]["conv1.weight"].dtype == torch.float16
    assert torch.equal(raw[BACKBONE_KEY]["conv1.weight"], tuned["conv1.weight"].half())
    assert raw["backbone_source"] == "fine-tuned from none at lr 0.001"
    torch.save(start, tmp_path / "resnet.pth")
    with pytest.raises(ConfigError, match="carries its own"):
        bundle(ckpt, tmp_path / "bundle2.pth", backbone=tmp_path / "resnet.pth")
    assert torch.equal(read_backbone_file(ckpt)["conv1.weight"], tuned["conv1.weight"])
    assert torch.equal(read_backbone_file(out)["conv1.weight"], tuned["conv1.weight"].half().float())
    with pytest.raises(CheckpointError, match="without backbone weights"):
        read_backbone_file(_model_file_without_backbone(ckpt, tmp_path / "plain.pth"))
    # the next stage (a Syn then DAVIS recipe) starts from the fine-tuned backbone
    proc = train(tmp_path, *run_args(synthetic_root, name="next", epochs=1), "--pretrained", str(ckpt),
                 "--initPth", str(ckpt))
    assert "epoch 1/1: loss" in proc.stdout

    proc = train(tmp_path, *run_args(synthetic_root, name="bad", epochs=1), "--backbone-lr", "1e-3",
                 "--train-only", "convGS", expect=2)
    assert "does not combine with --train-only" in proc.stderr and "Traceback" not in proc.stderr


def _model_file_without_backbone(ckpt: Path, out: Path) -> Path:
    from lib.tools.checkpoint import BACKBONE_KEY

    raw = torch.load(ckpt, weights_only=True)
    raw.pop(BACKBONE_KEY)
    torch.save(raw, out)
    return out
