"""``train.py --stage gttvos``: a run on generated videos from a TTVOS file trains the reuse modules only, writes
resumable checkpoints and a model that --model runs; a resumed run ends where an uninterrupted one does; bad
flags stop with one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import train as train_cli
from lib.tools.checkpoint import load_inference_model, save_ttvos
from models.gttvos import GTTVOS
from models.ttvos import TTVOS
from tests.cli import call

COMMON = ("--stage", "gttvos", "--dset", "synthetic", "--size", "64", "96", "--batch-size", "2", "--seq-len", "3",
          "--max-iters-per-epoch", "2", "--dev", "cpu", "--workers", "0", "--m1", "0")


@pytest.fixture(scope="module")
def ttvos_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ttvos") / "ttvos.pth"
    save_ttvos(path, TTVOS().eval(), size=[64, 96])
    return path


def run(tmp_path: Path, name: str, *extra: str, init: Path):
    folder = tmp_path / name
    proc = call(train_cli.main, *COMMON, "--name", name, "--initPth", str(init), "--checkpoints", str(folder / "ck"),
                "--tensorboard", str(folder / "tb"), "--synthetic-root", str(tmp_path / "synthetic"),
                "--data-cache", str(folder / "dc"), *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder, proc


def test_a_run_trains_the_reuse_modules_on_the_frozen_ttvos_and_resumes_exactly(tmp_path, monkeypatch, ttvos_file):
    monkeypatch.chdir(tmp_path)
    folder, proc = run(tmp_path, "whole", "--epochs", "2", init=ttvos_file)
    assert "epoch 2/2: loss" in proc.stdout and "reuse rate" in proc.stdout
    loaded = load_inference_model(tmp_path / "runs" / "whole" / "gttvos.pth")
    assert isinstance(loaded.model, GTTVOS) and loaded.model.placement == "frame" and loaded.size == (64, 96)
    assert any("G-TTVOS (hrnetv2Sv1, placement frame)" in m for m in loaded.messages)
    start = torch.load(ttvos_file, weights_only=True)["model"]
    trained = loaded.model.state_dict()
    assert all(torch.equal(start[k], trained[k]) for k in start)  # TTVOS as given, BN statistics included
    fresh = GTTVOS()
    fresh.init_gate_bias()
    assert not torch.equal(trained["Diff_process.body.4.weight"], fresh.state_dict()["Diff_process.body.4.weight"])
    raw = torch.load(folder / "ck" / "whole_ep0002.pth", weights_only=True)
    assert raw["kind"] == "gttvos" and raw["epoch"] == 2 and "optimizer" in raw

    part, _ = run(tmp_path, "part", "--epochs", "1", init=ttvos_file)
    _, proc = run(tmp_path, "part", "--epochs", "2", init=ttvos_file)
    assert "resumed from" in proc.stdout
    b = torch.load(part / "ck" / "part_ep0002.pth", weights_only=True)["model"]
    assert all(torch.equal(raw["model"][k], b[k]) for k in b)

    # a G-TTVOS file starts a run of its own placement (all its weights), not of another
    _, proc = run(tmp_path, "again", "--epochs", "1", init=tmp_path / "runs" / "whole" / "gttvos.pth")
    bad = call(train_cli.main, *COMMON, "--name", "bad", "--initPth", str(tmp_path / "runs" / "whole" / "gttvos.pth"),
               "--placement", "s16", "--synthetic-root", str(tmp_path / "synthetic"), "--epochs", "1")
    assert bad.returncode != 0 and "placement frame, but this run trains --placement s16" in bad.stderr


@pytest.mark.parametrize("args, message", [
    (("--stage", "gttvos"), "--stage gttvos needs --initPth"),
    (("--stage", "gttvos", "--initPth", "x.pth", "--placement", "s4"), "invalid choice: 's4'"),
    (("--stage", "ttvos", "--placement", "s16"), "--placement: not a flag of --stage ttvos"),
    (("--stage", "gfrtm", "--reuse-weight", "0"), "--reuse-weight: not a flag of --stage gfrtm"),
    (("--stage", "gttvos", "--initPth", "x.pth", "--reuse-weight", "-1"), "--reuse-weight must be >= 0"),
    (("--stage", "gttvos", "--initPth", "missing.pth"), "missing.pth"),
])
def test_bad_flags_stop_with_one_line(args, message):
    proc = call(train_cli.main, *args, "--dev", "cpu")
    assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr
