"""Training of the learned warp correction: ``train.py --stage warp-corrector``.

A sample is a (key frame, frame) pair of one DAVIS train sequence, 1..``max_distance`` frames apart in either
direction. The key frame's ground-truth mask, softened as a model's output is (a random erosion or dilation of
at most 2 px, then a Gaussian blur of sigma 0.5-2 px), is warped to the frame with the DIS optical flow the
``warp`` path uses (:mod:`lib.engine.warp`, same scale and preset, same :func:`~lib.engine.warp.corrector_inputs`);
the corrector learns to turn it into the frame's mask (binary cross-entropy + soft-IoU loss). Frames are
flipped left-right at random. Samples are drawn from a generator seeded by (seed, epoch, index), so an epoch
is the same after a restart.

Every epoch ends with a validation on the held-out sequences (fixed pairs: key frames every 4 frames, each
distance 1..max_distance forwards, key mask blurred with sigma 1): the J (IoU) of the warped map with no
correction, with the guided filter and with the learned correction, per distance. Checkpoints (every
epoch, resumable) hold the weights, the optimiser, the scheduler, the config and the statistics; the last
epoch's weights are also written alone to ``runs/<name>/warp_corrector.pth`` (``--warp-corrector``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from base.io import atomic_write_json
from dataset.davis import DAVISDataset
from dataset.registry import resolve_root
from dataset.sequence import VideoSequence
from dataset.training import resize_sample_frame
from lib.engine.warp import (
    FLOW_SCALE,
    corrector_inputs,
    dis_flow,
    guide_image,
    guided_correction,
    resize_flow,
    small_gray,
)
from lib.evaluation.metrics import region_similarity
from lib.tools.checkpoint import load_warp_corrector, save_warp_corrector
from models.warp_corrector import WarpCorrector
from trainers.checkpointing import resume_module, to_cpu
from trainers.config import WarpTrainConfig
from trainers.loop import seed_worker

VALIDATION_STRIDE = 4
VALIDATION_SIGMA = 1.0
REFINEMENTS = ("none", "guided", "learned")


def soften_mask(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A binary (H, W) mask made to look like a model's output: random erosion/dilation (radius 0-2 px), then a
    Gaussian blur of sigma U(0.5, 2) px; (H, W) float32 in [0, 1]."""
    out = mask.astype(np.uint8)
    radius = int(rng.integers(0, 3))
    if radius:
        element = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2)
        out = cv2.dilate(out, element) if rng.random() < 0.5 else cv2.erode(out, element)
    return blur_mask(out, float(rng.uniform(0.5, 2.0)))


def blur_mask(mask: np.ndarray, sigma: float) -> np.ndarray:
    """A (H, W) mask Gaussian-blurred with ``sigma`` px, float32 clipped to [0, 1]."""
    return np.clip(cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigma), 0.0, 1.0)


def flow_to(current_rgb: np.ndarray, key_rgb: np.ndarray) -> np.ndarray:
    """The warp path's flow from the current frame back to the key frame, at the frames' size (H, W, 2)."""
    flow = dis_flow(small_gray(current_rgb, FLOW_SCALE), small_gray(key_rgb, FLOW_SCALE))
    return resize_flow(flow, current_rgb.shape[:2])


class FrameStore:
    """Frames and masks of some sequences at one size, decoded once and kept (a few hundred MB for DAVIS)."""

    def __init__(self, sequences: Sequence[VideoSequence], size: Tuple[int, int]):
        self.sequences = list(sequences)
        self.size = tuple(size)
        self._frames: Dict[Tuple[int, int], Tuple[np.ndarray, np.ndarray]] = {}

    def preload(self) -> FrameStore:
        """Decode every frame now (before data-loader workers fork, so that they share the frames)."""
        for seq, sequence in enumerate(self.sequences):
            for index in range(len(sequence)):
                self.frame(seq, index)
        return self

    def frame(self, seq: int, index: int) -> Tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) uint8 RGB and (H, W) uint8 labels (0 where the frame has no annotation)."""
        key = (seq, index)
        if key not in self._frames:
            sequence = self.sequences[seq]
            image = sequence.image(index)
            name = sequence.frames[index]
            labels = (sequence.annotation(name, image.shape[:2]) if sequence.has_annotation(name)
                      else np.zeros(image.shape[:2], np.uint8))
            self._frames[key] = resize_sample_frame(image, labels, self.size, always_area=True)
        return self._frames[key]


def pair_tensors(store: FrameStore, seq: int, key: int, frame: int, obj: int, key_prob_fn,
                 flip: bool = False) -> Dict[str, torch.Tensor]:
    """One training/validation sample: the corrector's three inputs and the target mask (1, H, W)."""
    key_rgb, key_labels = store.frame(seq, key)
    rgb, labels = store.frame(seq, frame)
    if flip:
        key_rgb, key_labels, rgb, labels = (np.ascontiguousarray(a[:, ::-1])
                                            for a in (key_rgb, key_labels, rgb, labels))
    key_prob = key_prob_fn(key_labels == obj)
    image, warped_image, warped_prob = corrector_inputs(rgb, key_rgb, key_prob, flow_to(rgb, key_rgb))
    return {"image": torch.from_numpy(image), "warped_image": torch.from_numpy(warped_image),
            "warped_prob": torch.from_numpy(warped_prob),
            "target": torch.from_numpy((labels == obj).astype(np.float32)[None])}


def _objects(labels: np.ndarray) -> List[int]:
    return [int(v) for v in np.unique(labels) if v != 0]


class WarpPairs(Dataset):
    """``samples_per_epoch`` random (key, frame) pairs per epoch (see the module docstring)."""

    def __init__(self, store: FrameStore, max_distance: int, samples_per_epoch: int, seed: int = 0):
        self.store = store
        self.max_distance = max_distance
        self.samples_per_epoch = samples_per_epoch
        self.seed = seed
        self.epoch = 1
        lengths = np.array([len(s) for s in store.sequences], dtype=np.float64)
        if (lengths < 2).all():
            raise ValueError("warp-corrector training needs sequences of at least 2 frames")
        self.weights = np.where(lengths >= 2, lengths, 0) / lengths[lengths >= 2].sum()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __getitem__(self, i: int) -> Dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, i])
        seq = int(rng.choice(len(self.weights), p=self.weights))
        n = len(self.store.sequences[seq])
        distance = int(rng.integers(1, min(self.max_distance, n - 1) + 1))
        key = int(rng.integers(0, n - distance))
        frame = key + distance
        if rng.random() < 0.5:
            key, frame = frame, key
        ids = _objects(self.store.frame(seq, key)[1]) or _objects(self.store.frame(seq, frame)[1]) or [1]
        obj = ids[int(rng.integers(0, len(ids)))]
        return pair_tensors(self.store, seq, key, frame, obj, lambda m: soften_mask(m, rng), flip=rng.random() < 0.5)


def validation_pairs(store: FrameStore, max_distance: int) -> List[Tuple[int, int, int, int]]:
    """Fixed (sequence, key, frame, object) pairs: keys every 4 annotated frames, each distance forwards."""
    pairs = []
    for seq, sequence in enumerate(store.sequences):
        for key in range(0, len(sequence) - 1, VALIDATION_STRIDE):
            for distance in range(1, max_distance + 1):
                frame = key + distance
                if frame < len(sequence) and sequence.has_annotation(sequence.frames[frame]):
                    for obj in _objects(store.frame(seq, key)[1]):
                        pairs.append((seq, key, frame, obj))
    return pairs


@torch.no_grad()
def validate(corrector: WarpCorrector, store: FrameStore, pairs: Sequence[Tuple[int, int, int, int]],
             device: torch.device) -> Dict[str, float]:
    """Mean J of each refinement over ``pairs``, overall (``J_<refine>``) and per distance (``J_<refine>_d<d>``)."""
    was_training = corrector.training
    corrector.eval()
    sums: Dict[str, List[float]] = {}
    for seq, key, frame, obj in pairs:
        sample = pair_tensors(store, seq, key, frame, obj, lambda m: blur_mask(m, VALIDATION_SIGMA))
        target = sample["target"][0].numpy()
        warped = sample["warped_prob"][0].numpy()
        guided = guided_correction(warped, guide_image(store.frame(seq, frame)[0]))
        logits = corrector(*(sample[k][None].to(device) for k in ("image", "warped_image", "warped_prob")))
        learned = torch.sigmoid(logits)[0, 0].float().cpu().numpy()
        distance = frame - key
        for refine, prob in zip(REFINEMENTS, (warped, guided, learned)):
            j = region_similarity(prob > 0.5, target > 0.5)
            sums.setdefault(f"J_{refine}", []).append(j)
            sums.setdefault(f"J_{refine}_d{distance}", []).append(j)
    corrector.train(was_training)
    return {k: float(np.mean(v)) for k, v in sorted(sums.items())}


def corrector_loss(logits: torch.Tensor, target: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, float]]:
    """Binary cross-entropy + (1 - soft IoU) per sample, averaged; float32."""
    logits = logits.float()
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits)
    inter = (prob * target).flatten(1).sum(1)
    union = (prob + target - prob * target).flatten(1).sum(1)
    soft_iou = ((inter + 1.0) / (union + 1.0)).mean()
    return bce + (1.0 - soft_iou), {"bce": float(bce.detach()), "soft_iou": float(soft_iou.detach())}


class WarpTrainer:
    """Builds the corrector, its optimiser and data (and resumes); :meth:`fit` trains."""

    def __init__(self, config: WarpTrainConfig, log: Callable[[str], None] = print):
        self.config = config
        self.device = torch.device(config.device)
        self.log = log
        torch.manual_seed(config.seed)
        self.corrector = WarpCorrector(width=config.width).to(self.device)
        self.optimizer = torch.optim.Adam(self.corrector.parameters(), lr=config.lr)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=config.lr_step,
                                                         gamma=config.lr_gamma)
        self.start_epoch = 1
        if config.resume:
            self.start_epoch += resume_module(config.checkpoints, config.name, self.corrector, self.optimizer,
                                              self.scheduler, log)
        reader = DAVISDataset(resolve_root(config.davis_root, "DAVIS_ROOT", "DAVIS"),
                              year=2016 if config.dset == "dv2016" else 2017, split="train")
        kept, held = reader.split_holdout(config.holdout)
        self.train_store = FrameStore([reader.sequence(n) for n in kept], config.size).preload()
        self.val_store = FrameStore([reader.sequence(n) for n in held], config.size).preload()
        self.val_pairs = validation_pairs(self.val_store, config.max_distance)

    def fit(self) -> Dict[str, float]:
        """Train from :attr:`start_epoch` to ``config.epochs``; returns the last epoch's statistics."""
        from torch.utils.tensorboard import SummaryWriter

        cfg = self.config
        Path(cfg.checkpoints).mkdir(parents=True, exist_ok=True)
        atomic_write_json(cfg.config_path, cfg.to_dict())
        dataset = WarpPairs(self.train_store, cfg.max_distance, cfg.samples_per_epoch, cfg.seed)
        self.log(f"warp corrector: {len(self.train_store.sequences)} training sequences, "
                 f"{len(self.val_store.sequences)} held out ({len(self.val_pairs)} validation pairs), "
                 f"{cfg.samples_per_epoch} pairs/epoch at {cfg.size[0]}x{cfg.size[1]} on {self.device}")
        stats: Dict[str, float] = {}
        if self.start_epoch > cfg.epochs:
            self.log(f"nothing to do: epoch {self.start_epoch - 1} of {cfg.epochs} already finished")
            return stats
        writer = SummaryWriter(cfg.tensorboard)
        try:
            for epoch in range(self.start_epoch, cfg.epochs + 1):
                dataset.set_epoch(epoch)
                stats = self.train_epoch(epoch, dataset)
                if self.val_pairs:
                    stats.update(validate(self.corrector, self.val_store, self.val_pairs, self.device))
                save_warp_corrector(cfg.checkpoint_path(epoch), self.corrector, name=cfg.name, epoch=epoch,
                     optimizer=to_cpu(self.optimizer.state_dict()), scheduler=self.scheduler.state_dict(),
                     config=cfg.to_dict(), stats=stats)
                for key, value in stats.items():
                    writer.add_scalar(("val/" if key.startswith("J_") else "train/") + key, value, epoch)
                writer.flush()
                line = (f"epoch {epoch}/{cfg.epochs}: loss {stats['loss']:.4f} (bce {stats['bce']:.4f}, soft IoU "
                        f"{stats['soft_iou']:.3f}), {stats['seconds_per_iteration']:.2f} s/it")
                if self.val_pairs:
                    line += ", held-out J " + ", ".join(f"{r} {stats['J_' + r]:.4f}" for r in REFINEMENTS)
                self.log(line + f" -> {cfg.checkpoint_path(epoch)}")
        finally:
            writer.close()
        save_warp_corrector(cfg.weights_path, self.corrector, name=cfg.name, epoch=cfg.epochs,
                            config=cfg.to_dict(), stats=stats)
        load_warp_corrector(cfg.weights_path)  # what --warp-corrector will read
        self.log(f"weights: {cfg.weights_path} (--warp-refine learned --warp-corrector {cfg.weights_path})")
        return stats

    def train_epoch(self, epoch: int, dataset: WarpPairs) -> Dict[str, float]:
        from tqdm import tqdm

        cfg = self.config
        generator = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, num_workers=cfg.workers,
                            worker_init_fn=seed_worker, generator=generator, drop_last=False,
                            persistent_workers=False)
        n_iters = len(loader) if cfg.max_iters_per_epoch is None else min(len(loader), cfg.max_iters_per_epoch)
        self.corrector.train()
        sums = {"loss": 0.0, "bce": 0.0, "soft_iou": 0.0}
        count = 0
        lr = self.optimizer.param_groups[0]["lr"]
        bar = tqdm(total=n_iters, desc=f"epoch {epoch}/{cfg.epochs}", leave=False, file=sys.stderr,
                   dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 30.0)
        start = time.perf_counter()
        for it, batch in enumerate(loader):
            if it >= n_iters:
                break
            inputs = [batch[k].to(self.device) for k in ("image", "warped_image", "warped_prob")]
            target = batch["target"].to(self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cfg.amp == "bf16"):
                logits = self.corrector(*inputs)
            loss, parts = corrector_loss(logits, target)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            count += 1
            sums["loss"] += float(loss.detach())
            for k, v in parts.items():
                sums[k] += v
            bar.update(1)
        bar.close()
        self.scheduler.step()
        seconds = time.perf_counter() - start
        stats = {k: v / max(count, 1) for k, v in sums.items()}
        stats.update(lr=lr, iterations=count, seconds_per_iteration=seconds / max(count, 1))
        return stats

