"""The G-FRTM training loop: model, optimiser, data, epochs, logging and checkpoints.

:class:`Trainer` builds everything from a :class:`~trainers.config.TrainConfig`:

* the frozen backbone and the learned modules (gate bias for ~13-15% initial reuse, optional ``--initPth``);
* Adam (amsgrad, betas 0.9/0.999) with four parameter groups, weight decay 0 for the gate (``convGS``) and
  1e-5 for ``Tmatching``, ``Convert_Diff`` and ``refiner``, all at the same learning rate; StepLR stepped
  once per epoch (127 epochs, factor 0.1 by default);
* resuming from the newest valid checkpoint (after ``--initPth``, as the original);
* per epoch: the training set's epoch list, a (distributed) sampler, one optimiser step per batch,
  statistics averaged over the ranks, TensorBoard scalars and images, a checkpoint.

Test hooks (environment variables, not flags): ``REUSE_VOS_TRAIN_EXIT_AT=EPOCH:ITER`` hard-exits the process
(``os._exit``) right before iteration ITER (0-based) of epoch EPOCH, as a kill would; with
``REUSE_VOS_TRAIN_DUMP_DIR=DIR`` every rank writes its final model state dict to ``DIR/rank<r>.pth``.
"""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, DistributedSampler

from base.io import atomic_path, atomic_write_json
from lib.tools.checkpoint import build_backbone
from models.gfrtm import GFRTM
from models.target_model import TargetModelConfig
from trainers.checkpointing import (
    find_resume_checkpoint,
    init_from_checkpoint,
    restore_training_state,
    save_training_checkpoint,
)
from trainers.config import TrainConfig
from trainers.distributed import (
    DistributedContext,
    all_reduce_mean,
    all_reduce_sum,
    broadcast_buffers,
    rank_seed,
    wrap_model,
)
from trainers.recurrent import RecurrentOptions, RecurrentTrainingModel
from trainers.target_models import FirstFrameTargetModels
from trainers.tmcache import TRAIN_C_CHANNELS, TargetModelCache, cache_variant

EXIT_AT_ENV = "REUSE_VOS_TRAIN_EXIT_AT"
DUMP_DIR_ENV = "REUSE_VOS_TRAIN_DUMP_DIR"
EXIT_CODE = 75
WEIGHT_DECAY = {"convGS": 0.0, "Tmatching": 1e-5, "Convert_Diff": 1e-5, "refiner": 1e-5}
BACKBONE_WEIGHT_DECAY = 1e-5
MEAN_STATS = ("loss", "seg", "delta", "gate", "accuracy", "reuse_rate")
VISUAL_SCORES = ("delta", "score_target", "score_translated", "score_final")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_optimizer(model: GFRTM, lr: float, train_only: Sequence[str] = (),
                    backbone: Optional[nn.Module] = None, backbone_lr: float = 0.0) -> torch.optim.Adam:
    """Adam (amsgrad) with the official four parameter groups and weight decays (spec 4.4); with ``train_only``
    just those groups (the other modules are frozen by :func:`freeze_modules`); with ``backbone`` a fifth group,
    ``backbone``, at ``backbone_lr`` (weight decay 1e-5, as the learned modules')."""
    groups = [{"params": list(getattr(model, name).parameters()), "weight_decay": wd, "name": name}
              for name, wd in WEIGHT_DECAY.items() if not train_only or name in train_only]
    if backbone is not None:
        groups.append({"params": list(backbone.parameters()), "weight_decay": BACKBONE_WEIGHT_DECAY,
                       "name": "backbone", "lr": backbone_lr})
    return torch.optim.Adam(groups, lr=lr, betas=(0.9, 0.999), amsgrad=True)


def freeze_modules(model: GFRTM, train_only: Sequence[str]) -> List[nn.Module]:
    """Freeze every parameter group of :data:`WEIGHT_DECAY` not in ``train_only`` (no gradients); returns the
    frozen modules, which :meth:`Trainer.train_epoch` keeps in eval mode (their BatchNorm statistics stay)."""
    frozen = [getattr(model, name) for name in WEIGHT_DECAY if train_only and name not in train_only]
    for module in frozen:
        module.requires_grad_(False)
    return frozen


def seed_worker(worker_id: int) -> None:
    """A data-loader worker seeds numpy and random from its torch seed (each worker draws differently)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _normalise_map(x: Tensor) -> Tensor:
    """(1,h,w) -> (1,h,w) in [0,1] by min-max (a constant map becomes 0.5)."""
    lo, hi = float(x.min()), float(x.max())
    if hi - lo < 1e-12:
        return torch.full_like(x, 0.5)
    return (x - lo) / (hi - lo)


def _debug_exit_point() -> Optional[tuple]:
    value = os.environ.get(EXIT_AT_ENV)
    if not value:
        return None
    epoch, it = value.split(":")
    return int(epoch), int(it)


class Trainer:
    """Builds the model, optimiser and scheduler (and resumes) on construction; :meth:`fit` trains.

    Args:
        config: the run's configuration.
        ctx: distributed context (single process by default).
        log: where rank 0's messages go.
    """

    def __init__(self, config: TrainConfig, ctx: Optional[DistributedContext] = None,
                 log: Callable[[str], None] = print):
        self.config = config
        self.ctx = ctx or DistributedContext(device=torch.device(config.device))
        self.device = self.ctx.device
        self._log = log
        seed_everything(config.seed)
        self.backbone = build_backbone(config.ftext, config.pretrained).to(self.device)
        torch.manual_seed(config.seed)
        self.model = GFRTM(config.ftext)
        self.model.init_gate_bias()
        if config.init_pth:
            self.log(init_from_checkpoint(self.model, config.init_pth, trust=config.trust_checkpoint))
        self.model.to(self.device)
        self.frozen = freeze_modules(self.model, config.train_only)
        self.tuned_backbone = None
        if config.backbone_lr > 0:
            # the ResNet's weights learn; FeatureExtractor stays in eval mode (BatchNorm statistics frozen)
            self.tuned_backbone = self.backbone.resnet
            self.tuned_backbone.requires_grad_(True)
        self.optimizer = build_optimizer(self.model, config.lr, config.train_only, self.tuned_backbone,
                                         config.backbone_lr)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=config.lr_step,
                                                         gamma=config.lr_gamma)
        self.start_epoch = 1
        self.resumed_from: Optional[Path] = None
        if config.resume:
            self._resume()
        seed_everything(rank_seed(config.seed, self.ctx))
        self.cache = self._build_cache()
        self.target_models = FirstFrameTargetModels(self.backbone, TargetModelConfig.train(), self.cache,
                                                    seed=config.seed, amp=config.amp,
                                                    official_lists=config.official_quirks)
        options = RecurrentOptions(gate_loss=config.gate_loss, m1=config.m1, m2=config.m2,
                                   margin_epochs=config.margin_epochs, target_rate=config.target_rate,
                                   official_quirks=config.official_quirks, amp=config.amp,
                                   train_backbone=self.tuned_backbone is not None)
        self.recurrent = RecurrentTrainingModel(self.model, self.backbone, self.target_models, options)
        self.net = wrap_model(self.recurrent, self.ctx)

    # --- setup --------------------------------------------------------------------------------

    def log(self, message: str) -> None:
        if self.ctx.is_main:
            self._log(message)

    def _resume(self) -> None:
        found = find_resume_checkpoint(self.config.checkpoints, self.config.name, log=self.log)
        if found is None:
            return
        path, state = found
        epoch = restore_training_state(state, self.model, self.optimizer, self.scheduler, path,
                                       backbone=self.tuned_backbone)
        self.start_epoch = epoch + 1
        self.resumed_from = path
        changed = self.config.differences(state.get("config", {}))
        changed.pop("resume", None)
        self.log(f"resumed from {path} (epoch {epoch} finished); continuing at epoch {self.start_epoch}")
        if changed:
            self.log("note: settings differ from the checkpoint's: "
                     + ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in sorted(changed.items())))

    def _build_cache(self) -> Optional[TargetModelCache]:
        cfg = self.config
        if cfg.tmcache_mode == "off":
            return None
        if self.tuned_backbone is not None:
            self.log("target-model cache off: with --backbone-lr the backbone changes at every step, so each "
                     "sample's first-frame target model is fitted on the current one")
            return None
        c4 = self.backbone.channels["layer4"]
        shapes = {"project.weight": (TRAIN_C_CHANNELS, c4, 1, 1), "filter.weight": (1, TRAIN_C_CHANNELS, 3, 3)}
        variant = cache_variant(cfg.ftext, cfg.size, cfg.pretrained, cfg.seed, official_augment=cfg.official_quirks)
        return TargetModelCache(cfg.tmcache, variant, shapes, read_only=cfg.tmcache_mode == "readonly")

    def build_data(self):
        """The training set, its sampler and the data loader."""
        from dataset.training import build_training_set

        cfg = self.config
        dataset = build_training_set(
            cfg.dset, davis_root=cfg.davis_root, ytvos_root=cfg.ytvos_root, synthetic_root=cfg.synthetic_root,
            seq_len=cfg.seq_len, size=cfg.size, sampling=cfg.sampling, seed=cfg.seed, cache_dir=cfg.data_cache,
            split_list=cfg.split_list, official=cfg.official_quirks, holdout=cfg.holdout,
            saliency_root=cfg.saliency_root, clip_samples_per_epoch=cfg.clips_per_epoch,
            **({"synthetic_size": cfg.synthetic_size} if cfg.synthetic_size else {}))
        sampler = DistributedSampler(dataset, num_replicas=self.ctx.world_size, rank=self.ctx.rank, shuffle=True,
                                     seed=cfg.seed, drop_last=False)
        generator = torch.Generator().manual_seed(rank_seed(cfg.seed, self.ctx))
        loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.workers,
                            pin_memory=self.device.type == "cuda", worker_init_fn=seed_worker, generator=generator,
                            drop_last=False)
        return dataset, sampler, loader

    # --- training -----------------------------------------------------------------------------

    def fit(self) -> Dict[str, float]:
        """Train from :attr:`start_epoch` to ``config.epochs``; returns the last epoch's statistics."""
        cfg = self.config
        writer = None
        if self.ctx.is_main:
            Path(cfg.checkpoints).mkdir(parents=True, exist_ok=True)
            atomic_write_json(cfg.config_path, cfg.to_dict())
        dataset, sampler, loader = self.build_data()
        self.log(f"training set: {len(dataset)} samples/epoch, {len(loader)} iterations/epoch per process "
                 f"(batch {cfg.batch_size}, {self.ctx.world_size} process(es)) on {self.device}")
        if self.start_epoch > cfg.epochs:
            self.log(f"nothing to do: epoch {self.start_epoch - 1} of {cfg.epochs} already finished")
            return {}
        if self.ctx.is_main:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(cfg.tensorboard)
        stats: Dict[str, float] = {}
        try:
            for epoch in range(self.start_epoch, cfg.epochs + 1):
                dataset.set_epoch(epoch)
                sampler.set_epoch(epoch)
                stats = self.train_epoch(epoch, loader)
                if self.ctx.is_main:
                    save_training_checkpoint(cfg.checkpoint_path(epoch), self.model, name=cfg.name, epoch=epoch,
                                             optimizer=self.optimizer, scheduler=self.scheduler,
                                             config=cfg.to_dict(), stats=stats, backbone=self.tuned_backbone,
                                             backbone_source=f"fine-tuned from {Path(cfg.pretrained).name} "
                                                             f"at lr {cfg.backbone_lr:g}")
                    self._write_tensorboard(writer, epoch, stats)
                    self.log(self._epoch_line(epoch, stats) + f" -> {cfg.checkpoint_path(epoch)}")
                self.ctx.barrier()
        finally:
            if writer is not None:
                writer.close()
        self._dump_for_tests()
        return stats

    def train_epoch(self, epoch: int, loader: DataLoader) -> Dict[str, float]:
        """One epoch of optimiser steps; statistics averaged over iterations and ranks; scheduler stepped."""
        from tqdm import tqdm

        cfg = self.config
        self.net.train()
        for module in self.frozen:
            module.eval()
        n_iters = len(loader) if cfg.max_iters_per_epoch is None else min(len(loader), cfg.max_iters_per_epoch)
        exit_at = _debug_exit_point()
        sums = {k: 0.0 for k in MEAN_STATS}
        hits = lookups = 0
        count = 0
        lr = self.optimizer.param_groups[0]["lr"]
        bar = tqdm(total=n_iters, desc=f"epoch {epoch}/{cfg.epochs}", disable=not self.ctx.is_main,
                   dynamic_ncols=True, leave=False, file=sys.stderr,
                   mininterval=0.5 if sys.stderr.isatty() else 30.0)
        start = time.perf_counter()
        for it, batch in enumerate(loader):
            if it >= n_iters:
                break
            if exit_at == (epoch, it):
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(EXIT_CODE)
            images = batch["images"].to(self.device, non_blocking=True)
            labels = batch["labels"].to(self.device, non_blocking=True)
            self.optimizer.zero_grad(set_to_none=True)
            out = self.net(images, labels, list(batch["meta"]), epoch,
                           keep_visuals=self.ctx.is_main and it == n_iters - 1)
            out["loss"].backward()
            self.optimizer.step()
            count += 1
            sums["loss"] += float(out["loss"].detach())
            for key in MEAN_STATS[1:]:
                sums[key] += float(out[key])
            hits += int(out["cache_hits"])
            lookups += images.shape[0]
            bar.update(1)
            bar.set_postfix({k: f"{v / count:.4f}" for k, v in sums.items()}, refresh=False)
        bar.close()
        seconds = time.perf_counter() - start
        stats = all_reduce_mean({k: v / max(count, 1) for k, v in sums.items()}, self.ctx)
        totals = all_reduce_sum({"tmcache_hits": hits, "tmcache_lookups": lookups}, self.ctx)
        broadcast_buffers(self.model.buffers(), self.ctx)
        self.scheduler.step()
        stats.update(totals, lr=lr, margin=float(out["margin"]) if count else 0.0,
                     tmcache_hit_rate=totals["tmcache_hits"] / max(totals["tmcache_lookups"], 1),
                     iterations=count, seconds_per_iteration=seconds / max(count, 1))
        return stats

    # --- logging ------------------------------------------------------------------------------

    def _epoch_line(self, epoch: int, stats: Dict[str, float]) -> str:
        return (f"epoch {epoch}/{self.config.epochs}: loss {stats['loss']:.4f} (seg {stats['seg']:.4f}, "
                f"delta {stats['delta']:.4f}, gate {stats['gate']:.4f}), accuracy {stats['accuracy']:.3f}, "
                f"reuse rate {stats['reuse_rate']:.3f}, lr {stats['lr']:.2e}, target-model cache hits "
                f"{int(stats['tmcache_hits'])}/{int(stats['tmcache_lookups'])}, "
                f"{stats['seconds_per_iteration']:.2f} s/it")

    def _write_tensorboard(self, writer, epoch: int, stats: Dict[str, float]) -> None:
        for key in ("loss", "seg", "delta", "gate"):
            writer.add_scalar(f"loss/{key}", stats[key], epoch)
        for key in ("accuracy", "reuse_rate", "lr", "margin", "tmcache_hits", "tmcache_hit_rate",
                    "seconds_per_iteration"):
            writer.add_scalar(f"train/{key}", stats[key], epoch)
        visuals = self.recurrent.visuals
        if visuals:
            writer.add_image("images/input", visuals["input"].clamp(0, 1), epoch)
            writer.add_image("images/gt", visuals["gt"].clamp(0, 1), epoch)
            writer.add_image("images/output", visuals["output"].clamp(0, 1), epoch)
            for key in VISUAL_SCORES:
                writer.add_image(f"images/{key}", _normalise_map(visuals[key]), epoch)
        writer.flush()

    def _dump_for_tests(self) -> None:
        folder = os.environ.get(DUMP_DIR_ENV)
        if not folder:
            return
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        with atomic_path(Path(folder) / f"rank{self.ctx.rank}.pth") as tmp:
            torch.save(state, tmp)

