"""On-disk cache of first-frame target models for training samples (official layout, spec 4.8).

A file ``<root>/<ftext>-c32_gTrue/<seq_name>/<frame0_id:05d>.<obj_id>.layer4.pth`` holds the
``torch.save`` of a target model's state dict ``{project.weight (32, C4, 1, 1), filter.weight (1, 32, 3, 3)}``,
exactly as the original code writes it, so the published FRTM / G-FRTM caches can be used.
``frame0_id`` is the index of the first frame in the sequence's annotated-frame list.

The cached weights depend on the backbone weights and the training image size; the official layout
assumes ImageNet weights at 480x854. For other settings :func:`cache_variant` appends a suffix to the
folder name (e.g. ``resnet18-c32_gTrue_64x112_bb-random``) so that incompatible target models are
never mixed.

Files are written to a temporary name and renamed, so concurrent writers (several ranks) and crashes never
leave a half-written file. A file that cannot be read or has the wrong keys or shapes is reported with a
warning and treated as a miss (the caller recomputes and overwrites it).
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from base.io import atomic_path

PathLike = Union[str, Path]
TRAIN_C_CHANNELS = 32
OFFICIAL_SIZE = (480, 854)
KEYS = ("project.weight", "filter.weight")


def cache_variant(ftext: str, size: Sequence[int] = OFFICIAL_SIZE, pretrained: str = "imagenet",
                  seed: int = 0, c_channels: int = TRAIN_C_CHANNELS, official_augment: bool = True) -> str:
    """Folder name for a backbone / size setting; ``<ftext>-c32_gTrue`` for the official one.

    Args:
        ftext: backbone name.
        size: (H, W) training size; anything but 480x854 adds ``_<H>x<W>``.
        pretrained: ``imagenet`` (official), ``none`` (the fixed random backbone of
            :data:`models.backbone.RANDOM_BACKBONE_SEED`: adds ``_bb-random``) or a weights file (adds
            ``_bb-<first 10 hex of its sha256>``).
        seed: unused (kept for callers; the random backbone no longer depends on the run's seed).
        c_channels: target-model width.
        official_augment: the target models come from the original's augmentation lists
            (``--official-quirks``); the project's own lists add ``_aug-project``.
    """
    name = f"{ftext}-c{c_channels}_gTrue"
    if tuple(int(s) for s in size) != OFFICIAL_SIZE:
        name += f"_{int(size[0])}x{int(size[1])}"
    if pretrained == "none":
        name += "_bb-random"
    elif pretrained != "imagenet":
        digest = hashlib.sha256(Path(pretrained).read_bytes()).hexdigest()[:10]
        name += f"_bb-{digest}"
    if not official_augment:
        name += "_aug-project"
    return name


class TargetModelCache:
    """Reads and writes cached target-model weights; counts hits and misses.

    Args:
        root: the ``--tmcache`` folder.
        variant: sub-folder name, see :func:`cache_variant`.
        expected_shapes: ``{'project.weight': (c, C4, 1, 1), 'filter.weight': (1, c, 3, 3)}``.
        read_only: never write.
    """

    def __init__(self, root: PathLike, variant: str, expected_shapes: Mapping[str, Tuple[int, ...]],
                 read_only: bool = False):
        self.root = Path(root)
        self.variant = variant
        self.expected_shapes = {k: tuple(v) for k, v in expected_shapes.items()}
        self.read_only = read_only
        self.hits = 0
        self.misses = 0

    def path(self, seq_name: str, frame0_id: int, obj_id: int) -> Path:
        """``<root>/<variant>/<seq_name>/<frame0_id:05d>.<obj_id>.layer4.pth``."""
        return self.root / self.variant / seq_name / f"{int(frame0_id):05d}.{int(obj_id)}.layer4.pth"

    def load(self, seq_name: str, frame0_id: int, obj_id: int,
             device: Union[str, torch.device] = "cpu") -> Optional[Dict[str, Tensor]]:
        """The cached state dict on ``device``, or None (a miss). Bad files give a warning and a miss."""
        path = self.path(seq_name, frame0_id, obj_id)
        state = None
        if path.is_file():
            state = self._read_valid(path, device)
        if state is None:
            self.misses += 1
        else:
            self.hits += 1
        return state

    def _read_valid(self, path: Path, device) -> Optional[Dict[str, Tensor]]:
        try:
            state = torch.load(path, map_location=device, weights_only=True)
        except Exception as err:
            warnings.warn(f"{path}: unreadable target-model cache file ({err.__class__.__name__}); recomputing",
                          stacklevel=3)
            return None
        if not isinstance(state, Mapping) or set(state) != set(KEYS) or \
                not all(isinstance(state[k], Tensor) for k in KEYS):
            warnings.warn(f"{path}: target-model cache file does not hold exactly {', '.join(KEYS)}; recomputing",
                          stacklevel=3)
            return None
        for key in KEYS:
            shape = tuple(state[key].shape)
            if shape != self.expected_shapes[key]:
                warnings.warn(f"{path}: cached {key} has shape {shape}, expected {self.expected_shapes[key]} "
                              "(another backbone or width?); recomputing", stacklevel=3)
                return None
            if not torch.isfinite(state[key]).all():
                warnings.warn(f"{path}: cached {key} has non-finite values; recomputing", stacklevel=3)
                return None
        return {k: state[k].float() for k in KEYS}

    def save(self, seq_name: str, frame0_id: int, obj_id: int, state: Mapping[str, Tensor]) -> Optional[Path]:
        """Write a state dict atomically (no-op when read-only); returns the path written."""
        if self.read_only:
            return None
        path = self.path(seq_name, frame0_id, obj_id)
        payload = {k: state[k].detach().float().cpu().contiguous() for k in KEYS}
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
        return path

    @property
    def hit_rate(self) -> float:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0
