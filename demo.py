"""Segment any video from its first frame's mask with G-FRTM.

    python demo.py --video clip.mp4 --mask first_mask.png --out results/clip      # the shipped model
    python demo.py --video FRAME_DIR --mask first_mask.png --model PATH --TH 0.7 --dev cpu --out OUT

The video is a file OpenCV decodes (mp4, avi, ...) or a folder of .jpg/.png frames (sorted by name,
numbers compared as numbers). The mask is a PNG the size of the frames: a palette (indexed) PNG whose
values are object ids (several objects), or a binary 0/255 or 0/1 greyscale PNG (one object);
``--resize-mask`` nearest-resizes a mask of another size. Writes

    OUT/masks/<frame>.png    palette PNGs of object ids (DAVIS palette), one per frame
    OUT/overlay.mp4          the frames with the objects overlaid in colour (OpenCV, mp4v)
    OUT/overlay.gif          the same, downscaled (longest side <= 320 px, at most 150 frames)
    OUT/summary.json         FPS, reuse rate, GFLOPs/frame, the path taken per object and frame
    OUT/first_mask.png       the mask as read (object ids); OUT/frames/ the decoded frames of a video file

and prints FPS and reuse rate (definitions as in evaluate.py). Without ``--model`` it uses the shipped
model (``weights/gfrtm_rn18_dv2016_cpu.pth``, at the 240x432 size it records); official G-FRTM checkpoints
load with ``--trust-checkpoint``, and train.py makes new ones. With ``--pretrained none`` (random backbone)
the masks are meaningless: for testing only.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np
import torch
from PIL import Image

from dataset.custom import CustomVideo, open_custom_video
from lib.cli import SHIPPED_MODEL, add_model_flags, resolve_device, run_cli
from lib.errors import ConfigError
from lib.io import atomic_path, atomic_write_json, davis_palette, write_index_png
from lib.policies import POLICIES, PolicyConfig

GIF_MAX_SIDE = 320
GIF_MAX_FRAMES = 150
OVERLAY_ALPHA = 0.5
DEMO_POLICIES = tuple(p for p in POLICIES if p != "oracle")  # the oracle needs ground truth on every frame


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", required=True, metavar="FILE|DIR", help="video file or folder of frames")
    parser.add_argument("--mask", required=True, metavar="PNG", help="mask of the first frame (object ids)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    add_model_flags(parser, model_help="G-FRTM checkpoint (project, official or FRTM format); default: the shipped "
                                       "weights/gfrtm_rn18_dv2016_cpu.pth")
    parser.add_argument("--TH", "--tau", dest="tau", type=float, default=0.7, metavar="TAU",
                        help="reuse threshold: reuse iff P_gate > tau (1 never reuses)")
    parser.add_argument("--policy", choices=DEMO_POLICIES, default="gate", help="reuse policy (see README)")
    parser.add_argument("--TH2", type=float, default=None, help="copy threshold of --policy fusion (> tau)")
    parser.add_argument("--every-k", type=int, default=2, metavar="K", help="compute period of --policy every-k")
    parser.add_argument("--dev", default=None, help="device, e.g. cpu or cuda:0 (default: cuda:0 if available)")
    parser.add_argument("--amp", choices=["bf16"], default=None, help="bf16 autocast for the networks")
    parser.add_argument("--seed", type=int, default=0, help="seed of target-model init and augmentation")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--resize-mask", action="store_true",
                        help="nearest-resize a mask whose size differs from the frames' (else an error)")
    parser.add_argument("--max-frames", type=int, default=None, metavar="N", help="only the first N frames")
    parser.add_argument("--fps", type=float, default=None,
                        help="frame rate of overlay.mp4/.gif (default: the video's; 24 for a frame folder)")
    return parser


def object_colours(ids: Sequence[int]) -> Dict[int, np.ndarray]:
    """Overlay colour (RGB uint8) per object id: its DAVIS palette colour, brightened to full intensity."""
    palette = davis_palette()
    colours = {}
    for obj in ids:
        colour = palette[obj].astype(np.float64)
        colours[obj] = (colour * (255.0 / colour.max()) if colour.max() > 0 else colour + 255).astype(np.uint8)
    return colours


def overlay_frame(image: np.ndarray, labels: np.ndarray, colours: Dict[int, np.ndarray],
                  alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """(H, W, 3) uint8 RGB frame with each object tinted in its colour and outlined; labels (H, W) ids."""
    out = image.astype(np.float32)
    for obj, colour in colours.items():
        inside = labels == obj
        if inside.any():
            out[inside] = (1 - alpha) * out[inside] + alpha * colour.astype(np.float32)
    out = out.round().clip(0, 255).astype(np.uint8)
    for obj, colour in colours.items():
        contours, _ = cv2.findContours((labels == obj).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, tuple(int(c) for c in colour), 1)
    return out


class OverlayWriter:
    """Writes overlay frames to an mp4 (OpenCV, mp4v) and a small GIF (Pillow).

    The mp4 is written to a hidden temporary file and renamed on :meth:`close`; odd frame sizes are
    padded by one edge pixel (mp4v needs even sizes). The GIF keeps every ``stride``-th frame so that it
    has at most :data:`GIF_MAX_FRAMES` frames, downscaled to at most :data:`GIF_MAX_SIDE` px.
    """

    def __init__(self, mp4: Path, gif: Path, fps: float, size, total_frames: int):
        self.mp4, self.gif, self.fps = Path(mp4), Path(gif), float(fps)
        height, width = size
        self.pad = (height % 2, width % 2)
        self.tmp = self.mp4.with_name(f".{self.mp4.stem}.partial{self.mp4.suffix}")
        self.mp4.parent.mkdir(parents=True, exist_ok=True)
        self.video = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps,
                                     (width + self.pad[1], height + self.pad[0]))
        if not self.video.isOpened():
            self.tmp.unlink(missing_ok=True)
            raise ConfigError(f"OpenCV cannot write an mp4 (mp4v codec) to {self.tmp.parent} on this machine")
        self.stride = max(1, math.ceil(total_frames / GIF_MAX_FRAMES))
        scale = min(1.0, GIF_MAX_SIDE / max(height, width))
        self.gif_size = (max(1, round(width * scale)), max(1, round(height * scale)))
        self.gif_frames: List[Image.Image] = []
        self.count = 0

    def add(self, frame_rgb: np.ndarray) -> None:
        padded = np.pad(frame_rgb, ((0, self.pad[0]), (0, self.pad[1]), (0, 0)), mode="edge")
        self.video.write(cv2.cvtColor(padded, cv2.COLOR_RGB2BGR))
        if self.count % self.stride == 0:
            self.gif_frames.append(Image.fromarray(frame_rgb).resize(self.gif_size, Image.BILINEAR))
        self.count += 1

    def close(self) -> None:
        self.video.release()
        os.replace(self.tmp, self.mp4)
        if self.gif_frames:
            with atomic_path(self.gif) as tmp:
                self.gif_frames[0].save(tmp, format="GIF", save_all=True, append_images=self.gif_frames[1:],
                                        duration=round(1000 * self.stride / self.fps), loop=0)

    def abort(self) -> None:
        self.video.release()
        self.tmp.unlink(missing_ok=True)


def segment_video(video: CustomVideo, args, out_dir: Path) -> Dict[str, object]:
    """Track ``video`` with the model of ``args``; writes masks and overlays; returns summary.json's content."""
    from lib.checkpoint import load_inference_model
    from lib.evaluation import sequence_record, speed_and_reuse
    from lib.tracker import FrameOutput, Tracker, TrackerConfig

    device = resolve_device(args.dev)
    policy = PolicyConfig(args.policy, args.tau, args.TH2, args.every_k)
    loaded = load_inference_model(args.model, trust=args.trust_checkpoint, ftext=args.ftext,
                                  pretrained=args.pretrained, size=args.size, device=device)
    print("\n".join(loaded.messages))
    model, backbone, size = loaded.model, loaded.backbone, loaded.size
    tracker = Tracker(model, backbone, TrackerConfig(policy, seed=args.seed, amp=args.amp, size=size),
                      device)

    seq = video.sequence
    masks_dir = out_dir / "masks"
    masks_dir.mkdir(parents=True, exist_ok=True)
    for old in masks_dir.glob("*.png"):
        old.unlink()
    colours = object_colours(seq.object_ids)
    writer = OverlayWriter(out_dir / "overlay.mp4", out_dir / "overlay.gif", args.fps or video.fps,
                           seq.image_size(), len(seq))

    def on_frame(out: FrameOutput) -> None:
        write_index_png(masks_dir / f"{seq.frames[out.index]}.png", out.labels)
        writer.add(overlay_frame(seq.image(out.index), out.labels, colours))

    try:
        stats = tracker.run_sequence(seq, on_frame=on_frame)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    record = sequence_record(stats, tracker.flops.total)
    measured = speed_and_reuse([record])
    height, width = seq.image_size()
    return {
        "video": str(video.source), "mask": video.mask.how, "objects": list(seq.object_ids),
        "size": [height, width], "network_size": list(size) if size else [height, width],
        "model": str(args.model), "backbone": model.ftext, "pretrained": loaded.pretrained,
        "device": str(device), "policy": policy.label(), "tau": policy.tau, **measured,
        "reused_object_frames": stats.reused_object_frames, "tracked_object_frames": stats.tracked_object_frames,
        "paths": {obj: o["paths"] for obj, o in record["objects"].items()},
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.model:
        if not SHIPPED_MODEL.is_file():
            raise ConfigError(f"--model PATH is required: the shipped model {SHIPPED_MODEL} is missing (a checkout "
                              "without it?). Use a checkpoint trained with train.py or an official one")
        args.model = str(SHIPPED_MODEL)
    if args.fps is not None and args.fps <= 0:
        raise ConfigError(f"--fps must be positive, got {args.fps}")
    if args.threads:
        torch.set_num_threads(args.threads)
    out_dir = Path(args.out)
    video = open_custom_video(args.video, args.mask, out_dir, args.resize_mask, args.max_frames)
    seq = video.sequence
    height, width = seq.image_size()
    print(f"video {video.source}: {len(seq)} frames, {width}x{height}; mask: {video.mask.how}, "
          f"{len(seq.object_ids)} object(s) (ids {', '.join(map(str, seq.object_ids))})")
    summary = segment_video(video, args, out_dir)
    atomic_write_json(out_dir / "summary.json", summary)
    tracking = summary["fps_tracking"]
    print(f"FPS {summary['fps']:.2f} (all {summary['frames']} frames, first-frame initialisation included), "
          f"{'-' if not math.isfinite(tracking) else f'{tracking:.2f}'} tracking only")
    print(f"reuse rate {summary['reuse_rate']:.3f} ({summary['reused_object_frames']} of "
          f"{summary['tracked_object_frames']} tracked object-frames reused; policy {summary['policy']}, "
          f"tau {summary['tau']:g}); {summary['gflops_per_frame']:.2f} GFLOPs/frame")
    print(f"wrote {out_dir / 'masks'} ({len(seq)} PNGs), {out_dir / 'overlay.mp4'}, {out_dir / 'overlay.gif'}, "
          f"{out_dir / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
