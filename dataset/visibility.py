"""Per-frame object visibility for training samples (spec 4.1), computed from the annotations.

A training sample starts on a frame where its object is visible. Visibility is a rule on the
object's pixel count in each annotated frame:

* YouTube-VOS: visible iff it has at least 100 pixels.
* DAVIS: visible iff it has at least 100 pixels *and* at least 25% of its largest pixel count in
  the sequence. The original code (FRTM's ``lib/training_datasets.py``, whose flags Reuse-VOS ships as
  ``lib/davis_meta.pth``) also has per-sequence thresholds, never-occluded sequences and frame overrides
  for DAVIS 2017 train: :data:`OFFICIAL_DAVIS_VISIBILITY`, used with ``--official-quirks``.
* The project's synthetic videos (``--dset synthetic``) use the DAVIS rule with the 100 pixels
  scaled by the frame area relative to 480x854 (see :data:`SYNTHETIC_VISIBILITY`), because their
  small frames (e.g. 48x80) hold objects of well under 100 pixels.

What is cached is the raw pixel count of every object in every annotated frame, not the flags, so
the rule can change without invalidating anything. :class:`PixelCountCache` keeps one small JSON
file per (dataset, root, sequence), written atomically; a corrupt file is recomputed with a warning
and a stale one (the sequence's frames or objects changed) silently.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from base.io import atomic_write_json
from dataset.sequence import VideoSequence

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]

REFERENCE_AREA = 480 * 854  # the DAVIS 480p / training frame area the 100-pixel rule was made for
CACHE_VERSION = 1


@dataclass(frozen=True)
class VisibilityRule:
    """When an object counts as visible on a frame.

    Attributes:
        min_pixels: fewest pixels a visible object has.
        min_fraction: fewest pixels as a fraction of the object's largest count in the sequence.
        reference_area: when set, ``min_pixels`` is for frames of this area (H * W) and is scaled
            by ``frame area / reference_area`` for the actual frame size.
    """

    min_pixels: float = 100.0
    min_fraction: float = 0.0
    reference_area: Optional[int] = None

    def min_pixels_for(self, size: Tuple[int, int]) -> float:
        """The pixel threshold for frames of ``size`` (H, W)."""
        if self.reference_area is None:
            return float(self.min_pixels)
        return float(self.min_pixels) * size[0] * size[1] / self.reference_area

    def visible(self, pixels, size: Tuple[int, int]) -> np.ndarray:
        """(N,) bool: visibility on each frame, from the object's (N,) pixel counts on frames of ``size``."""
        pixels = np.asarray(pixels, dtype=np.int64)
        peak = pixels.max(initial=0)
        return (pixels > 0) & (pixels >= self.min_pixels_for(size)) & (pixels >= self.min_fraction * peak)


    def visible_in(self, sequence: str, obj_id: int, pixels, size: Tuple[int, int]) -> np.ndarray:
        """:meth:`visible` for object ``obj_id`` of ``sequence`` (the general rules ignore the names)."""
        return self.visible(pixels, size)


@dataclass(frozen=True)
class OfficialDavisVisibility(VisibilityRule):
    """The original DAVIS 2017 training visibility (facts from FRTM's ``DAVISDataset._generate_occlusions``).

    An object is occluded on a frame when its pixels / (its largest count in the sequence + 0.001) is below
    the sequence's threshold (0.25 unless listed in :attr:`thresholds`), or when it never appears; the
    :attr:`never_occluded` sequences skip that test; frame overrides then make some frames visible; last,
    fewer than 100 pixels is occluded whatever else holds. Counts are taken at the annotations' own size.
    """

    min_pixels: float = 100.0
    min_fraction: float = 0.25
    never_occluded: Tuple[str, ...] = ("bus", "car-turn", "drift-turn", "kid-football", "koala", "mallard-fly",
                                       "motocross-bumps", "motorbike", "rallye", "snowboard", "train", "upside-down")
    thresholds: Tuple[Tuple[str, float], ...] = (
        ("bmx-bumps", 0.5), ("disk-jockey", 0.5), ("boxing-fisheye", 0.2), ("cat-girl", 0.2), ("dog-gooses", 0.2),
        ("tractor-sand", 0.1), ("drone", 0.1))
    # (sequence, object id or None for all, first frame, end frame): frames made visible
    overrides: Tuple[Tuple[str, Optional[int], int, Optional[int]], ...] = (
        ("classic-car", None, 0, 56), ("drone", 1, 0, 17), ("drone", 1, 24, 60), ("night-race", None, 0, 29),
        ("night-race", 2, 0, None))

    def visible_in(self, sequence: str, obj_id: int, pixels, size: Tuple[int, int]) -> np.ndarray:
        pixels = np.asarray(pixels, dtype=np.float64)
        if sequence in self.never_occluded:
            occluded = np.zeros(pixels.shape, dtype=bool)
        else:
            threshold = dict(self.thresholds).get(sequence, self.min_fraction)
            peak = pixels.max(initial=0)
            occluded = (pixels / (peak + 0.001) < threshold) | (peak == 0)
        for name, obj, start, end in self.overrides:
            if name == sequence and obj in (None, obj_id):
                occluded[start:end] = False
        return ~(occluded | (pixels < self.min_pixels_for(size)))


YTVOS_VISIBILITY = VisibilityRule(min_pixels=100, min_fraction=0.0)
OFFICIAL_DAVIS_VISIBILITY = OfficialDavisVisibility()
DAVIS_VISIBILITY = VisibilityRule(min_pixels=100, min_fraction=0.25)
SYNTHETIC_VISIBILITY = VisibilityRule(min_pixels=100, min_fraction=0.25, reference_area=REFERENCE_AREA)


@dataclass(frozen=True)
class ObjectPixels:
    """Pixel counts of every object of a sequence on its annotated frames.

    Attributes:
        frames: the annotated frame names, in temporal order.
        size: (H, W) of the annotations.
        pixels: object id -> (N,) int64 pixel counts, one per entry of ``frames``.
    """

    frames: Tuple[str, ...]
    size: Tuple[int, int]
    pixels: Dict[int, np.ndarray]

    def to_json(self, dataset: str, root: str, sequence: str) -> dict:
        return {"version": CACHE_VERSION, "dataset": dataset, "root": root, "sequence": sequence,
                "size": list(self.size), "frames": list(self.frames),
                "pixels": {str(k): [int(v) for v in counts] for k, counts in self.pixels.items()}}

    @staticmethod
    def from_json(data: dict) -> ObjectPixels:
        """Parse :meth:`to_json`'s output; ``ValueError`` / ``KeyError`` / ``TypeError`` when malformed."""
        if data["version"] != CACHE_VERSION:
            raise ValueError(f"cache version {data['version']} is not {CACHE_VERSION}")
        frames = tuple(str(f) for f in data["frames"])
        h, w = (int(v) for v in data["size"])
        pixels = {int(k): np.asarray(v, dtype=np.int64) for k, v in data["pixels"].items()}
        for counts in pixels.values():
            if counts.shape != (len(frames),) or (counts < 0).any():
                raise ValueError("pixel counts do not match the frames")
        return ObjectPixels(frames=frames, size=(h, w), pixels=pixels)


def annotated_frames(seq: VideoSequence) -> Tuple[str, ...]:
    """The frames of ``seq`` that have an annotation, in temporal order."""
    return tuple(f for f in seq.frames if seq.has_annotation(f))


def count_object_pixels(seq: VideoSequence) -> ObjectPixels:
    """Read every annotation of ``seq`` and count each object's pixels (void / unknown ids ignored)."""
    frames = annotated_frames(seq)
    counts = np.zeros((len(frames), 256), dtype=np.int64)
    size: Tuple[int, int] = (0, 0)
    for k, frame in enumerate(frames):
        labels = seq.annotation(frame)
        size = (int(labels.shape[0]), int(labels.shape[1]))
        counts[k] = np.bincount(labels.ravel(), minlength=256)
    return ObjectPixels(frames=frames, size=size,
                        pixels={obj: counts[:, obj].copy() for obj in seq.object_ids})


class PixelCountCache:
    """Object pixel counts of sequences, read from a JSON cache or computed (and then cached).

    Args:
        cache_dir: folder of the cache; ``None`` computes everything in memory every time.
        workers: threads reading annotations when counts must be computed.

    Layout: ``<cache_dir>/visibility/<dataset>-<hash of the resolved root>/<sequence>.json``.
    """

    def __init__(self, cache_dir: Optional[PathLike] = None, workers: Optional[int] = None):
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None
        self.workers = max(1, workers if workers is not None else min(8, os.cpu_count() or 1))

    def path(self, dataset: str, root: PathLike, sequence: str) -> Optional[Path]:
        """Cache file of one sequence (``None`` without a cache folder)."""
        if self.cache_dir is None:
            return None
        root_key = hashlib.sha1(str(Path(root).expanduser().resolve()).encode()).hexdigest()[:12]
        return self.cache_dir / "visibility" / f"{dataset}-{root_key}" / f"{sequence}.json"

    def _load(self, path: Path, seq: VideoSequence) -> Optional[ObjectPixels]:
        if not path.is_file():
            return None
        try:
            found = ObjectPixels.from_json(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as err:
            logger.warning("%s: corrupt visibility cache file (%s: %s); recomputing it",
                           path, err.__class__.__name__, err)
            return None
        if found.frames != annotated_frames(seq) or set(found.pixels) != set(seq.object_ids):
            logger.info("%s: stale visibility cache (the sequence's frames or objects changed); "
                        "recomputing it", path)
            return None
        return found

    def get(self, sequences: List[VideoSequence], root: PathLike) -> List[ObjectPixels]:
        """Pixel counts of each sequence (all from the dataset at ``root``), in order."""
        results: List[Optional[ObjectPixels]] = [None] * len(sequences)
        paths = [self.path(seq.dataset, root, seq.name) for seq in sequences]
        for i, (seq, path) in enumerate(zip(sequences, paths)):
            if path is not None:
                results[i] = self._load(path, seq)
        missing = [i for i, r in enumerate(results) if r is None]
        if missing:
            where = f"caching in {self.cache_dir / 'visibility'}" if self.cache_dir else "not cached"
            logger.info("counting object pixels in the annotations of %d sequence(s) of %s (%s)",
                        len(missing), root, where)

            def compute(i: int) -> ObjectPixels:
                counts = count_object_pixels(sequences[i])
                if paths[i] is not None:
                    atomic_write_json(paths[i], counts.to_json(sequences[i].dataset, str(root),
                                                               sequences[i].name))
                return counts

            if self.workers > 1 and len(missing) > 1:
                with ThreadPoolExecutor(max_workers=self.workers) as pool:
                    computed = list(pool.map(compute, missing))
            else:
                computed = [compute(i) for i in missing]
            for i, counts in zip(missing, computed):
                results[i] = counts
        return results  # type: ignore[return-value]
