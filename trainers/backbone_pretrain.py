"""Pre-train the ResNet backbone as a foreground/background segmenter: a stated stand-in for ImageNet.

No ImageNet weights exist on the project's machines, and a randomly initialised ResNet separates object
from background worse than copying the first mask (``shared/data/README.md``). This module trains the
whole torchvision ResNet (BatchNorm in train mode, so its running statistics fit the data) with a light
feature-pyramid head that predicts the annotated object of every training frame, then saves the ResNet
alone as a torchvision-format state dict (``conv1.weight`` ... ``layer4.*``, no ``fc``) that
``train.py / evaluate.py --pretrained PATH`` load. The head is thrown away.

Data (``source``):

* ``davis``: every annotated frame of a DAVIS root's 2016 train split (objects merged), minus held-out
  sequences, decoded once into memory at 1.25x the training size; samples are random scale crops (x1.0-1.25);
* ``duts``: the salient-object images of a saliency root (DUTS-TR), read as needed; samples are random crops
  of 70-100 % of the image resized to the training size (:func:`dataset.clips.random_crop`);
* ``mixed``: each sample from either with equal probability, and with probability ``paste`` a DAVIS frame's
  object pasted onto a DUTS image at a random place and scale (copy-paste: one more source of variety for the
  26 training videos' objects, whose backgrounds repeat).

Every sample is then flipped at random and jittered in brightness and contrast. The held-out DAVIS sequences
give a validation IoU (every 5th frame), and with a saliency root its test split (DUTS-TE, ``val_images``
images) another, for TensorBoard and the log.

Resumable: a state file (model, optimiser, scheduler, step, RNG) is written atomically every
``checkpoint_every`` steps and at the end; a run started again with the same output folder continues.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from base.errors import ConfigError, DatasetError
from base.io import atomic_path, atomic_write_json
from models.backbone import BACKBONES, FEATURE_CHANNELS, IMAGENET_MEAN, IMAGENET_STD
from trainers.loop import seed_everything

STATE_FILE = "pretrain_state.pth"
HEADS = ("fpn", "linear")
SOURCES = ("davis", "duts", "mixed")
BACKBONE_FILE = "backbone.pth"
BACKBONE_FP16_FILE = "backbone_fp16.pth"


@dataclass(frozen=True)
class PretrainConfig:
    """Everything a backbone pre-training run depends on (saved as ``config.json`` in ``out``).

    Attributes:
        out: output folder (state file, TensorBoard events, the exported backbone).
        davis_root: DAVIS root with ``ImageSets/2016/train.txt``.
        holdout: sequences of the train split left out of training (validation).
        ftext: ``resnet18`` or ``resnet101``.
        size: (H, W) of the training crops.
        batch_size: crops per step.
        steps: optimiser steps in total.
        lr: peak Adam learning rate (linear warm-up over ``warmup`` steps, then cosine to 1 % of it).
        weight_decay: AdamW weight decay.
        seed: seeds the initialisation (the ResNet is torchvision's random draw after ``manual_seed(seed)``)
            and the sample order.
        checkpoint_every: steps between state files.
        val_every: steps between validation passes.
        source: ``davis``, ``duts`` or ``mixed`` (module docstring).
        saliency_root: the saliency set (DUTS) of ``duts`` / ``mixed``, and of the DUTS-TE validation.
        paste: ``mixed``: probability of a DAVIS object pasted onto a DUTS image.
        val_images: DUTS-TE images of the saliency validation (evenly spaced).
        head: ``fpn`` (the shipped recipe) or ``linear`` (:class:`FgBgSegmenter`).
    """

    out: str
    davis_root: str
    holdout: Tuple[str, ...] = ()
    ftext: str = "resnet18"
    size: Tuple[int, int] = (240, 432)
    batch_size: int = 8
    steps: int = 1200
    lr: float = 1e-3
    warmup: int = 50
    weight_decay: float = 1e-4
    seed: int = 0
    checkpoint_every: int = 100
    val_every: int = 200
    source: str = "davis"
    saliency_root: Optional[str] = None
    paste: float = 0.5
    val_images: int = 300
    head: str = "fpn"

    def __post_init__(self):
        object.__setattr__(self, "size", tuple(int(s) for s in self.size))
        object.__setattr__(self, "holdout", tuple(self.holdout))
        if self.ftext not in BACKBONES:
            raise ConfigError(f"--ftext {self.ftext!r}: choose one of {', '.join(BACKBONES)}")
        if len(self.size) != 2 or min(self.size) < 64:
            raise ConfigError(f"--size H W must both be >= 64, got {self.size}")
        for name, value in (("--batch-size", self.batch_size), ("--steps", self.steps),
                            ("--checkpoint-every", self.checkpoint_every), ("--val-every", self.val_every)):
            if value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        if self.batch_size < 2:
            raise ConfigError("--batch-size must be >= 2 (BatchNorm in train mode)")
        if not self.lr > 0:
            raise ConfigError(f"--lr must be > 0, got {self.lr}")
        if self.source not in SOURCES:
            raise ConfigError(f"--source {self.source!r}: choose one of {', '.join(SOURCES)}")
        if self.source != "davis" and not self.saliency_root:
            raise ConfigError(f"--source {self.source} needs --saliency-root (or SALIENCY_ROOT)")
        if self.head not in HEADS:
            raise ConfigError(f"--head {self.head!r}: choose one of {', '.join(HEADS)}")
        if not 0.0 <= self.paste <= 1.0:
            raise ConfigError(f"--paste must be in [0, 1], got {self.paste}")

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["size"], out["holdout"] = list(self.size), list(self.holdout)
        return out


# ------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------


def load_frames(davis_root: str, names: List[str], size: Tuple[int, int], every: int = 1,
                log: Callable[[str], None] = print) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    """Decode the frames (every ``every``-th) and merged masks of ``names`` at ``size`` (INTER_AREA / nearest)."""
    from dataset.davis import DAVISDataset

    reader = DAVISDataset(davis_root, year=2016, split="train", sequences=names)
    images, masks = [], []
    dsize = (size[1], size[0])
    for seq in reader:
        for i, frame in enumerate(seq.frames):
            if i % every or not seq.has_annotation(frame):
                continue
            image = seq.image(i)
            label = seq.annotation(frame, expected_size=image.shape[:2])
            mask = (label > 0).astype(np.uint8)  # DAVIS 2016: the objects are merged into 1
            images.append(cv2.resize(image, dsize, interpolation=cv2.INTER_AREA))
            masks.append(cv2.resize(mask, dsize, interpolation=cv2.INTER_NEAREST))
    log(f"loaded {len(images)} frames of {len(names)} sequences at {size[0]}x{size[1]}")
    return images, masks


def split_names(davis_root: str, holdout: Tuple[str, ...]) -> Tuple[List[str], List[str]]:
    """(training sequences, held-out sequences) of the root's DAVIS 2016 train split."""
    from dataset.davis import DAVISDataset

    return DAVISDataset(davis_root, year=2016, split="train").split_holdout(holdout)


def random_crop(image: np.ndarray, mask: np.ndarray, size: Tuple[int, int],
                rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """One augmented (H, W, 3) uint8 / (H, W) uint8 training crop of a pre-scaled frame."""
    h, w = size
    src_h, src_w = mask.shape
    scale = rng.uniform(h / src_h, 1.0)  # crop 1/1.25 .. all of the pre-scaled frame, resized to size
    ch, cw = max(h // 2, int(round(src_h * scale))), max(w // 2, int(round(src_w * scale)))
    ch, cw = min(ch, src_h), min(cw, src_w)
    y, x = int(rng.integers(0, src_h - ch + 1)), int(rng.integers(0, src_w - cw + 1))
    image = image[y:y + ch, x:x + cw]
    mask = mask[y:y + ch, x:x + cw]
    if (ch, cw) != (h, w):
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
    return flip_and_jitter(image, mask, rng)


def flip_and_jitter(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """A random horizontal flip and brightness/contrast jitter of one sample."""
    if rng.random() < 0.5:
        image, mask = image[:, ::-1], mask[:, ::-1]
    gain, bias = rng.uniform(0.8, 1.2), rng.uniform(-20, 20)
    image = np.clip(image.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image), np.ascontiguousarray(mask)


def paste_object(image: np.ndarray, mask: np.ndarray, background: np.ndarray,
                 rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """``image``'s object (``mask``) cut to its box, scaled to fill 30-90 % of the background's limiting side and
    pasted at a random place on ``background`` (the output's size): the new frame and its mask."""
    from dataset.clips import place_object

    layer, layer_mask = place_object(image, mask, background.shape[:2], (0.3, 0.9), rng)
    return np.where(layer_mask[..., None] > 0, layer, background), layer_mask


def to_batch(images: List[np.ndarray], masks: List[np.ndarray]) -> Tuple[Tensor, Tensor]:
    """Lists of (H, W, 3) uint8 and (H, W) uint8 -> (B, 3, H, W) float in [0, 255], (B, 1, H, W) float."""
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    y = torch.from_numpy(np.stack(masks)).unsqueeze(1).float()
    return x, y


# ------------------------------------------------------------------------------------------------
# Model
# ------------------------------------------------------------------------------------------------


class FgBgSegmenter(nn.Module):
    """A torchvision ResNet (no ``avgpool``/``fc``) with a light fg/bg head.

    ``forward``: (B, 3, H, W) RGB in [0, 255] -> (B, K, H, W) logits, bilinearly upsampled to the input size:

    * ``head="fpn"`` (K = 1, the shipped recipe): the sum of 1x1 projections (64 channels) of layer2, layer3 and
      layer4 at stride 8, then 3x3 conv, ReLU, 1x1 conv;
    * ``head="linear"`` (K = 3): one 1x1 conv (a linear classifier) on each of layer2, layer3 and layer4 (strides
      8, 16, 32), so each stage's own features must separate the object linearly, as FRTM's linear target model
      on the frozen features needs.
    """

    def __init__(self, ftext: str = "resnet18", seed: int = 0, head: str = "fpn"):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = getattr(torchvision.models, ftext)(weights=None)
        del net.avgpool, net.fc
        self.resnet = net
        # torchvision's layer2 / layer3 / layer4 are the project's layer3 / layer4 / layer5 (models.backbone)
        widths = [FEATURE_CHANNELS[ftext][k] for k in ("layer3", "layer4", "layer5")]
        if head not in HEADS:
            raise ConfigError(f"--head {head!r}: choose one of {', '.join(HEADS)}")
        self.head_kind = head
        if head == "fpn":
            self.lateral = nn.ModuleList(nn.Conv2d(c, 64, 1) for c in widths)
            self.head = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(64, 1, 1))
        else:
            self.linear = nn.ModuleList(nn.Conv2d(c, 1, 1) for c in widths)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255, persistent=False)

    def forward(self, image: Tensor) -> Tensor:
        r = self.resnet
        x = (image - self.mean) / self.std
        x = r.maxpool(r.relu(r.bn1(r.conv1(x))))
        s8 = r.layer2(r.layer1(x))
        s16 = r.layer3(s8)
        s32 = r.layer4(s16)
        if self.head_kind == "linear":
            return torch.cat([F.interpolate(head(s), size=image.shape[-2:], mode="bilinear", align_corners=False)
                              for head, s in zip(self.linear, (s8, s16, s32))], dim=1)
        size = s8.shape[-2:]
        fused = self.lateral[0](s8)
        fused = fused + F.interpolate(self.lateral[1](s16), size=size, mode="bilinear", align_corners=False)
        fused = fused + F.interpolate(self.lateral[2](s32), size=size, mode="bilinear", align_corners=False)
        logits = self.head(F.relu(fused))
        return F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False)


def segmentation_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Binary cross-entropy plus soft Dice (per image and head, averaged): robust to small objects.
    logits (B, K, H, W) of K heads, target (B, 1, H, W)."""
    target = target.expand_as(logits)
    bce = F.binary_cross_entropy_with_logits(logits, target)
    p = torch.sigmoid(logits).flatten(2)
    t = target.flatten(2)
    dice = 1 - (2 * (p * t).sum(2) + 1) / (p.sum(2) + t.sum(2) + 1)
    return bce + dice.mean()


def backbone_state_dict(model: FgBgSegmenter, dtype: torch.dtype = torch.float32) -> Dict[str, Tensor]:
    """The ResNet's torchvision-format state dict (``num_batches_tracked`` kept as int64)."""
    return {k: (v.detach().to(dtype) if v.is_floating_point() else v.detach()).clone().cpu()
            for k, v in model.resnet.state_dict().items()}


@torch.no_grad()
def mean_iou(model: FgBgSegmenter, images: List[np.ndarray], masks: List[np.ndarray], batch: int = 8) -> float:
    """Mean per-frame IoU of ``logits > 0`` (frames whose union is empty count as 1)."""
    was_training = model.training
    model.eval()
    ious = []
    for i in range(0, len(images), batch):
        x, y = to_batch(images[i:i + batch], masks[i:i + batch])
        pred = model(x).mean(1, keepdim=True) > 0  # the heads' mean logit
        gt = y > 0.5
        inter = (pred & gt).flatten(1).sum(1).float()
        union = (pred | gt).flatten(1).sum(1).float()
        ious.extend(torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union)).tolist())
    model.train(was_training)
    return float(np.mean(ious)) if ious else float("nan")


# ------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------


def lr_factor(step: int, steps: int, warmup: int) -> float:
    """Linear warm-up to 1 over ``warmup`` steps, then cosine to 0.01 at ``steps``."""
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(steps - warmup, 1)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


class BackbonePretrainer:
    """Builds the data, the model and the optimiser (resuming from ``out/pretrain_state.pth``); :meth:`fit` trains."""

    def __init__(self, config: PretrainConfig, log: Callable[[str], None] = print):
        self.config = config
        self.log = log
        self.out = Path(config.out)
        torch.manual_seed(config.seed)
        self.model = FgBgSegmenter(config.ftext, seed=config.seed, head=config.head)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, config.steps, config.warmup))
        self.step = 0
        self.rng = np.random.default_rng(config.seed)
        self.history: List[dict] = []
        self._resume()

    def _resume(self) -> None:
        path = self.out / STATE_FILE
        if not path.is_file():
            return
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:
            raise ConfigError(f"{path}: cannot read the pre-training state ({err.__class__.__name__}); "
                              "delete it to start over") from None
        saved = state.get("config", {})
        defaults = PretrainConfig(out="", davis_root="").to_dict()  # a state written before a field existed
        changed = {k: (saved.get(k, defaults[k]), v) for k, v in self.config.to_dict().items()
                   if k not in ("out", "davis_root", "steps", "checkpoint_every", "val_every", "saliency_root",
                                "val_images") and saved.get(k, defaults[k]) != v}
        if changed:
            raise ConfigError(f"{path}: this run was started with other settings ("
                              + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in sorted(changed.items()))
                              + "); use another --out or delete the folder")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.rng.bit_generator.state = state["rng"]
        self.history = list(state.get("history", []))
        self.log(f"resumed from {path} at step {self.step}")

    def _saliency(self):
        """The saliency training set (None for ``davis``) and its test-split validation images and masks."""
        cfg = self.config
        if not cfg.saliency_root:
            return None, ([], [])
        from dataset.saliency import SaliencyDataset, resolve_saliency_root

        root = resolve_saliency_root(cfg.saliency_root)
        train = SaliencyDataset(root, "train") if cfg.source != "davis" else None
        try:
            test = SaliencyDataset(root, "test")
        except DatasetError:
            self.log(f"no saliency test split in {root}: no saliency validation")
            return train, ([], [])
        self.saliency_val_name = test.name
        picks = np.linspace(0, len(test) - 1, min(cfg.val_images, len(test))).round().astype(int)
        dsize = (cfg.size[1], cfg.size[0])
        images, masks = [], []
        for i in picks:
            image, mask = test.read(int(i))
            images.append(cv2.resize(image, dsize, interpolation=cv2.INTER_AREA))
            masks.append(cv2.resize(mask, dsize, interpolation=cv2.INTER_NEAREST))
        self.log(f"saliency: {train.name + ' ' + str(len(train)) + ' images, ' if train else ''}"
                 f"validation on {len(images)} {test.name} images")
        return train, (images, masks)

    def _draw(self, images: List[np.ndarray], masks: List[np.ndarray], saliency) -> Tuple[np.ndarray, np.ndarray]:
        """One ``duts`` / ``mixed`` sample (module docstring)."""
        from dataset.clips import random_crop as crop_fraction

        cfg, rng = self.config, self.rng
        if cfg.source == "mixed" and rng.random() < 0.5:
            i = int(rng.integers(len(images)))
            image, mask = random_crop(images[i], masks[i], cfg.size, rng)
            if rng.random() < cfg.paste:
                background, _ = crop_fraction(*saliency.read(int(rng.integers(len(saliency)))), cfg.size,
                                              (0.7, 1.0), rng)
                image, mask = paste_object(image, mask, background, rng)
            return image, mask
        image, mask = crop_fraction(*saliency.read(int(rng.integers(len(saliency)))), cfg.size, (0.7, 1.0), rng)
        return flip_and_jitter(image, mask, rng)

    def _save_state(self) -> None:
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "step": self.step,
                 "rng": self.rng.bit_generator.state, "config": self.config.to_dict(), "history": self.history}
        with atomic_path(self.out / STATE_FILE) as tmp:
            torch.save(state, tmp)

    def export(self) -> Tuple[Path, Path]:
        """Write ``backbone.pth`` (float32) and ``backbone_fp16.pth`` (float16, to ship) into ``out``."""
        paths = []
        for name, dtype in ((BACKBONE_FILE, torch.float32), (BACKBONE_FP16_FILE, torch.float16)):
            with atomic_path(self.out / name) as tmp:
                torch.save(backbone_state_dict(self.model, dtype), tmp)
            paths.append(self.out / name)
        return paths[0], paths[1]

    def fit(self) -> Dict[str, float]:
        """Train to ``config.steps``; export the backbone; returns the last statistics."""
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        cfg = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        summary = self.out / "summary.json"
        if self.step >= cfg.steps and (self.out / BACKBONE_FILE).is_file() and summary.is_file():
            self.log(f"nothing to do: {self.step} of {cfg.steps} steps done, backbone in {self.out / BACKBONE_FILE}")
            return json.loads(summary.read_text())["stats"]
        atomic_write_json(self.out / "config.json", cfg.to_dict())
        train_names, held = split_names(cfg.davis_root, cfg.holdout)
        big = (int(round(cfg.size[0] * 1.25)), int(round(cfg.size[1] * 1.25)))
        images, masks = (load_frames(cfg.davis_root, train_names, big, log=self.log) if cfg.source != "duts"
                         else ([], []))
        val_images, val_masks = (load_frames(cfg.davis_root, held, cfg.size, every=5, log=self.log)
                                 if held else ([], []))
        saliency, sal_val = self._saliency()
        writer = SummaryWriter(str(self.out / "tensorboard"))
        stats: Dict[str, float] = {}
        self.model.train()
        bar = tqdm(total=cfg.steps, initial=self.step, desc="backbone pre-training", dynamic_ncols=True,
                   file=sys.stderr, mininterval=0.5 if sys.stderr.isatty() else 30.0)
        losses: List[float] = []
        start = time.perf_counter()
        first = self.step
        try:
            while self.step < cfg.steps:
                if cfg.source == "davis":  # the shipped recipe's draws, unchanged
                    picks = self.rng.integers(0, len(images), cfg.batch_size)
                    crops = [random_crop(images[i], masks[i], cfg.size, self.rng) for i in picks]
                else:
                    crops = [self._draw(images, masks, saliency) for _ in range(cfg.batch_size)]
                x, y = to_batch([c[0] for c in crops], [c[1] for c in crops])
                loss = segmentation_loss(self.model(x), y)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                self.scheduler.step()
                self.step += 1
                losses.append(loss.item())
                writer.add_scalar("pretrain/loss", losses[-1], self.step)
                writer.add_scalar("pretrain/lr", self.optimizer.param_groups[0]["lr"], self.step)
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", refresh=False)
                done = self.step == cfg.steps
                if (val_images or sal_val[0]) and (self.step % cfg.val_every == 0 or done):
                    record = {"step": self.step, "loss": float(np.mean(losses[-50:]))}
                    if val_images:
                        record["val_iou"] = mean_iou(self.model, val_images, val_masks)
                        writer.add_scalar("pretrain/val_iou", record["val_iou"], self.step)
                    if sal_val[0]:
                        record["saliency_val_iou"] = mean_iou(self.model, *sal_val)
                        writer.add_scalar("pretrain/saliency_val_iou", record["saliency_val_iou"], self.step)
                    self.history.append(record)
                    self.log(f"step {self.step}/{cfg.steps}: loss {record['loss']:.4f}"
                             + (f", held-out IoU {record['val_iou']:.3f}" if "val_iou" in record else "")
                             + (f", {self.saliency_val_name} IoU {record['saliency_val_iou']:.3f}"
                                if "saliency_val_iou" in record else ""))
                if self.step % cfg.checkpoint_every == 0 or done:
                    self._save_state()
                    writer.flush()
        finally:
            bar.close()
            writer.close()
        seconds = time.perf_counter() - start
        fp32, fp16 = self.export()
        stats = {"steps": self.step, "loss": float(np.mean(losses[-50:])) if losses else float("nan"),
                 "seconds_per_step": seconds / max(self.step - first, 1)}
        for key in ("val_iou", "saliency_val_iou"):
            if self.history and key in self.history[-1]:
                stats[key] = self.history[-1][key]
        atomic_write_json(self.out / "summary.json", {"config": cfg.to_dict(), "stats": stats,
                                                      "history": self.history})
        self.log(f"backbone written to {fp32} (float16 copy {fp16}); " + json.dumps(stats))
        return stats


def run(config: PretrainConfig, log: Optional[Callable[[str], None]] = None) -> Dict[str, float]:
    """Pre-train with ``config`` (resuming) and export the backbone."""
    seed_everything(config.seed)
    return BackbonePretrainer(config, log=log or (lambda m: print(m, flush=True))).fit()
