"""``train.py --stage ttvos``: a run on generated videos writes resumable checkpoints and a model that --model runs;
a resumed run ends with the weights of an uninterrupted one; flags of other stages are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import train as train_cli
from lib.tools.checkpoint import load_inference_model
from models.ttvos import TTVOS
from tests.cli import call

COMMON = ("--stage", "ttvos", "--dset", "synthetic", "--size", "64", "96", "--batch-size", "2", "--seq-len", "3",
          "--max-iters-per-epoch", "2", "--dev", "cpu", "--workers", "0")


def run(tmp_path: Path, name: str, *extra: str, synthetic: Path):
    folder = tmp_path / name
    proc = call(train_cli.main, *COMMON, "--name", name, "--checkpoints", str(folder / "ck"), "--tensorboard",
                str(folder / "tb"), "--synthetic-root", str(synthetic), "--data-cache", str(folder / "dc"), *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder, proc


def test_a_run_writes_checkpoints_a_model_and_resumes_exactly(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # runs/<name>/ttvos.pth goes under the working directory
    synthetic = tmp_path / "synthetic"
    folder, proc = run(tmp_path, "whole", "--epochs", "2", synthetic=synthetic)
    assert "epoch 2/2: loss" in proc.stdout and sorted(p.name for p in (folder / "ck").glob("*.pth")) == [
        "whole_ep0001.pth", "whole_ep0002.pth"]
    config = json.loads((folder / "ck" / "config.json").read_text())
    assert config["backbone"] == "hrnetv2Sv1" and config["train_backbone"] == "all"
    loaded = load_inference_model(tmp_path / "runs" / "whole" / "ttvos.pth")
    assert isinstance(loaded.model, TTVOS) and loaded.size == (64, 96)
    raw = torch.load(folder / "ck" / "whole_ep0002.pth", weights_only=True)
    assert raw["kind"] == "ttvos" and raw["epoch"] == 2 and "optimizer" in raw

    part, _ = run(tmp_path, "part", "--epochs", "1", synthetic=synthetic)
    _, proc = run(tmp_path, "part", "--epochs", "2", synthetic=synthetic)
    assert "resumed from" in proc.stdout
    a = torch.load(folder / "ck" / "whole_ep0002.pth", weights_only=True)["model"]
    b = torch.load(part / "ck" / "part_ep0002.pth", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    _, proc = run(tmp_path, "part", "--epochs", "2", synthetic=synthetic)
    assert "nothing to do" in proc.stdout


def test_finetune_mode_freezes_all_but_the_last_stage(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from trainers.config import TTVOSTrainConfig
    from trainers.ttvos import TTVOSTrainer

    trainer = TTVOSTrainer(TTVOSTrainConfig(name="ft", train_backbone="finetune", resume=False), log=lambda m: None)
    trainable = {n.split(".")[1] for n, p in trainer.model.named_parameters() if p.requires_grad and
                 n.startswith("backbone.")}
    assert trainable == {"stage4"}
    assert all(p.requires_grad for n, p in trainer.model.named_parameters() if not n.startswith("backbone."))


@pytest.mark.parametrize("args, message", [
    (("--stage", "ttvos", "--m1", "0.5"), "--m1: not a flag of --stage ttvos"),
    (("--stage", "gfrtm", "--tps", "0.2"), "--tps: not a flag of --stage gfrtm"),
    (("--stage", "warp-corrector", "--seq-len", "3"), "--seq-len: not a flag of --stage warp-corrector"),
    (("--stage", "ttvos", "--size", "100", "96"), "multiples of 16"),
    (("--stage", "ttvos", "--ttvos-backbone", "vgg"), "--ttvos-backbone 'vgg'"),
    (("--stage", "ttvos", "--dset", "all"), "--stage ttvos trains on"),
])
def test_bad_flags_stop_with_one_line(args, message):
    proc = call(train_cli.main, *args, "--dev", "cpu")
    assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr
