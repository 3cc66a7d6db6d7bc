"""Salient-object image/mask pairs: DUTS and the other saliency sets in their release layouts.

VOS methods pre-train on static images with pixel masks turned into synthetic clips (the reuse-gate paper's
Table 1 column "Syn"; TTVOS, STM, STCN, XMem). A root holds one of these layouts (found in this order)::

    DUTS-TR/DUTS-TR-Image/*.jpg + DUTS-TR/DUTS-TR-Mask/*.png    DUTS (Wang et al. 2017), split "train"
    DUTS-TE/DUTS-TE-Image/*.jpg + DUTS-TE/DUTS-TE-Mask/*.png    DUTS, split "test"
    images/*.jpg + ground_truth_mask/*.png                      ECSSD
    imgs/*.png|jpg + gt/*.png                                   HKU-IS
    Imgs/*.jpg + Imgs/*.png                                     MSRA10K (masks beside the images)

An image pairs with the mask of the same stem. Masks are 8-bit grey with anti-aliased edges: read as grey
(a few DUTS masks are RGB PNGs) and thresholded at 128 (one id for every salient object of the image). A root
given by ``--saliency-root`` or ``$SALIENCY_ROOT`` may also point straight at a DUTS parent folder holding
both splits. Errors name the file and the problem in one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from base.errors import ConfigError, DatasetError
from base.io import read_image_grey, read_image_rgb
from dataset.registry import resolve_root

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")
MASK_THRESHOLD = 128
SPLITS = ("train", "test")


@dataclass(frozen=True)
class Layout:
    """One saliency set's folder pair under a root (``split``: which DUTS split it is, or None)."""

    name: str
    images: str
    masks: str
    split: Optional[str] = None


LAYOUTS = (
    Layout("DUTS-TR", "DUTS-TR/DUTS-TR-Image", "DUTS-TR/DUTS-TR-Mask", "train"),
    Layout("DUTS-TE", "DUTS-TE/DUTS-TE-Image", "DUTS-TE/DUTS-TE-Mask", "test"),
    Layout("ECSSD", "images", "ground_truth_mask"),
    Layout("HKU-IS", "imgs", "gt"),
    Layout("MSRA10K", "Imgs", "Imgs"),
)


def resolve_saliency_root(flag_value: Optional[str]) -> Path:
    """The saliency root from ``--saliency-root``, else ``$SALIENCY_ROOT``, else a one-line error."""
    root = Path(resolve_root(flag_value, "SALIENCY_ROOT", "saliency"))
    if not root.is_dir():
        raise DatasetError("saliency root not found (is --saliency-root / SALIENCY_ROOT right?)", root)
    return root


def read_saliency_mask(path: Path) -> np.ndarray:
    """(H, W) uint8 0/1: the grey mask (RGB ones converted to grey) >= ``MASK_THRESHOLD``."""
    return (read_image_grey(path) >= MASK_THRESHOLD).astype(np.uint8)


class SaliencyDataset:
    """The image/mask pairs of one saliency set.

    Args:
        root: a folder holding one of :data:`LAYOUTS` (the first that exists is used, or the DUTS one of
            ``split``).
        split: for a DUTS root, ``"train"`` (DUTS-TR) or ``"test"`` (DUTS-TE); other sets have one split.
    """

    def __init__(self, root: Path | str, split: Optional[str] = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError("saliency root not found", self.root)
        if split is not None and split not in SPLITS:
            raise ConfigError(f"saliency split must be one of {', '.join(SPLITS)}, got {split!r}")
        self.layout = self._find_layout(split)
        self.pairs = self._pairs()

    def _find_layout(self, split: Optional[str]) -> Layout:
        for layout in LAYOUTS:
            if layout.split is not None and split is not None and layout.split != split:
                continue
            if (self.root / layout.images).is_dir() and (self.root / layout.masks).is_dir():
                return layout
        known = "; ".join(f"{lay.images} + {lay.masks}" for lay in LAYOUTS)
        wanted = f" ({split} split)" if split else ""
        raise DatasetError(f"no saliency image/mask folders{wanted} found; expected one of: {known}", self.root)

    def _pairs(self) -> List[Tuple[Path, Path]]:
        images_dir, masks_dir = self.root / self.layout.images, self.root / self.layout.masks
        same_folder = images_dir == masks_dir
        masks = {}
        for path in masks_dir.iterdir():
            if path.suffix.lower() == ".png":
                masks[path.stem] = path
        pairs = []
        for path in sorted(images_dir.iterdir()):
            if path.suffix.lower() not in IMAGE_EXTS or (same_folder and path.suffix.lower() == ".png"):
                continue
            mask = masks.get(path.stem)
            if mask is not None and mask != path:
                pairs.append((path, mask))
        if not pairs:
            raise DatasetError(f"no image with a mask of the same name in {self.layout.images} and "
                               f"{self.layout.masks}", self.root)
        return pairs

    @property
    def name(self) -> str:
        return self.layout.name

    def __len__(self) -> int:
        return len(self.pairs)

    def read(self, index: int) -> Tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) uint8 RGB and (H, W) uint8 0/1 mask of pair ``index``; sizes must agree."""
        image_path, mask_path = self.pairs[index]
        image = read_image_rgb(image_path)
        mask = read_saliency_mask(mask_path)
        if mask.shape != image.shape[:2]:
            raise DatasetError(f"mask is {mask.shape[1]}x{mask.shape[0]} but its image {image_path.name} is "
                               f"{image.shape[1]}x{image.shape[0]}", mask_path)
        return image, mask

    def subset(self, indices: Sequence[int]) -> SaliencyDataset:
        """A view on some pairs (e.g. a validation slice), same root and layout."""
        view = object.__new__(SaliencyDataset)
        view.root, view.layout = self.root, self.layout
        view.pairs = [self.pairs[i] for i in indices]
        return view
