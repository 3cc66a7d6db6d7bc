"""Training samples for G-FRTM: ``seq_len`` frames of one (sequence, object) pair, resized and binarised.

Datasets (``--dset``), as the original code trains (spec 4.1):

* ``dv2017``: DAVIS 2017 ``ImageSets/2017/train.txt``, every (sequence, object) pair, each pair
  :data:`DAVIS_EPOCH_REPEATS` (8) times per epoch.
* ``ytvos2018`` (alias ``yt2018``): YouTube-VOS 2018 train restricted to the ``jjtrain`` list, on its
  5-stride annotated frames; sequences with fewer than ``seq_len + 2`` annotated frames are dropped;
  each epoch is a seeded random choice of :data:`YTVOS_SAMPLES_PER_EPOCH` (4000) pairs (all if fewer).
* ``all``: both, concatenated.
* ``synthetic``: the project's generator (:func:`dataset.synthetic.generate_davis2017`), written once
  into ``synthetic_root`` in the DAVIS 2017 layout and read like ``dv2017``.

A pair takes part only if its object is visible (:mod:`dataset.visibility`) on a frame a sample can
start on; which frames a sample holds is :mod:`dataset.sampling`'s business (``temporal`` by default,
``official`` for the original unordered composition).

Determinism: :meth:`TrainingSet.set_epoch` draws the epoch's pair list from ``(seed, epoch)`` and
item ``i`` draws its frames from ``(seed, epoch, i)``, so every item is the same whichever worker
loads it and in whatever order. All ranks of a distributed run must use the same ``seed`` (the
DistributedSampler splits one shared list); a DataLoader re-creates its workers every epoch unless
``persistent_workers=True``, so call :meth:`~TrainingSet.set_epoch` before iterating it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import cv2
import numpy as np
import torch

from base.errors import ConfigError, DatasetError
from dataset.davis import DAVISDataset
from dataset.registry import DATASET_ALIASES, TRAINING_DATASETS, resolve_root
from dataset.sampling import SAMPLINGS, check_sampling, first_frame_candidates, sample_frames
from dataset.sequence import VideoSequence
from dataset.synthetic import GENERATOR_VERSION, generate_davis2017
from dataset.visibility import (
    DAVIS_VISIBILITY,
    OFFICIAL_DAVIS_VISIBILITY,
    SYNTHETIC_VISIBILITY,
    YTVOS_VISIBILITY,
    PixelCountCache,
    VisibilityRule,
)
from dataset.youtubevos import YouTubeVOSDataset

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]

__all__ = ["TRAINING_DATASETS", "SAMPLINGS", "TrainingPair", "TrainingSource", "TrainingSet",
           "build_training_set", "prepare_synthetic_davis", "resize_sample_frame"]

DAVIS_EPOCH_REPEATS = 8
YTVOS_SAMPLES_PER_EPOCH = 4000
# Largest step between consecutive frames of a temporal sample, in annotated frames. DAVIS annotates
# every frame (24-30 fps): steps of 1-3 frames cover the inference condition (step 1) and faster
# motion. YouTube-VOS annotates every 5th frame: steps of 1-2 are 5-10 video frames.
DEFAULT_MAX_GAP = {"davis": 3, "ytvos": 2}
SYNTHETIC_SIZE = (240, 432)  # (H, W) the synthetic videos are generated at (then resized like DAVIS)
SYNTHETIC_TRAIN_VIDEOS = 4
SYNTHETIC_EPOCH_REPEATS = 2  # short epochs, so a CPU run of a few epochs takes minutes


# ------------------------------------------------------------------------------------------------
# Pairs and sources
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TrainingPair:
    """One (sequence, object) pair a sample can be drawn from.

    Attributes:
        sequence: the video.
        frames: its annotated frame names in temporal order (positions index this tuple).
        obj_id: the object.
        visible: (N,) bool, the object's visibility on each of ``frames``.
    """

    sequence: VideoSequence
    frames: Tuple[str, ...]
    obj_id: int
    visible: np.ndarray


@dataclass(frozen=True, eq=False)
class TrainingSource:
    """The pairs of one dataset and how an epoch uses them.

    Attributes:
        name: the dataset's ``--dset`` name, written into every sample's meta.
        pairs: its (sequence, object) pairs.
        max_gap: largest step of a temporal sample, in annotated frames.
        always_area: resize images with INTER_AREA even when enlarging (DAVIS; the original meant to, but
            resizes bilinearly, see :func:`resize_sample_frame`).
        epoch_repeats: each pair this many times per epoch (when ``samples_per_epoch`` is None).
        samples_per_epoch: a random choice of this many distinct pairs per epoch (all if fewer).
    """

    name: str
    pairs: Tuple[TrainingPair, ...]
    max_gap: int
    always_area: bool
    epoch_repeats: int = 1
    samples_per_epoch: Optional[int] = None

    def epoch_pairs(self, seed: int, epoch: int, index: int) -> List[int]:
        """Indices into :attr:`pairs` making up ``epoch`` (``index``: this source's place in the set)."""
        if self.samples_per_epoch is None:
            return list(range(len(self.pairs))) * self.epoch_repeats
        count = min(self.samples_per_epoch, len(self.pairs))
        rng = np.random.default_rng([seed, epoch, index, 1])
        return [int(k) for k in rng.choice(len(self.pairs), size=count, replace=False)]


def collect_pairs(sequences: List[VideoSequence], rule: VisibilityRule, cache: PixelCountCache, root: PathLike,
                  seq_len: int, sampling: str, min_seq_length: int = 0) -> Tuple[List[TrainingPair], Dict[str, int]]:
    """The (sequence, object) pairs of ``sequences`` that can make a sample.

    Sequences with fewer than ``min_seq_length`` annotated frames are dropped; objects never visible,
    or with no frame a sample can start on, are skipped; a sequence without any visible object is
    skipped with a warning.

    Returns:
        the pairs, and counts of what was left out (``short``, ``no_visible_object``,
        ``invisible_objects``, ``no_start_frame``).
    """
    skipped = {"short": 0, "no_visible_object": 0, "invisible_objects": 0, "no_start_frame": 0}
    kept_sequences = []
    for seq in sequences:
        n = sum(1 for f in seq.frames if seq.has_annotation(f))
        if n < min_seq_length:
            skipped["short"] += 1
        else:
            kept_sequences.append(seq)
    if skipped["short"]:
        logger.info("%s: %d sequence(s) with fewer than %d annotated frames dropped", root, skipped["short"],
                    min_seq_length)
    pairs: List[TrainingPair] = []
    for seq, counts in zip(kept_sequences, cache.get(kept_sequences, root)):
        any_visible = False
        for obj in seq.object_ids:
            visible = rule.visible_in(seq.name, obj, counts.pixels[obj], counts.size)
            if not visible.any():
                skipped["invisible_objects"] += 1
                continue
            any_visible = True
            if first_frame_candidates(visible, seq_len, sampling).size == 0:
                skipped["no_start_frame"] += 1
                continue
            pairs.append(TrainingPair(sequence=seq, frames=counts.frames, obj_id=obj, visible=visible))
        if not any_visible:
            skipped["no_visible_object"] += 1
            logger.warning("%s: sequence %s skipped: no object is ever visible (rule: >= %.1f px and >= %d%% "
                           "of its largest size)", root, seq.name, rule.min_pixels_for(counts.size),
                           round(100 * rule.min_fraction))
    if skipped["no_start_frame"]:
        logger.warning("%s: %d object(s) skipped: no visible frame can start a %s sample of %d frames", root,
                       skipped["no_start_frame"], sampling, seq_len)
    return pairs, skipped


def _describe_skipped(skipped: Dict[str, int]) -> str:
    words = {"short": "sequence(s) too short", "no_visible_object": "sequence(s) without a visible object",
             "invisible_objects": "object(s) never visible", "no_start_frame": "object(s) without a start frame"}
    parts = [f"{n} {words[k]}" for k, n in skipped.items() if n]
    return ", ".join(parts) if parts else "nothing usable"


def _source(name: str, sequences: List[VideoSequence], root: PathLike, *, rule: VisibilityRule,
            cache: PixelCountCache, seq_len: int, sampling: str, max_gap: int, always_area: bool,
            min_seq_length: int = 0, epoch_repeats: int = 1,
            samples_per_epoch: Optional[int] = None) -> TrainingSource:
    pairs, skipped = collect_pairs(sequences, rule, cache, root, seq_len, sampling, min_seq_length)
    if not pairs:
        raise DatasetError(f"no training sample in {name} ({len(sequences)} sequence(s): "
                           f"{_describe_skipped(skipped)}; seq_len {seq_len}, {sampling} sampling)", root)
    logger.info("%s: %d sequence(s), %d (sequence, object) pairs", name, len({id(p.sequence) for p in pairs}),
                len(pairs))
    return TrainingSource(name=name, pairs=tuple(pairs), max_gap=max_gap, always_area=always_area,
                          epoch_repeats=epoch_repeats, samples_per_epoch=samples_per_epoch)


# ------------------------------------------------------------------------------------------------
# The dataset
# ------------------------------------------------------------------------------------------------


def resize_sample_frame(image: np.ndarray, mask: np.ndarray, size: Tuple[int, int],
                        always_area: bool, official: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """Resize an (h, w, 3) image and an (h, w) binary mask to ``size`` (H, W).

    The image uses INTER_AREA when shrinking (or always, with ``always_area``) and INTER_CUBIC when
    enlarging: the area average keeps fine detail without aliasing when shrinking, which the original's
    bilinear resize does not. With ``official`` it is INTER_LINEAR, what the original code does in fact (it
    passes its INTER_AREA / INTER_CUBIC flag as ``dst``; training fixture README, behaviour 11). The mask
    uses INTER_NEAREST. Sizes that already match are returned unchanged.
    """
    h, w = image.shape[:2]
    if (h, w) == tuple(size):
        return image, mask
    dsize = (size[1], size[0])
    shrinking = size[0] * size[1] <= h * w
    interpolation = cv2.INTER_AREA if always_area or shrinking else cv2.INTER_CUBIC
    if official:
        interpolation = cv2.INTER_LINEAR
    return (cv2.resize(image, dsize, interpolation=interpolation),
            cv2.resize(mask, dsize, interpolation=cv2.INTER_NEAREST))


class TrainingSet(torch.utils.data.Dataset):
    """Samples of ``seq_len`` frames of one (sequence, object) pair, from one or more sources.

    Args:
        sources: the datasets, concatenated in this order.
        seq_len: frames per sample.
        size: (H, W) every frame is resized to.
        sampling: ``temporal`` or ``official`` (see :mod:`dataset.sampling`).
        seed: the seed of every random choice (>= 0).

    Item ``i`` (see the module docstring for determinism) is a dict:

    * ``images``: (T, 3, H, W) uint8 RGB;
    * ``labels``: (T, 1, H, W) uint8 in {0, 1}, the chosen object;
    * ``meta``: a JSON string ``{"dataset", "seq_name", "obj_id", "frames", "frame0_id"}``:
      ``frames`` the frame names, ``frame0_id`` the index of the first frame in the sequence's
      annotated-frame list (spec 4.8: the i-th 5-stride frame for YouTube-VOS), used by the
      target-model cache.
    """

    def __init__(self, sources: List[TrainingSource], *, seq_len: int = 6, size: Tuple[int, int] = (480, 854),
                 sampling: str = "temporal", seed: int = 0, official_resize: bool = False):
        if not sources:
            raise ConfigError("a training set needs at least one source")
        self.sources = tuple(sources)
        self.seq_len = _check_seq_len(seq_len)
        self.size = _check_size(size)
        self.sampling = check_sampling(sampling)
        if int(seed) < 0:
            raise ConfigError(f"seed must be >= 0, got {seed}")
        self.seed = int(seed)
        self.official_resize = bool(official_resize)
        self.epoch = 0
        self.samples: List[Tuple[int, int]] = []
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Draw epoch ``epoch``'s list of (source, pair) samples (a function of ``(seed, epoch)``)."""
        if int(epoch) < 0:
            raise ConfigError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)
        self.samples = [(s, p) for s, source in enumerate(self.sources)
                        for p in source.epoch_pairs(self.seed, self.epoch, s)]

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def num_pairs(self) -> int:
        return sum(len(s.pairs) for s in self.sources)

    def describe(self) -> str:
        """One line per source: pairs and samples per epoch."""
        lines = []
        for s in self.sources:
            per_epoch = (min(s.samples_per_epoch, len(s.pairs)) if s.samples_per_epoch is not None
                         else len(s.pairs) * s.epoch_repeats)
            n_seq = len({p.sequence.name for p in s.pairs})
            lines.append(f"{s.name}: {n_seq} sequences, {len(s.pairs)} (sequence, object) pairs, "
                         f"{per_epoch} samples/epoch")
        return "\n".join(lines)

    def frame_positions(self, i: int) -> List[int]:
        """Positions (in the pair's annotated-frame list) of item ``i``'s frames."""
        if not 0 <= i < len(self.samples):
            raise IndexError(f"sample {i} out of range (epoch {self.epoch} has {len(self.samples)})")
        s, p = self.samples[i]
        source = self.sources[s]
        rng = np.random.default_rng([self.seed, self.epoch, i, 0])
        return sample_frames(source.pairs[p].visible, self.seq_len, self.sampling, rng, max_gap=source.max_gap)

    def __getitem__(self, i: int) -> dict:
        positions = self.frame_positions(i)
        s, p = self.samples[i]
        source = self.sources[s]
        pair = source.pairs[p]
        seq = pair.sequence
        names = [pair.frames[k] for k in positions]
        images = np.empty((len(names), self.size[0], self.size[1], 3), dtype=np.uint8)
        labels = np.empty((len(names), self.size[0], self.size[1]), dtype=np.uint8)
        for t, name in enumerate(names):
            image = seq.image(seq.frame_index(name))
            mask = (seq.annotation(name, expected_size=image.shape[:2]) == pair.obj_id).astype(np.uint8)
            images[t], labels[t] = resize_sample_frame(image, mask, self.size, source.always_area,
                                                       self.official_resize)
        meta = {"dataset": source.name, "seq_name": seq.name, "obj_id": pair.obj_id, "frames": names,
                "frame0_id": positions[0]}
        return {"images": torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
                "labels": torch.from_numpy(labels).unsqueeze(1),
                "meta": json.dumps(meta)}


def _check_seq_len(seq_len: int) -> int:
    if int(seq_len) < 1:
        raise ConfigError(f"seq_len must be >= 1, got {seq_len}")
    return int(seq_len)


def _check_size(size) -> Tuple[int, int]:
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ConfigError(f"size must be two integers (H, W), got {size!r}") from None
    if h < 1 or w < 1:
        raise ConfigError(f"size must be positive, got {h} {w}")
    return h, w


# ------------------------------------------------------------------------------------------------
# Synthetic data on disk
# ------------------------------------------------------------------------------------------------


def _synthetic_settings(size: Tuple[int, int], seed: int, num_train: int) -> dict:
    return {"format": "davis2017", "version": GENERATOR_VERSION, "seed": int(seed), "size": [int(v) for v in size],
            "train videos": int(num_train)}


def _existing_synthetic_settings(root: Path) -> Optional[dict]:
    meta_path = root / "synthetic_meta.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        return {"format": meta["format"], "version": meta["version"], "seed": meta["seed"],
                "size": [int(v) for v in meta["size"]], "train videos": len(meta["splits"]["train"])}
    except (ValueError, KeyError, TypeError) as err:
        raise DatasetError(f"unreadable synthetic_meta.json ({err}); delete the folder to regenerate it",
                           meta_path) from None


def _check_synthetic_root(root: Path, wanted: dict) -> None:
    found = _existing_synthetic_settings(root)
    if found is None:
        raise ConfigError("synthetic root is not empty and holds no generated dataset (synthetic_meta.json); "
                          "pass an empty or new folder", root)
    if found != wanted:
        raise ConfigError(f"synthetic root holds a dataset generated with {found}, not {wanted}; pass another "
                          "synthetic root or delete this one", root)


def prepare_synthetic_davis(root: PathLike, *, size: Tuple[int, int] = SYNTHETIC_SIZE, seed: int = 0,
                            num_train: int = SYNTHETIC_TRAIN_VIDEOS) -> Path:
    """A synthetic DAVIS 2017 tree at ``root``: generated once, reused when the settings match.

    Generation goes to a temporary sibling folder renamed onto ``root`` when complete, so a crash
    never leaves half a dataset and processes racing to create it all end with the same valid tree
    (generation is deterministic). A non-empty ``root`` made otherwise raises :class:`ConfigError`.
    """
    root = Path(root).expanduser()
    wanted = _synthetic_settings(size, seed, num_train)
    if root.exists() and not root.is_dir():
        raise ConfigError("synthetic root exists and is not a folder", root)
    if root.is_dir() and any(root.iterdir()):
        _check_synthetic_root(root, wanted)
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        logger.info("generating synthetic training videos (%dx%d, seed %d) into %s", size[0], size[1], seed, root)
        generate_davis2017(tmp, seed=seed, size=size, num_train=num_train)
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, root)  # replaces an empty folder; fails if another process got there first
        except OSError:
            if not (root.is_dir() and any(root.iterdir())):
                raise
            _check_synthetic_root(root, wanted)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


# ------------------------------------------------------------------------------------------------
# Building
# ------------------------------------------------------------------------------------------------


def _davis_source(name: str, root: PathLike, *, rule: VisibilityRule, max_gap: int, epoch_repeats: int,
                  year: int = 2017, exclude: Tuple[str, ...] = (), **common) -> TrainingSource:
    reader = DAVISDataset(root, year=year, split="train")
    sequences = [reader.sequence(n) for n in reader.split_holdout(exclude)[0]]
    return _source(name, sequences, reader.root, rule=rule, max_gap=max_gap, always_area=True,
                   epoch_repeats=epoch_repeats, **common)


def build_training_set(dset: str, *, davis_root: Optional[PathLike] = None, ytvos_root: Optional[PathLike] = None,
                       synthetic_root: Optional[PathLike] = None, seq_len: int = 6,
                       size: Tuple[int, int] = (480, 854), sampling: str = "temporal", seed: int = 0,
                       cache_dir: Optional[PathLike] = None, split_list: Optional[PathLike] = None,
                       max_gap: Optional[int] = None, min_pixels: Optional[float] = None,
                       davis_epoch_repeats: int = DAVIS_EPOCH_REPEATS,
                       ytvos_samples_per_epoch: Optional[int] = YTVOS_SAMPLES_PER_EPOCH,
                       min_seq_length: Optional[int] = None,
                       synthetic_size: Tuple[int, int] = SYNTHETIC_SIZE, synthetic_seed: int = 0,
                       synthetic_videos: int = SYNTHETIC_TRAIN_VIDEOS,
                       synthetic_epoch_repeats: int = SYNTHETIC_EPOCH_REPEATS,
                       workers: Optional[int] = None, official: bool = False,
                       holdout: Tuple[str, ...] = (), saliency_root: Optional[PathLike] = None,
                       clip_samples_per_epoch: int = 2000, clip_tps: float = 0.0) -> torch.utils.data.Dataset:
    """The training set ``dset`` (one of :data:`TRAINING_DATASETS`, or ``yt2018``).

    Args:
        dset: ``dv2017``, ``dv2016`` (the DAVIS 2016 train split, all objects merged into one as the DAVIS
            2016 protocol does; any DAVIS root with ``ImageSets/2016/train.txt``), ``ytvos2018``
            (``yt2018``), ``all`` (DAVIS 2017 + YouTube-VOS) or ``synthetic``.
        davis_root, ytvos_root: dataset roots (default: the ``DAVIS_ROOT`` / ``YTVOS_ROOT`` variables).
        synthetic_root: where the synthetic dataset is (or gets) written; required for ``synthetic``.
        seq_len: frames per sample.
        size: (H, W) of the training frames.
        sampling: ``temporal`` or ``official``.
        seed: seed of the epoch lists and the frame draws.
        cache_dir: folder for the visibility cache (``None``: computed in memory on every build).
        split_list: the YouTube-VOS ``jjtrain`` list file (default: ``dataset/splits``).
        max_gap: largest step of a temporal sample (default :data:`DEFAULT_MAX_GAP`: 3 for DAVIS and
            synthetic, 2 for YouTube-VOS).
        min_pixels: overrides the 100-pixel visibility threshold of every dataset (unscaled).
        davis_epoch_repeats: how often each DAVIS pair occurs per epoch.
        ytvos_samples_per_epoch: YouTube-VOS pairs drawn per epoch (``None``: every pair once).
        min_seq_length: YouTube-VOS sequences with fewer annotated frames are dropped
            (default ``seq_len + 2``, as the original).
        synthetic_size, synthetic_seed, synthetic_videos: generation settings of the synthetic set
            (frame size, seed, train videos); independent of ``size`` so the folder serves any ``--size``.
        synthetic_epoch_repeats: how often each synthetic pair occurs per epoch (default 2, not DAVIS's 8:
            the synthetic set is for quick CPU runs).
        workers: threads counting pixels for the visibility cache.
        official: ``--official-quirks``: the original's bilinear frame resize and, for DAVIS 2017, its
            per-sequence visibility rule (:data:`dataset.visibility.OFFICIAL_DAVIS_VISIBILITY`).
        holdout: DAVIS train sequences left out of training (kept for validation); each must be in the split.
        saliency_root: for ``duts``: a saliency root (DUTS-TR is read; default ``$SALIENCY_ROOT``).
        clip_samples_per_epoch: for ``duts``: synthetic clips per epoch.
        clip_tps: for ``duts``: the clips' thin-plate-spline deformation (``ClipConfig.tps``; 0: none).
    """
    dset = DATASET_ALIASES.get(dset, dset)
    if dset not in TRAINING_DATASETS:
        raise ConfigError(f"unknown training dataset {dset!r}; choose from {', '.join(TRAINING_DATASETS)}")
    seq_len = _check_seq_len(seq_len)
    check_sampling(sampling)
    if dset == "duts":
        from dataset.clips import ClipConfig, SaliencyClipSet
        from dataset.saliency import SaliencyDataset, resolve_saliency_root

        images = SaliencyDataset(resolve_saliency_root(None if saliency_root is None else str(saliency_root)),
                                 "train")
        clips = SaliencyClipSet(images, seq_len=seq_len, size=_check_size(size), clip=ClipConfig(tps=clip_tps),
                                samples_per_epoch=clip_samples_per_epoch, seed=seed)
        logger.info("training set duts:\n%s", clips.describe())
        return clips
    if max_gap is not None and max_gap < 1:
        raise ConfigError(f"max_gap must be >= 1, got {max_gap}")
    cache = PixelCountCache(cache_dir, workers=workers)
    common = {"cache": cache, "seq_len": seq_len, "sampling": sampling}

    def rule_for(default: VisibilityRule) -> VisibilityRule:
        if min_pixels is None:
            return default
        return VisibilityRule(min_pixels=min_pixels, min_fraction=default.min_fraction)

    sources: List[TrainingSource] = []
    if dset == "synthetic":
        if synthetic_root is None:
            raise ConfigError("--dset synthetic needs a folder to write the generated videos to (synthetic_root)")
        root = prepare_synthetic_davis(synthetic_root, size=_check_size(synthetic_size), seed=synthetic_seed,
                                       num_train=synthetic_videos)
        sources.append(_davis_source("synthetic", root, rule=rule_for(SYNTHETIC_VISIBILITY),
                                     max_gap=max_gap or DEFAULT_MAX_GAP["davis"],
                                     epoch_repeats=synthetic_epoch_repeats, **common))
    if dset in ("dv2017", "dv2016", "all"):
        year = 2016 if dset == "dv2016" else 2017
        # the original's per-sequence rule is for DAVIS 2017 objects; DAVIS 2016 keeps the general rule
        rule = OFFICIAL_DAVIS_VISIBILITY if official and year == 2017 else DAVIS_VISIBILITY
        root = resolve_root(None if davis_root is None else str(davis_root), "DAVIS_ROOT", "DAVIS")
        sources.append(_davis_source(f"dv{year}", root, rule=rule_for(rule), year=year,
                                     max_gap=max_gap or DEFAULT_MAX_GAP["davis"],
                                     epoch_repeats=davis_epoch_repeats, exclude=tuple(holdout), **common))
    if dset in ("ytvos2018", "all"):
        root = resolve_root(None if ytvos_root is None else str(ytvos_root), "YTVOS_ROOT", "YouTube-VOS")
        reader = YouTubeVOSDataset(root, split="jjtrain", split_list=split_list)
        sequences = [reader.sequence(n) for n in reader.names]
        if ytvos_samples_per_epoch is not None and ytvos_samples_per_epoch < 1:
            raise ConfigError(f"ytvos_samples_per_epoch must be >= 1, got {ytvos_samples_per_epoch}")
        sources.append(_source("ytvos2018", sequences, reader.root, rule=rule_for(YTVOS_VISIBILITY),
                               max_gap=max_gap or DEFAULT_MAX_GAP["ytvos"], always_area=False,
                               min_seq_length=seq_len + 2 if min_seq_length is None else min_seq_length,
                               samples_per_epoch=ytvos_samples_per_epoch, **common))
    dataset = TrainingSet(sources, seq_len=seq_len, size=size, sampling=sampling, seed=seed,
                          official_resize=official)
    logger.info("training set %s:\n%s", dset, dataset.describe())
    return dataset
