"""Any video with a first-frame mask, read frame by frame (for demo.py and the library).

The video is a file OpenCV can decode (mp4, avi, mov, ...) or a folder of frames (``.jpg``, ``.jpeg``,
``.png``, ``.bmp``; sorted by name, numbers compared as numbers: ``f2`` before ``f10``). Frames are decoded
one at a time as they are used (:meth:`CustomVideo.frames`); nothing is written to disk.

The first-frame mask gives the objects:

* palette (indexed) PNG: pixel value = object id, several objects allowed; 255 is the DAVIS "void"
  label and ignored, unless the mask holds only 0 and 255 (then 255 is one object);
* greyscale PNG with values 0/1 or 0/255: one object; other greyscale masks with values up to
  :data:`MAX_GREY_ID` are id maps; anything else (e.g. anti-aliased 0..255) is thresholded at 128;
* RGB(A) PNG: grey (R = G = B) is read as greyscale; black plus one colour is one object; more
  colours are refused (save a palette PNG with one id per object).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Tuple, Union

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from base.errors import ConfigError, DatasetError
from base.io import image_size, read_image_rgb

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
    """A video with its first-frame mask.

    Attributes:
        name: the file's stem or the folder's name.
        source: the video file or frame folder.
        fps: the file's frame rate (:data:`DEFAULT_FPS` for a folder or an unknown rate).
        mask: the first frame's mask, fitted to the frame size.
        size: (H, W) of the frames.
        num_frames: frames to read (a folder: exact; a file: OpenCV's count, capped by ``max_frames``; the
            stream may end earlier).
        files: a folder's frame files (empty for a video file).
        max_frames: read at most this many frames.
    """

    name: str
    source: Path
    fps: float
    mask: FirstMask
    size: Tuple[int, int]
    num_frames: int
    files: Tuple[Path, ...] = ()
    max_frames: Optional[int] = None

    def frames(self) -> Iterator[Tuple[str, np.ndarray]]:
        """(frame name, (H, W, 3) uint8 RGB) in order, decoded one at a time. A file's frames are named
        ``00000``, ``00001``, ...; a folder's by their file stems. A frame of another size is an error."""
        if self.files:
            for path in self.files:
                yield path.stem, self._checked(read_image_rgb(path), path)
            return
        capture = open_video_capture(self.source)
        try:
            count = 0
            while self.max_frames is None or count < self.max_frames:
                ok, frame = capture.read()
                if not ok:
                    break
                yield f"{count:05d}", self._checked(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), self.source)
                count += 1
        finally:
            capture.release()

    def _checked(self, image: np.ndarray, path: Path) -> np.ndarray:
        if image.shape[:2] != self.size:
            h, w = image.shape[:2]
            raise DatasetError(f"frame is {w}x{h} (WxH) but the first frame is {self.size[1]}x{self.size[0]}", path)
        return image


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


def open_video_capture(video: PathLike) -> cv2.VideoCapture:
    """OpenCV's capture of a video file, opened (a file it cannot decode: one line naming it)."""
    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        capture.release()
        raise DatasetError("cannot open the video: OpenCV cannot decode this file (corrupt, or not a "
                           "video format it supports); convert it to mp4 or pass a folder of frames", video)
    return capture


def capture_fps(capture: cv2.VideoCapture) -> Optional[float]:
    """The frame rate an opened capture reports, or None where it reports none (0, NaN)."""
    fps = capture.get(cv2.CAP_PROP_FPS)
    return float(fps) if fps and np.isfinite(fps) and fps > 0 else None


def probe_video_file(video: PathLike) -> Tuple[Tuple[int, int], float, int]:
    """(H, W) of the first frame, frame rate and OpenCV's frame count of a video file (the first frame is decoded)."""
    video = Path(video)
    capture = open_video_capture(video)
    try:
        fps = capture_fps(capture) or DEFAULT_FPS
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        ok, frame = capture.read()
    finally:
        capture.release()
    if not ok:
        raise DatasetError("the video has no frame OpenCV can decode (corrupt or empty file)", video)
    return frame.shape[:2], fps, max(count, 1)


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


def open_custom_video(video: PathLike, mask: PathLike, resize_mask: bool = False,
                      max_frames: Optional[int] = None) -> CustomVideo:
    """A video file or frame folder with its first-frame mask, checked (nothing is decoded but frame 0).

    Args:
        video: a video file or a folder of frames.
        mask: the first frame's mask file.
        resize_mask: nearest-resize a mask whose size differs from the frames' (else an error).
        max_frames: use only the first ``max_frames`` frames.
    """
    video = Path(video)
    if max_frames is not None and max_frames < 1:
        raise ConfigError(f"--max-frames must be at least 1, got {max_frames}")
    first = read_first_mask(mask)  # fail on a bad mask before decoding the video
    if video.is_dir():
        files = tuple(list_frame_files(video, max_frames))
        size, fps, count = image_size(files[0]), DEFAULT_FPS, len(files)
        name = video.resolve().name
    elif video.is_file():
        files = ()
        size, fps, count = probe_video_file(video)
        count = min(count, max_frames) if max_frames else count
        name = video.stem
    else:
        raise DatasetError("video not found (give a video file or a folder of frames)", video)
    first = fit_mask(first, size, resize_mask, mask)
    return CustomVideo(name, video, fps, first, tuple(size), count, files, max_frames)
