"""Synthetic datasets on disk: the DAVIS 2017 and YouTube-VOS 2018 layouts, written atomically and byte-identically
for the same arguments (:func:`generate_davis2017`, :func:`generate_youtubevos`, :func:`generate`)."""

from __future__ import annotations

import hashlib
import io
import shutil
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from base.errors import ConfigError
from base.io import atomic_write_bytes, atomic_write_json, atomic_write_text, encode_index_png
from dataset.synthetic.scenes import FAST_SPEED, SLOW_SPEED, PathLike, frame_name, render_video

FORMATS = ("davis2017", "youtubevos")
JPEG_QUALITY = 95
YTVOS_STRIDE = 5
GENERATOR_VERSION = 1

# the top-level entries each format writes (removed on --overwrite of an earlier synthetic tree)
_FORMAT_ENTRIES = {
    "davis2017": ("JPEGImages", "Annotations", "ImageSets", "synthetic_meta.json"),
    "youtubevos": ("train", "valid", "train_all_frames", "valid_all_frames", "jjval.txt", "jjtrain.txt",
                   "synthetic_meta.json"),
}
_FORMAT_CODE = {"davis2017": 2017, "youtubevos": 2018}
_SPLIT_CODE = {"train": 1, "val": 2, "valid": 2}


# ------------------------------------------------------------------------------------------------
# Writing datasets
# ------------------------------------------------------------------------------------------------


def _encode_jpeg(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img, dtype=np.uint8)).save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def _check_range(name: str, value: Sequence[int], lo: int) -> Tuple[int, int]:
    try:
        a, b = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be two integers (min, max), got {value!r}") from None
    if a < lo or b < a:
        raise ConfigError(f"{name} must satisfy {lo} <= min <= max, got ({a}, {b})")
    return a, b


def _check_size(size: Sequence[int]) -> Tuple[int, int]:
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ConfigError(f"size must be two integers (H, W), got {size!r}") from None
    if not (32 <= h <= 4096 and 32 <= w <= 4096):
        raise ConfigError(f"size must be between 32x32 and 4096x4096 (H W), got {h} {w}")
    return h, w


def _check_counts(counts: Sequence[int]) -> None:
    if any(int(c) < 0 for c in counts) or sum(int(c) for c in counts) < 1:
        raise ConfigError(f"numbers of videos must be >= 0 and not all 0, got {list(counts)}")


def _prepare_out(out_dir: PathLike, fmt: str, overwrite: bool) -> Path:
    """Make the output folder; refuse a non-empty one unless ``overwrite``.

    With ``overwrite``, the entries this format writes are removed first only when the folder holds
    an earlier synthetic tree (``synthetic_meta.json``); other files are never deleted.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError("output path exists and is not a folder", out)
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError("output folder is not empty (pass --overwrite / overwrite=True to write "
                              "into it)", out)
        if (out / "synthetic_meta.json").is_file():
            for entry in _FORMAT_ENTRIES[fmt]:
                p = out / entry
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                elif p.exists() or p.is_symlink():
                    p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out


def _video_seeds(seed: int, fmt: str, split: str, index: int) -> Tuple[np.random.Generator, List[int]]:
    """(planning rng, content seed) of one video: independent of every other video."""
    base = [int(seed) & 0xFFFFFFFF, _FORMAT_CODE[fmt], _SPLIT_CODE[split], int(index)]
    return np.random.default_rng(base + [0]), base + [1]


def _lines(names: Sequence[str]) -> str:
    return "".join(f"{n}\n" for n in names)


def _meta_header(fmt: str, seed: int, size: Tuple[int, int]) -> dict:
    return {
        "generator": "reuse-vos dataset.synthetic",
        "version": GENERATOR_VERSION,
        "format": fmt,
        "seed": int(seed),
        "size": [int(size[0]), int(size[1])],
        "regimes": {"still": 0.0, "slow": list(SLOW_SPEED), "fast": list(FAST_SPEED),
                    "note": "regimes[t] is the motion from frame t-1 to t (px/frame of objects)"},
        "splits": {},
        "sequences": {},
    }


def generate_davis2017(out_dir: PathLike, *, seed: int = 0, size: Sequence[int] = (120, 216),
                       num_train: int = 4, num_val: int = 3, frames: Sequence[int] = (24, 40),
                       objects: Sequence[int] = (2, 3), single_object_videos: int = 1,
                       overwrite: bool = False, log: Optional[Callable[[str], None]] = None) -> Path:
    """Write a synthetic DAVIS 2017 tree (also usable as DAVIS 2016: same split files).

    Layout: ``JPEGImages/480p/<seq>/00000.jpg ...``, ``Annotations/480p/<seq>/00000.png ...`` (every
    frame, palette PNGs, ids 1..N), ``ImageSets/2017/{train,val}.txt``,
    ``ImageSets/2016/{train,val}.txt`` and ``synthetic_meta.json``. All objects start on frame 0.

    Args:
        out_dir: output folder (created; must be empty unless ``overwrite``).
        seed: generation seed.
        size: (H, W) of the frames.
        num_train, num_val: sequences per split.
        frames: (min, max) frames per sequence.
        objects: (min, max) objects per sequence.
        single_object_videos: the first that many sequences of each split hold one object.
        overwrite: write into a non-empty folder.
        log: called with one line per thing written.

    Returns:
        the output folder.
    """
    size = _check_size(size)
    frames = _check_range("frames", frames, 1)
    objects = _check_range("objects", objects, 1)
    _check_counts([num_train, num_val])
    out = _prepare_out(out_dir, "davis2017", overwrite)
    meta = _meta_header("davis2017", seed, size)
    for split, count in (("train", num_train), ("val", num_val)):
        names = []
        n_frames = 0
        for i in range(count):
            plan, content = _video_seeds(seed, "davis2017", split, i)
            t_count = int(plan.integers(frames[0], frames[1] + 1))
            n_obj = 1 if i < single_object_videos else int(plan.integers(objects[0], objects[1] + 1))
            name = f"synth-{split}-{i:02d}"
            video = render_video(content, size=size, num_frames=t_count, num_objects=n_obj, name=name)
            for t in range(t_count):
                atomic_write_bytes(out / "JPEGImages" / "480p" / name / f"{frame_name(t)}.jpg",
                                   _encode_jpeg(video.images[t]))
                atomic_write_bytes(out / "Annotations" / "480p" / name / f"{frame_name(t)}.png",
                                   encode_index_png(video.masks[t]))
            entry = video.describe()
            entry["split"] = split
            meta["sequences"][name] = entry
            names.append(name)
            n_frames += t_count
        for year in (2016, 2017):
            atomic_write_text(out / "ImageSets" / str(year) / f"{split}.txt", _lines(names))
        meta["splits"][split] = names
        if log:
            log(f"{split}: {len(names)} sequence(s), {n_frames} frames + annotations in JPEGImages/480p, "
                f"Annotations/480p; ImageSets/2016,2017/{split}.txt")
    atomic_write_json(out / "synthetic_meta.json", meta)
    if log:
        log("synthetic_meta.json: seed, size, per-frame regimes, mask IoU, object visibility")
    return out


def _video_id(seed: int, split: str, index: int, taken: set) -> str:
    k = 0
    while True:
        vid = hashlib.sha256(f"reuse-vos-synthetic:{seed}:{split}:{index}:{k}".encode()).hexdigest()[:10]
        if vid not in taken:
            taken.add(vid)
            return vid
        k += 1  # pragma: no cover


def generate_youtubevos(out_dir: PathLike, *, seed: int = 0, size: Sequence[int] = (120, 216),
                        num_train: int = 6, num_valid: int = 3, frames: Sequence[int] = (30, 50),
                        objects: Sequence[int] = (2, 3), single_object_videos: int = 1,
                        overwrite: bool = False, log: Optional[Callable[[str], None]] = None) -> Path:
    """Write a synthetic YouTube-VOS 2018 tree.

    Layout, for ``split`` in ``train`` / ``valid``: ``<split>/JPEGImages/<vid>/<frame>.jpg`` (every 5th
    frame, named by the 5-digit original frame number), ``<split>_all_frames/JPEGImages/<vid>/`` (every
    frame), ``<split>/Annotations/<vid>/<frame>.png`` and ``<split>/meta.json``. ``train`` has an
    annotation on every 5-stride frame and its meta lists, per object, the 5-stride frames where it is
    present; ``valid`` has annotations only on frames where an object first appears (holding only those
    objects) and its meta lists the 5-stride frames from the object's first appearance to the end. Also
    ``jjval.txt`` / ``jjtrain.txt`` (a disjoint split of the train videos) and ``synthetic_meta.json``.

    Videos with an odd index (in each split) hold one object that first appears mid-video; the first
    ``single_object_videos`` videos of each split hold one object.

    Args: as :func:`generate_davis2017` (``frames`` counts all frames; ``num_valid`` the valid videos).

    Returns:
        the output folder.
    """
    size = _check_size(size)
    frames = _check_range("frames", frames, 1)
    objects = _check_range("objects", objects, 1)
    _check_counts([num_train, num_valid])
    out = _prepare_out(out_dir, "youtubevos", overwrite)
    meta = _meta_header("youtubevos", seed, size)
    taken: set = set()
    train_names: List[str] = []
    for split, count in (("train", num_train), ("valid", num_valid)):
        ytmeta: Dict[str, dict] = {}
        order: List[Tuple[int, str]] = []
        n_all = n_strided = n_ann = 0
        for i in range(count):
            plan, content = _video_seeds(seed, "youtubevos", split, i)
            t_count = int(plan.integers(frames[0], frames[1] + 1))
            n_obj = 1 if i < single_object_videos else int(plan.integers(objects[0], objects[1] + 1))
            strided = list(range(0, t_count, YTVOS_STRIDE))
            firsts = [0] * n_obj
            if i % 2 == 1 and n_obj >= 2 and len(strided) >= 2:
                # an object appearing mid-video on an annotated frame, in the first half of the video
                last = max(1, (len(strided) - 1) // 2 + 1)
                firsts[-1] = strided[int(plan.integers(1, last + 1))]
            vid = _video_id(seed, split, i, taken)
            video = render_video(content, size=size, num_frames=t_count, num_objects=n_obj,
                                 first_frames=firsts, name=vid)
            for t in range(t_count):
                jpg = _encode_jpeg(video.images[t])
                atomic_write_bytes(out / f"{split}_all_frames" / "JPEGImages" / vid / f"{frame_name(t)}.jpg",
                                   jpg)
                n_all += 1
                if t % YTVOS_STRIDE == 0:
                    atomic_write_bytes(out / split / "JPEGImages" / vid / f"{frame_name(t)}.jpg", jpg)
                    n_strided += 1
            objs: Dict[str, dict] = {}
            for o in video.objects:
                if split == "train":
                    listed = [t for t in strided if o.pixels[t] > 0]
                else:
                    listed = [t for t in strided if t >= o.first_frame]
                objs[str(o.obj_id)] = {"category": o.kind, "frames": [frame_name(t) for t in listed]}
            ytmeta[vid] = {"objects": objs}
            for t in strided:
                labels = video.masks[t]
                if split == "valid":
                    starting = [o.obj_id for o in video.objects if o.first_frame == t]
                    if not starting:
                        continue
                    labels = np.where(np.isin(labels, starting), labels, 0).astype(np.uint8)
                atomic_write_bytes(out / split / "Annotations" / vid / f"{frame_name(t)}.png",
                                   encode_index_png(labels))
                n_ann += 1
            entry = video.describe()
            entry["split"] = split
            entry["annotated_frames"] = [frame_name(t) for t in strided]
            meta["sequences"][vid] = entry
            order.append((i, vid))
        names = sorted(v for _, v in order)
        atomic_write_json(out / split / "meta.json", {"videos": {v: ytmeta[v] for v in names}})
        meta["splits"][split] = names
        if split == "train":
            train_names = names
            jjval = sorted(v for i, v in order if count >= 2 and i % 3 == 0)
            meta["splits"]["jjval"] = jjval
            meta["splits"]["jjtrain"] = [v for v in names if v not in jjval]
        if log:
            log(f"{split}: {len(names)} video(s), {n_strided} frames in {split}/JPEGImages, {n_all} in "
                f"{split}_all_frames/JPEGImages, {n_ann} annotations, {split}/meta.json")
    atomic_write_text(out / "jjval.txt", _lines(meta["splits"]["jjval"]))
    atomic_write_text(out / "jjtrain.txt", _lines(meta["splits"]["jjtrain"]))
    if log:
        log(f"jjval.txt ({len(meta['splits']['jjval'])} videos), jjtrain.txt "
            f"({len(meta['splits']['jjtrain'])} videos): a split of the {len(train_names)} train videos")
    atomic_write_json(out / "synthetic_meta.json", meta)
    if log:
        log("synthetic_meta.json: seed, size, per-frame regimes, mask IoU, object visibility")
    return out


def generate(format: str, out_dir: PathLike, **kwargs) -> Path:
    """Write a synthetic dataset of ``format`` (``davis2017`` or ``youtubevos``) into ``out_dir``."""
    if format == "davis2017":
        return generate_davis2017(out_dir, **kwargs)
    if format == "youtubevos":
        return generate_youtubevos(out_dir, **kwargs)
    raise ConfigError(f"unknown synthetic dataset format {format!r}; expected one of {', '.join(FORMATS)}")
