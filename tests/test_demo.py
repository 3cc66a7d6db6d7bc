"""`python demo.py`: a tiny mp4 and a frame folder give masks, overlay.mp4, overlay.gif, summary.json; errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import demo as demo_cli
from base.io import write_index_png
from tests.cli import call

ROOT = Path(__file__).resolve().parents[1]
H, W = 64, 96
N = 6


def synthetic_frames(n: int = N):
    """Textured background with two squares moving right (every frame differs)."""
    rng = np.random.default_rng(1)
    background = rng.integers(0, 120, (H, W, 3), dtype=np.uint8)
    frames = []
    for t in range(n):
        frame = background.copy()
        frame[10:30, 10 + 3 * t:30 + 3 * t] = (230, 40, 40)
        frame[36:56, 50 + 2 * t:66 + 2 * t] = (40, 220, 60)
        frames.append(frame)
    return frames


def first_mask() -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    mask[10:30, 10:30] = 1
    mask[36:56, 50:66] = 2
    return mask


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    writer = cv2.VideoWriter(str(folder / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (W, H))
    frame_dir = folder / "frames"
    frame_dir.mkdir()
    for i, frame in enumerate(synthetic_frames()):
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        Image.fromarray(frame).save(frame_dir / f"img{i}.jpg", quality=95)
    writer.release()
    write_index_png(folder / "mask.png", first_mask())
    return folder


def demo(*args, check=True):
    """``python demo.py args``, in-process."""
    proc = call(demo_cli.main, *args)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def count_video_frames(path: Path):
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def check_outputs(out: Path, names, tau: float):
    masks = sorted(p.stem for p in (out / "masks").glob("*.png"))
    assert masks == sorted(names)
    first = Image.open(out / "masks" / f"{names[0]}.png")
    assert first.mode == "P" and first.size == (W, H)
    np.testing.assert_array_equal(np.array(first), first_mask())  # the given mask is written as is
    assert set(np.unique(np.array(Image.open(out / "masks" / f"{names[-1]}.png")))) <= {0, 1, 2}
    video = count_video_frames(out / "overlay.mp4")
    assert len(video) == N and video[0].shape == (H, W, 3)
    # the overlay tints object 1 red where the mask says so
    assert video[0][20, 20, 2] > video[0][20, 20, 1] + 80
    with Image.open(out / "overlay.gif") as gif:
        assert gif.format == "GIF" and gif.n_frames == N and max(gif.size) <= 320
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == N and summary["objects"] == [1, 2] and summary["tau"] == tau
    assert summary["tracked_object_frames"] == 2 * (N - 1) and summary["fps"] > 0
    assert set(summary["paths"]) == {"1", "2"} and all(len(p) == N - 1 for p in summary["paths"].values())
    return summary


@pytest.mark.slow
def test_demo_on_mp4_as_a_script(checkpoint, clip, tmp_path):
    """The script itself, in a subprocess: an mp4 in, every output written, always reusing at tau = -1."""
    proc = subprocess.run([sys.executable, str(ROOT / "demo.py"), "--video", str(clip / "clip.mp4"), "--mask",
                           str(clip / "mask.png"), "--model", str(checkpoint), "--pretrained", "none", "--dev", "cpu",
                           "--TH", "-1", "--out", str(tmp_path / "mp4")], capture_output=True, text=True, cwd=ROOT,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "FPS" in proc.stdout and "reuse rate 1.000" in proc.stdout and "RANDOM weights" in proc.stdout
    summary = check_outputs(tmp_path / "mp4", [f"{i:05d}" for i in range(N)], -1.0)
    assert summary["reuse_rate"] == 1.0 and set("".join(summary["paths"].values())) == {"T"}


def test_demo_on_a_frame_dir(checkpoint, clip, tmp_path):
    demo("--video", clip / "frames", "--mask", clip / "mask.png", "--model", checkpoint, "--pretrained", "none",
         "--dev", "cpu", "--TH", "1", "--overlap-io", "--out", tmp_path / "dir")
    summary = check_outputs(tmp_path / "dir", [f"img{i}" for i in range(N)], 1.0)  # threaded writes, in order
    assert summary["overlap_io"] is True and summary["wall_over_processing"] >= 0.999
    assert summary["reuse_rate"] == 0.0 and set("".join(summary["paths"].values())) == {"C"}


def test_no_overlay_writes_masks_and_summary_only(checkpoint, clip, tmp_path):
    """--no-overlay: the same masks, no overlay video or GIF (nor one left from an earlier run in that folder)."""
    out = tmp_path / "o"
    demo("--video", clip / "frames", "--mask", clip / "mask.png", "--model", checkpoint, "--pretrained", "none",
         "--dev", "cpu", "--TH", "1", "--out", out)
    assert (out / "overlay.mp4").is_file() and (out / "overlay.gif").is_file()
    with_overlay = {p.name: p.read_bytes() for p in (out / "masks").glob("*.png")}
    proc = demo("--video", clip / "frames", "--mask", clip / "mask.png", "--model", checkpoint, "--pretrained",
                "none", "--dev", "cpu", "--TH", "1", "--no-overlay", "--out", out)
    assert not (out / "overlay.mp4").exists() and not (out / "overlay.gif").exists()
    assert "overlay.mp4" not in proc.stdout and "overlay.gif" not in proc.stdout
    assert {p.name: p.read_bytes() for p in (out / "masks").glob("*.png")} == with_overlay
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overlays"] is False and summary["frames"] == N


def test_demo_errors_are_one_line(checkpoint, clip, tmp_path):
    def error(*args):
        proc = demo(*args, check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        return proc.stderr

    base = ["--pretrained", "none", "--dev", "cpu", "--out", tmp_path / "o"]
    model = ["--model", checkpoint]
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 100)
    assert "cannot open the video" in error("--video", bad, "--mask", clip / "mask.png", *model, *base)
    (tmp_path / "empty").mkdir()
    assert "no frames" in error("--video", tmp_path / "empty", "--mask", clip / "mask.png", *model, *base)
    write_index_png(tmp_path / "small.png", first_mask()[::2, ::2])
    msg = error("--video", clip / "frames", "--mask", tmp_path / "small.png", *model, *base)
    assert "mask is 48x32 (WxH) but the video frames are 96x64; pass --resize-mask" in msg
    write_index_png(tmp_path / "empty.png", np.zeros((H, W), np.uint8))
    assert "no object pixels" in error("--video", clip / "frames", "--mask", tmp_path / "empty.png", *model, *base)
    assert "oracle" in demo("--policy", "oracle", check=False).stderr  # not a choice: no ground truth here


@pytest.mark.slow
def test_demo_defaults_to_the_shipped_model(clip, tmp_path):
    """No --model: the shipped model, with its own backbone and its recorded 360x640 inference size."""
    out = tmp_path / "shipped"
    proc = demo("--video", clip / "frames", "--mask", clip / "mask.png", "--dev", "cpu", "--max-frames", "4",
                "--out", out)
    assert "backbone: the checkpoint's own resnet18 weights" in proc.stdout
    assert "inference size 360x640" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert Path(summary["model"]).name == "gfrtm_rn18_dv2016_cpu.pth"
    assert summary["pretrained"] == "embedded" and summary["network_size"] == [360, 640]
    assert summary["size"] == [H, W] and len(list((out / "masks").glob("*.png"))) == 4


def test_demo_runs_a_ttvos_model(clip, tmp_path):
    """The other base network: a TTVOS file with --model alone (policy always by default, two objects)."""
    model = Path(__file__).resolve().parent / "fixtures" / "ttvos" / "official_ttvos_hrnetv2Sv1_seed0.pth"
    demo("--video", clip / "clip.mp4", "--mask", clip / "mask.png", "--out", tmp_path / "out", "--model", model,
         "--dev", "cpu")
    summary = check_outputs(tmp_path / "out", [f"{i:05d}" for i in range(N)], 0.7)
    assert summary["base"] == "ttvos" and summary["policy"] == "always" and summary["reused_object_frames"] == 0


def square_box(margin=4):
    return f"{10 - margin},{10 - margin},{30 + margin},{30 + margin}"  # object 1 of first_mask()


def test_demo_starts_from_a_box(checkpoint, clip, tmp_path):
    """--box instead of --mask: GrabCut finds the red square on the first frame; it is tracked from there."""
    out = tmp_path / "box"
    proc = demo("--video", clip / "clip.mp4", "--box", square_box(), "--model", checkpoint, "--pretrained", "none",
                "--dev", "cpu", "--TH", "1", "--out", out)
    assert "GrabCut in --box 6,6,34,34" in proc.stdout
    made = np.array(Image.open(out / "first_mask.png"))
    truth = first_mask() == 1
    assert ((made == 1) & truth).sum() / ((made == 1) | truth).sum() > 0.8 and set(np.unique(made)) == {0, 1}
    np.testing.assert_array_equal(np.array(Image.open(out / "masks" / "00000.png")), made)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["objects"] == [1] and summary["mask"].startswith("GrabCut") and summary["frames"] == N
    assert summary["source"] == "file" and summary["frame_mode"] == "every" and summary["stopped"] is None
    assert summary["fps_end_to_end"] > 0 and summary["fps_end_to_end_tracking"] > 0


def test_demo_latest_frame_mode_skips_what_it_cannot_keep_up_with(checkpoint, clip, tmp_path):
    """A file read as a live source: the reader decodes at full speed, so frames are skipped (counted, named by
    their arrival number) and overlay.mp4 repeats the last processed frame for each, keeping real time."""
    out = tmp_path / "latest"
    demo("--video", clip / "clip.mp4", "--mask", clip / "mask.png", "--frames", "latest", "--model", checkpoint,
         "--pretrained", "none", "--dev", "cpu", "--TH", "1", "--out", out)
    summary = json.loads((out / "summary.json").read_text())
    names = sorted(p.stem for p in (out / "masks").glob("*.png"))
    assert summary["frame_mode"] == "latest" and len(names) == summary["frames"]
    assert summary["frames"] + summary["dropped_frames"] == N and names[0] == "00000" and names[-1] == f"{N - 1:05d}"
    assert len(count_video_frames(out / "overlay.mp4")) == N


def test_ctrl_c_keeps_everything_written_so_far(checkpoint, clip, tmp_path, monkeypatch):
    import dataset.stream as stream_module

    raw = stream_module.FrameStream._raw_frames

    def interrupted(self):
        for k, item in enumerate(raw(self)):
            if k == 3:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(stream_module.FrameStream, "_raw_frames", interrupted)
    out = tmp_path / "stopped"
    proc = demo("--video", clip / "clip.mp4", "--mask", clip / "mask.png", "--model", checkpoint, "--pretrained",
                "none", "--dev", "cpu", "--out", out, check=False)
    assert proc.returncode == 130 and "stopped early (Ctrl-C) after 3 frames" in proc.stdout, proc.stderr
    assert sorted(p.stem for p in (out / "masks").glob("*.png")) == ["00000", "00001", "00002"]
    assert len(count_video_frames(out / "overlay.mp4")) == 3
    with Image.open(out / "overlay.gif") as gif:
        assert gif.n_frames == 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped"] == "Ctrl-C" and summary["frames"] == 3


class FakeWindow:
    """OpenCV's HighGUI without a display: records what is shown, presses q on the ``stop_at``-th frame."""

    def __init__(self, monkeypatch, stop_at, rois=((6, 6, 28, 28),)):
        import lib.tools.live_view as live_view

        self.shown, self.stop_at, self.rois = [], stop_at, np.array(rois)
        monkeypatch.setattr(live_view, "display_problem", lambda: None)
        for name in ("namedWindow", "destroyWindow"):
            monkeypatch.setattr(cv2, name, lambda *a, **k: None)
        monkeypatch.setattr(cv2, "imshow", lambda title, image: self.shown.append(image))
        monkeypatch.setattr(cv2, "waitKey", lambda delay: ord("q") if len(self.shown) == self.stop_at else -1)
        monkeypatch.setattr(cv2, "getWindowProperty", lambda *a: 1.0)
        monkeypatch.setattr(cv2, "selectROIs", lambda *a, **k: self.rois)


def test_show_draws_boxes_shows_frames_and_stops_on_q(checkpoint, clip, tmp_path, monkeypatch):
    window = FakeWindow(monkeypatch, stop_at=4)
    out = tmp_path / "show"
    proc = demo("--video", clip / "frames", "--show", "--model", checkpoint, "--pretrained", "none", "--dev", "cpu",
                "--TH", "1", "--out", out)
    assert "GrabCut in drawn boxes 6,6,34,34" in proc.stdout and "stopped early (window closed" in proc.stdout
    assert len(window.shown) == 4 and window.shown[0].shape == (H, W, 3)
    made = np.array(Image.open(out / "first_mask.png"))
    truth = first_mask() == 1
    assert ((made == 1) & truth).sum() / ((made == 1) | truth).sum() > 0.8
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 4 and summary["stopped"].startswith("window closed")
    assert len(list((out / "masks").glob("*.png"))) == 4


def test_stream_and_box_errors_are_one_line(checkpoint, clip, tmp_path, monkeypatch):
    def error(*args):
        proc = demo(*args, "--model", checkpoint, "--pretrained", "none", "--dev", "cpu", "--out", tmp_path / "o",
                    check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        return proc.stderr

    video = ["--video", clip / "clip.mp4"]
    assert "--mask PNG, --box x0,y0,x1,y1, or --show" in error(*video)
    assert "not both" in error(*video, "--mask", clip / "mask.png", "--box", square_box())
    assert "x0,y0,x1,y1" in error(*video, "--box", "1,2,3")
    assert "covers the whole frame" in error(*video, "--box", f"0,0,{W},{H}")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    assert "--show needs a window: no display" in error(*video, "--show")

    class NoCamera:
        def __init__(self, source):
            pass

        def isOpened(self):
            return False

        def release(self):
            pass

    import dataset.stream as stream_module

    monkeypatch.setattr(stream_module.cv2, "VideoCapture", NoCamera)
    assert "7: cannot open camera 7 (no such device, or in use)" in error("--video", "7", "--box", square_box())


def test_bf16_on_a_cpu_without_bf16_instructions_warns(checkpoint, clip, tmp_path, monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # what the report reads (oneDNN itself reads it at start)
    proc = demo("--video", clip / "frames", "--mask", clip / "mask.png", "--model", checkpoint, "--pretrained",
                "none", "--dev", "cpu", "--amp", "bf16", "--max-frames", "2", "--out", tmp_path / "o")
    assert "warning: --amp bf16 on a CPU without bf16 instructions" in proc.stdout
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    from lib.tools.cpu import bf16_is_native

    proc = demo("--video", clip / "frames", "--mask", clip / "mask.png", "--model", checkpoint, "--pretrained",
                "none", "--dev", "cpu", "--amp", "bf16", "--max-frames", "2", "--out", tmp_path / "p")
    assert ("warning: --amp bf16" in proc.stdout) != bf16_is_native()


def test_demo_holds_a_frame_budget(checkpoint, clip, tmp_path):
    """--policy budget on a video file: every tracked frame computes or warps as a whole, and the summary names the
    policy and the end-to-end rate it is measured by."""
    out = tmp_path / "budget"
    demo("--video", clip / "clip.mp4", "--mask", clip / "mask.png", "--model", checkpoint, "--pretrained", "none",
         "--dev", "cpu", "--policy", "budget", "--budget-fps", "1000", "--out", out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["policy"] == "budget-1000fps-learned" and summary["frames"] == N
    codes = list(zip(*summary["paths"].values()))  # per frame, the objects' paths
    assert all(len(set(frame)) == 1 for frame in codes) and set("".join(summary["paths"].values())) <= {"C", "W"}
    assert codes[0][0] == "C" and summary["fps_end_to_end_tracking"] > 0


def test_show_keeps_going_where_the_backend_cannot_tell_visibility(checkpoint, clip, tmp_path, monkeypatch):
    """Some HighGUI backends answer -1 to WND_PROP_VISIBLE: the window then runs until q, not stops at once."""
    window = FakeWindow(monkeypatch, stop_at=N + 1)
    monkeypatch.setattr(cv2, "getWindowProperty", lambda *a: -1.0)
    demo("--video", clip / "frames", "--mask", clip / "mask.png", "--show", "--model", checkpoint, "--pretrained",
         "none", "--dev", "cpu", "--out", tmp_path / "o")
    assert len(window.shown) == N
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["stopped"] is None and summary["frames"] == N
