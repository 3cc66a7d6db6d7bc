"""Custom videos for demo.py: frame folders, decoded video files, first-mask formats and their errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from base.errors import ConfigError, DatasetError
from base.io import write_index_png
from dataset.custom import list_frame_files, open_custom_video, read_first_mask

H, W = 24, 32


def _frames(n: int) -> list:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (H, W, 3), dtype=np.uint8) for _ in range(n)]


def write_frame_dir(folder: Path, names) -> Path:
    folder.mkdir(parents=True)
    for name, frame in zip(names, _frames(len(names))):
        Image.fromarray(frame).save(folder / name)
    return folder


def write_video(path: Path, n: int, fps: float = 12.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (W, H))
    assert writer.isOpened()
    for frame in _frames(n):
        writer.write(frame)
    writer.release()
    return path


def box_mask(value: int = 1, size=(H, W)) -> np.ndarray:
    mask = np.zeros(size, np.uint8)
    mask[4:12, 6:16] = value
    return mask


def test_frame_folder_in_natural_order_with_palette_mask(tmp_path):
    folder = write_frame_dir(tmp_path / "clip", ["f10.jpg", "f2.png", "f1.jpg"])
    (folder / "notes.txt").write_text("not a frame")
    labels = box_mask(1)
    labels[14:20, 20:30] = 3
    write_index_png(tmp_path / "mask.png", labels)
    video = open_custom_video(folder, tmp_path / "mask.png")
    assert video.name == "clip" and video.mask.object_ids == (1, 3) and video.fps == 24.0
    assert video.files[0] == folder / "f1.jpg" and video.num_frames == 3 and video.size == (H, W)
    np.testing.assert_array_equal(video.mask.labels, labels)
    frames = list(video.frames())
    assert [name for name, _ in frames] == ["f1", "f2", "f10"]  # read where they are, in natural order
    assert all(image.shape == (H, W, 3) and image.dtype == np.uint8 for _, image in frames)
    assert list_frame_files(folder, max_frames=2) == [folder / "f1.jpg", folder / "f2.png"]
    assert [n for n, _ in open_custom_video(folder, tmp_path / "mask.png", max_frames=2).frames()] == ["f1", "f2"]


def test_video_file_is_decoded_frame_by_frame_in_rgb(tmp_path):
    video_path = write_video(tmp_path / "clip.mp4", 7)
    Image.fromarray(box_mask(255), mode="L").save(tmp_path / "mask.png")
    before = sorted(p.name for p in tmp_path.iterdir())
    video = open_custom_video(video_path, tmp_path / "mask.png", max_frames=5)
    assert video.name == "clip" and video.num_frames == 5 and video.fps == pytest.approx(12.0)
    assert video.mask.object_ids == (1,) and video.mask.how == "greyscale 0/255 mask, one object"
    np.testing.assert_array_equal(video.mask.labels, box_mask(1))
    frames = list(video.frames())
    assert [name for name, _ in frames] == [f"0000{i}" for i in range(5)]
    capture = cv2.VideoCapture(str(video_path))
    ok, bgr = capture.read()
    capture.release()
    assert ok and np.array_equal(frames[0][1], cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))  # RGB, not OpenCV's BGR
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written to disk


def test_a_frame_of_another_size_names_its_file(tmp_path):
    folder = write_frame_dir(tmp_path / "clip", ["0.jpg", "1.jpg"])
    Image.fromarray(np.zeros((H + 2, W, 3), np.uint8)).save(folder / "1.jpg")
    write_index_png(tmp_path / "mask.png", box_mask(1))
    frames = open_custom_video(folder, tmp_path / "mask.png").frames()
    next(frames)
    with pytest.raises(DatasetError, match="frame is 32x26 .WxH. but the first frame is 32x24") as err:
        next(frames)
    assert str(folder / "1.jpg") in str(err.value)


@pytest.mark.parametrize("kind, expect_ids, how", [
    ("grey01", (1,), "greyscale 0/1 mask, one object"),
    ("grey_ids", (1, 2), "greyscale mask of object ids"),
    ("antialiased", (1,), "thresholded at 128"),
    ("palette255", (1,), "palette 0/255 mask, one object"),
    ("palette_void", (1, 2), "palette PNG of object ids"),
    ("rgb_grey", (1,), "grey RGB 0/255 mask, one object"),
    ("rgb_red", (1,), "two-colour RGB mask, one object"),
])
def test_mask_formats(tmp_path, kind, expect_ids, how):
    path = tmp_path / "m.png"
    mask = box_mask(1)
    if kind == "grey01":
        Image.fromarray(mask, mode="L").save(path)
    elif kind == "grey_ids":
        mask[14:20, 20:30] = 2
        Image.fromarray(mask, mode="L").save(path)
    elif kind == "antialiased":
        Image.fromarray((mask * 200 + 10).astype(np.uint8), mode="L").save(path)
    elif kind == "palette255":
        write_index_png(path, mask * 255)
    elif kind == "palette_void":
        mask[14:20, 20:30] = 2
        mask[0, :] = 255  # DAVIS void: ignored
        write_index_png(path, mask)
    elif kind == "rgb_grey":
        Image.fromarray(np.repeat(mask[..., None] * 255, 3, axis=2)).save(path)
    elif kind == "rgb_red":
        rgb = np.zeros((H, W, 3), np.uint8)
        rgb[mask == 1] = (200, 0, 0)
        Image.fromarray(rgb).save(path)
    first = read_first_mask(path)
    assert first.object_ids == expect_ids and how in first.how
    np.testing.assert_array_equal(first.labels != 0, (box_mask(1) != 0) | (first.labels == 2))


def test_errors_name_the_problem(tmp_path):
    folder = write_frame_dir(tmp_path / "clip", ["0.jpg", "1.jpg"])
    write_index_png(tmp_path / "mask.png", box_mask(1))
    with pytest.raises(DatasetError, match="video not found"):
        open_custom_video(tmp_path / "nope.mp4", tmp_path / "mask.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no frames"):
        open_custom_video(tmp_path / "empty", tmp_path / "mask.png")
    (tmp_path / "broken.mp4").write_bytes(b"this is not a video" * 10)
    with pytest.raises(DatasetError, match="OpenCV"):
        open_custom_video(tmp_path / "broken.mp4", tmp_path / "mask.png")
    with pytest.raises(ConfigError, match="--max-frames must be at least 1"):
        open_custom_video(folder, tmp_path / "mask.png", max_frames=0)
    with pytest.raises(DatasetError, match="mask file not found"):
        open_custom_video(folder, tmp_path / "missing.png")
    write_index_png(tmp_path / "empty.png", np.zeros((H, W), np.uint8))
    with pytest.raises(DatasetError, match="no object pixels"):
        open_custom_video(folder, tmp_path / "empty.png")
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[:4] = (200, 0, 0)
    rgb[-4:] = (0, 200, 0)
    Image.fromarray(rgb).save(tmp_path / "colours.png")
    with pytest.raises(DatasetError, match="palette"):
        open_custom_video(folder, tmp_path / "colours.png")
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(folder / "0.png")
    with pytest.raises(DatasetError, match="two frames are named '0'"):
        open_custom_video(folder, tmp_path / "mask.png")


def test_wrong_size_mask_needs_resize_flag(tmp_path):
    folder = write_frame_dir(tmp_path / "clip", ["0.jpg", "1.jpg"])
    write_index_png(tmp_path / "big.png", box_mask(2, size=(H * 2, W * 2)))
    with pytest.raises(DatasetError, match=r"mask is 64x48 \(WxH\) but the video frames are 32x24; pass --resize-mask"):
        open_custom_video(folder, tmp_path / "big.png")
    video = open_custom_video(folder, tmp_path / "big.png", resize_mask=True)
    assert video.mask.object_ids == (2,) and "resized from 64x48" in video.mask.how
    expected = cv2.resize(box_mask(2, size=(H * 2, W * 2)), (W, H), interpolation=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(video.mask.labels, expected)
    # a mask whose object vanishes when resized is empty
    tiny = np.zeros((H * 4, W * 4), np.uint8)
    tiny[1, 1] = 1
    write_index_png(tmp_path / "tiny.png", tiny)
    with pytest.raises(DatasetError, match="no object pixels"):
        open_custom_video(folder, tmp_path / "tiny.png", resize_mask=True)
