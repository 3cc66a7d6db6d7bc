"""Any video with a first-frame mask, as a :class:`~dataset.sequence.Sequence` (for demo.py).

The video is a file OpenCV can decode (mp4, avi, mov, ...) or a folder of frames (``.jpg``, ``.jpeg``,
``.png``, ``.bmp``; sorted by name, numbers compared as numbers: ``f2`` before ``f10``). Decoded video
frames are written, losslessly, to ``WORK_DIR/frames/00000.png ...`` so the tracker reads them like any
dataset; a folder's frames are read where they are.

The first-frame mask gives the objects:

* palette (indexed) PNG: pixel value = object id, several objects allowed; 255 is the DAVIS "void"
  label and ignored, unless the mask holds only 0 and 255 (then 255 is one object);
* greyscale PNG with values 0/1 or 0/255: one object; other greyscale masks with values up to
  :data:`MAX_GREY_ID` are id maps; anything else (e.g. anti-aliased 0..255) is thresholded at 128;
* RGB(A) PNG: grey (R = G = B) is read as greyscale; black plus one colour is one object; more
  colours are refused (save a palette PNG with one id per object).

The normalised mask (object ids, DAVIS palette) is written to ``WORK_DIR/first_mask.png``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple, Union

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from dataset.sequence import Sequence
from lib.errors import ConfigError, DatasetError
from lib.io import atomic_write_bytes, image_size, write_index_png

PathLike = Union[str, Path]
FRAME_EXTS = (".jpg", ".jpeg", ".png", ".bmp")
MAX_GREY_ID = 32
DEFAULT_FPS = 24.0


@dataclass(frozen=True)
class FirstMask:
    """A first-frame mask read from a file.

    Attributes:
        labels: (H, W) uint8 object ids (0 = background).
        object_ids: the ids present, ascending.
        how: how the file was read, for the user (e.g. ``"palette PNG, ids 1, 2"``).
    """

    labels: np.ndarray
    object_ids: Tuple[int, ...]
    how: str


@dataclass(frozen=True)
class CustomVideo:
    """A custom video ready for the tracker: the sequence, its frame rate, and its mask."""

    sequence: Sequence
    fps: float
    mask: FirstMask
    source: Path


def _natural_key(path: Path) -> Tuple[object, ...]:
    parts = re.split(r"(\d+)", path.stem.lower())
    return tuple((int(p),) if i % 2 else (p,) for i, p in enumerate(parts)) + ((path.name,),)


def list_frame_files(folder: PathLike, max_frames: Optional[int] = None) -> List[Path]:
    """The frame images of ``folder`` in name order (numbers as numbers), at most ``max_frames``."""
    folder = Path(folder)
    files = sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_EXTS
                    and not p.name.startswith(".")), key=_natural_key)
    if not files:
        raise DatasetError(f"no frames ({', '.join(FRAME_EXTS)} files) in the folder", folder)
    stems = [p.stem for p in files]
    duplicate = next((s for s in stems if stems.count(s) > 1), None)
    if duplicate is not None:
        raise DatasetError(f"two frames are named {duplicate!r} (different extensions); keep one", folder)
    return files[:max_frames] if max_frames else files


def extract_video_frames(video: PathLike, out_dir: PathLike, max_frames: Optional[int] = None
                         ) -> Tuple[List[Path], float]:
    """Decode ``video`` with OpenCV into ``out_dir/00000.png ...``; returns the files and the frame rate.

    Earlier PNGs in ``out_dir`` are removed first, so the folder holds exactly this video's frames.
    """
    video, out_dir = Path(video), Path(out_dir)
    capture = cv2.VideoCapture(str(video))
    try:
        if not capture.isOpened():
            raise DatasetError("cannot open the video: OpenCV cannot decode this file (corrupt, or not a "
                               "video format it supports); convert it to mp4 or pass a folder of frames", video)
        fps = capture.get(cv2.CAP_PROP_FPS)
        fps = float(fps) if fps and np.isfinite(fps) and fps > 0 else DEFAULT_FPS
        out_dir.mkdir(parents=True, exist_ok=True)
        for old in out_dir.glob("*.png"):
            old.unlink()
        files: List[Path] = []
        while max_frames is None or len(files) < max_frames:
            ok, frame = capture.read()
            if not ok:
                break
            ok, encoded = cv2.imencode(".png", frame)
            assert ok, "PNG encoding of a decoded frame failed"
            path = out_dir / f"{len(files):05d}.png"
            atomic_write_bytes(path, encoded.tobytes())
            files.append(path)
    finally:
        capture.release()
    if not files:
        raise DatasetError("the video has no frame OpenCV can decode (corrupt or empty file)", video)
    return files, fps


def _grey_labels(grey: np.ndarray, kind: str) -> Tuple[np.ndarray, str]:
    values = set(np.unique(grey).tolist())
    if values <= {0, 255}:
        return (grey == 255).astype(np.uint8), f"{kind} 0/255 mask, one object"
    if values <= {0, 1}:
        return grey.astype(np.uint8), f"{kind} 0/1 mask, one object"
    if max(values) <= MAX_GREY_ID:
        return grey.astype(np.uint8), f"{kind} mask of object ids"
    return (grey >= 128).astype(np.uint8), f"{kind} mask with {len(values)} grey levels, thresholded at 128"


def read_first_mask(path: PathLike) -> FirstMask:
    """Read a first-frame mask file (palette, greyscale or two-colour RGB PNG; see the module doc)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError("mask file not found", path)
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DatasetError(f"cannot read the mask ({err.__class__.__name__}: {err})", path) from None
    if img.mode == "P":
        arr = np.asarray(img, dtype=np.uint8)
        if set(np.unique(arr).tolist()) <= {0, 255}:
            labels, how = (arr == 255).astype(np.uint8), "palette 0/255 mask, one object"
        else:
            labels, how = np.where(arr == 255, 0, arr).astype(np.uint8), "palette PNG of object ids"
    elif img.mode in ("1", "L", "LA", "I", "I;16"):
        arr = np.asarray(img.convert("L") if img.mode in ("1", "LA") else img)
        if img.mode == "1":
            arr = (arr > 0).astype(np.uint8)
        if arr.max(initial=0) > 255:
            raise DatasetError(f"greyscale mask has values above 255 (mode {img.mode})", path)
        labels, how = _grey_labels(arr.astype(np.uint8), "greyscale")
    elif img.mode in ("RGB", "RGBA"):
        rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
        if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
            labels, how = _grey_labels(rgb[..., 0], "grey RGB")
        else:
            colours = np.unique(rgb.reshape(-1, 3), axis=0)
            coloured = [c for c in colours if c.any()]
            if len(coloured) != 1 or len(colours) > 2:
                raise DatasetError(f"colour mask with {len(colours)} colours: save the objects as a palette "
                                   "(indexed) PNG with one id per object, or one object as a 0/255 greyscale PNG",
                                   path)
            labels, how = rgb.any(axis=-1).astype(np.uint8), "two-colour RGB mask, one object"
    else:
        raise DatasetError(f"unsupported mask image mode {img.mode}: use a palette or greyscale PNG", path)
    ids = tuple(int(i) for i in np.unique(labels) if i != 0)
    return FirstMask(labels, ids, how)


def fit_mask(mask: FirstMask, size: Tuple[int, int], resize: bool, path: PathLike) -> FirstMask:
    """Check ``mask`` against the frame size (H, W); with ``resize`` nearest-resize it; refuse it empty."""
    height, width = size
    mask_h, mask_w = mask.labels.shape
    if (mask_h, mask_w) != (height, width):
        if not resize:
            raise DatasetError(f"the mask is {mask_w}x{mask_h} (WxH) but the video frames are {width}x{height}; "
                               "pass --resize-mask to resize it (nearest neighbour)", path)
        labels = cv2.resize(mask.labels, (width, height), interpolation=cv2.INTER_NEAREST)
        ids = tuple(int(i) for i in np.unique(labels) if i != 0)
        lost = sorted(set(mask.object_ids) - set(ids))
        how = f"{mask.how}, resized from {mask_w}x{mask_h}" + (f" (objects {lost} vanished)" if lost else "")
        mask = FirstMask(labels, ids, how)
    if not mask.object_ids:
        raise DatasetError(f"the mask has no object pixels ({mask.how}): nothing to segment", path)
    return mask


def open_custom_video(video: PathLike, mask: PathLike, work_dir: PathLike, resize_mask: bool = False,
                      max_frames: Optional[int] = None) -> CustomVideo:
    """A video file or frame folder with its first-frame mask, as a single-sequence dataset.

    Args:
        video: a video file (decoded into ``work_dir/frames``) or a folder of frames.
        mask: the first frame's mask file.
        work_dir: where decoded frames and the normalised mask (``first_mask.png``) are written.
        resize_mask: nearest-resize a mask whose size differs from the frames' (else an error).
        max_frames: use only the first ``max_frames`` frames.
    """
    video, work_dir = Path(video), Path(work_dir)
    if max_frames is not None and max_frames < 1:
        raise ConfigError(f"--max-frames must be at least 1, got {max_frames}")
    first = read_first_mask(mask)  # fail on a bad mask before decoding the video
    if video.is_dir():
        files, fps = list_frame_files(video, max_frames), DEFAULT_FPS
    elif video.is_file():
        files, fps = extract_video_frames(video, work_dir / "frames", max_frames)
    else:
        raise DatasetError("video not found (give a video file or a folder of frames)", video)
    size = image_size(files[0])
    for f in files[1:]:
        if image_size(f) != size:
            h, w = image_size(f)
            raise DatasetError(f"frame is {w}x{h} (WxH) but the first frame is {size[1]}x{size[0]}", f)
    first = fit_mask(first, size, resize_mask, mask)
    mask_file = work_dir / "first_mask.png"
    write_index_png(mask_file, first.labels)
    frames = tuple(p.stem for p in files)
    name = video.stem if video.is_file() else video.resolve().name
    seq = Sequence(name=name, frames=frames, image_files=tuple(files),
                   annotation_files={frames[0]: mask_file}, object_ids=first.object_ids,
                   start_frames={obj: frames[0] for obj in first.object_ids}, save_frames=frames, dataset="custom")
    return CustomVideo(seq, fps, first, video)
