"""torchrun with two CPU processes (gloo): both ranks end with the same weights, rank 0 checkpoints."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models.gfrtm import GFRTM
from trainers.distributed import DistributedContext, all_reduce_mean, setup_distributed

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_single_process_without_torchrun():
    ctx = setup_distributed("cpu", environ={})
    assert ctx == DistributedContext(device=torch.device("cpu")) and ctx.is_main and not ctx.enabled
    assert all_reduce_mean({"a": 2.0}, ctx) == {"a": 2.0}


@pytest.mark.slow
def test_torchrun_two_cpu_processes_identical_weights(synthetic_root, tmp_path):
    dump = tmp_path / "dump"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "REUSE_VOS_TRAIN_DUMP_DIR": str(dump)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", str(ROOT / "train.py"), "--name", "ddp", "--dset", "synthetic",
           "--synthetic-root", str(synthetic_root), "--synthetic-size", "64", "112", "--size", "64", "112",
           "--dev", "cpu", "--epochs", "1", "--batch-size", "1", "--seq-len", "3", "--max-iters-per-epoch", "2",
           "--pretrained", "none", "--workers", "0"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout and proc.stdout.count("epoch 1/1: loss") == 1  # rank 0 logs alone
    rank0 = torch.load(dump / "rank0.pth", weights_only=True)
    rank1 = torch.load(dump / "rank1.pth", weights_only=True)
    ckpt = torch.load(tmp_path / "runs/ddp/checkpoints/ddp_ep0001.pth", weights_only=True)
    assert list(rank0) == list(rank1) == list(ckpt["model"]) and len(rank0) == 189
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
        assert torch.equal(rank0[key], ckpt["model"][key]), key
    # both ranks trained: 2 iterations x 2 processes x batch 1 target models looked up, summed over ranks
    assert ckpt["stats"]["iterations"] == 2 and ckpt["stats"]["tmcache_lookups"] == 4
    # training moved the weights away from the shared initialisation
    torch.manual_seed(0)
    init = GFRTM("resnet18")
    init.init_gate_bias()
    assert not torch.equal(init.state_dict()["convGS.4.bias"], rank0["convGS.4.bias"])
