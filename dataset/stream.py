"""Frames as they arrive: a camera, a network stream (RTSP, HTTP, ...), a video file or a folder of frames.

:func:`open_stream` opens any of them and decodes the first frame (its size fixes the session's; a box
start needs it); :meth:`FrameStream.frames` then yields one frame at a time, decoded when asked for, so a
consumer steps the networks on a frame and writes its outputs before the next is decoded (nothing is
decoded ahead, nothing is kept).

Two ways to take frames:

* ``every`` (files, folders): each frame in order; the stream runs as fast as the consumer.
* ``latest`` (cameras, network streams): a reader thread decodes frames as the source sends them and keeps
  the newest one only; the consumer always gets the newest frame it has not seen, and the ones it could not
  keep up with are counted in :attr:`FrameStream.dropped` (their names skip: a live stream's frames are
  named by their arrival number). A live source cannot wait, so this keeps the latency at one frame.

The stream ends when the source does (a file's or folder's last frame, a camera unplugged, a network
stream closed) or after ``max_frames`` frames.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple, Union

import cv2
import numpy as np

from base.errors import ConfigError, DatasetError
from base.io import read_image_rgb
from dataset.custom import DEFAULT_FPS, capture_fps, list_frame_files, open_video_capture

KINDS = ("camera", "url", "file", "folder")
MODES = ("auto", "every", "latest")
URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
MAX_FPS = 1000  # a rate a source reports at or above this is not a frame rate (e.g. an RTSP time base)

Frame = Tuple[str, np.ndarray]


def source_kind(spec: str) -> str:
    """``camera`` (a number: OpenCV's camera index), ``url`` (``scheme://...``), ``folder`` or ``file``."""
    spec = str(spec)
    if spec.isdigit():
        return "camera"
    if URL.match(spec):
        return "url"
    return "folder" if Path(spec).is_dir() else "file"


class _LatestFrame:
    """A reader thread that decodes a capture's frames as they come and keeps only the newest."""

    def __init__(self, read: Callable[[], Tuple[bool, Optional[np.ndarray]]]):
        self._read = read
        self._cond = threading.Condition()
        self._frame: Optional[np.ndarray] = None
        self._number = 0  # arrival number of the newest frame (0: the one read before the thread started)
        self._ended = False
        self._error: Optional[BaseException] = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stream-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                ok, frame = self._read()
                if not ok:
                    break
                with self._cond:
                    self._frame, self._number = frame, self._number + 1
                    self._cond.notify_all()
        except BaseException as err:  # handed to the consumer
            self._error = err
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def next_after(self, number: int) -> Optional[Tuple[int, np.ndarray]]:
        """The newest frame with an arrival number above ``number`` (waits for it), or None at the end."""
        with self._cond:
            self._cond.wait_for(lambda: self._number > number or self._ended)
            if self._error is not None:
                raise self._error
            if self._number > number:
                return self._number, self._frame
            return None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)


@dataclass
class FrameStream:
    """An open source of frames (made by :func:`open_stream`).

    Attributes:
        name: a name for outputs (the file's stem, the folder's name, ``camera0``, the URL's last part).
        source: what was given.
        kind: one of :data:`KINDS`.
        mode: ``every`` or ``latest`` (see the module doc).
        fps: the source's frame rate (:data:`DEFAULT_FPS` when it does not say).
        size: (H, W) of the frames.
        first: the first frame (name, (H, W, 3) uint8 RGB), already decoded.
        num_frames: frames it will give if known (a folder; a file: OpenCV's count), else None.
        max_frames: give at most this many frames.
        dropped: frames a ``latest`` stream skipped because the consumer was busy (so far).
    """

    name: str
    source: str
    kind: str
    mode: str
    fps: float
    size: Tuple[int, int]
    first: Frame
    num_frames: Optional[int] = None
    max_frames: Optional[int] = None
    dropped: int = 0
    _files: List[Path] = field(default_factory=list, repr=False)
    _capture: Optional[cv2.VideoCapture] = field(default=None, repr=False)
    _latest: Optional[_LatestFrame] = field(default=None, repr=False)

    @property
    def live(self) -> bool:
        return self.kind in ("camera", "url")

    def frames(self) -> Iterator[Frame]:
        """(name, (H, W, 3) uint8 RGB) from the first frame on, decoded one at a time; closes the source at the
        end (or when the consumer stops iterating). A frame of another size is an error naming the source."""
        try:
            count = 0
            for name, frame in self._raw_frames():
                if self.max_frames is not None and count >= self.max_frames:
                    return
                if frame.shape[:2] != self.size:
                    h, w = frame.shape[:2]
                    raise DatasetError(f"frame {name} is {w}x{h} (WxH) but the first frame is "
                                       f"{self.size[1]}x{self.size[0]}", self.source)
                yield name, frame
                count += 1
        finally:
            self.close()

    def _raw_frames(self) -> Iterator[Frame]:
        yield self.first
        if self.kind == "folder":
            for path in self._files[1:]:
                yield path.stem, read_image_rgb(path)
            return
        if self.mode == "every":
            number = 1
            while True:
                ok, frame = self._capture.read()
                if not ok:
                    return
                yield f"{number:05d}", cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                number += 1
        if self._latest is None:
            self._latest = _LatestFrame(self._capture.read)
        number = 0  # the first frame was arrival 0; the reader numbers the next ones from 1
        while True:
            got = self._latest.next_after(number)
            if got is None:
                return
            arrived, frame = got
            self.dropped += arrived - number - 1
            number = arrived
            yield f"{number:05d}", cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        if self._latest is not None:
            self._latest.stop()
            self._latest = None
        if self._capture is not None:
            self._capture.release()
            self._capture = None


def _open_capture(spec: str, kind: str) -> cv2.VideoCapture:
    if kind == "file":
        return open_video_capture(spec)
    capture = cv2.VideoCapture(int(spec)) if kind == "camera" else cv2.VideoCapture(spec)
    if not capture.isOpened():
        capture.release()
        what = {"camera": f"cannot open camera {spec} (no such device, or in use)",
                "url": "cannot open the stream (unreachable, or a protocol OpenCV's FFmpeg does not read)"}[kind]
        raise DatasetError(what, spec)
    return capture


def open_stream(spec: Union[str, Path], mode: str = "auto", max_frames: Optional[int] = None) -> FrameStream:
    """Open a camera index (``0``), a URL (``rtsp://...``, ``http://...``), a video file or a folder of frames.

    Args:
        spec: what to open (see :func:`source_kind`).
        mode: ``every`` frame, the ``latest`` frame, or ``auto`` (``latest`` for cameras and URLs, else ``every``).
        max_frames: give at most this many frames.

    Raises:
        DatasetError: the source cannot be opened or has no frame (one line naming it).
    """
    if mode not in MODES:
        raise ConfigError(f"the frame mode must be one of {', '.join(MODES)}, got {mode!r}")
    if max_frames is not None and max_frames < 1:
        raise ConfigError(f"--max-frames must be at least 1, got {max_frames}")
    spec = str(spec)
    kind = source_kind(spec)
    if mode == "auto":
        mode = "latest" if kind in ("camera", "url") else "every"
    if kind == "folder":
        files = list_frame_files(spec)
        first = (files[0].stem, read_image_rgb(files[0]))
        count = len(files) if max_frames is None else min(len(files), max_frames)
        return FrameStream(Path(spec).resolve().name, spec, kind, "every", DEFAULT_FPS, first[1].shape[:2], first,
                           count, max_frames, _files=files)
    if kind == "file" and not Path(spec).is_file():
        raise DatasetError("video not found (give a video file, a folder of frames, a camera index or a URL)", spec)
    capture = _open_capture(spec, kind)
    ok, frame = capture.read()
    if not ok or frame is None:
        capture.release()
        raise DatasetError("the source gave no frame (an empty or corrupt file, a camera that sends nothing, a "
                           "closed stream)", spec)
    fps = capture_fps(capture)
    fps = fps if fps is not None and fps < MAX_FPS else DEFAULT_FPS
    count = None
    if kind == "file":
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0) or None
        if count is not None and max_frames is not None:
            count = min(count, max_frames)
    name = {"camera": f"camera{spec}", "file": Path(spec).stem}.get(kind) or \
        (re.sub(r"[^A-Za-z0-9._-]+", "_", spec.rstrip("/").rsplit("/", 1)[-1]) or "stream")
    rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    return FrameStream(name, spec, kind, mode, fps, rgb.shape[:2], ("00000", rgb), count, max_frames,
                       _capture=capture)
