"""One process by default; several (GPUs or CPU processes) under ``torchrun``.

``torchrun --nproc_per_node=N train.py ...`` sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; then every
process joins a process group (``nccl`` on CUDA, ``gloo`` on CPU), uses ``cuda:LOCAL_RANK`` on CUDA, reads
its own share of each epoch through a :class:`~torch.utils.data.distributed.DistributedSampler` and
trains a :class:`~torch.nn.parallel.DistributedDataParallel` copy of the model (gradients are averaged,
so every rank holds the same weights). Only rank 0 logs, writes TensorBoard and checkpoints.
BatchNorm uses each process's own batch (no SyncBatchNorm), as the single-GPU original with batch 8.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, Iterable

import torch
import torch.distributed as dist
from torch import Tensor, nn

from base.errors import ConfigError
from lib.tools.cli import resolve_device


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: world size, ranks and the device it trains on."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def setup_distributed(requested_device: str, environ: Dict[str, str] = os.environ) -> DistributedContext:
    """Detect torchrun's environment and join the process group; a single process otherwise.

    Under torchrun a CUDA ``--dev`` becomes ``cuda:LOCAL_RANK`` (nccl); a CPU ``--dev`` uses gloo.
    """
    device = resolve_device(requested_device)
    world_size = int(environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext(device=device)
    rank = int(environ["RANK"])
    local_rank = int(environ.get("LOCAL_RANK", rank))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"torchrun started {world_size} processes but this node has "
                              f"{torch.cuda.device_count()} CUDA devices")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://")
    return DistributedContext(world_size=world_size, rank=rank, local_rank=local_rank, device=device)


def cleanup_distributed(ctx: DistributedContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(module: nn.Module, ctx: DistributedContext) -> nn.Module:
    """DistributedDataParallel around ``module`` when distributed, else ``module`` itself."""
    if not ctx.enabled:
        return module
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids)  # buffers synced every forward


def rank_seed(seed: int, ctx: DistributedContext) -> int:
    """Per-rank seed for the randomness that must differ between ranks (data-loader workers)."""
    return seed + 1000 * ctx.rank


def _all_reduce(values: Dict[str, float], ctx: DistributedContext, mean: bool) -> Dict[str, float]:
    """Sum (or average) scalar values over the ranks in one float64 all-reduce; identity in one process."""
    if not ctx.enabled or not values:
        return dict(values)
    keys = sorted(values)
    backend_device = ctx.device if dist.get_backend() == "nccl" else torch.device("cpu")
    packed = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=backend_device)
    dist.all_reduce(packed)
    if mean:
        packed /= ctx.world_size
    return {k: float(v) for k, v in zip(keys, packed.tolist())}


def all_reduce_mean(values: Dict[str, float], ctx: DistributedContext) -> Dict[str, float]:
    """Average scalar statistics over the ranks (identity in a single process)."""
    return _all_reduce(values, ctx, mean=True)


def all_reduce_sum(values: Dict[str, float], ctx: DistributedContext) -> Dict[str, float]:
    """Sum scalar counters over the ranks (identity in a single process)."""
    return _all_reduce(values, ctx, mean=False)


def broadcast_buffers(buffers: Iterable[Tensor], ctx: DistributedContext) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank, so all ranks save the same model.

    DDP broadcasts buffers at the start of each forward; after the last step of an epoch every rank has
    updated its own running statistics, so they are synchronised once more before checkpointing.
    """
    if not ctx.enabled:
        return
    for buf in buffers:
        dist.broadcast(buf.data, src=0)
