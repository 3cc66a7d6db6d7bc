"""dataset/stream.py: cameras, URLs, files and folders read frame by frame; the latest-frame reader; errors."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest
from PIL import Image

import dataset.stream as stream_module
from base.errors import ConfigError, DatasetError
from dataset.stream import open_stream, source_kind

H, W, N = 48, 64, 7


def frames(n=N):
    rng = np.random.default_rng(3)
    out = []
    for t in range(n):
        frame = rng.integers(0, 90, (H, W, 3), dtype=np.uint8)
        frame[10:30, 5 + 4 * t:25 + 4 * t] = (250, 30, 30)
        out.append(frame)
    return out


@pytest.fixture(scope="module")
def mp4(tmp_path_factory):
    path = tmp_path_factory.mktemp("stream") / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 12.0, (W, H))
    for frame in frames():
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


class FakeCapture:
    """A camera: ``total`` frames, one every ``period`` seconds, frame k filled with the value k."""

    opened = True

    def __init__(self, source, total=40, period=0.004):
        self.source, self.total, self.period, self.sent = source, total, period, 0
        self.released = False

    def isOpened(self):
        return self.opened

    def read(self):
        if self.sent >= self.total:
            return False, None
        time.sleep(self.period)
        frame = np.full((H, W, 3), self.sent, np.uint8)
        self.sent += 1
        return True, frame

    def get(self, prop):
        return 30.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def release(self):
        self.released = True


def test_source_kinds(tmp_path):
    assert source_kind("0") == "camera" and source_kind("12") == "camera"
    assert source_kind("rtsp://cam.local:554/live") == "url" and source_kind("http://x/y.mjpg") == "url"
    assert source_kind(str(tmp_path)) == "folder" and source_kind(str(tmp_path / "a.mp4")) == "file"


def test_a_file_streams_every_frame_in_order(mp4):
    stream = open_stream(mp4)
    assert (stream.kind, stream.mode, stream.size, stream.fps, stream.live) == ("file", "every", (H, W), 12.0, False)
    assert stream.num_frames == N and stream.name == "clip"
    got = list(stream.frames())
    assert [n for n, _ in got] == [f"{i:05d}" for i in range(N)]
    np.testing.assert_array_equal(got[0][1], stream.first[1])  # the first frame is decoded once, on open
    for t, (_, frame) in enumerate(got):  # the red square where frame t has it (mp4v is lossy)
        square = frame[14:26, 9 + 4 * t:21 + 4 * t].reshape(-1, 3).mean(axis=0)
        assert square[0] > 200 and square[1] < 80
    assert [n for n, _ in open_stream(mp4, max_frames=3).frames()] == ["00000", "00001", "00002"]


def test_a_folder_streams_its_files(tmp_path):
    for i, frame in enumerate(frames(4)):
        Image.fromarray(frame).save(tmp_path / f"f{i + 8}.png")
    stream = open_stream(tmp_path)
    assert stream.kind == "folder" and stream.num_frames == 4
    got = list(stream.frames())
    assert [n for n, _ in got] == ["f8", "f9", "f10", "f11"]  # numbers compared as numbers
    np.testing.assert_array_equal(got[3][1], frames(4)[3])
    Image.fromarray(frames(1)[0][:20]).save(tmp_path / "f99.png")
    with pytest.raises(DatasetError, match="frame f99 is 64x20"):
        list(open_stream(tmp_path).frames())


def test_a_live_source_gives_the_newest_frame_and_counts_the_skipped_ones(monkeypatch):
    captures = []

    def capture(source):
        captures.append(FakeCapture(source))
        return captures[-1]

    monkeypatch.setattr(stream_module.cv2, "VideoCapture", capture)
    stream = open_stream("0")
    assert (stream.kind, stream.mode, stream.name, stream.fps, stream.num_frames) == ("camera", "latest", "camera0",
                                                                                     30.0, None)
    assert captures[0].source == 0  # an index, not a file name
    got = []
    for name, frame in stream.frames():
        got.append((int(name), int(frame[0, 0, 0])))
        time.sleep(0.015)  # a consumer slower than the camera
    numbers = [n for n, _ in got]
    assert all(n == v for n, v in got)  # each name is the arrival number of the frame it holds
    assert numbers == sorted(numbers) and numbers[0] == 0 and numbers[-1] == 39  # the last frame is never lost
    assert stream.dropped > 0 and len(got) + stream.dropped == 40
    assert captures[0].released and threading.active_count() < 50
    # every frame, in order, when asked for
    every = open_stream("0", mode="every")
    assert [int(n) for n, _ in every.frames()] == list(range(40)) and every.dropped == 0


def test_a_consumer_that_stops_early_releases_the_source(monkeypatch):
    captures = []
    monkeypatch.setattr(stream_module.cv2, "VideoCapture",
                        lambda s: captures.append(FakeCapture(s, total=10 ** 6)) or captures[-1])
    stream = open_stream("rtsp://cam/live", max_frames=5)
    assert stream.kind == "url" and stream.name == "live"
    assert len(list(stream.frames())) == 5
    assert captures[0].released


def test_errors_are_one_line_and_name_the_source(monkeypatch, tmp_path):
    with pytest.raises(DatasetError, match="video not found"):
        open_stream(tmp_path / "missing.mp4")
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 64)
    with pytest.raises(DatasetError, match="broken.mp4: cannot open the video"):
        open_stream(tmp_path / "broken.mp4")
    with pytest.raises(ConfigError, match="frame mode"):
        open_stream(tmp_path, mode="fast")

    class Closed(FakeCapture):
        opened = False

    monkeypatch.setattr(stream_module.cv2, "VideoCapture", Closed)
    with pytest.raises(DatasetError, match="^3: cannot open camera 3"):
        open_stream("3")
    with pytest.raises(DatasetError, match="cannot open the stream"):
        open_stream("rtsp://nowhere/x")
    monkeypatch.setattr(stream_module.cv2, "VideoCapture", lambda s: FakeCapture(s, total=0))
    with pytest.raises(DatasetError, match="gave no frame"):
        open_stream("1")
