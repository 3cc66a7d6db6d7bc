"""``train.py --stage ttvos``: TTVOS trained end to end on clips, resumably, with progress bars and TensorBoard.

One process (TTVOS is small). Per epoch: the training set's clips (saliency clips with thin-plate-spline
deformations, DAVIS train, or generated videos) normalised as the official input, the recurrent forward and its
three losses (:class:`trainers.ttvos_recurrent.TTVOSRecurrent`), Adam without weight decay, StepLR, a checkpoint.

A checkpoint ``<checkpoints>/<name>_ep%04d.pth`` is a project-format TTVOS file (``kind: 'ttvos'``; it loads with
``weights_only=True``, and ``evaluate.py --model`` runs it directly) with the optimiser, scheduler, config and the
epoch's statistics; ``runs/<name>/ttvos.pth`` holds the last epoch's weights and the training size alone.
Running the same command again resumes from the newest valid checkpoint.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
from torch import Tensor
from torch.utils.data import DataLoader, DistributedSampler

from base.io import atomic_write_json
from lib.tools.checkpoint import load_ttvos, save_ttvos
from models.ttvos import TTVOS, normalise_image
from models.ttvos_backbones import FINETUNE_CHILD
from trainers.checkpointing import find_resume_checkpoint, restore_training_state, to_cpu
from trainers.config import TTVOSTrainConfig
from trainers.loop import seed_everything, seed_worker
from trainers.ttvos_recurrent import TTVOSLossOptions, TTVOSRecurrent

STATS = ("loss", "seg", "diff", "tmp", "iou")


class TTVOSTrainer:
    """Builds the model, optimiser and scheduler (and resumes) on construction; :meth:`fit` trains."""

    def __init__(self, config: TTVOSTrainConfig, log: Callable[[str], None] = print):
        self.config = config
        self.log = log
        self.device = torch.device(config.device)
        seed_everything(config.seed)
        params = self.build_model()
        self.optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=0.0)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=config.lr_step,
                                                         gamma=config.lr_gamma)
        self.recurrent = self.build_recurrent()
        self.start_epoch = 1
        self.resumed_from: Optional[Path] = None
        if config.resume:
            found = find_resume_checkpoint(config.checkpoints, config.name, log=self.log)
            if found is not None:
                path, state = found
                epoch = restore_training_state(state, self.model, self.optimizer, self.scheduler, path)
                self.start_epoch, self.resumed_from = epoch + 1, path
                self.log(f"resumed from {path} (epoch {epoch} finished); continuing at epoch {self.start_epoch}")

    def build_model(self) -> List[torch.nn.Parameter]:
        """Set :attr:`model` (on the device) and :attr:`frozen` (children kept in eval mode); returns the
        parameters to train."""
        config = self.config
        self.model = TTVOS(config.backbone)
        if config.init_pth:
            start = load_ttvos(config.init_pth, trust=config.trust_checkpoint)
            if start.backbone_name != config.backbone:
                from base.errors import ConfigError

                raise ConfigError(f"--initPth {config.init_pth}: a {start.backbone_name} TTVOS, but this run trains "
                                  f"--ttvos-backbone {config.backbone}")
            self.model.load_state_dict(start.state_dict())
            self.log(f"--initPth: started from {config.init_pth}")
        self.model.to(self.device)
        self.frozen = []
        if config.train_backbone == "finetune":
            keep = FINETUNE_CHILD[config.backbone]
            for name, child in self.model.backbone.named_children():
                if name != keep:
                    child.requires_grad_(False)
                    self.frozen.append(child)
        return [p for p in self.model.parameters() if p.requires_grad]

    def build_recurrent(self) -> torch.nn.Module:
        """The training forward of :attr:`model` with the config's losses."""
        config = self.config
        return TTVOSRecurrent(self.model, TTVOSLossOptions(diff_loss=config.diff_loss, tmp_loss=config.tmp_loss,
                                                           official_quirks=config.official_quirks))

    def build_data(self):
        from dataset.training import build_training_set

        cfg = self.config
        dataset = build_training_set(cfg.dset, davis_root=cfg.davis_root, synthetic_root=cfg.synthetic_root,
                                     seq_len=cfg.seq_len, size=cfg.size, seed=cfg.seed, cache_dir=cfg.data_cache,
                                     holdout=cfg.holdout, saliency_root=cfg.saliency_root,
                                     clip_samples_per_epoch=cfg.clips_per_epoch, clip_tps=cfg.tps)
        # one process; the sampler's order depends on (seed, epoch) only, so a resumed run draws what an
        # uninterrupted one would
        sampler = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=cfg.seed, drop_last=False)
        loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.workers,
                            worker_init_fn=seed_worker, generator=torch.Generator().manual_seed(cfg.seed),
                            drop_last=False, pin_memory=self.device.type == "cuda")
        return dataset, sampler, loader

    def fit(self) -> Dict[str, float]:
        cfg = self.config
        Path(cfg.checkpoints).mkdir(parents=True, exist_ok=True)
        atomic_write_json(cfg.config_path, cfg.to_dict())
        dataset, sampler, loader = self.build_data()
        self.log(f"training set: {len(dataset)} samples/epoch, {len(loader)} iterations/epoch (batch "
                 f"{cfg.batch_size}) on {self.device}; TTVOS {cfg.backbone}, backbone trains: {cfg.train_backbone}")
        if self.start_epoch > cfg.epochs:
            self.log(f"nothing to do: epoch {self.start_epoch - 1} of {cfg.epochs} already finished")
            return {}
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(cfg.tensorboard)
        stats: Dict[str, float] = {}
        try:
            for epoch in range(self.start_epoch, cfg.epochs + 1):
                if hasattr(dataset, "set_epoch"):
                    dataset.set_epoch(epoch)
                sampler.set_epoch(epoch)
                stats = self.train_epoch(epoch, loader)
                path = cfg.checkpoint_path(epoch)
                save_ttvos(path, self.model, name=cfg.name, epoch=epoch, optimizer=to_cpu(self.optimizer.state_dict()),
                           scheduler=to_cpu(self.scheduler.state_dict()), config=cfg.to_dict(),
                           stats={k: float(v) for k, v in stats.items()}, size=list(cfg.size))
                for key in self.STATS:
                    writer.add_scalar(f"train/{key}" if key.endswith(("iou", "rate")) else f"loss/{key}", stats[key],
                                      epoch)
                writer.add_scalar("train/lr", stats["lr"], epoch)
                writer.add_scalar("train/seconds_per_iteration", stats["seconds_per_iteration"], epoch)
                writer.flush()
                self.log(f"epoch {epoch}/{cfg.epochs}: {self.describe(stats)}, lr {stats['lr']:.2e}, "
                         f"{stats['seconds_per_iteration']:.2f} s/it -> {path}")
        finally:
            writer.close()
        save_ttvos(cfg.weights_path, self.model, name=cfg.name, epoch=cfg.epochs, config=cfg.to_dict(),
                   size=list(cfg.size))
        self.log(f"model: {cfg.weights_path}")
        return stats

    STATS = STATS

    @staticmethod
    def describe(stats: Dict[str, float]) -> str:
        return (f"loss {stats['loss']:.4f} (seg {stats['seg']:.4f}, diff {stats['diff']:.4f}, tmp {stats['tmp']:.4f}), "
                f"IoU {stats['iou']:.3f}")

    def step(self, images, labels, epoch: int) -> Dict[str, Tensor]:
        """The losses and statistics of one batch (normalised images)."""
        return self.recurrent(images, labels)

    def train_epoch(self, epoch: int, loader: DataLoader) -> Dict[str, float]:
        from tqdm import tqdm

        cfg = self.config
        self.model.train()
        for child in self.frozen:
            child.eval()
        n_iters = len(loader) if cfg.max_iters_per_epoch is None else min(len(loader), cfg.max_iters_per_epoch)
        sums = {k: 0.0 for k in self.STATS}
        count = 0
        lr = self.optimizer.param_groups[0]["lr"]
        bar = tqdm(total=n_iters, desc=f"epoch {epoch}/{cfg.epochs}", dynamic_ncols=True, leave=False,
                   file=sys.stderr, mininterval=0.5 if sys.stderr.isatty() else 30.0)
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if cfg.amp == "bf16" else None
        start = time.perf_counter()
        for it, batch in enumerate(loader):
            if it >= n_iters:
                break
            images = batch["images"].to(self.device, non_blocking=True)  # (B, N, 3, H, W) uint8
            labels = batch["labels"].to(self.device, non_blocking=True).long()
            images = normalise_image(images.flatten(0, 1)).view(*images.shape[:2], *images.shape[2:])
            self.optimizer.zero_grad(set_to_none=True)
            if autocast is None:
                out = self.step(images, labels, epoch)
            else:
                with autocast:
                    out = self.step(images, labels, epoch)
            out["loss"].backward()
            self.optimizer.step()
            count += 1
            for key in self.STATS:
                sums[key] += float(out[key].detach())
            bar.update(1)
            bar.set_postfix({k: f"{v / count:.4f}" for k, v in sums.items()}, refresh=False)
        bar.close()
        seconds = time.perf_counter() - start
        self.scheduler.step()
        stats = {k: v / max(count, 1) for k, v in sums.items()}
        stats.update(lr=lr, iterations=count, seconds_per_iteration=seconds / max(count, 1))
        return stats
