"""First-frame target models of training samples: from the cache, or trained on the augmented first frame.

Training uses the FRTM training preset (:meth:`TargetModelConfig.train`: c=32, memory 20, 15 first-frame
samples, no pixel weighting) and never updates the target models online. Each sample's target model is a
pure function of (seed, dataset, sequence, object, first frame): its random initial weights and its
augmentation are seeded from them, so a cache miss recomputes the same weights everywhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import warnings
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from lib.engine.augment import OFFICIAL_LISTS, PROJECT_LISTS, augment_first_frame
from models.backbone import FeatureExtractor
from models.target_model import OnlineTargetModel, TargetModel, TargetModelConfig
from trainers.tmcache import TargetModelCache


@dataclass(frozen=True)
class SampleKey:
    """Identifies a sample's first-frame target model (the cache key, plus the dataset for seeding)."""

    dataset: str
    seq_name: str
    obj_id: int
    frame0_id: int
    cacheable: bool = True  # False for generated first frames that never recur (synthetic clips)

    def seed(self, base: int) -> int:
        text = f"{base}:{self.dataset}:{self.seq_name}:{self.obj_id}:{self.frame0_id}"
        return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


class FirstFrameTargetModels:
    """Provides each sample's fixed target model.

    Args:
        backbone: the frozen feature extractor (its ``layer4`` features feed the target model).
        config: target-model preset (training: :meth:`TargetModelConfig.train`).
        cache: on-disk cache, or None to always train.
        seed: base seed of the per-sample seeds.
        amp: ``"bf16"`` runs the backbone on the augmented frames under autocast (the least-squares fit
            itself always runs in float32).
        official_lists: augment with the original's option lists and their duplicates
            (:data:`lib.engine.augment.OFFICIAL_LISTS`, ``--official-quirks``).
    """

    def __init__(self, backbone: FeatureExtractor, config: TargetModelConfig,
                 cache: Optional[TargetModelCache] = None, seed: int = 0, amp: Optional[str] = None,
                 official_lists: bool = False):
        self.backbone = backbone
        self.config = config
        self.cache = cache
        self.seed = seed
        self.amp = amp
        self.lists = OFFICIAL_LISTS if official_lists else PROJECT_LISTS
        self.in_channels = backbone.channels["layer4"]

    def get(self, image0: Tensor, label0: Tensor, key: SampleKey) -> Tuple[TargetModel, bool]:
        """The target model of one sample and whether it came from the cache.

        Args:
            image0: (3,H,W) uint8 first frame (any device).
            label0: (1,H,W) binary label of the object on it.
            key: the sample's identity.
        Returns:
            (model in eval mode without gradients on the backbone's device, cache hit).
        """
        device = next(self.backbone.buffers()).device
        model = TargetModel(self.in_channels, self.config.c_channels)
        state = None
        cache = self.cache if key.cacheable else None
        if cache is not None:
            state = cache.load(key.seq_name, key.frame0_id, key.obj_id, device=device)
        hit = state is not None
        if state is None:
            state = self.train(image0, label0, key)
            if cache is not None:
                self.cache.save(key.seq_name, key.frame0_id, key.obj_id, state)
        model.load_state_dict(state)
        model.to(device).eval().requires_grad_(False)
        return model, hit

    def _autocast(self, device: torch.device):
        if self.amp == "bf16":
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train(self, image0: Tensor, label0: Tensor, key: SampleKey) -> dict:
        """Fit a new target model on the augmented first frame; returns its state dict (float32)."""
        device = next(self.backbone.buffers()).device
        seed = key.seed(self.seed)
        mask = label0.reshape(image0.shape[-2:]).cpu()
        image = image0.cpu()
        if bool((mask > 0).any()):
            images, labels = augment_first_frame(image, mask, self.config.num_aug, np.random.default_rng(seed),
                                                 self.lists)
        else:
            warnings.warn(f"{key.seq_name} object {key.obj_id}: empty first-frame mask (frame {key.frame0_id}) "
                          "at the training size; its target model is fitted to the empty frame alone", stacklevel=2)
            images, labels = image[None], (mask > 0).to(torch.uint8)[None, None]
        with torch.no_grad(), self._autocast(device):
            feats = self.backbone(images.to(device))["layer4"].float()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = TargetModel(self.in_channels, self.config.c_channels)
        with torch.enable_grad(), torch.inference_mode(False):
            OnlineTargetModel(model, self.config).init(feats.clone(), labels.to(device).float())
        return {k: v.detach().float() for k, v in model.state_dict().items()}


def apply_target_models(models: list, layer4: Tensor) -> Tensor:
    """Scores of each element's own target model: layer4 (B,C4,H16,W16) -> (B,1,H16,W16), float32, no grad."""
    with torch.no_grad():
        feats = layer4.float()
        return torch.cat([m(feats[b:b + 1]) for b, m in enumerate(models)], dim=0)
